//! The notification targets' pages (admins only): `GET /alerts/targets` (every target with
//! how sending to it went and its recent deliveries), the add and edit forms, enable/disable,
//! and deletion through a confirmation page. Secrets are never shown: "set" or "not set".

use crate::web::checked;
use rocket::form::FromForm;
use rocket::http::Status;
use rocket::request::FlashMessage;
use rocket::response::{status, Flash, Redirect};
use rocket::Route;
use rocket_dyn_templates::Template;
use serde::Serialize;

use super::store::{self, SaveError, Target};
use super::target::{split_addresses, Kind, TargetFields, TargetSpec, Tls};
use crate::alerts::routes::EnableForm;
use crate::alerts::store::Source;
use crate::auth::{Admin, ClientAddr, Csrf, CsrfForm, TokenForm};
use crate::domain::{quoted, Actor, AuditKind, AuditOutcome};
use crate::web::format as view;
use crate::web::{App, AppError, Chrome};

pub fn routes() -> Vec<Route> {
    rocket::routes![list_page, new_page, create, edit_page, update, toggle, delete_confirm, delete]
}

/// Deliveries listed per target.
const RECENT: i64 = 10;

#[derive(Serialize)]
struct DeliveryView {
    id: i64,
    group: String,
    created: String,
    status: String,
    alerts: i64,
    state: String,
    attempts: i64,
    next_attempt: Option<String>,
    sent: Option<String>,
    error: String,
}

#[derive(Serialize)]
struct TargetView {
    id: i64,
    name: String,
    kind: &'static str,
    from_file: bool,
    enabled: bool,
    min_severity: &'static str,
    destination: String,
    secret_set: bool,
    last_ok: Option<String>,
    last_error: Option<String>,
    last_error_at: Option<String>,
    failures: i64,
    deliveries: Vec<DeliveryView>,
}

#[derive(Serialize)]
struct ListPage {
    title: &'static str,
    chrome: Chrome,
    targets: Vec<TargetView>,
}

#[rocket::get("/alerts/targets")]
async fn list_page(
    me: Admin<'_>,
    app: App<'_>,
    flash: Option<FlashMessage<'_>>,
) -> Result<Template, AppError> {
    let deliveries = store::recent_deliveries(app.pool, RECENT).await?;
    let targets = store::targets(app.pool)
        .await?
        .into_iter()
        .map(|t| TargetView {
            deliveries: deliveries
                .iter()
                .filter(|d| d.target_id == t.id)
                .map(|d| DeliveryView {
                    id: d.id,
                    group: d.group_key.clone(),
                    created: view::absolute(d.created_at),
                    status: d.status.clone(),
                    alerts: d.alert_count,
                    state: d.state.clone(),
                    attempts: d.attempts,
                    next_attempt: (d.state == "queued").then(|| view::absolute(d.next_attempt_at)),
                    sent: d.sent_at.map(view::absolute),
                    error: d.last_error.clone().unwrap_or_default(),
                })
                .collect(),
            id: t.id,
            kind: t.kind.name(),
            from_file: t.source == Source::File,
            enabled: t.enabled,
            min_severity: t.min_severity.as_str(),
            destination: t.kind.describe(),
            secret_set: t.secret.is_some(),
            last_ok: t.last_ok_at.map(view::absolute),
            last_error: t.last_error.clone(),
            last_error_at: t.last_error_at.map(view::absolute),
            failures: t.failures,
            name: t.name,
        })
        .collect();
    Ok(Template::render(
        "alerts/targets",
        ListPage {
            title: "Notification targets",
            chrome: Chrome::new(me.0, flash, app.settings),
            targets,
        },
    ))
}

