//! Which power actions VirtualBox takes in which state (its `VMState` word), beyond the
//! normalised state's default ([`PowerAction::applies_to`]). `controlvm poweroff` accepts
//! only "Running, Paused or Stuck" (FORMAT-NOTES), `startvm` a VM that is powered off,
//! saved (it restores it), teleported or aborted.

use crate::backend::{Offer, PowerAction, PowerState, Why};

/// VirtualBox's own decision for `action` on a VM whose `VMState` is `raw_state`.
pub fn offers(action: PowerAction, state: PowerState, raw_state: &str) -> Offer {
    match (raw_state, action) {
        // Aborted: the VM process died and VirtualBox already stopped it; `startvm` boots it
        // again (aborted-saved restores its saved state), `poweroff` is refused.
        ("aborted" | "aborted-saved", PowerAction::Start) => Offer::Allowed,
        ("aborted" | "aborted-saved", _) => Offer::Unavailable(Why::Hypervisor(
            "VirtualBox has already stopped it (aborted): start it.",
        )),
        // Guru meditation (Stuck): the VM is halted inside VirtualBox; only power off works.
        ("gurumeditation", PowerAction::PowerOff) => Offer::Allowed,
        ("gurumeditation", _) => Offer::Unavailable(Why::Hypervisor(
            "VirtualBox stopped it in a guru meditation: power it off first, then start it.",
        )),
        // Savestate works on a paused VM too (it is how a paused VM is usually saved); reset
        // does not (Console::reset takes only a running VM).
        ("paused", PowerAction::Save) => Offer::Allowed,
        ("paused", PowerAction::Reset) => Offer::Unavailable(Why::Hypervisor(
            "VirtualBox resets only a running VM: resume it first.",
        )),
        // VirtualBox has no guest-initiated suspend vmdeck could wake.
        (_, PowerAction::Wake) => Offer::Unavailable(Why::Hypervisor(
            "VirtualBox has no wake-up: only libvirt VMs that suspended themselves are woken up.",
        )),
        _ => Offer::by_state(action, state),
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::power_state;
    use super::*;

    /// Every action VirtualBox is offered for the `VMState` words that need a decision of
    /// their own, and a few that follow the default.
    #[test]
    fn virtualbox_offers_only_what_it_accepts_in_each_state() {
        use PowerAction::*;
        let table: [(&str, &[PowerAction]); 7] = [
            ("running", &[Shutdown, Reboot, Pause, Save, Reset, PowerOff]),
            ("paused", &[Resume, Save, PowerOff]),
            ("poweroff", &[Start]),
            ("saved", &[Start]),
            ("aborted", &[Start]),
            ("aborted-saved", &[Start]),
            ("gurumeditation", &[PowerOff]),
        ];
        for (raw, expected) in table {
            let state = power_state(raw);
            let offered: Vec<PowerAction> =
                PowerAction::ALL.into_iter().filter(|&a| offers(a, state, raw).allowed()).collect();
            assert_eq!(offered, expected, "VirtualBox {raw}");
        }
    }
}
