//! `GET /vms`: one row per VM across all hosts, sorted, filtered and paged server-side, with a
//! banner per host telling how fresh its data is. The handler reads as query → model → view:
//! [`ListQuery`] is what the URL says, [`Filters`] what it means once validated, [`ListPage`]
//! what the template shows.
//!
//! Long because the list's query has seven parameters, each validated with its own notice, and
//! the model builds every column, option and link of the page; the SQL is in `store`.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rocket::form::FromForm;
use rocket::request::FlashMessage;
use rocket_dyn_templates::Template;
use serde::Serialize;

use super::health::{host_statuses, HostStatus};
use super::rows::{self, RowContext};
use super::snapshot::{Entry, Snapshot, Snapshots};
use crate::auth::Viewer;
use crate::control::store::{self as control, PendingPower, RecentFailure};
use crate::db::now_ms;
use crate::domain::{PowerState, RequestAction, Role};
use crate::hosts::Hosts;
use crate::web::format as view;
use crate::web::live::{Fragment, IfNoneMatch, LiveHint, LiveTag};
use crate::web::pager::Pager;
use crate::web::power::{self, ActionButton};
use crate::web::{bounded_text, App, AppError, Chrome, Notices, SelectOption};

/// Longest accepted text filter.
const MAX_QUERY_LEN: usize = 200;
/// Page sizes offered; the first is the default.
const PAGE_SIZES: [usize; 5] = [100, 50, 250, 500, 1000];

/// The query string as given; every field is optional and checked in [`Filters::read`].
#[derive(Debug, Default, FromForm)]
pub struct ListQuery<'r> {
    q: Option<&'r str>,
    state: Option<&'r str>,
    host: Option<&'r str>,
    sort: Option<&'r str>,
    dir: Option<&'r str>,
    page: Option<&'r str>,
    per_page: Option<&'r str>,
}

#[rocket::get("/vms?<query..>")]
pub async fn vm_list(
    user: Viewer<'_>,
    flash: Option<FlashMessage<'_>>,
    app: App<'_>,
    snapshots: &rocket::State<Snapshots>,
    query: ListQuery<'_>,
) -> Result<Template, AppError> {
    let state = Loaded::read(&app, snapshots).await?;
    let mut notices = Notices::new();
    let filters = Filters::read(&query, &app.hosts.names(), &mut notices);
    let page = ListPage::build(
        Chrome::new(user.0, flash, app.settings),
        filters,
        query.page.unwrap_or(""),
        state,
        app.hosts,
        notices,
        app.settings.poll_interval,
    );
    Ok(Template::render("inventory/list", page))
}

/// `GET /vms/live?…` (same query as the list): the parts of the list that change, for
/// `static/live.js` to swap in place: the host banners, the row count, the table body with its
/// pending markers, and when to ask again. Answers 304 without rendering when nothing it shows
/// changed since the tag in `If-None-Match` (see `web::live`). Unlike the page, a query it cannot
/// use is a 400: the script only sends what the page itself built.
#[rocket::get("/vms/live?<query..>")]
pub async fn vm_list_live(
    user: Viewer<'_>,
    app: App<'_>,
    snapshots: &rocket::State<Snapshots>,
    query: ListQuery<'_>,
    seen: IfNoneMatch,
) -> Result<Fragment<Template>, AppError> {
    let mut notices = Notices::new();
    let filters = Filters::read(&query, &app.hosts.names(), &mut notices);
    if !notices.is_empty() {
        return Err(AppError::BadRequest(notices.join(" ")));
    }
    let state = Loaded::read(&app, snapshots).await?;
    let requested_page = query.page.unwrap_or("");
    let etag = state
        .tag()
        .with(user.0.can(Role::Operator))
        .with(filters.href(filters.sort, filters.desc, 1))
        .with(requested_page)
        .etag();
    if seen.matches(&etag) {
        return Ok(Fragment::Unchanged(etag));
    }
    let page = ListPage::build(
        // No flash: the fragment must not take the message meant for the next page.
        Chrome::new(user.0, None, app.settings),
        filters,
        requested_page,
        state,
        app.hosts,
        Notices::new(),
        app.settings.poll_interval,
    );
    Ok(Fragment::Fresh(Template::render("inventory/live", page), etag))
}

