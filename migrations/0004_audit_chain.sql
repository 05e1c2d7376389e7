-- The audit log, tamper-evident: the holes 0002's append-only triggers left open from plain
-- SQL are closed here, and every settled entry is sealed into a hash chain that
-- `vmdeck audit verify` walks.
--
-- Holes closed (each has a test in tests/api/audit.rs):
-- 1. INSERT OR REPLACE over an existing id (or over the one-pending-per-VM index) deleted the
--    old row without firing delete triggers. Inserts now refuse a taken id, an id below the
--    newest one, and a second pending request for a VM.
-- 2. Deleting or rewinding the audit_retention row turned the delete guard off (it read NULL).
--    That row can no longer be inserted, deleted or moved backwards, and the delete guard
--    treats a missing row as "keep everything".
-- 3. A pending power request's status, error and detail could be rewritten at will. Updates
--    now follow the lifecycle the code makes (control/store.rs): requested -> sent,
--    requested | sent -> accepted, requested | sent | accepted -> failed | confirmed |
--    unconfirmed; error, detail and settled_at are written only by that last step.
-- 4. Any status was accepted. Triggers refuse unknown ones. A CHECK would need the table rebuilt
--    (SQLite cannot add one to an existing table): copying a log that may hold millions of rows
--    at startup, and recreating its indexes and triggers, buys nothing a trigger does not give,
--    since both fall to the same bypasses below.
--
-- What SQL cannot close: whoever can write the database file can DROP TRIGGER, set
-- PRAGMA writable_schema, or edit the file's pages directly, and then change anything. That is
-- why settled entries are chained: each stores the SHA-256 of its content and of the previous
-- settled entry's hash (src/events/chain.rs defines the encoding), so an entry altered, removed,
-- inserted or moved shows up in `vmdeck audit verify`. The hash has no secret: someone who
-- rewrites every entry after the one they changed produces a chain that verifies. Only a head
-- kept elsewhere (verify prints it; `verify --head SEQ:HASH` checks the chain still reaches it)
-- detects that, or the newest entries being cut off. Nor can SQL tell retention from abuse of
-- it: prune_before may move forward to any time (the retention setting lives in the
-- configuration, not here), and what lies before it can then be pruned from the chain's old
-- end; the anchor verify prints shows how far the log was cut.

-- An entry joins the chain when it settles, so the chain runs in settlement order, not in id
-- order (a power request is inserted long before it settles). `chain_prev` repeats the previous
-- entry's hash: it lets verify tell an altered entry (its own hash is wrong) from a broken link
-- (an entry removed, inserted or moved before it). Pending entries have none of the three.
ALTER TABLE audit_log ADD COLUMN chain_seq INTEGER;
ALTER TABLE audit_log ADD COLUMN chain_prev TEXT;
ALTER TABLE audit_log ADD COLUMN chain_hash TEXT;
-- Full rather than partial, so SQLite answers MAX(chain_seq) from it.
CREATE UNIQUE INDEX audit_by_chain ON audit_log(chain_seq);

-- A database that had lost its retention row (hole 2) gets it back, keeping everything.
INSERT OR IGNORE INTO audit_retention (id, prune_before) VALUES (1, 0);

-- The chain's anchor: where it starts once retention has pruned its old end (the pruned
-- entry's seq and hash), or seq 0 with an all-zero hash before anything was pruned.
ALTER TABLE audit_retention ADD COLUMN anchor_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE audit_retention ADD COLUMN anchor_hash TEXT NOT NULL
    DEFAULT '0000000000000000000000000000000000000000000000000000000000000000';
-- Entries below this id were written before the chain existed. vmdeck chains the settled ones
-- once, at startup, in id order (SQLite has no SHA-256, so this migration cannot); pending ones
-- join when they settle. A settled entry without a chain position at or above this id was
-- inserted behind vmdeck's back: nothing chains it, and verify says so.
ALTER TABLE audit_retention ADD COLUMN chain_from_id INTEGER NOT NULL DEFAULT 0;
UPDATE audit_retention SET chain_from_id = (SELECT COALESCE(MAX(id), 0) + 1 FROM audit_log);

-- The chain's newest link: its last entry, or the anchor when nothing follows it. One row
-- (none if the retention row is missing, which then refuses every settlement below).
CREATE VIEW audit_chain_head (seq, hash) AS
    SELECT chain_seq, chain_hash FROM audit_log
    WHERE chain_seq = (SELECT MAX(chain_seq) FROM audit_log)
      AND chain_seq > (SELECT anchor_seq FROM audit_retention WHERE id = 1)
    UNION ALL
    SELECT anchor_seq, anchor_hash FROM audit_retention
    WHERE id = 1 AND NOT EXISTS (SELECT 1 FROM audit_log WHERE chain_seq > anchor_seq);

