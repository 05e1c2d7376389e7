-- Alerts (issue 14): rules, the alerts they raise with every transition, acknowledgements,
-- silences, notification targets and what was sent to them. See src/alerts/mod.rs.

-- A rule: which condition, on which VMs or hosts, for how long before it fires, how severe.
-- Rules from the configuration file (`[[alert_rules]]`) are written here at every start with
-- source 'file' and are read-only in the page; the page's own have source 'page'.
CREATE TABLE alert_rules (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE COLLATE NOCASE,
    source        TEXT NOT NULL CHECK (source IN ('page', 'file')),
    enabled       INTEGER NOT NULL DEFAULT 1,
    -- The condition (alerts::rules::Condition): 'vm_state' (a VM is not in its expected state:
    -- `expected` 'running' or 'running_if_autostart'), 'host_unreachable' (the host's last
    -- poll failed), 'cpu_above' / 'memory_above' (`threshold` percent of the VM's vCPUs /
    -- assigned memory), 'disk_growth' (allocated disk capacity grew by `threshold` bytes or more
    -- within `period_secs`), 'request_failed' (a power or snapshot request failed or was
    -- unconfirmed within `period_secs`), 'snapshot_age' (the oldest snapshot is older than
    -- `threshold` days).
    kind          TEXT NOT NULL CHECK (kind IN ('vm_state', 'host_unreachable', 'cpu_above',
                      'memory_above', 'disk_growth', 'request_failed', 'snapshot_age')),
    threshold     REAL,
    period_secs   INTEGER,
    expected      TEXT,
    -- Which VMs (or hosts, for host_unreachable): 'all', 'host' (the host named in
    -- scope_value), 'pattern' (VM names matching the glob in scope_value, `*` and `?`) or
    -- 'vms' (the rows of alert_rule_vms).
    scope         TEXT NOT NULL CHECK (scope IN ('all', 'host', 'pattern', 'vms')),
    scope_value   TEXT NOT NULL DEFAULT '',
    -- How long the condition must hold before the alert fires (0: at the first evaluation).
    for_secs      INTEGER NOT NULL DEFAULT 0 CHECK (for_secs >= 0),
    severity      TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    created_by    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE alert_rule_vms (
    rule_id       INTEGER NOT NULL REFERENCES alert_rules(id) ON DELETE CASCADE,
    host_name     TEXT NOT NULL,
    vm_uuid       TEXT NOT NULL,
    PRIMARY KEY (rule_id, host_name, vm_uuid)
);

-- One alert: a rule's condition held for one subject (a VM, or a host) from `pending_since`
-- until it no longer did. States: 'pending' (holding, `for` not elapsed), 'firing', 'resolved'
-- (it fired, then stopped holding) and 'inactive' (it stopped holding before it fired). Only
-- pending and firing alerts are open; a subject has at most one open alert per rule. The rule's
-- name, severity and the subject's names are copied, so the history outlives the rule.
CREATE TABLE alerts (
    id             INTEGER PRIMARY KEY,
    rule_id        INTEGER REFERENCES alert_rules(id) ON DELETE SET NULL,
    rule_name      TEXT NOT NULL,
    severity       TEXT NOT NULL,
    -- 'vm:<host>/<uuid>' or 'host:<host>'
    subject        TEXT NOT NULL,
    -- Stable across restarts: 16 hex digits of SHA-256 over the rule name and the subject.
    fingerprint    TEXT NOT NULL,
    host_name      TEXT NOT NULL,
    vm_uuid        TEXT,
    vm_name        TEXT,
    state          TEXT NOT NULL CHECK (state IN ('pending', 'firing', 'resolved', 'inactive')),
    -- The condition in words as last evaluated, and its measured value (percent, bytes, days).
    summary        TEXT NOT NULL,
    value          REAL,
    pending_since  INTEGER NOT NULL,
    firing_since   INTEGER,
    ended_at       INTEGER,
    last_eval_at   INTEGER NOT NULL,
    ack_by         TEXT,
    ack_at         INTEGER,
    ack_comment    TEXT
);
CREATE UNIQUE INDEX alerts_one_open ON alerts(rule_id, subject)
    WHERE state IN ('pending', 'firing');
CREATE INDEX alerts_by_start ON alerts(pending_since);
CREATE INDEX alerts_by_vm ON alerts(host_name, vm_uuid, pending_since);

-- Every transition of every alert, in order: from 'inactive' to 'pending' or 'firing', from
-- 'pending' to 'firing' or 'inactive', from 'firing' to 'resolved'; acknowledgements are
-- recorded here too (from and to 'firing', detail: who and the comment).
CREATE TABLE alert_transitions (
    id           INTEGER PRIMARY KEY,
    alert_id     INTEGER NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    at           INTEGER NOT NULL,
    from_state   TEXT NOT NULL,
    to_state     TEXT NOT NULL,
    detail       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX alert_transitions_by_alert ON alert_transitions(alert_id, at);
CREATE INDEX alert_transitions_by_time ON alert_transitions(at);

-- A silence: alerts it matches are still evaluated and shown (as silenced) but not notified,
-- from `starts_at` until `ends_at` (or until an operator ends it early: `ended_at`). Matchers
-- left empty match everything: the rule (by name), the host, a VM name glob.
CREATE TABLE alert_silences (
    id           INTEGER PRIMARY KEY,
    rule_name    TEXT,
    host_name    TEXT,
    vm_pattern   TEXT,
    comment      TEXT NOT NULL,
    starts_at    INTEGER NOT NULL,
    ends_at      INTEGER NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    ended_at     INTEGER,
    ended_by     TEXT,
    CHECK (ends_at > starts_at)
);

-- Where notifications go: an Alertmanager (v2 API), a webhook (Alertmanager's webhook JSON,
-- version 4) or e-mail over SMTP. `settings` is JSON without secrets; `secret` (a bearer
-- token, the SMTP password) is never shown on a page or in a log. File targets
-- (`[[alert_targets]]`) are written at every start with source 'file', read-only in the page.
CREATE TABLE alert_targets (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE COLLATE NOCASE,
    source         TEXT NOT NULL CHECK (source IN ('page', 'file')),
    kind           TEXT NOT NULL CHECK (kind IN ('alertmanager', 'webhook', 'email')),
    enabled        INTEGER NOT NULL DEFAULT 1,
    settings       TEXT NOT NULL DEFAULT '{}',
    secret         TEXT,
    -- Alerts below this severity are not sent here.
    min_severity   TEXT NOT NULL DEFAULT 'info' CHECK (min_severity IN ('info', 'warning', 'critical')),
    created_by     TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    -- How sending went, shown on the page: the last success, the last failure and its error,
    -- failures since the last success.
    last_ok_at     INTEGER,
    last_error_at  INTEGER,
    last_error     TEXT,
    failures       INTEGER NOT NULL DEFAULT 0
);

-- A notification group's state per target (grouping by rule and host): the firing alerts last
-- sent (fingerprints, JSON array) and when, so a group is sent again only when what fires
-- changed (after the group interval) or the repeat interval passed, and its resolved alerts
-- are the ones last sent as firing that no longer fire.
CREATE TABLE alert_groups (
    target_id      INTEGER NOT NULL REFERENCES alert_targets(id) ON DELETE CASCADE,
    group_key      TEXT NOT NULL,
    firing         TEXT NOT NULL DEFAULT '[]',
    last_sent_at   INTEGER,
    PRIMARY KEY (target_id, group_key)
);

-- The outbox: one notification to one target, sent by the sender task (never by a poll) and
-- retried with backoff until it is sent, superseded by a newer one of its group, or given up.
CREATE TABLE alert_deliveries (
    id              INTEGER PRIMARY KEY,
    target_id       INTEGER NOT NULL REFERENCES alert_targets(id) ON DELETE CASCADE,
    group_key       TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    -- 'firing' (some alert fires) or 'resolved' (all of the group's alerts resolved).
    status          TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
    alert_count     INTEGER NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'queued'
                        CHECK (state IN ('queued', 'sent', 'superseded', 'given_up')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    sent_at         INTEGER,
    last_error      TEXT
);
CREATE INDEX alert_deliveries_due ON alert_deliveries(next_attempt_at) WHERE state = 'queued';
CREATE INDEX alert_deliveries_by_target ON alert_deliveries(target_id, created_at);