/// What the list is built from: each host's health, the rows, the power requests in flight.
struct Loaded {
    statuses: Vec<HostStatus>,
    snapshot: Arc<Snapshot>,
    pending: Vec<PendingPower>,
    /// Requests that failed or went unconfirmed lately, shown beside their VM.
    failures: Vec<RecentFailure>,
}

impl Loaded {
    async fn read(app: &App<'_>, snapshots: &Snapshots) -> Result<Loaded, AppError> {
        let since = now_ms() - control::RECENT_FAILURE_MS;
        let (statuses, snapshot, pending, failures) = tokio::try_join!(
            async {
                host_statuses(app.pool, app.hosts, app.settings).await.map_err(anyhow::Error::from)
            },
            snapshots.current(app.pool),
            async { control::pending(app.pool).await.map_err(anyhow::Error::from) },
            async { control::recent_failures(app.pool, since).await.map_err(anyhow::Error::from) }
        )?;
        Ok(Loaded { statuses, snapshot, pending, failures })
    }

    /// Everything the list shows depends on, apart from the clock and the query.
    fn tag(&self) -> LiveTag {
        let hosts: Vec<_> = self
            .statuses
            .iter()
            .map(|h| (&h.name, h.status, h.polling, h.last_success_ms, h.last_error.as_deref()))
            .collect();
        let pending: Vec<_> = self.pending.iter().map(|p| (p.id, p.status.as_str())).collect();
        // A failure's note is shown for a while, then drops out of `failures`.
        let failures: Vec<_> =
            self.failures.iter().map(|f| (&f.host_name, &f.vm_uuid, f.status.as_str())).collect();
        LiveTag::new("list").with(self.snapshot.version()).with(hosts).with(pending).with(failures)
    }
}

/// Sortable columns, by their query-parameter name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortKey {
    Name,
    Host,
    State,
    Ip,
    Vcpus,
    Memory,
    Disk,
    Cpu,
}

impl SortKey {
    const ALL: [(SortKey, &'static str, &'static str); 8] = [
        (SortKey::Name, "name", "Name"),
        (SortKey::Host, "host", "Host"),
        (SortKey::State, "state", "State"),
        (SortKey::Ip, "ip", "IP addresses"),
        (SortKey::Vcpus, "vcpus", "vCPUs"),
        (SortKey::Memory, "memory", "Memory"),
        (SortKey::Disk, "disk", "Disk"),
        (SortKey::Cpu, "cpu", "CPU"),
    ];

    fn parse(s: &str) -> Option<SortKey> {
        Self::ALL.iter().find(|(_, k, _)| *k == s).map(|(k, _, _)| *k)
    }

    fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(k, _, _)| *k == self).map_or("name", |(_, s, _)| s)
    }
}

/// Which VMs the state filter keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StateFilter {
    /// Every VM present on its host.
    Present,
    /// Present VMs in one state.
    In(PowerState),
    /// VMs no longer on their host.
    Gone,
}

/// What the user asked for, after validation.
#[derive(Debug, Clone)]
struct Filters {
    q: String,
    state: StateFilter,
    host: Option<String>,
    sort: SortKey,
    desc: bool,
    /// Rows per page; None shows every row.
    per_page: Option<usize>,
}

