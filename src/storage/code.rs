//! Code records, source texts and library refs: the SQL behind recording what code a result ran
//! with, gating lookups on it, preflight and packages. What is acceptable is `code`'s decision.

use rusqlite::{params, Connection, OptionalExtension};

use crate::code::{CodeRecord, SourceText};
use crate::error::StorageError;

/// The id of a code record, inserting it (and its library refs) if it is new. Id 0 is the empty
/// record.
pub fn code_id(conn: &Connection, record: &CodeRecord) -> Result<i64, StorageError> {
    if record.is_empty() {
        return Ok(0);
    }
    let hash = record.hash();
    let mut find = conn.prepare_cached("SELECT id FROM code_records WHERE hash = ?1")?;
    if let Some(id) = find.query_row([hash.0], |r| r.get(0)).optional()? {
        return Ok(id);
    }
    let json = serde_json::to_string(record).expect("code records serialize");
    conn.prepare_cached("INSERT INTO code_records (hash, record) VALUES (?1, ?2)")?
        .execute(params![hash.0, json])?;
    let id = conn.last_insert_rowid();
    let mut lib = conn.prepare_cached(
        "INSERT OR IGNORE INTO code_libraries (code, name, library, version, declared)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for l in &record.libraries {
        lib.execute(params![
            id,
            l.name,
            l.library,
            l.version.as_deref().unwrap_or(""),
            l.declared
        ])?;
    }
    Ok(id)
}

/// A code record by id (the empty record for 0).
pub fn code_record(conn: &Connection, id: i64) -> Result<Option<CodeRecord>, StorageError> {
    if id == 0 {
        return Ok(Some(CodeRecord::default()));
    }
    let mut stmt = conn.prepare_cached("SELECT record FROM code_records WHERE id = ?1")?;
    let Some(json) = stmt.query_row([id], |r| r.get::<_, String>(0)).optional()? else {
        return Ok(None);
    };
    serde_json::from_str(&json)
        .map(Some)
        .map_err(|e| StorageError::Corrupt(format!("code record {id} cannot be read: {e}")))
}

/// Stores source texts not already there.
pub fn put_sources(conn: &Connection, sources: &[SourceText]) -> Result<(), StorageError> {
    if sources.is_empty() {
        // Also keeps format-1 stores, which have no sources table, working for empty records.
        return Ok(());
    }
    let mut insert =
        conn.prepare_cached("INSERT OR IGNORE INTO sources (hash, text) VALUES (?1, ?2)")?;
    for s in sources {
        insert.execute(params![s.hash, s.text])?;
    }
    Ok(())
}

/// Which of these source hashes the store holds.
pub fn held_sources(conn: &Connection, hashes: &[String]) -> Result<Vec<String>, StorageError> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM sources WHERE hash = ?1")?;
    let mut held = Vec::new();
    for h in hashes {
        if stmt.exists([h])? {
            held.push(h.clone());
        }
    }
    Ok(held)
}

/// A source text by hash.
pub fn source(conn: &Connection, hash: &str) -> Result<Option<String>, StorageError> {
    let mut stmt = conn.prepare_cached("SELECT text FROM sources WHERE hash = ?1")?;
    Ok(stmt.query_row([hash], |r| r.get(0)).optional()?)
}

/// One library version the store has seen: (library, version or '', declared, code ids).
pub type LibraryUse = (String, String, bool, Vec<i64>);

/// Every library version the store has seen.
pub fn libraries(conn: &Connection) -> Result<Vec<LibraryUse>, StorageError> {
    let mut stmt = conn.prepare(
        "SELECT library, version, max(declared), group_concat(code) FROM code_libraries
         GROUP BY library, version ORDER BY library, version",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, bool>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (library, version, declared, codes) = row?;
        let mut codes: Vec<i64> = codes.split(',').filter_map(|c| c.parse().ok()).collect();
        codes.sort_unstable();
        codes.dedup();
        out.push((library, version, declared, codes));
    }
    Ok(out)
}

/// How many results of one memo table ran with any of these code records.
pub fn count_with_codes(
    conn: &Connection,
    table: &str,
    codes: &[i64],
) -> Result<u64, StorageError> {
    if codes.is_empty() {
        return Ok(0);
    }
    let list: Vec<String> = codes.iter().map(i64::to_string).collect();
    let n: i64 = conn.query_row(
        &format!(
            "SELECT count(*) FROM \"{table}\" WHERE code IN ({})",
            list.join(",")
        ),
        [],
        |r| r.get(0),
    )?;
    Ok(n as u64)
}