/// The form as typed: every field text, checked by [`TargetFields::parse`].
#[derive(Default, FromForm)]
struct TargetForm {
    #[field(default = String::new())]
    csrf_token: String,
    #[field(default = String::new())]
    name: String,
    #[field(default = String::new())]
    enabled: String,
    #[field(default = String::new())]
    kind: String,
    #[field(default = String::new())]
    min_severity: String,
    #[field(default = String::new())]
    url: String,
    #[field(default = String::new())]
    token: String,
    #[field(default = String::new())]
    smtp_host: String,
    #[field(default = String::new())]
    smtp_port: String,
    #[field(default = String::new())]
    tls: String,
    #[field(default = String::new())]
    username: String,
    #[field(default = String::new())]
    password: String,
    #[field(default = String::new())]
    from: String,
    #[field(default = String::new())]
    to: String,
    #[field(default = String::new())]
    ca_file: String,
    #[field(default = String::new())]
    clear_secret: String,
}

impl CsrfForm for TargetForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

impl TargetForm {
    fn fields(&self) -> TargetFields {
        TargetFields {
            name: self.name.clone(),
            enabled: Some(checked(&self.enabled)),
            kind: self.kind.clone(),
            min_severity: self.min_severity.clone(),
            url: self.url.clone(),
            token: self.token.clone(),
            smtp_host: self.smtp_host.clone(),
            smtp_port: self.smtp_port.clone(),
            tls: self.tls.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            from: self.from.clone(),
            to: split_addresses(&self.to),
            ca_file: self.ca_file.clone(),
        }
    }
}

/// The form's fields as shown: what was typed (never a secret), or the stored target.
#[derive(Serialize, Default)]
struct FormValues {
    name: String,
    enabled: bool,
    kind: String,
    min_severity: String,
    url: String,
    smtp_host: String,
    smtp_port: String,
    tls: String,
    username: String,
    from: String,
    to: String,
    ca_file: String,
}

impl FormValues {
    fn of_form(f: &TargetForm) -> FormValues {
        let cut = |s: &str, n: usize| s.chars().take(n).collect::<String>();
        FormValues {
            name: cut(&f.name, 100),
            enabled: checked(&f.enabled),
            kind: cut(&f.kind, 20),
            min_severity: cut(&f.min_severity, 20),
            url: cut(&f.url, super::target::MAX_URL + 20),
            smtp_host: cut(&f.smtp_host, 300),
            smtp_port: cut(&f.smtp_port, 20),
            tls: cut(&f.tls, 20),
            username: cut(&f.username, 400),
            from: cut(&f.from, 400),
            to: cut(&f.to, 20_000),
            ca_file: cut(&f.ca_file, super::target::MAX_PATH + 20),
        }
    }

    fn of_target(t: &Target) -> FormValues {
        let mut v = FormValues {
            name: t.name.clone(),
            enabled: t.enabled,
            kind: t.kind.name().into(),
            min_severity: t.min_severity.as_str().into(),
            tls: Tls::Starttls.as_str().into(),
            ..FormValues::default()
        };
        match &t.kind {
            Kind::Alertmanager { url } | Kind::Webhook { url } => v.url = url.clone(),
            Kind::Email(e) => {
                v.smtp_host = e.smtp_host.clone();
                v.smtp_port = e.smtp_port.to_string();
                v.tls = e.tls.as_str().into();
                v.username = e.username.clone();
                v.from = e.from.clone();
                v.to = e.to.join("\n");
                v.ca_file = e.ca_file.clone().unwrap_or_default();
            }
        }
        v
    }
}

#[derive(Serialize)]
struct FormPage {
    title: String,
    chrome: Chrome,
    /// None: a new target.
    id: Option<i64>,
    from_file: bool,
    secret_set: bool,
    errors: Vec<String>,
    values: FormValues,
}

fn form_page(
    me: &crate::domain::CurrentUser,
    app: &App<'_>,
    target: Option<&Target>,
    values: FormValues,
    errors: Vec<String>,
    flash: Option<FlashMessage<'_>>,
) -> Template {
    Template::render(
        "alerts/targets_form",
        FormPage {
            title: match target {
                Some(t) => format!("Target {}", t.name),
                None => "New notification target".into(),
            },
            chrome: Chrome::new(me, flash, app.settings),
            id: target.map(|t| t.id),
            from_file: target.is_some_and(|t| t.source == Source::File),
            secret_set: target.is_some_and(|t| t.secret.is_some()),
            errors,
            values,
        },
    )
}

