//! The snapshot forms: take (`/vms/<host>/<uuid>/snapshots/new`, posting to
//! `/vms/<host>/<uuid>/snapshots`), and the confirmation pages of revert and delete
//! (`/vms/<host>/<uuid>/snapshots/<row id>/revert|delete`), which work without JavaScript. The
//! row id is `vm_snapshots.id` of a snapshot of that VM that exists now. Each POST answers with
//! a 303 back to the VM page and a flash; the request goes on in the background.

use rocket::form::FromForm;
use rocket::http::Status;
use rocket::request::FlashMessage;
use rocket::response::status::Custom;
use rocket::response::{Flash, Redirect};
use rocket::{Route, State};
use rocket_dyn_templates::Template;
use serde::Serialize;

use super::routes::find;
use super::snapshots::{invalid, MAX_DESCRIPTION, MAX_NAME, SCHEDULE_PREFIX};
use super::store::{self, PresentSnapshot};
use super::{Control, SnapshotOutcome, SnapshotRequest, Target};
use crate::auth::{Csrf, CsrfForm, Operator};
use crate::backend::SnapshotCaps;
use crate::config::Settings;
use crate::db::now_ms;
use crate::domain::{quoted, AfterRevert, HostName, PowerState, SnapshotAction, VmUuid};
use crate::web::error::unavailable;
use crate::web::format::{absolute, ago};
use crate::web::{AppError, Chrome};

pub fn routes() -> Vec<Route> {
    rocket::routes![take_page, take, revert_page, revert, delete_page, delete]
}

/// The VM as the snapshot pages show it.
#[derive(Serialize)]
struct VmView {
    name: String,
    host: String,
    uuid: String,
    state: &'static str,
    href: String,
}

impl From<&Target> for VmView {
    fn from(t: &Target) -> Self {
        VmView {
            name: t.name.clone(),
            host: t.host.config.name.to_string(),
            uuid: t.uuid.to_string(),
            state: t.state.label(),
            href: t.key().href(),
        }
    }
}

/// The take form, fresh or with the input it refused.
#[derive(Serialize)]
struct TakePage {
    title: String,
    chrome: Chrome,
    vm: VmView,
    post_to: String,
    name: String,
    description: String,
    with_memory: bool,
    /// Why the last input was refused.
    error: Option<String>,
    supported: bool,
    memory_choice: bool,
    /// What a snapshot of this VM holds, in a sentence (the form states it).
    memory_sentence: String,
    max_name: usize,
    max_description: usize,
    /// Names starting with this are kept for schedules.
    reserved_prefix: &'static str,
}

/// What a snapshot of a VM in `state` holds on a host with `caps`, in a sentence.
fn memory_sentence(caps: &SnapshotCaps, state: PowerState) -> String {
    let running = matches!(state, PowerState::Running | PowerState::Paused);
    if caps.memory_choice {
        "On this host a running VM's snapshot can include its memory (tick the box) or hold its disks only.".into()
    } else if caps.running_with_memory {
        if running {
            "A running VM's snapshot includes its memory on this host: reverting to it resumes the running guest.".into()
        } else {
            "A running VM's snapshot includes its memory on this host; this VM is not running, so the snapshot holds its disks.".into()
        }
    } else {
        "On this host a snapshot holds the VM's disks only, not its memory.".into()
    }
}

