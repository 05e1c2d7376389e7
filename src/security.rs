//! Security headers on every response, beyond Rocket's Shield defaults: a Content-Security-Policy
//! with no inline script at all, no framing, a strict Referrer-Policy, and no caching of pages
//! that show inventory or audit data.

use rocket::fairing::{Fairing, Info, Kind};
use rocket::http::{ContentType, Header};
use rocket::shield::{Frame, Referrer, Shield};
use rocket::{Request, Response};

/// Rocket's Shield, with framing denied and referrers kept to this origin.
pub fn shield() -> Shield {
    Shield::default().enable(Frame::Deny).enable(Referrer::SameOrigin)
}

/// `connect-src 'self'` is what `default-src` already gives, written out for the console's
/// WebSocket (static/console.js): under CSP Level 3, which current browsers implement, `'self'`
/// also matches `ws:`/`wss:` to the page's own host and port, so no wider source is needed.
pub const CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                       base-uri 'none'; object-src 'none'";

pub struct SecurityHeaders;

#[rocket::async_trait]
impl Fairing for SecurityHeaders {
    fn info(&self) -> Info {
        Info { name: "Security headers", kind: Kind::Response }
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        res.set_header(Header::new("Content-Security-Policy", CSP));
        // Behind an HTTPS proxy, browsers are told to never use plain HTTP for this site again.
        if req.rocket().state::<crate::config::Settings>().is_some_and(|s| s.https()) {
            res.set_header(Header::new("Strict-Transport-Security", "max-age=31536000"));
        }
        let is_static = req.uri().path().starts_with("/static/");
        if !is_static
            && res.content_type().is_none_or(|c| {
                c == ContentType::HTML || c == ContentType::CSV || c == ContentType::JSON
            })
        {
            res.set_header(Header::new("Cache-Control", "no-store"));
        }
    }
}
