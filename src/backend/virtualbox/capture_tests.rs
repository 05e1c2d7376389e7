//! The parsers against every capture in `tests/fixtures/virtualbox/`: the real ones (see
//! PROVENANCE.md there) and the synthetic ones (`synthetic/`, each test says so), plus a
//! mutation fuzz showing that no input makes a parser panic.
//!
//! Long by nature: one test per real capture.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::parse::*;
use super::{matched_addresses, printed_success, Output};
use crate::backend::{PowerAction, PowerState, SnapshotReport};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/virtualbox")
}

fn capture(name: &str) -> String {
    let path = dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

// ---- real captures ----

#[test]
fn real_list_vms_captures_give_every_vm() {
    let two = list_vms(&capture("list-vms-go-virtualbox-2vms.txt"));
    assert_eq!(
        two,
        vec![
            ListedVm { name: "Ubuntu".into(), uuid: "2e16b1fc-675d-4a7a-a9a1-e89a8bde7874".into() },
            ListedVm {
                name: "go-virtualbox".into(),
                uuid: "def44546-e3da-4902-8d15-b91c99c80cbc".into()
            },
        ],
        "the last line has no newline in this capture"
    );
    let indented = list_vms(&capture("list-vms-ohai-vagrantbox.txt"));
    assert_eq!(indented.len(), 1);
    assert_eq!(indented[0].name, "ubuntu-18.04-amd64_1549746024485_35372");
    let running = list_vms(&capture("list-runningvms-single-vagrant.txt"));
    assert_eq!(running[0].uuid, "eaf3fcb5-e9c6-4402-bf41-d343841a7ee3");
}

#[test]
fn real_windows_transcript_lists_the_vm_and_shows_the_poweroff_progress() {
    // Transcript: the `C:\...>` prompt lines are stripped.
    let text = capture("windows-session-list-startvm-headless-controlvm-poweroff.transcript.txt");
    let output: String =
        text.lines().filter(|l| !l.starts_with("C:\\")).map(|l| format!("{l}\n")).collect();
    let vms = list_vms(&output);
    assert_eq!(vms.len(), 2, "`list vms` and one `list runningvms`: {vms:?}");
    assert!(vms.iter().all(|v| v.name == "AlmaLinux9"));
    let progress = output.lines().find(|l| l.starts_with("0%")).unwrap();
    let out = Output { code: Some(0), stdout: String::new(), stderr: progress.into() };
    assert!(printed_success(PowerAction::PowerOff, &out));
}

#[test]
fn real_startvm_success_by_uuid_reads_as_success() {
    let out = Output {
        code: Some(1),
        stdout: capture("startvm-success-by-uuid-v4.1.txt"),
        stderr: String::new(),
    };
    assert!(printed_success(PowerAction::Start, &out));
}

#[test]
fn real_poweroff_vm_with_snapshot_is_read_through_its_controller_names() {
    let info = vm_info(&capture("showvminfo-machinereadable-ohai-poweroff-with-snapshot.txt"));
    assert_eq!(info.name.as_deref(), Some("ubuntu-18.04-amd64_1549746024485_35372"));
    assert_eq!(info.uuid.as_deref(), Some("6294f16b-4f05-4430-afb9-773bdb237aec"));
    assert_eq!(info.os_type.as_deref(), Some("Ubuntu (64-bit)"));
    assert_eq!((info.cpus, info.memory_mib), (Some(1), Some(1024)));
    assert_eq!(info.vm_state.as_deref(), Some("poweroff"));
    assert_eq!(info.state_change_time.as_deref(), Some("2019-02-09T21:00:33.575000000"));
    assert_eq!(info.attachments.len(), 1, "{:?}", info.attachments);
    let disk = &info.attachments[0];
    assert_eq!(disk.controller, "SATA Controller");
    assert_eq!(disk.slot(), "SATA Controller-0-0");
    assert_eq!(disk.kind, DeviceKind::Disk);
    assert_eq!(disk.bus(), Some("sata"));
    assert_eq!(disk.medium_uuid.as_deref(), Some("1c182745-4b09-41a1-a147-d3ced46f72f6"));
    assert_eq!(
        info.nics,
        vec![NicInfo {
            slot: 1,
            attachment: "nat".into(),
            mac: Some("08:00:27:e5:fa:8f".into()),
            adapter_type: Some("82540EM".into()),
            network: Some("nat".into()),
        }]
    );
    assert_eq!(info.guest_additions_run_level, None, "not running");
    assert_eq!(info.skipped_lines, 0);
}

fn snap(id: &str, name: &str, parent: Option<&str>, current: bool) -> SnapshotReport {
    SnapshotReport {
        id: id.into(),
        name: name.into(),
        description: String::new(),
        parent_id: parent.map(str::to_string),
        created_at_ms: None,
        vm_state: String::new(),
        with_memory: false,
        current,
    }
}

#[test]
fn real_snapshot_list_gives_the_tree_with_the_current_node_printed_before_its_child() {
    let tree =
        snapshots(&capture("snapshots/snapshot-list-machinereadable-current-before-its-child.txt"));
    let root = "86b38fc9-9d68-4e4b-a033-4075002ab570";
    let one = "e383e702-fee3-4e0b-b1e0-f3b869dbcaea";
    assert_eq!(
        tree,
        vec![
            snap(root, "ROOT", None, false),
            snap(one, "Snapshot 1", Some(root), true),
            snap("8cc12787-99df-466e-8a51-80e373d3447a", "Snapshot 2", Some(one), false),
            snap("f42533a8-7c14-4855-aa66-7169fe8187fe", "Snapshot 3", Some(root), false),
        ],
        "SnapshotName-1-1 is the child of SnapshotName-1 even though the Current* lines sit between them"
    );
}

#[test]
fn real_single_snapshot_list_keeps_a_name_with_at_sign_colons_and_spaces() {
    let tree = snapshots(&capture(
        "snapshots/snapshot-list-machinereadable-single-name-with-at-and-date.txt",
    ));
    assert_eq!(
        tree,
        vec![snap(
            "947ad21d-2cad-4e64-80cc-2ff819d1be4e",
            "Snapshot taken by jf@Tzunami 2017-01-07 20:51:48",
            None,
            true
        )]
    );
    // The transcript of the same host: take printed the UUID the list shows.
    let transcript = capture("snapshots/snapshot-take-and-restore.transcript.txt");
    assert!(transcript.contains(&format!("Snapshot taken. UUID: {}", tree[0].id)));
}

#[test]
fn real_no_snapshots_answer_is_an_empty_tree() {
    let text = capture("snapshots/snapshot-list-none.stdout-exit-1.txt");
    assert!(text.contains(NO_SNAPSHOTS));
    assert_eq!(snapshots(&text), vec![]);
}

#[test]
fn real_showvminfo_with_a_snapshot_gives_it_and_nothing_else_changes() {
    let text = capture("showvminfo-machinereadable-ohai-poweroff-with-snapshot.txt");
    let info = vm_info(&text);
    assert_eq!(
        info.snapshots,
        vec![snap("085cbbec-70cd-4864-9208-5d938dcabb71", "base", None, true)],
        "indented lines (the capture's heredoc) are read too"
    );
    assert_eq!(info.skipped_lines, 0);
    // VMs without snapshots: an empty tree, and the rest read as before.
    for name in [
        "showvminfo-machinereadable-v5.2-saved-go-virtualbox.txt",
        "showvminfo-machinereadable-v5.x-running-multiline-description.unwrapped.txt",
        "showvminfo-machinereadable-v7.0-poweroff-encryption-line-quirk.vedv.txt",
    ] {
        let info = vm_info(&capture(name));
        assert_eq!(info.snapshots, vec![], "{name}");
        assert!(info.name.is_some() && info.vm_state.is_some(), "{name}");
    }
}

#[test]
fn synthetic_raw_snapshot_values_with_quotes_line_breaks_and_a_backslash_are_read_whole() {
    // Synthetic, built as VBoxManage prints it (values raw, not escaped), inside the `showvminfo`
    // layout of 7.x: the tree between the settings and the guest section.
    let text = "name=\"web\"\n\
        memory=1024\n\
        SnapshotName=\"say \"hi\"\"\n\
        SnapshotUUID=\"AAAAAAAA-0000-4000-8000-000000000001\"\n\
        SnapshotDescription=\"line one\n\
        line \"two\"\n\
        SnapshotName-1=not a key inside a description\"\n\
        SnapshotName-1=\"C:\\builds\\\"\n\
        SnapshotUUID-1=\"aaaaaaaa-0000-4000-8000-000000000002\"\n\
        SnapshotDescription-1=\"ends with a line break\n\
        \"\n\
        CurrentSnapshotName=\"C:\\builds\\\"\n\
        CurrentSnapshotUUID=\"aaaaaaaa-0000-4000-8000-000000000002\"\n\
        CurrentSnapshotNode=\"SnapshotName-1\"\n\
        SnapshotName-1-1=\"same\"\n\
        SnapshotUUID-1-1=\"aaaaaaaa-0000-4000-8000-000000000003\"\n\
        SnapshotName-1-2=\"same\"\n\
        SnapshotUUID-1-2=\"aaaaaaaa-0000-4000-8000-000000000004\"\n\
        GuestMemoryBalloon=0\n\
        GuestAdditionsRunLevel=2\n";
    let info = vm_info(text);
    let first = "aaaaaaaa-0000-4000-8000-000000000001";
    let second = "aaaaaaaa-0000-4000-8000-000000000002";
    let mut want = vec![
        snap(first, "say \"hi\"", None, false),
        snap(second, "C:\\builds\\", Some(first), true),
        snap("aaaaaaaa-0000-4000-8000-000000000003", "same", Some(second), false),
        snap("aaaaaaaa-0000-4000-8000-000000000004", "same", Some(second), false),
    ];
    want[0].description =
        "line one\nline \"two\"\nSnapshotName-1=not a key inside a description".into();
    want[1].description = "ends with a line break\n".into();
    assert_eq!(info.snapshots, want);
    assert_eq!(
        info.guest_additions_run_level,
        Some(2),
        "a raw value ending in a backslash does not swallow the lines after it"
    );
    assert_eq!(info.memory_mib, Some(1024));
    assert_eq!(info.skipped_lines, 0, "the snapshot lines are not left to the general reader");
    // CRLF line ends (Windows hosts) read the same.
    assert_eq!(vm_info(&text.replace('\n', "\r\n")).snapshots, want);
}

#[test]
fn real_saved_vm_maps_to_shut_off_with_its_raw_state_kept() {
    let info = vm_info(&capture("showvminfo-machinereadable-v5.2-saved-go-virtualbox.txt"));
    assert_eq!(info.vm_state.as_deref(), Some("saved"));
    assert_eq!(power_state("saved"), PowerState::ShutOff);
    assert_eq!(info.name.as_deref(), Some("go-virtualbox"));
    assert_eq!(
        info.attachments[0].location.as_deref(),
        Some("/Users/fix/VirtualBox VMs/go-virtualbox/ubuntu-16.04-amd64-disk001.vmdk")
    );
    // `vrdeproperty[...]=<not set>` lines are unquoted values, not junk.
    let mr = machine_readable(&capture("showvminfo-machinereadable-v5.2-saved-go-virtualbox.txt"));
    assert_eq!(mr.get("vrdeproperty[Security/Method]"), Some("<not set>"));
    assert_eq!(mr.get("Forwarding(0)"), Some("ssh,tcp,127.0.0.1,2222,,22"));
}

#[test]
fn real_running_5x_vm_keeps_its_multiline_description_and_guest_additions() {
    let text =
        capture("showvminfo-machinereadable-v5.x-running-multiline-description.unwrapped.txt");
    let mr = machine_readable(&text);
    let description = mr.get("description").unwrap();
    assert!(description.starts_with("installed with:\nCentOS-7.0-1406"));
    assert!(description.contains("# yum groupinstall \"GNOME Desktop\""));
    assert!(description.ends_with("centos / reverse\n"));
    assert_eq!(mr.get("VideoMode"), Some("720,400,0"), "junk after the quote");
    assert_eq!(mr.get("videocapres"), Some("1024x768"));
    assert_eq!(mr.get("videocapopts"), Some(""));
    assert_eq!(mr.get("GuestAdditionsFacility_Seamless Mode"), Some("0,1550641065784"));
    let info = vm_info(&text);
    assert_eq!(info.vm_state.as_deref(), Some("running"));
    assert_eq!((info.cpus, info.memory_mib), (Some(4), Some(4096)));
    assert_eq!(info.guest_additions_run_level, Some(1));
    assert_eq!(info.guest_additions_version.as_deref(), Some("5.1.18 r114002"));
    let kinds: Vec<(String, DeviceKind)> =
        info.attachments.iter().map(|a| (a.slot(), a.kind)).collect();
    assert_eq!(
        kinds,
        vec![("SATA-0-0".to_string(), DeviceKind::Disk), ("IDE-1-0".to_string(), DeviceKind::Dvd)]
    );
    assert_eq!(info.attachments[1].location, None, "an empty drive");
    assert_eq!(info.nics[0].mac.as_deref(), Some("08:00:27:46:5c:5b"));
    assert!(info.vrde, "vrde=\"on\": its remote display (RDP) is enabled");
}

#[test]
fn real_vagrant_log_unwraps_to_the_same_output_and_the_same_vm() {
    // Transcript: Vagrant's log lines are dropped and its `stdout:` chunks joined, which is
    // how PROVENANCE.md says the unwrapped capture was derived.
    const CHUNK: &str = "DEBUG subprocess: stdout: ";
    let log = capture(
        "showvminfo-machinereadable-v5.x-running-multiline-description.vagrant-log-excerpt.txt",
    );
    let mut chunks: Vec<Vec<&str>> = Vec::new();
    for line in log.lines() {
        if let Some(first) = line.strip_prefix(CHUNK) {
            chunks.push(vec![first]);
        } else if line.starts_with(" INFO ") || line.starts_with("DEBUG ") {
            continue;
        } else if let Some(chunk) = chunks.last_mut() {
            chunk.push(line);
        }
    }
    let derived: String = chunks.iter().map(|c| c.join("\n")).collect::<String>() + "\n";
    let unwrapped =
        capture("showvminfo-machinereadable-v5.x-running-multiline-description.unwrapped.txt");
    assert_eq!(derived, unwrapped);
    assert_eq!(vm_info(&derived), vm_info(&unwrapped));
}

#[test]
fn real_7_0_vm_survives_the_encryption_line_and_the_rec_screen_line() {
    let info = vm_info(&capture(
        "showvminfo-machinereadable-v7.0-poweroff-encryption-line-quirk.vedv.txt",
    ));
    assert_eq!(info.skipped_lines, 2, "`Encryption:` and ` rec_screen0`");
    assert_eq!(info.name.as_deref(), Some("manjaro-gnome-x64-full-clean"));
    assert_eq!(info.os_type.as_deref(), Some("Arch Linux (64-bit)"));
    assert_eq!((info.cpus, info.memory_mib), (Some(4), Some(4096)));
    assert_eq!(info.vm_state.as_deref(), Some("poweroff"));
    assert!(!info.vrde, "vrde=\"off\"");
    let slots: Vec<(String, DeviceKind, Option<&str>)> =
        info.attachments.iter().map(|a| (a.slot(), a.kind, a.medium_uuid.as_deref())).collect();
    assert_eq!(
        slots,
        vec![
            ("IDE-1-0".to_string(), DeviceKind::Dvd, None),
            (
                "SATA-0-0".to_string(),
                DeviceKind::Disk,
                Some("37a0bb6b-4292-464e-b766-1e8b7101ec94")
            ),
        ]
    );
    let mr = machine_readable(&capture(
        "showvminfo-machinereadable-v7.0-poweroff-encryption-line-quirk.vedv.txt",
    ));
    assert_eq!(mr.get("description"), Some("name1=value1\nname2=value2"));
    assert!(mr.get("BIOS NVRAM File").unwrap().ends_with(".nvram"));
    assert_eq!(mr.get("name2"), None, "a description line is not a key");
}

#[test]
fn real_partial_medium_info_gives_capacity_and_size_on_disk() {
    let sizes = medium_sizes(&capture("showhdinfo-vdi-capacity-size-on-disk.PARTIAL.txt"));
    assert_eq!(sizes.capacity_bytes, Some(60000 << 20));
    assert_eq!(sizes.size_on_disk_bytes, Some(31991 << 20));
}

#[test]
fn real_list_hdds_blocks_have_a_capacity_but_never_a_size_on_disk() {
    for name in [
        "list-hdds-ohai-base-and-differencing.txt",
        "list-hdds-inaccessible-and-differencing-vboxmanage_plus.txt",
        "list-dvds-ohai.txt",
    ] {
        let text = capture(name);
        let first_block = text.split("\n\n").next().unwrap();
        let sizes = medium_sizes(first_block);
        assert!(sizes.capacity_bytes.is_some_and(|c| c > 0), "{name}");
        assert_eq!(sizes.size_on_disk_bytes, None, "{name}");
    }
}

#[test]
fn real_old_format_guest_properties_give_the_nat_address() {
    let props = guest_properties(&capture("guestproperty-enumerate-v5.2-old-format.TRUNCATED.txt"));
    assert_eq!(props.len(), 7);
    assert_eq!(
        props[0],
        GuestProperty {
            name: "/VirtualBox/GuestInfo/OS/Product".into(),
            value: Some("Linux".into())
        }
    );
    let service_pack = props.iter().find(|p| p.name.ends_with("ServicePack")).unwrap();
    assert_eq!(service_pack.value, None, "`value: ,` is no value");
    // Interface 1 has no MAC in this truncated capture: no address can be tied to a NIC.
    assert_eq!(
        guest_addresses(&props),
        vec![GuestAddress { mac: "08:00:27:bd:94:b9".into(), addr: ip("10.0.2.15"), prefix: 32 }]
    );
}

#[test]
fn real_vboxcontrol_listing_skips_the_banner_and_null_values() {
    let props =
        guest_properties(&capture("vboxcontrol-guestproperty-enumerate-v5.0-guest-ohai.txt"));
    assert_eq!(props.len(), 23, "the 4 banner lines are not properties");
    let sysprep = props.iter().find(|p| p.name.ends_with("SysprepExec")).unwrap();
    assert_eq!(sysprep.value, None, "`<NULL>` is no value");
    let version = props.iter().find(|p| p.name.ends_with("OS/Version")).unwrap();
    assert_eq!(
        version.value.as_deref(),
        Some("#36~14.04.1-Ubuntu SMP Thu Oct 8 10:21:08 UTC 2015")
    );
    assert_eq!(
        guest_addresses(&props),
        vec![GuestAddress { mac: "08:00:27:fb:b3:8c".into(), addr: ip("10.0.2.15"), prefix: 24 }]
    );
}

#[test]
fn real_guestproperty_wait_line_is_read_too() {
    let props = guest_properties(&capture("guestproperty-wait-go-virtualbox.txt"));
    assert_eq!(
        props,
        vec![GuestProperty { name: "test_key".into(), value: Some("test_val1".into()) }]
    );
}

#[test]
fn real_error_captures_give_their_result_codes() {
    let cases = [
        (
            "errors/not-found-startvm-windows.stderr.txt",
            "VBOX_E_OBJECT_NOT_FOUND",
            "Could not find a registered machine named 'Mojave'",
        ),
        (
            "errors/not-found-storagectl-linux.stderr.txt",
            "VBOX_E_OBJECT_NOT_FOUND",
            "Could not find a registered machine named ''",
        ),
        (
            "errors/invalid-state-paused-acpipowerbutton.stderr.txt",
            "VBOX_E_INVALID_VM_STATE",
            "Invalid machine state: Paused",
        ),
        (
            "errors/locked-startvm-headless-linux.stderr.txt",
            "VBOX_E_INVALID_OBJECT_STATE",
            "The machine 'DC01' is already locked by a session (or being locked or unlocked)",
        ),
        (
            "errors/startvm-gui-no-display-terminated-unexpectedly.transcript.txt",
            "NS_ERROR_FAILURE",
            "The virtual machine '<name>' has terminated unexpectedly during startup with exit code 1",
        ),
    ];
    for (name, code, message) in cases {
        let e = vbox_error(&capture(name)).unwrap_or_else(|| panic!("{name}: no error read"));
        assert_eq!(e.code.as_deref(), Some(code), "{name}");
        assert_eq!(e.message, message, "{name}");
    }
}

#[test]
fn real_listings_vmdeck_does_not_run_yield_no_vms_or_addresses() {
    for name in [
        "list-bridgedifs-ohai.txt",
        "list-dhcpservers-go-virtualbox.txt",
        "list-hostonlyifs-go-virtualbox.txt",
        "list-hostonlyifs-ohai-2ifs.txt",
        "list-natnets-go-virtualbox.txt",
    ] {
        let text = capture(name);
        assert!(list_vms(&text).is_empty(), "{name}");
        assert!(guest_addresses(&guest_properties(&text)).is_empty(), "{name}");
        assert_eq!(vm_info(&text).vm_state, None, "{name}");
    }
}

// ---- synthetic captures (tests/fixtures/virtualbox/synthetic/) ----

#[test]
fn synthetic_odd_names_in_list_vms_are_read_from_the_right() {
    let vms = list_vms(&capture("synthetic/list-vms-odd-names.txt"));
    let names: Vec<&str> = vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "web-01 (prod) ✓",
            "db \"primary\" {main}",
            "café ünïcode 日本",
            "name with\nnewline",
            "<inaccessible>",
            "  spaced  ",
        ]
    );
    assert!(vms[4].is_inaccessible());
}

