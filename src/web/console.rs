//! Whether the list and the VM page offer a VM's browser console, decided from what the
//! inventory stored (the VM's state and `vms.graphics`), without asking its host: a link for a
//! running or paused VM whose display is VNC, else the reason in a few words. The console page
//! (`console::routes`) has the last word, with the host's own reasons (a test driver, a display
//! it cannot reach).

use serde::Serialize;

use crate::backend::virtualbox::{VirtualBoxSettings, VRDE_IS_RDP, VRDE_IS_RDP_SHORT};
use crate::backend::DriverSettings;
use crate::domain::{PowerState, VmKey};

/// The console as a page shows it: a link, or a note saying why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsoleLink {
    /// `/vms/<host>/<uuid>/console`, when the console is offered.
    pub href: Option<String>,
    /// Why not, in a few words (when `href` is None).
    pub unavailable: Option<String>,
    /// The longer explanation, for the note's tooltip (may be empty).
    pub detail: String,
}

/// Whether a VM stored as `state` with display `graphics` is offered the console.
pub fn offered(state: PowerState, graphics: Option<&str>) -> bool {
    graphics == Some("vnc") && matches!(state, PowerState::Running | PowerState::Paused)
}

/// Why a VM has no console, or None when it is offered. `driver` is its host's driver.
pub fn why_not(driver: &str, state: PowerState, graphics: Option<&str>) -> Option<String> {
    if driver == VirtualBoxSettings::DRIVER {
        return Some(VRDE_IS_RDP_SHORT.to_string());
    }
    match graphics {
        None | Some("") => return Some("the VM has no VNC display".into()),
        Some("vnc") => {}
        Some(other) => {
            return Some(format!("the VM's display is {}, not VNC", other.to_uppercase()))
        }
    }
    (!offered(state, graphics)).then(|| format!("the VM is not running ({})", state.label()))
}

impl ConsoleLink {
    /// The console of `vm` on a host whose driver is `driver`.
    pub fn new(vm: &VmKey, driver: &str, state: PowerState, graphics: Option<&str>) -> Self {
        match why_not(driver, state, graphics) {
            None => ConsoleLink {
                href: Some(format!("{}/console", vm.href())),
                unavailable: None,
                detail: String::new(),
            },
            Some(why) => ConsoleLink {
                href: None,
                detail: if driver == VirtualBoxSettings::DRIVER {
                    VRDE_IS_RDP.to_string()
                } else {
                    String::new()
                },
                unavailable: Some(why),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_running_or_paused_vnc_vm_is_offered_the_console_and_others_say_why() {
        assert_eq!(why_not("libvirt", PowerState::Running, Some("vnc")), None);
        assert_eq!(why_not("libvirt", PowerState::Paused, Some("vnc")), None);
        let why = |state, g| why_not("libvirt", state, g).unwrap_or_default();
        assert_eq!(why(PowerState::Running, None), "the VM has no VNC display");
        assert_eq!(why(PowerState::Running, Some("spice")), "the VM's display is SPICE, not VNC");
        assert!(why(PowerState::ShutOff, Some("vnc")).starts_with("the VM is not running"));
        let vbox = why_not("virtualbox", PowerState::Running, Some("rdp")).unwrap_or_default();
        assert!(vbox.contains("RDP, not VNC"), "{vbox}");
    }
}
