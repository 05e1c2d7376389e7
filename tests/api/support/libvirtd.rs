//! Test support: a private, unprivileged libvirt session daemon driving real QEMU.
//!
//! Each [`LibvirtDaemon`] owns a fresh directory `/tmp/vdXXXXXX` (kept short: unix socket paths
//! are limited to 108 bytes) holding the daemon's `XDG_RUNTIME_DIR` (`run/`), `XDG_CONFIG_HOME`
//! (`cfg/`, domain definitions), `XDG_CACHE_HOME` (`cache/`, logs) and the VMs' disk images
//! (`img/`). Nothing in /etc is touched. When the tests run as root the daemon (and so QEMU) runs
//! as the plain user `vmtest`, created once on first use.
//!
//! VMs have no operating system: SeaBIOS finds nothing to boot and idles, which is enough for
//! libvirt to report real statistics. Networking is QEMU user-mode only (`<interface
//! type='user'>`): no bridges, no DHCP, no traffic leaves QEMU.
//!
//! QEMU capability probing costs a fresh daemon ~4 s; the probed capabilities are therefore kept
//! in `$XDG_CACHE_HOME` (or `~/.cache`)`/vmdeck-tests/` and copied into each new daemon (libvirt
//! itself checks that they are still valid and re-probes when QEMU or libvirt changed).
//!
//! Std only (plus `tempfile`); setup is driven with the `virsh` CLI. Safe to use from tests
//! running in parallel, each with its own daemon.
//!
//! Long because starting a real daemon as an unprivileged user, with QEMU disk images and domain
//! definitions, has many steps, each with an error that says what to install or fix.
#![allow(dead_code)]

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// User the daemon runs as when the tests run as root.
const DAEMON_USER: &str = "vmtest";
/// How long to wait for the daemon's socket to appear.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait for `virsh version` to answer once the socket exists (a daemon probing QEMU
/// for the first time takes several seconds, more on a loaded machine).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for a single virsh call.
const VIRSH_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for the virsh calls made while dropping.
const DROP_VIRSH_TIMEOUT: Duration = Duration::from_secs(15);

const INSTALL_HINT: &str = "run scripts/setup.sh --test (apt-get install libvirt-daemon \
                            libvirt-daemon-driver-qemu qemu-system-x86 libvirt-clients)";

/// Returns Ok(()) when the real-VM tests should run, Err(reason) when `VMDECK_SKIP_REAL_VM=1` is
/// set (the only way to skip).
pub fn real_vm_tests_enabled() -> Result<(), String> {
    match std::env::var("VMDECK_SKIP_REAL_VM") {
        Ok(v) if v.trim() == "1" => {
            Err("VMDECK_SKIP_REAL_VM=1 is set: skipping tests that need a real libvirtd and QEMU"
                .to_string())
        }
        _ => Ok(()),
    }
}

/// The account the daemon runs as when we are root.
#[derive(Clone, Debug)]
struct DaemonUser {
    name: String,
    uid: u32,
    gid: u32,
}

/// Extra domain XML for [`LibvirtDaemon::define_vm_with`].
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// Inserted inside `<devices>`.
    pub devices: String,
    /// Inserted inside `<os>`.
    pub os: String,
}

impl Extras {
    /// A VNC display listening on 127.0.0.1 at a port no other process holds now (an explicit
    /// port rather than autoport: daemons of tests running side by side would pick the same
    /// first free port), with a VGA card, so SeaBIOS draws its text screen.
    pub fn vnc() -> Extras {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port on 127.0.0.1");
        Extras {
            devices: format!(
                "\n    <graphics type='vnc' port='{port}' autoport='no' listen='127.0.0.1'/>\n    \
                 <video><model type='vga'/></video>"
            ),
            os: String::new(),
        }
    }

    /// Adds SeaBIOS's boot menu ("Press ESC for boot menu."), shown for `timeout_ms`: a screen
    /// that changes when a key reaches the VM.
    pub fn with_boot_menu(mut self, timeout_ms: u32) -> Extras {
        self.os = format!("\n    <bootmenu enable='yes' timeout='{timeout_ms}'/>");
        self
    }
}

