//! The file format as numbered SQL files in `schema/`, embedded into the binary.
//!
//! A new store gets every file, in order, in one transaction; `user_version` becomes the number
//! of the last one. Opening a store never applies anything: moving an existing store to a newer
//! generation is an explicit migration.

use rusqlite::Connection;

/// One file of `schema/`.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    pub generation: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every generation of the format, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        generation: 1,
        name: "0001_init",
        sql: include_str!("../../schema/0001_init.sql"),
    },
    Migration {
        generation: 2,
        name: "0002_procedures",
        sql: include_str!("../../schema/0002_procedures.sql"),
    },
    Migration {
        generation: 3,
        name: "0003_lock_method",
        sql: include_str!("../../schema/0003_lock_method.sql"),
    },
    Migration {
        generation: 4,
        name: "0004_code_records",
        sql: include_str!("../../schema/0004_code_records.sql"),
    },
    Migration {
        generation: 5,
        name: "0005_levels_follow_locking",
        sql: LEVELS_FOLLOW_LOCKING,
    },
];

/// Raises a store's compatibility levels to what its lock method needs (format generation 5):
/// applied by that migration, when a store is created, and when its lock method changes.
const LEVELS_FOLLOW_LOCKING: &str = include_str!("../../schema/0005_levels_follow_locking.sql");

/// Sets the levels the store's recorded lock method needs (never lowers them). The caller holds
/// the write transaction in which the lock method was recorded.
pub(super) fn raise_levels(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(LEVELS_FOLLOW_LOCKING)
}

/// The newest format generation this build writes and reads.
pub const FORMAT_GENERATION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].generation;

/// Applies every migration newer than `from` (0 for an empty database), inside the caller's
/// transaction, then records `menu` as the procedures the file supports.
pub(super) fn apply_from(
    conn: &Connection,
    from: u32,
    now_ms: i64,
    menu: &crate::protocol::Menu,
) -> rusqlite::Result<u32> {
    let mut applied = 0;
    for m in MIGRATIONS.iter().filter(|m| m.generation > from) {
        apply(conn, m, now_ms)?;
        applied += 1;
    }
    let mut insert =
        conn.prepare("INSERT OR IGNORE INTO procedures (method, generation) VALUES (?1, ?2)")?;
    for (method, generations) in &menu.0 {
        for g in generations {
            insert.execute(rusqlite::params![method, g])?;
        }
    }
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('library_version', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [crate::protocol::LIBRARY_VERSION],
    )?;
    Ok(applied)
}

pub(super) fn apply(conn: &Connection, m: &Migration, now_ms: i64) -> rusqlite::Result<()> {
    conn.execute_batch(m.sql)?;
    conn.execute(
        "INSERT INTO format_migrations (generation, name, applied_at) VALUES (?1, ?2, ?3)",
        rusqlite::params![m.generation, m.name, now_ms],
    )?;
    conn.execute_batch(&format!("PRAGMA user_version = {};", m.generation))?;
    Ok(())
}
