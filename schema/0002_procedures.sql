-- memotag file format, generation 2: the store records its procedure menu and compatibility
-- levels, so that every client negotiates with the file before it reads or writes.
--
-- protocol:    the handshake number; a client with another one refuses the store.
-- read_level:  a client that reads a lower level than this refuses the store.
-- write_level: a client that writes a lower level than this opens the store read-only.
-- The menu rows themselves are written by the code that applies this file (it knows the menu).

CREATE TABLE procedures (
    method     TEXT NOT NULL,
    generation INTEGER NOT NULL,
    PRIMARY KEY (method, generation)
) WITHOUT ROWID;

INSERT INTO meta (key, value) VALUES ('protocol', '1');
INSERT INTO meta (key, value) VALUES ('read_level', '1');
INSERT INTO meta (key, value) VALUES ('write_level', '1');
