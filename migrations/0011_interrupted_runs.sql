-- A schedule run that vmdeck stopped (or crashed) during: at the next start, before the
-- scheduler's first tick, every run still without `finished_at` gets the start time as its
-- end and `interrupted = 1` (`schedules::Scheduler::settle_interrupted`). Its counts are those
-- of the VMs it recorded before it stopped; the VMs without a result were not reached. The
-- snapshot requests such a run had in flight are settled separately, by control at the same
-- start (`control::settle_leftovers`).
ALTER TABLE schedule_runs ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0;
