//! The SQL (and file-level probing) behind maintenance: opening an existing store without
//! replaying its log, raw catalog rows for `check`, the value references `gc` must keep, counts
//! and sizes for `info`, explicit migrations and mode switches, and a best-effort look at the
//! locks other processes hold.
//!
//! It decides nothing: what counts as a finding or as garbage is `crate::maintenance`'s call.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::file::{self, FileState};
use super::is_busy;
use super::lock::{Held, LeaseLock, LockConfig, LockMethod, DEFAULT_LEASE};
use super::migrations::{self, FORMAT_GENERATION, MIGRATIONS};
use super::{BlobStore, Database, Mode, OpenRequest};
use crate::calls::unpack_ids;
use crate::error::{OpenError, StorageError};
use crate::schema::LoggedChange;
use crate::value::{Codec, ValueId};

/// Opens a store that must already exist (a missing path or a 0-byte file is `NotFound`, never
/// created), without reading its log: maintenance must work on a store whose log is damaged.
/// Maintenance works on the format's internals, so a store of a newer format generation than
/// this build knows is refused (ordinary sessions follow the file's read and write levels).
pub fn open_existing(path: &Path, read_only: bool) -> Result<Database, OpenError> {
    let generation = existing_generation(path)?;
    if generation > FORMAT_GENERATION {
        return Err(OpenError::NewerFormat {
            path: path.to_path_buf(),
            found: generation,
            supported: FORMAT_GENERATION,
        });
    }
    open_for_inspection(path, read_only)
}

/// Opens an existing store of any format generation (for `info`, which only reads what every
/// generation has).
pub fn open_for_inspection(path: &Path, read_only: bool) -> Result<Database, OpenError> {
    refuse_missing(path)?;
    Database::open(&OpenRequest {
        path: path.to_path_buf(),
        mode: None,
        read_only,
        full_durability: false,
        blob_threshold: crate::DEFAULT_BLOB_THRESHOLD,
        busy_timeout: Duration::from_secs(60),
        menu: crate::protocol::procedures::LOCAL_MENU.clone(),
        lock_method: None,
        lock: super::LockConfig {
            lease: super::lock::DEFAULT_LEASE,
            wait: Duration::from_secs(60),
            interrupt: None,
            pause_before_commit: None,
        },
    })
}

/// The format generation of the store at `path`, refusing anything that is not a store (the
/// file is only read, with `std::fs`).
pub fn existing_generation(path: &Path) -> Result<u32, OpenError> {
    let path = &file::resolve(path);
    let lock = LockConfig {
        lease: DEFAULT_LEASE,
        wait: Duration::from_secs(60),
        interrupt: None,
        pause_before_commit: None,
    };
    match super::inspect_confirmed(path, &lock)? {
        FileState::Missing | FileState::Empty => Err(OpenError::NotFound {
            path: path.to_path_buf(),
        }),
        FileState::Store { generation } => Ok(generation),
    }
}

fn refuse_missing(path: &Path) -> Result<(), OpenError> {
    existing_generation(path).map(drop)
}

// ---- raw catalog rows ------------------------------------------------------------------------

/// One `schema_log` row as stored, parsed if it can be.
#[derive(Debug)]
pub struct RawLogRow {
    pub seq: i64,
    pub change: Result<LoggedChange, String>,
}

pub fn raw_log(conn: &Connection) -> Result<Vec<RawLogRow>, StorageError> {
    let mut stmt = conn.prepare("SELECT seq, change FROM schema_log ORDER BY seq")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, json) = row?;
        out.push(RawLogRow {
            seq,
            change: serde_json::from_str(&json).map_err(|e| e.to_string()),
        });
    }
    Ok(out)
}

