//! `GET /vms/<host>/<uuid>` (the VM page), `GET /vms/<host>/<uuid>/live` (its head: state,
//! pending request, buttons and latest figures, for `static/live.js`) and
//! `GET /vms/<host>/<uuid>.csv` (its history).

use std::time::Duration;

use rocket::request::{FlashMessage, FromParam};
use rocket::Route;
use rocket_dyn_templates::Template;
use serde::Serialize;

use super::model::{self, History, Span};
use super::range::{RangeChoice, RangeQuery, RANGES};
use super::snapshots::SnapshotSection;
use super::store::{self, VmRow};
use crate::alerts::store::pages::VmSection;
use crate::auth::Viewer;
use crate::backend::{IpAddress, VmConfig};
use crate::control::store as control;
use crate::db::now_ms;
use crate::domain::{HostName, Role, VmKey, VmUuid};
use crate::web::chart::{self, Point, Series, Unit};
use crate::web::console::ConsoleLink;
use crate::web::csv::{file_safe, Csv};
use crate::web::format as view;
use crate::web::live::{Fragment, IfNoneMatch, LiveHint, LiveTag};
use crate::web::power::{self, PowerMenu};
use crate::web::{App, AppError, Chrome, IpAddressView, Notices};

pub fn routes() -> Vec<Route> {
    rocket::routes![vm_page, vm_live, vm_csv]
}

/// The VM a path names; one vmdeck has never seen (or a malformed path) is a 404.
async fn find(
    pool: &sqlx::SqlitePool,
    host: Result<HostName, &str>,
    uuid: Result<VmUuid, &str>,
) -> Result<(VmKey, VmRow), AppError> {
    // Named as given, valid or not.
    let host_text = host.as_ref().map_or_else(|g| g.to_string(), HostName::to_string);
    let uuid_text = uuid.as_ref().map_or_else(|g| g.to_string(), VmUuid::to_string);
    let never_seen = AppError::NotFound(format!(
        "vmdeck has never seen a VM {uuid_text:?} on a host named {host_text:?}."
    ));
    let (Ok(host), Ok(uuid)) = (host, uuid) else { return Err(never_seen) };
    let key = VmKey::new(host, uuid);
    let row = store::vm(pool, &key).await?.ok_or(never_seen)?;
    Ok((key, row))
}

#[rocket::get("/vms/<host>/<uuid>?<range..>", rank = 2)]
async fn vm_page(
    user: Viewer<'_>,
    host: Result<HostName, &str>,
    uuid: Result<VmUuid, &str>,
    range: RangeQuery<'_>,
    app: App<'_>,
    flash: Option<FlashMessage<'_>>,
) -> Result<Template, AppError> {
    let (pool, settings) = (app.pool, app.settings);
    let (key, vm) = find(pool, host, uuid).await?;
    let range = range.read(now_ms());
    let history =
        model::load_history(pool, settings, vm.host_id, vm.id, range.start, range.end).await?;
    let versions = store::config_versions(pool, vm.id).await?;
    let addresses = store::address_history(pool, vm.id).await?;
    let present = store::snapshots(pool, vm.id).await?;
    let past = store::past_snapshots(pool, vm.id).await?;
    let head = Head::read(&app, &user, key, vm).await?;
    // Links to the snapshot forms: for operators, on a VM still on a host whose backend has
    // snapshots.
    let links = head.vm.gone_at.is_none()
        && head.acts_through.as_ref().is_some_and(|b| b.snapshot_caps().supported);
    let snapshots = SnapshotSection::build(&head.key, present, past, links, now_ms());
    let alerts = crate::alerts::store::pages::vm_section(
        pool,
        head.key.host.as_str(),
        &head.key.uuid.to_string(),
    )
    .await?;
    let loaded = Loaded { range, history, versions, addresses, head, snapshots, alerts };
    let page = VmPage::build(Chrome::new(user.0, flash, settings), loaded, settings.poll_interval);
    Ok(Template::render("history/vm", page))
}

