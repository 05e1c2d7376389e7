//! Which power actions a VM is offered, and how: against the breadth lab (libvirt's test
//! driver holds a crashed and a pmsuspended domain), one primary action per state, the others
//! in one fixed order in a "More" menu, those the hypervisor would refuse disabled with the
//! reason, and a request for one of them refused in words before anything is sent. The
//! VirtualBox states (aborted, guru meditation) are in virtualbox.rs, the menu in a real
//! browser in browser_list.rs.

use vmdeck::backend::PowerAction;

use crate::support::app::{breadth_app, unescape, uuid_of};
use crate::support::audit::{power_entries, settled_power};

/// One action control of a VM as a page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub action: String,
    pub primary: bool,
    pub disabled: bool,
    /// Inside the "More" menu (hidden until it is opened).
    pub in_menu: bool,
    /// The tooltip: the reason, on a disabled one.
    pub title: Option<String>,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

/// The action controls (buttons, and the VM page's confirmation links) in an HTML fragment, in
/// document order.
pub fn actions_in(html: &str) -> Vec<Shown> {
    let menu_at = html.find("class=\"menu\"").unwrap_or(usize::MAX);
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = ["<button", "<a "].iter().filter_map(|t| html[at..].find(t)).min() {
        let start = at + i;
        let end = html[start..].find('>').map_or(html.len(), |e| start + e);
        let tag = &html[start..end];
        at = end;
        // The list's buttons name their action in `value`; the VM page's links in
        // `data-action`.
        let Some(action) = attr(tag, "data-action").or_else(|| attr(tag, "value")) else {
            continue;
        };
        let class = attr(tag, "class").unwrap_or_default();
        out.push(Shown {
            action,
            primary: class.split(' ').any(|c| c == "primary"),
            disabled: tag.contains(" disabled"),
            in_menu: start > menu_at,
            title: attr(tag, "title"),
        });
    }
    out
}

/// The `<tr>` of the VM with this UUID in a list page.
pub fn row<'a>(html: &'a str, uuid: &str) -> &'a str {
    let start =
        html.find(&format!("data-uuid=\"{uuid}\"")).unwrap_or_else(|| panic!("no row for {uuid}"));
    let end = html[start..].find("</tr>").unwrap() + start;
    &html[start..end]
}

/// The primary action, the actions the menu offers, and those it shows disabled.
pub fn offered(shown: &[Shown]) -> (Option<String>, Vec<String>, Vec<String>) {
    let primary: Vec<_> = shown.iter().filter(|s| s.primary).collect();
    assert!(primary.len() <= 1, "one primary action at most: {shown:?}");
    let pick = |disabled: bool| {
        shown
            .iter()
            .filter(|s| s.in_menu && s.disabled == disabled)
            .map(|s| s.action.clone())
            .collect()
    };
    (primary.first().map(|s| s.action.clone()), pick(false), pick(true))
}

/// The menu lists every action but the primary one, each once, in `PowerAction::ALL`'s order;
/// Wake up only where it is offered.
pub fn assert_fixed_order(shown: &[Shown], what: &str) {
    let order: Vec<&str> = PowerAction::ALL.iter().map(|a| a.as_str()).collect();
    let menu: Vec<&str> = shown.iter().filter(|s| s.in_menu).map(|s| s.action.as_str()).collect();
    let primary = shown.iter().find(|s| s.primary).map(|s| s.action.as_str());
    let wake_offered = shown.iter().any(|s| s.action == "wake_up" && !s.disabled);
    let expected: Vec<&str> = order
        .iter()
        .copied()
        .filter(|a| Some(*a) != primary && (*a != "wake_up" || wake_offered))
        .collect();
    assert_eq!(menu, expected, "{what}: the menu in the fixed order, without the primary");
    assert!(shown.iter().all(|s| s.in_menu != s.primary), "{what}: the primary is not in the menu");
}

/// What a keyboard user tabs through in a row: everything focusable outside the closed menu.
fn tab_stops(row: &str) -> usize {
    let outside = &row[..row.find("class=\"menu\"").unwrap_or(row.len())];
    let buttons = outside.matches("<button").count() - outside.matches(" disabled").count();
    outside.matches("<input").count()
        + outside.matches("<a ").count()
        + outside.matches("<summary").count()
        + buttons
}

