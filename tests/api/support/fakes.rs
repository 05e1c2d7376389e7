//! Stand-ins for what cannot misbehave on demand: a libvirt socket that never answers, and the
//! stand-in VBoxManage (`examples/fake_vboxmanage.rs`) replaying real VirtualBox output.
#![allow(dead_code)]

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A unix socket that accepts connections and never answers, like a hung libvirtd.
pub struct SilentSocket {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentSocket {
    pub fn start(path: &std::path::Path) -> Self {
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                if let Ok((s, _)) = listener.accept() {
                    held.push(s);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // Dropping the streams closes them: the stuck libvirt call gets EOF and returns.
        });
        SilentSocket { stop, thread: Some(thread) }
    }
}

impl Drop for SilentSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The stand-in binary, built by `cargo test` with the other examples. A filtered run does not
/// build examples, so it is built here when missing or older than its source.
pub fn fake_vboxmanage() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/api-<hash> → target/<profile>/examples/fake_vboxmanage
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap();
        let bin = profile_dir.join("examples/fake_vboxmanage");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fake_vboxmanage.rs");
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        if modified(&bin) < modified(&source) {
            let status = Command::new(env!("CARGO"))
                .args(["build", "--example", "fake_vboxmanage"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo to build the stand-in VBoxManage");
            assert!(status.success(), "building examples/fake_vboxmanage.rs failed");
        }
        bin
    })
}
