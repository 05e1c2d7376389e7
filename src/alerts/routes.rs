//! The Alerts pages: firing alerts and history, one alert with its transitions and
//! acknowledgement, rules, silences; notification targets are `notify::routes`.
//!
//! Viewers see everything; operators acknowledge and silence; admins edit rules. Every change
//! is audited (`AuditKind::Alert`), and a rule change asks the engine for an evaluation soon (in
//! a task of its own, never inside the request).

use crate::web::checked;
use std::sync::Arc;

use rocket::form::FromForm;
use rocket::http::Status;
use rocket::request::FlashMessage;
use rocket::response::{status, Flash, Redirect};
use rocket::{Route, State};
use rocket_dyn_templates::Template;
use serde::Serialize;

use super::notify;
use super::rules::{self, Matchers, RuleFields, Scope, Severity, MAX_NAME, MAX_TEXT};
use super::store::pages::{self, AlertRow, Filter, SilenceRow};
use super::store::{self, SaveError, Source, StoredRule};
use super::AlertEngine;
use crate::auth::{Admin, Csrf, CsrfForm, Operator, TokenForm, Viewer};
use crate::db::now_ms;
use crate::domain::time::Period;
use crate::domain::{quoted, AuditKind, AuditOutcome, CurrentUser};
use crate::events;
use crate::web::csv::Csv;
use crate::web::format as view;
use crate::web::pager::Pager;
use crate::web::{bounded_text, with_query, App, AppError, Chrome, Notices, SelectOption};

pub fn routes() -> Vec<Route> {
    let mut routes = rocket::routes![
        alerts_page,
        alerts_csv,
        alert_page,
        acknowledge,
        rules_page,
        new_rule_page,
        create_rule,
        edit_rule_page,
        update_rule,
        delete_rule_confirm,
        delete_rule,
        enable_rule,
        silences_page,
        new_silence_page,
        create_silence,
        end_silence,
    ];
    routes.extend(notify::routes());
    routes
}

const PAGE_SIZE: usize = 50;
/// Most rows one CSV export returns.
const CSV_LIMIT: i64 = 100_000;
/// Longest accepted text filter.
const MAX_FILTER_LEN: usize = 200;
/// Longest text echoed back into a form that was refused.
const MAX_ECHO: usize = 600;
const STATES: [&str; 5] = ["open", "pending", "firing", "resolved", "inactive"];

// ---------------------------------------------------------------------------------------------
// Views

/// One alert as the pages show it.
#[derive(Serialize)]
struct AlertView {
    id: i64,
    rule_name: String,
    /// The rule's id while the rule exists.
    rule_id: Option<i64>,
    severity: String,
    state: String,
    host: String,
    /// Whether the host is configured (then its VMs' pages exist).
    host_known: bool,
    vm_name: String,
    vm_uuid: String,
    summary: String,
    value: String,
    pending_since: String,
    firing_since: Option<String>,
    /// Since when it is in its state: firing since, or pending since.
    since: String,
    ended: Option<String>,
    ack_by: String,
    ack_at: Option<String>,
    ack_comment: String,
    /// The silence in force that matches it.
    silenced_by: Option<i64>,
}

impl AlertView {
    fn of(a: AlertRow, hosts: &[&str], silences: &[SilenceRow]) -> AlertView {
        let silenced_by = silences
            .iter()
            .find(|s| s.matchers().matches(&a.rule_name, &a.host_name, a.vm_name.as_deref()))
            .map(|s| s.id);
        AlertView {
            id: a.id,
            host_known: hosts.contains(&a.host_name.as_str()),
            rule_id: a.rule_id,
            rule_name: a.rule_name,
            severity: a.severity,
            state: a.state,
            host: a.host_name,
            vm_name: a.vm_name.unwrap_or_default(),
            vm_uuid: a.vm_uuid.unwrap_or_default(),
            summary: a.summary,
            value: a.value.map(|v| format!("{v:.2}")).unwrap_or_default(),
            since: view::absolute(a.firing_since.unwrap_or(a.pending_since)),
            pending_since: view::absolute(a.pending_since),
            firing_since: a.firing_since.map(view::absolute),
            ended: a.ended_at.map(view::absolute),
            ack_by: a.ack_by.unwrap_or_default(),
            ack_at: a.ack_at.map(view::absolute),
            ack_comment: a.ack_comment.unwrap_or_default(),
            silenced_by,
        }
    }
}

#[derive(Serialize)]
struct TargetNotice {
    name: String,
    failures: i64,
    last_error: String,
    /// Failing since: its last success, or (never succeeded) its last failure.
    since: String,
}

/// Audits an alert change (rule, silence, acknowledgement) as `who`; a lost entry is logged.
async fn audit(
    pool: &sqlx::SqlitePool,
    who: &CurrentUser,
    action: &str,
    detail: &str,
    vm: Option<&AlertRow>,
) {
    let content = events::chain::Content {
        host_name: vm.map(|a| a.host_name.clone()),
        vm_uuid: vm.and_then(|a| a.vm_uuid.clone()),
        vm_name: vm.and_then(|a| a.vm_name.clone()),
        action: Some(action.to_string()),
        detail: Some(detail.to_string()),
        ..events::chain::Content::settled(
            AuditKind::Alert,
            &who.actor(),
            AuditOutcome::Ok,
            now_ms(),
        )
    };
    if let Err(e) = events::chain::append(pool, content).await {
        tracing::error!(action, "could not write the alert change's audit entry: {e}");
    }
}

/// Asks the engine for an evaluation now, in a task of its own (the answer does not wait).
fn evaluate_soon(engine: &Arc<AlertEngine>) {
    let engine = engine.clone();
    tokio::spawn(async move {
        if let Err(e) = engine.evaluate(now_ms()).await {
            tracing::error!("alert evaluation after a rule change failed: {e}");
        }
    });
}