/// A private libvirtd (session daemon) running real QEMU, for tests. Dropping it destroys its
/// VMs and stops the daemon.
pub struct LibvirtDaemon {
    /// Owns the directory; removed last, in Drop.
    dir: Option<tempfile::TempDir>,
    /// `/tmp/vdXXXXXX`
    root: PathBuf,
    uri: String,
    libvirtd: PathBuf,
    virsh: PathBuf,
    /// `Some` when running as root: the daemon runs as this user via runuser.
    user: Option<DaemonUser>,
    /// "kvm" or "qemu", decided from the daemon's own capabilities.
    domain_type: &'static str,
    /// Pid of the running libvirtd, if we believe it runs.
    pid: Option<u32>,
}

impl LibvirtDaemon {
    /// Starts a fresh daemon in a new temp dir. Errors (never panics) with a message telling how
    /// to install what is missing.
    pub fn start() -> Result<Self, String> {
        let libvirtd = find_program("libvirtd")
            .ok_or_else(|| format!("libvirtd not found: {INSTALL_HINT}"))?;
        let virsh =
            find_program("virsh").ok_or_else(|| format!("virsh not found: {INSTALL_HINT}"))?;
        if find_program("qemu-system-x86_64").is_none() {
            return Err(format!("qemu-system-x86_64 not found: {INSTALL_HINT}"));
        }
        if !qemu_driver_installed() {
            return Err(format!(
                "libvirt's QEMU driver (libvirt_driver_qemu.so) is not installed: {INSTALL_HINT}"
            ));
        }

        let user = if current_euid()? == 0 { Some(ensure_daemon_user()?) } else { None };

        let dir = tempfile::Builder::new()
            .prefix("vd")
            .rand_bytes(6)
            .tempdir_in("/tmp")
            .map_err(|e| format!("cannot create a temp dir under /tmp: {e}"))?;
        let root = dir.path().to_path_buf();
        for sub in ["run", "cfg", "cache", "img", "xml"] {
            fs::create_dir(root.join(sub))
                .map_err(|e| format!("cannot create {}: {e}", root.join(sub).display()))?;
        }
        fs::set_permissions(root.join("run"), fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot chmod {}/run: {e}", root.display()))?;
        let caps_dir = root.join("cache/libvirt/qemu/cache/capabilities");
        if let Err(e) = fs::create_dir_all(&caps_dir) {
            return Err(format!("cannot create {}: {e}", caps_dir.display()));
        }
        if let Some(shared) = shared_caps_cache(user.as_ref()) {
            copy_xml_files(&shared, &caps_dir);
        }
        if let Some(u) = &user {
            chown_tree(&root, u.uid, u.gid)
                .map_err(|e| format!("cannot chown {} to {}: {e}", root.display(), u.name))?;
        }

        let uri = format!(
            "qemu+unix:///session?socket={}",
            root.join("run/libvirt/libvirt-sock").display()
        );
        let mut daemon = LibvirtDaemon {
            dir: Some(dir),
            root,
            uri,
            libvirtd,
            virsh,
            user,
            domain_type: "qemu",
            pid: None,
        };
        // On error `daemon` is dropped, which stops whatever was started and removes the dir.
        daemon.spawn_and_wait()?;

        if let Some(shared) = shared_caps_cache(daemon.user.as_ref()) {
            save_caps_cache(&caps_dir, &shared);
        }
        let caps = daemon.virsh(&["capabilities"])?;
        if caps.contains("<domain type='kvm'") || caps.contains("<domain type=\"kvm\"") {
            daemon.domain_type = "kvm";
        }
        Ok(daemon)
    }

    /// The URI vmdeck should connect to, e.g.
    /// `qemu+unix:///session?socket=/tmp/vdXXXXXX/run/libvirt/libvirt-sock`.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Defines (does not start) a tiny VM: name, vcpus, memory in MiB, a blank qcow2 disk of
    /// disk_mib MiB (vda, virtio), one `<interface type='user'>` NIC with model virtio, serial
    /// pty, no graphics. Domain type kvm if /dev/kvm is usable by the daemon's user, else qemu
    /// (TCG). Returns the uuid string.
    pub fn define_vm(
        &self,
        name: &str,
        vcpus: u32,
        memory_mib: u64,
        disk_mib: u64,
    ) -> Result<String, String> {
        self.define_vm_with(name, vcpus, memory_mib, disk_mib, &Extras::default())
    }

    /// [`LibvirtDaemon::define_vm`] with extra XML: `devices` inside `<devices>` (e.g.
    /// [`Extras::vnc`]'s graphics and video), `os` inside `<os>` (e.g. a boot menu).
    pub fn define_vm_with(
        &self,
        name: &str,
        vcpus: u32,
        memory_mib: u64,
        disk_mib: u64,
        extras: &Extras,
    ) -> Result<String, String> {
        if name.is_empty() || name.contains('/') || name.chars().any(char::is_control) {
            return Err(format!("invalid VM name {name:?}"));
        }
        if vcpus == 0 || memory_mib == 0 || disk_mib == 0 {
            return Err(format!("define_vm({name:?}): vcpus, memory_mib and disk_mib must be > 0"));
        }
        let file_stem: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
            .collect();
        let disk = self.root.join("img").join(format!("{file_stem}.qcow2"));
        write_blank_qcow2(&disk, disk_mib * 1024 * 1024)
            .map_err(|e| format!("cannot create disk image {}: {e}", disk.display()))?;
        if let Some(u) = &self.user {
            std::os::unix::fs::chown(&disk, Some(u.uid), Some(u.gid))
                .map_err(|e| format!("cannot chown {}: {e}", disk.display()))?;
        }

        let xml = format!(
            "<domain type='{ty}'>
  <name>{name}</name>
  <memory unit='MiB'>{mem}</memory>
  <currentMemory unit='MiB'>{mem}</currentMemory>
  <vcpu placement='static'>{vcpus}</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <boot dev='hd'/>{os_extra}
  </os>
  <features><acpi/><apic/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='user'>
      <model type='virtio'/>
    </interface>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <memballoon model='virtio'/>{devices_extra}
  </devices>
</domain>
",
            ty = self.domain_type,
            name = xml_escape(name),
            mem = memory_mib,
            vcpus = vcpus,
            disk = xml_escape(&disk.to_string_lossy()),
            os_extra = extras.os,
            devices_extra = extras.devices,
        );
        let xml_path = self.root.join("xml").join(format!("{file_stem}.xml"));
        fs::write(&xml_path, xml)
            .map_err(|e| format!("cannot write {}: {e}", xml_path.display()))?;
        let xml_arg = xml_path.to_string_lossy().into_owned();
        self.virsh(&["define", &xml_arg])?;
        let uuid = self.virsh(&["domuuid", name])?.trim().to_string();
        if uuid.is_empty() {
            return Err(format!("virsh domuuid {name} printed nothing"));
        }
        Ok(uuid)
    }

    /// Runs virsh against this daemon and returns stdout (Err with stderr on failure).
    pub fn virsh(&self, args: &[&str]) -> Result<String, String> {
        self.virsh_with_timeout(args, VIRSH_TIMEOUT)
    }

    /// Kills the daemon (SIGKILL) without touching its VMs' definitions; restart() starts it
    /// again with the same dirs and URI.
    pub fn kill(&mut self) {
        if let Some(pid) = self.pid.take().or_else(|| self.pid_from_file()) {
            kill_and_wait(pid, "libvirtd", Duration::from_secs(5));
        }
        // Remove the sockets so that a restart waits for the new daemon's socket.
        let _ = fs::remove_file(self.socket_path());
        let _ = fs::remove_file(self.root.join("run/libvirt/libvirt-admin-sock"));
    }

    /// Starts the daemon again (after kill()) with the same dirs and URI. If it is still
    /// running, it is killed first.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn_and_wait()
    }

