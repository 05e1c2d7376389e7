//! The power buttons a VM offers, and the links and forms around them: which actions its
//! hypervisor takes in its state (`Backend::offers`), which one comes first, which go through
//! the confirmation page, and where the browser comes back to. The VM list, the VM page and
//! the power routes all build them here.
//!
//! A VM shows one primary action ([`PowerAction::primary`]) and a "More" menu of the others
//! in [`PowerAction::ALL`]'s fixed order, those its hypervisor would refuse shown disabled
//! with the reason. Wake up is listed only where it is offered (a guest that suspended
//! itself): everywhere else it would only ever be a disabled line.

use serde::Serialize;

use super::redirectable;
use crate::backend::Backend;
use crate::domain::{Offer, PowerAction, PowerState, RequestAction, SnapshotAction, VmKey};

/// One action button.
#[derive(Debug, Serialize)]
pub struct ActionButton {
    pub value: &'static str,
    pub label: &'static str,
    /// Forced actions go through a confirmation page (a link, not a button).
    pub confirm_href: Option<String>,
    /// Why the VM's hypervisor would refuse it now; the button is then shown disabled.
    pub unavailable: Option<String>,
}

/// A VM's power actions as a page shows them: the primary one, and the menu of the others.
#[derive(Debug, Serialize, Default)]
pub struct PowerMenu {
    pub primary: Option<ActionButton>,
    pub more: Vec<ActionButton>,
}

/// Whether `action` belongs in a VM's menu given its offer (see the module doc for Wake up).
pub fn listed(action: PowerAction, offer: &Offer) -> bool {
    action != PowerAction::Wake || offer.allowed()
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

/// The primary action and the menu of a VM in `state` (`raw_state`: its backend's word) on
/// `backend`.
pub fn menu(
    vm: &VmKey,
    backend: &dyn Backend,
    state: PowerState,
    raw_state: &str,
    pending: Option<RequestAction>,
    back: &str,
) -> PowerMenu {
    // While a request is pending, only what may overrule it (power off over a stuck shutdown).
    let offers: Vec<(PowerAction, Offer)> = PowerAction::ALL
        .into_iter()
        .map(|a| (a, backend.offers(a, state, raw_state)))
        .filter(|(a, offer)| pending.is_none_or(|p| offer.allowed() && p.overruled_by(*a)))
        .collect();
    let primary = PowerAction::primary(|a| offers.iter().any(|(o, f)| *o == a && f.allowed()));
    let button = |a: PowerAction, offer: &Offer| ActionButton {
        value: a.as_str(),
        label: a.label(),
        confirm_href: a.is_forced().then(|| confirm_href(vm, a, back)),
        unavailable: match offer {
            Offer::Allowed => None,
            Offer::Unavailable(why) => Some(why.short().into_owned()),
        },
    };
    PowerMenu {
        primary: primary.map(|a| button(a, &Offer::Allowed)),
        more: offers
            .iter()
            .filter(|(a, offer)| Some(*a) != primary && listed(*a, offer))
            .map(|(a, offer)| button(*a, offer))
            .collect(),
    }
}

/// Every action, for the bulk form (its confirmation comes after the selection is posted;
/// each VM's hypervisor then decides, and refusals are listed by VM).
pub fn bulk_buttons() -> Vec<ActionButton> {
    let mut buttons: Vec<ActionButton> = PowerAction::ALL
        .iter()
        .map(|a| ActionButton {
            value: a.as_str(),
            label: a.label(),
            confirm_href: None,
            unavailable: None,
        })
        .collect();
    // A checkpoint of the selected VMs, named in the bulk form's snapshot name field.
    let take = SnapshotAction::Take;
    buttons.push(ActionButton {
        value: take.as_str(),
        label: take.label(),
        confirm_href: None,
        unavailable: None,
    });
    buttons
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
    use crate::backend::BackendError;

    /// A backend that takes nothing but the default.
    struct Default;
    #[async_trait::async_trait]
    impl Backend for Default {
        async fn inventory(&self) -> Result<Vec<crate::backend::VmReport>, BackendError> {
            Ok(Vec::new())
        }
        async fn power(&self, _: &str, _: PowerAction) -> Result<(), BackendError> {
            Ok(())
        }
        async fn vm_state(&self, _: &str) -> Result<crate::backend::VmState, BackendError> {
            Err(BackendError::NoSuchVm)
        }
    }

    #[test]
    fn forced_actions_link_to_their_confirmation_and_come_back() {
        let vm = VmKey::parse("lab/6695eb01-f6a4-8304-79aa-97f2502e193f").unwrap();
        let m = menu(&vm, &Default, PowerState::Paused, "paused", None, "/vms?q=a b");
        assert_eq!(m.primary.as_ref().map(|b| b.value), Some("resume"));
        let names: Vec<_> = m.more.iter().map(|b| b.value).collect();
        assert_eq!(
            names,
            ["start", "shutdown", "reboot", "pause", "save", "reset", "power_off"],
            "the fixed order, without the primary and without Wake up"
        );
        let offered: Vec<_> =
            m.more.iter().filter(|b| b.unavailable.is_none()).map(|b| b.value).collect();
        assert_eq!(offered, ["reset", "power_off"]);
        assert_eq!(m.more[0].unavailable.as_deref(), Some("Not possible while the VM is paused."));
        assert_eq!(
            m.more[6].confirm_href.as_deref(),
            Some("/vms/lab/6695eb01-f6a4-8304-79aa-97f2502e193f/power/confirm?action=power_off&back=%2Fvms%3Fq%3Da+b")
        );
        assert_eq!(m.more[4].confirm_href, None);
        assert_eq!(safe_back(Some("//evil.example")), "/vms");
        assert_eq!(safe_back(Some("/audit?vm=x")), "/audit?vm=x");
        assert_eq!(safe_back(Some("/vms?q=<script>")), "/vms", "not a URI as given");
        assert_eq!(safe_back(Some("/vms?q=a b")), "/vms", "not a URI as given");
    }
}
