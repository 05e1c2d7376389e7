//! The VM list's table rows, as HTML. Rendered here with maud (compiled, escaped) rather than in
//! the Tera template: Tera took about 0.1 ms a row (a page of every VM of 1,000 cost 120 ms),
//! maud takes a few microseconds. The rest of the page stays in `inventory/list.html.tera`.
//!
//! A row depends only on its VM, the viewer's role and the VM's pending action: its power
//! buttons submit the page's one `#row-action` form (which carries the CSRF token and the way
//! back) through `formaction`, so no row repeats the session's token.
//!
//! Power actions: one primary button, then a "More" menu (`<details>`, no script) of the
//! others in [`PowerAction::ALL`]'s fixed order, with the VM's audit link; what the VM's
//! hypervisor would refuse (`Backend::offers`) is disabled with the reason as a tooltip and as
//! hidden text. The VM page shows the same in Tera (`power_buttons` in `macros.html.tera`).
//! A row thus has four tab stops: its box, its name, its primary action and "More" (five
//! for a running VM with a VNC display: its "Console" link, for every role).

use maud::{html, Markup};

use super::snapshot::Entry;
use crate::domain::{Offer, PowerAction, RequestAction, VmKey};
use crate::hosts::Hosts;
use crate::web::console;
use crate::web::format as view;
use crate::web::power::listed;
use crate::web::IpAddressView;

/// What every row of one response shares.
pub struct RowContext<'a> {
    /// Operators and admins get a selection box and power buttons.
    pub operator: bool,
    /// The configured hosts, whose backends decide which actions each VM is offered.
    pub hosts: &'a Hosts,
    pub now: i64,
    /// The pending power request of a VM: in words, and its action.
    pub pending: &'a dyn Fn(&Entry) -> Option<(String, RequestAction)>,
    /// The VM's latest power request if it failed lately, in words (the form answered before
    /// the host did, so this is where the host's refusal shows).
    pub failed: &'a dyn Fn(&Entry) -> Option<String>,
}

/// The `<tr>` of each entry, in order.
pub fn render<'e>(entries: impl Iterator<Item = &'e Entry>, ctx: &RowContext<'_>) -> String {
    let mut out = String::new();
    for e in entries {
        out.push_str(&row(e, ctx).into_string());
    }
    out
}