/// Every row of a catalog table, each column rendered as text, so that rows can be compared with
/// what replaying the log implies. Blobs become lowercase hex, NULL becomes `NULL`.
pub fn table_rows(conn: &Connection, sql: &str) -> Result<Vec<Vec<String>>, StorageError> {
    let mut stmt = conn.prepare(sql)?;
    let n = stmt.column_count();
    let rows = stmt.query_map([], |r| {
        let mut cells = Vec::with_capacity(n);
        for i in 0..n {
            use rusqlite::types::ValueRef;
            cells.push(match r.get_ref(i)? {
                ValueRef::Null => "NULL".to_string(),
                ValueRef::Integer(n) => n.to_string(),
                ValueRef::Real(x) => x.to_string(),
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                ValueRef::Blob(b) => hex::encode(b),
            });
        }
        Ok(cells)
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The catalog tables, as `table_rows` renders them, in a fixed column order.
pub const FAMILY_ROWS: &str = "SELECT tag, name, created_seq FROM families";
pub const FUNCTION_ROWS: &str =
    "SELECT tag, family, version, outputs, created_seq, memo_table FROM functions";
pub const INPUT_ROWS: &str =
    "SELECT tag, function, name, position, default_value, created_seq FROM inputs";
pub const NAME_HISTORY_ROWS: &str = "SELECT kind, tag, name, from_seq, to_seq FROM name_history";

/// A table column: its name and its SQL default as written, if any.
pub type Column = (String, Option<String>);

/// A memo table's columns, or `None` if the table does not exist.
pub fn table_columns(conn: &Connection, table: &str) -> Result<Option<Vec<Column>>, StorageError> {
    if !table_exists(conn, table)? {
        return Ok(None);
    }
    let mut stmt = conn.prepare(&format!("PRAGMA table_info(\"{table}\")"))?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(1)?, r.get(4)?)))?;
    Ok(Some(rows.collect::<Result<_, _>>()?))
}

fn table_exists(conn: &Connection, table: &str) -> Result<bool, StorageError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1")?
        .exists([table])?)
}

/// Every memo table in the file, whether or not the catalog knows it.
pub fn memo_tables(conn: &Connection) -> Result<Vec<String>, StorageError> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name LIKE 'memo\\_%' ESCAPE '\\'
         ORDER BY name",
    )?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

// ---- value references ------------------------------------------------------------------------

/// Where a referenced value id was seen first.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValueSource {
    /// An input or output of a row of this memo table.
    MemoTable(String),
    Conflicts,
    InputDefault,
    SchemaLog,
}

/// Every value id something refers to: memo rows (inputs and outputs) of every memo table in the
/// file, conflicts, input defaults in the catalog and in the log. Malformed references are
/// reported in `malformed` instead of failing.
#[derive(Debug, Default)]
pub struct References {
    pub ids: HashMap<ValueId, ValueSource>,
    pub malformed: Vec<String>,
}

impl References {
    /// Adds the output ids packed in a memo row or conflict, or notes them as malformed.
    fn add_outputs(
        &mut self,
        packed: rusqlite::types::ValueRef<'_>,
        source: &ValueSource,
        what: impl FnOnce() -> String,
    ) {
        match packed.as_blob().ok().and_then(unpack_ids) {
            Some(ids) => ids.into_iter().for_each(|id| self.add(id, source)),
            None => self.malformed.push(what()),
        }
    }

    fn add(&mut self, id: ValueId, source: &ValueSource) {
        self.ids.entry(id).or_insert_with(|| source.clone());
    }
}

/// The number of rows `referenced_values` visits, for a progress bar.
pub fn reference_rows(conn: &Connection) -> Result<u64, StorageError> {
    let mut total: i64 = conn.query_row("SELECT count(*) FROM conflicts", [], |r| r.get(0))?;
    for table in memo_tables(conn)? {
        let n: i64 = conn.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
            r.get(0)
        })?;
        total += n;
    }
    Ok(total as u64)
}

