//! The schedules pages (admins only): `GET /schedules` (every schedule with its next and last
//! run and repeated failures in words), the create and edit forms, deletion through a
//! confirmation page, and one run's per-VM results.

use crate::web::checked;
use std::sync::Arc;

use rocket::form::FromForm;
use rocket::http::Status;
use rocket::request::FlashMessage;
use rocket::response::{status, Flash, Redirect};
use rocket::{Route, State};
use rocket_dyn_templates::Template;
use serde::Serialize;

use super::model::{Frequency, Retention, WEEKDAYS};
use super::store::{self, Schedule, ScheduleSpec, Scope};
use super::Scheduler;
use crate::auth::{Admin, Csrf, CsrfForm, TokenForm};
use crate::domain::quoted;
use crate::web::format as view;
use crate::web::{App, AppError, Chrome};

pub fn routes() -> Vec<Route> {
    rocket::routes![
        list_page,
        new_page,
        create,
        edit_page,
        update,
        delete_confirm,
        delete,
        run_page
    ]
}

/// Longest schedule name and pattern accepted.
const MAX_NAME: usize = 100;
const MAX_PATTERN: usize = 200;
/// Most VMs one schedule lists, and the largest retention counts.
const MAX_VMS: usize = 5_000;
const MAX_KEEP_LAST: u32 = 1_000;
const MAX_KEEP_DAILY: u32 = 3_660;
/// Runs shown on a schedule's page, and read for failure streaks.
const RUNS_SHOWN: i64 = 20;

#[derive(Serialize)]
struct ScheduleView {
    id: i64,
    name: String,
    enabled: bool,
    scope: String,
    when: String,
    retention: String,
    with_memory: bool,
    next_run: Option<String>,
    last_run: Option<RunView>,
    /// "3 runs in a row failed for db-01: …", one per VM failing now.
    failing: Vec<String>,
}

#[derive(Serialize)]
struct RunView {
    id: i64,
    slot: String,
    started: String,
    finished: Option<String>,
    taken: i64,
    failed: i64,
    pruned: i64,
    /// vmdeck stopped during the run (settled at the next start): neither success nor a
    /// failure of its VMs.
    interrupted: bool,
    outcome: String,
}

/// What the pages say of an interrupted run and of the VMs it did not reach.
const INTERRUPTED: &str = "interrupted: vmdeck stopped during the run";
const NOT_REACHED: &str = "not reached: vmdeck stopped during the run";

impl RunView {
    fn of(r: &store::Run) -> RunView {
        let counts = match r.failed {
            0 => format!("{} taken, {} pruned", r.taken, r.pruned),
            f => format!("{} taken, {f} failed, {} pruned", r.taken, r.pruned),
        };
        let outcome = match r.finished_at {
            // Runs left unfinished by a stop are settled at the next start, so this one is.
            None => "running".to_string(),
            Some(_) if r.interrupted && r.taken + r.failed == 0 => INTERRUPTED.to_string(),
            Some(_) if r.interrupted => format!("{INTERRUPTED} ({counts} before it stopped)"),
            Some(_) => counts,
        };
        RunView {
            id: r.id,
            slot: super::model::slot_label(r.slot),
            started: view::absolute(r.started_at),
            finished: r.finished_at.map(view::absolute),
            taken: r.taken,
            failed: r.failed,
            pruned: r.pruned,
            interrupted: r.interrupted,
            outcome,
        }
    }
}

fn scope_words(scope: &Scope) -> String {
    match scope {
        Scope::Vms(v) if v.len() == 1 => "1 chosen VM".into(),
        Scope::Vms(v) => format!("{} chosen VMs", v.len()),
        Scope::Pattern(p) => format!("VMs named {p}"),
        Scope::Host(h) => format!("every VM on {h}"),
    }
}

#[derive(Serialize)]
struct ListPage {
    title: &'static str,
    chrome: Chrome,
    schedules: Vec<ScheduleView>,
}

