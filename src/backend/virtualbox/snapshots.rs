//! VirtualBox snapshots: `VBoxManage snapshot <uuid> list|take|restore|delete`, the checks
//! vmdeck makes before sending (a name already used, a running VM to revert), and VirtualBox's
//! refusals in words.
//!
//! VirtualBox's own rules, which these follow: `take` pauses a running VM for the whole
//! snapshot unless `--live`, and a running VM's snapshot always holds its memory (reverting to
//! it leaves the VM saved); `restore` needs the VM powered off or saved; `delete` works on a
//! running VM but refuses a snapshot with two children or more, and the current snapshot while
//! it has a child; names may repeat (vmdeck refuses a repeat); every command takes the
//! machine's lock, so a VM another session holds fails with the locked error.

use std::borrow::Cow;

use super::command::Output;
use super::{failed, is_running, parse, run_error, VirtualBoxBackend};
use crate::backend::{AfterRevert, Backend, BackendError, SnapshotOp, SnapshotReport};

/// Longest snapshot name vmdeck sends (VirtualBox has no limit of its own).
const MAX_NAME_CHARS: usize = 255;
/// Longest description vmdeck sends; a command line has room for about 128 KiB per argument.
const MAX_DESCRIPTION_CHARS: usize = 16 * 1024;

impl VirtualBoxBackend {
    /// Every snapshot of the VM, from `snapshot <uuid> list --machinereadable`.
    pub(super) async fn list_snapshots(
        &self,
        uuid: &str,
    ) -> Result<Vec<SnapshotReport>, BackendError> {
        if !parse::is_uuid(uuid) {
            return Err(BackendError::NoSuchVm);
        }
        let out = self
            .runner
            .run(&["snapshot", uuid, "list", "--machinereadable"])
            .await
            .map_err(run_error)?;
        if out.code == Some(0) {
            return Ok(parse::snapshots(&out.stdout));
        }
        // No snapshots is exit status 1 with this line on stdout and nothing on stderr.
        if out.stdout.contains(parse::NO_SNAPSHOTS) && parse::vbox_error(&out.stderr).is_none() {
            return Ok(Vec::new());
        }
        Err(snapshot_failed("List snapshots", &out))
    }

    /// Takes, restores or deletes one snapshot.
    pub(super) async fn run_snapshot(
        &self,
        uuid: &str,
        op: &SnapshotOp,
    ) -> Result<(), BackendError> {
        if !parse::is_uuid(uuid) {
            return Err(BackendError::NoSuchVm);
        }
        match op {
            SnapshotOp::Take { name, description, with_memory: _ } => {
                let name = checked_name(name)?;
                let description = checked_description(description)?;
                // One read gives both the state (a running VM is taken live) and the names in
                // use: VirtualBox takes a second snapshot of the same name without a word.
                let text = self.query(&["showvminfo", uuid, "--machinereadable"]).await?;
                let info = parse::vm_info(&text);
                if info.is_inaccessible() {
                    return Err(BackendError::InvalidState(
                        "VirtualBox cannot read this VM's settings (its files are missing or unreadable)".into(),
                    ));
                }
                if info.snapshots.iter().any(|s| s.name == name) {
                    return Err(BackendError::InvalidState(format!(
                        "this VM already has a snapshot named {}; choose another name \
                         (VirtualBox would take a second one of the same name, which vmdeck \
                         refuses so that a name means one snapshot)",
                        crate::domain::quoted(name)
                    )));
                }
                let name_arg = self.runner.text_arg(name);
                let description_arg = self.runner.text_arg(&description);
                let mut args: Vec<&str> = vec!["snapshot", uuid, "take", &name_arg];
                if !description.is_empty() {
                    args.extend(["--description", &description_arg]);
                }
                // Without it VirtualBox pauses the guest until the snapshot is written.
                if is_running(&info) {
                    args.push("--live");
                }
                self.snapshot_command("Take snapshot", &args).await
            }
            SnapshotOp::Revert { id, after } => {
                if *after != AfterRevert::AsTaken {
                    return Err(BackendError::Unsupported(
                        "VirtualBox restores a snapshot as it was taken (saved when it holds the \
                         VM's memory, else powered off); start the VM afterwards"
                            .into(),
                    ));
                }
                let id = snapshot_id(id)?;
                let state = self.vm_state(uuid).await?;
                if !matches!(
                    state.raw_state.as_str(),
                    "poweroff" | "saved" | "aborted" | "aborted-saved" | "teleported"
                ) {
                    return Err(BackendError::InvalidState(format!(
                        "VirtualBox restores a snapshot only when the VM is powered off or saved, \
                         and this VM is {}: power it off or save its state first",
                        parse::state_words(&state.raw_state)
                    )));
                }
                self.snapshot_command("Revert to snapshot", &["snapshot", uuid, "restore", id])
                    .await
            }
            SnapshotOp::Delete { id } => {
                let id = snapshot_id(id)?;
                self.snapshot_command("Delete snapshot", &["snapshot", uuid, "delete", id]).await
            }
        }
    }