#[tokio::test]
async fn each_row_puts_its_states_action_first_and_the_others_in_one_order_in_a_menu() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    let (_, html) = op.get("/vms").await;
    // (VM, libvirt state, its primary action, the other actions it offers)
    let table: [(&str, &str, &str, &[&str]); 7] = [
        ("br-running", "running", "shutdown", &["reboot", "pause", "save", "reset", "power_off"]),
        ("br-blocked", "blocked", "shutdown", &["reboot", "pause", "save", "reset", "power_off"]),
        ("br-shutoff", "shutoff", "start", &[]),
        ("br-paused", "paused", "resume", &["reset", "power_off"]),
        ("br-shutdown", "shutdown (in transition)", "power_off", &[]),
        ("br-crashed", "crashed", "power_off", &[]),
        ("br-pmsuspended", "pmsuspended", "wake_up", &["power_off"]),
    ];
    for (name, state, primary, others) in table {
        let row = row(&html, &uuid_of(&app, name).await);
        let shown = actions_in(row);
        let (first, menu, _) = offered(&shown);
        assert_eq!(first.as_deref(), Some(primary), "{name} ({state}): primary action");
        assert_eq!(menu, others, "{name} ({state}): what the menu offers");
        assert_fixed_order(&shown, name);
        assert!(row.contains("<details class=\"actions\"><summary>More"), "{name}: a menu");
        // A running or paused VM with a VNC display (br-running, br-paused) also has its
        // Console link.
        let console = usize::from(row.contains("/console\""));
        assert_eq!(
            tab_stops(row),
            4 + console,
            "{name}: box, name, primary action and menu (and Console) are the row's tab stops"
        );
        for s in shown.iter().filter(|s| s.disabled) {
            let title = s.title.as_deref().unwrap_or_default();
            assert!(!title.is_empty(), "{name}: disabled {} says why on hover", s.action);
            assert!(
                unescape(row).contains(&format!("(unavailable: {title})")),
                "{name}: and to screen readers and keyboard users, as hidden text"
            );
        }
    }
}

#[tokio::test]
async fn a_crashed_vm_is_powered_off_then_started_and_a_forced_start_is_refused_in_words() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    let uuid = uuid_of(&app, "br-crashed").await;
    let (_, html) = op.get("/vms").await;
    let shown = actions_in(row(&html, &uuid));
    let start = shown.iter().find(|s| s.action == "start").expect("Start is listed");
    assert!(start.disabled, "a crashed libvirt domain cannot be started: {shown:?}");
    assert!(
        start.title.as_deref().unwrap_or_default().contains("power it off first, then start it"),
        "{start:?}"
    );

    // Posted anyway (an old page, a hand-made form): refused before anything is sent.
    let res = op.post(&format!("/vms/lab/{uuid}/power"), &[("action", "start")]).await;
    assert_eq!(res.status().as_u16(), 303);
    let flash = op.flash_at("/vms").await;
    assert!(
        flash.contains("Start is not possible for br-crashed")
            && flash.contains("power it off first, then start it"),
        "flash: {flash}"
    );
    assert!(!flash.contains("already active"), "not libvirt's raw words: {flash}");
    let entries = power_entries(&app, &uuid).await;
    assert_eq!((entries.len(), entries[0].0.as_str(), entries[0].2), (1, "refused", None));

    // In bulk, the same decision per VM: the crashed one refused in words, the other started.
    let shutoff = uuid_of(&app, "br-shutoff").await;
    let (a, b) = (format!("lab/{uuid}"), format!("lab/{shutoff}"));
    op.post("/vms/power", &[("action", "start"), ("vm", &a), ("vm", &b)]).await;
    let flash = op.flash_at("/vms").await;
    assert!(
        flash.contains("1 requested (br-shutoff)")
            && flash.contains("br-crashed: Start is not possible for br-crashed")
            && flash.contains("power it off first"),
        "flash: {flash}"
    );
    assert_eq!(power_entries(&app, &uuid).await.len(), 2, "the bulk refusal is audited too");

    // Power off, then start: what the refusal said to do works.
    op.post(&format!("/vms/lab/{uuid}/power"), &[("action", "power_off"), ("confirm", "yes")])
        .await;
    assert_eq!(settled_power(&app, &uuid).await.0, "confirmed");
    let (_, html) = op.get("/vms").await;
    assert_eq!(offered(&actions_in(row(&html, &uuid))).0.as_deref(), Some("start"));
    op.post(&format!("/vms/lab/{uuid}/power"), &[("action", "start")]).await;
    assert_eq!(settled_power(&app, &uuid).await.0, "confirmed");
}