fn cut(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

// ---------------------------------------------------------------------------------------------
// GET /alerts, /alerts.csv

/// The query string as given; every field is optional and checked in [`AlertsQuery::read`].
#[derive(Debug, Default, FromForm)]
struct AlertsQuery<'r> {
    state: Option<&'r str>,
    severity: Option<&'r str>,
    rule: Option<&'r str>,
    host: Option<&'r str>,
    vm: Option<&'r str>,
    from: Option<&'r str>,
    to: Option<&'r str>,
    page: Option<&'r str>,
}

struct Query {
    filter: Filter,
    state: String,
    severity: String,
    period: Period,
}

impl AlertsQuery<'_> {
    /// Validates the query; anything wrong becomes a notice, never an error page.
    fn read(&self, notices: &mut Notices) -> Query {
        let text = |v: Option<&str>, what: &str, notices: &mut Notices| {
            bounded_text(v.unwrap_or(""), MAX_FILTER_LEN, what, notices)
        };
        let mut state = text(self.state, "state filter", notices);
        if !state.is_empty() && !STATES.contains(&state.as_str()) {
            notices.push(format!("Unknown state {}: showing every state.", quoted(&state)));
            state.clear();
        }
        let mut severity = text(self.severity, "severity filter", notices);
        if !severity.is_empty() && Severity::parse(&severity).is_none() {
            notices
                .push(format!("Unknown severity {}: showing every severity.", quoted(&severity)));
            severity.clear();
        }
        let period = Period::read(
            &text(self.from, "from time", notices),
            &text(self.to, "to time", notices),
            ["ignored", "ignored"],
            notices,
        );
        Query {
            filter: Filter {
                state: (!state.is_empty()).then(|| state.clone()),
                severity: (!severity.is_empty()).then(|| severity.clone()),
                rule: text(self.rule, "rule filter", notices),
                host: text(self.host, "host filter", notices),
                vm: text(self.vm, "VM filter", notices),
                from: period.from,
                to: period.to,
            },
            state,
            severity,
            period,
        }
    }
}

impl Query {
    fn query_string(&self, page: Option<usize>) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("state", &self.state),
            ("severity", &self.severity),
            ("rule", &self.filter.rule),
            ("host", &self.filter.host),
            ("vm", &self.filter.vm),
            ("from", &self.period.from_text),
            ("to", &self.period.to_text),
        ] {
            if !v.is_empty() {
                s.append_pair(k, v);
            }
        }
        if let Some(p) = page.filter(|p| *p > 1) {
            s.append_pair("page", &p.to_string());
        }
        s.finish()
    }
}