#[rocket::get("/schedules")]
async fn list_page(
    me: Admin<'_>,
    app: App<'_>,
    flash: Option<FlashMessage<'_>>,
) -> Result<Template, AppError> {
    let now = crate::db::now_ms();
    let mut views = Vec::new();
    for s in store::list(app.pool).await? {
        let runs = store::recent_runs(app.pool, s.id, 1).await?;
        let interrupted = runs.first().is_some_and(|r| r.interrupted);
        // An interrupted run neither fails nor succeeds for the VMs it did not reach: their
        // streaks count their results in the other runs.
        let mut failing: Vec<String> = interrupted
            .then(|| {
                "The last run was interrupted: vmdeck stopped during it, so the VMs it had not \
                 reached have no result from it."
                    .to_string()
            })
            .into_iter()
            .collect();
        failing.extend(store::failure_streaks(app.pool, s.id, RUNS_SHOWN).await?.into_iter().map(
            |(vm, host, n, error)| {
                let runs =
                    if n == 1 { "The last run".to_string() } else { format!("{n} runs in a row") };
                format!("{runs} failed for {vm} (on {host}): {error}")
            },
        ));
        views.push(ScheduleView {
            id: s.id,
            name: s.name.clone(),
            enabled: s.enabled,
            scope: scope_words(&s.scope),
            when: s.frequency.describe(),
            retention: s.retention.describe(),
            with_memory: s.with_memory,
            next_run: s.enabled.then(|| next_run(&s, now)),
            last_run: runs.first().map(RunView::of),
            failing,
        });
    }
    Ok(Template::render(
        "schedules/list",
        ListPage {
            title: "Snapshot schedules",
            chrome: Chrome::new(me.0, flash, app.settings),
            schedules: views,
        },
    ))
}

/// When the schedule runs next: its next slot, or "due now" when the scheduler's next check
/// (every 30 s) will run it.
fn next_run(s: &Schedule, now: i64) -> String {
    match super::model::due_slot(s.frequency, now, s.last_slot, s.created_at) {
        Some(_) => "due now".into(),
        // After the last slot run, which a clock set back may put ahead of now.
        None => view::absolute(s.frequency.next_slot(s.last_slot.map_or(now, |l| l.max(now)))),
    }
}

/// The form as typed: every field text, checked in [`ScheduleForm::read`].
#[derive(Debug, Default, FromForm)]
struct ScheduleForm {
    #[field(default = String::new())]
    csrf_token: String,
    #[field(default = String::new())]
    name: String,
    #[field(default = String::new())]
    enabled: String,
    #[field(default = String::new())]
    scope: String,
    vm: Vec<String>,
    #[field(default = String::new())]
    pattern: String,
    #[field(default = String::new())]
    host: String,
    #[field(default = String::new())]
    frequency: String,
    #[field(default = String::new())]
    weekday: String,
    #[field(default = String::new())]
    time: String,
    #[field(default = String::new())]
    minute: String,
    #[field(default = String::new())]
    keep_last: String,
    #[field(default = String::new())]
    keep_daily: String,
    #[field(default = String::new())]
    with_memory: String,
}

impl CsrfForm for ScheduleForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

/// `HH:MM` (UTC) as hour and minute.
fn parse_hm(s: &str) -> Option<(u8, u8)> {
    let (h, m) = s.trim().split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u8, u8) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some((h, m))
}

/// An optional count: blank is None; anything else must be a whole number in 1..=max.
fn parse_count(s: &str, what: &str, max: u32, errors: &mut Vec<String>) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    match s.parse::<u32>() {
        Ok(0) => {
            errors.push(format!("{what} must be at least 1 (leave it empty to not use it)."));
            None
        }
        Ok(n) if n <= max => Some(n),
        _ => {
            let shown: String = s.chars().take(20).collect();
            errors.push(format!(
                "{what} must be a whole number from 1 to {max}; {} is not.",
                quoted(&shown)
            ));
            None
        }
    }
}

