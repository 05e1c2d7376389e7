//! Which power actions libvirt takes in which state, beyond the normalised state's default
//! ([`PowerAction::applies_to`]). Always built (it needs no connection), so it is tested
//! without the `libvirt` feature's library.

use crate::backend::{Offer, PowerAction, PowerState, Why};

/// libvirt's own decision for `action` on a domain in `state` (`raw_state`: libvirt's word,
/// `crashed`, `pmsuspended`...).
pub fn offers(action: PowerAction, state: PowerState, raw_state: &str) -> Offer {
    match (raw_state, action) {
        // A crashed domain keeps its process until it is destroyed: `virDomainCreate` says
        // "Domain is already active". Power off first, then start.
        ("crashed", PowerAction::PowerOff) => Offer::Allowed,
        ("crashed", _) => Offer::Unavailable(Why::Hypervisor(
            "libvirt keeps a crashed VM until it is powered off: power it off first, then start it.",
        )),
        // A guest that suspended itself (pmsuspended) is woken up (`virDomainPMWakeup`) or
        // powered off; start and resume fail ("already active", "not paused"). The default
        // already says so for the normalised state; the words here are libvirt's case.
        ("pmsuspended", PowerAction::Wake | PowerAction::PowerOff) => Offer::Allowed,
        ("pmsuspended", _) => Offer::Unavailable(Why::Hypervisor(
            "The guest suspended itself: wake it up (or power it off).",
        )),
        _ => Offer::by_state(action, state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every action libvirt is offered for each raw state `describe_state` produces: the
    /// table an operator's buttons follow.
    #[test]
    fn libvirt_offers_only_what_it_accepts_in_each_state() {
        use PowerAction::*;
        let table: [(&str, PowerState, &[PowerAction]); 8] = [
            ("running", PowerState::Running, &[Shutdown, Reboot, Pause, Save, Reset, PowerOff]),
            ("blocked", PowerState::Running, &[Shutdown, Reboot, Pause, Save, Reset, PowerOff]),
            ("paused", PowerState::Paused, &[Resume, Reset, PowerOff]),
            ("shutdown", PowerState::InTransition, &[PowerOff]),
            ("shutoff", PowerState::ShutOff, &[Start]),
            ("crashed", PowerState::Crashed, &[PowerOff]),
            ("pmsuspended", PowerState::Suspended, &[Wake, PowerOff]),
            ("nostate", PowerState::Unknown, &[]),
        ];
        for (raw, state, expected) in table {
            let offered: Vec<PowerAction> =
                PowerAction::ALL.into_iter().filter(|&a| offers(a, state, raw).allowed()).collect();
            assert_eq!(offered, expected, "libvirt {raw}");
        }
        assert!(
            matches!(
                offers(Start, PowerState::Crashed, "crashed"),
                Offer::Unavailable(Why::Hypervisor(w)) if w.contains("power it off first")
            ),
            "a crashed domain says how to get it running"
        );
    }
}