#[test]
fn synthetic_7_1_running_vm_with_three_nics_and_guest_additions() {
    let info = vm_info(&capture(
        "synthetic/showvminfo-machinereadable-v7.1-running-guest-additions-3nics.txt",
    ));
    assert_eq!(info.name.as_deref(), Some("web-01 (prod) ✓"));
    assert_eq!(info.vm_state.as_deref(), Some("running"));
    assert_eq!((info.cpus, info.memory_mib, info.balloon_mib), (Some(2), Some(4096), Some(512)));
    assert!(info.autostart);
    assert_eq!(info.guest_additions_run_level, Some(2));
    assert_eq!(info.skipped_lines, 1, "only ` rec_screen0`");
    let slots: Vec<(String, DeviceKind, Option<&str>)> =
        info.attachments.iter().map(|a| (a.slot(), a.kind, a.bus())).collect();
    assert_eq!(
        slots,
        vec![
            ("SATA-0-0".to_string(), DeviceKind::Disk, Some("sata")),
            ("SATA-1-0".to_string(), DeviceKind::Dvd, Some("sata")),
            ("NVMe Controller-0-0".to_string(), DeviceKind::Disk, Some("nvme")),
        ]
    );
    let nics: Vec<(&str, Option<&str>, Option<&str>)> = info
        .nics
        .iter()
        .map(|n| (n.attachment.as_str(), n.mac.as_deref(), n.network.as_deref()))
        .collect();
    assert_eq!(
        nics,
        vec![
            ("nat", Some("08:00:27:a1:b2:c3"), Some("nat")),
            ("bridged", Some("08:00:27:d4:e5:f6"), Some("enp3s0")),
            ("hostonly", Some("08:00:27:0a:0b:0c"), Some("vboxnet0")),
        ]
    );
    let mr = machine_readable(&capture(
        "synthetic/showvminfo-machinereadable-v7.1-running-guest-additions-3nics.txt",
    ));
    assert_eq!(
        mr.get("description"),
        Some("Web front end.\nOwner: \"ops\" team\nBuilds in C:\\builds\n")
    );

    // Its guest properties (7.x layout): addresses on its own NICs only.
    let props = guest_properties(&capture("synthetic/guestproperty-enumerate-v7.1-3nics.txt"));
    assert_eq!(props.len(), 41);
    let empty = props.iter().find(|p| p.name.ends_with("ServicePack")).unwrap();
    assert_eq!(empty.value, None, "'' is no value");
    let flagged = props.iter().find(|p| p.name.ends_with("VBoxVer")).unwrap();
    assert_eq!(flagged.value.as_deref(), Some("7.1.4"), "flags are not part of the value");
    let long = props.iter().find(|p| p.name.ends_with("OS/Version")).unwrap();
    assert_eq!(
        long.value.as_deref(),
        Some("#48-Ubuntu SMP PREEMPT_DYNAMIC Fri Sep 27 14:04:52 UTC 2024"),
        "a value wider than its column"
    );
    let addresses: Vec<(String, IpAddr, u8)> =
        matched_addresses(&info, &capture("synthetic/guestproperty-enumerate-v7.1-3nics.txt"))
            .into_iter()
            .map(|a| (a.mac, a.addr, a.prefix))
            .collect();
    assert_eq!(
        addresses,
        vec![
            ("08:00:27:a1:b2:c3".to_string(), ip("10.0.2.15"), 24),
            ("08:00:27:d4:e5:f6".to_string(), ip("192.168.1.57"), 24),
            ("08:00:27:a1:b2:c3".to_string(), ip("fd00::a00:27ff:fea1:b2c3"), 64),
        ],
        "IPv4 first; the Down host-only interface, the Docker bridge and the stale interface 4 are left out"
    );
}