-- Hole 4: known statuses only (domain/audit.rs, AuditOutcome).
CREATE TRIGGER audit_status_known_on_insert BEFORE INSERT ON audit_log
WHEN NEW.status IS NOT 'requested' AND NEW.status IS NOT 'sent' AND NEW.status IS NOT 'accepted'
  AND NEW.status IS NOT 'failed' AND NEW.status IS NOT 'confirmed'
  AND NEW.status IS NOT 'unconfirmed' AND NEW.status IS NOT 'ok' AND NEW.status IS NOT 'refused'
BEGIN
    SELECT RAISE(ABORT, 'unknown audit status');
END;

CREATE TRIGGER audit_status_known_on_update BEFORE UPDATE OF status ON audit_log
WHEN NEW.status IS NOT 'requested' AND NEW.status IS NOT 'sent' AND NEW.status IS NOT 'accepted'
  AND NEW.status IS NOT 'failed' AND NEW.status IS NOT 'confirmed'
  AND NEW.status IS NOT 'unconfirmed' AND NEW.status IS NOT 'ok' AND NEW.status IS NOT 'refused'
BEGIN
    SELECT RAISE(ABORT, 'unknown audit status');
END;

-- Hole 1. In a BEFORE INSERT trigger an id left to SQLite reads as -1, which no entry has
-- (the trigger after it refuses ids below 1), so only an explicit, taken id is refused here.
CREATE TRIGGER audit_insert_takes_a_new_id BEFORE INSERT ON audit_log
WHEN EXISTS (SELECT 1 FROM audit_log WHERE id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'audit entries are append-only: that id is taken');
END;

-- An explicit id in a gap (a pruned entry's, say) would put a new entry among old ones.
CREATE TRIGGER audit_insert_takes_the_last_id AFTER INSERT ON audit_log
WHEN NEW.id < 1 OR NEW.id < (SELECT MAX(id) FROM audit_log)
BEGIN
    SELECT RAISE(ABORT, 'audit entries are append-only: a new entry takes an id above every other');
END;

-- The unique index audit_one_pending_per_vm already refuses a second pending request, but
-- INSERT OR REPLACE would resolve that by deleting the first. control/store.rs recognises this
-- message as well as the index's error.
CREATE TRIGGER audit_insert_one_pending_per_vm BEFORE INSERT ON audit_log
WHEN NEW.kind = 'power' AND NEW.status IN ('requested', 'sent', 'accepted')
  AND EXISTS (SELECT 1 FROM audit_log
              WHERE kind = 'power' AND status IN ('requested', 'sent', 'accepted')
                AND host_name = NEW.host_name AND vm_uuid = NEW.vm_uuid)
BEGIN
    SELECT RAISE(ABORT, 'another power action is still pending for this VM');
END;

-- What a new entry may look like: a pending power request with nothing settled about it, or a
-- settled entry that takes the chain's next position after its head. (SQL cannot check the
-- hash itself; verify does.) COALESCE: a NULL anywhere refuses rather than lets through. An
-- unknown status is left to the trigger above, so each refusal says what is wrong.
CREATE TRIGGER audit_insert_is_pending_or_chained BEFORE INSERT ON audit_log
WHEN NEW.status IN ('requested', 'sent', 'accepted', 'failed', 'confirmed', 'unconfirmed', 'ok', 'refused')
 AND NOT COALESCE(
    (NEW.status IN ('requested', 'sent', 'accepted') AND NEW.kind = 'power'
      AND NEW.error IS NULL AND NEW.detail IS NULL AND NEW.settled_at IS NULL
      AND NEW.chain_seq IS NULL AND NEW.chain_prev IS NULL AND NEW.chain_hash IS NULL)
    OR (NEW.status NOT IN ('requested', 'sent', 'accepted') AND NEW.settled_at IS NOT NULL
      AND (NEW.chain_seq, NEW.chain_prev) = (SELECT seq + 1, hash FROM audit_chain_head)
      AND length(NEW.chain_hash) = 64 AND NEW.chain_hash NOT GLOB '*[^0-9a-f]*'),
    0)
BEGIN
    SELECT RAISE(ABORT, 'audit entries are append-only: a new entry is pending, or settled at the end of the chain');
END;

