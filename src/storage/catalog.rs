//! The schema log and the catalog tables materialized from it, plus the memo table DDL each
//! change implies. Called inside a write transaction that the session holds.

use rusqlite::{params, Connection};

use crate::error::StorageError;
use crate::schema::{LoggedChange, LoggedInput};
use crate::storage::memo::{input_column, memo_table};
use crate::value::{EncodedValue, ValueId};

/// One row of the schema log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogEntry {
    pub seq: u64,
    pub change: LoggedChange,
    pub client: String,
    pub time_ms: i64,
}

/// Log entries after `after_seq`, in order.
pub fn read_log(conn: &Connection, after_seq: u64) -> Result<Vec<LogEntry>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT l.seq, l.change, coalesce(c.name, '?'), l.time
         FROM schema_log l LEFT JOIN clients c ON c.id = l.client
         WHERE l.seq > ?1 ORDER BY l.seq",
    )?;
    let rows = stmt.query_map([after_seq as i64], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get(3)?,
        ))
    })?;
    let mut entries = Vec::new();
    for row in rows {
        let (seq, change, client, time_ms) = row?;
        let change: LoggedChange = serde_json::from_str(&change).map_err(|e| {
            StorageError::Corrupt(format!("schema log entry {seq} cannot be read: {e}"))
        })?;
        entries.push(LogEntry {
            seq: seq as u64,
            change,
            client,
            time_ms,
        });
    }
    Ok(entries)
}

/// Log entry `seq`, if there is one.
pub fn read_entry(conn: &Connection, seq: u64) -> Result<Option<LogEntry>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT l.change, coalesce(c.name, '?'), l.time
         FROM schema_log l LEFT JOIN clients c ON c.id = l.client
         WHERE l.seq = ?1",
    )?;
    let mut rows = stmt.query([seq as i64])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let change: String = row.get(0)?;
    let change: LoggedChange = serde_json::from_str(&change).map_err(|e| {
        StorageError::Corrupt(format!("schema log entry {seq} cannot be read: {e}"))
    })?;
    Ok(Some(LogEntry {
        seq,
        change,
        client: row.get(1)?,
        time_ms: row.get(2)?,
    }))
}

/// The highest sequence number in the log (0 for an empty log).
pub fn last_seq(conn: &Connection) -> Result<u64, StorageError> {
    let seq: i64 = conn.query_row("SELECT coalesce(max(seq), 0) FROM schema_log", [], |r| {
        r.get(0)
    })?;
    Ok(seq as u64)
}

/// Appends `change` as entry `seq` and updates the catalog tables and memo tables to match.
/// `values` are the default values the change refers to.
pub fn append(
    conn: &Connection,
    seq: u64,
    change: &LoggedChange,
    values: &[EncodedValue],
    client: i64,
    time_ms: i64,
) -> Result<(), StorageError> {
    let json = serde_json::to_string(change).expect("logged changes serialize");
    conn.execute(
        "INSERT INTO schema_log (seq, kind, change, client, time) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![seq as i64, change.kind(), json, client, time_ms],
    )?;
    for value in values {
        super::memo::put_value(conn, None, value)?;
    }
    let seq = seq as i64;
    match change {
        LoggedChange::CreateFunction {
            family,
            function,
            name,
            version,
            inputs,
            outputs,
        } => {
            conn.execute(
                "INSERT INTO families (tag, name, created_seq) VALUES (?1, ?2, ?3)",
                params![family.as_bytes(), name, seq],
            )?;
            history_start(conn, "function", family.as_bytes(), name, seq)?;
            create_function(
                conn,
                seq,
                family.as_bytes(),
                function,
                *version,
                inputs,
                outputs,
            )?;
        }
        LoggedChange::NewVersion {
            family,
            function,
            version,
            inputs,
            outputs,
        } => {
            create_function(
                conn,
                seq,
                family.as_bytes(),
                function,
                *version,
                inputs,
                outputs,
            )?;
        }
        LoggedChange::AddInput {
            function,
            input,
            name,
            default,
        } => {
            let position: i64 = conn.query_row(
                "SELECT count(*) FROM inputs WHERE function = ?1",
                [function.as_bytes()],
                |r| r.get(0),
            )?;
            conn.execute(
                "INSERT INTO inputs (tag, function, name, position, default_value, created_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    input.as_bytes(),
                    function.as_bytes(),
                    name,
                    position,
                    default.as_bytes(),
                    seq
                ],
            )?;
            history_start(conn, "input", input.as_bytes(), name, seq)?;
            // Rows recorded before this input existed, and stale inserts that do not name it,
            // get the default from SQLite itself.
            conn.execute_batch(&format!(
                "ALTER TABLE \"{}\" ADD COLUMN \"{}\" BLOB DEFAULT {}",
                memo_table(function),
                input_column(input),
                sql_blob_literal(default)
            ))?;
        }
        LoggedChange::RenameFunction { family, to, .. } => {
            conn.execute(
                "UPDATE families SET name = ?2 WHERE tag = ?1",
                params![family.as_bytes(), to],
            )?;
            history_rename(conn, "function", family.as_bytes(), to, seq)?;
        }
        LoggedChange::RenameInput { input, to, .. } => {
            conn.execute(
                "UPDATE inputs SET name = ?2 WHERE tag = ?1",
                params![input.as_bytes(), to],
            )?;
            history_rename(conn, "input", input.as_bytes(), to, seq)?;
        }
    }
    Ok(())
}

