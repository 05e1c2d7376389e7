//! `GET /audit` (filtered, paginated), `GET /audit.csv` (the same view as a download) and
//! `GET /audit/<id>` (one entry, every field in full: the list cuts long values short).

use rocket::form::FromForm;
use rocket::request::FlashMessage;
use rocket::Route;
use rocket_dyn_templates::Template;
use serde::Serialize;

use super::store::{self, ActionFilter, Entry, Filter, OutcomeFilter};
use crate::auth::Viewer;
use crate::domain::time::Period;
use crate::domain::{AuditKind, AuditOutcome, PowerAction, RequestAction, SnapshotAction};
use crate::web::csv::Csv;
use crate::web::format as view;
use crate::web::pager::Pager;
use crate::web::{bounded_text, with_query, App, AppError, Chrome, Notices};

pub fn routes() -> Vec<Route> {
    rocket::routes![audit_page, audit_csv, audit_entry]
}

const PAGE_SIZE: usize = 50;
/// Most rows one CSV export returns.
const CSV_LIMIT: i64 = 100_000;
/// Longest accepted text filter.
const MAX_FILTER_LEN: usize = 200;
/// Most action values one filter takes (there are fewer actions and kinds than this).
const MAX_ACTIONS: usize = 32;
/// Longest value a list cell shows; longer ones end in "…" and link to the entry's page.
const CELL_CHARS: usize = 64;

/// The query string as given; every field is optional and checked in [`AuditQuery::read`].
#[derive(Debug, Default, FromForm)]
struct AuditQuery<'r> {
    user: Option<&'r str>,
    vm: Option<&'r str>,
    host: Option<&'r str>,
    /// Repeatable: `action=shutdown&action=power_off` is either; `power` every power action.
    action: Vec<&'r str>,
    outcome: Option<&'r str>,
    from: Option<&'r str>,
    to: Option<&'r str>,
    page: Option<&'r str>,
}

/// A validated query: the filter, and the texts to echo into the form and the links.
struct Query {
    filter: Filter,
    user: String,
    vm: String,
    host: String,
    actions: Vec<String>,
    outcome: String,
    period: Period,
}

impl AuditQuery<'_> {
    /// Validates the query; anything wrong becomes a notice, never an error page.
    fn read(&self, notices: &mut Notices) -> Query {
        let text = |v: Option<&str>, what: &str, notices: &mut Notices| {
            bounded_text(v.unwrap_or(""), MAX_FILTER_LEN, what, notices)
        };
        let user = text(self.user, "user filter", notices);
        let vm = text(self.vm, "VM filter", notices);
        let host = text(self.host, "host filter", notices);
        let mut outcome = text(self.outcome, "outcome filter", notices);
        if self.action.len() > MAX_ACTIONS {
            notices.push(format!("Only the first {MAX_ACTIONS} actions are used."));
        }
        let (mut actions, mut action_filters) = (Vec::new(), Vec::new());
        for a in self.action.iter().take(MAX_ACTIONS) {
            let a = text(Some(a), "action filter", notices);
            if a.is_empty() || actions.contains(&a) {
                continue;
            }
            match ActionFilter::parse(&a) {
                Some(f) => {
                    action_filters.push(f);
                    actions.push(a);
                }
                None => notices.push(format!("Unknown action {a:?}: left out of the filter.")),
            }
        }
        let outcome_filter = match outcome.as_str() {
            "pending" => Some(OutcomeFilter::Pending),
            o => AuditOutcome::parse(o).map(OutcomeFilter::Is),
        };
        if outcome_filter.is_none() && !outcome.is_empty() {
            notices.push(format!("Unknown outcome {outcome:?}: showing every outcome."));
            outcome.clear();
        }
        let period = Period::read(
            &text(self.from, "from time", notices),
            &text(self.to, "to time", notices),
            ["ignored", "ignored"],
            notices,
        );
        Query {
            filter: Filter {
                user: user.clone(),
                vm: vm.clone(),
                host: host.clone(),
                actions: action_filters,
                outcome: outcome_filter,
                from: period.from,
                to: period.to,
            },
            user,
            vm,
            host,
            actions,
            outcome,
            period,
        }
    }
}

