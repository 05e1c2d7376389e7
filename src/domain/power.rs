//! Power states (normalized, the same for every backend) and the power actions an operator can
//! ask for.

use serde::{Deserialize, Serialize};

/// Normalized power state, the same for every driver. Stored as its snake_case name.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    sqlx::Type,
    rocket::FromFormField,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(rename_all = "snake_case")]
pub enum PowerState {
    #[field(value = "running")]
    Running,
    #[field(value = "paused")]
    Paused,
    #[field(value = "suspended")]
    Suspended,
    #[field(value = "in_transition")]
    InTransition,
    #[field(value = "crashed")]
    Crashed,
    #[field(value = "shut_off")]
    ShutOff,
    #[field(value = "unknown")]
    Unknown,
}

impl PowerState {
    pub const ALL: [PowerState; 7] = [
        PowerState::Running,
        PowerState::Paused,
        PowerState::Suspended,
        PowerState::InTransition,
        PowerState::Crashed,
        PowerState::ShutOff,
        PowerState::Unknown,
    ];

    /// Stable identifier, used in the database, URLs and CSS classes.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::Running => "running",
            PowerState::Paused => "paused",
            PowerState::Suspended => "suspended",
            PowerState::InTransition => "in_transition",
            PowerState::Crashed => "crashed",
            PowerState::ShutOff => "shut_off",
            PowerState::Unknown => "unknown",
        }
    }

    /// Words for people.
    pub fn label(self) -> &'static str {
        match self {
            PowerState::Running => "running",
            PowerState::Paused => "paused",
            PowerState::Suspended => "suspended",
            PowerState::InTransition => "in transition",
            PowerState::Crashed => "crashed",
            PowerState::ShutOff => "shut off",
            PowerState::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<PowerState> {
        PowerState::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The state a stretch of samples is summarised by: the one most samples were in (a tie
    /// goes to the later of running, paused, shut off, unknown). Rollups count running, paused
    /// (with suspended and in transition) and shut off (with crashed) samples; the rest are
    /// unknown.
    pub fn dominant(n: i64, up: i64, paused: i64, off: i64) -> PowerState {
        let other = n - up - paused - off;
        [
            (up, PowerState::Running),
            (paused, PowerState::Paused),
            (off, PowerState::ShutOff),
            (other, PowerState::Unknown),
        ]
        .into_iter()
        .max_by_key(|(count, _)| *count)
        .map_or(PowerState::Unknown, |(_, s)| s)
    }
}

/// A power action an operator can ask for. Stored and posted as its snake_case name.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    sqlx::Type,
    rocket::FromFormField,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(rename_all = "snake_case")]
pub enum PowerAction {
    /// Boot (or restore from saved state).
    #[field(value = "start")]
    Start,
    /// Ask the guest to shut down (ACPI); the guest may ignore it.
    #[field(value = "shutdown")]
    Shutdown,
    /// Cut the power at once.
    #[field(value = "power_off")]
    PowerOff,
    /// Ask the guest to reboot.
    #[field(value = "reboot")]
    Reboot,
    /// Hard reset at once.
    #[field(value = "reset")]
    Reset,
    #[field(value = "pause")]
    Pause,
    #[field(value = "resume")]
    Resume,
    /// Save the VM's memory to disk and stop it; the next start restores it.
    #[field(value = "save")]
    Save,
    /// Wake a guest that suspended itself (ACPI S3/S4, libvirt's `pmsuspended`).
    #[field(value = "wake_up")]
    #[serde(rename = "wake_up")]
    #[sqlx(rename = "wake_up")]
    Wake,
}

impl PowerAction {
    /// Every action, in the one order menus and the bulk form show them: starting ones, then
    /// graceful stops, then pausing, and the forced ones last, so that an action keeps its
    /// place whatever the VM's state.
    pub const ALL: [PowerAction; 9] = [
        PowerAction::Start,
        PowerAction::Wake,
        PowerAction::Shutdown,
        PowerAction::Reboot,
        PowerAction::Pause,
        PowerAction::Resume,
        PowerAction::Save,
        PowerAction::Reset,
        PowerAction::PowerOff,
    ];

    /// Which offered action a VM's row puts first, by preference: the way back to running
    /// (resume, wake up, start), else a graceful stop, else power off (a crashed VM).
    const PRIMARY: [PowerAction; 5] = [
        PowerAction::Resume,
        PowerAction::Wake,
        PowerAction::Start,
        PowerAction::Shutdown,
        PowerAction::PowerOff,
    ];

    /// The primary action among those `offered`: running → Shut down, shut off → Start,
    /// paused → Resume, pmsuspended → Wake up, crashed → Power off or Start (as the backend
    /// offers). None when none of them is offered (in transition on some backends, unknown).
    pub fn primary(offered: impl Fn(PowerAction) -> bool) -> Option<PowerAction> {
        Self::PRIMARY.into_iter().find(|&a| offered(a))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::Start => "start",
            PowerAction::Shutdown => "shutdown",
            PowerAction::PowerOff => "power_off",
            PowerAction::Reboot => "reboot",
            PowerAction::Reset => "reset",
            PowerAction::Pause => "pause",
            PowerAction::Resume => "resume",
            PowerAction::Save => "save",
            PowerAction::Wake => "wake_up",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            PowerAction::Start => "Start",
            PowerAction::Shutdown => "Shut down",
            PowerAction::PowerOff => "Power off",
            PowerAction::Reboot => "Reboot",
            PowerAction::Reset => "Reset",
            PowerAction::Pause => "Pause",
            PowerAction::Resume => "Resume",
            PowerAction::Save => "Save state",
            PowerAction::Wake => "Wake up",
        }
    }

    pub fn parse(s: &str) -> Option<PowerAction> {
        PowerAction::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The known actions, for messages: `start, shutdown, power_off, ...`.
    pub fn known() -> String {
        PowerAction::ALL.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// Forced actions lose guest state and ask for confirmation first.
    pub fn is_forced(self) -> bool {
        matches!(self, PowerAction::PowerOff | PowerAction::Reset)
    }

    /// Whether this action may overrule `pending`, a request still in flight for the same VM: a
    /// forced action overrules a graceful one (shut down, reboot...) the guest may never act
    /// on, as Proxmox's Stop overrules a running shutdown; anything else waits for `pending`
    /// to settle (double-click protection). The overruled request settles as superseded.
    pub fn overrules(self, pending: PowerAction) -> bool {
        self.is_forced() && !pending.is_forced()
    }

    /// What a forced action does to the guest, for its confirmation page.
    pub fn warning(self) -> &'static str {
        match self {
            PowerAction::PowerOff => "Power off cuts the power at once: the guest cannot save its work, like pulling the plug.",
            PowerAction::Reset => "Reset restarts the VM at once: the guest cannot save its work, like pressing the reset button.",
            _ => "",
        }
    }

    /// Whether the action makes sense for a VM in `state`, whatever its backend: the default
    /// of `Backend::offers`, which a backend narrows where its hypervisor refuses more (a
    /// crashed libvirt domain cannot be started before it is powered off).
    pub fn applies_to(self, state: PowerState) -> bool {
        use PowerState::*;
        match self {
            // A guest suspended to RAM or disk by itself (pmsuspended) is woken up, not
            // started or resumed: libvirt refuses both.
            PowerAction::Start => matches!(state, ShutOff | Crashed),
            PowerAction::Wake => state == Suspended,
            PowerAction::Shutdown
            | PowerAction::Reboot
            | PowerAction::Pause
            | PowerAction::Save => state == Running,
            PowerAction::PowerOff => {
                matches!(state, Running | Paused | Crashed | InTransition | Suspended)
            }
            PowerAction::Reset => matches!(state, Running | Paused),
            PowerAction::Resume => state == Paused,
        }
    }

    /// The state a successful action leads to, which confirms it. Reboot and reset end where
    /// they started (running).
    pub fn expected_state(self) -> PowerState {
        match self {
            PowerAction::Start
            | PowerAction::Reboot
            | PowerAction::Reset
            | PowerAction::Resume
            | PowerAction::Wake => PowerState::Running,
            PowerAction::Shutdown | PowerAction::PowerOff | PowerAction::Save => {
                PowerState::ShutOff
            }
            PowerAction::Pause => PowerState::Paused,
        }
    }
}

/// Whether a VM's backend takes an action in the VM's current state: what the buttons show and
/// what power control checks before it records or sends anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Allowed,
    Unavailable(Why),
}