/// The VM page's head (state, pending request, power buttons, latest figures), as
/// `static/live.js` refreshes it in place: 304 when nothing it shows changed since the tag in
/// `If-None-Match` (see `web::live`).
#[rocket::get("/vms/<host>/<uuid>/live")]
async fn vm_live(
    user: Viewer<'_>,
    host: Result<HostName, &str>,
    uuid: Result<VmUuid, &str>,
    app: App<'_>,
    seen: IfNoneMatch,
) -> Result<Fragment<Template>, AppError> {
    let (key, vm) = find(app.pool, host, uuid).await?;
    let head = Head::read(&app, &user, key, vm).await?;
    let etag = head.tag().etag();
    if seen.matches(&etag) {
        return Ok(Fragment::Unchanged(etag));
    }
    // The page's model without its history: the fragment shows only the head.
    let now = now_ms();
    let loaded = Loaded {
        range: RangeQuery::default().read(now),
        history: History::empty(),
        versions: Vec::new(),
        addresses: Vec::new(),
        head,
        snapshots: SnapshotSection::default(),
        alerts: VmSection::default(),
    };
    // No flash: the fragment must not take the message meant for the next page.
    let page =
        VmPage::build(Chrome::new(user.0, None, app.settings), loaded, app.settings.poll_interval);
    Ok(Fragment::Fresh(Template::render("history/vm_live", page), etag))
}

/// What the head of the VM page shows, read for the page and for its fragment alike.
struct Head {
    key: VmKey,
    vm: VmRow,
    pending: Option<control::PendingPower>,
    /// The VM's latest power request, if it failed or went unconfirmed lately.
    power_failure: Option<control::RecentFailure>,
    /// The backend of the VM's host, when the user may act and the host is still configured
    /// (while a request is pending, only what overrules it is offered).
    acts_through: Option<std::sync::Arc<dyn crate::backend::Backend>>,
    /// From the host's last successful poll: (time, CPU %, memory used in KiB).
    figures: Option<(i64, Option<f64>, Option<i64>)>,
    /// The browser console's link or why there is none; None for a VM gone from its host or
    /// on a host no longer configured.
    console: Option<ConsoleLink>,
}

impl Head {
    async fn read(
        app: &App<'_>,
        user: &Viewer<'_>,
        key: VmKey,
        vm: VmRow,
    ) -> Result<Head, AppError> {
        let pending = control::pending_for(app.pool, &key).await?;
        let since = now_ms() - control::RECENT_FAILURE_MS;
        let power_failure = control::recent_failure_for(app.pool, &key, since).await?;
        let figures = store::latest_figures(app.pool, vm.host_id, vm.id).await?;
        let acts_through = app
            .hosts
            .get(key.host.as_str())
            .filter(|_| user.0.can(Role::Operator))
            .map(|h| h.backend.clone());
        let console = match app.hosts.get(key.host.as_str()) {
            Some(h) if vm.gone_at.is_none() => Some(ConsoleLink::new(
                &key,
                h.config.driver_name(),
                vm.state,
                vm.graphics.as_deref(),
            )),
            _ => None,
        };
        Ok(Head { key, vm, pending, power_failure, acts_through, figures, console })
    }

    /// Everything the head shows depends on, apart from the clock.
    fn tag(&self) -> LiveTag {
        let v = &self.vm;
        LiveTag::new("vm")
            .with((&v.name, v.state.as_str(), &v.raw_state, &v.state_reason, v.state_since))
            .with((v.gone_at, &v.addresses, &v.body, &v.graphics))
            .with(self.pending.as_ref().map(|p| (p.id, p.status.as_str())))
            .with(self.power_failure.as_ref().map(|f| f.status.as_str()))
            .with(self.acts_through.is_some())
            .with(self.figures.map(|(ts, cpu, mem)| (ts, cpu.map(f64::to_bits), mem)))
    }
}

#[derive(Serialize)]
struct ChangeView {
    when: String,
    changes: Vec<String>,
}

#[derive(Serialize)]
struct IpHistoryView {
    addr: String,
    mac: String,
    source: &'static str,
    from: String,
    to: String,
}