#[test]
fn synthetic_storage_zoo_maps_attachments_through_controller_names() {
    let info = vm_info(&capture(
        "synthetic/showvminfo-machinereadable-v6.1-storage-zoo-windows-paths.txt",
    ));
    let slots: Vec<(String, DeviceKind, Option<String>)> =
        info.attachments.iter().map(|a| (a.slot(), a.kind, a.location.clone())).collect();
    assert_eq!(
        slots,
        vec![
            ("SATA-0-0".into(), DeviceKind::Disk, Some("C:\\VMs\\zoo\\sata.vdi".into())),
            (
                "SATA Controller-0-0".into(),
                DeviceKind::Disk,
                Some("C:\\VMs\\zoo\\sata-controller.vdi".into())
            ),
            ("My-SCSI-1-0-0".into(), DeviceKind::Disk, Some("C:\\VMs\\zoo\\scsi.vmdk".into())),
            ("Floppy-0-0".into(), DeviceKind::Floppy, None),
            ("IDE-0-0".into(), DeviceKind::Dvd, Some("D:\\ISO\\Win10_22H2_English_x64.iso".into())),
        ]
    );
    assert_eq!(info.attachments[2].bus(), Some("scsi"));
    let nics: Vec<(&str, Option<&str>)> =
        info.nics.iter().map(|n| (n.attachment.as_str(), n.network.as_deref())).collect();
    assert_eq!(
        nics,
        vec![
            ("nat", Some("10.0.3.0/24")),
            ("intnet", Some("lab net")),
            ("generic", Some("VDE")),
            ("natnetwork", Some("NatNetwork")),
            ("null", None),
        ]
    );
}

