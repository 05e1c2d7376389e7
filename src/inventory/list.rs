//! `GET /vms`: one row per VM across all hosts, sorted and filtered server-side, with a banner
//! per host telling how fresh its data is. `GET /healthz`: the same host state as JSON.

use std::cmp::Ordering;
use std::sync::Arc;

use rocket::serde::json::Json;
use rocket::State;
use rocket_dyn_templates::Template;
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, SqlitePool};

use crate::audit::store as audit;
use crate::auth::{Chrome, Viewer};
use crate::backend::{AddrSource, IpAddress, PowerAction, PowerState};
use crate::config::Settings;
use crate::db::{now_ms, Db};
use crate::error::AppError;
use crate::poller::Hosts;
use crate::view;
use rocket::request::FlashMessage;

/// A host's data is stale once it is older than this many poll intervals.
const STALE_INTERVALS: i64 = 3;
/// Longest accepted text filter.
const MAX_QUERY_LEN: usize = 200;

// ---------------------------------------------------------------------------------------------
// Host status, shared by the banner and /healthz

#[derive(Debug, FromRow)]
struct HostStatusRow {
    name: String,
    driver: String,
    uri_redacted: String,
    demo: bool,
    last_started: Option<i64>,
    last_finished: Option<i64>,
    last_ok: Option<bool>,
    last_error: Option<String>,
    ok_finished: Option<i64>,
    ok_vm_count: Option<i64>,
}

/// One host's poll health, as the banner and `/healthz` show it.
#[derive(Debug, Serialize)]
pub struct HostStatus {
    name: String,
    driver: String,
    uri: String,
    demo: bool,
    /// `ok`, `failing`, `stale` or `pending` (no poll finished yet).
    status: &'static str,
    polling: bool,
    last_poll_started_ms: Option<i64>,
    last_poll_finished_ms: Option<i64>,
    last_success_ms: Option<i64>,
    last_error: Option<String>,
    vm_count: Option<i64>,
    consecutive_failures: u32,
    last_duration_ms: Option<u64>,
    last_success_ago: Option<String>,
    last_success_abs: Option<String>,
}

async fn host_statuses(
    pool: &SqlitePool,
    hosts: &Hosts,
    settings: &Settings,
) -> sqlx::Result<Vec<HostStatus>> {
    let rows: Vec<HostStatusRow> = sqlx::query_as(
        "SELECT h.name, h.driver, h.uri_redacted, h.demo,
                lp.started_at AS last_started, lp.finished_at AS last_finished, lp.ok AS last_ok,
                lp.error AS last_error, op.finished_at AS ok_finished, op.vm_count AS ok_vm_count
         FROM hosts h
         LEFT JOIN polls lp ON lp.id = h.last_poll_id
         LEFT JOIN polls op ON op.id = h.last_ok_poll_id",
    )
    .fetch_all(pool)
    .await?;
    let now = now_ms();
    let stale_after = settings.poll_interval.as_millis() as i64 * STALE_INTERVALS;
    // Configured hosts only, in configuration order.
    Ok(hosts
        .0
        .iter()
        .filter_map(|entry| {
            let row = rows.iter().find(|r| r.name == entry.config.name.as_str())?;
            let rt = entry.runtime();
            let status = match (row.last_ok, row.ok_finished) {
                (None, _) => "pending",
                (Some(false), _) => "failing",
                (Some(true), Some(t)) if now - t > stale_after => "stale",
                _ => "ok",
            };
            Some(HostStatus {
                name: row.name.clone(),
                driver: row.driver.clone(),
                uri: row.uri_redacted.clone(),
                demo: row.demo,
                status,
                polling: rt.polling,
                last_poll_started_ms: row.last_started,
                last_poll_finished_ms: row.last_finished,
                last_success_ms: row.ok_finished,
                last_error: if row.last_ok == Some(false) { row.last_error.clone() } else { None },
                vm_count: row.ok_vm_count,
                consecutive_failures: rt.consecutive_failures,
                last_duration_ms: rt.last_duration_ms,
                last_success_ago: row.ok_finished.map(|t| view::ago(t, now)),
                last_success_abs: row.ok_finished.map(view::absolute),
            })
        })
        .collect())
}

#[derive(Serialize)]
pub struct Health {
    /// `ok` when every host's last poll succeeded and is fresh, else `degraded`.
    status: &'static str,
    poll_interval_secs: u64,
    hosts: Vec<HostStatus>,
}