impl ScheduleForm {
    /// Checks the form: the schedule, or every problem in words.
    fn read(&self, hosts: &[&str]) -> Result<ScheduleSpec, Vec<String>> {
        let mut errors = Vec::new();
        let name = self.name.trim().to_string();
        if name.is_empty() {
            errors.push("Give the schedule a name.".into());
        } else if name.chars().count() > MAX_NAME {
            errors.push(format!("The name is longer than {MAX_NAME} characters."));
        } else if name.chars().any(char::is_control) {
            errors.push("The name cannot hold line breaks or control characters.".into());
        }
        let scope = match self.scope.as_str() {
            "vms" => {
                let mut keys = Vec::new();
                if self.vm.len() > MAX_VMS {
                    errors.push(format!(
                        "A schedule lists at most {MAX_VMS} VMs; use a pattern or a host."
                    ));
                }
                for v in self.vm.iter().take(MAX_VMS) {
                    match v.split_once('/') {
                        Some((h, u))
                            if hosts.contains(&h) && crate::domain::VmUuid::parse(u).is_ok() =>
                        {
                            keys.push((h.to_string(), u.to_string()))
                        }
                        _ => {
                            let shown: String = v.chars().take(80).collect();
                            errors.push(format!(
                                "{} is not a VM of a configured host.",
                                quoted(&shown)
                            ));
                        }
                    }
                }
                keys.sort();
                keys.dedup();
                if keys.is_empty() && self.vm.is_empty() {
                    errors.push("Choose at least one VM.".into());
                }
                Some(Scope::Vms(keys))
            }
            "pattern" => {
                let p = self.pattern.trim();
                if p.is_empty() {
                    errors.push(
                        "Give a name pattern, e.g. db-* (* any text, ? one character).".into(),
                    );
                } else if p.chars().count() > MAX_PATTERN {
                    errors.push(format!("The pattern is longer than {MAX_PATTERN} characters."));
                } else if p.chars().any(char::is_control) {
                    errors
                        .push("The pattern cannot hold line breaks or control characters.".into());
                }
                Some(Scope::Pattern(p.to_string()))
            }
            "host" => {
                let h = self.host.trim();
                if !hosts.contains(&h) {
                    let shown: String = h.chars().take(80).collect();
                    if h.is_empty() {
                        errors.push("Choose a host.".into());
                    } else {
                        errors.push(format!("{} is not a configured host.", quoted(&shown)));
                    }
                }
                Some(Scope::Host(h.to_string()))
            }
            _ => {
                errors.push("Choose which VMs: chosen VMs, a name pattern or a host.".into());
                None
            }
        };
        let time_error = |errors: &mut Vec<String>, at: &str| {
            let shown: String = at.trim().chars().take(20).collect();
            if shown.is_empty() {
                errors.push("Give the time, as HH:MM in UTC (e.g. 03:00).".into());
            } else {
                errors.push(format!(
                    "The time must be HH:MM in UTC, from 00:00 to 23:59; {} is not.",
                    quoted(&shown)
                ));
            }
        };
        let frequency = match self.frequency.as_str() {
            "hourly" => match self.minute.trim().trim_start_matches(':').parse::<u8>() {
                Ok(m) if m < 60 => Some(Frequency::Hourly { minute: m }),
                _ => {
                    let shown: String = self.minute.trim().chars().take(20).collect();
                    errors.push(format!(
                        "The minute of an hourly schedule must be 0 to 59; {} is not.",
                        quoted(&shown)
                    ));
                    None
                }
            },
            "daily" => match parse_hm(&self.time) {
                Some((hour, minute)) => Some(Frequency::Daily { hour, minute }),
                None => {
                    time_error(&mut errors, &self.time);
                    None
                }
            },
            "weekly" => {
                let day = WEEKDAYS
                    .iter()
                    .position(|d| d.eq_ignore_ascii_case(self.weekday.trim()))
                    .or_else(|| self.weekday.trim().parse::<usize>().ok().filter(|d| *d < 7));
                if day.is_none() {
                    errors.push("Choose the day of the week.".into());
                }
                match (day, parse_hm(&self.time)) {
                    (Some(d), Some((hour, minute))) => {
                        Some(Frequency::Weekly { weekday: d as u8, hour, minute })
                    }
                    (_, None) => {
                        time_error(&mut errors, &self.time);
                        None
                    }
                    _ => None,
                }
            }
            _ => {
                errors.push("Choose how often: hourly, daily or weekly.".into());
                None
            }
        };
        let keep_last = parse_count(&self.keep_last, "Keep last", MAX_KEEP_LAST, &mut errors);
        let keep_daily = parse_count(&self.keep_daily, "Keep daily", MAX_KEEP_DAILY, &mut errors);
        if self.keep_last.trim().is_empty() && self.keep_daily.trim().is_empty() {
            errors.push(
                "Say how many to keep: keep last N, keep one a day for D days, or both.".into(),
            );
        }
        match (scope, frequency, errors.is_empty()) {
            (Some(scope), Some(frequency), true) => Ok(ScheduleSpec {
                name,
                enabled: checked(&self.enabled),
                scope,
                frequency,
                retention: Retention { keep_last, keep_daily },
                with_memory: checked(&self.with_memory),
            }),
            _ => Err(errors),
        }
    }
}

