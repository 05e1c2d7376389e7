//! vmdeck's integration tests: one binary, one module per area. Everything runs against real
//! parts: libvirt's test driver and a private libvirtd with QEMU, SQLite files, the HTTP server,
//! headless Chromium.

mod support {
    pub mod app;
    pub mod audit;
    pub mod binary;
    pub mod browser;
    pub mod fakes;
    pub mod libvirtd;
    pub mod receiver;
    pub mod rfb;
    pub mod wait;
}

mod alert_notify;
mod alerts;
mod alerts_pages;
mod audit;
mod auth;
mod backend_contract;
mod browser_a11y;
mod browser_console;
mod browser_list;
mod browser_snapshots;
mod browser_times;
mod cli;
mod config;
mod console;
mod console_links;
mod control;
mod demo;
mod faults;
mod flood;
mod fuzz;
mod history;
mod inventory;
mod live;
mod metrics;
mod power_offers;
mod real_vm;
mod reports;
mod rollups;
mod schedules;
mod snapshots_control;
mod snapshots_inventory;
mod store;
mod upgrade;
mod virtualbox;
