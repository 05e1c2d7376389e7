-- A pending graceful power request (shut down, reboot...) can be overruled by a forced one
-- (power off, reset): the pending entry settles as `superseded`, sealed into the chain like any
-- other settlement, in the transaction that inserts the forced request (control/store.rs,
-- `requested_at`). The one-pending-per-VM index and trigger stay as they are: the old entry is
-- settled before the new one is inserted.
--
-- 0004's triggers name every known status, so each is recreated with `superseded` added and
-- nothing else changed: the known statuses on insert and update, the shape of a new entry, and
-- the lifecycle (pending -> superseded is one more settlement, with the same conditions as
-- failed, confirmed and unconfirmed). Triggers rather than a CHECK, as 0004 says why.

DROP TRIGGER audit_status_known_on_insert;
CREATE TRIGGER audit_status_known_on_insert BEFORE INSERT ON audit_log
WHEN NEW.status IS NOT 'requested' AND NEW.status IS NOT 'sent' AND NEW.status IS NOT 'accepted'
  AND NEW.status IS NOT 'failed' AND NEW.status IS NOT 'confirmed'
  AND NEW.status IS NOT 'unconfirmed' AND NEW.status IS NOT 'ok' AND NEW.status IS NOT 'refused'
  AND NEW.status IS NOT 'superseded'
BEGIN
    SELECT RAISE(ABORT, 'unknown audit status');
END;

DROP TRIGGER audit_status_known_on_update;
CREATE TRIGGER audit_status_known_on_update BEFORE UPDATE OF status ON audit_log
WHEN NEW.status IS NOT 'requested' AND NEW.status IS NOT 'sent' AND NEW.status IS NOT 'accepted'
  AND NEW.status IS NOT 'failed' AND NEW.status IS NOT 'confirmed'
  AND NEW.status IS NOT 'unconfirmed' AND NEW.status IS NOT 'ok' AND NEW.status IS NOT 'refused'
  AND NEW.status IS NOT 'superseded'
BEGIN
    SELECT RAISE(ABORT, 'unknown audit status');
END;

DROP TRIGGER audit_insert_is_pending_or_chained;
CREATE TRIGGER audit_insert_is_pending_or_chained BEFORE INSERT ON audit_log
WHEN NEW.status IN ('requested', 'sent', 'accepted', 'failed', 'confirmed', 'unconfirmed', 'ok', 'refused',
                    'superseded')
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

DROP TRIGGER audit_lifecycle;
CREATE TRIGGER audit_lifecycle BEFORE UPDATE ON audit_log
WHEN NEW.status IN ('requested', 'sent', 'accepted', 'failed', 'confirmed', 'unconfirmed', 'ok', 'refused',
                    'superseded')
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
      AND NEW.status IN ('failed', 'confirmed', 'unconfirmed', 'superseded')
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
