-- Accounts, server-side sessions and the append-only audit log.

CREATE TABLE users (
    id                  INTEGER PRIMARY KEY,
    -- Unique regardless of case, so "Alice" and "alice" cannot both exist.
    name                TEXT NOT NULL UNIQUE COLLATE NOCASE,
    -- argon2id PHC string.
    password_hash       TEXT NOT NULL,
    role                TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    -- Created by the demo profile with a generated password printed once.
    demo                INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL,
    password_changed_at INTEGER NOT NULL
);

-- One row per login. The cookie holds a random id of 256 bits; only its SHA-256 is stored, so
-- a copy of the database does not give working sessions. Deleting a user ends its sessions.
CREATE TABLE sessions (
    id_hash     TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    client_addr TEXT
);
CREATE INDEX sessions_by_user ON sessions(user_id);

-- Every power action and every security-relevant event. Power actions go through
-- requested -> sent -> accepted | failed -> confirmed | unconfirmed; other events are written
-- settled (ok / refused). Names are copied, not referenced, so entries outlive users and VMs.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    ts          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    user_name   TEXT,
    client_addr TEXT,
    host_name   TEXT,
    vm_uuid     TEXT,
    vm_name     TEXT,
    action      TEXT,
    status      TEXT NOT NULL,
    error       TEXT,
    detail      TEXT,
    sent_at     INTEGER,
    accepted_at INTEGER,
    settled_at  INTEGER
);
CREATE INDEX audit_by_ts ON audit_log(ts);
CREATE INDEX audit_by_vm ON audit_log(vm_uuid, ts);

-- At most one power action in flight per VM: a second request fails on this index, atomically.
CREATE UNIQUE INDEX audit_one_pending_per_vm ON audit_log(host_name, vm_uuid)
    WHERE kind = 'power' AND status IN ('requested', 'sent', 'accepted');

-- Append-only, enforced here as well as in the code: a settled entry never changes, and a
-- pending one may only move its lifecycle columns.
CREATE TRIGGER audit_settled_is_final BEFORE UPDATE ON audit_log
WHEN OLD.status NOT IN ('requested', 'sent', 'accepted')
BEGIN
    SELECT RAISE(ABORT, 'audit entries are append-only');
END;

CREATE TRIGGER audit_identity_is_final BEFORE UPDATE ON audit_log
WHEN NEW.id IS NOT OLD.id OR NEW.ts IS NOT OLD.ts OR NEW.kind IS NOT OLD.kind
  OR NEW.user_name IS NOT OLD.user_name OR NEW.client_addr IS NOT OLD.client_addr
  OR NEW.host_name IS NOT OLD.host_name OR NEW.vm_uuid IS NOT OLD.vm_uuid
  OR NEW.vm_name IS NOT OLD.vm_name OR NEW.action IS NOT OLD.action
BEGIN
    SELECT RAISE(ABORT, 'audit entries are append-only');
END;

-- Deletion only through retention pruning: entries older than `prune_before`, which the
-- retention task (setting `audit_retention_days`) moves forward. Default: keep forever.
CREATE TABLE audit_retention (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    prune_before INTEGER NOT NULL
);
INSERT INTO audit_retention (id, prune_before) VALUES (1, 0);

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit_log
WHEN OLD.ts >= (SELECT prune_before FROM audit_retention WHERE id = 1)
BEGIN
    SELECT RAISE(ABORT, 'audit entries are append-only; only retention pruning deletes them');
END;
