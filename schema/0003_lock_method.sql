-- memotag file format, generation 3: the lock method is a property of the store, and locks
-- broken after their holder stopped renewing them are recorded.
--
-- meta `lock_method`: how every client of this store excludes the others.
--   posix:     SQLite's own locks (WAL and its shared memory); one host. Local mode.
--   lease-dir: a leased lock directory beside the store (`<store>.memotag-lock/`), taken for
--              every read and write transaction. Shared mode.
-- A client that would use another method than the store's refuses to open it; `memotag
-- set-mode` switches mode and method together. A new store's code writes the row itself; a
-- migrated store gets its mode's method here.

INSERT OR IGNORE INTO meta (key, value)
SELECT 'lock_method', CASE value WHEN 'shared' THEN 'lease-dir' ELSE 'posix' END
FROM meta WHERE key = 'mode';

-- One row per lease lock a client broke because its holder stopped renewing it (died, or was
-- paused past its lease). Times are unix milliseconds of the breaking client's clock.
CREATE TABLE lock_breaks (
    id             INTEGER PRIMARY KEY,
    broken_at      INTEGER NOT NULL,
    holder_host    TEXT,                -- NULL when the holder's owner file was unreadable
    holder_pid     INTEGER,
    holder_started INTEGER,             -- the holder process's start time
    holder_token   TEXT,
    lease_ms       INTEGER,             -- the holder's lease
    silent_ms      INTEGER NOT NULL,    -- how long the breaker saw the lock unchanged
    broken_by      TEXT NOT NULL        -- "host pid N" of the breaking client
);