#[derive(Serialize)]
struct AlertsPage {
    title: &'static str,
    chrome: Chrome,
    firing: Vec<AlertView>,
    /// More open alerts than "firing now" lists.
    firing_cut: bool,
    history: Vec<AlertView>,
    pager: Pager,
    csv_href: String,
    filtered: bool,
    state: String,
    severity: String,
    rule: String,
    host: String,
    vm: String,
    from: String,
    to: String,
    states: [&'static str; 5],
    severities: Vec<&'static str>,
    rules: Vec<String>,
    hosts: Vec<String>,
    failing_targets: Vec<TargetNotice>,
    notices: Notices,
}

#[rocket::get("/alerts?<query..>")]
async fn alerts_page(
    me: Viewer<'_>,
    query: AlertsQuery<'_>,
    app: App<'_>,
    flash: Option<FlashMessage<'_>>,
) -> Result<Template, AppError> {
    let mut notices = Notices::new();
    let q = query.read(&mut notices);
    let now = now_ms();
    let hosts = app.hosts.names();
    let silences = pages::active_silences(app.pool, now).await?;
    let open = pages::open(app.pool).await?;
    let firing_cut = open.len() as i64 >= pages::FIRING_LIMIT;
    let total = pages::count(app.pool, &q.filter).await?;
    let pager = Pager::new(
        query.page.unwrap_or(""),
        total.max(0) as usize,
        PAGE_SIZE,
        |p| with_query("/alerts", &q.query_string(Some(p))),
        &mut notices,
    );
    let rows = pages::history(app.pool, &q.filter, PAGE_SIZE as i64, pager.offset() as i64).await?;
    let failing_targets = pages::failing_targets(app.pool)
        .await?
        .into_iter()
        .map(|t| TargetNotice {
            name: t.name,
            failures: t.failures,
            last_error: t.last_error.unwrap_or_default(),
            since: t.last_ok_at.or(t.last_error_at).map(view::absolute).unwrap_or_default(),
        })
        .collect();
    let rules = store::rules(app.pool).await?.into_iter().map(|r| r.spec.name).collect();
    let plain = q.query_string(None);
    Ok(Template::render(
        "alerts/list",
        AlertsPage {
            title: "Alerts",
            chrome: Chrome::new(me.0, flash, app.settings),
            firing: open.into_iter().map(|a| AlertView::of(a, &hosts, &silences)).collect(),
            firing_cut,
            history: rows.into_iter().map(|a| AlertView::of(a, &hosts, &silences)).collect(),
            pager,
            csv_href: with_query("/alerts.csv", &plain),
            filtered: !plain.is_empty(),
            state: q.state,
            severity: q.severity,
            rule: q.filter.rule,
            host: q.filter.host,
            vm: q.filter.vm,
            from: q.period.from_text,
            to: q.period.to_text,
            states: STATES,
            severities: Severity::ALL.iter().map(|s| s.as_str()).collect(),
            rules,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            failing_targets,
            notices,
        },
    ))
}

#[rocket::get("/alerts.csv?<query..>")]
async fn alerts_csv(
    _me: Viewer<'_>,
    query: AlertsQuery<'_>,
    app: App<'_>,
) -> Result<Csv, AppError> {
    let q = query.read(&mut Notices::new());
    let rows = pages::history(app.pool, &q.filter, CSV_LIMIT, 0).await?;
    let opt = |t: Option<i64>| t.map(view::absolute).unwrap_or_default();
    Ok(Csv::build(
        "vmdeck-alerts.csv",
        &[
            "id",
            "rule",
            "severity",
            "state",
            "host",
            "vm_name",
            "vm_uuid",
            "summary",
            "value",
            "pending_since_utc",
            "firing_since_utc",
            "ended_at_utc",
            "acknowledged_by",
            "acknowledged_at_utc",
            "acknowledgement",
            "fingerprint",
        ],
        rows.into_iter().map(move |a| {
            vec![
                a.id.to_string(),
                a.rule_name,
                a.severity,
                a.state,
                a.host_name,
                a.vm_name.unwrap_or_default(),
                a.vm_uuid.unwrap_or_default(),
                a.summary,
                a.value.map(|v| v.to_string()).unwrap_or_default(),
                view::absolute(a.pending_since),
                opt(a.firing_since),
                opt(a.ended_at),
                a.ack_by.unwrap_or_default(),
                opt(a.ack_at),
                a.ack_comment.unwrap_or_default(),
                a.fingerprint,
            ]
        }),
    ))
}

// ---------------------------------------------------------------------------------------------
// GET /alerts/<id>, POST /alerts/<id>/acknowledge

#[derive(Serialize)]
struct TransitionView {
    at: String,
    from: String,
    to: String,
    detail: String,
}

#[derive(Serialize)]
struct AlertPage {
    title: String,
    chrome: Chrome,
    alert: AlertView,
    transitions: Vec<TransitionView>,
    /// Whether the rule still exists (then `alert.rule_id` links to it).
    rule_exists: bool,
    /// An operator may acknowledge it now.
    can_ack: bool,
    /// The silence form, prefilled to match this alert.
    silence_href: String,
    /// A refused acknowledgement: the error, and the comment as typed.
    error: String,
    comment: String,
    max_comment: usize,
}

async fn alert_page_with(
    me: &CurrentUser,
    app: &App<'_>,
    id: i64,
    flash: Option<FlashMessage<'_>>,
    error: String,
    comment: String,
) -> Result<Template, AppError> {
    let a = pages::alert(app.pool, id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("There is no alert {id}.")))?;
    let transitions = pages::transitions(app.pool, id)
        .await?
        .into_iter()
        .map(|t| TransitionView {
            at: view::absolute(t.at),
            from: t.from_state,
            to: t.to_state,
            detail: t.detail,
        })
        .collect();
    let rule_exists = match a.rule_id {
        Some(r) => store::rule(app.pool, r).await?.is_some(),
        None => false,
    };
    let can_ack =
        me.can(crate::domain::Role::Operator) && a.state == "firing" && a.ack_by.is_none();
    let silence_href = {
        let mut prefill = url::form_urlencoded::Serializer::new(String::new());
        prefill.append_pair("rule_name", &a.rule_name).append_pair("host_name", &a.host_name);
        if let Some(name) = &a.vm_name {
            prefill.append_pair("vm_pattern", name);
        }
        format!("/alerts/silences/new?{}", prefill.finish())
    };
    let silences = pages::active_silences(app.pool, now_ms()).await?;
    let hosts = app.hosts.names();
    let alert = AlertView::of(a, &hosts, &silences);
    Ok(Template::render(
        "alerts/alert",
        AlertPage {
            title: format!("Alert {id}: {}", alert.rule_name),
            chrome: Chrome::new(me, flash, app.settings),
            alert,
            transitions,
            rule_exists,
            can_ack,
            silence_href,
            error,
            comment,
            max_comment: MAX_TEXT,
        },
    ))
}

#[rocket::get("/alerts/<id>")]
async fn alert_page(
    me: Viewer<'_>,
    id: i64,
    app: App<'_>,
    flash: Option<FlashMessage<'_>>,
) -> Result<Template, AppError> {
    alert_page_with(me.0, &app, id, flash, String::new(), String::new()).await
}

#[derive(Debug, Default, FromForm)]
struct AckForm {
    #[field(default = String::new())]
    csrf_token: String,
    #[field(default = String::new())]
    comment: String,
}

impl CsrfForm for AckForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

type FormAnswer = Result<Result<Flash<Redirect>, status::Custom<Template>>, AppError>;