impl Query {
    /// The query string of this view, on `page` (None: no page).
    fn query_string(&self, page: Option<usize>) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        let actions = self.actions.iter().map(|a| ("action", a));
        for (k, v) in [("user", &self.user), ("vm", &self.vm), ("host", &self.host)]
            .into_iter()
            .chain(actions)
            .chain([("outcome", &self.outcome)])
        {
            if !v.is_empty() {
                s.append_pair(k, v);
            }
        }
        for (k, v) in [("from", &self.period.from_text), ("to", &self.period.to_text)] {
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

/// `text` cut to [`CELL_CHARS`] characters and "…", and whether it was cut.
fn clip(text: String, cut: &mut bool) -> String {
    match text.char_indices().nth(CELL_CHARS) {
        Some((at, _)) => {
            *cut = true;
            format!("{}…", &text[..at])
        }
        None => text,
    }
}

/// One entry as the list shows it: long values cut short ([`clip`]), `cut` saying whether
/// any was, so the row links to the entry's own page.
#[derive(Serialize)]
struct EntryView {
    id: i64,
    time: String,
    cut: bool,
    kind: &'static str,
    user: String,
    addr: String,
    host: String,
    vm_name: String,
    vm_uuid: String,
    action: String,
    /// The action in words (`Take snapshot`), or the raw value where it is none vmdeck knows.
    action_label: String,
    outcome: &'static str,
    pending: bool,
    confirm_time: String,
    error: String,
    detail: String,
}

impl EntryView {
    /// The entry in full (its own page).
    fn full(r: Entry) -> Self {
        EntryView {
            confirm_time: r
                .confirm_ms()
                .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
                .unwrap_or_default(),
            pending: r.status.is_pending(),
            id: r.id,
            time: view::absolute(r.ts),
            kind: r.kind.as_str(),
            user: r.user_name.unwrap_or_default(),
            addr: r.client_addr.unwrap_or_default(),
            host: r.host_name.unwrap_or_default(),
            vm_name: r.vm_name.unwrap_or_default(),
            vm_uuid: r.vm_uuid.unwrap_or_default(),
            action_label: r
                .action
                .as_deref()
                .map(|a| {
                    RequestAction::parse(a).map_or_else(|| a.to_string(), |a| a.label().into())
                })
                .unwrap_or_default(),
            action: r.action.unwrap_or_default(),
            outcome: r.status.as_str(),
            error: r.error.unwrap_or_default(),
            detail: r.detail.unwrap_or_default(),
            cut: false,
        }
    }

    /// The entry as a list row: long values cut short.
    fn clipped(r: Entry) -> Self {
        let mut e = Self::full(r);
        let mut cut = false;
        for v in [
            &mut e.user,
            &mut e.addr,
            &mut e.host,
            &mut e.vm_name,
            &mut e.action,
            &mut e.action_label,
        ] {
            *v = clip(std::mem::take(v), &mut cut);
        }
        for v in [&mut e.error, &mut e.detail] {
            // Errors and details are sentences: four cells' worth, then cut.
            *v = match v.char_indices().nth(4 * CELL_CHARS) {
                Some((at, _)) => {
                    cut = true;
                    format!("{}…", &v[..at])
                }
                None => std::mem::take(v),
            };
        }
        e.cut = cut;
        e
    }
}

#[derive(Serialize)]
struct AuditPage {
    title: &'static str,
    chrome: Chrome,
    entries: Vec<EntryView>,
    pager: Pager,
    csv_href: String,
    user: String,
    vm: String,
    host: String,
    /// The actions filtered on (several at once).
    action: Vec<String>,
    outcome: String,
    from: String,
    to: String,
    actions: Vec<&'static str>,
    outcomes: Vec<&'static str>,
    hosts: Vec<String>,
    notices: Notices,
    filtered: bool,
}

#[rocket::get("/audit?<query..>")]
async fn audit_page(
    me: Viewer<'_>,
    query: AuditQuery<'_>,
    app: App<'_>,
    flash: Option<FlashMessage<'_>>,
) -> Result<Template, AppError> {
    let mut notices = Notices::new();
    let q = query.read(&mut notices);
    let total = store::count(app.pool, &q.filter).await?;
    let pager = Pager::new(
        query.page.unwrap_or(""),
        total.max(0) as usize,
        PAGE_SIZE,
        |p| with_query("/audit", &q.query_string(Some(p))),
        &mut notices,
    );
    let rows = store::entries(app.pool, &q.filter, PAGE_SIZE as i64, pager.offset() as i64).await?;
    let mut actions: Vec<&'static str> = PowerAction::ALL.iter().map(|a| a.as_str()).collect();
    actions.extend(SnapshotAction::ALL.iter().map(|a| a.as_str()));
    actions.extend(AuditKind::ALL.iter().filter(|k| **k != AuditKind::Power).map(|k| k.as_str()));
    let mut outcomes: Vec<&'static str> = AuditOutcome::ALL.iter().map(|o| o.as_str()).collect();
    outcomes.push("pending");
    let plain_query = q.query_string(None);
    Ok(Template::render(
        "audit/list",
        AuditPage {
            title: "Audit log",
            chrome: Chrome::new(me.0, flash, app.settings),
            entries: rows.into_iter().map(EntryView::clipped).collect(),
            pager,
            csv_href: with_query("/audit.csv", &plain_query),
            filtered: !plain_query.is_empty(),
            user: q.user,
            vm: q.vm,
            host: q.host,
            action: q.actions,
            outcome: q.outcome,
            from: q.period.from_text,
            to: q.period.to_text,
            actions,
            outcomes,
            hosts: app.hosts.names().iter().map(|h| h.to_string()).collect(),
            notices,
        },
    ))
}

#[derive(Serialize)]
struct EntryPage {
    title: String,
    chrome: Chrome,
    entry: EntryView,
    /// Whether the VM's host is configured (then its page exists).
    vm_page: bool,
}

/// One entry, every field in full.
#[rocket::get("/audit/<id>")]
async fn audit_entry(me: Viewer<'_>, id: i64, app: App<'_>) -> Result<Template, AppError> {
    let entry = store::entry(app.pool, id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("There is no audit entry {id}.")))?;
    let entry = EntryView::full(entry);
    let vm_page = !entry.vm_uuid.is_empty() && app.hosts.names().contains(&entry.host.as_str());
    Ok(Template::render(
        "audit/entry",
        EntryPage {
            title: format!("Audit entry {id}"),
            chrome: Chrome::new(me.0, None, app.settings),
            entry,
            vm_page,
        },
    ))
}

#[rocket::get("/audit.csv?<query..>")]
async fn audit_csv(_me: Viewer<'_>, query: AuditQuery<'_>, app: App<'_>) -> Result<Csv, AppError> {
    let q = query.read(&mut Notices::new());
    let rows = store::entries(app.pool, &q.filter, CSV_LIMIT, 0).await?;
    Ok(Csv::build(
        "vmdeck-audit.csv",
        &[
            "id",
            "time_utc",
            "kind",
            "user",
            "client_address",
            "host",
            "vm_name",
            "vm_uuid",
            "action",
            "outcome",
            "request_to_confirmation_ms",
            "accepted_at_utc",
            "error",
            "detail",
        ],
        rows.into_iter().map(|r| {
            vec![
                r.id.to_string(),
                view::absolute(r.ts),
                r.kind.as_str().to_string(),
                r.user_name.clone().unwrap_or_default(),
                r.client_addr.clone().unwrap_or_default(),
                r.host_name.clone().unwrap_or_default(),
                r.vm_name.clone().unwrap_or_default(),
                r.vm_uuid.clone().unwrap_or_default(),
                r.action.clone().unwrap_or_default(),
                r.status.as_str().to_string(),
                r.confirm_ms().map(|v| v.to_string()).unwrap_or_default(),
                r.accepted_at.map(view::absolute).unwrap_or_default(),
                r.error.clone().unwrap_or_default(),
                r.detail.clone().unwrap_or_default(),
            ]
        }),
    ))
}