#[derive(Serialize)]
struct ChartView {
    title: &'static str,
    svg: String,
}

#[derive(Serialize)]
struct RangeOption {
    key: &'static str,
    label: &'static str,
    href: String,
    selected: bool,
}

#[derive(Serialize)]
struct Figures {
    cpu: String,
    memory_used: String,
    at: String,
}

#[derive(Serialize)]
struct DiskView {
    target: String,
    device: String,
    bus: String,
    source: String,
    capacity: String,
}

#[derive(Serialize)]
struct VmPage {
    title: String,
    chrome: Chrome,
    host: String,
    uuid: String,
    name: String,
    gone: Option<String>,
    state: &'static str,
    state_label: String,
    since: String,
    raw_state: String,
    reason: String,
    first_seen: String,
    config: Option<VmConfig>,
    memory: String,
    memory_current: String,
    disks: Vec<DiskView>,
    ips: Vec<IpAddressView>,
    actions: PowerMenu,
    pending: Option<String>,
    /// The VM's latest power request if it failed lately, in words.
    power_failure: Option<String>,
    /// The latest figures, from the host's last successful poll.
    figures: Option<Figures>,
    live: LiveHint,
    generated: String,
    ranges: Vec<RangeOption>,
    range_key: String,
    range_label: String,
    from_text: String,
    to_text: String,
    /// The custom range's ends as a `datetime-local` input holds them (empty if unreadable).
    from_input: String,
    to_input: String,
    /// Preset custom ranges (today, last month…) as links: (label, href).
    presets: Vec<(&'static str, String)>,
    csv_href: String,
    notices: Notices,
    charts: Vec<ChartView>,
    timeline: Vec<Span>,
    timeline_svg: String,
    uptime: Option<String>,
    samples: i64,
    source: String,
    max_points: i64,
    changes: Vec<ChangeView>,
    ip_history: Vec<IpHistoryView>,
    audit_href: String,
    power_href: String,
    /// The browser console's link, or why there is none.
    console: Option<ConsoleLink>,
    back: String,
    snapshots: SnapshotSection,
    /// The VM's open alerts and its last ended ones (`alerts::store::pages`).
    alerts: VmSection,
}

/// Everything the handler loaded for the page.
struct Loaded {
    range: RangeChoice,
    history: History,
    versions: Vec<(i64, String)>,
    addresses: Vec<store::AddressRow>,
    head: Head,
    snapshots: SnapshotSection,
    alerts: VmSection,
}

impl VmPage {
    fn build(chrome: Chrome, l: Loaded, poll_interval: Duration) -> VmPage {
        let Loaded { range, history, versions, addresses, head, snapshots, alerts } = l;
        let Head { key, vm, pending, power_failure, acts_through, figures, console } = head;
        let pending_action = pending.as_ref().map(|p| p.action);
        let pending = pending.map(|p| p.describe());
        let power_failure = power_failure.map(|f| f.describe());
        let config: Option<VmConfig> =
            vm.body.as_deref().and_then(|b| serde_json::from_str(b).ok());
        let gone = vm.gone_at.is_some();
        let back = key.href();
        // Nothing to watch on the page of a VM gone from its host, unless a request settles.
        let live = LiveHint::new(format!("{back}/live"), pending.is_some(), !gone, poll_interval);
        let actions = match acts_through {
            Some(backend) if !gone => {
                power::menu(&key, &*backend, vm.state, &vm.raw_state, pending_action, &back)
            }
            _ => PowerMenu::default(),
        };
        let ips: Vec<IpAddress> = serde_json::from_str(&vm.addresses).unwrap_or_default();
        let csv_query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("range", &range.chosen)
            .extend_pairs(
                [("from", &range.from_text), ("to", &range.to_text)]
                    .into_iter()
                    .filter(|(_, v)| !v.is_empty()),
            )
            .finish();
        VmPage {
            title: vm.name.clone(),
            chrome,
            host: key.host.to_string(),
            uuid: key.uuid.to_string(),
            gone: vm.gone_at.map(view::absolute),
            state: if gone { "gone" } else { vm.state.as_str() },
            state_label: if gone {
                "gone".into()
            } else {
                view::state_words(vm.state, &vm.raw_state, &vm.state_reason)
            },
            since: view::absolute(vm.state_since),
            raw_state: vm.raw_state,
            reason: vm.state_reason,
            first_seen: view::absolute(vm.first_seen),
            memory: config.as_ref().map_or("–".into(), |c| view::bytes(c.memory_max_kib * 1024)),
            memory_current: config
                .as_ref()
                .map_or("–".into(), |c| view::bytes(c.memory_current_kib * 1024)),
            disks: config.as_ref().map(disks).unwrap_or_default(),
            charts: charts(&history, &range, config.as_ref()),
            config,
            ips: ips.iter().map(IpAddressView::from).collect(),
            actions,
            power_failure: if pending.is_some() { None } else { power_failure },
            pending,
            figures: figures.map(|(ts, cpu, mem)| Figures {
                cpu: cpu.map_or_else(|| "–".into(), view::percent),
                memory_used: mem
                    .map_or_else(|| "–".into(), |m| view::bytes(m.max(0) as u64 * 1024)),
                at: view::absolute(ts),
            }),
            live,
            generated: view::absolute(now_ms()),
            ranges: RANGES
                .iter()
                .map(|(k, l, _)| RangeOption {
                    key: k,
                    label: l,
                    href: format!("{back}?range={k}"),
                    selected: *k == range.chosen,
                })
                .collect(),
            csv_href: format!("{back}.csv?{csv_query}"),
            range_key: range.chosen,
            range_label: range.label,
            from_input: input_value(&range.from_text),
            to_input: input_value(&range.to_text),
            presets: view::presets(crate::db::now_ms())
                .into_iter()
                .map(|p| {
                    let to = if p.to.is_empty() { String::new() } else { format!("&to={}", p.to) };
                    (p.label, format!("{back}?range=custom&from={}{to}", p.from))
                })
                .collect(),
            from_text: range.from_text,
            to_text: range.to_text,
            notices: range.notices,
            timeline_svg: model::timeline_svg(&history.timeline),
            timeline: history.timeline,
            uptime: history.uptime.map(|u| format!("{u:.2} %")),
            samples: history.samples,
            source: history.source,
            max_points: model::MAX_POINTS,
            changes: changes(versions),
            ip_history: addresses
                .into_iter()
                .map(|a| IpHistoryView {
                    addr: a.addr,
                    mac: a.mac,
                    source: a.source.label(),
                    from: view::absolute(a.first_seen),
                    to: a.ended_at.map_or_else(|| "now".into(), view::absolute),
                })
                .collect(),
            audit_href: format!("/audit?vm={}", key.uuid),
            power_href: power::power_href(&key),
            console,
            back,
            snapshots,
            alerts,
            name: vm.name,
        }
    }
}

fn disks(c: &VmConfig) -> Vec<DiskView> {
    c.disks
        .iter()
        .map(|d| DiskView {
            target: d.target.clone(),
            device: d.device.clone(),
            bus: d.bus.clone().unwrap_or_default(),
            source: d.source.clone().unwrap_or_else(|| "(empty)".into()),
            capacity: d.capacity_bytes.map_or("–".into(), view::bytes),
        })
        .collect()
}

/// Configuration changes in words, newest first.
fn changes(versions: Vec<(i64, String)>) -> Vec<ChangeView> {
    let parsed: Vec<(i64, Option<VmConfig>)> =
        versions.into_iter().map(|(t, b)| (t, serde_json::from_str(&b).ok())).collect();
    let mut changes: Vec<ChangeView> = parsed
        .windows(2)
        .filter_map(|w| match (&w[0].1, &w[1].1) {
            (Some(a), Some(b)) => Some(ChangeView {
                when: view::absolute(w[1].0),
                changes: model::describe_changes(a, b),
            }),
            _ => None,
        })
        .collect();
    changes.reverse();
    changes
}

/// The four charts: CPU, memory against the memory assigned, disk and network rates.
fn charts(h: &History, r: &RangeChoice, config: Option<&VmConfig>) -> Vec<ChartView> {
    let [cpu, mem, rd, wr, rx, tx] = &h.series;
    let allocated = config.map(|c| c.memory_current_kib as f64 * 1024.0);
    let one = |name, class, points| Series { name, class, points };
    vec![
        ChartView {
            title: "CPU (% of the VM's vCPUs)",
            svg: chart::render(
                "CPU",
                Unit::Percent,
                r.start,
                r.end,
                &[one("CPU", "s1", cpu)],
                None,
            ),
        },
        ChartView {
            title: "Memory used (against the memory assigned)",
            svg: chart::render(
                "Memory",
                Unit::Bytes,
                r.start,
                r.end,
                &[one("used", "s1", mem)],
                allocated,
            ),
        },
        ChartView {
            title: "Disk read / write (bytes/s)",
            svg: chart::render(
                "Disk",
                Unit::BytesPerSec,
                r.start,
                r.end,
                &[one("read", "s1", rd), one("write", "s2", wr)],
                None,
            ),
        },
        ChartView {
            title: "Network received / sent (bytes/s)",
            svg: chart::render(
                "Network",
                Unit::BytesPerSec,
                r.start,
                r.end,
                &[one("received", "s1", rx), one("sent", "s2", tx)],
                None,
            ),
        },
    ]
}

/// A `<uuid>.csv` path segment; anything else does not match, so the page route gets it.
struct CsvFile<'r>(Result<VmUuid, &'r str>);