/// The form's fields as shown (what was typed, or the stored schedule).
#[derive(Serialize, Default)]
struct FormValues {
    name: String,
    enabled: bool,
    scope: String,
    vms: Vec<String>,
    pattern: String,
    host: String,
    frequency: String,
    weekday: String,
    time: String,
    minute: String,
    keep_last: String,
    keep_daily: String,
    with_memory: bool,
}

impl FormValues {
    fn of_form(f: &ScheduleForm) -> FormValues {
        let cut = |s: &str, n: usize| s.chars().take(n).collect::<String>();
        FormValues {
            name: cut(&f.name, MAX_NAME + 20),
            enabled: checked(&f.enabled),
            scope: cut(&f.scope, 20),
            vms: f.vm.iter().take(MAX_VMS).map(|v| cut(v, 200)).collect(),
            pattern: cut(&f.pattern, MAX_PATTERN + 20),
            host: cut(&f.host, 200),
            frequency: cut(&f.frequency, 20),
            weekday: cut(&f.weekday, 20),
            time: cut(&f.time, 20),
            minute: cut(&f.minute, 20),
            keep_last: cut(&f.keep_last, 20),
            keep_daily: cut(&f.keep_daily, 20),
            with_memory: checked(&f.with_memory),
        }
    }

    fn of_schedule(s: &Schedule) -> FormValues {
        let (scope, vms, pattern, host) = match &s.scope {
            Scope::Vms(v) => ("vms", v.iter().map(|(h, u)| format!("{h}/{u}")).collect(), "", ""),
            Scope::Pattern(p) => ("pattern", Vec::new(), p.as_str(), ""),
            Scope::Host(h) => ("host", Vec::new(), "", h.as_str()),
        };
        let (weekday, time, minute) = match s.frequency {
            Frequency::Hourly { minute } => (String::new(), String::new(), minute.to_string()),
            Frequency::Daily { hour, minute } => {
                (String::new(), format!("{hour:02}:{minute:02}"), String::new())
            }
            Frequency::Weekly { weekday, hour, minute } => (
                WEEKDAYS.get(weekday as usize).unwrap_or(&"Monday").to_string(),
                format!("{hour:02}:{minute:02}"),
                String::new(),
            ),
        };
        FormValues {
            name: s.name.clone(),
            enabled: s.enabled,
            scope: scope.into(),
            vms,
            pattern: pattern.into(),
            host: host.into(),
            frequency: s.frequency.word().into(),
            weekday,
            time,
            minute,
            keep_last: s.retention.keep_last.map(|n| n.to_string()).unwrap_or_default(),
            keep_daily: s.retention.keep_daily.map(|n| n.to_string()).unwrap_or_default(),
            with_memory: s.with_memory,
        }
    }
}