/// Ranked after `/alerts/rules/<id>` (and the targets' forms), which `/alerts/rules/acknowledge`
/// would also match.
#[rocket::post("/alerts/<id>/acknowledge", data = "<form>", rank = 2)]
async fn acknowledge(me: Operator<'_>, id: i64, form: Csrf<AckForm>, app: App<'_>) -> FormAnswer {
    let a = pages::alert(app.pool, id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("There is no alert {id}.")))?;
    let comment = form.0.comment.trim();
    let refuse = |error: String| async {
        let page = alert_page_with(me.0, &app, id, None, error, cut(comment, MAX_ECHO)).await?;
        Ok::<_, AppError>(Err(status::Custom(Status::BadRequest, page)))
    };
    if comment.is_empty() {
        return refuse("Say why in the comment: an acknowledgement needs one.".into()).await;
    }
    if comment.chars().count() > MAX_TEXT
        || comment.chars().any(|c| c.is_control() && c != '\n' && c != '\r')
    {
        return refuse(format!(
            "The comment must be at most {MAX_TEXT} characters, without control characters."
        ))
        .await;
    }
    let comment = comment.replace(['\r', '\n'], " ");
    let by = me.0.name.clone();
    if !pages::acknowledge(app.pool, id, &by, &comment, now_ms()).await? {
        let why = if a.state != "firing" {
            format!("Alert {id} is not firing ({}), so there is nothing to acknowledge.", a.state)
        } else {
            format!(
                "Alert {id} was acknowledged already by {}.",
                a.ack_by.as_deref().map(quoted).unwrap_or_else(|| "someone".into())
            )
        };
        return Ok(Ok(Flash::error(Redirect::to(format!("/alerts/{id}")), why)));
    }
    let subject = a.vm_name.clone().unwrap_or_else(|| a.host_name.clone());
    audit(
        app.pool,
        me.0,
        "alert_acknowledged",
        &format!("alert {id} ({} on {subject}): {comment}", a.rule_name),
        Some(&a),
    )
    .await;
    Ok(Ok(Flash::success(
        Redirect::to(format!("/alerts/{id}")),
        format!("Alert {id} acknowledged."),
    )))
}

// ---------------------------------------------------------------------------------------------
// Rules

#[derive(Serialize)]
struct RuleView {
    id: i64,
    name: String,
    condition: String,
    scope: String,
    for_: String,
    severity: &'static str,
    enabled: bool,
    from_file: bool,
    created_by: String,
    updated: String,
}

impl RuleView {
    fn of(r: &StoredRule) -> RuleView {
        RuleView {
            id: r.id,
            name: r.spec.name.clone(),
            condition: r.spec.condition.describe(),
            scope: if r.spec.condition.about_hosts() {
                match &r.spec.scope {
                    Scope::All => "every host".into(),
                    Scope::Host(h) => format!("host {}", quoted(h)),
                    Scope::Pattern(p) => format!("hosts named like {}", quoted(p)),
                    s => s.describe(),
                }
            } else {
                r.spec.scope.describe()
            },
            for_: rules::format_duration(r.spec.for_secs),
            severity: r.spec.severity.as_str(),
            enabled: r.spec.enabled,
            from_file: r.source == Source::File,
            created_by: r.created_by.clone(),
            updated: view::absolute(r.updated_at),
        }
    }
}

#[derive(Serialize)]
struct RulesPage {
    title: &'static str,
    chrome: Chrome,
    rules: Vec<RuleView>,
}

#[rocket::get("/alerts/rules")]
async fn rules_page(
    me: Viewer<'_>,
    app: App<'_>,
    flash: Option<FlashMessage<'_>>,
) -> Result<Template, AppError> {
    let rules = store::rules(app.pool).await?;
    Ok(Template::render(
        "alerts/rules",
        RulesPage {
            title: "Alert rules",
            chrome: Chrome::new(me.0, flash, app.settings),
            rules: rules.iter().map(RuleView::of).collect(),
        },
    ))
}

/// The rule form as typed: every field text, checked by [`RuleFields::parse`].
#[derive(Debug, Default, FromForm)]
struct RuleForm {
    #[field(default = String::new())]
    csrf_token: String,
    #[field(default = String::new())]
    name: String,
    #[field(default = String::new())]
    enabled: String,
    #[field(default = String::new())]
    condition: String,
    #[field(default = String::new())]
    threshold: String,
    #[field(default = String::new())]
    period: String,
    #[field(default = String::new())]
    expected: String,
    #[field(default = String::new())]
    scope: String,
    #[field(default = String::new())]
    scope_value: String,
    /// Checked VMs of the picker, each `host/uuid`.
    vms: Vec<String>,
    /// More VMs, typed: one `host/uuid` a line.
    #[field(default = String::new())]
    vms_text: String,
    #[field(name = "for")]
    #[field(default = String::new())]
    for_: String,
    #[field(default = String::new())]
    severity: String,
}

impl CsrfForm for RuleForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

impl RuleForm {
    /// Every listed VM (checked and typed), at most one more than a rule may hold so that
    /// the parser says there are too many.
    fn listed(&self) -> Vec<String> {
        self.vms
            .iter()
            .map(|s| s.as_str())
            .chain(self.vms_text.lines())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .take(rules::MAX_LISTED_VMS + 1)
            .map(|s| cut(s, 200))
            .collect()
    }

    fn fields(&self) -> RuleFields {
        RuleFields {
            name: cut(&self.name, MAX_ECHO),
            enabled: Some(checked(&self.enabled)),
            condition: cut(&self.condition, 40),
            threshold: cut(&self.threshold, 40),
            period: cut(&self.period, 40),
            expected: cut(&self.expected, 40),
            scope: cut(&self.scope, 20),
            scope_value: cut(&self.scope_value, MAX_ECHO),
            vms: if self.scope.trim() == "vms" { self.listed() } else { Vec::new() },
            for_: cut(&self.for_, 40),
            severity: cut(&self.severity, 20),
        }
    }
}

/// The form's fields as shown (what was typed, or the stored rule).
#[derive(Serialize, Default)]
struct RuleValues {
    name: String,
    enabled: bool,
    condition: String,
    threshold: String,
    period: String,
    expected: String,
    scope: String,
    scope_value: String,
    vms: Vec<String>,
    for_: String,
    severity: String,
}

impl RuleValues {
    fn of_form(f: &RuleForm) -> RuleValues {
        RuleValues {
            name: cut(&f.name, MAX_ECHO),
            enabled: checked(&f.enabled),
            condition: cut(&f.condition, 40),
            threshold: cut(&f.threshold, 40),
            period: cut(&f.period, 40),
            expected: cut(&f.expected, 40),
            scope: cut(&f.scope, 20),
            scope_value: cut(&f.scope_value, MAX_ECHO),
            vms: f.listed(),
            for_: cut(&f.for_, 40),
            severity: cut(&f.severity, 20),
        }
    }