    // ---------------------------------------------------------------- internals

    fn socket_path(&self) -> PathBuf {
        self.root.join("run/libvirt/libvirt-sock")
    }

    fn pid_from_file(&self) -> Option<u32> {
        read_pid_file(&self.root.join("run/libvirt/libvirtd.pid"))
            .filter(|&pid| process_alive(pid) && process_comm(pid).as_deref() == Some("libvirtd"))
    }

    fn virsh_with_timeout(&self, args: &[&str], timeout: Duration) -> Result<String, String> {
        let mut cmd = Command::new(&self.virsh);
        cmd.arg("-c").arg(&self.uri).args(args).env("LC_ALL", "C");
        let out =
            run_with_timeout(cmd, timeout).map_err(|e| format!("virsh {}: {e}", args.join(" ")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            Err(format!("virsh {} failed ({}): {stderr}", args.join(" "), out.status))
        }
    }

    /// Launches `libvirtd --daemon --timeout 0` (as the daemon user when root) and waits until
    /// it answers `virsh version`.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let run = self.root.join("run");
        let env = [
            format!("XDG_RUNTIME_DIR={}", run.display()),
            format!("XDG_CONFIG_HOME={}", self.root.join("cfg").display()),
            format!("XDG_CACHE_HOME={}", self.root.join("cache").display()),
        ];
        let mut cmd = match &self.user {
            Some(u) => {
                let mut c =
                    Command::new(find_program("runuser").unwrap_or_else(|| "runuser".into()));
                c.args(["-u", &u.name, "--", "env"]);
                c
            }
            None => Command::new("env"),
        };
        cmd.args(&env).arg(&self.libvirtd).args(["--daemon", "--timeout", "0"]);
        let stdio_log = self.root.join("libvirtd.stdio.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stdio_log)
            .map_err(|e| format!("cannot open {}: {e}", stdio_log.display()))?;
        let log2 = log.try_clone().map_err(|e| format!("dup log fd: {e}"))?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);

        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run libvirtd ({}): {e}", self.libvirtd.display()))?;
        // `libvirtd --daemon` returns as soon as the daemon has forked into the background.
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if started.elapsed() > SOCKET_TIMEOUT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "libvirtd --daemon did not return within {SOCKET_TIMEOUT:?}{}",
                        self.logs_tail()
                    ));
                }
                Ok(None) => thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(format!("waiting for libvirtd: {e}")),
            }
        };
        if !status.success() {
            return Err(format!("libvirtd --daemon failed ({status}){}", self.logs_tail()));
        }

        let sock = self.socket_path();
        while !sock.exists() {
            if started.elapsed() > SOCKET_TIMEOUT {
                return Err(format!(
                    "libvirtd socket {} did not appear within {SOCKET_TIMEOUT:?}{}",
                    sock.display(),
                    self.logs_tail()
                ));
            }
            if let Some(pid) = read_pid_file(&run.join("libvirt/libvirtd.pid")) {
                if !process_alive(pid) {
                    return Err(format!("libvirtd exited during start-up{}", self.logs_tail()));
                }
            }
            thread::sleep(Duration::from_millis(10));
        }
        self.pid = self.pid_from_file();

        let ready_deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = ready_deadline.saturating_duration_since(Instant::now());
            match self.virsh_with_timeout(&["version"], left.max(Duration::from_secs(1))) {
                Ok(_) => break,
                Err(e) => {
                    if e.contains("no connection driver available") {
                        return Err(format!(
                            "libvirtd has no QEMU driver ({e}): {INSTALL_HINT}{}",
                            self.logs_tail()
                        ));
                    }
                    let dead = self.pid.is_some_and(|p| !process_alive(p));
                    if dead || Instant::now() >= ready_deadline {
                        return Err(format!(
                            "libvirtd at {} is not answering: {e}{}",
                            self.uri,
                            self.logs_tail()
                        ));
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
        if self.pid.is_none() {
            self.pid = self.pid_from_file();
        }
        Ok(())
    }

    /// The end of the daemon's logs, for error messages.
    fn logs_tail(&self) -> String {
        let mut s = String::new();
        for f in ["libvirtd.stdio.log", "cache/libvirt/libvirtd.log"] {
            let p = self.root.join(f);
            if let Ok(text) = fs::read_to_string(&p) {
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(15)..];
                if !tail.is_empty() {
                    s.push_str(&format!("\n--- {} (tail) ---\n{}", p.display(), tail.join("\n")));
                }
            }
        }
        s
    }

    fn cleanup(&mut self) {
        // 1. Force off every running VM while the daemon can still do it cleanly.
        let alive = self.pid.is_some_and(process_alive) || self.pid_from_file().is_some();
        if alive && self.socket_path().exists() {
            if let Ok(list) = self.virsh_with_timeout(&["list", "--name"], DROP_VIRSH_TIMEOUT) {
                for name in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    let _ = self.virsh_with_timeout(&["destroy", name], DROP_VIRSH_TIMEOUT);
                }
            }
        }
        // 2. The daemon, then the virtlogd it spawned.
        self.kill();
        if let Some(pid) = read_pid_file(&self.root.join("run/libvirt/virtlogd.pid")) {
            if process_comm(pid).as_deref() == Some("virtlogd") {
                kill_and_wait(pid, "virtlogd", Duration::from_secs(5));
            }
        }
        // 3. Anything else still tied to this directory (QEMU left behind by a killed daemon,
        //    helpers): its command line or environment names our unique directory.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let strays = processes_referencing(&self.root);
            if strays.is_empty() || Instant::now() >= deadline {
                break;
            }
            for pid in strays {
                signal_kill(pid);
            }
            thread::sleep(Duration::from_millis(50));
        }
        // 4. The directory.
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if dir.close().is_err() {
                let _ = fs::remove_dir_all(&path);
            }
        }
    }
}