    /// Runs a take, restore or delete under the snapshot time limit: VirtualBox may write a
    /// running VM's memory or merge disks for minutes, and a command killed mid-merge leaves the
    /// snapshot half deleted.
    async fn snapshot_command(&self, what: &str, args: &[&str]) -> Result<(), BackendError> {
        let out = self.runner.run_for(args, self.snapshot_timeout).await.map_err(run_error)?;
        if out.code == Some(0) {
            Ok(())
        } else {
            Err(snapshot_failed(what, &out))
        }
    }
}

/// A snapshot id vmdeck can send: VirtualBox's are UUIDs, anything else names no snapshot.
fn snapshot_id(id: &str) -> Result<&str, BackendError> {
    if parse::is_uuid(id) {
        Ok(id)
    } else {
        Err(BackendError::InvalidState(format!(
            "this VM has no snapshot {}",
            crate::domain::quoted(id)
        )))
    }
}

/// A name VirtualBox can take and list back: not empty, on one line (the list prints names
/// raw, one per line).
fn checked_name(name: &str) -> Result<&str, BackendError> {
    if name.trim().is_empty() {
        return Err(BackendError::Unsupported("a snapshot needs a name".into()));
    }
    if name.chars().any(char::is_control) {
        return Err(BackendError::Unsupported(
            "a snapshot name cannot hold line breaks, tabs or other control characters".into(),
        ));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(BackendError::Unsupported(format!(
            "a snapshot name can be at most {MAX_NAME_CHARS} characters long"
        )));
    }
    Ok(name)
}

/// A description as sent: line breaks as `\n` (a browser's `\r\n` included), no other control
/// characters but tabs.
fn checked_description(description: &str) -> Result<Cow<'_, str>, BackendError> {
    let text = if description.contains('\r') {
        Cow::Owned(description.replace("\r\n", "\n"))
    } else {
        Cow::Borrowed(description)
    };
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(BackendError::Unsupported(
            "a snapshot description cannot hold control characters other than line breaks and tabs"
                .into(),
        ));
    }
    if text.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(BackendError::Unsupported(format!(
            "a snapshot description can be at most {MAX_DESCRIPTION_CHARS} characters long"
        )));
    }
    Ok(text)
}

/// A failed snapshot command in words. A failed operation prints VirtualBox's general words
/// first ("Failed to take snapshot") and the cause after them, so every message line is read;
/// what is not a snapshot matter (locked, invalid state, no such VM) is [`failed`]'s.
fn snapshot_failed(what: &str, out: &Output) -> BackendError {
    let Some(e) = parse::vbox_error(&out.stderr) else {
        return failed(what, out);
    };
    let said = parse::error_messages(&out.stderr).join(" ");
    let lower = said.to_lowercase();
    if e.code.as_deref() == Some("VBOX_E_OBJECT_NOT_FOUND") && lower.contains("snapshot") {
        return BackendError::InvalidState(format!(
            "the snapshot no longer exists on this VM (deleted outside vmdeck?). VirtualBox said: {said}"
        ));
    }
    if ["verr_disk_full", "no space left", "not enough free space", "disk full", "disk is full"]
        .iter()
        .any(|w| lower.contains(w))
    {
        return BackendError::Hypervisor(format!(
            "{what} failed: the host ran out of disk space; free space on the disk that holds \
             the VM's snapshot folder and try again. VirtualBox said: {said}"
        ));
    }
    if lower.contains("more than the one snapshot allowed") {
        return BackendError::InvalidState(format!(
            "VirtualBox deletes only a snapshot with at most one child snapshot: delete all but \
             one of its children first. VirtualBox said: {said}"
        ));
    }
    if lower.contains("is the current snapshot and has one child") {
        return BackendError::InvalidState(format!(
            "VirtualBox does not delete the current snapshot while it has a child snapshot: \
             revert to another snapshot first, or delete the child. VirtualBox said: {said}"
        ));
    }
    match failed(what, out) {
        // The first line alone ("Failed to take snapshot") says too little: add the cause.
        BackendError::Hypervisor(m) if !m.contains("locked") => {
            BackendError::Hypervisor(format!("{what} failed: {said}{}", code_suffix(&e)))
        }
        other => other,
    }
}