    fn of_rule(r: &StoredRule) -> RuleValues {
        let (threshold, period, expected) = r.spec.condition.columns();
        let threshold = match &r.spec.condition {
            rules::Condition::DiskGrowth { bytes, .. } => bytes.to_string(),
            _ => threshold.map(|t| format!("{t}")).unwrap_or_default(),
        };
        RuleValues {
            name: r.spec.name.clone(),
            enabled: r.spec.enabled,
            condition: r.spec.condition.kind().into(),
            threshold,
            period: period.map(|p| rules::format_duration(p.max(0) as u64)).unwrap_or_default(),
            expected: expected.unwrap_or_default().into(),
            scope: r.spec.scope.kind().into(),
            scope_value: r.spec.scope.value().into(),
            vms: match &r.spec.scope {
                Scope::Vms(list) => list.iter().map(|(h, u)| format!("{h}/{u}")).collect(),
                _ => Vec::new(),
            },
            for_: rules::format_duration(r.spec.for_secs),
            severity: r.spec.severity.as_str().into(),
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
struct RuleFormPage {
    title: String,
    chrome: Chrome,
    id: Option<i64>,
    /// The field the error is about, and the error in words.
    error_field: String,
    error: String,
    values: RuleValues,
    /// Listed VMs not in the picker (typed, or gone): kept in the text area.
    vms_text: String,
    vm_choices: Vec<VmChoice>,
    conditions: Vec<SelectOption>,
    severities: Vec<SelectOption>,
    max_name: usize,
}

const CONDITION_LABELS: [(&str, &str); 7] = [
    ("vm_state", "VM not in its expected state"),
    ("host_unreachable", "host unreachable"),
    ("cpu_above", "CPU above a percentage"),
    ("memory_above", "memory above a percentage of assigned"),
    ("disk_growth", "disk capacity grew by a size within a period"),
    ("request_failed", "a power or snapshot request failed or was unconfirmed"),
    ("snapshot_age", "oldest snapshot older than N days"),
];

async fn rule_form_page(
    me: &CurrentUser,
    app: &App<'_>,
    id: Option<i64>,
    values: RuleValues,
    error: Option<rules::FieldError>,
) -> Result<Template, AppError> {
    let vms = pages::present_vms(app.pool).await?;
    let mut vm_choices = Vec::with_capacity(vms.len());
    for v in vms {
        let key = format!("{}/{}", v.host_name, v.uuid);
        vm_choices.push(VmChoice {
            chosen: values.vms.iter().any(|k| k.eq_ignore_ascii_case(&key)),
            key,
            name: v.name,
            host: v.host_name,
        });
    }
    let vms_text = values
        .vms
        .iter()
        .filter(|k| !vm_choices.iter().any(|c| c.key.eq_ignore_ascii_case(k)))
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    let conditions = CONDITION_LABELS
        .iter()
        .map(|(k, l)| SelectOption::new(*k, *l, values.condition == *k))
        .collect();
    let severities = Severity::ALL
        .iter()
        .map(|s| SelectOption::new(s.as_str(), s.as_str(), values.severity == s.as_str()))
        .collect();
    let title = match id {
        Some(_) => format!("Alert rule {}", values.name),
        None => "New alert rule".into(),
    };
    let (error_field, error) = match error {
        Some(e) => (e.field.to_string(), e.message),
        None => (String::new(), String::new()),
    };
    Ok(Template::render(
        "alerts/rule_form",
        RuleFormPage {
            title,
            chrome: Chrome::new(me, None, app.settings),
            id,
            error_field,
            error,
            values,
            vms_text,
            vm_choices,
            conditions,
            severities,
            max_name: MAX_NAME,
        },
    ))
}

#[rocket::get("/alerts/rules/new")]
async fn new_rule_page(me: Admin<'_>, app: App<'_>) -> Result<Template, AppError> {
    let values = RuleValues {
        enabled: true,
        condition: "vm_state".into(),
        expected: "running_if_autostart".into(),
        scope: "all".into(),
        for_: "5m".into(),
        severity: "warning".into(),
        ..RuleValues::default()
    };
    rule_form_page(me.0, &app, None, values, None).await
}

/// A refused form: its page again with the error and what was typed, as a 400.
async fn refused(
    me: &CurrentUser,
    app: &App<'_>,
    id: Option<i64>,
    f: &RuleForm,
    error: rules::FieldError,
) -> FormAnswer {
    let page = rule_form_page(me, app, id, RuleValues::of_form(f), Some(error)).await?;
    Ok(Err(status::Custom(Status::BadRequest, page)))
}

fn save_error(e: SaveError) -> Result<rules::FieldError, AppError> {
    match e {
        SaveError::NameTaken(_) => Ok(rules::FieldError { field: "name", message: e.to_string() }),
        SaveError::FromFile | SaveError::Missing => {
            Ok(rules::FieldError { field: "rule", message: e.to_string() })
        }
        SaveError::Db(e) => Err(e.into()),
    }
}

#[rocket::post("/alerts/rules", data = "<form>")]
async fn create_rule(
    me: Admin<'_>,
    form: Csrf<RuleForm>,
    app: App<'_>,
    engine: &State<Arc<AlertEngine>>,
) -> FormAnswer {
    let f = form.0;
    let spec = match f.fields().parse() {
        Ok(spec) => spec,
        Err(e) => return refused(me.0, &app, None, &f, e).await,
    };
    match store::insert_rule(app.pool, &spec, Source::Page, &me.0.name, now_ms()).await {
        Ok(id) => {
            let words = describe_rule(&spec);
            audit(app.pool, me.0, "rule_added", &words, None).await;
            evaluate_soon(engine);
            Ok(Ok(Flash::success(
                Redirect::to("/alerts/rules"),
                format!("Rule {} added (rule {id}).", quoted(&spec.name)),
            )))
        }
        Err(e) => {
            let e = save_error(e)?;
            refused(me.0, &app, None, &f, e).await
        }
    }
}

/// A rule in words, for the audit log.
fn describe_rule(spec: &rules::RuleSpec) -> String {
    format!(
        "rule {}: {} for {}, {}, severity {}{}",
        quoted(&spec.name),
        spec.condition.describe(),
        rules::format_duration(spec.for_secs),
        spec.scope.describe(),
        spec.severity.as_str(),
        if spec.enabled { "" } else { ", disabled" }
    )
}

fn no_rule(id: i64) -> AppError {
    AppError::NotFound(format!("There is no alert rule {id}."))
}

#[rocket::get("/alerts/rules/<id>/edit")]
async fn edit_rule_page(me: Admin<'_>, id: i64, app: App<'_>) -> Result<Template, AppError> {
    let r = store::rule(app.pool, id).await?.ok_or_else(|| no_rule(id))?;
    let error = (r.source == Source::File).then(|| rules::FieldError {
        field: "rule",
        message: "This rule is from the configuration file and read-only here; change it there."
            .into(),
    });
    rule_form_page(me.0, &app, Some(id), RuleValues::of_rule(&r), error).await
}

#[rocket::post("/alerts/rules/<id>", data = "<form>")]
async fn update_rule(
    me: Admin<'_>,
    id: i64,
    form: Csrf<RuleForm>,
    app: App<'_>,
    engine: &State<Arc<AlertEngine>>,
) -> FormAnswer {
    let f = form.0;
    let before = store::rule(app.pool, id).await?.ok_or_else(|| no_rule(id))?;
    let spec = match f.fields().parse() {
        Ok(spec) => spec,
        Err(e) => return refused(me.0, &app, Some(id), &f, e).await,
    };
    match store::update_rule(app.pool, id, &spec, now_ms()).await {
        Ok(()) => {
            let words =
                format!("was {}; now {}", describe_rule(&before.spec), describe_rule(&spec));
            audit(app.pool, me.0, "rule_changed", &words, None).await;
            evaluate_soon(engine);
            Ok(Ok(Flash::success(
                Redirect::to("/alerts/rules"),
                format!("Rule {} saved.", quoted(&spec.name)),
            )))
        }
        Err(SaveError::Missing) => Err(no_rule(id)),
        Err(e) => {
            let e = save_error(e)?;
            refused(me.0, &app, Some(id), &f, e).await
        }
    }
}

#[derive(Serialize)]
struct DeleteRulePage {
    title: String,
    chrome: Chrome,
    rule: RuleView,
}

#[rocket::get("/alerts/rules/<id>/delete")]
async fn delete_rule_confirm(me: Admin<'_>, id: i64, app: App<'_>) -> Result<Template, AppError> {
    let r = store::rule(app.pool, id).await?.ok_or_else(|| no_rule(id))?;
    Ok(Template::render(
        "alerts/rule_delete",
        DeleteRulePage {
            title: format!("Delete alert rule {}?", r.spec.name),
            chrome: Chrome::new(me.0, None, app.settings),
            rule: RuleView::of(&r),
        },
    ))
}

#[rocket::post("/alerts/rules/<id>/delete", data = "<_form>")]
async fn delete_rule(
    me: Admin<'_>,
    id: i64,
    _form: Csrf<TokenForm>,
    app: App<'_>,
    engine: &State<Arc<AlertEngine>>,
) -> Result<Flash<Redirect>, AppError> {
    match store::delete_rule(app.pool, id).await {
        Ok(r) => {
            audit(app.pool, me.0, "rule_removed", &describe_rule(&r.spec), None).await;
            evaluate_soon(engine);
            Ok(Flash::success(
                Redirect::to("/alerts/rules"),
                format!(
                    "Rule {} removed. Its alerts stay in the history; open ones end at the next evaluation.",
                    quoted(&r.spec.name)
                ),
            ))
        }
        Err(SaveError::Db(e)) => Err(e.into()),
        Err(e) => Ok(Flash::error(Redirect::to("/alerts/rules"), format!("Rule {id}: {e}."))),
    }
}

/// The enable/disable button of a rule or a notification target.
#[derive(FromForm)]
pub(crate) struct EnableForm {
    #[field(default = String::new())]
    csrf_token: String,
    #[field(default = String::new())]
    pub(crate) enabled: String,
}

impl CsrfForm for EnableForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

#[rocket::post("/alerts/rules/<id>/enabled", data = "<form>")]
async fn enable_rule(
    me: Admin<'_>,
    id: i64,
    form: Csrf<EnableForm>,
    app: App<'_>,
    engine: &State<Arc<AlertEngine>>,
) -> Result<Flash<Redirect>, AppError> {
    let Some(r) = store::rule(app.pool, id).await? else {
        return Ok(Flash::error(Redirect::to("/alerts/rules"), format!("There is no rule {id}.")));
    };
    let enabled = checked(&form.0.enabled);
    let mut spec = r.spec.clone();
    spec.enabled = enabled;
    let word = if enabled { "enabled" } else { "disabled" };
    match store::update_rule(app.pool, id, &spec, now_ms()).await {
        Ok(()) => {
            if r.spec.enabled != enabled {
                let detail = format!("rule {} {word}", quoted(&spec.name));
                audit(app.pool, me.0, "rule_changed", &detail, None).await;
                evaluate_soon(engine);
            }
            Ok(Flash::success(
                Redirect::to("/alerts/rules"),
                format!("Rule {} {word}.", quoted(&spec.name)),
            ))
        }
        Err(SaveError::Db(e)) => Err(e.into()),
        Err(e) => Ok(Flash::error(
            Redirect::to("/alerts/rules"),
            format!("Rule {}: {e}.", quoted(&spec.name)),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Silences

#[derive(Serialize)]
struct SilenceView {
    id: i64,
    rule_name: String,
    host_name: String,
    vm_pattern: String,
    comment: String,
    starts: String,
    ends: String,
    created_by: String,
    ended: Option<String>,
    ended_by: String,
    /// Active, upcoming or expired (ended early, or its end passed).
    status: &'static str,
}

impl SilenceView {
    fn of(s: SilenceRow, now: i64) -> SilenceView {
        let status = if s.active(now) {
            "active"
        } else if s.ended_at.is_none() && s.starts_at > now {
            "upcoming"
        } else {
            "expired"
        };
        SilenceView {
            id: s.id,
            rule_name: s.rule_name.unwrap_or_default(),
            host_name: s.host_name.unwrap_or_default(),
            vm_pattern: s.vm_pattern.unwrap_or_default(),
            comment: s.comment,
            starts: view::absolute(s.starts_at),
            ends: view::absolute(s.ends_at),
            created_by: s.created_by,
            ended: s.ended_at.map(view::absolute),
            ended_by: s.ended_by.unwrap_or_default(),
            status,
        }
    }
}

#[derive(Serialize)]
struct SilencesPage {
    title: &'static str,
    chrome: Chrome,
    active: Vec<SilenceView>,
    upcoming: Vec<SilenceView>,
    expired: Vec<SilenceView>,
}

#[rocket::get("/alerts/silences")]
async fn silences_page(
    me: Viewer<'_>,
    app: App<'_>,
    flash: Option<FlashMessage<'_>>,
) -> Result<Template, AppError> {
    let now = now_ms();
    let (current, ended) = pages::silences(app.pool, now).await?;
    let (active, upcoming): (Vec<_>, Vec<_>) = current.into_iter().partition(|s| s.active(now));
    Ok(Template::render(
        "alerts/silences",
        SilencesPage {
            title: "Silences",
            chrome: Chrome::new(me.0, flash, app.settings),
            active: active.into_iter().map(|s| SilenceView::of(s, now)).collect(),
            upcoming: upcoming.into_iter().map(|s| SilenceView::of(s, now)).collect(),
            expired: ended.into_iter().map(|s| SilenceView::of(s, now)).collect(),
        },
    ))
}

/// The silence form's prefill (the "Silence like this" link) and its fields as typed.
#[derive(Debug, Default, FromForm)]
struct SilenceForm {
    #[field(default = String::new())]
    csrf_token: String,
    #[field(default = String::new())]
    rule_name: String,
    #[field(default = String::new())]
    host_name: String,
    #[field(default = String::new())]
    vm_pattern: String,
    #[field(default = String::new())]
    comment: String,
    #[field(default = String::new())]
    until: String,
}

impl CsrfForm for SilenceForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

#[derive(Serialize, Default)]
struct SilenceValues {
    rule_name: String,
    host_name: String,
    vm_pattern: String,
    comment: String,
    until: String,
}

impl SilenceValues {
    fn of(f: &SilenceForm) -> SilenceValues {
        SilenceValues {
            rule_name: cut(&f.rule_name, MAX_ECHO),
            host_name: cut(&f.host_name, MAX_ECHO),
            vm_pattern: cut(&f.vm_pattern, MAX_ECHO),
            comment: cut(&f.comment, MAX_ECHO),
            until: cut(&f.until, 60),
        }
    }
}

#[derive(Serialize)]
struct SilenceFormPage {
    title: &'static str,
    chrome: Chrome,
    errors: Vec<String>,
    values: SilenceValues,
    rules: Vec<SelectOption>,
    hosts: Vec<SelectOption>,
    max_text: usize,
    max_name: usize,
}

async fn silence_form_page(
    me: &CurrentUser,
    app: &App<'_>,
    values: SilenceValues,
    errors: Vec<String>,
) -> Result<Template, AppError> {
    let mut rule_names: Vec<String> =
        store::rules(app.pool).await?.into_iter().map(|r| r.spec.name).collect();
    if !values.rule_name.is_empty()
        && !rule_names.iter().any(|n| n.eq_ignore_ascii_case(&values.rule_name))
    {
        // A removed rule's alerts may still be silenced by name.
        rule_names.push(values.rule_name.clone());
    }
    let rules = rule_names
        .into_iter()
        .map(|n| {
            let selected = n.eq_ignore_ascii_case(&values.rule_name);
            SelectOption::new(n.clone(), n, selected)
        })
        .collect();
    let hosts = app
        .hosts
        .names()
        .into_iter()
        .map(|h| SelectOption::new(h, h, h == values.host_name))
        .collect();
    Ok(Template::render(
        "alerts/silence_form",
        SilenceFormPage {
            title: "New silence",
            chrome: Chrome::new(me, None, app.settings),
            errors,
            values,
            rules,
            hosts,
            max_text: MAX_TEXT,
            max_name: MAX_NAME,
        },
    ))
}

#[rocket::get("/alerts/silences/new?<prefill..>")]
async fn new_silence_page(
    me: Operator<'_>,
    prefill: SilenceForm,
    app: App<'_>,
) -> Result<Template, AppError> {
    let mut values = SilenceValues::of(&prefill);
    if values.until.is_empty() {
        values.until = "2h".into();
    }
    silence_form_page(me.0, &app, values, Vec::new()).await
}

impl SilenceForm {
    /// The matchers, the comment and the end, or every mistake in words.
    fn read(&self, hosts: &[&str], now: i64) -> Result<(Matchers, String, i64), Vec<String>> {
        let mut errors = Vec::new();
        let opt = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        let rule_name = opt(&self.rule_name);
        let host_name = opt(&self.host_name);
        let vm_pattern = opt(&self.vm_pattern);
        for (what, v) in [("rule", &rule_name), ("VM name pattern", &vm_pattern)] {
            if let Some(v) = v {
                if v.chars().count() > MAX_NAME || v.chars().any(char::is_control) {
                    errors.push(format!(
                        "The {what} must be at most {MAX_NAME} characters, on one line."
                    ));
                }
            }
        }
        if let Some(h) = &host_name {
            if !hosts.contains(&h.as_str()) {
                errors.push(format!("{} is not a configured host.", quoted(&cut(h, 80))));
            }
        }
        if rule_name.is_none() && host_name.is_none() && vm_pattern.is_none() {
            errors.push(
                "Choose at least one matcher (a rule, a host or a VM name pattern): a silence \
                 of everything is not allowed."
                    .into(),
            );
        }
        let comment = self.comment.trim().replace(['\r', '\n'], " ");
        if comment.is_empty() {
            errors.push("Say why in the comment: a silence needs one.".into());
        } else if comment.chars().count() > MAX_TEXT || comment.chars().any(char::is_control) {
            errors.push(format!(
                "The comment must be at most {MAX_TEXT} characters, without control characters."
            ));
        }
        let until = self.until.trim();
        let ends_at = if until.is_empty() {
            errors.push("Say until when: a duration such as 2h, or an end time (UTC).".into());
            None
        } else {
            match rules::parse_duration(until) {
                Ok(0) => {
                    errors.push("The silence must last longer than zero.".into());
                    None
                }
                Ok(secs) => Some(now + secs as i64 * 1000),
                Err(duration_error) => match crate::domain::time::parse_bounded(until, false) {
                    Some(t) if t <= now => {
                        errors.push(format!("The end {} is in the past.", quoted(&cut(until, 40))));
                        None
                    }
                    Some(t) if t > now + rules::MAX_PERIOD_SECS as i64 * 1000 => {
                        errors.push("A silence lasts at most 30 days.".into());
                        None
                    }
                    Some(t) => Some(t),
                    None if until.starts_with(|c: char| c.is_ascii_digit())
                        && until.len() <= 12 =>
                    {
                        errors.push(duration_error);
                        None
                    }
                    None => {
                        errors.push(format!(
                            "{} is neither a duration (e.g. 2h, 1d) nor a time (YYYY-MM-DD HH:MM, UTC).",
                            quoted(&cut(until, 40))
                        ));
                        None
                    }
                },
            }
        };
        match (ends_at, errors.is_empty()) {
            (Some(end), true) => Ok((Matchers { rule_name, host_name, vm_pattern }, comment, end)),
            _ => Err(errors),
        }
    }
}

fn describe_matchers(m: &Matchers) -> String {
    let mut parts = Vec::new();
    if let Some(r) = &m.rule_name {
        parts.push(format!("rule {}", quoted(r)));
    }
    if let Some(h) = &m.host_name {
        parts.push(format!("host {}", quoted(h)));
    }
    if let Some(p) = &m.vm_pattern {
        parts.push(format!("VMs named like {}", quoted(p)));
    }
    parts.join(", ")
}

#[rocket::post("/alerts/silences", data = "<form>")]
async fn create_silence(me: Operator<'_>, form: Csrf<SilenceForm>, app: App<'_>) -> FormAnswer {
    let f = form.0;
    let now = now_ms();
    let (matchers, comment, ends_at) = match f.read(&app.hosts.names(), now) {
        Ok(v) => v,
        Err(errors) => {
            let page = silence_form_page(me.0, &app, SilenceValues::of(&f), errors).await?;
            return Ok(Err(status::Custom(Status::BadRequest, page)));
        }
    };
    let id = pages::insert_silence(app.pool, &matchers, &comment, ends_at, &me.0.name, now).await?;
    let words = describe_matchers(&matchers);
    let detail = format!("silence {id} of {words} until {}: {comment}", view::absolute(ends_at));
    audit(app.pool, me.0, "silence_added", &detail, None).await;
    Ok(Ok(Flash::success(
        Redirect::to("/alerts/silences"),
        format!("Silence {id} added: {words}, until {}.", view::absolute(ends_at)),
    )))
}

#[rocket::post("/alerts/silences/<id>/end", data = "<_form>")]
async fn end_silence(
    me: Operator<'_>,
    id: i64,
    _form: Csrf<TokenForm>,
    app: App<'_>,
) -> Result<Flash<Redirect>, AppError> {
    let Some(s) = pages::silence(app.pool, id).await? else {
        return Ok(Flash::error(
            Redirect::to("/alerts/silences"),
            format!("There is no silence {id}."),
        ));
    };
    if !pages::end_silence(app.pool, id, &me.0.name, now_ms()).await? {
        return Ok(Flash::error(
            Redirect::to("/alerts/silences"),
            format!("Silence {id} had ended already."),
        ));
    }
    let detail = format!("silence {id} of {} ended early", describe_matchers(&s.matchers()));
    audit(app.pool, me.0, "silence_ended", &detail, None).await;
    Ok(Flash::success(Redirect::to("/alerts/silences"), format!("Silence {id} ended.")))
}
