//! A stand-in for `VBoxManage`, for vmdeck's process-level tests and `vmdeck-vbox-bench`.
//!
//! It prints the formats real VBoxManage prints (see `tests/fixtures/virtualbox/`) for a small
//! set of VMs kept in a state file, changes their state on `startvm` and `controlvm`, keeps
//! each VM's snapshot tree (`snapshot <vm> list|take|restore|delete`, with VirtualBox's own
//! refusals), and can be told to misbehave: hang, take a while (`slow`), exit 1 after printing
//! success, fail with "already locked by a session", or succeed without effect (a guest that
//! ignores the ACPI button). It is not VirtualBox: it knows only the commands vmdeck runs.
//!
//! Its files live in one directory: `$FAKE_VBOX_DIR` if set, else the directory of the path it
//! was started as. Tests symlink it into a temporary directory of their own as `VBoxManage`, so
//! parallel tests never share state. The files:
//! - `state.json`: the VMs, media, imitated version and faults ([`State`]);
//! - `calls.log`: one line per invocation, its arguments joined by tabs;
//! - `env.log`: the `LC_ALL` each invocation ran with;
//! - `hung.pids`: the pid of each invocation that was told to hang.
//!
//! `fake_vboxmanage fake-init <dir> <lab|bench> [--vms N] [--version V]` writes a state file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