/// Collects every value reference; `advance(n)` is called as rows are visited.
pub fn referenced_values(
    conn: &Connection,
    advance: &mut dyn FnMut(u64),
) -> Result<References, StorageError> {
    let mut refs = References::default();
    for table in memo_tables(conn)? {
        let columns: Vec<String> = table_columns(conn, &table)?
            .unwrap_or_default()
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| name.starts_with("in_"))
            .collect();
        let mut sql = String::from("SELECT seq, outputs");
        for c in &columns {
            sql.push_str(&format!(", \"{c}\""));
        }
        sql.push_str(&format!(" FROM \"{table}\""));
        let source = ValueSource::MemoTable(table.clone());
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query([])?;
        let mut visited = 0u64;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            refs.add_outputs(row.get_ref(1)?, &source, || {
                format!("result {seq} of {table} has malformed outputs")
            });
            for (i, column) in columns.iter().enumerate() {
                match row.get::<_, Option<Vec<u8>>>(2 + i) {
                    Ok(None) => {}
                    Ok(Some(bytes)) if bytes.len() == 16 => {
                        refs.add(ValueId(bytes.try_into().expect("16 bytes")), &source);
                    }
                    _ => refs.malformed.push(format!(
                        "result {seq} of {table} has a malformed value id in column {column}"
                    )),
                }
            }
            visited += 1;
            if visited % 4096 == 0 {
                advance(4096);
            }
        }
        advance(visited % 4096);
    }
    let mut stmt = conn.prepare("SELECT id, outputs FROM conflicts")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        refs.add_outputs(row.get_ref(1)?, &ValueSource::Conflicts, || {
            format!("conflict {id} has malformed outputs")
        });
        advance(1);
    }
    let mut stmt =
        conn.prepare("SELECT tag, default_value FROM inputs WHERE default_value IS NOT NULL")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        match row.get::<_, Vec<u8>>(1) {
            Ok(bytes) if bytes.len() == 16 => refs.add(
                ValueId(bytes.try_into().expect("16 bytes")),
                &ValueSource::InputDefault,
            ),
            _ => {
                let tag: Vec<u8> = row.get(0).unwrap_or_default();
                refs.malformed.push(format!(
                    "input {} has a malformed default value id",
                    hex::encode(tag)
                ));
            }
        }
    }
    for row in raw_log(conn)? {
        let defaults: Vec<ValueId> = match &row.change {
            Ok(LoggedChange::CreateFunction { inputs, .. })
            | Ok(LoggedChange::NewVersion { inputs, .. }) => {
                inputs.iter().filter_map(|i| i.default).collect()
            }
            Ok(LoggedChange::AddInput { default, .. }) => vec![*default],
            _ => Vec::new(),
        };
        for id in defaults {
            refs.add(id, &ValueSource::SchemaLog);
        }
    }
    Ok(refs)
}

/// What [`visit_result_inputs`] calls for each row: `(seq, call_id, input value ids)`.
pub type ResultInputsVisitor<'a> = dyn FnMut(i64, &[u8], &[Option<ValueId>]) + 'a;

/// Visits every row of a memo table with its call id and the value ids in `columns` (input
/// columns, in order; `None` for NULL or a malformed id): `visit(seq, call_id, ids)`.
pub fn visit_result_inputs(
    conn: &Connection,
    table: &str,
    columns: &[String],
    visit: &mut ResultInputsVisitor<'_>,
) -> Result<(), StorageError> {
    let mut sql = String::from("SELECT seq, call_id");
    for c in columns {
        sql.push_str(&format!(", \"{c}\""));
    }
    sql.push_str(&format!(" FROM \"{table}\""));
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([])?;
    let mut ids = Vec::with_capacity(columns.len());
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let call_id = row.get_ref(1)?.as_blob().unwrap_or_default();
        ids.clear();
        for i in 0..columns.len() {
            let id = row
                .get_ref(2 + i)?
                .as_blob()
                .ok()
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .map(ValueId);
            ids.push(id);
        }
        visit(seq, call_id, &ids);
    }
    Ok(())
}

// ---- values ----------------------------------------------------------------------------------

/// One row of the `values` table, without its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueRow {
    pub id: ValueId,
    pub codec: u8,
    pub size: u64,
    /// The bytes live in a file beside the store (`data` is NULL).
    pub in_file: bool,
    pub preview: String,
}

/// Every row of the `values` table (malformed ids are reported, not returned).
pub fn value_rows(conn: &Connection) -> Result<(Vec<ValueRow>, Vec<String>), StorageError> {
    let mut stmt =
        conn.prepare("SELECT id, codec, size, data IS NULL, preview FROM \"values\" ORDER BY id")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    let mut malformed = Vec::new();
    while let Some(row) = rows.next()? {
        let id: Vec<u8> = row.get(0)?;
        let Ok(id) = <[u8; 16]>::try_from(id.as_slice()) else {
            malformed.push(format!(
                "a values row has a malformed id {}",
                hex::encode(&id)
            ));
            continue;
        };
        out.push(ValueRow {
            id: ValueId(id),
            codec: row.get(1)?,
            size: row.get::<_, i64>(2)?.max(0) as u64,
            in_file: row.get(3)?,
            preview: row.get(4)?,
        });
    }
    Ok((out, malformed))
}