impl Drop for LibvirtDaemon {
    fn drop(&mut self) {
        // Nothing may panic in Drop; catch anything unexpected.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.cleanup()));
    }
}

// -------------------------------------------------------------------- helpers

/// Looks a program up in $PATH and the usual sbin directories (a non-root PATH often lacks them).
fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    for d in ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// False only when libvirt's driver directory exists but has no QEMU driver.
fn qemu_driver_installed() -> bool {
    let mut dirs = vec![
        PathBuf::from("/usr/lib64/libvirt/connection-driver"),
        PathBuf::from("/usr/lib/libvirt/connection-driver"),
    ];
    if let Ok(entries) = fs::read_dir("/usr/lib") {
        for e in entries.flatten() {
            dirs.push(e.path().join("libvirt/connection-driver"));
        }
    }
    let existing: Vec<&PathBuf> = dirs.iter().filter(|d| d.is_dir()).collect();
    existing.is_empty() || existing.iter().any(|d| d.join("libvirt_driver_qemu.so").exists())
}

fn current_euid() -> Result<u32, String> {
    if let Ok(out) = Command::new("id").arg("-u").output() {
        if let Ok(uid) = String::from_utf8_lossy(&out.stdout).trim().parse() {
            return Ok(uid);
        }
    }
    fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(|e| format!("cannot determine the current user id: {e}"))
}

