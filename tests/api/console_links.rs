//! Where the browser console is offered (issue 13): the inventory records each VM's display
//! (`vms.graphics`), the list rows and the VM page link to the console for running or paused
//! VMs with a VNC display and say why not for the others, and the console page refuses a VM
//! without VNC from the stored display before it issues a ticket. Against the breadth lab
//! (libvirt's test driver: VNC on br-running, br-paused and br-shutoff, SPICE on
//! br-managedsave, none on br-blocked) and a remote libvirt host whose rows are written the
//! way its poller would.

use vmdeck::backend::{Counters, PowerState, VmConfig, VmReport};
use vmdeck::hosts::store::{self, HostCache};

use crate::support::app::{
    breadth_app, libvirt_host, spawn_app, strip_tags, unescape, uuid_of, AppOptions, TestApp,
};

/// The `<tr>` of the VM with this UUID in the list page.
fn row<'a>(html: &'a str, uuid: &str) -> &'a str {
    let start =
        html.find(&format!("data-uuid=\"{uuid}\"")).unwrap_or_else(|| panic!("no row for {uuid}"));
    let end = html[start..].find("</tr>").map_or(html.len(), |e| e + start);
    &html[start..end]
}

/// The VM page's console line (`#vm-console`), as text, or None when the page has none.
fn console_note(html: &str) -> Option<String> {
    let start = html[..html.find("id=\"vm-console\"")?].rfind('<')?;
    let end = html[start..].find("</p>")? + start;
    Some(unescape(&strip_tags(&html[start..end])))
}

#[tokio::test]
async fn the_list_links_the_console_of_running_and_paused_vnc_vms_only_for_every_role() {
    let app = breadth_app().await;
    let stored: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT name, graphics FROM vms WHERE graphics IS NOT NULL ORDER BY name")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let stored: Vec<(&str, Option<&str>)> =
        stored.iter().map(|(n, g)| (n.as_str(), g.as_deref())).collect();
    assert_eq!(
        stored,
        [
            ("br-managedsave", Some("spice")),
            ("br-paused", Some("vnc")),
            ("br-running", Some("vnc")),
            ("br-shutoff", Some("vnc")),
        ],
        "the poll records each VM's display, and nothing for VMs without one"
    );
    for role in ["viewer", "operator"] {
        let (status, html) = app.session(role).await.get("/vms?per_page=all").await;
        assert_eq!(status, 200);
        for (vm, linked) in [
            ("br-running", true),
            ("br-paused", true),
            ("br-shutoff", false),
            ("br-blocked", false),
            ("br-managedsave", false),
        ] {
            let uuid = uuid_of(&app, vm).await;
            let link = format!("href=\"/vms/lab/{uuid}/console\"");
            assert_eq!(
                row(&html, &uuid).contains(&link),
                linked,
                "{role}: {vm}'s row {} a Console link",
                if linked { "has" } else { "has no" }
            );
        }
    }
}

#[tokio::test]
async fn the_vm_page_links_the_console_or_says_why_there_is_none() {
    let app = breadth_app().await;
    for (vm, expected) in [
        ("br-running", "Console"),
        ("br-paused", "Console"),
        ("br-shutoff", "Console unavailable: the VM is not running (shut off)."),
        ("br-blocked", "Console unavailable: the VM has no VNC display."),
        ("br-managedsave", "Console unavailable: the VM's display is SPICE, not VNC."),
    ] {
        let uuid = uuid_of(&app, vm).await;
        let (status, html) = app.session("operator").await.get(&format!("/vms/lab/{uuid}")).await;
        assert_eq!(status, 200);
        let note = console_note(&html).unwrap_or_else(|| panic!("{vm}: no console line"));
        assert_eq!(note.trim(), expected, "{vm}");
        let link = format!("href=\"/vms/lab/{uuid}/console\"");
        assert_eq!(unescape(&html).contains(&link), expected == "Console", "{vm}: the link");
    }
    // A viewer gets the link too, and is told its console only watches.
    let uuid = uuid_of(&app, "br-running").await;
    let (_, html) = app.viewer.get(&format!("/vms/lab/{uuid}")).await;
    assert_eq!(console_note(&html).as_deref().map(str::trim), Some("Console (view only)"));
}

/// A running VM on a remote libvirt host (whose screens vmdeck could reach), recorded as its
/// poller would record it, with `graphics` as its display.
fn remote_vm(uuid: &str, name: &str, graphics: Option<&str>) -> VmReport {
    VmReport {
        uuid: uuid.into(),
        name: name.into(),
        state: PowerState::Running,
        raw_state: "running".into(),
        state_reason: "booted".into(),
        config: VmConfig {
            vcpus: 1,
            memory_max_kib: 1 << 20,
            graphics: graphics.map(str::to_string),
            ..VmConfig::default()
        },
        memory_used_kib: None,
        counters: Counters::default(),
        disk_usage: Vec::new(),
        addresses: Vec::new(),
        snapshots: None,
    }
}

async fn remote_app() -> TestApp {
    // Nothing listens on port 1: the poller's own polls fail at once, and a failed poll keeps
    // the VMs recorded below.
    spawn_app(AppOptions::with_hosts(vec![libvirt_host("far", "qemu+tcp://127.0.0.1:1/system")]))
        .await
}

#[tokio::test]
async fn the_console_page_says_the_vm_has_no_vnc_display_before_issuing_a_ticket() {
    let app = remote_app().await;
    let host_id = app.host_id("far").await;
    let (plain, spice, vnc) = (
        "11111111-1111-4111-8111-111111111111",
        "22222222-2222-4222-8222-222222222222",
        "33333333-3333-4333-8333-333333333333",
    );
    let reports = [
        remote_vm(plain, "plain", None),
        remote_vm(spice, "spicy", Some("spice")),
        remote_vm(vnc, "vnc", Some("vnc")),
    ];
    let now = vmdeck::db::now_ms();
    store::record_success(&app.pool, &mut HostCache::default(), host_id, now, now, &reports)
        .await
        .unwrap();

    let operator = app.session("operator").await;
    for (uuid, says) in [
        (plain, "The VM has no VNC display"),
        (spice, "The VM's display is SPICE, not VNC: this console speaks VNC only."),
    ] {
        let (status, html) = operator.get(&format!("/vms/far/{uuid}/console")).await;
        assert_eq!(status, 200);
        let text = unescape(&strip_tags(&html));
        assert!(text.contains(says), "{uuid}: {text}");
        assert!(!unescape(&html).contains("ticket="), "{uuid}: no ticket is issued for nothing");
    }
    // The VNC VM's page gets its ticket: the display is checked when the WebSocket opens.
    let (status, html) = operator.get(&format!("/vms/far/{vnc}/console")).await;
    assert_eq!(status, 200);
    let ws = format!("/vms/far/{vnc}/console/ws?ticket=");
    assert!(unescape(&html).contains(&ws), "{html}");
}