impl Filters {
    /// Validates the query; anything wrong becomes a visible notice, never an error page.
    fn read(query: &ListQuery<'_>, host_names: &[&str], notices: &mut Notices) -> Filters {
        let q = bounded_text(query.q.unwrap_or(""), MAX_QUERY_LEN, "search text", notices);
        let state = match query.state.map(str::trim) {
            None | Some("") | Some("all") => StateFilter::Present,
            Some("gone") => StateFilter::Gone,
            Some(s) => PowerState::parse(s).map(StateFilter::In).unwrap_or_else(|| {
                notices.push(format!("Unknown state {s:?}: showing every state."));
                StateFilter::Present
            }),
        };
        let host = match query.host.map(str::trim) {
            None | Some("") | Some("all") => None,
            Some(h) if host_names.contains(&h) => Some(h.to_string()),
            Some(h) => {
                notices.push(format!("There is no host named {h:?}: showing every host."));
                None
            }
        };
        let sort = match query.sort {
            None | Some("") => SortKey::Name,
            Some(s) => SortKey::parse(s).unwrap_or_else(|| {
                notices.push(format!("Cannot sort by {s:?}: sorted by name."));
                SortKey::Name
            }),
        };
        let desc = match query.dir {
            None | Some("") | Some("asc") => false,
            Some("desc") => true,
            Some(d) => {
                notices.push(format!("Unknown sort direction {d:?}: sorted ascending."));
                false
            }
        };
        let per_page = match query.per_page.map(str::trim) {
            None | Some("") => Some(PAGE_SIZES[0]),
            Some("all") => None,
            Some(n) => match n.parse::<usize>() {
                Ok(n) if PAGE_SIZES.contains(&n) => Some(n),
                _ => {
                    notices.push(format!(
                        "Cannot show {n:?} rows per page: showing {}.",
                        PAGE_SIZES[0]
                    ));
                    Some(PAGE_SIZES[0])
                }
            },
        };
        Filters { q, state, host, sort, desc, per_page }
    }

    /// Builds the `/vms?...` link for these filters with sort and page changed.
    fn href(&self, sort: SortKey, desc: bool, page: usize) -> String {
        crate::web::with_query("/vms", &self.query(sort, desc, page))
    }

    /// The query string of [`Filters::href`].
    fn query(&self, sort: SortKey, desc: bool, page: usize) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        if !self.q.is_empty() {
            s.append_pair("q", &self.q);
        }
        match self.state {
            StateFilter::Present => {}
            StateFilter::In(st) => {
                s.append_pair("state", st.as_str());
            }
            StateFilter::Gone => {
                s.append_pair("state", "gone");
            }
        }
        if let Some(h) = &self.host {
            s.append_pair("host", h);
        }
        if sort != SortKey::Name || desc {
            s.append_pair("sort", sort.as_str());
        }
        if desc {
            s.append_pair("dir", "desc");
        }
        match self.per_page {
            Some(n) if n == PAGE_SIZES[0] => {}
            Some(n) => {
                s.append_pair("per_page", &n.to_string());
            }
            None => {
                s.append_pair("per_page", "all");
            }
        }
        if page > 1 {
            s.append_pair("page", &page.to_string());
        }
        s.finish()
    }

    fn is_filtered(&self) -> bool {
        !self.q.is_empty() || self.state != StateFilter::Present || self.host.is_some()
    }

    fn matches(&self, e: &Entry, needle: &str) -> bool {
        let gone = e.row.gone_at.is_some();
        let state_ok = match self.state {
            StateFilter::Present => !gone,
            StateFilter::Gone => gone,
            StateFilter::In(s) => !gone && e.row.state == s,
        };
        let host_ok = self.host.as_deref().is_none_or(|h| e.row.host == h);
        let text_ok = needle.is_empty()
            || e.name_key.contains(needle)
            || e.ip_texts.iter().any(|ip| ip.contains(needle));
        state_ok && host_ok && text_ok
    }
}

