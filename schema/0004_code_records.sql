-- memotag file format, generation 4: the code each result ran with.
--
-- code_records (from generation 1) holds one row per distinct code record: id, 16-byte hash,
-- the record as JSON (own source hash, user code refs, library refs, notes). Row 0 is the empty
-- record, the code of results recorded without code capture; its hash is all zeros.
-- (Generation 3 is reserved for shared mode's lock method.)

INSERT OR IGNORE INTO code_records (id, hash, record)
VALUES (0, x'00000000000000000000000000000000', '{}');

-- Source texts, stored once by hash however many records mention them. memotag never executes
-- them; they are kept so that anyone can see what code ran.
CREATE TABLE sources (
    hash TEXT PRIMARY KEY NOT NULL,
    text TEXT NOT NULL
) WITHOUT ROWID;

-- The library refs of each code record, queryable: "results computed with nnterp 0.1.0".
CREATE TABLE code_libraries (
    code     INTEGER NOT NULL REFERENCES code_records(id),
    name     TEXT NOT NULL,
    library  TEXT NOT NULL,
    version  TEXT NOT NULL,            -- '' when unknown
    declared INTEGER NOT NULL,
    PRIMARY KEY (code, name, library)
) WITHOUT ROWID;
CREATE INDEX code_libraries_by_library ON code_libraries (library, version);