/// The inline bytes of one value (None when it lives in a file or does not exist).
pub fn inline_bytes(conn: &Connection, id: &ValueId) -> Result<Option<Vec<u8>>, StorageError> {
    Ok(conn
        .prepare_cached("SELECT data FROM \"values\" WHERE id = ?1")?
        .query_row([id.as_bytes()], |r| r.get::<_, Option<Vec<u8>>>(0))
        .optional()?
        .flatten())
}

/// A value for display: codec, size, preview, and its bytes when they are stored inline and no
/// larger than `inline_limit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueSummary {
    pub id: ValueId,
    pub codec: Option<Codec>,
    pub size: u64,
    pub preview: String,
    pub bytes: Option<Vec<u8>>,
}

pub fn value_summary(
    conn: &Connection,
    id: &ValueId,
    inline_limit: u64,
) -> Result<Option<ValueSummary>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT codec, size, preview, CASE WHEN size <= ?2 THEN data END
         FROM \"values\" WHERE id = ?1",
    )?;
    Ok(stmt
        .query_row(params![id.as_bytes(), inline_limit as i64], |r| {
            Ok(ValueSummary {
                id: *id,
                codec: Codec::from_u8(r.get(0)?).ok(),
                size: r.get::<_, i64>(1)?.max(0) as u64,
                preview: r.get(2)?,
                bytes: r.get(3)?,
            })
        })
        .optional()?)
}

/// Deletes these values rows (inside the caller's write transaction).
pub fn delete_values(conn: &Connection, ids: &[ValueId]) -> Result<u64, StorageError> {
    let mut stmt = conn.prepare_cached("DELETE FROM \"values\" WHERE id = ?1")?;
    let mut n = 0;
    for id in ids {
        n += stmt.execute([id.as_bytes()])? as u64;
    }
    Ok(n)
}

/// Whether a values row stores this id as a file.
pub fn stored_as_file(conn: &Connection, id: &ValueId) -> Result<bool, StorageError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM \"values\" WHERE id = ?1 AND data IS NULL")?
        .exists([id.as_bytes()])?)
}

/// The value files in a blob folder: (id, path, size). Temporary files of writes in progress
/// (dot-files) and files whose names are not value ids are left out.
pub fn blob_files(blobs: &BlobStore) -> Result<Vec<(ValueId, PathBuf, u64)>, StorageError> {
    let root = blobs.root();
    let mut out = Vec::new();
    let shards = match std::fs::read_dir(root) {
        Ok(shards) => shards,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StorageError::io(root, e)),
    };
    for shard in shards {
        let shard = shard.map_err(|e| StorageError::io(root, e))?;
        if !shard.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let dir = shard.path();
        for entry in std::fs::read_dir(&dir).map_err(|e| StorageError::io(&dir, e))? {
            let entry = entry.map_err(|e| StorageError::io(&dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(id) = ValueId::from_hex(name) else {
                continue;
            };
            if blobs.path_of(&id) != entry.path() {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((id, entry.path(), size));
        }
    }
    out.sort_by_key(|f| f.0);
    Ok(out)
}

// ---- code records and sources ----------------------------------------------------------------

/// One row of `code_records`, as stored (the JSON unparsed, so that `check` can report a row
/// that does not parse).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeRow {
    pub id: i64,
    pub hash: Vec<u8>,
    pub record: String,
}

/// Every row of `code_records`, by id.
pub fn code_rows(conn: &Connection) -> Result<Vec<CodeRow>, StorageError> {
    let mut stmt = conn.prepare("SELECT id, hash, record FROM code_records ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok(CodeRow {
            id: r.get(0)?,
            hash: r.get(1)?,
            record: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One row of `code_libraries`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodeLibraryRow {
    pub code: i64,
    pub name: String,
    pub library: String,
    /// '' when unknown.
    pub version: String,
    pub declared: bool,
}

/// Every row of `code_libraries`, or `None` in stores older than format generation 4, which
/// lack the table.
pub fn code_library_rows(conn: &Connection) -> Result<Option<Vec<CodeLibraryRow>>, StorageError> {
    if !table_exists(conn, "code_libraries")? {
        return Ok(None);
    }
    let mut stmt = conn.prepare(
        "SELECT code, name, library, version, declared FROM code_libraries
         ORDER BY code, name, library",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(CodeLibraryRow {
            code: r.get(0)?,
            name: r.get(1)?,
            library: r.get(2)?,
            version: r.get(3)?,
            declared: r.get(4)?,
        })
    })?;
    Ok(Some(rows.collect::<Result<_, _>>()?))
}