fn create_function(
    conn: &Connection,
    seq: i64,
    family: &[u8; 16],
    function: &crate::schema::FunctionTag,
    version: u32,
    inputs: &[LoggedInput],
    outputs: &[String],
) -> Result<(), StorageError> {
    let table = memo_table(function);
    conn.execute(
        "INSERT INTO functions (tag, family, version, outputs, created_seq, memo_table)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            function.as_bytes(),
            family,
            version,
            serde_json::to_string(outputs).expect("strings serialize"),
            seq,
            table
        ],
    )?;
    let mut columns = String::new();
    for (position, input) in inputs.iter().enumerate() {
        conn.execute(
            "INSERT INTO inputs (tag, function, name, position, default_value, created_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                input.tag.as_bytes(),
                function.as_bytes(),
                input.name,
                position as i64,
                input.default.as_ref().map(|d| d.as_bytes().to_vec()),
                seq
            ],
        )?;
        history_start(conn, "input", input.tag.as_bytes(), &input.name, seq)?;
        columns.push_str(&format!(",\n    \"{}\" BLOB", input_column(&input.tag)));
        if let Some(default) = &input.default {
            columns.push_str(&format!(" DEFAULT {}", sql_blob_literal(default)));
        }
    }
    // seq: the store-assigned sequence number of a result within its function version.
    conn.execute_batch(&format!(
        "CREATE TABLE \"{table}\" (
    seq     INTEGER PRIMARY KEY,
    call_id BLOB NOT NULL,
    code    INTEGER NOT NULL,
    outputs BLOB NOT NULL,
    client  INTEGER NOT NULL,
    time    INTEGER NOT NULL{columns}
);
CREATE UNIQUE INDEX \"{table}_call\" ON \"{table}\" (call_id, code);"
    ))?;
    Ok(())
}

fn history_start(
    conn: &Connection,
    kind: &str,
    tag: &[u8; 16],
    name: &str,
    seq: i64,
) -> Result<(), StorageError> {
    conn.execute(
        "INSERT INTO name_history (kind, tag, name, from_seq, to_seq) VALUES (?1, ?2, ?3, ?4, NULL)",
        params![kind, tag, name, seq],
    )?;
    Ok(())
}

fn history_rename(
    conn: &Connection,
    kind: &str,
    tag: &[u8; 16],
    to: &str,
    seq: i64,
) -> Result<(), StorageError> {
    conn.execute(
        "UPDATE name_history SET to_seq = ?2 WHERE tag = ?1 AND to_seq IS NULL",
        params![tag, seq],
    )?;
    history_start(conn, kind, tag, to, seq)
}

fn sql_blob_literal(id: &ValueId) -> String {
    format!("x'{}'", id.to_hex())
}
