//! The power forms: one VM (`POST /vms/<host>/<uuid>/power`), many VMs (`POST /vms/power`), and
//! the confirmation page forced actions go through, which works without JavaScript.

use rocket::form::FromForm;
use rocket::request::FlashMessage;
use rocket::response::{Flash, Redirect};
use rocket::{Route, State};
use rocket_dyn_templates::Template;
use serde::Serialize;

use super::{Control, Outcome, Target};
use crate::auth::{Chrome, Csrf, CsrfForm, Operator};
use crate::backend::PowerAction;
use crate::config::Settings;
use crate::error::AppError;

pub fn routes() -> Vec<Route> {
    rocket::routes![confirm_page, power_one, power_bulk]
}

/// Most VMs one bulk request may name.
const MAX_BULK: usize = 1000;

/// Where to go after an action: a local vmdeck page, else the VM list.
fn safe_back(back: Option<&str>) -> String {
    match back {
        Some(b)
            if (b.starts_with("/vms") || b.starts_with("/audit"))
                && !b.contains("//")
                && !b.contains('\\') =>
        {
            b.to_string()
        }
        _ => "/vms".to_string(),
    }
}

/// A UUID as libvirt and VirtualBox print them: hex digits and dashes.
fn check_uuid(uuid: &str) -> Result<(), AppError> {
    let ok =
        (32..=36).contains(&uuid.len()) && uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(AppError::NotFound(format!("{uuid:?} is not a VM identifier (a UUID).")))
    }
}

async fn find(control: &Control, host: &str, uuid: &str) -> Result<Target, AppError> {
    check_uuid(uuid)?;
    control.target(host, uuid).await?.ok_or_else(|| {
        AppError::NotFound(format!(
            "There is no VM {uuid} on a host named {host:?} (it may be gone)."
        ))
    })
}

fn parse_action(action: &str) -> Result<PowerAction, AppError> {
    PowerAction::parse(action).ok_or_else(|| {
        AppError::BadRequest(format!(
            "Unknown action {action:?}. Known actions: {}.",
            PowerAction::ALL.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
        ))
    })
}

#[derive(Serialize)]
struct ConfirmVm {
    name: String,
    host: String,
    uuid: String,
    state: &'static str,
}

#[derive(Serialize)]
struct ConfirmPage {
    title: String,
    chrome: Chrome,
    action: &'static str,
    action_label: &'static str,
    warning: &'static str,
    vms: Vec<ConfirmVm>,
    /// Where the form posts.
    post_to: String,
    back: String,
}

fn warning(action: PowerAction) -> &'static str {
    match action {
        PowerAction::PowerOff => "Power off cuts the power at once: the guest cannot save its work, like pulling the plug.",
        PowerAction::Reset => "Reset restarts the VM at once: the guest cannot save its work, like pressing the reset button.",
        _ => "",
    }
}

#[allow(clippy::too_many_arguments)] // route parameters and guards
#[rocket::get("/vms/<host>/<uuid>/power/confirm?<action>&<back>")]
async fn confirm_page(
    user: Operator<'_>,
    host: &str,
    uuid: &str,
    action: &str,
    back: Option<&str>,
    control: &State<Control>,
    settings: &State<Settings>,
    flash: Option<FlashMessage<'_>>,
) -> Result<Template, AppError> {
    let action = parse_action(action)?;
    let target = find(control, host, uuid).await?;
    Ok(Template::render(
        "control/confirm",
        ConfirmPage {
            title: format!("{} {}?", action.label(), target.name),
            chrome: Chrome::new(user.0, flash, settings),
            action: action.as_str(),
            action_label: action.label(),
            warning: warning(action),
            vms: vec![ConfirmVm {
                name: target.name.clone(),
                host: host.to_string(),
                uuid: uuid.to_string(),
                state: target.state.label(),
            }],
            post_to: format!("/vms/{host}/{uuid}/power"),
            back: safe_back(back),
        },
    ))
}

#[derive(FromForm)]
struct PowerForm {
    #[field(default = String::new())]
    csrf_token: String,
    #[field(default = String::new())]
    action: String,
    confirm: Option<String>,
    back: Option<String>,
}

impl CsrfForm for PowerForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

fn confirmed(confirm: &Option<String>) -> bool {
    confirm.as_deref() == Some("yes")
}