/// Why an action is not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The action makes no sense in this state, on any backend.
    State(PowerState),
    /// The VM's hypervisor refuses it in its current state: a sentence saying what to do
    /// instead ("... power it off first, then start it.").
    Hypervisor(&'static str),
}

impl Offer {
    /// The default decision, from the normalised state alone.
    pub fn by_state(action: PowerAction, state: PowerState) -> Offer {
        if action.applies_to(state) {
            Offer::Allowed
        } else {
            Offer::Unavailable(Why::State(state))
        }
    }

    pub fn allowed(self) -> bool {
        self == Offer::Allowed
    }
}

impl Why {
    /// The reason, for a disabled button (its tooltip and its hidden text).
    pub fn short(self) -> std::borrow::Cow<'static, str> {
        match self {
            Why::State(s) => format!("Not possible while the VM is {}.", s.label()).into(),
            Why::Hypervisor(words) => words.into(),
        }
    }

    /// The reason a request for `action` on the VM `vm` was refused, in one sentence or two.
    pub fn refusal(self, action: PowerAction, vm: &str) -> String {
        match self {
            Why::State(s) => {
                format!("{} is not possible while {vm} is {}.", action.label(), s.label())
            }
            Why::Hypervisor(words) => {
                format!("{} is not possible for {vm} in its current state. {words}", action.label())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for s in PowerState::ALL {
            assert_eq!(PowerState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for a in PowerAction::ALL {
            assert_eq!(PowerAction::parse(a.as_str()), Some(a));
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
    }

    #[test]
    fn only_a_forced_action_overrules_a_graceful_one() {
        use PowerAction::*;
        for pending in PowerAction::ALL {
            for new in PowerAction::ALL {
                let expected =
                    matches!(new, PowerOff | Reset) && !matches!(pending, PowerOff | Reset);
                assert_eq!(new.overrules(pending), expected, "{new:?} over {pending:?}");
            }
        }
    }

    #[test]
    fn the_dominant_state_is_the_most_sampled() {
        assert_eq!(PowerState::dominant(10, 6, 0, 4), PowerState::Running);
        assert_eq!(PowerState::dominant(10, 2, 0, 8), PowerState::ShutOff);
        assert_eq!(PowerState::dominant(10, 5, 0, 5), PowerState::ShutOff, "a tie: the later");
        assert_eq!(PowerState::dominant(10, 0, 0, 0), PowerState::Unknown);
        assert_eq!(PowerState::dominant(0, 0, 0, 0), PowerState::Unknown);
    }
}