/// Where code record ids are referenced from: each memo table in the file and the conflicts
/// table, with the distinct code ids each uses and how many rows use each.
pub fn code_references(conn: &Connection) -> Result<Vec<(ValueSource, i64, u64)>, StorageError> {
    let mut out = Vec::new();
    let mut tables: Vec<(ValueSource, String)> = memo_tables(conn)?
        .into_iter()
        .map(|t| (ValueSource::MemoTable(t.clone()), t))
        .collect();
    tables.push((ValueSource::Conflicts, "conflicts".to_string()));
    for (source, table) in tables {
        let mut stmt = conn.prepare(&format!(
            "SELECT code, count(*) FROM \"{table}\" GROUP BY code ORDER BY code"
        ))?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (code, n) = row?;
            out.push((source.clone(), code, n.max(0) as u64));
        }
    }
    Ok(out)
}

/// One stored source text, without the text: its hash, size in bytes and first line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRow {
    pub hash: String,
    pub size: u64,
    pub first_line: String,
}

/// Every stored source text (none in stores older than format generation 4).
pub fn source_rows(conn: &Connection) -> Result<Vec<SourceRow>, StorageError> {
    if !table_exists(conn, "sources")? {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT hash, length(CAST(text AS BLOB)),
                substr(text, 1, CASE WHEN instr(text, char(10)) > 0
                                     THEN min(instr(text, char(10)) - 1, 200) ELSE 200 END)
         FROM sources ORDER BY hash",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(SourceRow {
            hash: r.get(0)?,
            size: r.get::<_, i64>(1)?.max(0) as u64,
            first_line: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes these code records and their `code_libraries` rows (inside the caller's write
/// transaction).
pub fn delete_code_records(conn: &Connection, ids: &[i64]) -> Result<u64, StorageError> {
    let has_libraries = table_exists(conn, "code_libraries")?;
    let mut n = 0;
    for id in ids {
        if has_libraries {
            conn.prepare_cached("DELETE FROM code_libraries WHERE code = ?1")?
                .execute([id])?;
        }
        n += conn
            .prepare_cached("DELETE FROM code_records WHERE id = ?1")?
            .execute([id])? as u64;
    }
    Ok(n)
}

/// Deletes these source texts (inside the caller's write transaction).
pub fn delete_sources(conn: &Connection, hashes: &[String]) -> Result<u64, StorageError> {
    if hashes.is_empty() {
        return Ok(0);
    }
    let mut stmt = conn.prepare_cached("DELETE FROM sources WHERE hash = ?1")?;
    let mut n = 0;
    for h in hashes {
        n += stmt.execute([h])? as u64;
    }
    Ok(n)
}

// ---- counts and sizes ------------------------------------------------------------------------

/// Row counts for `info`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub families: u64,
    pub functions: u64,
    pub results: u64,
    pub values: u64,
    pub values_in_files: u64,
    pub conflicts: u64,
    pub log_entries: u64,
}

pub fn counts(conn: &Connection) -> Result<Counts, StorageError> {
    let count = |sql: &str| -> Result<u64, StorageError> {
        Ok(conn.query_row(sql, [], |r| r.get::<_, i64>(0))?.max(0) as u64)
    };
    let mut results = 0;
    let mut stmt = conn.prepare("SELECT memo_table FROM functions")?;
    let tables: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for table in tables {
        if table_exists(conn, &table)? {
            results += count(&format!("SELECT count(*) FROM \"{table}\""))?;
        }
    }
    Ok(Counts {
        families: count("SELECT count(*) FROM families")?,
        functions: count("SELECT count(*) FROM functions")?,
        results,
        values: count("SELECT count(*) FROM \"values\"")?,
        values_in_files: count("SELECT count(*) FROM \"values\" WHERE data IS NULL")?,
        conflicts: count("SELECT count(*) FROM conflicts")?,
        log_entries: count("SELECT count(*) FROM schema_log")?,
    })
}

/// The `meta` table, as key/value pairs.
pub fn meta(conn: &Connection) -> Result<Vec<(String, String)>, StorageError> {
    let mut stmt = conn.prepare("SELECT key, value FROM meta ORDER BY key")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Applied format generations: (generation, name, applied_at ms).
pub fn applied_migrations(conn: &Connection) -> Result<Vec<(u32, String, i64)>, StorageError> {
    let mut stmt =
        conn.prepare("SELECT generation, name, applied_at FROM format_migrations ORDER BY 1")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A lease lock a client broke, as `lock_breaks` records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockBreak {
    pub broken_at_ms: i64,
    /// `host pid N`, or `None` when the holder's owner file was unreadable.
    pub holder: Option<String>,
    pub silent_ms: i64,
    pub broken_by: String,
}

impl std::fmt::Display for LockBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "held by {}, broken by {} after {} ms without renewal (at unix ms {})",
            self.holder.as_deref().unwrap_or("an unknown client"),
            self.broken_by,
            self.silent_ms,
            self.broken_at_ms
        )
    }
}

/// The most recent broken lock (stores of format 3 and later; `None` otherwise).
pub fn last_lock_break(conn: &Connection) -> Result<Option<LockBreak>, StorageError> {
    if !table_exists(conn, "lock_breaks")? {
        return Ok(None);
    }
    Ok(conn
        .query_row(
            "SELECT broken_at, holder_host, holder_pid, silent_ms, broken_by FROM lock_breaks
             ORDER BY id DESC LIMIT 1",
            [],
            |r| {
                let host: Option<String> = r.get(1)?;
                let pid: Option<i64> = r.get(2)?;
                Ok(LockBreak {
                    broken_at_ms: r.get(0)?,
                    holder: host.map(|h| format!("{h} pid {}", pid.unwrap_or(0))),
                    silent_ms: r.get(3)?,
                    broken_by: r.get(4)?,
                })
            },
        )
        .optional()?)
}

// ---- migrations ------------------------------------------------------------------------------

/// What `migrate` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MigrateOutcome {
    AlreadyCurrent {
        generation: u32,
    },
    Migrated {
        from: u32,
        to: u32,
        applied: Vec<String>,
    },
}

