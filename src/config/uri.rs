//! Where a host is reached, as configured and as shown: URIs may carry credentials, so every
//! page and log line uses the redacted form.

use std::fmt;

/// A hypervisor connection URI. It may carry credentials (`qemu+ssh://user:secret@host/system`),
/// so it is never shown or logged as given: [`HostUri::redacted`] is its public face.
#[derive(Clone)]
pub struct HostUri {
    raw: String,
    redacted: String,
}

impl HostUri {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim() != s || s.is_empty() {
            return Err("must be a non-empty URI without surrounding spaces".into());
        }
        let mut url = url::Url::parse(s).map_err(|e| format!("malformed URI: {e}"))?;
        let driver_part = url.scheme().split('+').next().unwrap_or_default();
        if driver_part.is_empty() {
            return Err("malformed URI: missing the driver (e.g. qemu:///system)".into());
        }
        let had_password = url.password().is_some();
        if had_password {
            // set_password only fails for cannot-be-a-base URLs, which have no password.
            let _ = url.set_password(Some("***"));
        }
        // Query values such as `password=` or `passwd=` are not libvirt parameters, but a URI copied
        // from elsewhere may carry one: mask any parameter whose name suggests a secret.
        let secret_query = url.query_pairs().any(|(k, _)| is_secret_key(&k));
        if secret_query {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if is_secret_key(&k) { "***".to_string() } else { v.into_owned() };
                    (k.into_owned(), v)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        let redacted = if had_password || secret_query { url.to_string() } else { s.to_string() };
        Ok(HostUri { raw: s.to_string(), redacted })
    }

    /// The URI as configured, credentials included: only for the backend's connection call.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// The URI with any password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The public face of a host reached by running a command rather than through a URI (a
    /// VirtualBox host): the command line, with any argument that looks like a secret masked.
    pub fn command(words: &[String]) -> Self {
        let mut shown = Vec::with_capacity(words.len());
        let mut mask_next = false;
        // After `sshpass` (first or behind `sudo`/`env`), `-p X` and `-pX` carry a password.
        // (A later `ssh -p 2222` port is masked too: harmless.)
        let mut after_sshpass = false;
        for w in words {
            if std::mem::take(&mut mask_next) {
                shown.push("***".to_string());
                continue;
            }
            after_sshpass |= w.rsplit('/').next() == Some("sshpass");
            let attached_sshpass_password = after_sshpass && w.len() > 2 && w.starts_with("-p");
            match w.split_once('=') {
                _ if attached_sshpass_password => shown.push("-p***".to_string()),
                Some((k, _)) if is_secret_key(k) => shown.push(format!("{k}=***")),
                _ => shown.push(w.clone()),
            }
            // `--password X`, `-passin X`, and sshpass's `-p X` carry the secret in the next word.
            let flag = w.trim_start_matches('-');
            mask_next = w.starts_with('-')
                && !w.contains('=')
                && (is_secret_key(flag) || (flag == "p" && after_sshpass));
        }
        let line = shown.join(" ");
        HostUri { raw: line.clone(), redacted: line }
    }
}

fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    k.contains("pass") || k.contains("secret") || k.contains("token")
}

impl fmt::Debug for HostUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostUri({})", self.redacted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(words: &[&str]) -> String {
        HostUri::command(&words.iter().map(|w| w.to_string()).collect::<Vec<_>>())
            .redacted()
            .to_string()
    }

    #[test]
    fn sshpass_passwords_are_masked_in_every_form() {
        assert_eq!(shown(&["sshpass", "-p", "hunter2", "ssh", "h"]), "sshpass -p *** ssh h");
        assert_eq!(shown(&["sshpass", "-phunter2", "ssh", "h"]), "sshpass -p*** ssh h");
        assert_eq!(
            shown(&["sudo", "-u", "vbox", "/usr/bin/sshpass", "-phunter2", "ssh", "h"]),
            "sudo -u vbox /usr/bin/sshpass -p*** ssh h"
        );
        assert_eq!(shown(&["ssh", "-p", "2222", "h"]), "ssh -p 2222 h", "no sshpass: a port");
    }
}