fn row(e: &Entry, ctx: &RowContext<'_>) -> Markup {
    let r = &e.row;
    let gone = r.gone_at.is_some();
    let key = format!("{}/{}", r.host, r.uuid);
    let (pending, pending_action) = (ctx.pending)(e).unzip();
    let failed = if pending.is_none() { (ctx.failed)(e) } else { None };
    let (since, since_title) = match r.gone_at {
        Some(g) => {
            (format!("gone {}", view::ago(g, ctx.now)), format!("Last seen {}", view::absolute(g)))
        }
        None => (
            format!("for {}", view::duration_words(ctx.now - r.state_since)),
            format!(
                "{} since {} (hypervisor state: {}, reason: {})",
                r.state.label(),
                view::absolute(r.state_since),
                r.raw_state,
                r.state_reason
            ),
        ),
    };
    let (state, state_label) = if gone {
        ("gone", "gone".to_string())
    } else {
        (r.state.as_str(), view::state_words(r.state, &r.raw_state, &r.state_reason))
    };
    // Each action with the hypervisor's answer, in the menu's order; none for viewers, gone
    // VMs and VMs of a host no longer configured. While a request is pending, only what may
    // overrule it (power off over a stuck shutdown).
    let offers: Vec<(PowerAction, Offer)> = match (VmKey::parse(&key), ctx.hosts.get(&r.host)) {
        (Ok(_), Some(host)) if ctx.operator && !gone => PowerAction::ALL
            .into_iter()
            .map(|a| (a, host.backend.offers(a, r.state, &r.raw_state)))
            .filter(|(a, offer)| listed(*a, offer))
            .filter(|(a, offer)| {
                pending_action.is_none_or(|p| offer.allowed() && p.overruled_by(*a))
            })
            .collect(),
        _ => Vec::new(),
    };
    let primary = PowerAction::primary(|a| offers.iter().any(|(o, f)| *o == a && f.allowed()));
    let power_href = format!("/vms/{key}/power");
    let audit_href = format!("/audit?vm={}", r.uuid);
    html! {
        tr.vm.gone[gone] data-uuid=(r.uuid) {
            @if ctx.operator {
                td.col-select {
                    @if !gone {
                        input type="checkbox" name="vm" value=(key) form="bulk"
                            aria-label={ "select " (r.name) };
                    }
                }
            }
            td.col-name title=(r.uuid) { a href={ "/vms/" (key) } { (r.name) } }
            td.col-host { (r.host) }
            td.col-state {
                span class={ "badge state-" (state) } { (state_label) }
                " "
                span.since title=(since_title) { (since) }
                @if let Some(p) = &pending { span.pending { "⏳ " (p) } }
                @if let Some(f) = &failed { span.power-failed { "⚠ " (f) } }
            }
            td.col-ip {
                @for ip in e.ips.iter().map(IpAddressView::from) {
                    span.ip title=(ip.title) { (ip.text) }
                }
            }
            td.col-vcpus.num { (r.vcpus.map_or_else(|| "–".into(), |v| v.to_string())) }
            td.col-memory.num title=(memory_title(e)) {
                (r.memory_max_kib.map_or_else(|| "–".into(), |m| view::bytes(m.max(0) as u64 * 1024)))
            }
            td.col-disk.num {
                @match r.disk_capacity_bytes {
                    Some(d) if d > 0 => (view::bytes(d as u64)),
                    _ => "–",
                }
            }
            td.col-cpu.num {
                @match r.cpu_pct {
                    Some(c) if !gone => (view::percent(c)),
                    _ => "–",
                }
            }
            (snapshots_cell(e, ctx.now))
            td.col-actions {
                // Every role: a viewer's console is view-only.
                @if !gone && console::offered(r.state, r.graphics.as_deref()) {
                    a.console href={ "/vms/" (key) "/console" } { "Console" }
                    " "
                }
                @if offers.is_empty() {
                    a.audit-link href=(audit_href) title="Audit entries of this VM" { "audit" }
                } @else {
                    @if let Some(a) = primary { (action_button(a, &power_href, true)) }
                    details.actions {
                        summary { "More" span.sr { " actions for " (r.name) } }
                        div.menu {
                            @for (a, offer) in &offers {
                                @match offer {
                                    _ if Some(*a) == primary => {}
                                    Offer::Allowed => (action_button(*a, &power_href, false)),
                                    Offer::Unavailable(why) => {
                                        @let why = why.short();
                                        button disabled value=(a.as_str()) title=(why) {
                                            (a.label()) span.sr { " (unavailable: " (why) ")" }
                                        }
                                    }
                                }
                            }
                            a.audit-link href=(audit_href) { "Audit entries" }
                        }
                    }
                }
            }
        }
    }
}

/// A button that submits the page's `#row-action` form to this VM's power route. Forced
/// actions come back from the POST as a redirect to their confirmation page, so they are
/// buttons like the others.
fn action_button(a: PowerAction, power_href: &str, primary: bool) -> Markup {
    // Buttons are styled as such without a class, and submit by default: a row carries up to
    // nine of them, so every attribute counts (the whole list is one page at 1,000 VMs).
    let class = match (a.is_forced(), primary) {
        (true, true) => Some("danger primary"),
        (true, false) => Some("danger"),
        (false, true) => Some("primary"),
        (false, false) => None,
    };
    html! {
        button form="row-action" formaction=(power_href) name="action" value=(a.as_str())
            class=[class] {
            (a.label()) @if a.is_forced() { "…" }
        }
    }
}

/// The snapshot count, with the oldest one's age beside it and its time as a tooltip.
fn snapshots_cell(e: &Entry, now: i64) -> Markup {
    let r = &e.row;
    html! {
        td.col-snapshots.num {
            @if r.gone_at.is_some() { "–" }
            @else if !r.snapshots_read {
                span title="Not read yet (or this host's driver has no snapshots)" { "–" }
            }
            @else {
                (r.snapshot_count)
                @if let (true, Some(oldest)) = (r.snapshot_count > 0, r.snapshot_oldest) {
                    " "
                    span.since title={ "Oldest snapshot taken " (view::absolute(oldest)) } {
                        "oldest " (view::duration_words(now - oldest))
                    }
                }
            }
        }
    }
}

fn memory_title(e: &Entry) -> String {
    let kib = |k: i64| view::bytes(k.max(0) as u64 * 1024);
    match (e.row.memory_current_kib, e.row.memory_used_kib) {
        (Some(cur), Some(used)) => {
            format!("{} assigned now, {} used by the VM process", kib(cur), kib(used))
        }
        (Some(cur), None) => format!("{} assigned now", kib(cur)),
        _ => String::new(),
    }
}