#[rocket::get("/healthz")]
pub async fn healthz(
    db: &State<Db>,
    hosts: &State<Arc<Hosts>>,
    settings: &State<Settings>,
) -> Result<Json<Health>, AppError> {
    let hosts = host_statuses(&db.0, hosts, settings).await?;
    let status = if hosts.iter().all(|h| h.status == "ok") { "ok" } else { "degraded" };
    Ok(Json(Health { status, poll_interval_secs: settings.poll_interval.as_secs(), hosts }))
}

// ---------------------------------------------------------------------------------------------
// The VM list

#[derive(Debug, Deserialize)]
struct VmListRow {
    uuid: String,
    name: String,
    host: String,
    state: String,
    state_since: i64,
    state_reason: String,
    raw_state: String,
    gone_at: Option<i64>,
    addresses: String,
    vcpus: Option<i64>,
    memory_max_kib: Option<i64>,
    memory_current_kib: Option<i64>,
    disk_capacity_bytes: Option<i64>,
    cpu_pct: Option<f64>,
    memory_used_kib: Option<i64>,
}

async fn vm_rows(pool: &SqlitePool) -> anyhow::Result<Vec<VmListRow>> {
    // sqlx's SQLite driver hands rows one by one from its worker thread (~8 µs each), which
    // made this query cost 9 ms for 1,000 VMs. SQLite builds the whole result as one JSON
    // document in well under that, so the list is fetched as a single value.
    let json: String = sqlx::query_scalar(
        "SELECT COALESCE(json_group_array(json_object(
                'uuid', v.uuid, 'name', v.name, 'host', h.name, 'state', v.state,
                'state_since', v.state_since, 'state_reason', v.state_reason,
                'raw_state', v.raw_state, 'gone_at', v.gone_at, 'addresses', v.addresses,
                'vcpus', c.vcpus, 'memory_max_kib', c.memory_max_kib,
                'memory_current_kib', c.memory_current_kib,
                'disk_capacity_bytes', c.disk_capacity_bytes, 'cpu_pct', s.cpu_pct,
                'memory_used_kib', s.memory_used_kib)), '[]')
         FROM vms v
         JOIN hosts h ON h.id = v.host_id
         LEFT JOIN vm_configs c ON c.id = v.config_id
         LEFT JOIN polls p ON p.id = h.last_ok_poll_id
         LEFT JOIN samples s ON s.vm_id = v.id AND s.ts = p.started_at",
    )
    .fetch_one(pool)
    .await?;
    Ok(serde_json::from_str(&json)?)
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

/// What the user asked for, after validation.
#[derive(Debug, Clone)]
struct Filters {
    q: String,
    /// A power state, or `gone` for VMs no longer on their host; None for all present VMs.
    state: Option<String>,
    host: Option<String>,
    sort: SortKey,
    desc: bool,
    /// Rows per page; None shows every row.
    per_page: Option<usize>,
}

/// Page sizes offered; the first is the default.
const PAGE_SIZES: [usize; 5] = [100, 50, 250, 500, 1000];

impl Filters {
    /// Builds the `/vms?...` link for these filters with sort and page changed.
    fn href(&self, sort: SortKey, desc: bool, page: usize) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        if !self.q.is_empty() {
            s.append_pair("q", &self.q);
        }
        if let Some(st) = &self.state {
            s.append_pair("state", st);
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
        let qs = s.finish();
        if qs.is_empty() {
            "/vms".into()
        } else {
            format!("/vms?{qs}")
        }
    }

