//! The power forms: one VM (`POST /vms/<host>/<uuid>/power`), many VMs (`POST /vms/power`), and
//! the confirmation page forced actions go through, which works without JavaScript.

use rocket::form::{self, FromForm};
use rocket::request::FlashMessage;
use rocket::response::{Flash, Redirect};
use rocket::{Route, State};
use rocket_dyn_templates::Template;
use serde::Serialize;

use super::snapshots::invalid;
use super::{Control, Outcome, SnapshotOutcome, SnapshotRequest, Target};
use crate::auth::{Csrf, CsrfForm, Operator};
use crate::config::Settings;
use crate::db::StorageFault;
use crate::domain::{quoted, AfterRevert, HostName, PowerAction, SnapshotAction, VmKey, VmUuid};
use crate::web::error::unavailable;
use crate::web::power::{confirm_href, power_href, safe_back};
use crate::web::{AppError, Chrome};

pub fn routes() -> Vec<Route> {
    let mut routes = rocket::routes![confirm_page, power_one, power_bulk];
    routes.extend(super::snapshot_routes::routes());
    routes
}

/// Most VMs one bulk request may name.
const MAX_BULK: usize = 1000;

/// The VM named by a path, present on a configured host.
pub async fn find(
    control: &Control,
    host: Result<HostName, &str>,
    uuid: Result<VmUuid, &str>,
) -> Result<Target, AppError> {
    let uuid = uuid.map_err(|given| AppError::NotFound(VmUuid::not_a_uuid(given)))?;
    let not_found = |host: &str| {
        AppError::NotFound(format!(
            "There is no VM {uuid} on a host named {} (it may be gone).",
            quoted(host)
        ))
    };
    let host = host.map_err(not_found)?;
    let vm = VmKey::new(host, uuid.clone());
    control.target(&vm).await?.ok_or_else(|| not_found(vm.host.as_str()))
}