#[rocket::get("/alerts/targets/new")]
async fn new_page(me: Admin<'_>, app: App<'_>) -> Template {
    let values = FormValues {
        enabled: true,
        kind: "webhook".into(),
        min_severity: "info".into(),
        tls: "starttls".into(),
        ..FormValues::default()
    };
    form_page(me.0, &app, None, values, Vec::new(), None)
}

type FormAnswer = Result<Result<Flash<Redirect>, status::Custom<Template>>, AppError>;

/// What the audit log says of a target: never its secret.
fn detail(spec: &TargetSpec, secret_set: bool) -> String {
    format!(
        "target {}: {}, {}, min severity {}, {} {}",
        quoted(&spec.name),
        spec.kind.describe(),
        if spec.enabled { "enabled" } else { "disabled" },
        spec.min_severity.as_str(),
        if matches!(spec.kind, Kind::Email(_)) { "password" } else { "token" },
        if secret_set { "set" } else { "not set" },
    )
}

async fn audit(
    app: &App<'_>,
    me: &crate::domain::CurrentUser,
    addr: &ClientAddr,
    action: &str,
    detail: &str,
) {
    let actor = Actor { user: Some(me.name.clone()), addr: addr.0.map(|a| a.to_string()) };
    crate::events::record_logged(
        app.pool,
        AuditKind::Alert,
        &actor,
        AuditOutcome::Ok,
        Some(action),
        Some(detail),
    )
    .await;
}

fn refused(
    me: &crate::domain::CurrentUser,
    app: &App<'_>,
    target: Option<&Target>,
    f: &TargetForm,
    error: String,
) -> FormAnswer {
    let page = form_page(me, app, target, FormValues::of_form(f), vec![error], None);
    Ok(Err(status::Custom(Status::BadRequest, page)))
}

#[rocket::post("/alerts/targets", data = "<form>")]
async fn create(
    me: Admin<'_>,
    form: Csrf<TargetForm>,
    app: App<'_>,
    addr: ClientAddr,
) -> FormAnswer {
    let f = form.0;
    let spec = match f.fields().parse() {
        Ok(spec) => spec,
        Err(e) => return refused(me.0, &app, None, &f, e.to_string()),
    };
    match store::insert_target(app.pool, &spec, Source::Page, &me.0.name, crate::db::now_ms()).await
    {
        Ok(_) => {
            audit(&app, me.0, &addr, "target_added", &detail(&spec, spec.secret.is_some())).await;
            tracing::info!(target = %spec.name, by = %me.0.name, "notification target added");
            Ok(Ok(Flash::success(
                Redirect::to("/alerts/targets"),
                format!("Target {} added.", spec.name),
            )))
        }
        Err(SaveError::Db(e)) => Err(e.into()),
        Err(e) => refused(me.0, &app, None, &f, e.to_string()),
    }
}

async fn find(app: &App<'_>, id: i64) -> Result<Target, AppError> {
    store::target(app.pool, id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("There is no notification target {id}.")))
}

#[rocket::get("/alerts/targets/<id>", rank = 3)]
async fn edit_page(
    me: Admin<'_>,
    id: i64,
    app: App<'_>,
    flash: Option<FlashMessage<'_>>,
) -> Result<Template, AppError> {
    let t = find(&app, id).await?;
    Ok(form_page(me.0, &app, Some(&t), FormValues::of_target(&t), Vec::new(), flash))
}

