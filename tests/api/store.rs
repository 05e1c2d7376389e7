//! The inventory store against a real SQLite file, fed with hand-made reports so every change
//! between polls can be set up exactly: configuration versions, rates, resets, vanishing VMs,
//! address history, a cold cache after restart.

use std::net::IpAddr;

use sqlx::SqlitePool;
use vmdeck::backend::{libvirt::LibvirtSettings, DriverConfig};
use vmdeck::backend::{AddrSource, Counters, Disk, IpAddress, Nic, PowerState, VmConfig, VmReport};
use vmdeck::config::{HostConfig, HostName, HostUri};
use vmdeck::hosts::store::{self, HostCache};

struct Db {
    pool: SqlitePool,
    host_id: i64,
    _dir: tempfile::TempDir,
}

async fn db() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let pool =
        vmdeck::db::connect(&format!("sqlite://{}/t.db", dir.path().display())).await.unwrap();
    let host = HostConfig::new(
        HostName::parse("h1").unwrap(),
        DriverConfig::Libvirt(LibvirtSettings::new(HostUri::parse("test:///default").unwrap())),
    );
    let host_id = store::upsert_hosts(&pool, &[host], false).await.unwrap()[0];
    Db { pool, host_id, _dir: dir }
}

fn report(uuid: &str, name: &str, cpu_ns: u64) -> VmReport {
    VmReport {
        uuid: uuid.into(),
        name: name.into(),
        state: PowerState::Running,
        raw_state: "running".into(),
        state_reason: "booted".into(),
        config: VmConfig {
            vcpus: 2,
            memory_max_kib: 1 << 20,
            memory_current_kib: 1 << 20,
            os_type: "hvm".into(),
            autostart: false,
            persistent: true,
            disks: vec![Disk {
                target: "vda".into(),
                device: "disk".into(),
                source: Some("/img/a.qcow2".into()),
                bus: Some("virtio".into()),
                capacity_bytes: Some(10 << 30),
            }],
            nics: vec![Nic {
                mac: "52:54:00:00:00:01".into(),
                model: Some("virtio".into()),
                kind: "network".into(),
                source: Some("default".into()),
            }],
            graphics: Some("vnc".into()),
        },
        memory_used_kib: Some(500_000),
        counters: Counters {
            cpu_time_ns: Some(cpu_ns),
            disk_read_bytes: Some(0),
            disk_write_bytes: Some(0),
            net_rx_bytes: Some(0),
            net_tx_bytes: Some(0),
        },
        disk_usage: vec![],
        addresses: vec![ip("10.0.0.5")],
        snapshots: None,
    }
}

fn ip(a: &str) -> IpAddress {
    IpAddress {
        mac: "52:54:00:00:00:01".into(),
        addr: a.parse::<IpAddr>().unwrap(),
        prefix: 24,
        source: AddrSource::GuestAgent,
    }
}

