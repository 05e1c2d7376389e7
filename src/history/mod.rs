//! The page of one VM (`GET /vms/<host>/<uuid>`): its configuration now, history charts over a
//! chosen range, a power-state timeline with uptime, configuration and IP address history, and
//! links to its audit entries; and the same history as CSV. A VM that is gone keeps its page.
//!
//! `routes` reads as query → model → view; `range` reads the time range, `model` loads and
//! shapes the history, `store` holds the SQL, `rollup` maintains the coarser resolutions,
//! `snapshots` shapes the snapshot tree and past snapshots.

mod model;
mod range;
pub mod rollup;
mod routes;
mod snapshots;
mod store;

pub use model::MAX_POINTS;
pub use routes::routes;
