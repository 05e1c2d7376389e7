//! Password hashing with argon2id at OWASP's minimum parameters (19 MiB, 2 passes, 1 lane),
//! always run on the blocking pool so a burst of logins never stalls page loads.

use std::collections::HashSet;
use std::sync::OnceLock;

use tokio::sync::Semaphore;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 10;

fn hasher() -> Argon2<'static> {
    // OWASP Password Storage Cheat Sheet: argon2id, m=19456 KiB, t=2, p=1 (minimum).
    let params = Params::new(19_456, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The 10,000 most common passwords (see the file's header for where they come from).
const COMMON: &str = include_str!("common-passwords.txt");

/// Whether a password is on the common-password list, regardless of case.
fn is_common(password: &str) -> bool {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    let set = SET
        .get_or_init(|| COMMON.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).collect());
    set.contains(password.to_lowercase().as_str())
}

/// Checks a new password for the account `user`; the error says what is wrong.
pub fn check_strength(password: &str, user: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(format!("the password must have at least {MIN_PASSWORD_LEN} characters"));
    }
    if password.len() > 1024 {
        return Err("the password is too long (at most 1024 bytes)".into());
    }
    if is_common(password) {
        return Err("this password is among the 10,000 most common ones: choose another".into());
    }
    if password.to_lowercase().contains(&user.to_lowercase()) {
        return Err("the password must not contain the user name".into());
    }
    Ok(())
}

/// Hashes a password (blocking: call through [`hash`] from async code).
pub fn hash_blocking(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing failed: {e}"))
}

/// Argon2 is made to be expensive; left alone, ten logins at once take every core and page
/// loads wait behind them. Hashing runs on at most all cores but one.
fn hashing_slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Semaphore::new(cores.saturating_sub(1).max(1))
    })
}

pub async fn hash(password: String) -> Result<String, String> {
    let _slot = hashing_slots().acquire().await.map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(|e| format!("hashing failed: {e}"))?
}

/// A hash of a random password, verified against when the user does not exist so that an
/// unknown name costs the same time as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_blocking("vmdeck-no-such-user-placeholder").unwrap_or_default())
}

/// Verifies `password` against `stored`, or against a dummy hash when `stored` is None.
/// Returns true only for a real match.
pub async fn verify(password: String, stored: Option<String>) -> bool {
    let Ok(_slot) = hashing_slots().acquire().await else { return false };
    tokio::task::spawn_blocking(move || {
        let exists = stored.is_some();
        let hash = stored.unwrap_or_else(|| dummy_hash().to_string());
        let ok = PasswordHash::new(&hash)
            .map(|parsed| hasher().verify_password(password.as_bytes(), &parsed).is_ok())
            .unwrap_or(false);
        ok && exists
    })
    .await
    .unwrap_or(false)
}

/// Computes the dummy hash ahead of the first login attempt.
pub fn warm_up() {
    let _ = dummy_hash();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_and_guessable_passwords_are_refused_whatever_their_case() {
        for (pw, why) in [
            ("short", "at least"),
            ("1234567890", "most common"),
            ("Password12", "most common"),
            ("QWERTYUIOP", "most common"),
            ("alice-is-here-2026", "user name"),
        ] {
            let e = check_strength(pw, "Alice").unwrap_err();
            assert!(e.contains(why), "{pw}: {e}");
        }
        assert!(check_strength("correct horse battery", "alice").is_ok());
        assert!(is_common("123456"), "the list's first entry is read");
    }
}