fn code_suffix(e: &parse::VboxError) -> String {
    e.code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(code: i32, stdout: &str, stderr: &str) -> Output {
        Output { code: Some(code), stdout: stdout.into(), stderr: stderr.into() }
    }

    fn com_error(lines: &[&str], code: &str) -> String {
        let mut s: String = lines.iter().map(|l| format!("VBoxManage: error: {l}\n")).collect();
        s.push_str(&format!(
            "VBoxManage: error: Details: code {code} (0x80bb0007), component SessionMachine, interface IMachine, callee nsISupports\n\
             VBoxManage: error: Context: \"DeleteSnapshot(bstrSnapGuid.raw(), pProgress.asOutParam())\" at line 1 of file VBoxManageSnapshot.cpp\n"
        ));
        s
    }

    fn message(e: BackendError) -> String {
        e.to_string()
    }

    #[test]
    fn snapshot_refusals_are_put_in_words() {
        // The locked error of the real capture, as a snapshot command would print it.
        let locked = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/virtualbox/errors/locked-startvm-headless-linux.stderr.txt"),
        )
        .unwrap();
        let m = message(snapshot_failed("Take snapshot", &output(1, "", &locked)));
        assert!(m.starts_with("Take snapshot: the VM is locked by another session"), "{m}");

        let gone = com_error(
            &["Could not find a snapshot with UUID {8cc12787-99df-466e-8a51-80e373d3447a}"],
            "VBOX_E_OBJECT_NOT_FOUND",
        );
        match snapshot_failed("Revert to snapshot", &output(1, "", &gone)) {
            BackendError::InvalidState(m) => assert!(m.contains("no longer exists"), "{m}"),
            other => panic!("{other:?}"),
        }
        let vm_gone = com_error(
            &["Could not find a registered machine with UUID {0badc0de-0000-4000-8000-00000000dead}"],
            "VBOX_E_OBJECT_NOT_FOUND",
        );
        assert!(matches!(
            snapshot_failed("Delete snapshot", &output(1, "", &vm_gone)),
            BackendError::NoSuchVm
        ));

        let full = com_error(
            &[
                "Failed to take snapshot",
                "Could not create the differencing medium storage unit '/vms/x/Snapshots/{1}.vdi' (VERR_DISK_FULL)",
            ],
            "VBOX_E_FILE_ERROR",
        );
        let m = message(snapshot_failed("Take snapshot", &output(1, "", &full)));
        assert!(m.contains("ran out of disk space") && m.contains("VERR_DISK_FULL"), "{m}");

        let two = com_error(
            &["Snapshot 'a' of the machine 'web' cannot be deleted, because it has 2 child snapshots, which is more than the one snapshot allowed for deletion"],
            "VBOX_E_INVALID_OBJECT_STATE",
        );
        let m = message(snapshot_failed("Delete snapshot", &output(1, "", &two)));
        assert!(m.contains("at most one child snapshot"), "{m}");
        let current = com_error(
            &["Snapshot 'a' of the machine 'web' cannot be deleted, because it is the current snapshot and has one child snapshot"],
            "VBOX_E_INVALID_OBJECT_STATE",
        );
        let m = message(snapshot_failed("Delete snapshot", &output(1, "", &current)));
        assert!(m.contains("revert to another snapshot first"), "{m}");

        // Anything else keeps the cause, not only VirtualBox's general first line.
        let other = com_error(
            &["Snapshot operation failed", "Could not lock the medium '/vms/x.vdi'"],
            "VBOX_E_IPRT_ERROR",
        );
        let m = message(snapshot_failed("Delete snapshot", &output(1, "", &other)));
        assert!(m.contains("Could not lock the medium") && m.contains("VBOX_E_IPRT_ERROR"), "{m}");
    }

    #[test]
    fn names_and_descriptions_are_checked_before_anything_is_sent() {
        assert!(checked_name("").is_err());
        assert!(checked_name("   ").is_err());
        assert!(checked_name("two\nlines").is_err());
        assert!(checked_name(&"x".repeat(MAX_NAME_CHARS + 1)).is_err());
        assert_eq!(
            checked_name("before \"the\" upgrade ../ ✓").unwrap(),
            "before \"the\" upgrade ../ ✓"
        );
        assert_eq!(checked_description("a\r\nb\tc").unwrap(), "a\nb\tc");
        assert!(checked_description("nul\0").is_err());
        assert!(snapshot_id("../etc").is_err());
        assert!(snapshot_id("947ad21d-2cad-4e64-80cc-2ff819d1be4e").is_ok());
    }
}