#[rocket::post("/vms/<host>/<uuid>/power", data = "<form>")]
async fn power_one(
    user: Operator<'_>,
    host: &str,
    uuid: &str,
    form: Csrf<PowerForm>,
    control: &State<Control>,
) -> Result<Result<Flash<Redirect>, Redirect>, AppError> {
    let form = form.0;
    let action = parse_action(&form.action)?;
    let target = find(control, host, uuid).await?;
    let back = safe_back(form.back.as_deref());
    if action.is_forced() && !confirmed(&form.confirm) {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("action", action.as_str())
            .append_pair("back", &back)
            .finish();
        return Ok(Err(Redirect::to(format!("/vms/{host}/{uuid}/power/confirm?{query}"))));
    }
    let outcome = control.execute(&target, action, &user.0.actor()).await;
    let message = match &outcome {
        Outcome::Accepted => format!(
            "{} {}: accepted by the host; the list shows it as pending until the VM gets there.",
            action.label(),
            target.name
        ),
        Outcome::Refused(why) => why.clone(),
        Outcome::Failed(why) => format!("{} {} failed: {why}", action.label(), target.name),
    };
    Ok(Ok(match outcome {
        Outcome::Accepted => Flash::success(Redirect::to(back), message),
        _ => Flash::error(Redirect::to(back), message),
    }))
}

#[derive(FromForm)]
struct BulkForm {
    #[field(default = String::new())]
    csrf_token: String,
    #[field(default = String::new())]
    action: String,
    /// `host/uuid` of each selected VM.
    #[field(default = Vec::new())]
    vm: Vec<String>,
    confirm: Option<String>,
    back: Option<String>,
}

impl CsrfForm for BulkForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

#[rocket::post("/vms/power", data = "<form>")]
async fn power_bulk(
    user: Operator<'_>,
    form: Csrf<BulkForm>,
    control: &State<Control>,
    settings: &State<Settings>,
) -> Result<Result<Flash<Redirect>, Template>, AppError> {
    let form = form.0;
    let back = safe_back(form.back.as_deref());
    if form.action.is_empty() {
        return Ok(Ok(Flash::error(Redirect::to(back), "Choose an action for the selected VMs.")));
    }
    let action = parse_action(&form.action)?;
    if form.vm.is_empty() {
        return Ok(Ok(Flash::error(Redirect::to(back), "Select at least one VM.")));
    }
    if form.vm.len() > MAX_BULK {
        return Err(AppError::BadRequest(format!(
            "At most {MAX_BULK} VMs can be changed at once."
        )));
    }
    let mut targets = Vec::new();
    let mut not_found = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for key in &form.vm {
        if !seen.insert(key.as_str()) {
            continue;
        }
        let found = match key.split_once('/') {
            Some((host, uuid)) if check_uuid(uuid).is_ok() => control.target(host, uuid).await?,
            _ => None,
        };
        match found {
            Some(t) => targets.push(t),
            None => not_found.push(key.clone()),
        }
    }
    if action.is_forced() && !confirmed(&form.confirm) {
        return Ok(Err(Template::render(
            "control/confirm",
            ConfirmPage {
                title: format!("{} {} VMs?", action.label(), targets.len()),
                chrome: Chrome::new(user.0, None, settings),
                action: action.as_str(),
                action_label: action.label(),
                warning: warning(action),
                vms: targets
                    .iter()
                    .map(|t| ConfirmVm {
                        name: t.name.clone(),
                        host: t.host.config.name.to_string(),
                        uuid: t.uuid.clone(),
                        state: t.state.label(),
                    })
                    .collect(),
                post_to: "/vms/power".into(),
                back,
            },
        )));
    }

    // All at once; each host's semaphore caps how many reach one hypervisor together.
    let actor = user.0.actor();
    let outcomes =
        futures::future::join_all(targets.iter().map(|t| control.execute(t, action, &actor))).await;
    let mut accepted = Vec::new();
    let mut problems = Vec::new();
    for (t, o) in targets.iter().zip(outcomes) {
        match o {
            Outcome::Accepted => accepted.push(t.name.clone()),
            Outcome::Refused(why) | Outcome::Failed(why) => {
                problems.push(format!("{}: {why}", t.name))
            }
        }
    }
    problems.extend(not_found.iter().map(|k| format!("{k}: no such VM")));
    let mut message = format!("{}: {} accepted", action.label(), accepted.len());
    if !accepted.is_empty() {
        let shown: Vec<_> = accepted.iter().take(10).cloned().collect();
        message.push_str(&format!(
            " ({}{})",
            shown.join(", "),
            if accepted.len() > 10 { ", …" } else { "" }
        ));
    }
    if !problems.is_empty() {
        message.push_str(&format!(
            "; {} not done: {}",
            problems.len(),
            problems.iter().take(10).cloned().collect::<Vec<_>>().join("; ")
        ));
    }
    message.push('.');
    Ok(Ok(if problems.is_empty() {
        Flash::success(Redirect::to(back), message)
    } else {
        Flash::error(Redirect::to(back), message)
    }))
}