async fn count(pool: &SqlitePool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn unchanged_configuration_is_stored_once_and_a_change_adds_a_version() {
    let db = db().await;
    let mut cache = HostCache::default();
    for i in 0..5 {
        let t = 1_000_000 + i * 10_000;
        store::record_success(
            &db.pool,
            &mut cache,
            db.host_id,
            t,
            t + 5,
            &[report("u1", "a", i as u64)],
        )
        .await
        .unwrap();
    }
    assert_eq!(count(&db.pool, "SELECT COUNT(*) FROM vm_configs").await, 1);
    assert_eq!(count(&db.pool, "SELECT COUNT(*) FROM samples").await, 5);
    assert_eq!(count(&db.pool, "SELECT COUNT(*) FROM polls WHERE ok = 1").await, 5);

    let mut grown = report("u1", "a", 10);
    grown.config.memory_max_kib *= 2;
    let rec =
        store::record_success(&db.pool, &mut cache, db.host_id, 2_000_000, 2_000_005, &[grown])
            .await
            .unwrap();
    assert_eq!(rec.config_changes, 1);
    assert_eq!(count(&db.pool, "SELECT COUNT(*) FROM vm_configs").await, 2);
    let current: i64 = count(
        &db.pool,
        "SELECT c.memory_max_kib FROM vms v JOIN vm_configs c ON c.id = v.config_id",
    )
    .await;
    assert_eq!(current, 2 << 20, "the VM points at the newest version");
}

async fn stored_graphics(pool: &SqlitePool) -> Option<String> {
    sqlx::query_scalar("SELECT graphics FROM vms").fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn the_vms_display_is_stored_with_its_configuration_and_follows_its_changes() {
    let db = db().await;
    let mut cache = HostCache::default();
    let poll = |t: i64, graphics: Option<&str>| {
        let mut r = report("u1", "a", t as u64);
        r.config.graphics = graphics.map(str::to_string);
        (t, r)
    };
    let (t, r) = poll(0, Some("vnc"));
    store::record_success(&db.pool, &mut cache, db.host_id, t, t + 1, &[r]).await.unwrap();
    assert_eq!(stored_graphics(&db.pool).await.as_deref(), Some("vnc"));

    let (t, r) = poll(10_000, Some("spice"));
    let rec =
        store::record_success(&db.pool, &mut cache, db.host_id, t, t + 1, &[r]).await.unwrap();
    assert_eq!(rec.config_changes, 1, "a new display is a new configuration version");
    assert_eq!(stored_graphics(&db.pool).await.as_deref(), Some("spice"));

    // Removed, seen by a new process (a cold cache): the column is cleared, not left stale.
    let mut fresh = HostCache::default();
    let (t, r) = poll(20_000, None);
    store::record_success(&db.pool, &mut fresh, db.host_id, t, t + 1, &[r]).await.unwrap();
    assert_eq!(stored_graphics(&db.pool).await, None);
    assert_eq!(count(&db.pool, "SELECT COUNT(*) FROM vm_configs").await, 3);
}

#[tokio::test]
async fn rates_come_from_consecutive_samples_and_a_counter_reset_gives_none() {
    let db = db().await;
    let mut cache = HostCache::default();
    // 2 vCPUs, 10 s apart: 5 s of CPU time is 25 %.
    store::record_success(
        &db.pool,
        &mut cache,
        db.host_id,
        0,
        1,
        &[report("u1", "a", 100_000_000_000)],
    )
    .await
    .unwrap();
    store::record_success(
        &db.pool,
        &mut cache,
        db.host_id,
        10_000,
        10_001,
        &[report("u1", "a", 105_000_000_000)],
    )
    .await
    .unwrap();
    // The VM restarted: its counter starts again near zero.
    store::record_success(
        &db.pool,
        &mut cache,
        db.host_id,
        20_000,
        20_001,
        &[report("u1", "a", 1_000_000)],
    )
    .await
    .unwrap();
    let pcts: Vec<(Option<f64>,)> = sqlx::query_as("SELECT cpu_pct FROM samples ORDER BY ts")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(pcts, vec![(None,), (Some(25.0),), (None,)]);
}

#[tokio::test]
async fn a_vanished_vm_is_marked_gone_with_its_history_kept_and_can_come_back() {
    let db = db().await;
    let mut cache = HostCache::default();
    store::record_success(
        &db.pool,
        &mut cache,
        db.host_id,
        0,
        1,
        &[report("u1", "a", 1), report("u2", "b", 1)],
    )
    .await
    .unwrap();
    let rec = store::record_success(
        &db.pool,
        &mut cache,
        db.host_id,
        10_000,
        10_001,
        &[report("u1", "a", 2)],
    )
    .await
    .unwrap();
    assert_eq!(rec.gone_vms, 1);
    let gone: Option<i64> = sqlx::query_scalar("SELECT gone_at FROM vms WHERE uuid = 'u2'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(gone, Some(10_000));
    assert_eq!(
        count(
            &db.pool,
            "SELECT COUNT(*) FROM samples s JOIN vms v ON v.id = s.vm_id WHERE v.uuid = 'u2'"
        )
        .await,
        1,
        "history kept"
    );
    assert_eq!(count(&db.pool, "SELECT COUNT(*) FROM vm_addresses WHERE ended_at IS NULL AND vm_id = (SELECT id FROM vms WHERE uuid = 'u2')").await, 0);

    store::record_success(
        &db.pool,
        &mut cache,
        db.host_id,
        20_000,
        20_001,
        &[report("u1", "a", 3), report("u2", "b", 1)],
    )
    .await
    .unwrap();
    let gone: Option<i64> = sqlx::query_scalar("SELECT gone_at FROM vms WHERE uuid = 'u2'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(gone, None, "a VM that comes back is present again");
    assert_eq!(
        count(&db.pool, "SELECT COUNT(*) FROM vms").await,
        2,
        "same identity, no duplicate row"
    );
}

#[tokio::test]
async fn address_changes_are_kept_as_history() {
    let db = db().await;
    let mut cache = HostCache::default();
    store::record_success(&db.pool, &mut cache, db.host_id, 0, 1, &[report("u1", "a", 1)])
        .await
        .unwrap();
    let mut moved = report("u1", "a", 2);
    moved.addresses = vec![ip("10.0.0.9"), ip("fe80::1")];
    store::record_success(&db.pool, &mut cache, db.host_id, 10_000, 10_001, &[moved.clone()])
        .await
        .unwrap();
    store::record_success(&db.pool, &mut cache, db.host_id, 20_000, 20_001, &[moved])
        .await
        .unwrap();
    let rows: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT addr, first_seen, ended_at FROM vm_addresses ORDER BY first_seen, addr",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("10.0.0.5".into(), 0, Some(10_000)),
            ("10.0.0.9".into(), 10_000, None),
            ("fe80::1".into(), 10_000, None),
        ]
    );
}

#[tokio::test]
async fn a_cold_cache_after_restart_adds_no_duplicate_rows_and_keeps_rates_going() {
    let db = db().await;
    let mut cache = HostCache::default();
    store::record_success(&db.pool, &mut cache, db.host_id, 0, 1, &[report("u1", "a", 0)])
        .await
        .unwrap();
    // A new process: the cache starts empty and loads what the database holds.
    let mut fresh = HostCache::default();
    store::record_success(
        &db.pool,
        &mut fresh,
        db.host_id,
        10_000,
        10_001,
        &[report("u1", "a", 10_000_000_000)],
    )
    .await
    .unwrap();
    assert_eq!(count(&db.pool, "SELECT COUNT(*) FROM vms").await, 1);
    assert_eq!(count(&db.pool, "SELECT COUNT(*) FROM vm_configs").await, 1);
    assert_eq!(count(&db.pool, "SELECT COUNT(*) FROM vm_addresses").await, 1);
    let pct: Option<f64> = sqlx::query_scalar("SELECT cpu_pct FROM samples WHERE ts = 10000")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(pct, Some(50.0));
}

#[tokio::test]
async fn state_since_moves_only_when_the_state_changes() {
    let db = db().await;
    let mut cache = HostCache::default();
    store::record_success(&db.pool, &mut cache, db.host_id, 0, 1, &[report("u1", "a", 1)])
        .await
        .unwrap();
    store::record_success(
        &db.pool,
        &mut cache,
        db.host_id,
        10_000,
        10_001,
        &[report("u1", "a", 2)],
    )
    .await
    .unwrap();
    let since: i64 = count(&db.pool, "SELECT state_since FROM vms").await;
    assert_eq!(since, 0);
    let mut off = report("u1", "a", 2);
    off.state = PowerState::ShutOff;
    off.raw_state = "shutoff".into();
    store::record_success(&db.pool, &mut cache, db.host_id, 20_000, 20_001, &[off]).await.unwrap();
    let (state, since): (String, i64) =
        sqlx::query_as("SELECT state, state_since FROM vms").fetch_one(&db.pool).await.unwrap();
    assert_eq!((state.as_str(), since), ("shut_off", 20_000));
}

#[tokio::test]
async fn a_failed_poll_is_recorded_with_its_error_and_keeps_the_last_good_data() {
    let db = db().await;
    let mut cache = HostCache::default();
    let ok = store::record_success(&db.pool, &mut cache, db.host_id, 0, 1, &[report("u1", "a", 1)])
        .await
        .unwrap();
    store::record_failure(&db.pool, db.host_id, 10_000, 10_500, "cannot connect").await.unwrap();
    let (last_ok, err): (i64, Option<String>) = sqlx::query_as(
        "SELECT h.last_ok_poll_id, p.error FROM hosts h JOIN polls p ON p.id = h.last_poll_id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(last_ok, ok.poll_id);
    assert_eq!(err.as_deref(), Some("cannot connect"));
    assert_eq!(
        count(&db.pool, "SELECT COUNT(*) FROM vms WHERE gone_at IS NULL").await,
        1,
        "a failure does not make VMs gone"
    );
}

#[tokio::test]
async fn duplicate_uuids_in_one_report_do_not_break_the_poll() {
    let db = db().await;
    let mut cache = HostCache::default();
    let rec = store::record_success(
        &db.pool,
        &mut cache,
        db.host_id,
        0,
        1,
        &[report("u1", "a", 1), report("u1", "a-dup", 1)],
    )
    .await
    .unwrap();
    assert_eq!(rec.vms, 1);
    assert_eq!(count(&db.pool, "SELECT COUNT(*) FROM samples").await, 1);
}

#[tokio::test]
async fn the_database_and_the_directories_created_for_it_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new/state/vmdeck.db");
    let pool = vmdeck::db::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    // A write creates the WAL beside the database.
    sqlx::query("INSERT INTO users (name, password_hash, role, demo, created_at, password_changed_at) VALUES ('x', 'h', 'viewer', 0, 0, 0)")
        .execute(&pool)
        .await
        .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600, "the database holds password hashes");
    let wal = path.with_file_name("vmdeck.db-wal");
    assert!(wal.exists(), "WAL mode is on");
    assert_eq!(mode(&wal), 0o600, "the WAL holds the same data");
    assert_eq!(mode(&dir.path().join("new")), 0o700);
    assert_eq!(mode(&dir.path().join("new/state")), 0o700);
}