#[tokio::test]
async fn a_guest_that_suspended_itself_offers_wake_up_and_power_off_only() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    let uuid = uuid_of(&app, "br-pmsuspended").await;
    let (_, html) = op.get("/vms").await;
    let (primary, menu, disabled) = offered(&actions_in(row(&html, &uuid)));
    assert_eq!((primary.as_deref(), menu), (Some("wake_up"), vec!["power_off".to_string()]));
    assert!(disabled.contains(&"start".into()) && disabled.contains(&"resume".into()));

    let res = op.post(&format!("/vms/lab/{uuid}/power"), &[("action", "resume")]).await;
    assert_eq!(res.status().as_u16(), 303);
    let flash = op.flash_at("/vms").await;
    assert!(flash.contains("The guest suspended itself: wake it up"), "flash: {flash}");
    assert!(!flash.contains("not paused"), "not libvirt's raw words: {flash}");

    // libvirt's test driver has no virDomainPMWakeup (QEMU has): sent, and the failure says
    // what it means.
    op.post(&format!("/vms/lab/{uuid}/power"), &[("action", "wake_up")]).await;
    let (status, error, _) = settled_power(&app, &uuid).await;
    let error = error.unwrap_or_default();
    assert_eq!(status, "failed");
    assert!(
        error.starts_with(
            "Not possible on this host: this host's libvirt driver cannot wake up a VM"
        ),
        "error: {error}"
    );
}

#[tokio::test]
async fn a_start_refused_because_the_page_was_out_of_date_says_so_in_words() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    let uuid = uuid_of(&app, "br-running").await;
    // vmdeck last saw it shut off (another console started it since).
    sqlx::query("UPDATE vms SET state = 'shut_off', raw_state = 'shutoff' WHERE uuid = ?")
        .bind(&uuid)
        .execute(&app.pool)
        .await
        .unwrap();
    op.post(&format!("/vms/lab/{uuid}/power"), &[("action", "start")]).await;
    let (status, error, _) = settled_power(&app, &uuid).await;
    let error = error.unwrap_or_default();
    assert_eq!(status, "failed");
    assert_eq!(
        error,
        "The hypervisor refused: the VM is already running (its state is running). Refresh the page to see the VM's current state.",
        "libvirt said only \"Domain is already active\""
    );
}

#[tokio::test]
async fn the_vm_page_shows_the_same_primary_action_and_menu() {
    let app = breadth_app().await;
    let op = app.session("operator").await;
    for (name, primary) in [("br-paused", "resume"), ("br-crashed", "power_off")] {
        let uuid = uuid_of(&app, name).await;
        let (status, html) = op.get(&format!("/vms/lab/{uuid}")).await;
        assert_eq!(status, 200);
        let start = html.find("power-actions").expect("the power form");
        let form = &html[start..start + html[start..].find("</form>").unwrap()];
        let shown = actions_in(form);
        assert_eq!(offered(&shown).0.as_deref(), Some(primary), "{name}: {shown:?}");
        assert_fixed_order(&shown, name);
        if name == "br-crashed" {
            assert!(
                unescape(form)
                    .contains(&format!("href=\"/vms/lab/{uuid}/power/confirm?action=power_off")),
                "a forced primary action links to its confirmation page"
            );
            let start = shown.iter().find(|s| s.action == "start").unwrap();
            assert!(start.disabled && start.title.as_deref().unwrap().contains("power it off"));
        }
    }
}
