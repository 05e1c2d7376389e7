-- Snapshots: each VM's snapshot set as the poller last read it, with its history (a row
-- stays when its snapshot disappears: `gone_at` says when), and snapshot requests (take,
-- revert, delete), which go through the power requests' lifecycle and audit log as kind
-- `snapshot`.

-- One row per snapshot per stretch of time it existed. `snap_id` is the hypervisor's
-- identifier (libvirt: the snapshot's name; VirtualBox: its UUID). Times in ms.
CREATE TABLE vm_snapshots (
    id                 INTEGER PRIMARY KEY,
    vm_id              INTEGER NOT NULL REFERENCES vms(id),
    snap_id            TEXT NOT NULL,
    name               TEXT NOT NULL,
    description        TEXT NOT NULL DEFAULT '',
    -- The parent's snap_id; NULL for a root.
    parent_snap_id     TEXT,
    -- When the hypervisor says it was taken; NULL where it does not say (VirtualBox).
    created_at         INTEGER,
    -- The VM state captured, in the hypervisor's words ('running', 'shutoff', 'disk-snapshot').
    vm_state           TEXT NOT NULL DEFAULT '',
    with_memory        INTEGER NOT NULL DEFAULT 0,
    is_current         INTEGER NOT NULL DEFAULT 0,
    -- The read that first listed it, and the first read that no longer did (NULL while it
    -- exists).
    first_seen         INTEGER NOT NULL,
    gone_at            INTEGER,
    -- The audit entries of the requests that took and removed it, when vmdeck did.
    taken_by_audit_id  INTEGER,
    removed_by_audit_id INTEGER
);
CREATE UNIQUE INDEX vm_snapshots_present ON vm_snapshots(vm_id, snap_id) WHERE gone_at IS NULL;
CREATE INDEX vm_snapshots_by_vm ON vm_snapshots(vm_id, first_seen);

-- When the poller last read a VM's snapshot set, and what it saw of the VM then (a hash of
-- its state and configuration): the set is read again only when that changed or the read is
-- older than the snapshot interval, never once per VM per poll in steady state.
ALTER TABLE vms ADD COLUMN snapshots_read_at INTEGER;
ALTER TABLE vms ADD COLUMN snapshots_read_key TEXT;
-- The list's snapshot column and filter: the count and the oldest creation (or first-seen)
-- time of the snapshots that exist now, kept beside the VM so the list reads no extra table.
ALTER TABLE vms ADD COLUMN snapshot_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE vms ADD COLUMN snapshot_oldest INTEGER;

-- A snapshot request's parameters, one row per audit entry of kind 'snapshot' (the entry
-- itself holds who, when, which VM, the action and its lifecycle; its settled detail names
-- the snapshot, so the hash chain covers it). No foreign key: audit retention may prune the
-- entry, and this row then only loses its meaning.
CREATE TABLE snapshot_requests (
    audit_id      INTEGER PRIMARY KEY,
    -- Take: the new snapshot's name; revert and delete: the target's name as shown then.
    snapshot_name TEXT NOT NULL,
    -- Revert and delete: the target's hypervisor id; take: NULL until it is seen.
    snap_id       TEXT,
    description   TEXT NOT NULL DEFAULT '',
    with_memory   INTEGER NOT NULL DEFAULT 0,
    -- Revert: 'as_taken', 'running' or 'paused'.
    after_revert  TEXT,
    -- A scheduled take or prune: its schedule (see the schedules migration).
    schedule_id   INTEGER
);

-- One request in flight per VM, power or snapshot: the index and the trigger in front of it
-- (0002, 0004) covered power requests only.
DROP INDEX audit_one_pending_per_vm;
CREATE UNIQUE INDEX audit_one_pending_per_vm ON audit_log(host_name, vm_uuid)
    WHERE kind IN ('power', 'snapshot') AND status IN ('requested', 'sent', 'accepted');

DROP TRIGGER audit_insert_one_pending_per_vm;
CREATE TRIGGER audit_insert_one_pending_per_vm BEFORE INSERT ON audit_log
WHEN NEW.kind IN ('power', 'snapshot') AND NEW.status IN ('requested', 'sent', 'accepted')
  AND EXISTS (SELECT 1 FROM audit_log
              WHERE kind IN ('power', 'snapshot') AND status IN ('requested', 'sent', 'accepted')
                AND host_name = NEW.host_name AND vm_uuid = NEW.vm_uuid)
BEGIN
    SELECT RAISE(ABORT, 'another request is still pending for this VM');
END;

-- As 0007's, with kind 'snapshot' allowed to start pending.
DROP TRIGGER audit_insert_is_pending_or_chained;
CREATE TRIGGER audit_insert_is_pending_or_chained BEFORE INSERT ON audit_log
WHEN NEW.status IN ('requested', 'sent', 'accepted', 'failed', 'confirmed', 'unconfirmed', 'ok', 'refused',
                    'superseded')
 AND NOT COALESCE(
    (NEW.status IN ('requested', 'sent', 'accepted') AND NEW.kind IN ('power', 'snapshot')
      AND NEW.error IS NULL AND NEW.detail IS NULL AND NEW.settled_at IS NULL
      AND NEW.chain_seq IS NULL AND NEW.chain_prev IS NULL AND NEW.chain_hash IS NULL)
    OR (NEW.status NOT IN ('requested', 'sent', 'accepted') AND NEW.settled_at IS NOT NULL
      AND (NEW.chain_seq, NEW.chain_prev) = (SELECT seq + 1, hash FROM audit_chain_head)
      AND length(NEW.chain_hash) = 64 AND NEW.chain_hash NOT GLOB '*[^0-9a-f]*'),
    0)
BEGIN
    SELECT RAISE(ABORT, 'audit entries are append-only: a new entry is pending, or settled at the end of the chain');
END;

-- The list keeps its rows in memory until the inventory version moves (0005): a snapshot
-- appearing or going changes the snapshot column, through the vms row's count, which the
-- existing vms triggers already cover.