/// The action a form or link asked for; a missing or unknown one is a 400 naming the known ones.
fn action(field: &form::Result<'_, PowerAction>) -> Result<PowerAction, AppError> {
    field.as_ref().copied().map_err(|errors| {
        let given = errors.iter().find_map(|e| e.value.as_deref()).unwrap_or_default();
        AppError::BadRequest(format!(
            "Unknown action {}. Known actions: {}.",
            quoted(given),
            PowerAction::known()
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

impl From<&Target> for ConfirmVm {
    fn from(t: &Target) -> Self {
        ConfirmVm {
            name: t.name.clone(),
            host: t.host.config.name.to_string(),
            uuid: t.uuid.to_string(),
            state: t.state.label(),
        }
    }
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

impl ConfirmPage {
    fn new(title: String, chrome: Chrome, action: PowerAction, vms: &[Target]) -> Self {
        ConfirmPage {
            title,
            chrome,
            action: action.as_str(),
            action_label: action.label(),
            warning: action.warning(),
            vms: vms.iter().map(ConfirmVm::from).collect(),
            post_to: "/vms/power".into(),
            back: "/vms".into(),
        }
    }
}

/// `?action=…&back=…` of the confirmation page.
#[derive(FromForm)]
struct ConfirmQuery<'r> {
    action: form::Result<'r, PowerAction>,
    back: Option<&'r str>,
}

#[rocket::get("/vms/<host>/<uuid>/power/confirm?<q..>")]
async fn confirm_page(
    user: Operator<'_>,
    host: Result<HostName, &str>,
    uuid: Result<VmUuid, &str>,
    q: ConfirmQuery<'_>,
    control: &State<Control>,
    settings: &State<Settings>,
    flash: Option<FlashMessage<'_>>,
) -> Result<Template, AppError> {
    let action = action(&q.action)?;
    let target = find(control, host, uuid).await?;
    let vm = target.key();
    let title = format!("{} {}?", action.label(), target.name);
    let mut page = ConfirmPage::new(title, Chrome::new(user.0, flash, settings), action, &[target]);
    page.post_to = power_href(&vm);
    page.back = safe_back(q.back);
    Ok(Template::render("control/confirm", page))
}

#[derive(FromForm)]
struct PowerForm<'r> {
    #[field(default = String::new())]
    csrf_token: String,
    action: form::Result<'r, PowerAction>,
    confirm: Option<&'r str>,
    back: Option<&'r str>,
}

#[derive(FromForm)]
struct BulkForm<'r> {
    #[field(default = String::new())]
    csrf_token: String,
    action: form::Result<'r, PowerAction>,
    /// `host/uuid` of each selected VM, as given (an unknown one is reported, not fatal).
    #[field(default = Vec::new())]
    vm: Vec<&'r str>,
    confirm: Option<&'r str>,
    back: Option<&'r str>,
    /// Take snapshot: the one name every selected VM's snapshot gets.
    snapshot_name: Option<&'r str>,
}

impl CsrfForm for PowerForm<'_> {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

impl CsrfForm for BulkForm<'_> {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

/// A forced action runs only once its confirmation page was answered.
fn confirmed(confirm: Option<&str>) -> bool {
    confirm == Some("yes")
}

#[rocket::post("/vms/<host>/<uuid>/power", data = "<form>")]
async fn power_one(
    user: Operator<'_>,
    host: Result<HostName, &str>,
    uuid: Result<VmUuid, &str>,
    form: Csrf<PowerForm<'_>>,
    control: &State<Control>,
) -> Result<Result<Flash<Redirect>, Redirect>, AppError> {
    let form = form.0;
    let action = action(&form.action)?;
    let target = find(control, host, uuid).await?;
    let back = safe_back(form.back);
    // An action the VM's hypervisor would refuse is not confirmed first: `execute` refuses it
    // at once, in words.
    if action.is_forced() && !confirmed(form.confirm) && target.offers(action).allowed() {
        return Ok(Err(Redirect::to(confirm_href(&target.key(), action, &back))));
    }
    let outcome = control.execute(&target, action, &user.0.actor()).await;
    if let Outcome::Unrecorded(fault) = outcome {
        return Err(AppError::Unavailable(format!(
            "{} {} was not sent. {}",
            action.label(),
            target.name,
            unavailable(fault)
        )));
    }
    let message = match &outcome {
        Outcome::Requested { superseded } => requested_message(action, &target.name, *superseded),
        Outcome::Refused(why) => why.clone(),
        Outcome::Failed(why) => format!("{} {} failed: {why}", action.label(), target.name),
        Outcome::Unrecorded(_) => unreachable!("answered above"),
    };
    Ok(Ok(match outcome {
        Outcome::Requested { .. } => Flash::success(Redirect::to(back), message),
        _ => Flash::error(Redirect::to(back), message),
    }))
}

/// The flash of a request recorded and being sent: what the answer knows, and where to look
/// for the rest (the host answers after the page does).
fn requested_message(action: PowerAction, vm: &str, superseded: Option<PowerAction>) -> String {
    let overruled = superseded
        .map(|old| format!(" (the pending {} is superseded)", old.label()))
        .unwrap_or_default();
    format!(
        "{} requested for {vm}{overruled}; the list and its page show its progress.",
        action.label()
    )
}

#[rocket::post("/vms/power", data = "<form>")]
async fn power_bulk(
    user: Operator<'_>,
    form: Csrf<BulkForm<'_>>,
    control: &State<Control>,
    settings: &State<Settings>,
) -> Result<Result<Flash<Redirect>, Template>, AppError> {
    let form = form.0;
    let back = safe_back(form.back);
    let nothing_chosen =
        form.action.as_ref().err().is_some_and(|errors| {
            errors.iter().all(|e| e.value.as_deref().unwrap_or("").is_empty())
        });
    if nothing_chosen {
        return Ok(Ok(Flash::error(Redirect::to(back), "Choose an action for the selected VMs.")));
    }
    let take_snapshot = form.action.as_ref().err().is_some_and(|errors| {
        errors.iter().any(|e| e.value.as_deref() == Some(SnapshotAction::Take.as_str()))
    });
    let action = if take_snapshot { None } else { Some(action(&form.action)?) };
    if form.vm.is_empty() {
        return Ok(Ok(Flash::error(Redirect::to(back), "Select at least one VM.")));
    }
    if form.vm.len() > MAX_BULK {
        return Err(AppError::BadRequest(format!(
            "At most {MAX_BULK} VMs can be changed at once."
        )));
    }
    let Some(action) = action else {
        return bulk_snapshot(&user, form.snapshot_name, &form.vm, back, control).await;
    };
    let (targets, not_found) = resolve(control, &form.vm).await?;
    if action.is_forced() && !confirmed(form.confirm) {
        let title = format!("{} {} VMs?", action.label(), targets.len());
        let mut page =
            ConfirmPage::new(title, Chrome::new(user.0, None, settings), action, &targets);
        page.back = back;
        return Ok(Err(Template::render("control/confirm", page)));
    }

    // Each VM's request is recorded in turn (one write transaction each) and sent in the
    // background, where each host's semaphore caps how many reach one hypervisor together.
    let actor = user.0.actor();
    let mut requested = Vec::new();
    let mut problems = Vec::new();
    let mut fault = None;
    for t in &targets {
        match control.execute(t, action, &actor).await {
            Outcome::Requested { .. } => requested.push(t.name.clone()),
            Outcome::Refused(why) | Outcome::Failed(why) => {
                problems.push(format!("{}: {why}", t.name))
            }
            Outcome::Unrecorded(f) => {
                fault = Some(f);
                problems.push(format!("{}: not sent", t.name))
            }
        }
    }
    problems.extend(not_found.iter().map(|k| format!("{k}: no such VM")));
    let message = bulk_message(action.label(), &requested, &problems);
    bulk_answer(back, message, &requested, &problems, fault)
}

/// The selected VMs that exist (each once), and the keys that name none.
async fn resolve(control: &Control, keys: &[&str]) -> Result<(Vec<Target>, Vec<String>), AppError> {
    let mut targets = Vec::new();
    let mut not_found = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for key in keys {
        if !seen.insert(*key) {
            continue;
        }
        let found = match VmKey::parse(key) {
            Ok(vm) => control.target(&vm).await?,
            Err(_) => None,
        };
        match found {
            Some(t) => targets.push(t),
            None => not_found.push(key.to_string()),
        }
    }
    Ok((targets, not_found))
}

/// A bulk form's answer: success, failure, or a warning when partly done.
fn bulk_answer(
    back: String,
    message: String,
    requested: &[String],
    problems: &[String],
    fault: Option<StorageFault>,
) -> Result<Result<Flash<Redirect>, Template>, AppError> {
    if let Some(fault) = fault {
        return Err(AppError::Unavailable(format!("{message} {}", unavailable(fault))));
    }
    Ok(Ok(if problems.is_empty() {
        Flash::success(Redirect::to(back), message)
    } else if requested.is_empty() {
        Flash::error(Redirect::to(back), message)
    } else {
        // Partly done: neither a success nor a failure.
        Flash::new(Redirect::to(back), "warning", message)
    }))
}

/// Take snapshot for the selected VMs, one name for all: each VM its own request and audit
/// entry, sent in the background under its host's slots. A bad name is refused before
/// anything is recorded.
async fn bulk_snapshot(
    user: &Operator<'_>,
    snapshot_name: Option<&str>,
    keys: &[&str],
    back: String,
    control: &Control,
) -> Result<Result<Flash<Redirect>, Template>, AppError> {
    let name = snapshot_name.unwrap_or_default().to_string();
    let req = SnapshotRequest {
        action: SnapshotAction::Take,
        snapshot_name: name.clone(),
        snap_id: None,
        description: String::new(),
        with_memory: false,
        after: AfterRevert::AsTaken,
        schedule_id: None,
    };
    if let Some(why) = invalid(&req) {
        return Ok(Ok(Flash::error(
            Redirect::to(back),
            format!("Take snapshot was not requested: {why}"),
        )));
    }
    let (targets, not_found) = resolve(control, keys).await?;
    let actor = user.0.actor();
    let mut requested = Vec::new();
    let mut problems = Vec::new();
    let mut fault = None;
    for t in &targets {
        let caps = t.host.backend.snapshot_caps();
        let req = SnapshotRequest { with_memory: caps.running_with_memory, ..req.clone() };
        match control.snapshot(t, req, &actor).await {
            SnapshotOutcome::Requested { .. } => requested.push(t.name.clone()),
            SnapshotOutcome::Refused(why) | SnapshotOutcome::Failed(why) => {
                problems.push(format!("{}: {why}", t.name))
            }
            SnapshotOutcome::Unrecorded(f) => {
                fault = Some(f);
                problems.push(format!("{}: not sent", t.name))
            }
        }
    }
    problems.extend(not_found.iter().map(|k| format!("{k}: no such VM")));
    let label = format!("Take snapshot {}", quoted(&name));
    let message = bulk_message(&label, &requested, &problems);
    bulk_answer(back, message, &requested, &problems, fault)
}

/// The flash message of a bulk action: what was requested (and is being sent) and what was
/// refused, ten of each at most.
fn bulk_message(label: &str, requested: &[String], problems: &[String]) -> String {
    let mut message = format!("{label}: {} requested", requested.len());
    if !requested.is_empty() {
        let shown: Vec<_> = requested.iter().take(10).cloned().collect();
        message.push_str(&format!(
            " ({}{})",
            shown.join(", "),
            if requested.len() > 10 { ", …" } else { "" }
        ));
    }
    if !problems.is_empty() {
        message.push_str(&format!(
            "; {} not done: {}",
            problems.len(),
            // Each problem's own closing full stop is dropped: the sentence ends once, below.
            problems
                .iter()
                .take(10)
                .map(|p| p.trim_end_matches('.'))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    message.push('.');
    if !requested.is_empty() {
        message.push_str(" The list shows their progress.");
    }
    message
}
