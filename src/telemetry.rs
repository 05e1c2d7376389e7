//! Logging: `tracing` with an `EnvFilter` (`RUST_LOG`), bridged from the `log` records Rocket
//! and sqlx emit.

use rocket::fairing::{Fairing, Info, Kind};
use rocket::{Data, Request};
use tracing_subscriber::EnvFilter;

/// The filter used when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,rocket=warn,rocket::launch=info,sqlx=warn,hyper=warn";

/// Installs the global subscriber once; later calls (tests) are no-ops.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // try_init also installs the log -> tracing bridge; a second call just fails quietly.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).try_init();
}

/// Logs each request's method, path, status and duration at debug level.
pub fn request_span() -> RequestLog {
    RequestLog
}

pub struct RequestLog;

#[rocket::async_trait]
impl Fairing for RequestLog {
    fn info(&self) -> Info {
        Info { name: "Request log", kind: Kind::Request | Kind::Response }
    }

    async fn on_request(&self, _req: &mut Request<'_>, _data: &mut Data<'_>) {}

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut rocket::Response<'r>) {
        tracing::debug!(method = %req.method(), path = %req.uri().path(), status = res.status().code, "request");
    }
}