#[rocket::post("/alerts/targets/<id>", data = "<form>", rank = 3)]
async fn update(
    me: Admin<'_>,
    id: i64,
    form: Csrf<TargetForm>,
    app: App<'_>,
    addr: ClientAddr,
) -> FormAnswer {
    let f = form.0;
    let t = find(&app, id).await?;
    let spec = match f.fields().parse() {
        Ok(spec) => spec,
        Err(e) => return refused(me.0, &app, Some(&t), &f, e.to_string()),
    };
    let clear = checked(&f.clear_secret) && spec.secret.is_none();
    match store::update_target(app.pool, id, &spec, clear, crate::db::now_ms()).await {
        Ok(()) => {
            let secret_set = spec.secret.is_some() || (t.secret.is_some() && !clear);
            audit(&app, me.0, &addr, "target_changed", &detail(&spec, secret_set)).await;
            Ok(Ok(Flash::success(
                Redirect::to("/alerts/targets"),
                format!("Target {} saved.", spec.name),
            )))
        }
        Err(SaveError::Db(e)) => Err(e.into()),
        Err(e) => refused(me.0, &app, Some(&t), &f, e.to_string()),
    }
}

#[rocket::post("/alerts/targets/<id>/enabled", data = "<form>", rank = 3)]
async fn toggle(
    me: Admin<'_>,
    id: i64,
    form: Csrf<EnableForm>,
    app: App<'_>,
    addr: ClientAddr,
) -> Result<Flash<Redirect>, AppError> {
    let t = find(&app, id).await?;
    let enabled = checked(&form.0.enabled);
    match store::set_enabled(app.pool, id, enabled, crate::db::now_ms()).await {
        Ok(()) => {
            let spec = TargetSpec {
                name: t.name.clone(),
                enabled,
                min_severity: t.min_severity,
                kind: t.kind.clone(),
                secret: None,
            };
            audit(&app, me.0, &addr, "target_changed", &detail(&spec, t.secret.is_some())).await;
            let word = if enabled { "enabled" } else { "disabled" };
            Ok(Flash::success(
                Redirect::to("/alerts/targets"),
                format!("Target {} {word}.", t.name),
            ))
        }
        Err(SaveError::Db(e)) => Err(e.into()),
        Err(e) => {
            Ok(Flash::error(Redirect::to("/alerts/targets"), format!("Target {}: {e}.", t.name)))
        }
    }
}

#[derive(Serialize)]
struct DeletePage {
    title: String,
    chrome: Chrome,
    id: i64,
    name: String,
}

#[rocket::get("/alerts/targets/<id>/delete", rank = 3)]
async fn delete_confirm(me: Admin<'_>, id: i64, app: App<'_>) -> Result<Template, AppError> {
    let t = find(&app, id).await?;
    if t.source == Source::File {
        return Err(AppError::BadRequest(format!(
            "The target {} comes from the configuration file; remove it there.",
            t.name
        )));
    }
    Ok(Template::render(
        "alerts/targets_delete",
        DeletePage {
            title: format!("Delete target {}?", t.name),
            chrome: Chrome::new(me.0, None, app.settings),
            id,
            name: t.name,
        },
    ))
}

#[rocket::post("/alerts/targets/<id>/delete", data = "<_form>", rank = 3)]
async fn delete(
    me: Admin<'_>,
    id: i64,
    _form: Csrf<TokenForm>,
    app: App<'_>,
    addr: ClientAddr,
) -> Result<Flash<Redirect>, AppError> {
    let Some(t) = store::target(app.pool, id).await? else {
        return Ok(Flash::error(
            Redirect::to("/alerts/targets"),
            format!("There is no notification target {id}."),
        ));
    };
    match store::delete_target(app.pool, id).await {
        Ok(()) => {
            let spec = TargetSpec {
                name: t.name.clone(),
                enabled: t.enabled,
                min_severity: t.min_severity,
                kind: t.kind.clone(),
                secret: None,
            };
            audit(&app, me.0, &addr, "target_removed", &detail(&spec, t.secret.is_some())).await;
            Ok(Flash::success(
                Redirect::to("/alerts/targets"),
                format!("Target {} deleted.", t.name),
            ))
        }
        Err(SaveError::Db(e)) => Err(e.into()),
        Err(e) => {
            Ok(Flash::error(Redirect::to("/alerts/targets"), format!("Target {}: {e}.", t.name)))
        }
    }
}