    fn is_filtered(&self) -> bool {
        !self.q.is_empty() || self.state.is_some() || self.host.is_some()
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
struct IpView {
    text: String,
    title: String,
}

#[derive(Serialize)]
struct ActionView {
    value: &'static str,
    label: &'static str,
    /// Forced actions go through a confirmation page (a link, not a button).
    confirm_href: Option<String>,
}

#[derive(Serialize)]
struct VmView {
    /// `host/uuid`, the bulk form's value.
    key: String,
    actions: Vec<ActionView>,
    /// The power action in flight, in words.
    pending: Option<String>,
    audit_href: String,
    power_href: String,
    name: String,
    host: String,
    uuid: String,
    state: &'static str,
    state_label: &'static str,
    since: String,
    since_title: String,
    gone: bool,
    ips: Vec<IpView>,
    vcpus: String,
    memory: String,
    memory_title: String,
    disk: String,
    cpu: String,
}

#[derive(Serialize)]
struct Option_ {
    value: String,
    label: String,
    selected: bool,
}

#[derive(Serialize)]
struct Pager {
    page: usize,
    pages: usize,
    /// 1-based numbers of the first and last row shown.
    first: usize,
    last: usize,
    matched: usize,
    prev: Option<String>,
    next: Option<String>,
}

#[derive(Serialize)]
struct ListPage {
    title: &'static str,
    chrome: Chrome,
    /// This page's own URL, where power forms come back to.
    back: String,
    bulk_actions: Vec<ActionView>,
    hosts: Vec<HostStatus>,
    any_pending: bool,
    vms: Vec<VmView>,
    total: usize,
    columns: Vec<Column>,
    q: String,
    state_options: Vec<Option_>,
    host_options: Vec<Option_>,
    sort: &'static str,
    dir: &'static str,
    filtered: bool,
    pager: Pager,
    page_size_options: Vec<Option_>,
    clear_href: &'static str,
    notices: Vec<String>,
    empty: Option<String>,
    generated: String,
}

fn source_label(s: AddrSource) -> &'static str {
    match s {
        AddrSource::GuestAgent => "guest agent",
        AddrSource::DhcpLease => "DHCP lease",
        AddrSource::Arp => "ARP table",
        AddrSource::GuestAdditions => "guest additions",
    }
}

/// Parsed, sortable form of one row.
struct Entry {
    row: VmListRow,
    state: PowerState,
    ips: Vec<IpAddress>,
}

#[allow(clippy::too_many_arguments)] // one argument per query parameter
#[rocket::get("/vms?<q>&<state>&<host>&<sort>&<dir>&<page>&<per_page>")]
pub async fn vm_list(
    user: Viewer<'_>,
    flash: Option<FlashMessage<'_>>,
    db: &State<Db>,
    hosts: &State<Arc<Hosts>>,
    settings: &State<Settings>,
    q: Option<String>,
    state: Option<String>,
    host: Option<String>,
    sort: Option<String>,
    dir: Option<String>,
    page: Option<String>,
    per_page: Option<String>,
) -> Result<Template, AppError> {
    let (statuses, rows, pending) = tokio::try_join!(
        async { host_statuses(&db.0, hosts, settings).await.map_err(anyhow::Error::from) },
        vm_rows(&db.0),
        async { audit::pending_power(&db.0).await.map_err(anyhow::Error::from) }
    )?;
    let pending: std::collections::HashMap<(String, String), String> = pending
        .into_iter()
        .map(|p| {
            let label =
                PowerAction::parse(&p.action).map_or(p.action.as_str(), |a| a.label()).to_string();
            let by = p.user_name.unwrap_or_default();
            ((p.host_name, p.vm_uuid), format!("{label} requested by {by}, {}", p.status))
        })
        .collect();
    let operator = user.0.can(crate::auth::Role::Operator);
    let host_names: Vec<&str> = hosts.0.iter().map(|h| h.config.name.as_str()).collect();

    // Validate the parameters; anything wrong becomes a visible notice, never an error page.
    let mut notices = Vec::new();
    let mut q = q.unwrap_or_default().trim().to_string();
    if q.chars().count() > MAX_QUERY_LEN {
        q = q.chars().take(MAX_QUERY_LEN).collect();
        notices.push(format!("The search text was cut to {MAX_QUERY_LEN} characters."));
    }
    let state = match state.as_deref().map(str::trim) {
        None | Some("") | Some("all") => None,
        Some("gone") => Some("gone".to_string()),
        Some(s) => match PowerState::parse(s) {
            Some(p) => Some(p.as_str().to_string()),
            None => {
                notices.push(format!("Unknown state {s:?}: showing every state."));
                None
            }
        },
    };
    let host = match host.as_deref().map(str::trim) {
        None | Some("") | Some("all") => None,
        Some(h) if host_names.contains(&h) => Some(h.to_string()),
        Some(h) => {
            notices.push(format!("There is no host named {h:?}: showing every host."));
            None
        }
    };
    let sort_key = match sort.as_deref() {
        None | Some("") => SortKey::Name,
        Some(s) => SortKey::parse(s).unwrap_or_else(|| {
            notices.push(format!("Cannot sort by {s:?}: sorted by name."));
            SortKey::Name
        }),
    };
    let desc = match dir.as_deref() {
        None | Some("") | Some("asc") => false,
        Some("desc") => true,
        Some(d) => {
            notices.push(format!("Unknown sort direction {d:?}: sorted ascending."));
            false
        }
    };
    let per_page = match per_page.as_deref().map(str::trim) {
        None | Some("") => Some(PAGE_SIZES[0]),
        Some("all") => None,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if PAGE_SIZES.contains(&n) => Some(n),
            _ => {
                notices
                    .push(format!("Cannot show {n:?} rows per page: showing {}.", PAGE_SIZES[0]));
                Some(PAGE_SIZES[0])
            }
        },
    };
    let mut page = match page.as_deref().map(str::trim) {
        None | Some("") => 1,
        Some(p) => match p.parse::<usize>() {
            Ok(p) if p >= 1 => p,
            _ => {
                notices.push(format!("There is no page {p:?}: showing the first page."));
                1
            }
        },
    };
    let filters = Filters { q, state, host, sort: sort_key, desc, per_page };