/// A name suggestion not used by the VM's snapshots: `snap-20261201-0030`.
fn suggestion(used: &[String]) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(now_ms() / 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let base = format!(
        "snap-{:04}{:02}{:02}-{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    );
    (1..)
        .map(|n| if n == 1 { base.clone() } else { format!("{base}-{n}") })
        .find(|n| !used.contains(n))
        .unwrap_or(base)
}

impl TakePage {
    fn new(target: &Target, chrome: Chrome) -> TakePage {
        let caps = target.host.backend.snapshot_caps();
        TakePage {
            title: format!("Take a snapshot of {}", target.name),
            chrome,
            vm: VmView::from(target),
            post_to: format!("{}/snapshots", target.key().href()),
            name: String::new(),
            description: String::new(),
            with_memory: caps.memory_choice,
            error: None,
            supported: caps.supported,
            memory_choice: caps.memory_choice,
            memory_sentence: memory_sentence(&caps, target.state),
            max_name: MAX_NAME,
            max_description: MAX_DESCRIPTION,
            reserved_prefix: SCHEDULE_PREFIX,
        }
    }
}

#[rocket::get("/vms/<host>/<uuid>/snapshots/new")]
async fn take_page(
    user: Operator<'_>,
    host: Result<HostName, &str>,
    uuid: Result<VmUuid, &str>,
    control: &State<Control>,
    settings: &State<Settings>,
    flash: Option<FlashMessage<'_>>,
) -> Result<Template, AppError> {
    let target = find(control, host, uuid).await?;
    let used = store::snapshot_names(&control.pool, target.host.id, &target.uuid).await?;
    let mut page = TakePage::new(&target, Chrome::new(user.0, flash, settings));
    page.name = suggestion(&used);
    Ok(Template::render("snapshots/take", page))
}

#[derive(FromForm)]
struct TakeForm {
    #[field(default = String::new())]
    csrf_token: String,
    #[field(default = String::new())]
    name: String,
    #[field(default = String::new())]
    description: String,
    #[field(default = false)]
    with_memory: bool,
}

impl CsrfForm for TakeForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

#[derive(FromForm)]
struct ConfirmForm {
    #[field(default = String::new())]
    csrf_token: String,
    /// Revert: `as_taken`, `running` or `paused`.
    after: Option<String>,
}

impl CsrfForm for ConfirmForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

/// The answer to a snapshot POST: back to the VM page with a flash, or the take form again
/// with the refused input.
type Answer = Result<Result<Flash<Redirect>, Custom<Template>>, AppError>;

/// The flash of an outcome, as the power forms word theirs.
fn answer(target: &Target, action: SnapshotAction, name: &str, outcome: SnapshotOutcome) -> Answer {
    let back = target.key().href();
    let what = format!("{} {}", action.label(), quoted(name));
    Ok(Ok(match outcome {
        SnapshotOutcome::Requested { .. } => Flash::success(
            Redirect::to(back),
            format!("{what} requested for {}; its page shows the progress.", target.name),
        ),
        SnapshotOutcome::Refused(why) => Flash::error(Redirect::to(back), why),
        SnapshotOutcome::Failed(why) => {
            Flash::error(Redirect::to(back), format!("{what} for {} failed: {why}", target.name))
        }
        SnapshotOutcome::Unrecorded(fault) => {
            return Err(AppError::Unavailable(format!(
                "{what} for {} was not sent. {}",
                target.name,
                unavailable(fault)
            )))
        }
    }))
}

#[rocket::post("/vms/<host>/<uuid>/snapshots", data = "<form>")]
async fn take(
    user: Operator<'_>,
    host: Result<HostName, &str>,
    uuid: Result<VmUuid, &str>,
    form: Csrf<TakeForm>,
    control: &State<Control>,
    settings: &State<Settings>,
) -> Answer {
    let form = form.0;
    let target = find(control, host, uuid).await?;
    let caps = target.host.backend.snapshot_caps();
    let req = SnapshotRequest {
        action: SnapshotAction::Take,
        snapshot_name: form.name.clone(),
        snap_id: None,
        description: form.description.clone(),
        with_memory: if caps.memory_choice { form.with_memory } else { caps.running_with_memory },
        after: AfterRevert::AsTaken,
        schedule_id: None,
    };
    // Bad input: the form again, with what was typed and why it is refused; nothing recorded.
    if let Some(why) = invalid(&req) {
        let mut page = TakePage::new(&target, Chrome::new(user.0, None, settings));
        page.name = form.name;
        page.description = form.description;
        page.with_memory = form.with_memory;
        page.error = Some(why);
        return Ok(Err(Custom(
            Status::UnprocessableEntity,
            Template::render("snapshots/take", page),
        )));
    }
    let outcome = control.snapshot(&target, req, &user.0.actor()).await;
    answer(&target, SnapshotAction::Take, &form.name, outcome)
}

/// A snapshot of the VM named by the path, by its row id; anything else is a 404 in words.
async fn snapshot_of(
    control: &Control,
    target: &Target,
    row: &str,
) -> Result<PresentSnapshot, AppError> {
    let missing = || {
        AppError::NotFound(format!(
            "{} has no snapshot {} (it may have been deleted; its page lists the ones that exist).",
            target.name,
            quoted(row)
        ))
    };
    let id: i64 = row.parse().map_err(|_| missing())?;
    store::present_snapshot(&control.pool, target.host.id, &target.uuid, id)
        .await?
        .ok_or_else(missing)
}

/// A revert or delete confirmation page.
#[derive(Serialize)]
struct ConfirmPage {
    title: String,
    chrome: Chrome,
    vm: VmView,
    action: &'static str,
    action_label: &'static str,
    post_to: String,
    snapshot: SnapshotView,
    /// Revert: the choice of state afterwards, where the host offers it.
    choose_state: bool,
    after_choices: Vec<(&'static str, &'static str)>,
    /// Delete: how many snapshots descend from this one directly.
    children: i64,
}

#[derive(Serialize)]
struct SnapshotView {
    name: String,
    description: String,
    /// `taken 3 d ago (2026-11-28 10:00:00 UTC)`, or first seen where the host does not say.
    age: String,
    with_memory: bool,
    current: bool,
    has_parent: bool,
}

impl SnapshotView {
    fn new(s: &PresentSnapshot) -> Self {
        let now = now_ms();
        let age = match s.created_at {
            Some(t) => format!("taken {} ({})", ago(t, now), absolute(t)),
            None => format!(
                "first seen {} ({}; the host does not say when it was taken)",
                ago(s.first_seen, now),
                absolute(s.first_seen)
            ),
        };
        SnapshotView {
            name: s.name.clone(),
            description: s.description.clone(),
            age,
            with_memory: s.with_memory,
            current: s.is_current,
            has_parent: s.parent_snap_id.is_some(),
        }
    }
}

async fn confirm_page(
    user: Operator<'_>,
    target: Target,
    row: &str,
    action: SnapshotAction,
    control: &Control,
    settings: &Settings,
    flash: Option<FlashMessage<'_>>,
) -> Result<Template, AppError> {
    let snap = snapshot_of(control, &target, row).await?;
    let children = match action {
        SnapshotAction::Delete => {
            store::snapshot_children(&control.pool, snap.vm_id, &snap.snap_id).await?
        }
        _ => 0,
    };
    let verb = match action {
        SnapshotAction::Revert => "revert",
        _ => "delete",
    };
    let page = ConfirmPage {
        title: match action {
            SnapshotAction::Revert => {
                format!("Revert {} to snapshot {}?", target.name, quoted(&snap.name))
            }
            _ => format!("Delete snapshot {} of {}?", quoted(&snap.name), target.name),
        },
        chrome: Chrome::new(user.0, flash, settings),
        action: action.as_str(),
        action_label: action.label(),
        post_to: format!("{}/snapshots/{}/{verb}", target.key().href(), snap.id),
        snapshot: SnapshotView::new(&snap),
        choose_state: target.host.backend.snapshot_caps().revert_choose_state,
        after_choices: AfterRevert::ALL.iter().map(|a| (a.as_str(), a.label())).collect(),
        children,
        vm: VmView::from(&target),
    };
    Ok(Template::render("snapshots/confirm", page))
}

#[rocket::get("/vms/<host>/<uuid>/snapshots/<row>/revert")]
async fn revert_page(
    user: Operator<'_>,
    host: Result<HostName, &str>,
    uuid: Result<VmUuid, &str>,
    row: &str,
    control: &State<Control>,
    settings: &State<Settings>,
    flash: Option<FlashMessage<'_>>,
) -> Result<Template, AppError> {
    let target = find(control, host, uuid).await?;
    confirm_page(user, target, row, SnapshotAction::Revert, control, settings, flash).await
}

#[rocket::get("/vms/<host>/<uuid>/snapshots/<row>/delete")]
async fn delete_page(
    user: Operator<'_>,
    host: Result<HostName, &str>,
    uuid: Result<VmUuid, &str>,
    row: &str,
    control: &State<Control>,
    settings: &State<Settings>,
    flash: Option<FlashMessage<'_>>,
) -> Result<Template, AppError> {
    let target = find(control, host, uuid).await?;
    confirm_page(user, target, row, SnapshotAction::Delete, control, settings, flash).await
}

/// The state a revert form asked for; an unknown one is a 400 naming the known ones.
fn after(given: Option<&str>) -> Result<AfterRevert, AppError> {
    match given.filter(|g| !g.is_empty()) {
        None => Ok(AfterRevert::AsTaken),
        Some(g) => AfterRevert::ALL.into_iter().find(|a| a.as_str() == g).ok_or_else(|| {
            AppError::BadRequest(format!(
                "Unknown state after revert {}. Known: as_taken, running, paused.",
                quoted(g)
            ))
        }),
    }
}

#[rocket::post("/vms/<host>/<uuid>/snapshots/<row>/revert", data = "<form>")]
async fn revert(
    user: Operator<'_>,
    host: Result<HostName, &str>,
    uuid: Result<VmUuid, &str>,
    row: &str,
    form: Csrf<ConfirmForm>,
    control: &State<Control>,
) -> Answer {
    let after = after(form.0.after.as_deref())?;
    let target = find(control, host, uuid).await?;
    let snap = snapshot_of(control, &target, row).await?;
    let after = if target.host.backend.snapshot_caps().revert_choose_state {
        after
    } else {
        AfterRevert::AsTaken
    };
    let req = SnapshotRequest {
        action: SnapshotAction::Revert,
        snapshot_name: snap.name.clone(),
        snap_id: Some(snap.snap_id),
        description: String::new(),
        with_memory: false,
        after,
        schedule_id: None,
    };
    let outcome = control.snapshot(&target, req, &user.0.actor()).await;
    answer(&target, SnapshotAction::Revert, &snap.name, outcome)
}

#[rocket::post("/vms/<host>/<uuid>/snapshots/<row>/delete", data = "<form>")]
async fn delete(
    user: Operator<'_>,
    host: Result<HostName, &str>,
    uuid: Result<VmUuid, &str>,
    row: &str,
    form: Csrf<ConfirmForm>,
    control: &State<Control>,
) -> Answer {
    let _ = form;
    let target = find(control, host, uuid).await?;
    let snap = snapshot_of(control, &target, row).await?;
    let req = SnapshotRequest {
        action: SnapshotAction::Delete,
        snapshot_name: snap.name.clone(),
        snap_id: Some(snap.snap_id),
        description: String::new(),
        with_memory: false,
        after: AfterRevert::AsTaken,
        schedule_id: None,
    };
    let outcome = control.snapshot(&target, req, &user.0.actor()).await;
    answer(&target, SnapshotAction::Delete, &snap.name, outcome)
}