fn sort_entries(entries: &mut [&Entry], key: SortKey, desc: bool) {
    // Missing values sort last in either direction; ties fall back to name, then host.
    fn opt<T: PartialOrd>(a: Option<T>, b: Option<T>, desc: bool) -> Ordering {
        match (a, b) {
            (Some(a), Some(b)) => dir(a.partial_cmp(&b).unwrap_or(Ordering::Equal), desc),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    }
    fn name_key(e: &Entry) -> (&str, &str) {
        (&e.name_key, &e.row.host)
    }
    entries.sort_by(|a, b| {
        let primary = match key {
            SortKey::Name => Ordering::Equal,
            SortKey::Host => dir(a.row.host.cmp(&b.row.host), desc),
            SortKey::State => dir(a.row.state.cmp(&b.row.state), desc),
            SortKey::Ip => opt(
                a.ips.first().map(|i| (i.addr.is_ipv6(), i.addr)),
                b.ips.first().map(|i| (i.addr.is_ipv6(), i.addr)),
                desc,
            ),
            SortKey::Vcpus => opt(a.row.vcpus, b.row.vcpus, desc),
            SortKey::Memory => opt(a.row.memory_max_kib, b.row.memory_max_kib, desc),
            SortKey::Disk => opt(a.row.disk_capacity_bytes, b.row.disk_capacity_bytes, desc),
            SortKey::Cpu => opt(a.row.cpu_pct, b.row.cpu_pct, desc),
        };
        primary.then_with(|| {
            let o = name_key(a).cmp(&name_key(b));
            if key == SortKey::Name {
                dir(o, desc)
            } else {
                o
            }
        })
    });
}

fn dir(o: Ordering, desc: bool) -> Ordering {
    if desc {
        o.reverse()
    } else {
        o
    }
}

#[derive(Serialize)]
struct Column {
    key: &'static str,
    label: &'static str,
    href: String,
    /// `asc`/`desc` on the column the list is sorted by.
    sorted: Option<&'static str>,
}

#[derive(Serialize)]
struct ListPage {
    title: &'static str,
    chrome: Chrome,
    /// This page's own URL, where power forms come back to.
    back: String,
    bulk_actions: Vec<ActionButton>,
    hosts: Vec<HostStatus>,
    live: LiveHint,
    /// The table rows' HTML (see `rows`); `row_count` of them.
    rows: String,
    row_count: usize,
    total: usize,
    columns: Vec<Column>,
    q: String,
    state_options: Vec<SelectOption>,
    host_options: Vec<SelectOption>,
    sort: &'static str,
    dir: &'static str,
    filtered: bool,
    pager: Pager,
    page_size_options: Vec<SelectOption>,
    clear_href: &'static str,
    notices: Notices,
    empty: Option<String>,
    generated: String,
}

impl ListPage {
    /// Filters, sorts and pages the rows; only the rows of the requested page are formatted,
    /// with the actions the backend of each VM's host (from `hosts`) offers.
    fn build(
        chrome: Chrome,
        filters: Filters,
        requested_page: &str,
        state: Loaded,
        hosts: &Hosts,
        mut notices: Notices,
        poll_interval: Duration,
    ) -> ListPage {
        let Loaded { statuses, snapshot, pending, failures } = state;
        let pending: HashMap<(String, String), (String, RequestAction)> = pending
            .into_iter()
            .map(|p| ((p.host_name.clone(), p.vm_uuid.clone()), (p.describe(), p.action)))
            .collect();
        let failures: HashMap<(String, String), String> = failures
            .into_iter()
            .map(|f| ((f.host_name.clone(), f.vm_uuid.clone()), f.describe()))
            .collect();
        let operator = chrome.user.can(Role::Operator);
        let host_names: Vec<String> = statuses.iter().map(|h| h.name.clone()).collect();
        let now = now_ms();
        let needle = filters.q.to_lowercase();
        let mut entries: Vec<&Entry> =
            snapshot.entries.iter().filter(|e| host_names.contains(&e.row.host)).collect();
        let total = entries.iter().filter(|e| e.row.gone_at.is_none()).count();
        entries.retain(|e| filters.matches(e, &needle));
        sort_entries(&mut entries, filters.sort, filters.desc);

        let matched = entries.len();
        let size = filters.per_page.unwrap_or(matched.max(1));
        let pager = Pager::new(
            requested_page,
            matched,
            size,
            |p| filters.href(filters.sort, filters.desc, p),
            &mut notices,
        );
        let back = filters.href(filters.sort, filters.desc, pager.page);
        let live_href = crate::web::with_query(
            "/vms/live",
            &filters.query(filters.sort, filters.desc, pager.page),
        );
        let start = pager.offset().min(matched);
        let shown = &entries[start..(start + size).min(matched)];
        let pending_of =
            |e: &Entry| pending.get(&(e.row.host.clone(), e.row.uuid.clone())).cloned();
        let failed_of =
            |e: &Entry| failures.get(&(e.row.host.clone(), e.row.uuid.clone())).cloned();
        let rows = rows::render(
            shown.iter().copied(),
            &RowContext { operator, hosts, now, pending: &pending_of, failed: &failed_of },
        );
        let empty = empty_state(shown.is_empty(), &filters, &statuses);
        // Soon again while a request on this page settles or a host has no data yet; a request
        // on a VM this page does not show is no reason to hurry.
        let settling = shown.iter().any(|e| pending_of(e).is_some())
            || statuses.iter().any(|h| h.status == "pending");
        ListPage {
            title: "Virtual machines",
            bulk_actions: if operator { power::bulk_buttons() } else { Vec::new() },
            back,
            live: LiveHint::new(live_href, settling, !statuses.is_empty(), poll_interval),
            rows,
            row_count: shown.len(),
            total,
            columns: columns(&filters),
            q: filters.q.clone(),
            state_options: state_options(filters.state),
            host_options: host_options(&host_names, filters.host.as_deref()),
            sort: filters.sort.as_str(),
            dir: if filters.desc { "desc" } else { "asc" },
            filtered: filters.is_filtered(),
            pager,
            page_size_options: page_size_options(filters.per_page),
            clear_href: "/vms",
            notices,
            empty,
            generated: view::absolute(now),
            hosts: statuses,
            chrome,
        }
    }
}

/// What an empty list says, by why it is empty.
fn empty_state(nothing_shown: bool, filters: &Filters, statuses: &[HostStatus]) -> Option<String> {
    if !nothing_shown {
        None
    } else if filters.is_filtered() {
        Some("No VM matches these filters.".to_string())
    } else if statuses.iter().all(|h| h.status == "pending") {
        Some("Waiting for the first poll of each host…".to_string())
    } else if statuses.iter().all(|h| h.last_success_ms.is_none()) {
        Some("No host could be reached yet: see the errors above.".to_string())
    } else {
        Some("No VMs: the hosts that answered report none.".to_string())
    }
}

fn columns(filters: &Filters) -> Vec<Column> {
    SortKey::ALL
        .iter()
        .map(|(k, key, label)| {
            let current = *k == filters.sort;
            Column {
                key,
                label,
                // Clicking the sorted column flips its direction; another column sorts ascending.
                href: filters.href(*k, current && !filters.desc, 1),
                sorted: current.then_some(if filters.desc { "desc" } else { "asc" }),
            }
        })
        .collect()
}

fn state_options(current: StateFilter) -> Vec<SelectOption> {
    let mut options = vec![SelectOption::new("", "any state", current == StateFilter::Present)];
    options.extend(
        PowerState::ALL
            .iter()
            .map(|p| SelectOption::new(p.as_str(), p.label(), current == StateFilter::In(*p))),
    );
    options.push(SelectOption::new("gone", "gone from host", current == StateFilter::Gone));
    options
}

fn host_options(names: &[String], current: Option<&str>) -> Vec<SelectOption> {
    let mut options = vec![SelectOption::new("", "any host", current.is_none())];
    options.extend(names.iter().map(|h| SelectOption::new(h, h, current == Some(h.as_str()))));
    options
}

fn page_size_options(current: Option<usize>) -> Vec<SelectOption> {
    let mut options: Vec<SelectOption> = PAGE_SIZES
        .iter()
        .map(|n| SelectOption::new(n.to_string(), format!("{n} per page"), current == Some(*n)))
        .collect();
    options.push(SelectOption::new("all", "all", current.is_none()));
    options
}
