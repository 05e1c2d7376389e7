//! Waiting for something the server does in the background: one polling loop for every test.
//!
//! `eventually("what", limit, async || ...)` re-runs the check until it answers `true` or
//! `Some(value)` and panics with "what did not happen within …" otherwise. Use `poll_until` where
//! the caller has more to say on a timeout (or a timeout is an outcome the test checks itself).
#![allow(dead_code)]

use std::time::Duration;

use tokio::time::Instant;

/// How often a condition is checked unless the caller says otherwise.
pub const EVERY: Duration = Duration::from_millis(50);

/// What a check answers: `true`/`false`, or `Some(value)`/`None`.
pub trait Ready {
    type Value;
    fn ready(self) -> Option<Self::Value>;
}

impl Ready for bool {
    type Value = ();
    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Ready for Option<T> {
    type Value = T;
    fn ready(self) -> Option<T> {
        self
    }
}

/// Checks every `every` until `check` is ready or `timeout` has passed (it is always checked at
/// least once, and once more at the deadline); `None` when it never was.
pub async fn poll_until<R: Ready>(
    timeout: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> R,
) -> Option<R::Value> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await.ready() {
            return Some(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        tokio::time::sleep(every.min(deadline - now)).await;
    }
}

/// Checks every 50 ms until `check` is ready; panics saying that `what` did not happen within
/// `timeout`.
pub async fn eventually<R: Ready>(
    what: &str,
    timeout: Duration,
    check: impl AsyncFnMut() -> R,
) -> R::Value {
    eventually_every(what, timeout, EVERY, check).await
}

/// `eventually`, checking every `every` (for checks that are slow or must not run too often).
pub async fn eventually_every<R: Ready>(
    what: &str,
    timeout: Duration,
    every: Duration,
    check: impl AsyncFnMut() -> R,
) -> R::Value {
    match poll_until(timeout, every, check).await {
        Some(value) => value,
        None => panic!("{what} did not happen within {timeout:?}"),
    }
}
