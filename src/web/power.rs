//! The power buttons a VM offers, and the links and forms around them: which actions apply to
//! its state, which go through the confirmation page, and where the browser comes back to.
//! The VM list, the VM page and the power routes all build them here.

use serde::Serialize;

use super::redirectable;
use crate::domain::{PowerAction, PowerState, VmKey};

/// One action button.
#[derive(Debug, Serialize)]
pub struct ActionButton {
    pub value: &'static str,
    pub label: &'static str,
    /// Forced actions go through a confirmation page (a link, not a button).
    pub confirm_href: Option<String>,
}

/// Where a VM's power form posts.
pub fn power_href(vm: &VmKey) -> String {
    format!("{}/power", vm.href())
}

/// The confirmation page of a forced action, coming back to `back` afterwards.
pub fn confirm_href(vm: &VmKey, action: PowerAction, back: &str) -> String {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("action", action.as_str())
        .append_pair("back", back)
        .finish();
    format!("{}/confirm?{q}", power_href(vm))
}

/// The buttons for a VM in `state`, in a fixed order.
pub fn buttons(vm: &VmKey, state: PowerState, back: &str) -> Vec<ActionButton> {
    PowerAction::ALL
        .iter()
        .filter(|a| a.applies_to(state))
        .map(|&a| ActionButton {
            value: a.as_str(),
            label: a.label(),
            confirm_href: a.is_forced().then(|| confirm_href(vm, a, back)),
        })
        .collect()
}

/// Every action, for the bulk form (its confirmation comes after the selection is posted).
pub fn bulk_buttons() -> Vec<ActionButton> {
    PowerAction::ALL
        .iter()
        .map(|a| ActionButton { value: a.as_str(), label: a.label(), confirm_href: None })
        .collect()
}

/// Where to go after an action: a local vmdeck page that is a URI as given (a redirect to
/// anything else is a 500), else the VM list.
pub fn safe_back(back: Option<&str>) -> String {
    match back {
        Some(b)
            if (b.starts_with("/vms") || b.starts_with("/audit"))
                && !b.contains("//")
                && !b.contains('\\')
                && redirectable(b) =>
        {
            b.to_string()
        }
        _ => "/vms".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_actions_link_to_their_confirmation_and_come_back() {
        let vm = VmKey::parse("lab/6695eb01-f6a4-8304-79aa-97f2502e193f").unwrap();
        let b = buttons(&vm, PowerState::Paused, "/vms?q=a b");
        let names: Vec<_> = b.iter().map(|b| b.value).collect();
        assert_eq!(names, ["power_off", "reset", "resume"]);
        assert_eq!(
            b[0].confirm_href.as_deref(),
            Some("/vms/lab/6695eb01-f6a4-8304-79aa-97f2502e193f/power/confirm?action=power_off&back=%2Fvms%3Fq%3Da+b")
        );
        assert_eq!(b[2].confirm_href, None);
        assert_eq!(safe_back(Some("//evil.example")), "/vms");
        assert_eq!(safe_back(Some("/audit?vm=x")), "/audit?vm=x");
        assert_eq!(safe_back(Some("/vms?q=<script>")), "/vms", "not a URI as given");
        assert_eq!(safe_back(Some("/vms?q=a b")), "/vms", "not a URI as given");
    }
}