#[test]
fn synthetic_inaccessible_vm_is_recognized() {
    let info = vm_info(&capture("synthetic/showvminfo-machinereadable-inaccessible.txt"));
    assert!(info.is_inaccessible());
    assert_eq!(info.uuid.as_deref(), Some("deadbeef-0000-4000-8000-00000000dead"));
}

#[test]
fn synthetic_metrics_query_is_read_by_known_vm_names() {
    let text = capture("synthetic/metrics-query-three-vms.txt");
    let m = metrics_query(&text, &["web-01 (prod) ✓", "db", "db backup", "twin", "host"]);
    let v = |o: &str, k: &str| m.get(o, k).map(|v| (v.value, v.unit.clone()));
    assert_eq!(v("web-01 (prod) ✓", "CPU/Load/User"), Some((12.55, "%".into())), "newest sample");
    assert_eq!(v("web-01 (prod) ✓", "RAM/Usage/Used"), Some((1816052.0, "kB".into())));
    assert_eq!(v("web-01 (prod) ✓", "Guest/RAM/Usage/Free"), None, "no data");
    assert_eq!(v("db", "CPU/Load/User"), Some((0.5, "%".into())));
    assert_eq!(v("db backup", "CPU/Load/User"), Some((25.0, "%".into())), "not db's");
    assert_eq!(v("twin", "CPU/Load/User"), None, "two VMs of one name: no figure");
    assert_eq!(v("host", "CPU/Load/User"), Some((3.07, "%".into())));
    assert_eq!(v("nobody", "CPU/Load/User"), None);
}

