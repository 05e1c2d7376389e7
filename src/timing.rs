//! A `Server-Timing` header on every response: the time the server spent on the request, as
//! browsers' developer tools and the benchmark read it.

use std::time::Instant;

use rocket::fairing::{Fairing, Info, Kind};
use rocket::http::Header;
use rocket::{Data, Request, Response};

pub struct ServerTiming;

#[derive(Clone, Copy)]
struct Started(Option<Instant>);

#[rocket::async_trait]
impl Fairing for ServerTiming {
    fn info(&self) -> Info {
        Info { name: "Server-Timing", kind: Kind::Request | Kind::Response }
    }

    async fn on_request(&self, req: &mut Request<'_>, _: &mut Data<'_>) {
        req.local_cache(|| Started(Some(Instant::now())));
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        if let Started(Some(t)) = req.local_cache(|| Started(None)) {
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            res.set_header(Header::new("Server-Timing", format!("app;dur={ms:.3}")));
        }
    }
}