#[derive(Serialize)]
struct VmChoice {
    key: String,
    name: String,
    host: String,
    chosen: bool,
}

#[derive(Serialize)]
struct FormPage {
    title: String,
    chrome: Chrome,
    /// None: a new schedule.
    id: Option<i64>,
    errors: Vec<String>,
    values: FormValues,
    vms: Vec<VmChoice>,
    hosts: Vec<String>,
    weekdays: [&'static str; 7],
    runs: Vec<RunView>,
}

async fn form_page(
    me: &crate::domain::CurrentUser,
    app: &App<'_>,
    id: Option<i64>,
    values: FormValues,
    errors: Vec<String>,
    flash: Option<FlashMessage<'_>>,
) -> Result<Template, AppError> {
    let hosts = app.hosts.names();
    let vms = store::present_vms(app.pool, &hosts)
        .await?
        .into_iter()
        .map(|v| {
            let key = format!("{}/{}", v.host_name, v.uuid);
            VmChoice { chosen: values.vms.contains(&key), key, name: v.name, host: v.host_name }
        })
        .collect();
    let runs = match id {
        Some(id) => {
            store::recent_runs(app.pool, id, RUNS_SHOWN).await?.iter().map(RunView::of).collect()
        }
        None => Vec::new(),
    };
    let title = match id {
        Some(_) => format!("Schedule {}", values.name),
        None => "New snapshot schedule".into(),
    };
    Ok(Template::render(
        "schedules/form",
        FormPage {
            title,
            chrome: Chrome::new(me, flash, app.settings),
            id,
            errors,
            values,
            vms,
            hosts: hosts.into_iter().map(String::from).collect(),
            weekdays: WEEKDAYS,
            runs,
        },
    ))
}

#[rocket::get("/schedules/new")]
async fn new_page(me: Admin<'_>, app: App<'_>) -> Result<Template, AppError> {
    let values = FormValues {
        enabled: true,
        scope: "pattern".into(),
        frequency: "daily".into(),
        time: "03:00".into(),
        minute: "0".into(),
        keep_last: "7".into(),
        ..FormValues::default()
    };
    form_page(me.0, &app, None, values, Vec::new(), None).await
}

type FormAnswer = Result<Result<Flash<Redirect>, status::Custom<Template>>, AppError>;

/// A warning for a scope that covers no VM now (saved anyway: VMs may come).
async fn empty_scope_warning(
    scheduler: &Scheduler,
    scope: &Scope,
) -> Result<Option<String>, AppError> {
    let n = scheduler.vms_in_scope(scope).await?.len();
    Ok((n == 0).then(|| match scope {
        Scope::Pattern(p) => {
            format!(" Warning: no VM is named like {} now, so a run would take nothing.", quoted(p))
        }
        Scope::Host(h) => format!(" Warning: {h} has no VMs now, so a run would take nothing."),
        Scope::Vms(_) => " Warning: none of the chosen VMs exists now.".into(),
    }))
}

#[rocket::post("/schedules", data = "<form>")]
async fn create(
    me: Admin<'_>,
    form: Csrf<ScheduleForm>,
    app: App<'_>,
    scheduler: &State<Arc<Scheduler>>,
) -> FormAnswer {
    let f = form.0;
    let spec = match f.read(&app.hosts.names()) {
        Ok(spec) => spec,
        Err(errors) => {
            let page = form_page(me.0, &app, None, FormValues::of_form(&f), errors, None).await?;
            return Ok(Err(status::Custom(Status::BadRequest, page)));
        }
    };
    let by = me.0.name.clone();
    match store::insert(app.pool, &spec, &by, crate::db::now_ms()).await {
        Ok(id) => {
            let warning = empty_scope_warning(scheduler, &spec.scope).await?.unwrap_or_default();
            tracing::info!(schedule = %spec.name, by = %by, "snapshot schedule created");
            Ok(Ok(Flash::success(
                Redirect::to(format!("/schedules/{id}")),
                format!("Schedule {} created: {}.{warning}", spec.name, spec.frequency.describe()),
            )))
        }
        Err(store::SaveError::Duplicate(name)) => {
            let errors = vec![format!("A schedule named {} exists already.", quoted(&name))];
            let page = form_page(me.0, &app, None, FormValues::of_form(&f), errors, None).await?;
            Ok(Err(status::Custom(Status::BadRequest, page)))
        }
        Err(store::SaveError::Db(e)) => Err(e.into()),
    }
}

#[rocket::get("/schedules/<id>")]
async fn edit_page(
    me: Admin<'_>,
    id: i64,
    app: App<'_>,
    flash: Option<FlashMessage<'_>>,
) -> Result<Template, AppError> {
    let s = store::get(app.pool, id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("There is no schedule {id}.")))?;
    form_page(me.0, &app, Some(id), FormValues::of_schedule(&s), Vec::new(), flash).await
}