fn lookup_user(name: &str) -> Option<DaemonUser> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, name]).stderr(Stdio::null()).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some(DaemonUser { name: name.to_string(), uid: id("-u")?, gid: id("-g")? })
}

/// The plain user `vmtest`, created once per test process before any daemon uses it: the
/// first caller creates it (and waits until it can run a command) while concurrent callers
/// wait for that, so no test ever sees a half-created user. (Seen on a fresh machine before
/// this: one of several tests starting at once got "failed to open …/libvirtd.log: Permission
/// denied" while another was still creating the user.)
fn ensure_daemon_user() -> Result<DaemonUser, String> {
    static USER: OnceLock<Result<DaemonUser, String>> = OnceLock::new();
    USER.get_or_init(create_daemon_user).clone()
}

/// Creates `vmtest` if needed and checks that it can run a command. Safe against other test
/// processes too: a failed useradd (the passwd lock is taken) is retried after re-checking.
fn create_daemon_user() -> Result<DaemonUser, String> {
    let user = find_or_add_user()?;
    // The user is usable once runuser can switch to it.
    let runuser = find_program("runuser").unwrap_or_else(|| "runuser".into());
    let mut last = String::new();
    for _ in 0..50 {
        match Command::new(&runuser).args(["-u", DAEMON_USER, "--", "true"]).output() {
            Ok(o) if o.status.success() => return Ok(user),
            Ok(o) => last = String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => last = e.to_string(),
        }
        thread::sleep(Duration::from_millis(100));
    }
    Err(format!("user {DAEMON_USER} exists but runuser cannot switch to it: {last}"))
}

