-- A counter that moves whenever anything the VM list shows may have changed, so the list can
-- keep its rows in memory and re-read them only when the counter moved (src/inventory/snapshot.rs).
-- Triggers rather than application code: every writer moves it (the poller, a power action's
-- confirmation, a restore, a test writing through the stores), and a missed bump cannot happen.
--
-- What the list shows comes from hosts (names, their last successful poll, whose samples give
-- the CPU column), vms (state, name, addresses, configuration) and vm_configs (reached through
-- vms.config_id, which an update moves). Each poll updates its host's row, so the counter moves
-- once per poll, plus once per VM row written: a trigger of a few microseconds.
CREATE TABLE inventory_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO inventory_version (id, version) VALUES (1, 0);

CREATE TRIGGER inventory_version_hosts_insert AFTER INSERT ON hosts
BEGIN UPDATE inventory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER inventory_version_hosts_update AFTER UPDATE ON hosts
BEGIN UPDATE inventory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER inventory_version_hosts_delete AFTER DELETE ON hosts
BEGIN UPDATE inventory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER inventory_version_vms_insert AFTER INSERT ON vms
BEGIN UPDATE inventory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER inventory_version_vms_update AFTER UPDATE ON vms
BEGIN UPDATE inventory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER inventory_version_vms_delete AFTER DELETE ON vms
BEGIN UPDATE inventory_version SET version = version + 1 WHERE id = 1; END;