/// Applies, in one exclusive transaction, every migration newer than the store's generation.
/// A store newer than this build is refused before SQLite opens it.
pub fn migrate(
    path: &Path,
    busy_timeout: Duration,
    now_ms: i64,
) -> Result<MigrateOutcome, OpenError> {
    let generation = existing_generation(path)?;
    if generation > FORMAT_GENERATION {
        return Err(OpenError::NewerFormat {
            path: path.to_path_buf(),
            found: generation,
            supported: FORMAT_GENERATION,
        });
    }
    if generation == FORMAT_GENERATION {
        return Ok(MigrateOutcome::AlreadyCurrent { generation });
    }
    let (conn, held) = exclusive_connection(path, busy_timeout)?;
    conn.execute_batch("BEGIN EXCLUSIVE")?;
    let applied = (|| -> Result<MigrateOutcome, OpenError> {
        // Another process may have migrated between the header read and the lock.
        let from: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let applied: Vec<String> = MIGRATIONS
            .iter()
            .filter(|m| m.generation > from)
            .map(|m| m.name.to_string())
            .collect();
        // Applies them and records this build's procedure menu as the file's.
        migrations::apply_from(
            &conn,
            from,
            now_ms,
            &crate::protocol::procedures::LOCAL_MENU,
        )?;
        if applied.is_empty() {
            return Ok(MigrateOutcome::AlreadyCurrent { generation: from });
        }
        Ok(MigrateOutcome::Migrated {
            from,
            to: FORMAT_GENERATION,
            applied,
        })
    })();
    match applied {
        Ok(outcome) => {
            if let Some(held) = &held {
                held.fence()?;
            }
            conn.execute_batch("COMMIT")?;
            Ok(outcome)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// A read-write connection for maintenance that changes the file. A store in rollback-journal
/// mode may be shared: its lease lock is taken first (waiting up to `wait`) and SQLite's own
/// locks are left off, as every shared-mode client does. The lock is held until the returned
/// guard is dropped.
fn exclusive_connection(
    path: &Path,
    wait: Duration,
) -> Result<(Connection, Option<Held>), OpenError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if file::is_wal(path) {
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(wait)?;
        return Ok((conn, None));
    }
    let held = LeaseLock::beside(
        path,
        LockConfig {
            lease: DEFAULT_LEASE,
            wait,
            interrupt: None,
            pause_before_commit: None,
        },
    )
    .acquire()?;
    let conn = Connection::open_with_flags_and_vfs(path, flags, super::NO_LOCK_VFS)?;
    conn.busy_timeout(wait)?;
    Mode::Shared.configure_connection(&conn)?;
    Ok((conn, Some(held)))
}

// ---- modes -----------------------------------------------------------------------------------

/// What a mode switch did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModeSwitch {
    Switched {
        from: Mode,
    },
    AlreadyInMode,
    /// Nothing was changed; the reason says why.
    Refused(String),
}

/// Switches the store's recorded mode and its journal mode, only if no other connection holds
/// the store. The caller has already checked that the path is a store; `others` is why the
/// caller already knows the store is held (a switch is then refused, an unneeded one is not).
pub fn switch_mode(
    path: &Path,
    target: Mode,
    wait: Duration,
    others: Option<String>,
) -> Result<ModeSwitch, OpenError> {
    let (conn, held) = match exclusive_connection(path, wait) {
        Ok(opened) => opened,
        Err(OpenError::Storage(StorageError::LockTimeout { holder, .. })) => {
            return Ok(ModeSwitch::Refused(format!(
                "{holder} holds the shared-mode lock"
            )))
        }
        Err(e) => return Err(e),
    };
    let busy = |what: &str| {
        ModeSwitch::Refused(format!(
            "another client holds the store ({what} timed out after {} ms)",
            wait.as_millis()
        ))
    };
    let current: String = match conn
        .query_row("SELECT value FROM meta WHERE key = 'mode'", [], |r| {
            r.get(0)
        })
        .optional()
    {
        Ok(Some(mode)) => mode,
        Ok(None) => {
            return Err(OpenError::NotAStore {
                path: path.to_path_buf(),
                reason: "its meta table does not record a mode (damaged?)".to_string(),
            })
        }
        Err(e) if is_busy(&e) => return Ok(busy("reading the mode")),
        Err(e) => return Err(e.into()),
    };
    let current: Mode = current.parse().map_err(|reason| OpenError::NotAStore {
        path: path.to_path_buf(),
        reason,
    })?;
    if current == target {
        return Ok(ModeSwitch::AlreadyInMode);
    }
    if let Some(others) = others {
        return Ok(ModeSwitch::Refused(others));
    }
    // Mode and lock method change together: every client reads both before it reads anything
    // else, so none keeps using the old method on the new mode.
    let record_mode = |conn: &Connection| -> rusqlite::Result<()> {
        conn.execute_batch("BEGIN EXCLUSIVE")?;
        let updated = conn
            .execute(
                "UPDATE meta SET value = ?1 WHERE key = 'mode'",
                [target.as_str()],
            )
            .and_then(|_| {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('lock_method', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [LockMethod::for_mode(target).as_str()],
                )
            })
            .and_then(|_| {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('mode_reason', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [format!("switched from {current} by `memotag set-mode`")],
                )
            })
            .and_then(|_| migrations::raise_levels(conn))
            .and_then(|_| match &held {
                Some(held) => held
                    .fence()
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e))),
                None => Ok(()),
            });
        match updated.and_then(|_| conn.execute_batch("COMMIT")) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    };
    match target {
        Mode::Shared => {
            // Leaving WAL needs every other connection gone: SQLite refuses with SQLITE_BUSY
            // while any other connection has the file open in WAL mode, even an idle one.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                return if is_busy(&e) {
                    Ok(busy("the checkpoint"))
                } else {
                    Err(e.into())
                };
            }
            let journal: Result<String, _> =
                conn.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0));
            match journal {
                Ok(mode) if mode.eq_ignore_ascii_case("delete") => {}
                Ok(_) => return Ok(busy("leaving WAL mode")),
                Err(e) if is_busy(&e) => return Ok(busy("leaving WAL mode")),
                Err(e) => return Err(e.into()),
            }
            if let Err(e) = record_mode(&conn) {
                // Put the journal back as it was; the next open would do it anyway.
                let _ = conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()));
                return if is_busy(&e) {
                    Ok(busy("recording the mode"))
                } else {
                    Err(e.into())
                };
            }
        }
        Mode::Local => {
            // In rollback mode an idle client holds no lock; an exclusive lock at least proves
            // that nobody is reading or writing right now.
            if let Err(e) = record_mode(&conn) {
                return if is_busy(&e) {
                    Ok(busy("taking the exclusive lock"))
                } else {
                    Err(e.into())
                };
            }
            // WAL needs SQLite's own locks and shared memory: a default-VFS connection, while
            // the lease lock (if the store was shared) is still held.
            drop(conn);
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(wait)?;
            let journal: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
            if !journal.eq_ignore_ascii_case("wal") {
                return Err(StorageError::Corrupt(format!(
                    "the mode was recorded as local but SQLite kept journal mode {journal}; \
                     the next writer will retry"
                ))
                .into());
            }
        }
    }
    Ok(ModeSwitch::Switched { from: current })
}