#[rocket::post("/schedules/<id>", data = "<form>")]
async fn update(
    me: Admin<'_>,
    id: i64,
    form: Csrf<ScheduleForm>,
    app: App<'_>,
    scheduler: &State<Arc<Scheduler>>,
) -> FormAnswer {
    let f = form.0;
    if store::get(app.pool, id).await?.is_none() {
        return Err(AppError::NotFound(format!("There is no schedule {id}.")));
    }
    let spec = match f.read(&app.hosts.names()) {
        Ok(spec) => spec,
        Err(errors) => {
            let page =
                form_page(me.0, &app, Some(id), FormValues::of_form(&f), errors, None).await?;
            return Ok(Err(status::Custom(Status::BadRequest, page)));
        }
    };
    match store::update(app.pool, id, &spec).await {
        Ok(true) => {
            let warning = empty_scope_warning(scheduler, &spec.scope).await?.unwrap_or_default();
            Ok(Ok(Flash::success(
                Redirect::to(format!("/schedules/{id}")),
                format!("Schedule {} saved.{warning}", spec.name),
            )))
        }
        Ok(false) => Err(AppError::NotFound(format!("There is no schedule {id}."))),
        Err(store::SaveError::Duplicate(name)) => {
            let errors = vec![format!("A schedule named {} exists already.", quoted(&name))];
            let page =
                form_page(me.0, &app, Some(id), FormValues::of_form(&f), errors, None).await?;
            Ok(Err(status::Custom(Status::BadRequest, page)))
        }
        Err(store::SaveError::Db(e)) => Err(e.into()),
    }
}

#[derive(Serialize)]
struct DeletePage {
    title: String,
    chrome: Chrome,
    id: i64,
    name: String,
}

#[rocket::get("/schedules/<id>/delete")]
async fn delete_confirm(me: Admin<'_>, id: i64, app: App<'_>) -> Result<Template, AppError> {
    let s = store::get(app.pool, id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("There is no schedule {id}.")))?;
    Ok(Template::render(
        "schedules/delete",
        DeletePage {
            title: format!("Delete schedule {}?", s.name),
            chrome: Chrome::new(me.0, None, app.settings),
            id,
            name: s.name,
        },
    ))
}

#[rocket::post("/schedules/<id>/delete", data = "<_form>")]
async fn delete(
    me: Admin<'_>,
    id: i64,
    _form: Csrf<TokenForm>,
    app: App<'_>,
) -> Result<Flash<Redirect>, AppError> {
    let Some(s) = store::get(app.pool, id).await? else {
        return Ok(Flash::error(Redirect::to("/schedules"), format!("There is no schedule {id}.")));
    };
    store::delete(app.pool, id).await?;
    tracing::info!(schedule = %s.name, by = %me.0.name, "snapshot schedule deleted");
    Ok(Flash::success(
        Redirect::to("/schedules"),
        format!("Schedule {} deleted. The snapshots it took stay until you delete them.", s.name),
    ))
}