#[test]
fn synthetic_medium_and_host_info() {
    let sizes = medium_sizes(&capture("synthetic/showmediuminfo-vdi-full.txt"));
    assert_eq!(
        (sizes.capacity_bytes, sizes.size_on_disk_bytes),
        (Some(20480 << 20), Some(6143 << 20))
    );
    let gone = medium_sizes(&capture("synthetic/showmediuminfo-inaccessible.txt"));
    assert_eq!(gone, MediumSizes::default(), "0 MBytes of an inaccessible medium is unknown");
    assert_eq!(host_cpu_count(&capture("synthetic/list-hostinfo.txt")), Some(8));
}

// ---- properties: round trip and no panic ----

/// A small deterministic generator (SplitMix64): reproducible failures without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Characters that matter to the formats, plus some that do not.
const ALPHABET: &[char] = &[
    '"', '\\', '\n', '\r', '=', '{', '}', ' ', ':', ',', '\'', '@', '/', '-', '0', '9', 'a', 'Z',
    '%', '.', 'é', '✓', '\t', '<', '>', '[', ']',
];

fn every_capture() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for sub in ["", "errors", "snapshots", "synthetic"] {
        for entry in std::fs::read_dir(dir().join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "txt") {
                let name = path.strip_prefix(dir()).unwrap().display().to_string();
                out.push((name, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    assert!(out.len() >= 30, "every capture is found: {}", out.len());
    out
}

fn run_every_parser(text: &str) {
    let vms = list_vms(text);
    let names: Vec<&str> = vms.iter().map(|v| v.name.as_str()).collect();
    let info = vm_info(text);
    let _ = snapshots(text);
    let _ = error_messages(text);
    let _ = matched_addresses(&info, text);
    let _ = guest_addresses(&guest_properties(text));
    let _ = medium_sizes(text);
    let _ = metrics_query(text, &names);
    let _ = metrics_query(text, &["host", "", " ", "a b"]);
    let _ = host_cpu_count(text);
    let _ = version(text);
    let _ = vbox_error(text);
    for a in &info.attachments {
        let _ = (a.slot(), a.bus());
    }
    for word in text.split_whitespace().take(50) {
        let _ = (power_state(word), state_words(word), normalize_mac(word), is_uuid(word));
    }
}

#[test]
fn no_parser_panics_on_mutated_captures_or_random_text() {
    let mut rng = Rng(0x5EED_F00D_7E57);
    for (name, text) in every_capture() {
        let original: Vec<char> = text.chars().collect();
        for round in 0..150 {
            let mut chars = original.clone();
            for _ in 0..=rng.below(8) {
                let at = rng.below(chars.len() + 1);
                match rng.below(5) {
                    0 => chars.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
                    1 if at < chars.len() => {
                        chars[at] = ALPHABET[rng.below(ALPHABET.len())];
                    }
                    2 => {
                        let end = (at + rng.below(40)).min(chars.len());
                        chars.drain(at..end);
                    }
                    3 => chars.truncate(at),
                    _ => {
                        let end = (at + rng.below(80)).min(chars.len());
                        let copy: Vec<char> = chars[at..end].to_vec();
                        let to = rng.below(chars.len() + 1);
                        chars.splice(to..to, copy);
                    }
                }
            }
            let mutated: String = chars.into_iter().collect();
            let result = std::panic::catch_unwind(|| run_every_parser(&mutated));
            assert!(result.is_ok(), "{name}, round {round}: a parser panicked on:\n{mutated:?}");
        }
    }
    for round in 0..2000 {
        let len = rng.below(200);
        let text: String = (0..len).map(|_| ALPHABET[rng.below(ALPHABET.len())]).collect();
        let result = std::panic::catch_unwind(|| run_every_parser(&text));
        assert!(result.is_ok(), "random round {round}: a parser panicked on {text:?}");
    }
}

#[test]
fn any_value_escaped_as_vboxmanage_escapes_it_reads_back_unchanged() {
    let mut rng = Rng(42);
    for round in 0..2000 {
        let len = rng.below(60);
        let value: String = (0..len).map(|_| ALPHABET[rng.below(ALPHABET.len())]).collect();
        // `\r` before a newline is a line ending, not part of a value; VirtualBox prints `\n`.
        let value = value.replace('\r', "");
        let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
        let text = format!("name=\"vm\"\n\"odd key-{round}\"=\"{escaped}\"\ncpus=2\n");
        let mr = machine_readable(&text);
        assert_eq!(mr.get(&format!("odd key-{round}")), Some(value.as_str()), "{text:?}");
        assert_eq!(mr.get("cpus"), Some("2"), "parsing continues after {text:?}");
    }
}