// ---- locks held by other processes -----------------------------------------------------------

/// What the POSIX locks on the store's files say about other processes, right now. Best effort:
/// locks of this process are invisible, and so are idle rollback-journal (shared mode) clients,
/// which hold no lock between transactions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockProbe {
    /// Some process has the store open in WAL mode (it holds the `-shm` "DMS" lock).
    pub wal_clients: bool,
    /// Some process holds the write lock.
    pub writing: bool,
    /// Some process is inside a read transaction.
    pub reading: bool,
    /// Whether the probe could look at all (unix only).
    pub known: bool,
}

impl LockProbe {
    pub fn held(&self) -> bool {
        self.wal_clients || self.writing || self.reading
    }
}

/// Probes the lock bytes SQLite's unix VFS uses, with `F_GETLK`, which never takes a lock.
///
/// Must be called while this process has no SQLite connection to the store: closing the file
/// descriptors opened here would drop that connection's POSIX locks.
pub fn probe_locks(path: &Path) -> LockProbe {
    #[cfg(unix)]
    {
        unix_locks::probe(path)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        LockProbe::default()
    }
}

#[cfg(unix)]
mod unix_locks {
    use super::LockProbe;
    use std::fs::File;
    use std::os::unix::io::AsRawFd;
    use std::path::Path;

