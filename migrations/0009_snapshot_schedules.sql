-- Snapshot schedules with retention (admins define them on /schedules): which VMs, when
-- (UTC), how many snapshots to keep; and each run of a schedule, with one row per VM it
-- handled. Scheduled takes and prunes are ordinary snapshot requests (audit kind `snapshot`,
-- user `system`) whose `snapshot_requests.schedule_id` (0008) names the schedule: that link is
-- how a prune knows a snapshot is the schedule's own.

CREATE TABLE snapshot_schedules (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE COLLATE NOCASE,
    enabled       INTEGER NOT NULL DEFAULT 1,
    -- Which VMs: 'vms' (the rows of schedule_vms), 'pattern' (VM names matching the glob in
    -- scope_value, `*` and `?`, on every host) or 'host' (every VM of the host named in
    -- scope_value).
    scope         TEXT NOT NULL CHECK (scope IN ('vms', 'pattern', 'host')),
    scope_value   TEXT NOT NULL DEFAULT '',
    -- When, in UTC: 'hourly' at minute `at_minute`, 'daily' at `at_hour`:`at_minute`, 'weekly'
    -- on `weekday` (0 = Monday … 6 = Sunday) at `at_hour`:`at_minute`.
    frequency     TEXT NOT NULL CHECK (frequency IN ('hourly', 'daily', 'weekly')),
    weekday       INTEGER NOT NULL DEFAULT 0 CHECK (weekday BETWEEN 0 AND 6),
    at_hour       INTEGER NOT NULL DEFAULT 0 CHECK (at_hour BETWEEN 0 AND 23),
    at_minute     INTEGER NOT NULL DEFAULT 0 CHECK (at_minute BETWEEN 0 AND 59),
    -- Retention: keep the newest `keep_last`, and/or the newest of each of the last
    -- `keep_daily` days; at least one of them.
    keep_last     INTEGER CHECK (keep_last IS NULL OR keep_last > 0),
    keep_daily    INTEGER CHECK (keep_daily IS NULL OR keep_daily > 0),
    with_memory   INTEGER NOT NULL DEFAULT 0,
    created_by    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    -- The slot (ms) of the last run started; NULL before the first. A slot at or before it is
    -- never run again; slots missed while vmdeck was down collapse into the latest one.
    last_slot     INTEGER,
    CHECK (keep_last IS NOT NULL OR keep_daily IS NOT NULL)
);

-- A 'vms' schedule's VMs, by host name and uuid (a VM that is gone is skipped by the run).
CREATE TABLE schedule_vms (
    schedule_id   INTEGER NOT NULL REFERENCES snapshot_schedules(id) ON DELETE CASCADE,
    host_name     TEXT NOT NULL,
    vm_uuid       TEXT NOT NULL,
    PRIMARY KEY (schedule_id, host_name, vm_uuid)
);

-- One run of a schedule for one slot. `finished_at` NULL: running (or interrupted by a stop).
CREATE TABLE schedule_runs (
    id            INTEGER PRIMARY KEY,
    schedule_id   INTEGER NOT NULL REFERENCES snapshot_schedules(id) ON DELETE CASCADE,
    slot          INTEGER NOT NULL,
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER,
    taken         INTEGER NOT NULL DEFAULT 0,
    failed        INTEGER NOT NULL DEFAULT 0,
    pruned        INTEGER NOT NULL DEFAULT 0,
    UNIQUE (schedule_id, slot)
);
CREATE INDEX schedule_runs_by_schedule ON schedule_runs(schedule_id, slot);

-- What a run did to each VM in its scope: 'taken' or 'failed' (error in words), and how many
-- of the schedule's old snapshots it pruned there (prune_error: a prune that failed).
CREATE TABLE schedule_run_vms (
    run_id        INTEGER NOT NULL REFERENCES schedule_runs(id) ON DELETE CASCADE,
    host_name     TEXT NOT NULL,
    vm_uuid       TEXT NOT NULL,
    vm_name       TEXT NOT NULL,
    outcome       TEXT NOT NULL CHECK (outcome IN ('taken', 'failed')),
    error         TEXT,
    audit_id      INTEGER,
    pruned        INTEGER NOT NULL DEFAULT 0,
    prune_error   TEXT,
    PRIMARY KEY (run_id, host_name, vm_uuid)
);