fn find_or_add_user() -> Result<DaemonUser, String> {
    if let Some(u) = lookup_user(DAEMON_USER) {
        return Ok(u);
    }
    let useradd = find_program("useradd").ok_or_else(|| {
        format!("user {DAEMON_USER} is missing and useradd was not found (apt-get install passwd)")
    })?;
    let mut last_err = String::new();
    for attempt in 0..20 {
        let res = Command::new(&useradd)
            .args(["--create-home", "--shell", "/usr/sbin/nologin", "--comment"])
            .arg("vmdeck test VMs")
            .arg(DAEMON_USER)
            .stdin(Stdio::null())
            .output();
        if let Some(u) = lookup_user(DAEMON_USER) {
            return Ok(u);
        }
        last_err = match res {
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        };
        // Most likely another process holds the passwd lock: wait and retry.
        thread::sleep(Duration::from_millis(100 + 50 * attempt));
    }
    Err(format!("cannot create user {DAEMON_USER} with useradd: {last_err}"))
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if fs::symlink_metadata(path)?.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Where probed QEMU capabilities are shared between daemons: the test runner's own cache dir.
fn shared_caps_cache(user: Option<&DaemonUser>) -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".cache"),
    };
    let who = match user {
        Some(u) => format!("uid{}", u.uid),
        None => "self".to_string(),
    };
    Some(base.join("vmdeck-tests").join(format!("qemu-capabilities-{who}")))
}

/// Best effort: copies `*.xml` from one directory into another.
fn copy_xml_files(from: &Path, to: &Path) {
    let Ok(entries) = fs::read_dir(from) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "xml") {
            if let Some(name) = p.file_name() {
                let _ = fs::copy(&p, to.join(name));
            }
        }
    }
}

/// Best effort: publishes a daemon's probed capabilities to the shared cache, atomically.
fn save_caps_cache(from: &Path, shared: &Path) {
    if fs::create_dir_all(shared).is_err() {
        return;
    }
    let Ok(entries) = fs::read_dir(from) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Some(name) = p.file_name() else { continue };
        if p.extension().and_then(|x| x.to_str()) != Some("xml") {
            continue;
        }
        let Ok(data) = fs::read(&p) else { continue };
        let dest = shared.join(name);
        if fs::read(&dest).is_ok_and(|old| old == data) {
            continue;
        }
        let tmp = shared.join(format!(
            ".{}.{}.{:?}.tmp",
            name.to_string_lossy(),
            std::process::id(),
            thread::current().id()
        ));
        if fs::write(&tmp, &data).is_ok() && fs::rename(&tmp, &dest).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }
}

/// Runs a short-lived command with a time limit, capturing stdout and stderr.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot run: {e}"))?;
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    });
    let deadline = Instant::now() + timeout;
    let mut sleep = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = out_reader.join();
                let _ = err_reader.join();
                return Err(format!("timed out after {timeout:?}"));
            }
            Ok(None) => {
                thread::sleep(sleep);
                sleep = (sleep * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("wait failed: {e}")),
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(Output { status, stdout, stderr })
}

fn read_pid_file(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok().filter(|&p| p > 1)
}

/// State letter from /proc/PID/stat ('Z' for a zombie), None if the process is gone.
fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ..." — comm may contain spaces and parentheses: split after the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Alive = exists and is not a zombie (an orphaned daemon is reaped by init, maybe late).
fn process_alive(pid: u32) -> bool {
    matches!(process_state(pid), Some(s) if s != 'Z' && s != 'X')
}

fn process_comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim().to_string())
}