/// Everything the stand-in knows.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    /// What `--version` prints; the major version picks the output layouts.
    version: String,
    host_cpus: u32,
    vms: Vec<Vm>,
    media: Vec<Medium>,
    #[serde(default)]
    faults: Vec<Fault>,
    /// VMs whose metrics `metrics setup` enabled while they ran.
    #[serde(default)]
    metrics_set_up: Vec<String>,
    /// Snapshots taken so far: the next one's UUID.
    #[serde(default)]
    snapshots_taken: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Vm {
    uuid: String,
    name: String,
    /// A `VMState` word: poweroff, running, paused, saved, aborted...
    state: String,
    state_change: String,
    #[serde(default)]
    inaccessible: bool,
    ostype: String,
    cpus: u32,
    memory_mb: u64,
    controllers: Vec<Controller>,
    attachments: Vec<Attachment>,
    nics: Vec<Nic>,
    /// Guest Additions version; None: not installed.
    guest_additions: Option<String>,
    /// Interfaces the guest reports through Guest Additions while it runs.
    guest_ifs: Vec<GuestIf>,
    /// Host CPU load of the VM process, percent of all host CPUs (user mode).
    cpu_user_pct: f64,
    ram_used_kb: u64,
    description: Option<String>,
    /// The snapshot tree, oldest first (children are listed in the order they were taken).
    #[serde(default)]
    snapshots: Vec<Snapshot>,
    /// UUID of the current snapshot: the one the VM's state descends from.
    #[serde(default)]
    current_snapshot: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Snapshot {
    uuid: String,
    name: String,
    #[serde(default)]
    description: String,
    parent: Option<String>,
    /// The `VMState` a restore leaves: `saved` when the snapshot holds the VM's memory (taken
    /// while it ran, was paused or saved), else `poweroff`.
    state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Controller {
    name: String,
    /// IntelAhci, PIIX4, NVMe, LsiLogic, I82078...
    kind: String,
    ports: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Attachment {
    controller: String,
    port: u32,
    device: u32,
    /// `disk` or `dvd`.
    kind: String,
    /// None: an empty drive.
    medium: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Nic {
    slot: u32,
    /// nat, bridged, hostonly, intnet...
    attachment: String,
    network: String,
    /// 12 hex digits, as VirtualBox prints it.
    mac: String,
    adapter: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GuestIf {
    mac: String,
    ipv4: Option<String>,
    netmask: Option<String>,
    ipv6: Option<String>,
    #[serde(default)]
    down: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Medium {
    uuid: String,
    location: String,
    capacity_mb: u64,
    size_on_disk_mb: u64,
}

/// Misbehaviour for matching invocations.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Fault {
    /// The verb: `startvm`, `controlvm poweroff`, `snapshot take`, `showvminfo`, `list vms`,
    /// `metrics`... (`controlvm` or `snapshot` alone matches each of its actions).
    command: String,
    /// Only for this VM (UUID), if set.
    #[serde(default)]
    vm: Option<String>,
    behaviour: Behaviour,
    /// How many more invocations it applies to; None: all.
    #[serde(default)]
    times: Option<u32>,
    /// `slow`: how long the invocation takes before it does its work (default 5 s).
    #[serde(default)]
    seconds: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Behaviour {
    /// Never finish (until killed).
    Hang,
    /// Take `seconds` (without holding the state, so other invocations go on), then do the
    /// command: a snapshot merging disks, or writing a large VM's memory.
    Slow,
    /// Do the command and print its success, then exit 1 (seen on real 5.x builds).
    SuccessThenExit1,
    /// Fail with VBOX_E_INVALID_OBJECT_STATE, "already locked by a session".
    Locked,
    /// Succeed and change nothing, as `controlvm acpipowerbutton` does when the guest ignores
    /// the button (no ACPI support, or a dialog waiting for someone to confirm).
    Ignored,
}

/// A finished invocation.
struct Reply {
    code: u8,
    stdout: String,
    stderr: String,
}

impl Reply {
    fn ok(stdout: impl Into<String>) -> Self {
        Reply { code: 0, stdout: stdout.into(), stderr: String::new() }
    }

    fn com_error(message: &str, code: &str, hex: &str, component: &str, context: &str) -> Self {
        Reply {
            code: 1,
            stdout: String::new(),
            stderr: format!(
                "VBoxManage: error: {message}\nVBoxManage: error: Details: code {code} ({hex}), component {component}, interface I{}, callee nsISupports\nVBoxManage: error: Context: \"{context}\" at line 1 of file VBoxManageFake.cpp\n",
                component.trim_end_matches("Wrap")
            ),
        }
    }

    fn not_found(what: &str) -> Self {
        Reply::com_error(
            &format!("Could not find a registered machine named '{what}'"),
            "VBOX_E_OBJECT_NOT_FOUND",
            "0x80bb0001",
            "VirtualBoxWrap",
            "FindMachine(Bstr(a->argv[0]).raw(), machine.asOutParam())",
        )
    }

    fn locked(name: &str) -> Self {
        Reply::locked_at(
            name,
            "LaunchVMProcess(a->session, sessionType.raw(), ComSafeArrayAsInParam(aBstrEnv), progress.asOutParam())",
        )
    }

    fn locked_at(name: &str, context: &str) -> Self {
        Reply::com_error(
            &format!(
                "The machine '{name}' is already locked by a session (or being locked or unlocked)"
            ),
            "VBOX_E_INVALID_OBJECT_STATE",
            "0x80bb0007",
            "MachineWrap",
            context,
        )
    }

    fn invalid_state(message: &str, context: &str) -> Self {
        Reply::com_error(message, "VBOX_E_INVALID_VM_STATE", "0x80bb0002", "ConsoleWrap", context)
    }

    fn syntax(message: &str) -> Self {
        Reply { code: 2, stdout: String::new(), stderr: format!("VBoxManage: error: {message}\n") }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("fake-init") {
        return fake_init(&args[2..]);
    }
    let dir = state_dir(&args[0]);
    log_call(&dir, &args[1..]);
    let words: Vec<&str> = args[1..].iter().map(String::as_str).collect();

    let mut file = match OpenOptions::new().read(true).write(true).open(dir.join("state.json")) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fake VBoxManage: no state in {}: {e}", dir.display());
            return ExitCode::from(3);
        }
    };
    // One invocation at a time changes the state: vmdeck runs several at once.
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .expect("lock the state file");
    let mut text = String::new();
    file.read_to_string(&mut text).expect("read state");
    let mut state: State =
        serde_json::from_str(&text).expect("state.json is a fake VBoxManage state");

    let (fault, mut dirty) = take_fault(&mut state, &words);
    let seconds = fault.as_ref().and_then(|f| f.seconds).unwrap_or(5);
    let fault = fault.map(|f| f.behaviour);
    if fault == Some(Behaviour::Slow) {
        if dirty {
            save(&mut file, &state);
            dirty = false;
        }
        drop(file);
        std::thread::sleep(std::time::Duration::from_secs(seconds));
        file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join("state.json"))
            .expect("reopen the state file");
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .expect("lock the state file");
        let mut text = String::new();
        file.read_to_string(&mut text).expect("read state");
        state = serde_json::from_str(&text).expect("state.json is a fake VBoxManage state");
    }
    if fault == Some(Behaviour::Hang) {
        if dirty {
            save(&mut file, &state);
        }
        drop(file);
        let _ = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("hung.pids"))
            .and_then(|mut f| writeln!(f, "{}", std::process::id()));
        std::thread::sleep(std::time::Duration::from_secs(3600));
        return ExitCode::from(1);
    }
    let reply = if fault == Some(Behaviour::Locked) {
        let name = words
            .get(1)
            .and_then(|w| find(&state, w))
            .map_or("unknown", |i| state.vms[i].name.as_str())
            .to_string();
        if words.first() == Some(&"snapshot") {
            // Every snapshot command opens a session on the machine first.
            Reply::locked_at(&name, "LockMachine(a->session, LockType_Shared)")
        } else {
            Reply::locked(&name)
        }
    } else if fault == Some(Behaviour::Ignored) {
        Reply::ok("")
    } else {
        let mut reply = run(&mut state, &words);
        dirty |= matches!(
            words.as_slice(),
            ["startvm" | "controlvm", ..]
                | ["metrics", "setup", ..]
                | ["snapshot", _, "take" | "restore" | "delete", ..]
        );
        if fault == Some(Behaviour::SuccessThenExit1) && reply.code == 0 {
            reply.code = 1;
        }
        reply
    };
    // Reading commands leave the file alone: a poll of 100 VMs runs ~200 of them.
    if dirty {
        save(&mut file, &state);
    }
    drop(file);
    print!("{}", reply.stdout);
    eprint!("{}", reply.stderr);
    ExitCode::from(reply.code)
}

fn state_dir(argv0: &str) -> PathBuf {
    if let Some(d) = std::env::var_os("FAKE_VBOX_DIR") {
        return PathBuf::from(d);
    }
    Path::new(argv0)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn log_call(dir: &Path, args: &[String]) {
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(dir.join("calls.log")) {
        // One write per line: concurrent invocations append whole lines.
        let _ = f.write_all(format!("{}\n", args.join("\t")).as_bytes());
    }
    // The locale each call ran under: vmdeck promises LC_ALL=C.
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(dir.join("env.log")) {
        let lc_all = std::env::var("LC_ALL").unwrap_or_else(|_| "(unset)".into());
        let _ = f.write_all(format!("LC_ALL={lc_all}\n").as_bytes());
    }
}

fn save(file: &mut File, state: &State) {
    let text = serde_json::to_string(state).expect("serialize state");
    file.set_len(0).expect("truncate state");
    file.rewind().expect("rewind state");
    file.write_all(text.as_bytes()).expect("write state");
}

/// The verb of an invocation: `controlvm <vm> poweroff` is `controlvm poweroff`, `snapshot
/// <vm> take <name>` is `snapshot take`.
fn verb(words: &[&str]) -> String {
    match words {
        ["controlvm" | "snapshot", _, action, ..] => format!("{} {action}", words[0]),
        [first, second, ..] if matches!(*first, "list" | "metrics" | "guestproperty") => {
            format!("{first} {second}")
        }
        [first, ..] => first.to_string(),
        [] => String::new(),
    }
}

/// The fault that applies to this invocation, and whether using it changed the state.
fn take_fault(state: &mut State, words: &[&str]) -> (Option<Fault>, bool) {
    let verb = verb(words);
    let vm = match words {
        ["controlvm" | "startvm" | "showvminfo" | "snapshot", vm, ..] => Some(*vm),
        ["guestproperty", _, vm, ..] => Some(*vm),
        _ => None,
    };
    let Some(i) = state.faults.iter().position(|f| {
        (verb == f.command || verb.starts_with(&format!("{} ", f.command)))
            && f.vm.as_deref().is_none_or(|u| Some(u) == vm)
    }) else {
        return (None, false);
    };
    let fault = state.faults[i].clone();
    let Some(n) = state.faults[i].times.as_mut() else {
        return (Some(fault), false);
    };
    *n = n.saturating_sub(1);
    if *n == 0 {
        state.faults.remove(i);
    }
    (Some(fault), true)
}

fn find(state: &State, what: &str) -> Option<usize> {
    state.vms.iter().position(|v| v.uuid.eq_ignore_ascii_case(what) || v.name == what)
}

fn major(state: &State) -> u32 {
    state.version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(7)
}

fn now_utc(fraction_digits: usize) -> String {
    let t = time::OffsetDateTime::now_utc();
    let ms = t.millisecond();
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    match fraction_digits {
        9 => format!("{base}.{ms:03}000000"),
        _ => format!("{base}.{ms:03}Z"),
    }
}

fn run(state: &mut State, words: &[&str]) -> Reply {
    match words {
        ["--version"] => Reply::ok(format!("{}\n", state.version)),
        ["list", "vms"] => Reply::ok(list(state, |_| true)),
        ["list", "runningvms"] => {
            Reply::ok(list(state, |v| v.state == "running" || v.state == "paused"))
        }
        ["list", "hostinfo"] => Reply::ok(hostinfo(state)),
        ["showvminfo", vm, "--machinereadable"] => match find(state, vm) {
            Some(i) => Reply::ok(showvminfo(state, &state.vms[i])),
            None => Reply::not_found(vm),
        },
        ["showmediuminfo" | "showhdinfo", rest @ ..] => {
            let id = rest.last().copied().unwrap_or_default();
            match state.media.iter().find(|m| m.uuid == id || m.location == id) {
                Some(m) => Reply::ok(mediuminfo(state, m)),
                None => Reply::com_error(
                    &format!("Could not find file for the medium '{id}' (VERR_FILE_NOT_FOUND)"),
                    "VBOX_E_FILE_ERROR",
                    "0x80bb0004",
                    "MediumWrap",
                    "OpenMedium(Bstr(pszFilenameOrUuid).raw(), enmDevType, enmAccessMode, fForceNewUuidOnOpen, pMedium.asOutParam())",
                ),
            }
        }
        ["guestproperty", "enumerate", vm, ..] => match find(state, vm) {
            Some(i) => Reply::ok(guestproperties(state, &state.vms[i])),
            None => Reply::not_found(vm),
        },
        ["metrics", "setup", ..] => {
            state.metrics_set_up =
                state.vms.iter().filter(|v| v.state == "running").map(|v| v.uuid.clone()).collect();
            Reply::ok("")
        }
        ["metrics", "query", ..] => Reply::ok(metrics(state)),
        ["startvm", vm, rest @ ..] => startvm(state, vm, rest),
        ["controlvm", vm, action, ..] => controlvm(state, vm, action),
        ["snapshot", vm, rest @ ..] => snapshot(state, vm, rest),
        _ => Reply::syntax(&format!("Syntax error: unknown command {:?}", words.join(" "))),
    }
}

fn list(state: &State, keep: impl Fn(&Vm) -> bool) -> String {
    state
        .vms
        .iter()
        .filter(|v| keep(v))
        .map(|v| {
            let name = if v.inaccessible { "<inaccessible>" } else { v.name.as_str() };
            format!("\"{name}\" {{{}}}\n", v.uuid)
        })
        .collect()
}

fn hostinfo(state: &State) -> String {
    format!(
        "Host Information:\n\nHost time: {}\nProcessor online count: {n}\nProcessor count: {n}\nProcessor online core count: {c}\nProcessor core count: {c}\nProcessor supports HW virtualization: yes\nProcessor supports PAE: yes\nProcessor supports long mode: yes\nMemory size: 32010 MByte\nMemory available: 20533 MByte\nOperating system: Linux\nOperating system version: 6.8.0-48-generic\n",
        now_utc(9),
        n = state.host_cpus,
        c = (state.host_cpus / 2).max(1)
    )
}

/// `key="value"` with VirtualBox's escaping of `"` and `\`; keys with `-` or spaces quoted.
fn mr(key: &str, value: &str) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    if key.contains([' ', '-', '=']) {
        format!("\"{}\"=\"{}\"\n", esc(key), esc(value))
    } else {
        format!("{}=\"{}\"\n", esc(key), esc(value))
    }
}

fn showvminfo(state: &State, vm: &Vm) -> String {
    if vm.inaccessible {
        return format!("name=\"<inaccessible>\"\nUUID=\"{}\"\n", vm.uuid);
    }
    let major = major(state);
    let dir = format!("/home/vbox/VirtualBox VMs/{}", vm.name);
    let mut o = mr("name", &vm.name);
    if state.version.starts_with("7.0") {
        // Real 7.0.x quirk: a human-readable line inside machine-readable output.
        o.push_str("Encryption:     disabled\n");
    } else if major >= 7 {
        o.push_str(&mr("encryption", "disabled"));
    }
    o.push_str(&mr("groups", "/"));
    if major >= 7 && !state.version.starts_with("7.0") {
        o.push_str(&mr("platformArchitecture", "x86"));
    }
    o.push_str(&mr("ostype", &vm.ostype));
    o.push_str(&mr("UUID", &vm.uuid));
    o.push_str(&mr("CfgFile", &format!("{dir}/{}.vbox", vm.name)));
    o.push_str(&mr("SnapFldr", &format!("{dir}/Snapshots")));
    o.push_str(&mr("LogFldr", &format!("{dir}/Logs")));
    o.push_str(&mr("hardwareuuid", &vm.uuid));
    o.push_str(&format!(
        "memory={}\npagefusion=\"off\"\nvram=16\ncpuexecutioncap=100\n",
        vm.memory_mb
    ));
    o.push_str(&format!("hpet=\"off\"\nchipset=\"piix3\"\nfirmware=\"BIOS\"\ncpus={}\n", vm.cpus));
    o.push_str(
        "pae=\"on\"\nlongmode=\"on\"\napic=\"on\"\nx2apic=\"on\"\ncpuid-portability-level=0\n",
    );
    o.push_str("bootmenu=\"messageandmenu\"\nboot1=\"dvd\"\nboot2=\"disk\"\nboot3=\"none\"\nboot4=\"none\"\n");
    o.push_str("acpi=\"on\"\nioapic=\"on\"\nbiosapic=\"apic\"\nbiossystemtimeoffset=0\n");
    if major >= 6 {
        o.push_str(&format!("BIOS NVRAM File=\"{dir}/{}.nvram\"\n", vm.name.replace('"', "\\\"")));
    }
    o.push_str("rtcuseutc=\"on\"\nhwvirtex=\"on\"\nnestedpaging=\"on\"\nparavirtprovider=\"default\"\neffparavirtprovider=\"kvm\"\n");
    o.push_str(&format!("VMState=\"{}\"\nVMStateChangeTime=\"{}\"\n", vm.state, vm.state_change));
    if vm.state == "saved" {
        o.push_str(&mr("VMStateFile", &format!("{dir}/Snapshots/state.sav")));
    }
    o.push_str(
        "monitorcount=1\naccelerate3d=\"off\"\nteleporterenabled=\"off\"\nteleporterport=0\n",
    );
    o.push_str("autostart-enabled=\"off\"\nautostart-delay=0\ndefaultfrontend=\"\"\n");
    for (i, c) in vm.controllers.iter().enumerate() {
        o.push_str(&mr(&format!("storagecontrollername{i}"), &c.name));
        o.push_str(&mr(&format!("storagecontrollertype{i}"), &c.kind));
        o.push_str(&format!(
            "storagecontrollerinstance{i}=\"0\"\nstoragecontrollermaxportcount{i}=\"30\"\nstoragecontrollerportcount{i}=\"{}\"\nstoragecontrollerbootable{i}=\"on\"\n",
            c.ports
        ));
    }
    for c in &vm.controllers {
        let devices = if c.kind.starts_with("PIIX") || c.kind == "ICH6" { 2 } else { 1 };
        for port in 0..c.ports {
            for device in 0..devices {
                let slot = format!("{}-{port}-{device}", c.name);
                let Some(a) = vm
                    .attachments
                    .iter()
                    .find(|a| a.controller == c.name && a.port == port && a.device == device)
                else {
                    o.push_str(&mr(&slot, "none"));
                    continue;
                };
                let medium =
                    a.medium.as_deref().and_then(|u| state.media.iter().find(|m| m.uuid == u));
                match medium {
                    Some(m) => {
                        o.push_str(&mr(&slot, &m.location));
                        o.push_str(&mr(&format!("{}-ImageUUID-{port}-{device}", c.name), &m.uuid));
                    }
                    None => o.push_str(&mr(&slot, "emptydrive")),
                }
                if a.kind == "dvd" {
                    if major >= 7 {
                        o.push_str(&mr(&format!("{}-tempeject-{port}-{device}", c.name), "off"));
                        o.push_str(&mr(&format!("{}-IsEjected-{port}-{device}", c.name), "off"));
                    } else {
                        o.push_str(&mr(&format!("{}-IsEjected", c.name), "off"));
                    }
                }
                if major >= 6 && medium.is_some() {
                    if c.name.eq_ignore_ascii_case("SATA") {
                        o.push_str(&mr(
                            &format!("{}-hot-pluggable-{port}-{device}", c.name),
                            "off",
                        ));
                    }
                    o.push_str(&mr(&format!("{}-nonrotational-{port}-{device}", c.name), "off"));
                    o.push_str(&mr(&format!("{}-discard-{port}-{device}", c.name), "off"));
                }
            }
        }
    }
    for slot in 1..=8 {
        let Some(n) = vm.nics.iter().find(|n| n.slot == slot) else {
            o.push_str(&format!("nic{slot}=\"none\"\n"));
            continue;
        };
        let network_key = match n.attachment.as_str() {
            "nat" => "natnet",
            "bridged" => "bridgeadapter",
            "hostonly" => "hostonlyadapter",
            "intnet" => "intnet",
            "natnetwork" => "nat-network",
            _ => "generic",
        };
        o.push_str(&mr(&format!("{network_key}{slot}"), &n.network));
        o.push_str(&format!(
            "macaddress{slot}=\"{}\"\ncableconnected{slot}=\"on\"\nnic{slot}=\"{}\"\nnictype{slot}=\"{}\"\nnicspeed{slot}=\"0\"\n",
            n.mac, n.attachment, n.adapter
        ));
        if n.attachment == "nat" {
            o.push_str(
                "mtu=\"0\"\nsockSnd=\"64\"\nsockRcv=\"64\"\ntcpWndSnd=\"64\"\ntcpWndRcv=\"64\"\n",
            );
        }
    }
    o.push_str("hidpointing=\"usbtablet\"\nhidkeyboard=\"ps2kbd\"\nuart1=\"off\"\nuart2=\"off\"\naudio=\"none\"\n");
    let running = vm.state == "running" || vm.state == "paused";
    if running {
        o.push_str("SessionName=\"headless\"\n");
        if major < 6 {
            o.push_str("VideoMode=\"720,400,0\"@0,0 1\n");
        }
    }
    o.push_str("vrde=\"on\"\nvrdeport=-1\nvrdeports=\"5901\"\n");
    if major < 6 {
        o.push_str("vrdeproperty[TCP/Address]=<not set>\nvideocapres=1024x768\nvideocapopts=\n");
    }
    o.push_str("usb=\"off\"\nehci=\"off\"\nxhci=\"off\"\n");
    if running {
        o.push_str("VRDEActiveConnection=\"off\"\nVRDEClients=0\n");
    }
    if major >= 6 {
        o.push_str("recording_enabled=\"off\"\nrecording_screens=1\n rec_screen0\nrec_screen_enabled=\"on\"\nrec_screen_id=0\n");
    }
    if let Some(d) = &vm.description {
        o.push_str(&mr("description", d));
    }
    // 7.x prints the snapshot tree before the guest section, older versions at the very end.
    if major >= 7 {
        o.push_str(&snapshot_tree(vm));
    }
    o.push_str("GuestMemoryBalloon=0\n");
    if running {
        o.push_str("GuestOSType=\"Linux26_64\"\n");
        match &vm.guest_additions {
            Some(v) => {
                o.push_str(&format!(
                    "GuestAdditionsRunLevel=2\nGuestAdditionsVersion=\"{v} r165100\"\n"
                ));
                o.push_str("GuestAdditionsFacility_VirtualBox Base Driver=50,1763647340000\n");
                o.push_str("GuestAdditionsFacility_Seamless Mode=0,1763647340000\n");
            }
            None => o.push_str("GuestAdditionsRunLevel=0\n"),
        }
    }
    if major < 7 {
        o.push_str(&snapshot_tree(vm));
    }
    o
}

/// The snapshot tree as `showSnapshots` prints it: per node `SnapshotName<p>`,
/// `SnapshotUUID<p>`, `SnapshotDescription<p>` when not empty, values raw (not escaped), `<p>`
/// growing by `-<n>` per level, and the `CurrentSnapshot*` lines right after the current node.
fn snapshot_tree(vm: &Vm) -> String {
    fn node(vm: &Vm, s: &Snapshot, p: &str, out: &mut String) {
        out.push_str(&format!("SnapshotName{p}=\"{}\"\n", s.name));
        out.push_str(&format!("SnapshotUUID{p}=\"{}\"\n", s.uuid));
        if !s.description.is_empty() {
            out.push_str(&format!("SnapshotDescription{p}=\"{}\"\n", s.description));
        }
        if vm.current_snapshot.as_deref() == Some(s.uuid.as_str()) {
            out.push_str(&format!("CurrentSnapshotName=\"{}\"\n", s.name));
            out.push_str(&format!("CurrentSnapshotUUID=\"{}\"\n", s.uuid));
            out.push_str(&format!("CurrentSnapshotNode=\"SnapshotName{p}\"\n"));
        }
        let children = vm.snapshots.iter().filter(|c| c.parent.as_deref() == Some(&s.uuid));
        for (i, child) in children.enumerate() {
            node(vm, child, &format!("{p}-{}", i + 1), out);
        }
    }
    let mut out = String::new();
    if let Some(root) = vm.snapshots.iter().find(|s| s.parent.is_none()) {
        node(vm, root, "", &mut out);
    }
    out
}

fn snapshot(state: &mut State, what: &str, rest: &[&str]) -> Reply {
    let Some(i) = find(state, what) else {
        return Reply::not_found(what);
    };
    let progress = "0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%\n";
    match rest {
        ["list", "--machinereadable"] => {
            if state.vms[i].snapshots.is_empty() {
                // On stdout, with exit status 1 (VBoxManageSnapshot.cpp).
                return Reply {
                    code: 1,
                    stdout: "This machine does not have any snapshots\n".into(),
                    stderr: String::new(),
                };
            }
            Reply::ok(snapshot_tree(&state.vms[i]))
        }
        ["take", name, options @ ..] => {
            let mut description = String::new();
            let mut words = options.iter();
            while let Some(w) = words.next() {
                match *w {
                    "--description" => description = words.next().unwrap_or(&"").to_string(),
                    "--live" | "--pause" => {}
                    other => return Reply::syntax(&format!("Invalid parameter '{other}'")),
                }
            }
            state.snapshots_taken += 1;
            let uuid = format!("5a500000-0000-4000-8000-{:012x}", state.snapshots_taken);
            let vm = &mut state.vms[i];
            let holds_memory = matches!(vm.state.as_str(), "running" | "paused" | "saved");
            vm.snapshots.push(Snapshot {
                uuid: uuid.clone(),
                name: name.to_string(),
                description,
                parent: vm.current_snapshot.clone(),
                state: if holds_memory { "saved" } else { "poweroff" }.into(),
            });
            vm.current_snapshot = Some(uuid.clone());
            Reply {
                code: 0,
                stdout: format!("Snapshot taken. UUID: {uuid}\n"),
                stderr: progress.into(),
            }
        }
        [verb @ ("restore" | "delete"), which] => {
            let vm = &mut state.vms[i];
            let Some(at) = vm
                .snapshots
                .iter()
                .position(|s| s.uuid.eq_ignore_ascii_case(which) || s.name == *which)
            else {
                let message = if which.len() == 36 && which.matches('-').count() == 4 {
                    format!("Could not find a snapshot with UUID {{{which}}}")
                } else {
                    format!("Could not find a snapshot named '{which}'")
                };
                return Reply::com_error(
                    &message,
                    "VBOX_E_OBJECT_NOT_FOUND",
                    "0x80bb0001",
                    "SessionMachine",
                    "FindSnapshot(Bstr(a->argv[2]).raw(), pSnapshot.asOutParam())",
                );
            };
            let snap = vm.snapshots[at].clone();
            if *verb == "restore" {
                if matches!(vm.state.as_str(), "running" | "paused") {
                    let shown = if vm.state == "running" { "Running" } else { "Paused" };
                    return Reply::com_error(
                        &format!("Cannot delete the current state of the running machine (machine state: {shown})"),
                        "VBOX_E_INVALID_VM_STATE",
                        "0x80bb0002",
                        "SessionMachine",
                        "RestoreSnapshot(pSnapshot, pProgress.asOutParam())",
                    );
                }
                vm.current_snapshot = Some(snap.uuid.clone());
                vm.state = snap.state.clone();
                vm.state_change = now_utc(9);
                return Reply {
                    code: 0,
                    stdout: format!("Restoring snapshot '{}' ({})\n", snap.name, snap.uuid),
                    stderr: progress.into(),
                };
            }
            let children =
                vm.snapshots.iter().filter(|c| c.parent.as_deref() == Some(&snap.uuid)).count();
            let is_current = vm.current_snapshot.as_deref() == Some(snap.uuid.as_str());
            let refusal = if children > 1 {
                Some(format!("Snapshot '{}' of the machine '{}' cannot be deleted, because it has {children} child snapshots, which is more than the one snapshot allowed for deletion", snap.name, vm.name))
            } else if is_current && children == 1 {
                Some(format!("Snapshot '{}' of the machine '{}' cannot be deleted, because it is the current snapshot and has one child snapshot", snap.name, vm.name))
            } else {
                None
            };
            if let Some(message) = refusal {
                return Reply::com_error(
                    &message,
                    "VBOX_E_INVALID_OBJECT_STATE",
                    "0x80bb0007",
                    "SessionMachine",
                    "DeleteSnapshot(bstrSnapGuid.raw(), pProgress.asOutParam())",
                );
            }
            // The child (if any) moves up to the deleted snapshot's parent, as does the
            // current state when the deleted one was current.
            for c in vm.snapshots.iter_mut().filter(|c| c.parent.as_deref() == Some(&snap.uuid)) {
                c.parent = snap.parent.clone();
            }
            if is_current {
                vm.current_snapshot = snap.parent.clone();
            }
            vm.snapshots.remove(at);
            Reply {
                code: 0,
                stdout: format!("Deleting snapshot '{}' ({})\n", snap.name, snap.uuid),
                stderr: progress.into(),
            }
        }
        _ => Reply::syntax(&format!("Invalid snapshot command {:?}", rest.join(" "))),
    }
}

fn mediuminfo(state: &State, m: &Medium) -> String {
    let users: Vec<String> = state
        .vms
        .iter()
        .filter(|v| v.attachments.iter().any(|a| a.medium.as_deref() == Some(&m.uuid)))
        .map(|v| format!("{} (UUID: {})", v.name, v.uuid))
        .collect();
    let is_iso = m.location.ends_with(".iso");
    format!(
        "UUID:           {}\nParent UUID:    base\nState:          created\nType:           {}\nLocation:       {}\nStorage format: {}\nFormat variant: dynamic default\nCapacity:       {} MBytes\nSize on disk:   {} MBytes\nEncryption:     disabled\nIn use by VMs:  {}\n",
        m.uuid,
        if is_iso { "readonly" } else { "normal (base)" },
        m.location,
        if is_iso { "RAW" } else { "VDI" },
        m.capacity_mb,
        m.size_on_disk_mb,
        users.join(", ")
    )
}

/// The guest properties a running VM with Guest Additions publishes.
fn guestproperties(state: &State, vm: &Vm) -> String {
    let mut props: Vec<(String, String, &str)> = Vec::new();
    if vm.state == "running" {
        if let Some(ga) = &vm.guest_additions {
            props.push(("/VirtualBox/GuestAdd/Version".into(), ga.clone(), ""));
            props.push(("/VirtualBox/GuestInfo/OS/Product".into(), "Linux".into(), ""));
            props.push(("/VirtualBox/GuestInfo/OS/ServicePack".into(), String::new(), ""));
            props.push((
                "/VirtualBox/GuestInfo/OS/LoggedInUsers".into(),
                "0".into(),
                "TRANSIENT, TRANSRESET",
            ));
            props.push((
                "/VirtualBox/GuestInfo/Net/Count".into(),
                vm.guest_ifs.len().to_string(),
                "",
            ));
            for (i, g) in vm.guest_ifs.iter().enumerate() {
                let p = format!("/VirtualBox/GuestInfo/Net/{i}");
                props.push((format!("{p}/MAC"), g.mac.clone(), ""));
                props.push((format!("{p}/Name"), format!("enp0s{}", 3 + i), ""));
                let status = if g.down { "Down" } else { "Up" };
                props.push((format!("{p}/Status"), status.into(), ""));
                if let Some(ip) = &g.ipv4 {
                    props.push((format!("{p}/V4/IP"), ip.clone(), ""));
                }
                if let Some(mask) = &g.netmask {
                    props.push((format!("{p}/V4/Netmask"), mask.clone(), ""));
                }
                if let Some(ip) = &g.ipv6 {
                    props.push((format!("{p}/V6/IP"), ip.clone(), ""));
                }
            }
        }
    }
    props.push((
        "/VirtualBox/HostInfo/VBoxVer".into(),
        state.version.split('r').next().unwrap_or_default().to_string(),
        "TRANSIENT, RDONLYGUEST",
    ));
    if major(state) >= 7 {
        new_format(&mut props)
    } else {
        // Unsorted in the old layout: emit in insertion order.
        props
            .iter()
            .map(|(n, v, f)| {
                format!("Name: {n}, value: {v}, timestamp: 1763647340072208000, flags: {f}\n")
            })
            .collect()
    }
}

/// VirtualBox 7's layout: sorted, `%-*s = '%s'` padded to a column, then `@ <time>`, flags.
fn new_format(props: &mut [(String, String, &str)]) -> String {
    props.sort_by(|a, b| a.0.cmp(&b.0));
    let name_w = props.iter().map(|p| p.0.chars().count()).max().unwrap_or(1).clamp(1, 48);
    let value_w = props.iter().map(|p| p.1.chars().count()).max().unwrap_or(1).clamp(1, 28);
    let ts = now_utc(3);
    let mut out = String::new();
    for (n, v, f) in props.iter() {
        let head = format!("{n:<name_w$} = '{v}'");
        let width = name_w + value_w + 6;
        let used = head.chars().count();
        let pad = if used < width { width - used } else { 1 };
        out.push_str(&head);
        out.push_str(&" ".repeat(pad));
        out.push_str(&format!("@ {ts}"));
        if !f.is_empty() {
            out.push(' ');
            out.push_str(f);
        }
        out.push('\n');
    }
    out
}

fn metrics(state: &State) -> String {
    let mut out = String::from(
        "Object          Metric                                   Values\n--------------- ---------------------------------------- --------------------------------------------\n",
    );
    let row =
        |object: &str, metric: &str, values: &str| format!("{object:<15} {metric:<40} {values}\n");
    out.push_str(&row("host", "CPU/Load/User", "3.07%"));
    out.push_str(&row("host", "CPU/Load/Kernel", "1.20%"));
    out.push_str(&row("host", "RAM/Usage/Used", "11476812 kB"));
    for vm in state.vms.iter().filter(|v| v.state == "running") {
        if state.metrics_set_up.contains(&vm.uuid) {
            out.push_str(&row(&vm.name, "CPU/Load/User", &format!("{:.2}%", vm.cpu_user_pct)));
            out.push_str(&row(&vm.name, "CPU/Load/Kernel", "0.50%"));
            out.push_str(&row(&vm.name, "RAM/Usage/Used", &format!("{} kB", vm.ram_used_kb)));
        } else {
            // Registered but not set up: the row is printed with no values.
            for metric in ["CPU/Load/User", "CPU/Load/Kernel", "RAM/Usage/Used"] {
                out.push_str(&row(&vm.name, metric, ""));
            }
        }
        out.push_str(&row(&vm.name, "Guest/RAM/Usage/Free", ""));
    }
    out
}

fn startvm(state: &mut State, what: &str, rest: &[&str]) -> Reply {
    let Some(i) = find(state, what) else {
        return Reply::not_found(what);
    };
    if rest.first() != Some(&"--type") || rest.get(1) != Some(&"headless") {
        return Reply {
            code: 1,
            stdout: format!("Waiting for VM \"{what}\" to power on...\n"),
            stderr: format!("VBoxManage: error: The virtual machine '{}' has terminated unexpectedly during startup with exit code 1\nVBoxManage: error: Details: code NS_ERROR_FAILURE (0x80004005), component MachineWrap, interface IMachine\n", state.vms[i].name),
        };
    }
    let vm = &mut state.vms[i];
    match vm.state.as_str() {
        "poweroff" | "saved" | "aborted" | "teleported" => {
            vm.state = "running".into();
            vm.state_change = now_utc(9);
            Reply::ok(format!(
                "Waiting for VM \"{what}\" to power on...\nVM \"{what}\" has been successfully started.\n"
            ))
        }
        _ => Reply::locked(&vm.name.clone()),
    }
}

fn controlvm(state: &mut State, what: &str, action: &str) -> Reply {
    let Some(i) = find(state, what) else {
        return Reply::not_found(what);
    };
    let v7 = major(state) >= 7;
    let vm = &mut state.vms[i];
    let progress = "0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%\n";
    let running = vm.state == "running";
    let paused = vm.state == "paused";
    // Stuck (guru meditation): VirtualBox powers it off, and does nothing else with it.
    if vm.state == "gurumeditation" && action == "poweroff" {
        vm.state = "poweroff".into();
        vm.state_change = now_utc(9);
        return Reply { code: 0, stdout: String::new(), stderr: progress.into() };
    }
    if !running && !paused {
        if action == "poweroff" {
            return Reply::invalid_state(
                "Invalid machine state: PoweredOff (must be Running, Paused or Stuck)",
                "PowerDown(progress.asOutParam())",
            );
        }
        return Reply {
            code: 1,
            stdout: String::new(),
            stderr: format!("VBoxManage: error: Machine '{what}' is not currently running.\n"),
        };
    }
    let set = |vm: &mut Vm, s: &str| {
        vm.state = s.into();
        vm.state_change = now_utc(9);
    };
    match action {
        "poweroff" => {
            set(vm, "poweroff");
            Reply { code: 0, stdout: String::new(), stderr: progress.into() }
        }
        "savestate" => {
            set(vm, "saved");
            Reply { code: 0, stdout: String::new(), stderr: progress.into() }
        }
        "acpipowerbutton" if paused => {
            Reply::invalid_state("Invalid machine state: Paused", "PowerButton()")
        }
        "acpipowerbutton" => {
            set(vm, "poweroff");
            Reply::ok("")
        }
        "pause" if running => {
            set(vm, "paused");
            Reply::ok("")
        }
        "resume" if paused => {
            set(vm, "running");
            Reply::ok("")
        }
        "pause" | "resume" => Reply::invalid_state(
            &format!("Invalid machine state: {}", if paused { "Paused" } else { "Running" }),
            "Resume()",
        ),
        "reset" if running => Reply::ok(""),
        "reboot" if v7 && running && vm.guest_additions.is_some() => Reply::ok(""),
        "reboot" if v7 => Reply::com_error(
            "Guest Additions are not installed or not running",
            "VBOX_E_NOT_SUPPORTED",
            "0x80bb0009",
            "ConsoleWrap",
            "Reboot()",
        ),
        "reboot" => Reply::syntax("Invalid parameter 'reboot'"),
        _ => Reply::invalid_state(&format!("Invalid machine state: {}", vm.state), action),
    }
}

// ---- fake-init: the scenarios tests and the benchmark start from ----

fn fake_init(args: &[String]) -> ExitCode {
    let (Some(dir), Some(scenario)) = (args.first(), args.get(1)) else {
        eprintln!("usage: fake_vboxmanage fake-init <dir> <lab|bench> [--vms N] [--version V]");
        return ExitCode::from(2);
    };
    let option =
        |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let version = option("--version").unwrap_or_else(|| "7.1.4r165100".into());
    let mut state = State {
        version,
        host_cpus: 8,
        vms: Vec::new(),
        media: Vec::new(),
        faults: Vec::new(),
        metrics_set_up: Vec::new(),
        snapshots_taken: 0,
    };
    match scenario.as_str() {
        "lab" => lab(&mut state),
        "bench" => {
            let n = option("--vms").and_then(|n| n.parse().ok()).unwrap_or(100);
            bench(&mut state, n);
        }
        other => {
            eprintln!("unknown scenario {other:?}");
            return ExitCode::from(2);
        }
    }
    let path = Path::new(dir).join("state.json");
    std::fs::write(&path, serde_json::to_string_pretty(&state).unwrap()).expect("write state");
    ExitCode::SUCCESS
}

fn uuid(n: u32) -> String {
    format!("6a1e0000-0000-4000-8000-{n:012x}")
}

fn medium_uuid(n: u32) -> String {
    format!("d15c0000-0000-4000-8000-{n:012x}")
}

#[allow(clippy::too_many_arguments)]
fn vm(
    n: u32,
    name: &str,
    state: &str,
    cpus: u32,
    memory_mb: u64,
    disks: &[(u32, u64, u64)],
    media: &mut Vec<Medium>,
    ga: bool,
) -> Vm {
    let mut attachments = Vec::new();
    for (port, (m, cap, used)) in disks.iter().enumerate() {
        let id = medium_uuid(*m);
        media.push(Medium {
            uuid: id.clone(),
            location: format!("/home/vbox/VirtualBox VMs/{name}/{name}-disk{port}.vdi"),
            capacity_mb: *cap,
            size_on_disk_mb: *used,
        });
        attachments.push(Attachment {
            controller: "SATA".into(),
            port: port as u32,
            device: 0,
            kind: "disk".into(),
            medium: Some(id),
        });
    }
    attachments.push(Attachment {
        controller: "IDE".into(),
        port: 1,
        device: 0,
        kind: "dvd".into(),
        medium: None,
    });
    let mac1 = format!("080027{:06X}", n * 2);
    let mac2 = format!("080027{:06X}", n * 2 + 1);
    Vm {
        uuid: uuid(n),
        name: name.into(),
        state: state.into(),
        state_change: "2025-11-20T14:02:11.118000000".into(),
        inaccessible: false,
        ostype: "Ubuntu (64-bit)".into(),
        cpus,
        memory_mb,
        controllers: vec![
            Controller {
                name: "SATA".into(),
                kind: "IntelAhci".into(),
                ports: disks.len().max(1) as u32,
            },
            Controller { name: "IDE".into(), kind: "PIIX4".into(), ports: 2 },
        ],
        attachments,
        nics: vec![
            Nic {
                slot: 1,
                attachment: "nat".into(),
                network: "nat".into(),
                mac: mac1.clone(),
                adapter: "virtio".into(),
            },
            Nic {
                slot: 2,
                attachment: "bridged".into(),
                network: "enp3s0".into(),
                mac: mac2.clone(),
                adapter: "82540EM".into(),
            },
        ],
        guest_additions: ga.then(|| "7.1.4".into()),
        guest_ifs: vec![
            GuestIf {
                mac: mac1,
                ipv4: Some("10.0.2.15".into()),
                netmask: Some("255.255.255.0".into()),
                ipv6: None,
                down: false,
            },
            GuestIf {
                mac: mac2,
                ipv4: Some(format!("192.168.{}.{}", 10 + n / 250, 1 + n % 250)),
                netmask: Some("255.255.255.0".into()),
                ipv6: Some(format!("fd00::a00:27ff:fe00:{:x}", n)),
                down: false,
            },
        ],
        cpu_user_pct: 6.25,
        ram_used_kb: memory_mb * 1024 / 2,
        description: None,
        snapshots: Vec::new(),
        current_snapshot: None,
    }
}

/// A few VMs covering what the tests need: every common state, odd names, Guest Additions or
/// not, several NICs, a DVD, an inaccessible VM.
fn lab(state: &mut State) {
    let media = &mut state.media;
    let mut web =
        vm(1, "web-01", "running", 2, 2048, &[(1, 20480, 6143), (2, 102400, 512)], media, true);
    web.description = Some("Web front end.\nOwner: \"ops\" team\nBuilds in C:\\builds".into());
    web.nics.push(Nic {
        slot: 3,
        attachment: "hostonly".into(),
        network: "vboxnet0".into(),
        mac: "0800270A0B0C".into(),
        adapter: "82540EM".into(),
    });
    web.guest_ifs.push(GuestIf {
        mac: "0800270A0B0C".into(),
        ipv4: Some("192.168.56.10".into()),
        netmask: Some("255.255.255.0".into()),
        ipv6: None,
        down: true,
    });
    // A guest-internal bridge: its MAC is no NIC of the VM.
    web.guest_ifs.push(GuestIf {
        mac: "0242AC110002".into(),
        ipv4: Some("172.17.0.1".into()),
        netmask: Some("255.255.0.0".into()),
        ipv6: None,
        down: false,
    });
    web.guest_ifs[1].ipv4 = Some("192.168.1.57".into());
    web.guest_ifs[1].ipv6 = Some("fd00::a00:27ff:fed4:e5f6".into());
    let db = vm(2, "db \"primary\" {main}", "poweroff", 4, 8192, &[(3, 51200, 20000)], media, true);
    let mut cafe = vm(3, "café ✓ ünïcode", "running", 1, 1024, &[(4, 10240, 2048)], media, false);
    cafe.cpu_user_pct = 5.75;
    let build = vm(4, "build box", "saved", 8, 16384, &[(5, 204800, 150000)], media, true);
    let paused = vm(5, "paused-vm", "paused", 1, 512, &[(6, 8192, 1024)], media, true);
    let crashed = vm(6, "old-crash", "aborted", 1, 512, &[], media, false);
    let mut lost = vm(7, "lost", "poweroff", 1, 512, &[], media, false);
    lost.inaccessible = true;
    state.vms = vec![web, db, cafe, build, paused, crashed, lost];
}

/// `n` VMs: 70 % running with Guest Additions, 20 % powered off, 10 % saved; two disks each.
fn bench(state: &mut State, n: u32) {
    for i in 0..n {
        let s = match i % 10 {
            0..=6 => "running",
            7 | 8 => "poweroff",
            _ => "saved",
        };
        let v = vm(
            100 + i,
            &format!("bench-{i:03}"),
            s,
            1 + i % 8,
            512 << (i % 5),
            &[(2 * i + 100, 20480, 4096), (2 * i + 101, 102400, 1024)],
            &mut state.media,
            true,
        );
        state.vms.push(v);
    }
}
