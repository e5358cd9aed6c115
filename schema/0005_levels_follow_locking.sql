-- memotag file format, generation 5: the compatibility levels follow the way a store is locked.
--
-- A shared-mode store (lock method `lease-dir`, format generation 3) is only safe with clients
-- that take its lease lock for every transaction and keep SQLite's own locks off. Builds that
-- wrote format 2 do neither: they lock with POSIX locks, which do not reach across hosts, and they
-- would see a live lease-lock writer's rollback journal as hot and roll it back. Builds that wrote
-- format 3 and 4 kept levels 1, so such builds opened shared-mode stores read-write and corrupted
-- them. From this generation on, a shared-mode store has read level 2 and write level 2: every
-- build that reads or writes only level 1 refuses it (`ReadLevel`) before it reads a page.
-- A local-mode store (lock method `posix`, WAL) is written the same way by every build: it keeps
-- levels 1, so older builds go on sharing it.
--
-- The same statement runs when a store is created and when `memotag set-mode` changes its lock
-- method. It only ever raises levels: a level never goes down, whatever the mode becomes.

UPDATE meta SET value = '2'
WHERE key IN ('read_level', 'write_level')
  AND CAST(value AS INTEGER) < 2
  AND EXISTS (SELECT 1 FROM meta WHERE key = 'lock_method' AND value = 'lease-dir');