    const PENDING_BYTE: i64 = 0x4000_0000;
    const SHARED_FIRST: i64 = PENDING_BYTE + 2;
    const SHARED_SIZE: i64 = 510;
    const SHM_WRITE: i64 = 120;
    const SHM_READ_FIRST: i64 = 123;
    const SHM_READ_COUNT: i64 = 5;
    const SHM_DMS: i64 = 128;

    pub(super) fn probe(path: &Path) -> LockProbe {
        let mut probe = LockProbe {
            known: true,
            ..LockProbe::default()
        };
        if let Ok(db) = File::open(path) {
            // PENDING and RESERVED, next to each other: someone is writing.
            probe.writing |= held(&db, PENDING_BYTE, 2);
            probe.reading |= held(&db, SHARED_FIRST, SHARED_SIZE);
        } else {
            probe.known = false;
        }
        let shm = super::file::side_file(path, "-shm");
        // Opened read-only and only if it exists: probing never creates a file.
        if let Ok(shm) = File::open(shm) {
            probe.wal_clients |= held(&shm, SHM_DMS, 1);
            probe.writing |= held(&shm, SHM_WRITE, 1);
            probe.reading |= held(&shm, SHM_READ_FIRST, SHM_READ_COUNT);
        }
        probe
    }

    /// Whether another process holds any lock on `[start, start+len)`.
    fn held(file: &File, start: i64, len: i64) -> bool {
        // SAFETY: a zeroed flock is a valid argument; F_GETLK only writes into it.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as _;
        fl.l_whence = libc::SEEK_SET as _;
        fl.l_start = start as _;
        fl.l_len = len as _;
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) };
        rc == 0 && i32::from(fl.l_type) != libc::F_UNLCK
    }
}