-- Hole 3: the lifecycle, replacing 0002's audit_settled_is_final (audit_identity_is_final
-- still guards who, what and when). Allowed, and nothing else:
--   requested -> sent (sent_at), requested | sent -> accepted (accepted_at),
--   pending -> failed | confirmed | unconfirmed (error, detail, settled_at, next in the chain),
--   and an entry settled before the chain existed getting its chain position, once.
DROP TRIGGER audit_settled_is_final;
CREATE TRIGGER audit_lifecycle BEFORE UPDATE ON audit_log
WHEN NEW.status IN ('requested', 'sent', 'accepted', 'failed', 'confirmed', 'unconfirmed', 'ok', 'refused')
 AND NOT COALESCE(
    (OLD.status = 'requested' AND NEW.status = 'sent'
      AND NEW.sent_at IS NOT NULL AND NEW.accepted_at IS OLD.accepted_at
      AND NEW.error IS OLD.error AND NEW.detail IS OLD.detail AND NEW.settled_at IS OLD.settled_at
      AND NEW.chain_seq IS NULL AND NEW.chain_prev IS NULL AND NEW.chain_hash IS NULL)
    OR (OLD.status IN ('requested', 'sent') AND NEW.status = 'accepted'
      AND NEW.sent_at IS OLD.sent_at AND NEW.accepted_at IS NOT NULL
      AND NEW.error IS OLD.error AND NEW.detail IS OLD.detail AND NEW.settled_at IS OLD.settled_at
      AND NEW.chain_seq IS NULL AND NEW.chain_prev IS NULL AND NEW.chain_hash IS NULL)
    OR (OLD.status IN ('requested', 'sent', 'accepted')
      AND NEW.status IN ('failed', 'confirmed', 'unconfirmed')
      AND NEW.sent_at IS OLD.sent_at AND NEW.accepted_at IS OLD.accepted_at
      AND NEW.settled_at IS NOT NULL
      AND (NEW.chain_seq, NEW.chain_prev) = (SELECT seq + 1, hash FROM audit_chain_head)
      AND length(NEW.chain_hash) = 64 AND NEW.chain_hash NOT GLOB '*[^0-9a-f]*')
    OR (OLD.status NOT IN ('requested', 'sent', 'accepted') AND OLD.chain_seq IS NULL
      AND OLD.id < (SELECT chain_from_id FROM audit_retention WHERE id = 1)
      AND NEW.status IS OLD.status AND NEW.error IS OLD.error AND NEW.detail IS OLD.detail
      AND NEW.sent_at IS OLD.sent_at AND NEW.accepted_at IS OLD.accepted_at
      AND NEW.settled_at IS OLD.settled_at
      AND (NEW.chain_seq, NEW.chain_prev) = (SELECT seq + 1, hash FROM audit_chain_head)
      AND length(NEW.chain_hash) = 64 AND NEW.chain_hash NOT GLOB '*[^0-9a-f]*'),
    0)
BEGIN
    SELECT RAISE(ABORT, 'audit entries are append-only: a pending power request only moves forward, and a settled entry never changes');
END;

-- Deletion only of the chain's old end that retention has anchored past, and only of entries
-- older than prune_before. Replaces 0002's guard, which a missing retention row switched off.
DROP TRIGGER audit_no_delete;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit_log
WHEN NOT COALESCE(
    OLD.chain_seq <= (SELECT anchor_seq FROM audit_retention WHERE id = 1)
    AND OLD.ts < (SELECT prune_before FROM audit_retention WHERE id = 1),
    0)
BEGIN
    SELECT RAISE(ABORT, 'audit entries are append-only; only retention pruning deletes them');
END;

-- Hole 2: the retention row stays, and only moves forward. Its anchor moves only onto an
-- entry that is in the chain, with that entry's hash, over entries all older than
-- prune_before (audit/store.rs moves it and deletes what it passed in one transaction).
CREATE TRIGGER audit_retention_no_delete BEFORE DELETE ON audit_retention
BEGIN
    SELECT RAISE(ABORT, 'audit retention cannot be removed');
END;

-- The row exists (above); an insert could only be INSERT OR REPLACE, which deletes it silently.
CREATE TRIGGER audit_retention_no_insert BEFORE INSERT ON audit_retention
BEGIN
    SELECT RAISE(ABORT, 'audit retention cannot be replaced');
END;

CREATE TRIGGER audit_retention_only_forward BEFORE UPDATE ON audit_retention
WHEN NOT COALESCE(
    NEW.id = OLD.id AND NEW.chain_from_id = OLD.chain_from_id
    AND typeof(NEW.prune_before) = 'integer' AND NEW.prune_before >= OLD.prune_before
    AND typeof(NEW.anchor_seq) = 'integer' AND NEW.anchor_seq >= OLD.anchor_seq
    AND ((NEW.anchor_seq = OLD.anchor_seq AND NEW.anchor_hash = OLD.anchor_hash)
      OR (EXISTS (SELECT 1 FROM audit_log
                  WHERE chain_seq = NEW.anchor_seq AND chain_hash = NEW.anchor_hash)
          AND NOT EXISTS (SELECT 1 FROM audit_log
                          WHERE chain_seq > OLD.anchor_seq AND chain_seq <= NEW.anchor_seq
                            AND ts >= NEW.prune_before))),
    0)
BEGIN
    SELECT RAISE(ABORT, 'audit retention only moves forward, onto an entry of the chain older than prune_before');
END;
