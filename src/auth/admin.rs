//! The Users page (admins): add users, change roles and passwords, remove users. The same
//! operations exist on the command line (`vmdeck user ...`).

use rocket::form::FromForm;
use rocket::request::FlashMessage;
use rocket::response::{Flash, Redirect};
use rocket::{Route, State};
use rocket_dyn_templates::Template;
use serde::Serialize;

use super::users::{self, UserError};
use super::{Admin, Csrf, CsrfForm};
use crate::config::Settings;
use crate::db::Db;
use crate::domain::Role;
use crate::domain::{AuditKind, AuditOutcome};
use crate::events;
use crate::web::format as view;
use crate::web::AppError;
use crate::web::Chrome;

pub fn routes() -> Vec<Route> {
    rocket::routes![users_page, add_user, change_role, change_password, remove_confirm, remove_user]
}

#[derive(Serialize)]
struct UserView {
    name: String,
    role: Role,
    demo: bool,
    created: String,
    is_me: bool,
}

#[derive(Serialize)]
struct UsersPage {
    title: &'static str,
    chrome: Chrome,
    users: Vec<UserView>,
    roles: [&'static str; 3],
}

#[rocket::get("/users")]
async fn users_page(
    me: Admin<'_>,
    db: &State<Db>,
    settings: &State<Settings>,
    flash: Option<FlashMessage<'_>>,
) -> Result<Template, AppError> {
    let list = users::list(&db.0).await?;
    Ok(Template::render(
        "users/list",
        UsersPage {
            title: "Users",
            chrome: Chrome::new(me.0, flash, settings),
            users: list
                .into_iter()
                .map(|u| UserView {
                    is_me: u.id == me.0.id,
                    name: u.name,
                    role: u.role,
                    demo: u.demo,
                    created: view::absolute(u.created_at),
                })
                .collect(),
            roles: Role::ALL.map(Role::as_str),
        },
    ))
}

fn back(result: Result<String, UserError>) -> Flash<Redirect> {
    match result {
        Ok(msg) => Flash::success(Redirect::to("/users"), msg),
        Err(e) => Flash::error(Redirect::to("/users"), format!("Not done: {e}.")),
    }
}

fn parse_role(role: &str) -> Result<Role, UserError> {
    Role::parse(role).ok_or_else(|| {
        UserError::Invalid(format!(
            "unknown role {} (viewer, operator or admin)",
            crate::domain::quoted(role)
        ))
    })
}

#[derive(FromForm)]
struct AddForm {
    #[field(default = String::new())]
    csrf_token: String,
    #[field(default = String::new())]
    name: String,
    #[field(default = String::new())]
    role: String,
    #[field(default = String::new())]
    password: String,
    #[field(default = String::new())]
    password_again: String,
}

macro_rules! csrf_form {
    ($($t:ty),*) => {$(
        impl CsrfForm for $t {
            fn csrf_token(&self) -> &str {
                &self.csrf_token
            }
        }
    )*};
}
csrf_form!(AddForm, RoleForm, PasswordForm, RemoveForm);

#[rocket::post("/users", data = "<form>")]
async fn add_user(me: Admin<'_>, form: Csrf<AddForm>, db: &State<Db>) -> Flash<Redirect> {
    let f = form.0;
    let name = f.name.trim().to_string();
    let result = async {
        let role = parse_role(&f.role)?;
        if f.password != f.password_again {
            return Err(UserError::Invalid("the two passwords differ".into()));
        }
        users::add(&db.0, &name, role, f.password, false).await?;
        events::record_logged(
            &db.0,
            AuditKind::UserAdded,
            &me.0.actor(),
            AuditOutcome::Ok,
            Some(role.as_str()),
            Some(&name),
        )
        .await;
        Ok(format!("User {name} added as {}.", role.as_str()))
    }
    .await;
    back(result)
}

#[derive(FromForm)]
struct RoleForm {
    #[field(default = String::new())]
    csrf_token: String,
    #[field(default = String::new())]
    role: String,
}

#[rocket::post("/users/<name>/role", data = "<form>")]
async fn change_role(
    me: Admin<'_>,
    name: &str,
    form: Csrf<RoleForm>,
    db: &State<Db>,
) -> Flash<Redirect> {
    let result = async {
        let role = parse_role(&form.0.role)?;
        users::set_role(&db.0, name, role).await?;
        events::record_logged(
            &db.0,
            AuditKind::RoleChanged,
            &me.0.actor(),
            AuditOutcome::Ok,
            Some(role.as_str()),
            Some(name),
        )
        .await;
        Ok(format!("{name} is now {}.", role.as_str()))
    }
    .await;
    back(result)
}

#[derive(FromForm)]
struct PasswordForm {
    #[field(default = String::new())]
    csrf_token: String,
    #[field(default = String::new())]
    password: String,
    #[field(default = String::new())]
    password_again: String,
}

#[rocket::post("/users/<name>/password", data = "<form>")]
async fn change_password(
    me: Admin<'_>,
    name: &str,
    form: Csrf<PasswordForm>,
    db: &State<Db>,
) -> Flash<Redirect> {
    let f = form.0;
    let result = async {
        if name.eq_ignore_ascii_case(&me.0.name) {
            return Err(UserError::Invalid(
                "change your own password on your account page, which asks for the current one"
                    .into(),
            ));
        }
        if f.password != f.password_again {
            return Err(UserError::Invalid("the two passwords differ".into()));
        }
        users::set_password(&db.0, name, f.password).await?;
        events::record_logged(
            &db.0,
            AuditKind::PasswordChanged,
            &me.0.actor(),
            AuditOutcome::Ok,
            None,
            Some(name),
        )
        .await;
        Ok(format!("Password of {name} changed; their sessions were ended."))
    }
    .await;
    if let Err(e) = &result {
        let why = format!("{name}: {e}");
        events::record_logged(
            &db.0,
            AuditKind::PasswordChanged,
            &me.0.actor(),
            AuditOutcome::Refused,
            None,
            Some(&why),
        )
        .await;
    }
    back(result)
}

#[derive(Serialize)]
struct RemovePage {
    title: String,
    chrome: Chrome,
    name: String,
}

#[rocket::get("/users/<name>/remove")]
async fn remove_confirm(
    me: Admin<'_>,
    name: &str,
    db: &State<Db>,
    settings: &State<Settings>,
) -> Result<Template, AppError> {
    let exists = users::credentials(&db.0, name, true).await?.is_some();
    if !exists {
        return Err(AppError::NotFound(format!(
            "There is no user named {}.",
            crate::domain::quoted(name)
        )));
    }
    Ok(Template::render(
        "users/remove",
        RemovePage {
            title: format!("Remove {name}?"),
            chrome: Chrome::new(me.0, None, settings),
            name: name.to_string(),
        },
    ))
}

#[derive(FromForm)]
struct RemoveForm {
    #[field(default = String::new())]
    csrf_token: String,
}

#[rocket::post("/users/<name>/remove", data = "<_form>")]
async fn remove_user(
    me: Admin<'_>,
    name: &str,
    _form: Csrf<RemoveForm>,
    db: &State<Db>,
) -> Flash<Redirect> {
    let result = async {
        users::remove(&db.0, name).await?;
        events::record_logged(
            &db.0,
            AuditKind::UserRemoved,
            &me.0.actor(),
            AuditOutcome::Ok,
            None,
            Some(name),
        )
        .await;
        Ok(format!("User {name} removed; their sessions were ended."))
    }
    .await;
    back(result)
}
