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
pub const MIGRATIONS: &[Migration] = &[Migration {
    generation: 1,
    name: "0001_init",
    sql: include_str!("../../schema/0001_init.sql"),
}];

/// The newest format generation this build writes and reads.
pub const FORMAT_GENERATION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].generation;

/// Applies every migration to an empty database, inside the caller's transaction.
pub(super) fn apply_all(conn: &Connection, now_ms: i64) -> rusqlite::Result<()> {
    for m in MIGRATIONS {
        apply(conn, m, now_ms)?;
    }
    Ok(())
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