    let now = now_ms();
    let needle = filters.q.to_lowercase();
    let mut entries: Vec<Entry> = rows
        .into_iter()
        .filter(|r| host_names.contains(&r.host.as_str()))
        .map(|row| Entry {
            state: PowerState::parse(&row.state).unwrap_or(PowerState::Unknown),
            ips: serde_json::from_str(&row.addresses).unwrap_or_default(),
            row,
        })
        .collect();
    let total = entries.iter().filter(|e| e.row.gone_at.is_none()).count();
    entries.retain(|e| {
        let gone = e.row.gone_at.is_some();
        let state_ok = match filters.state.as_deref() {
            None => !gone,
            Some("gone") => gone,
            Some(s) => !gone && e.state.as_str() == s,
        };
        let host_ok = filters.host.as_deref().is_none_or(|h| e.row.host == h);
        let text_ok = needle.is_empty()
            || e.row.name.to_lowercase().contains(&needle)
            || e.ips.iter().any(|ip| ip.addr.to_string().contains(&needle));
        state_ok && host_ok && text_ok
    });
    sort_entries(&mut entries, filters.sort, filters.desc);

    // Only the rows of the requested page are formatted and rendered.
    let matched = entries.len();
    let size = filters.per_page.unwrap_or(matched.max(1));
    let pages = matched.div_ceil(size).max(1);
    if page > pages {
        notices.push(format!("There are only {pages} page(s): showing the last one."));
        page = pages;
    }
    let first = (page - 1) * size;
    let back = filters.href(filters.sort, filters.desc, page);
    let vms: Vec<VmView> = entries
        .into_iter()
        .skip(first)
        .take(size)
        .map(|e| {
            let p = pending.get(&(e.row.host.clone(), e.row.uuid.clone())).cloned();
            vm_view(e, now, operator, p, &back)
        })
        .collect();
    let pager = Pager {
        page,
        pages,
        first: if matched == 0 { 0 } else { first + 1 },
        last: first + vms.len(),
        matched,
        prev: (page > 1).then(|| filters.href(filters.sort, filters.desc, page - 1)),
        next: (page < pages).then(|| filters.href(filters.sort, filters.desc, page + 1)),
    };
    let mut page_size_options: Vec<Option_> = PAGE_SIZES
        .iter()
        .map(|n| Option_ {
            value: n.to_string(),
            label: format!("{n} per page"),
            selected: filters.per_page == Some(*n),
        })
        .collect();
    page_size_options.push(Option_ {
        value: "all".into(),
        label: "all".into(),
        selected: filters.per_page.is_none(),
    });
    let empty = if !vms.is_empty() {
        None
    } else if filters.is_filtered() {
        Some("No VM matches these filters.".to_string())
    } else if statuses.iter().all(|h| h.status == "pending") {
        Some("Waiting for the first poll of each host…".to_string())
    } else if statuses.iter().all(|h| h.last_success_ms.is_none()) {
        Some("No host could be reached yet: see the errors above.".to_string())
    } else {
        Some("No VMs: the hosts that answered report none.".to_string())
    };

    let columns = SortKey::ALL
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
        .collect();
    let mut state_options = vec![Option_ {
        value: String::new(),
        label: "any state".into(),
        selected: filters.state.is_none(),
    }];
    state_options.extend(PowerState::ALL.iter().map(|p| Option_ {
        value: p.as_str().into(),
        label: p.label().into(),
        selected: filters.state.as_deref() == Some(p.as_str()),
    }));
    state_options.push(Option_ {
        value: "gone".into(),
        label: "gone from host".into(),
        selected: filters.state.as_deref() == Some("gone"),
    });
    let mut host_options = vec![Option_ {
        value: String::new(),
        label: "any host".into(),
        selected: filters.host.is_none(),
    }];
    host_options.extend(host_names.iter().map(|h| Option_ {
        value: h.to_string(),
        label: h.to_string(),
        selected: filters.host.as_deref() == Some(*h),
    }));

