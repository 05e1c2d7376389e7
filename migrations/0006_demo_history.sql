-- The demo's generated history (src/demo/history.rs): one row once the demo database has been
-- seeded with its month of made-up history, saying which stretch of time is generated. Its
-- presence is what keeps a restarted demo from seeding twice; the pages read it to mark the
-- generated stretch as demo data. A real installation never has a row.
CREATE TABLE demo_history (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    generated_from  INTEGER NOT NULL,  -- ms, the first generated poll
    generated_until INTEGER NOT NULL,  -- ms, after the last generated poll: real polls follow
    seeded_at       INTEGER NOT NULL   -- ms, when it was written
);
