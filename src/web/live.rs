//! Pages that stay current (`static/live.js`): the HTML fragments the list and the VM page are
//! refreshed from, tagged so that an unchanged one costs a 304 and no rendering.
//!
//! A fragment's tag is a hash of everything its content depends on apart from the clock: the
//! inventory version (migration 0005: it moves on every poll and every VM change), the power
//! requests in flight, each host's status, the viewer's role and the query. The browser sends it
//! back in `If-None-Match`; when it still matches, the handler answers 304 before filtering,
//! sorting or rendering anything. Relative times ("updated 8 s ago") are therefore as fresh as
//! the last change, which every poll makes.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use rocket::http::{Header, Status};
use rocket::request::{FromRequest, Outcome, Request};
use rocket::response::{self, Responder};

/// How often a page with a request in flight (or a host not polled yet) is refreshed.
pub const PENDING_POLL_MS: u64 = 3_000;

/// When `static/live.js` asks again, as data attributes of the page's `#live` element
/// (`templates/partials/live_stamp.html.tera`).
#[derive(serde::Serialize)]
pub struct LiveHint {
    /// The fragment's URL (`/vms/live?…` with the list's query, `/vms/<host>/<uuid>/live`).
    href: String,
    /// Something on the page is settling: ask again in [`PENDING_POLL_MS`].
    pending: bool,
    /// Otherwise, every this many milliseconds (each poll may change the rows); 0: never, the
    /// page has nothing that can change (no host configured, a VM gone from its host).
    poll_ms: u64,
    pending_poll_ms: u64,
}

impl LiveHint {
    pub fn new(href: String, pending: bool, watch: bool, poll_interval: Duration) -> LiveHint {
        let poll_ms = if watch { poll_interval.as_millis().max(1_000) as u64 } else { 0 };
        LiveHint { href, pending, poll_ms, pending_poll_ms: PENDING_POLL_MS }
    }
}

/// A fragment's tag, built from what its content depends on (see the module doc).
pub struct LiveTag(DefaultHasher);

impl LiveTag {
    pub fn new(kind: &str) -> LiveTag {
        let mut h = DefaultHasher::new();
        // A new release may render the same data differently.
        env!("CARGO_PKG_VERSION").hash(&mut h);
        kind.hash(&mut h);
        LiveTag(h)
    }

    /// Adds one thing the content depends on.
    pub fn with(mut self, part: impl Hash) -> LiveTag {
        part.hash(&mut self.0);
        self
    }

    /// The `ETag` value, quoted as HTTP wants it.
    pub fn etag(&self) -> String {
        format!("\"live-{:016x}\"", self.0.finish())
    }
}

/// The `If-None-Match` the browser sent, if any (never fails).
pub struct IfNoneMatch(Option<String>);

impl IfNoneMatch {
    /// Whether the browser already has the fragment tagged `etag`.
    pub fn matches(&self, etag: &str) -> bool {
        self.0.as_deref().is_some_and(|given| {
            given.split(',').map(str::trim).any(|t| t == etag || t.strip_prefix("W/") == Some(etag))
        })
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for IfNoneMatch {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        Outcome::Success(IfNoneMatch(req.headers().get_one("If-None-Match").map(str::to_string)))
    }
}

/// A fragment, or "unchanged" (304, no body); both carry the tag.
pub enum Fragment<R> {
    Fresh(R, String),
    Unchanged(String),
}

impl<'r, R: Responder<'r, 'static>> Responder<'r, 'static> for Fragment<R> {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        // `Cache-Control: no-store` is added to both by `security::SecurityHeaders`.
        match self {
            Fragment::Fresh(body, etag) => {
                let mut res = body.respond_to(req)?;
                res.set_header(Header::new("ETag", etag));
                Ok(res)
            }
            Fragment::Unchanged(etag) => response::Response::build()
                .status(Status::NotModified)
                .header(Header::new("ETag", etag))
                .ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_changes_with_any_part_and_matches_only_itself() {
        let a = LiveTag::new("list").with(1_i64).with("q").etag();
        assert_eq!(a, LiveTag::new("list").with(1_i64).with("q").etag());
        assert_ne!(a, LiveTag::new("list").with(2_i64).with("q").etag());
        assert_ne!(a, LiveTag::new("vm").with(1_i64).with("q").etag());
        assert!(IfNoneMatch(Some(a.clone())).matches(&a));
        assert!(IfNoneMatch(Some(format!("\"x\", W/{a}"))).matches(&a));
        assert!(!IfNoneMatch(Some("\"live-0\"".into())).matches(&a));
        assert!(!IfNoneMatch(None).matches(&a));
    }
}