    Ok(Template::render(
        "inventory/list",
        ListPage {
            title: "Virtual machines",
            chrome: Chrome::new(user.0, flash, settings),
            bulk_actions: if operator {
                PowerAction::ALL
                    .iter()
                    .map(|a| ActionView { value: a.as_str(), label: a.label(), confirm_href: None })
                    .collect()
            } else {
                Vec::new()
            },
            back,
            // Refresh by itself while a host has no data yet or a power action is settling.
            any_pending: statuses.iter().any(|h| h.status == "pending") || !pending.is_empty(),
            hosts: statuses,
            vms,
            total,
            columns,
            q: filters.q.clone(),
            state_options,
            host_options,
            sort: filters.sort.as_str(),
            dir: if filters.desc { "desc" } else { "asc" },
            filtered: filters.is_filtered(),
            pager,
            page_size_options,
            clear_href: "/vms",
            notices,
            empty,
            generated: view::absolute(now),
        },
    ))
}

fn sort_entries(entries: &mut [Entry], key: SortKey, desc: bool) {
    // Missing values sort last in either direction; ties fall back to name, then host.
    fn opt<T: PartialOrd>(a: Option<T>, b: Option<T>, desc: bool) -> Ordering {
        match (a, b) {
            (Some(a), Some(b)) => {
                let o = a.partial_cmp(&b).unwrap_or(Ordering::Equal);
                if desc {
                    o.reverse()
                } else {
                    o
                }
            }
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    }
    let name_key = |e: &Entry| (e.row.name.to_lowercase(), e.row.host.clone());
    entries.sort_by(|a, b| {
        let primary = match key {
            SortKey::Name => Ordering::Equal,
            SortKey::Host => dir(a.row.host.cmp(&b.row.host), desc),
            SortKey::State => dir(a.state.cmp(&b.state), desc),
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

fn vm_view(e: Entry, now: i64, operator: bool, pending: Option<String>, back: &str) -> VmView {
    let r = e.row;
    let gone = r.gone_at.is_some();
    let power_href = format!("/vms/{}/{}/power", r.host, r.uuid);
    let actions = if operator && !gone && pending.is_none() {
        PowerAction::ALL
            .iter()
            .filter(|a| a.applies_to(e.state))
            .map(|a| ActionView {
                value: a.as_str(),
                label: a.label(),
                confirm_href: a.is_forced().then(|| {
                    let q = url::form_urlencoded::Serializer::new(String::new())
                        .append_pair("action", a.as_str())
                        .append_pair("back", back)
                        .finish();
                    format!("{power_href}/confirm?{q}")
                }),
            })
            .collect()
    } else {
        Vec::new()
    };
    let ips = e
        .ips
        .iter()
        .map(|ip| IpView {
            text: ip.addr.to_string(),
            title: format!(
                "{}/{} on {} (from the {})",
                ip.addr,
                ip.prefix,
                ip.mac,
                source_label(ip.source)
            ),
        })
        .collect();
    let memory_title = match (r.memory_current_kib, r.memory_used_kib) {
        (Some(cur), Some(used)) => format!(
            "{} assigned now, {} used by the VM process",
            view::bytes(cur.max(0) as u64 * 1024),
            view::bytes(used.max(0) as u64 * 1024)
        ),
        (Some(cur), None) => format!("{} assigned now", view::bytes(cur.max(0) as u64 * 1024)),
        _ => String::new(),
    };
    let (since, since_title) = match r.gone_at {
        Some(g) => {
            (format!("gone {}", view::ago(g, now)), format!("Last seen {}", view::absolute(g)))
        }
        None => (
            format!("for {}", view::duration_words(now - r.state_since)),
            format!(
                "{} since {} (hypervisor state: {}, reason: {})",
                e.state.label(),
                view::absolute(r.state_since),
                r.raw_state,
                r.state_reason
            ),
        ),
    };
    VmView {
        key: format!("{}/{}", r.host, r.uuid),
        actions,
        pending,
        audit_href: format!("/audit?vm={}", r.uuid),
        power_href,
        name: r.name,
        host: r.host,
        uuid: r.uuid,
        state: if gone { "gone" } else { e.state.as_str() },
        state_label: if gone { "gone" } else { e.state.label() },
        since,
        since_title,
        gone,
        ips,
        vcpus: r.vcpus.map_or_else(|| "–".into(), |v| v.to_string()),
        memory: r
            .memory_max_kib
            .map_or_else(|| "–".into(), |m| view::bytes(m.max(0) as u64 * 1024)),
        memory_title,
        disk: match r.disk_capacity_bytes {
            Some(d) if d > 0 => view::bytes(d as u64),
            _ => "–".into(),
        },
        cpu: match (r.cpu_pct, e.state) {
            (Some(c), _) if !gone => view::percent(c),
            _ => "–".into(),
        },
    }
}