/// SIGKILL through the shell's `kill` builtin (std has no kill(2) for foreign pids and this
/// crate forbids unsafe code).
fn signal_kill(pid: u32) {
    let _ = Command::new("sh")
        .args(["-c", "kill -KILL \"$1\" 2>/dev/null", "sh", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// SIGKILLs `pid` if it is still the expected program, then waits (bounded) until it is gone.
fn kill_and_wait(pid: u32, comm: &str, timeout: Duration) {
    if !process_alive(pid) || process_comm(pid).as_deref() != Some(comm) {
        return;
    }
    signal_kill(pid);
    let deadline = Instant::now() + timeout;
    while process_alive(pid) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
}

/// Live processes (other than us) whose command line or environment mentions `dir`.
fn processes_referencing(dir: &Path) -> Vec<u32> {
    let mut needle = dir.as_os_str().as_encoded_bytes().to_vec();
    needle.push(b'/');
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || !process_alive(pid) {
            continue;
        }
        let hit = ["cmdline", "environ"].iter().any(|f| {
            fs::read(format!("/proc/{pid}/{f}"))
                .is_ok_and(|data| data.windows(needle.len()).any(|w| w == needle.as_slice()))
        });
        if hit {
            found.push(pid);
        }
    }
    found
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// Writes an empty qcow2 (version 3, 64 KiB clusters) of `size` bytes, as `qemu-img create -f
/// qcow2` would: header, refcount table, one refcount block, an all-zero L1 table. Done here so
/// the tests do not need qemu-img (qemu-utils is only a Recommends of qemu-system-x86).
fn write_blank_qcow2(path: &Path, size: u64) -> io::Result<()> {
    const CLUSTER_BITS: u32 = 16;
    const CS: u64 = 1 << CLUSTER_BITS;
    let per_l1_entry = CS * (CS / 8); // bytes mapped by one L2 table: 512 MiB
    let l1_size = size.div_ceil(per_l1_entry).max(1);
    let l1_clusters = (l1_size * 8).div_ceil(CS);
    let total_clusters = 3 + l1_clusters; // header, refcount table, refcount block, L1
    if l1_size > u64::from(u32::MAX) || total_clusters > CS / 2 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "disk too large"));
    }
    let (reftable_off, refblock_off, l1_off) = (CS, 2 * CS, 3 * CS);

    let mut header = Vec::with_capacity(104);
    header.extend_from_slice(b"QFI\xfb");
    header.extend_from_slice(&3u32.to_be_bytes()); // version
    header.extend_from_slice(&0u64.to_be_bytes()); // backing_file_offset
    header.extend_from_slice(&0u32.to_be_bytes()); // backing_file_size
    header.extend_from_slice(&CLUSTER_BITS.to_be_bytes());
    header.extend_from_slice(&size.to_be_bytes());
    header.extend_from_slice(&0u32.to_be_bytes()); // crypt_method
    header.extend_from_slice(&(l1_size as u32).to_be_bytes());
    header.extend_from_slice(&l1_off.to_be_bytes());
    header.extend_from_slice(&reftable_off.to_be_bytes());
    header.extend_from_slice(&1u32.to_be_bytes()); // refcount_table_clusters
    header.extend_from_slice(&0u32.to_be_bytes()); // nb_snapshots
    header.extend_from_slice(&0u64.to_be_bytes()); // snapshots_offset
    header.extend_from_slice(&0u64.to_be_bytes()); // incompatible_features
    header.extend_from_slice(&0u64.to_be_bytes()); // compatible_features
    header.extend_from_slice(&0u64.to_be_bytes()); // autoclear_features
    header.extend_from_slice(&4u32.to_be_bytes()); // refcount_order: 16-bit refcounts
    header.extend_from_slice(&104u32.to_be_bytes()); // header_length
                                                     // The header-extension end marker (8 zero bytes) follows implicitly.

    let mut refblock = vec![0u8; (total_clusters * 2) as usize];
    for c in 0..total_clusters as usize {
        refblock[c * 2..c * 2 + 2].copy_from_slice(&1u16.to_be_bytes());
    }

    let mut f = fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    let mut image = vec![0u8; (3 * CS) as usize];
    image[..header.len()].copy_from_slice(&header);
    image[reftable_off as usize..reftable_off as usize + 8]
        .copy_from_slice(&refblock_off.to_be_bytes());
    image[refblock_off as usize..refblock_off as usize + refblock.len()].copy_from_slice(&refblock);
    f.write_all(&image)?;
    f.set_len(l1_off + l1_clusters * CS)?; // zeroed (sparse) L1 table
    f.sync_all()
}