impl<'r> FromParam<'r> for CsvFile<'r> {
    type Error = ();

    fn from_param(param: &'r str) -> Result<Self, ()> {
        let uuid = param.strip_suffix(".csv").ok_or(())?;
        Ok(CsvFile(VmUuid::from_param(uuid)))
    }
}

/// The same history as the page's charts, one row per point.
#[rocket::get("/vms/<host>/<file>?<range..>", rank = 1)]
async fn vm_csv(
    _user: Viewer<'_>,
    host: Result<HostName, &str>,
    file: CsvFile<'_>,
    range: RangeQuery<'_>,
    app: App<'_>,
) -> Result<Csv, AppError> {
    let (pool, settings) = (app.pool, app.settings);
    let (_, vm) = find(pool, host, file.0).await?;
    let r = range.read(now_ms());
    let h = model::load_history(pool, settings, vm.host_id, vm.id, r.start, r.end).await?;
    let mut header = vec!["time_utc".to_string(), "samples".to_string()];
    for m in [
        "cpu_pct",
        "memory_used_bytes",
        "disk_read_bytes_per_s",
        "disk_write_bytes_per_s",
        "net_rx_bytes_per_s",
        "net_tx_bytes_per_s",
    ] {
        for k in ["avg", "min", "max"] {
            header.push(format!("{m}_{k}"));
        }
    }
    let rows = (0..h.series[0].len()).filter_map(move |i| {
        let points: Vec<Option<Point>> = h.series.iter().map(|s| s[i]).collect();
        let ts = points.iter().flatten().map(|p| p.ts).next()?;
        let n = points.iter().flatten().map(|p| p.n).max().unwrap_or(0);
        let mut row = vec![view::absolute(ts), n.to_string()];
        for p in &points {
            match p {
                Some(p) => row.extend([
                    format!("{:.3}", p.avg),
                    format!("{:.3}", p.min),
                    format!("{:.3}", p.max),
                ]),
                None => row.extend([String::new(), String::new(), String::new()]),
            }
        }
        Some(row)
    });
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    Ok(Csv::build(&format!("vmdeck-{}-history.csv", file_safe(&vm.name)), &header, rows))
}

/// A typed time as a `datetime-local` input holds it (`YYYY-MM-DDTHH:MM`, UTC): the input
/// drops any other text, so an unreadable one shows empty (the notice quotes it).
fn input_value(text: &str) -> String {
    crate::domain::time::parse_time(text, false).map(view::input_time).unwrap_or_default()
}
