-- Each VM's remote display, so the pages can offer the browser console (issue 13) without
-- asking its host: the protocol's lower-case name ('vnc', 'spice', 'rdp'), NULL when the VM
-- has none or vmdeck has not read it yet (rows from before this migration until the VM's
-- configuration is next recorded). Written by hosts::store with the VM's configuration
-- version (the same value is in vm_configs.body as "graphics").

ALTER TABLE vms ADD COLUMN graphics TEXT;
