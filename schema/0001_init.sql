-- memotag file format, generation 1.
--
-- Applied once, in one transaction, when a store is created. The header of the file carries
-- application_id = 0x6D656D6F ("memo") and user_version = the format generation (the number of
-- the last file in schema/ applied). Memo tables (one per function version) are created at run
-- time by the storage layer; their shape is described in docs/design.md.

-- Store-wide settings, read by every client before it writes: mode, lock method, compatibility
-- levels, store id, creation time.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Which format generations were applied, and when.
CREATE TABLE format_migrations (
    generation INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at INTEGER NOT NULL          -- unix milliseconds
);

-- Who wrote: "user@host" per client, referenced by small integers from the log and memo rows.
CREATE TABLE clients (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

-- The append-only schema log. seq is gapless from 1; change is the JSON of the logged change
-- (every tag it introduced), so the catalog at seq N is a pure function of rows 1..N.
CREATE TABLE schema_log (
    seq    INTEGER PRIMARY KEY,
    kind   TEXT NOT NULL,
    change TEXT NOT NULL,
    client INTEGER NOT NULL REFERENCES clients(id),
    time   INTEGER NOT NULL              -- unix milliseconds
);

-- The catalog, materialized from the log in the same transaction as each log entry.
CREATE TABLE families (
    tag         BLOB PRIMARY KEY NOT NULL,   -- 16-byte UUID
    name        TEXT NOT NULL UNIQUE,        -- current name
    created_seq INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE functions (
    tag         BLOB PRIMARY KEY NOT NULL,   -- 16-byte UUID
    family      BLOB NOT NULL REFERENCES families(tag),
    version     INTEGER NOT NULL,
    outputs     TEXT NOT NULL,               -- JSON array of output names
    created_seq INTEGER NOT NULL,
    memo_table  TEXT NOT NULL UNIQUE,
    UNIQUE (family, version)
) WITHOUT ROWID;

CREATE TABLE inputs (
    tag           BLOB PRIMARY KEY NOT NULL, -- 16-byte UUID; also the memo table column name
    function      BLOB NOT NULL REFERENCES functions(tag),
    name          TEXT NOT NULL,             -- current name
    position      INTEGER NOT NULL,
    default_value BLOB,                      -- value id of the default, NULL if none
    created_seq   INTEGER NOT NULL,
    UNIQUE (function, name),
    UNIQUE (function, position)
) WITHOUT ROWID;

-- Every name a family or an input has had, with the log range it held it: [from_seq, to_seq).
CREATE TABLE name_history (
    kind     TEXT NOT NULL CHECK (kind IN ('function', 'input')),
    tag      BLOB NOT NULL,
    name     TEXT NOT NULL,
    from_seq INTEGER NOT NULL,
    to_seq   INTEGER,
    PRIMARY KEY (tag, from_seq)
) WITHOUT ROWID;
CREATE INDEX name_history_by_name ON name_history (name);

-- Values, stored once. id = first 16 bytes of blake3(codec byte || bytes). data is NULL when
-- the value is too large for the database and lives as a file in the blob folder beside it.
CREATE TABLE "values" (
    id      BLOB PRIMARY KEY NOT NULL,
    codec   INTEGER NOT NULL,
    size    INTEGER NOT NULL,
    data    BLOB,
    preview TEXT NOT NULL
) WITHOUT ROWID;

-- Code records (what code a result ran with). Row 0 is the empty record.
CREATE TABLE code_records (
    id     INTEGER PRIMARY KEY,
    hash   BLOB NOT NULL UNIQUE,
    record TEXT NOT NULL
);

-- A result recorded again with other outputs: the first stays canonical in its memo table,
-- the later ones land here.
CREATE TABLE conflicts (
    id       INTEGER PRIMARY KEY,
    function BLOB NOT NULL,
    call_id  BLOB NOT NULL,
    code     INTEGER NOT NULL,
    outputs  BLOB NOT NULL,
    client   INTEGER NOT NULL REFERENCES clients(id),
    time     INTEGER NOT NULL
);
CREATE INDEX conflicts_by_call ON conflicts (call_id);