#[derive(Serialize)]
struct RunVmView {
    vm: String,
    host: String,
    vm_page: Option<String>,
    outcome: String,
    error: String,
    audit_id: Option<i64>,
    pruned: i64,
    prune_error: String,
}

#[derive(Serialize)]
struct RunPage {
    title: String,
    chrome: Chrome,
    schedule_id: i64,
    schedule: String,
    run: RunView,
    vms: Vec<RunVmView>,
}

/// Ranked after `/schedules/<id>/delete`, which `/schedules/runs/delete` would also match.
#[rocket::get("/schedules/runs/<run>", rank = 2)]
async fn run_page(
    me: Admin<'_>,
    run: i64,
    app: App<'_>,
    scheduler: &State<Arc<Scheduler>>,
) -> Result<Template, AppError> {
    let id = run;
    let run = store::run(app.pool, id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("There is no schedule run {id}.")))?;
    let schedule_id = run.schedule_id;
    let stored = store::get(app.pool, run.schedule_id).await?;
    let hosts = app.hosts.names();
    let vm_page = |host: &str, uuid: &str| {
        (hosts.contains(&host) && crate::domain::VmUuid::parse(uuid).is_ok())
            .then(|| format!("/vms/{host}/{uuid}"))
    };
    let recorded = store::run_vms(app.pool, id).await?;
    // An interrupted run's VMs without a result: those its schedule covers (now), each with
    // the scheduled take it had in flight, if any (control settled that one at the start).
    let mut not_reached = Vec::new();
    if let (true, Some(s)) = (run.interrupted, &stored) {
        let mut covered = scheduler.vms_in_scope(&s.scope).await?;
        if let Scope::Vms(keys) = &s.scope {
            for (host, uuid) in keys {
                if !covered.iter().any(|v| &v.host_name == host && &v.uuid == uuid) {
                    let name = store::known_vm_name(app.pool, host, uuid).await?;
                    covered.push(store::ScopeVm {
                        host_name: host.clone(),
                        uuid: uuid.clone(),
                        name: name.unwrap_or_else(|| format!("{host}/{uuid}")),
                    });
                }
            }
        }
        let snapshot = super::model::snapshot_name(s.frequency, run.slot);
        for v in covered {
            if recorded.iter().any(|r| r.host_name == v.host_name && r.vm_uuid == v.uuid) {
                continue;
            }
            let request =
                store::take_request(app.pool, s.id, &v.host_name, &v.uuid, &snapshot).await?;
            let error = match &request {
                Some((_, status)) => format!("{NOT_REACHED} (its snapshot request: {status})"),
                None => NOT_REACHED.to_string(),
            };
            not_reached.push(RunVmView {
                vm_page: vm_page(&v.host_name, &v.uuid),
                vm: v.name,
                host: v.host_name,
                outcome: "not-reached".into(),
                error,
                audit_id: request.map(|(id, _)| id),
                pruned: 0,
                prune_error: String::new(),
            });
        }
    }
    let mut vms: Vec<RunVmView> = recorded
        .into_iter()
        .map(|v| RunVmView {
            vm_page: vm_page(&v.host_name, &v.vm_uuid),
            vm: v.vm_name,
            host: v.host_name,
            outcome: v.outcome,
            error: v.error.unwrap_or_default(),
            audit_id: v.audit_id,
            pruned: v.pruned,
            prune_error: v.prune_error.unwrap_or_default(),
        })
        .collect();
    vms.extend(not_reached);
    let schedule = stored.map(|s| s.name).unwrap_or_default();
    let run = RunView::of(&run);
    Ok(Template::render(
        "schedules/run",
        RunPage {
            title: format!("Run of {schedule} for {}", run.slot),
            chrome: Chrome::new(me.0, None, app.settings),
            schedule_id,
            schedule,
            run,
            vms,
        },
    ))
}
