-- Rollups of the raw samples, per VM and bucket, at three resolutions: 5 minutes (from raw
-- samples), 1 hour (from the 5-minute rows) and 1 day (from the hourly rows). Each bucket is
-- computed once, when it has closed; `rollup_progress` says how far each resolution got, so
-- maintenance never rescans history.
CREATE TABLE rollups (
    res     INTEGER NOT NULL,  -- bucket length in seconds: 300, 3600 or 86400
    vm_id   INTEGER NOT NULL REFERENCES vms(id),
    bucket  INTEGER NOT NULL,  -- bucket start, Unix seconds, a multiple of res (UTC)
    n       INTEGER NOT NULL,  -- raw samples in the bucket
    up      INTEGER NOT NULL,  -- ... taken while running
    paused  INTEGER NOT NULL,  -- ... paused, suspended or in transition
    off     INTEGER NOT NULL,  -- ... shut off or crashed (the rest: unknown)
    -- Per metric: how many samples had a value, and the min, sum and max of the values. CPU in
    -- hundredths of a percent, memory in KiB, rates in bytes/s: integers, so coarser buckets
    -- combine exactly and small values take one or two bytes.
    cpu_n INTEGER NOT NULL, cpu_min INTEGER, cpu_sum INTEGER, cpu_max INTEGER,
    mem_n INTEGER NOT NULL, mem_min INTEGER, mem_sum INTEGER, mem_max INTEGER,
    rd_n  INTEGER NOT NULL, rd_min  INTEGER, rd_sum  INTEGER, rd_max  INTEGER,
    wr_n  INTEGER NOT NULL, wr_min  INTEGER, wr_sum  INTEGER, wr_max  INTEGER,
    rx_n  INTEGER NOT NULL, rx_min  INTEGER, rx_sum  INTEGER, rx_max  INTEGER,
    tx_n  INTEGER NOT NULL, tx_min  INTEGER, tx_sum  INTEGER, tx_max  INTEGER,
    PRIMARY KEY (res, vm_id, bucket)
) WITHOUT ROWID;

-- Buckets before `done_until` (Unix seconds) are rolled up at that resolution.
CREATE TABLE rollup_progress (
    res        INTEGER PRIMARY KEY,
    done_until INTEGER NOT NULL
);
