//! Keeping a store healthy: `check` (SQLite's integrity check plus memotag's own invariants),
//! `gc` (values and value files nothing refers to), explicit format migration, explicit mode
//! switches, and the facts `memotag info` shows.
//!
//! These work on a store path rather than an open [`Store`], because they must work on a store
//! whose log no longer replays (that is what `check` is for) and because some of them need the
//! store to themselves. The SQL is in `storage::maintenance`; this module decides what is a
//! finding and what is garbage.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::calls::CallId;
use crate::code::CodeRecord;
use crate::error::{BackupError, CallError, OpenError, StorageError};
use crate::schema::{Catalog, LoggedChange};
use crate::storage::maintenance::{self as sql, LockProbe, ModeSwitch, ValueRow, ValueSource};
use crate::storage::memo::{input_column, memo_table};
use crate::storage::now_ms;
use crate::storage::{filesystem_kind, BackupReport, FilesystemKind, Mode, FORMAT_GENERATION};
use crate::store::Store;
use crate::value::{Codec, EncodedValue, ValueId};

pub use crate::storage::maintenance::{Counts, LockBreak, MigrateOutcome, ValueSummary};

/// A maintenance command could not run, or refused to (and changed nothing).
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{path} is in use by other clients ({detail}); nothing was changed: close them and try again")]
    InUse { path: PathBuf, detail: String },
    #[error("{path} is on a network filesystem ({fs}), where local mode (WAL) cannot work across machines; nothing was changed (pass --force if only this machine ever opens it)")]
    NetworkFilesystem { path: PathBuf, fs: String },
    #[error(
        "{path} has malformed references ({first}); nothing was removed: run `memotag check` first"
    )]
    UnsafeToCollect { path: PathBuf, first: String },
}

/// Reports how far long work has come; the CLI draws it as a progress bar.
pub trait Progress {
    fn start(&mut self, what: &str, total: u64);
    fn advance(&mut self, n: u64);
    fn finish(&mut self);
}

/// No progress reporting.
impl Progress for () {
    fn start(&mut self, _: &str, _: u64) {}
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self) {}
}

// ---- check -----------------------------------------------------------------------------------

/// One broken invariant found by [`check`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// `format_unreadable`, `format`, `integrity`, `log`, `catalog`, `memo_table`, `call_id`,
    /// `reference`, `missing_value`, `value`, `blob`, `missing_code` or `code`.
    pub kind: &'static str,
    pub message: String,
}

fn finding(kind: &'static str, message: impl Into<String>) -> Finding {
    Finding {
        kind,
        message: message.into(),
    }
}

/// At most this many findings of one kind are listed one by one.
const MAX_FINDINGS_PER_KIND: usize = 50;

/// Checks the store at `path` without changing it: `PRAGMA integrity_check`; the schema log is
/// gapless from 1 and readable; the catalog tables equal what replaying the log gives; every
/// function's memo table exists with the columns and defaults of its inputs; every result's
/// call id is the id its function and input columns give; every value id that
/// memo rows, conflicts and input defaults refer to is in `values`; every value's bytes match
/// its id and decode with its codec (`cbor`, `npy`), and every value kept as a file has a file
/// that verifies and decodes; every code record id that
/// memo rows and conflicts refer to is in `code_records`; every code record parses and its hash
/// is the hash of its normalized record; `code_libraries` holds exactly the library refs of the
/// records. A source text a record mentions but the store lacks is not a finding: sources are
/// advisory. An empty list means healthy.
pub fn check(path: &Path, progress: &mut dyn Progress) -> Result<Vec<Finding>, MaintenanceError> {
    let mut db = sql::open_existing(path, true)?;
    let mut findings = format_findings(&db.handshake()?);
    if findings.iter().any(|f| f.kind == "format_unreadable") {
        // What this build would check may not be what the store holds: say only that.
        return Ok(findings);
    }
    let integrity = db.integrity_check()?;
    if integrity != ["ok"] {
        for line in integrity {
            findings.push(finding("integrity", line));
        }
    }
    let blobs = db.blobs.clone();
    db.read(|conn| -> Result<(), StorageError> {
        let catalog = check_log(conn, &mut findings)?;
        let total = sql::reference_rows(conn)?;
        if let Some(catalog) = &catalog {
            check_catalog_tables(conn, catalog, &mut findings)?;
            check_memo_tables(conn, catalog, &mut findings)?;
            progress.start("checking call ids", total);
            check_call_ids(conn, catalog, &mut findings, &mut |n| progress.advance(n))?;
            progress.finish();
        }
        progress.start("reading results", total);
        let refs = sql::referenced_values(conn, &mut |n| progress.advance(n))?;
        progress.finish();
        for m in refs.malformed {
            findings.push(finding("reference", m));
        }
        let (values, malformed) = sql::value_rows(conn)?;
        for m in malformed {
            findings.push(finding("value", m));
        }
        let present: HashSet<ValueId> = values.iter().map(|v| v.id).collect();
        let mut missing: Vec<(&ValueId, &ValueSource)> = refs
            .ids
            .iter()
            .filter(|(id, _)| !present.contains(id))
            .collect();
        missing.sort();
        let names = table_names(catalog.as_ref());
        for (id, source) in &missing {
            let from = match source {
                ValueSource::MemoTable(table) => format!(
                    "results of {}",
                    names
                        .get(table)
                        .cloned()
                        .unwrap_or_else(|| table.to_string())
                ),
                ValueSource::Conflicts => "a conflict".to_string(),
                ValueSource::InputDefault => "an input default".to_string(),
                ValueSource::SchemaLog => "the schema log".to_string(),
            };
            findings.push(finding(
                "missing_value",
                format!("value {id}, referenced by {from}, is not in the values table"),
            ));
        }
        progress.start("verifying values", values.len() as u64);
        for value in &values {
            check_value(conn, &blobs, value, &mut findings)?;
            progress.advance(1);
        }
        progress.finish();
        check_code(conn, &names, &mut findings)?;
        Ok(())
    })?;
    Ok(cap_findings(findings))
}

/// A store that this build would refuse (a read level above [`READ_LEVEL`]), open only
/// read-only (a write level above [`WRITE_LEVEL`]), or whose format generation is newer than
/// [`FORMAT_GENERATION`]: its invariants are not all this build's to check.
fn format_findings(handshake: &crate::storage::FileHandshake) -> Vec<Finding> {
    use crate::protocol::{READ_LEVEL, WRITE_LEVEL};
    let mut findings = Vec::new();
    if handshake.read_level > READ_LEVEL {
        findings.push(finding(
            "format_unreadable",
            format!(
                "the store's read level is {}, higher than this memotag reads ({READ_LEVEL}): \
                 this memotag refuses to open it and cannot check it; check it with a newer memotag",
                handshake.read_level
            ),
        ));
    }
    if handshake.write_level > WRITE_LEVEL {
        findings.push(finding(
            "format",
            format!(
                "the store's write level is {}, higher than this memotag writes ({WRITE_LEVEL}): \
                 this memotag opens it read-only; check it with a newer memotag",
                handshake.write_level
            ),
        ));
    }
    if handshake.generation > FORMAT_GENERATION {
        findings.push(finding(
            "format",
            format!(
                "the store is format generation {}, newer than this memotag knows \
                 ({FORMAT_GENERATION}): checks of what newer generations added are missing; \
                 check it with a newer memotag",
                handshake.generation
            ),
        ));
    }
    findings
}

/// The log is gapless from 1 and every entry parses; returns the replayed catalog if it can be
/// replayed at all.
fn check_log(
    conn: &rusqlite::Connection,
    findings: &mut Vec<Finding>,
) -> Result<Option<Catalog>, StorageError> {
    let rows = sql::raw_log(conn)?;
    let mut expected = 1i64;
    let mut entries: Vec<(u64, LoggedChange)> = Vec::with_capacity(rows.len());
    let mut replayable = true;
    for row in rows {
        if row.seq != expected {
            let gap = if row.seq == expected + 1 {
                format!("entry {expected} is missing")
            } else {
                format!("entries {expected} to {} are missing", row.seq - 1)
            };
            findings.push(finding(
                "log",
                format!("the schema log has a gap: {gap} (it must run 1, 2, 3, … without gaps)"),
            ));
            replayable = false;
        }
        expected = row.seq + 1;
        match row.change {
            Ok(change) => entries.push((row.seq.max(0) as u64, change)),
            Err(e) => {
                findings.push(finding(
                    "log",
                    format!("schema log entry {} cannot be read: {e}", row.seq),
                ));
                replayable = false;
            }
        }
    }
    if !replayable {
        findings.push(finding(
            "catalog",
            "the catalog tables were not compared with the log, because the log cannot be replayed",
        ));
        return Ok(None);
    }
    match Catalog::replay(entries.iter().map(|(seq, change)| (*seq, change))) {
        Ok(catalog) => Ok(Some(catalog)),
        Err(e) => {
            findings.push(finding(
                "log",
                format!("the schema log does not replay: {e}"),
            ));
            Ok(None)
        }
    }
}

fn hex16(bytes: &[u8; 16]) -> String {
    hex::encode(bytes)
}

/// A catalog table: its name, the query that reads it, its columns, the rows the log implies.
type CatalogTable<'a> = (&'a str, &'a str, &'a [&'a str], Vec<Vec<String>>);

fn check_catalog_tables(
    conn: &rusqlite::Connection,
    catalog: &Catalog,
    findings: &mut Vec<Finding>,
) -> Result<(), StorageError> {
    let mut families = Vec::new();
    let mut functions = Vec::new();
    let mut inputs = Vec::new();
    let mut history = Vec::new();
    let span_row = |kind: &str, tag: &[u8; 16], span: &crate::schema::NameSpan| {
        vec![
            kind.to_string(),
            hex16(tag),
            span.name.clone(),
            span.from_seq.to_string(),
            span.to_seq
                .map_or_else(|| "NULL".to_string(), |s| s.to_string()),
        ]
    };
    for family in catalog.families() {
        families.push(vec![
            hex16(family.tag.as_bytes()),
            family.name.clone(),
            family.created_seq.to_string(),
        ]);
        for span in &family.names {
            history.push(span_row("function", family.tag.as_bytes(), span));
        }
    }
    for function in catalog.functions() {
        functions.push(vec![
            hex16(function.tag.as_bytes()),
            hex16(function.family.as_bytes()),
            function.version.to_string(),
            serde_json::to_string(&function.outputs).expect("strings serialize"),
            function.created_seq.to_string(),
            memo_table(&function.tag),
        ]);
        for input in &function.inputs {
            inputs.push(vec![
                hex16(input.tag.as_bytes()),
                hex16(function.tag.as_bytes()),
                input.name.clone(),
                input.position.to_string(),
                input
                    .default
                    .map_or_else(|| "NULL".to_string(), |d| d.to_hex()),
                input.created_seq.to_string(),
            ]);
            for span in &input.names {
                history.push(span_row("input", input.tag.as_bytes(), span));
            }
        }
    }
    let tables: [CatalogTable; 4] = [
        (
            "families",
            sql::FAMILY_ROWS,
            &["tag", "name", "created_seq"],
            families,
        ),
        (
            "functions",
            sql::FUNCTION_ROWS,
            &[
                "tag",
                "family",
                "version",
                "outputs",
                "created_seq",
                "memo_table",
            ],
            functions,
        ),
        (
            "inputs",
            sql::INPUT_ROWS,
            &[
                "tag",
                "function",
                "name",
                "position",
                "default_value",
                "created_seq",
            ],
            inputs,
        ),
        (
            "name_history",
            sql::NAME_HISTORY_ROWS,
            &["kind", "tag", "name", "from_seq", "to_seq"],
            history,
        ),
    ];
    for (table, query, columns, expected) in tables {
        let actual = sql::table_rows(conn, query)?;
        let render = |row: &Vec<String>| {
            columns
                .iter()
                .zip(row)
                .map(|(c, v)| format!("{c}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut wanted: HashMap<&Vec<String>, i64> = HashMap::new();
        for row in &expected {
            *wanted.entry(row).or_default() += 1;
        }
        for row in &actual {
            *wanted.entry(row).or_default() -= 1;
        }
        let mut diffs: Vec<(&Vec<String>, i64)> =
            wanted.into_iter().filter(|(_, n)| *n != 0).collect();
        diffs.sort();
        for (row, n) in diffs {
            let what = if n > 0 {
                "lacks a row that replaying the log gives"
            } else {
                "has a row that replaying the log does not give"
            };
            findings.push(finding(
                "catalog",
                format!("table {table} {what}: {}", render(row)),
            ));
        }
    }
    Ok(())
}

fn check_memo_tables(
    conn: &rusqlite::Connection,
    catalog: &Catalog,
    findings: &mut Vec<Finding>,
) -> Result<(), StorageError> {
    let mut known = HashSet::new();
    for function in catalog.functions() {
        let table = memo_table(&function.tag);
        let label = function_label(catalog, function.tag);
        known.insert(table.clone());
        let Some(columns) = sql::table_columns(conn, &table)? else {
            findings.push(finding(
                "memo_table",
                format!("the memo table {table} of {label} does not exist"),
            ));
            continue;
        };
        let actual: HashMap<&str, Option<&str>> = columns
            .iter()
            .map(|(name, default)| (name.as_str(), default.as_deref()))
            .collect();
        for fixed in ["seq", "call_id", "code", "outputs", "client", "time"] {
            if !actual.contains_key(fixed) {
                findings.push(finding(
                    "memo_table",
                    format!("the memo table of {label} lacks its column {fixed}"),
                ));
            }
        }
        let mut expected_inputs = HashSet::new();
        for input in &function.inputs {
            let column = input_column(&input.tag);
            match actual.get(column.as_str()) {
                None => findings.push(finding(
                    "memo_table",
                    format!(
                        "the memo table of {label} has no column for input `{}` ({column})",
                        input.name
                    ),
                )),
                Some(default) => {
                    let wanted = input.default.map(|d| format!("x'{}'", d.to_hex()));
                    let found = default.map(str::to_ascii_lowercase);
                    if wanted != found {
                        findings.push(finding(
                            "memo_table",
                            format!(
                                "column {column} (input `{}`) of the memo table of {label} has default {}, but the catalog says {}",
                                input.name,
                                found.as_deref().unwrap_or("none"),
                                wanted.as_deref().unwrap_or("none")
                            ),
                        ));
                    }
                }
            }
            expected_inputs.insert(column);
        }
        for (name, _) in &columns {
            if name.starts_with("in_") && !expected_inputs.contains(name) {
                findings.push(finding(
                    "memo_table",
                    format!("the memo table of {label} has a column {name} that is not one of its inputs"),
                ));
            }
        }
    }
    for table in sql::memo_tables(conn)? {
        if !known.contains(&table) {
            findings.push(finding(
                "memo_table",
                format!("the memo table {table} belongs to no function in the log"),
            ));
        }
    }
    Ok(())
}

/// Every result's call id is the one its function and input columns give (SQLite checks neither:
/// an altered call id would answer another call's lookups). Rows with a malformed or missing
/// input id are left to the reference checks.
fn check_call_ids(
    conn: &rusqlite::Connection,
    catalog: &Catalog,
    findings: &mut Vec<Finding>,
    advance: &mut dyn FnMut(u64),
) -> Result<(), StorageError> {
    for function in catalog.functions() {
        let table = memo_table(&function.tag);
        let Some(columns) = sql::table_columns(conn, &table)? else {
            continue;
        };
        let wanted: Vec<String> = function
            .inputs
            .iter()
            .map(|i| input_column(&i.tag))
            .collect();
        if !wanted
            .iter()
            .all(|w| columns.iter().any(|(name, _)| name == w))
        {
            continue;
        }
        let label = function_label(catalog, function.tag);
        let mut visited = 0;
        sql::visit_result_inputs(conn, &table, &wanted, &mut |seq, stored, ids| {
            visited += 1;
            let mut non_default = Vec::with_capacity(ids.len());
            for (input, id) in function.inputs.iter().zip(ids) {
                match id {
                    Some(id) if input.default == Some(*id) => {}
                    Some(id) => non_default.push((input.tag, *id)),
                    None => return,
                }
            }
            let derived = CallId::compute(function.tag, &mut non_default);
            if stored != derived.0 {
                findings.push(finding(
                    "call_id",
                    format!(
                        "result {seq} of {label} is filed under call id {}, but its inputs give {derived}: its call id or an input was altered",
                        hex::encode(stored)
                    ),
                ));
            }
        })?;
        advance(visited);
    }
    Ok(())
}

/// Code records: every referenced id exists; every record parses and hashes to its hash
/// column; `code_libraries` mirrors the records' library refs.
fn check_code(
    conn: &rusqlite::Connection,
    names: &HashMap<String, String>,
    findings: &mut Vec<Finding>,
) -> Result<(), StorageError> {
    let rows = sql::code_rows(conn)?;
    let present: HashSet<i64> = rows.iter().map(|r| r.id).chain([0]).collect();
    for (source, code, n) in sql::code_references(conn)? {
        if present.contains(&code) {
            continue;
        }
        let from = match &source {
            ValueSource::MemoTable(table) => format!(
                "{n} result{} of {}",
                plural(n),
                names.get(table).cloned().unwrap_or_else(|| table.clone())
            ),
            _ => format!("{n} conflict{}", plural(n)),
        };
        findings.push(finding(
            "missing_code",
            format!(
                "{from} point{} at code record {code}, which is not in code_records",
                if n == 1 { "s" } else { "" }
            ),
        ));
    }
    let mut parsed: HashMap<i64, CodeRecord> = HashMap::new();
    for row in &rows {
        let record = match serde_json::from_str::<CodeRecord>(&row.record) {
            Ok(record) => record.normalized(),
            Err(e) => {
                findings.push(finding(
                    "code",
                    format!("code record {} cannot be read: {e}", row.id),
                ));
                continue;
            }
        };
        let hash = record.hash();
        if row.hash.as_slice() != hash.0.as_slice() {
            findings.push(finding(
                "code",
                format!(
                    "code record {} has hash {}, but its record hashes to {}: one of them was modified",
                    row.id,
                    hex::encode(&row.hash),
                    hex::encode(hash.0)
                ),
            ));
        }
        parsed.insert(row.id, record);
    }
    let Some(actual) = sql::code_library_rows(conn)? else {
        return Ok(());
    };
    // What recording writes: one row per (name, library) of a record, the first in the
    // normalized order winning (the table's key), the version '' when unknown.
    let mut expected = Vec::new();
    for (id, record) in &parsed {
        let mut seen = HashSet::new();
        for l in &record.libraries {
            if seen.insert((&l.name, &l.library)) {
                expected.push(sql::CodeLibraryRow {
                    code: *id,
                    name: l.name.clone(),
                    library: l.library.clone(),
                    version: l.version.clone().unwrap_or_default(),
                    declared: l.declared,
                });
            }
        }
    }
    let mut count: HashMap<&sql::CodeLibraryRow, i64> = HashMap::new();
    for row in &expected {
        *count.entry(row).or_default() += 1;
    }
    for row in &actual {
        if !present.contains(&row.code) {
            findings.push(finding(
                "code",
                format!(
                    "code_libraries has a row for code record {}, which is not in code_records ({} from {})",
                    row.code, row.name, row.library
                ),
            ));
            continue;
        }
        if !parsed.contains_key(&row.code) {
            continue; // an unreadable record, already reported
        }
        *count.entry(row).or_default() -= 1;
    }
    let mut diffs: Vec<(&sql::CodeLibraryRow, i64)> =
        count.into_iter().filter(|(_, n)| *n != 0).collect();
    diffs.sort();
    for (row, n) in diffs {
        let what = if n > 0 {
            "lacks a row for a library ref of"
        } else {
            "has a row that is not a library ref of"
        };
        let version = if row.version.is_empty() {
            "unknown version"
        } else {
            row.version.as_str()
        };
        findings.push(finding(
            "code",
            format!(
                "code_libraries {what} code record {}: `{}` from {} {version}{}",
                row.code,
                row.name,
                row.library,
                if row.declared { " (declared)" } else { "" }
            ),
        ));
    }
    Ok(())
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn check_value(
    conn: &rusqlite::Connection,
    blobs: &crate::storage::BlobStore,
    value: &ValueRow,
    findings: &mut Vec<Finding>,
) -> Result<(), StorageError> {
    let id = value.id;
    let Ok(codec) = Codec::from_u8(value.codec) else {
        findings.push(finding(
            "value",
            format!("value {id} has an unknown codec {}", value.codec),
        ));
        return Ok(());
    };
    if value.in_file {
        match blobs.get(&id) {
            Ok(bytes) => check_decodes(&bytes, findings),
            Err(StorageError::MissingBlob { path, .. }) => findings.push(finding(
                "blob",
                format!(
                    "value {id} is kept as a file, but {} is missing",
                    path.display()
                ),
            )),
            Err(StorageError::CorruptBlob { path, .. }) => findings.push(finding(
                "blob",
                format!(
                    "the file {} does not match its value id {id}: it was modified or damaged",
                    path.display()
                ),
            )),
            Err(e) => return Err(e),
        }
    } else if let Some(bytes) = sql::inline_bytes(conn, &id)? {
        let value = EncodedValue { codec, bytes };
        if value.id() != id {
            findings.push(finding(
                "value",
                format!("the bytes of value {id} do not match its id"),
            ));
        } else {
            check_decodes(&value, findings);
        }
    }
    Ok(())
}

/// A value whose bytes match its id but that its codec cannot read back (recorded by an older
/// memotag, whose encoder wrote what its decoder refuses).
fn check_decodes(value: &EncodedValue, findings: &mut Vec<Finding>) {
    if let Err(e) = value.check() {
        findings.push(finding(
            "value",
            format!(
                "value {} ({}) cannot be read back: {e}",
                value.id(),
                value.codec
            ),
        ));
    }
}

fn cap_findings(findings: Vec<Finding>) -> Vec<Finding> {
    let mut per_kind: HashMap<&'static str, usize> = HashMap::new();
    let mut out = Vec::new();
    for f in findings {
        let n = per_kind.entry(f.kind).or_default();
        *n += 1;
        if *n <= MAX_FINDINGS_PER_KIND {
            out.push(f);
        }
    }
    let mut kinds: Vec<_> = per_kind
        .into_iter()
        .filter(|(_, n)| *n > MAX_FINDINGS_PER_KIND)
        .collect();
    kinds.sort();
    for (kind, n) in kinds {
        out.push(finding(
            kind,
            format!(
                "… and {} more findings of this kind",
                n - MAX_FINDINGS_PER_KIND
            ),
        ));
    }
    out
}

/// "`name` version N" for a function, or its tag if the catalog does not name it.
fn function_label(catalog: &Catalog, tag: crate::schema::FunctionTag) -> String {
    match (catalog.function_name(tag), catalog.function(tag)) {
        (Some(name), Some(f)) => format!("`{name}` version {}", f.version),
        _ => format!("function {tag}"),
    }
}

fn table_names(catalog: Option<&Catalog>) -> HashMap<String, String> {
    catalog
        .map(|c| {
            c.functions()
                .map(|f| (memo_table(&f.tag), function_label(c, f.tag)))
                .collect()
        })
        .unwrap_or_default()
}

// ---- gc --------------------------------------------------------------------------------------

/// What garbage collection finds: values nothing refers to (with their files, if any), value
/// files that no value row claims, code records no result or conflict refers to, and source
/// texts no remaining code record mentions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Garbage {
    pub values: Vec<GarbageValue>,
    /// Files in the blob folder whose id has no values row kept as a file.
    pub orphan_files: Vec<GarbageFile>,
    /// Code records (never id 0, the empty record), removed with their `code_libraries` rows.
    pub codes: Vec<GarbageCode>,
    pub sources: Vec<GarbageSource>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GarbageCode {
    pub id: i64,
    /// The record's hash column, in hex.
    pub hash: String,
    /// Bytes of the record's JSON.
    pub size: u64,
    /// The record, if its JSON parses.
    pub record: Option<CodeRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GarbageSource {
    pub hash: String,
    /// Bytes of the text.
    pub size: u64,
    pub first_line: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GarbageValue {
    pub id: ValueId,
    pub codec: Option<Codec>,
    pub size: u64,
    pub preview: String,
    /// The value's file, if it is kept as one and the file exists.
    pub file: Option<GarbageFile>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GarbageFile {
    pub id: ValueId,
    pub path: PathBuf,
    pub size: u64,
}

impl Garbage {
    /// Every file this garbage includes.
    pub fn files(&self) -> impl Iterator<Item = &GarbageFile> {
        self.values
            .iter()
            .filter_map(|v| v.file.as_ref())
            .chain(&self.orphan_files)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
            && self.orphan_files.is_empty()
            && self.codes.is_empty()
            && self.sources.is_empty()
    }
}

/// What [`gc`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub garbage: Garbage,
    /// False for a dry run.
    pub removed: bool,
    /// Files that could not be removed (the values rows are gone all the same).
    pub file_errors: Vec<String>,
}

/// Finds (and unless `dry_run`, removes) values that no memo row, conflict or input default refers
/// to, value files that no value row claims, code records (other than 0, the empty record) that
/// no memo row or conflict refers to, with their `code_libraries` rows, and source texts that no
/// remaining code record mentions. The rows are found and deleted in one write transaction, so
/// no writer can start referring to one in between; the files are deleted after that commits,
/// under the write lock again, each only if no value row claims it by then.
pub fn gc(
    path: &Path,
    dry_run: bool,
    progress: &mut dyn Progress,
) -> Result<GcReport, MaintenanceError> {
    let mut db = sql::open_existing(path, dry_run)?;
    let blobs = db.blobs.clone();
    let plan = |conn: &rusqlite::Connection, progress: &mut dyn Progress| {
        let total = sql::reference_rows(conn)?;
        progress.start("reading results", total);
        let refs = sql::referenced_values(conn, &mut |n| progress.advance(n))?;
        progress.finish();
        if let Some(first) = refs.malformed.first() {
            return Err(MaintenanceError::UnsafeToCollect {
                path: path.to_path_buf(),
                first: first.clone(),
            });
        }
        let (values, malformed) = sql::value_rows(conn)?;
        if let Some(first) = malformed.first() {
            return Err(MaintenanceError::UnsafeToCollect {
                path: path.to_path_buf(),
                first: first.clone(),
            });
        }
        let files = sql::blob_files(&blobs)?;
        let file_of: HashMap<ValueId, GarbageFile> = files
            .iter()
            .map(|(id, path, size)| {
                (
                    *id,
                    GarbageFile {
                        id: *id,
                        path: path.clone(),
                        size: *size,
                    },
                )
            })
            .collect();
        let mut garbage = Garbage::default();
        let mut claimed = HashSet::new();
        for v in values {
            if refs.ids.contains_key(&v.id) {
                if v.in_file {
                    claimed.insert(v.id);
                }
                continue;
            }
            garbage.values.push(GarbageValue {
                id: v.id,
                codec: Codec::from_u8(v.codec).ok(),
                size: v.size,
                preview: v.preview,
                file: if v.in_file {
                    file_of.get(&v.id).cloned()
                } else {
                    None
                },
            });
        }
        let listed: HashSet<ValueId> = garbage
            .values
            .iter()
            .filter(|v| v.file.is_some())
            .map(|v| v.id)
            .collect();
        for (id, file) in file_of {
            if !claimed.contains(&id) && !listed.contains(&id) {
                garbage.orphan_files.push(file);
            }
        }
        garbage.orphan_files.sort_by_key(|f| f.id);
        collect_code(conn, path, &mut garbage)?;
        Ok(garbage)
    };
    if dry_run {
        let garbage = db.read(|conn| plan(conn, progress))?;
        return Ok(GcReport {
            garbage,
            removed: false,
            file_errors: Vec::new(),
        });
    }
    let garbage = db.write(|conn| {
        let garbage = plan(conn, progress)?;
        let ids: Vec<ValueId> = garbage.values.iter().map(|v| v.id).collect();
        sql::delete_values(conn, &ids)?;
        let codes: Vec<i64> = garbage.codes.iter().map(|c| c.id).collect();
        sql::delete_code_records(conn, &codes)?;
        let sources: Vec<String> = garbage.sources.iter().map(|s| s.hash.clone()).collect();
        sql::delete_sources(conn, &sources)?;
        Ok::<_, MaintenanceError>(garbage)
    })?;
    let mut file_errors = Vec::new();
    if garbage.files().next().is_some() {
        db.write(|conn| {
            for file in garbage.files() {
                if sql::stored_as_file(conn, &file.id)? {
                    file_errors.push(format!(
                        "{} was kept: a writer stored its value again meanwhile",
                        file.path.display()
                    ));
                    continue;
                }
                if let Err(e) = std::fs::remove_file(&file.path) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        file_errors.push(format!("{}: {e}", file.path.display()));
                    }
                }
            }
            Ok::<_, StorageError>(())
        })?;
    }
    Ok(GcReport {
        garbage,
        removed: true,
        file_errors,
    })
}

/// Adds the unreferenced code records and the source texts that no kept code record mentions.
/// A kept record that does not parse makes it unsafe to collect sources (which ones it mentions
/// is unknown), so nothing is collected.
fn collect_code(
    conn: &rusqlite::Connection,
    path: &Path,
    garbage: &mut Garbage,
) -> Result<(), MaintenanceError> {
    let used: HashSet<i64> = sql::code_references(conn)?
        .into_iter()
        .map(|(_, code, _)| code)
        .collect();
    let mut mentioned: HashSet<String> = HashSet::new();
    let rows = sql::code_rows(conn)?;
    // The newest record is always kept: code record ids are rowids, and deleting the highest
    // one would let the next record reuse its id under a session that cached the old record.
    let newest = rows.iter().map(|r| r.id).max().unwrap_or(0);
    for row in rows {
        let record = serde_json::from_str::<CodeRecord>(&row.record);
        if row.id != 0 && row.id != newest && !used.contains(&row.id) {
            garbage.codes.push(GarbageCode {
                id: row.id,
                hash: hex::encode(&row.hash),
                size: row.record.len() as u64,
                record: record.ok(),
            });
            continue;
        }
        match record {
            Ok(record) => mentioned.extend(record.source_hashes()),
            Err(e) => {
                return Err(MaintenanceError::UnsafeToCollect {
                    path: path.to_path_buf(),
                    first: format!("code record {} cannot be read: {e}", row.id),
                })
            }
        }
    }
    for source in sql::source_rows(conn)? {
        if !mentioned.contains(&source.hash) {
            garbage.sources.push(GarbageSource {
                hash: source.hash,
                size: source.size,
                first_line: source.first_line,
            });
        }
    }
    Ok(())
}

// ---- migrate ---------------------------------------------------------------------------------

/// Upgrades the store's file format to this build's generation: forward only, each migration
/// recorded in `format_migrations`, all in one exclusive transaction. A store at the newest
/// generation is left alone; a store newer than this build is refused, unchanged.
pub fn migrate(path: &Path) -> Result<MigrateOutcome, MaintenanceError> {
    Ok(sql::migrate(path, Duration::from_secs(60), now_ms())?)
}

// ---- backup ----------------------------------------------------------------------------------

/// Copies the store at `src` to a new store at `dest` while other clients may be using it
/// (SQLite's online backup of one consistent view; see `Database::backup`). An existing `dest` is
/// refused unless `overwrite`.
pub fn backup(src: &Path, dest: &Path, overwrite: bool) -> Result<BackupReport, BackupError> {
    let mut db = sql::open_for_inspection(src, true)?;
    db.backup(dest, overwrite)
}

// ---- set-mode --------------------------------------------------------------------------------

/// What [`set_mode`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetModeOutcome {
    Switched { from: Mode, to: Mode },
    AlreadyInMode(Mode),
}

/// Switches the store's sharing mode (`meta.mode`, `meta.lock_method` and the journal mode)
/// while nobody else holds it. Refused, with nothing changed, when other clients have it open (as
/// far as locks can tell: a shared store is switched under its lease lock, and idle shared-mode
/// clients notice the switch at their next transaction), and when switching to local mode on a
/// network filesystem unless `force`.
pub fn set_mode(
    path: &Path,
    target: Mode,
    force: bool,
) -> Result<SetModeOutcome, MaintenanceError> {
    let generation = sql::existing_generation(path)?;
    if generation > FORMAT_GENERATION {
        return Err(OpenError::NewerFormat {
            path: path.to_path_buf(),
            found: generation,
            supported: FORMAT_GENERATION,
        }
        .into());
    }
    // Probe before this process opens the file with SQLite (see `probe_locks`).
    let probe = sql::probe_locks(path);
    if target == Mode::Local && !force {
        if let FilesystemKind::Network(fs) = filesystem_kind(&store_dir(path)) {
            let current = sql::open_existing(path, true)?.mode();
            if current != Mode::Local {
                return Err(MaintenanceError::NetworkFilesystem {
                    path: path.to_path_buf(),
                    fs,
                });
            }
        }
    }
    let refused = probe.held().then(|| describe_holders(&probe));
    match sql::switch_mode(path, target, Duration::from_millis(500), refused.clone())? {
        ModeSwitch::AlreadyInMode => Ok(SetModeOutcome::AlreadyInMode(target)),
        ModeSwitch::Switched { from } => Ok(SetModeOutcome::Switched { from, to: target }),
        ModeSwitch::Refused(detail) => Err(MaintenanceError::InUse {
            path: path.to_path_buf(),
            detail,
        }),
    }
}

fn describe_holders(probe: &LockProbe) -> String {
    let mut what = Vec::new();
    if probe.writing {
        what.push("a client is writing");
    }
    if probe.reading {
        what.push("a client is reading");
    }
    if probe.wal_clients && what.is_empty() {
        what.push("other processes have it open");
    }
    what.join(", ")
}

fn store_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

// ---- info ------------------------------------------------------------------------------------

/// Facts about a store, for `memotag info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreInfo {
    pub path: PathBuf,
    pub format_generation: u32,
    /// The newest generation this build reads and writes.
    pub supported_generation: u32,
    pub mode: Mode,
    /// The journal the file is in: `wal` or `rollback` (its header says).
    pub journal: &'static str,
    pub filesystem: FilesystemKind,
    /// Why the store has its mode (recorded at creation and by `set-mode`; `None` for stores
    /// made before memotag recorded it).
    pub mode_reason: Option<String>,
    pub lock: LockState,
    /// How the store's clients exclude each other.
    pub lock_method: crate::storage::LockMethod,
    /// Shared mode: who holds the lease lock right now (`host pid N`), if anyone.
    pub lease_holder: Option<String>,
    /// Shared mode: the last lock a client broke because its holder stopped renewing it.
    pub last_lock_break: Option<LockBreak>,
    pub counts: Counts,
    pub sizes: Sizes,
    pub store_id: Option<String>,
    pub created_at_ms: Option<i64>,
    /// What the file offers a session: protocol, levels, the library that wrote it, its menu.
    pub handshake: crate::storage::FileHandshake,
}

/// Who holds the store right now, as far as POSIX locks tell (best effort).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockState {
    /// No other process holds a lock.
    Free,
    /// Other processes have it open (in WAL mode), none reading or writing now.
    OpenByOthers,
    Reading,
    Writing,
    /// Locks cannot be probed on this platform.
    Unknown,
}

impl LockState {
    pub fn as_str(self) -> &'static str {
        match self {
            LockState::Free => "free",
            LockState::OpenByOthers => "open by other clients",
            LockState::Reading => "being read",
            LockState::Writing => "being written",
            LockState::Unknown => "unknown",
        }
    }
}

/// Bytes on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sizes {
    pub database: u64,
    pub wal: u64,
    pub blobs: u64,
}

impl Sizes {
    pub fn total(&self) -> u64 {
        self.database + self.wal + self.blobs
    }
}

/// Reads what `memotag info` shows, without changing the store.
pub fn info(path: &Path) -> Result<StoreInfo, MaintenanceError> {
    sql::existing_generation(path)?;
    let probe = sql::probe_locks(path);
    let lock = if !probe.known {
        LockState::Unknown
    } else if probe.writing {
        LockState::Writing
    } else if probe.reading {
        LockState::Reading
    } else if probe.wal_clients {
        LockState::OpenByOthers
    } else {
        LockState::Free
    };
    // Before opening: this client's own reads take the lease lock.
    let lease_holder = crate::storage::lock::LeaseLock::holder(path).map(|owner| match owner {
        Ok(o) => o.describe(),
        Err(_) => "a client whose owner file is unreadable".to_string(),
    });
    let mut db = sql::open_for_inspection(path, true)?;
    let (counts, meta, last_lock_break) = db.read(|conn| {
        Ok::<_, StorageError>((
            sql::counts(conn)?,
            sql::meta(conn)?,
            sql::last_lock_break(conn)?,
        ))
    })?;
    let meta: HashMap<String, String> = meta.into_iter().collect();
    let file_len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = path.as_os_str().to_os_string();
    wal.push("-wal");
    let blobs: u64 = sql::blob_files(&db.blobs)?.iter().map(|f| f.2).sum();
    let journal = match header_byte(path, 18) {
        Some(2) => "wal",
        _ => "rollback",
    };
    Ok(StoreInfo {
        path: path.to_path_buf(),
        format_generation: db.generation(),
        supported_generation: FORMAT_GENERATION,
        mode: db.mode(),
        journal,
        filesystem: filesystem_kind(&store_dir(path)),
        mode_reason: meta.get("mode_reason").cloned(),
        lock,
        lock_method: db.lock_method(),
        lease_holder,
        last_lock_break,
        counts,
        sizes: Sizes {
            database: file_len(path),
            wal: file_len(Path::new(&wal)),
            blobs,
        },
        store_id: meta.get("store_id").cloned(),
        created_at_ms: meta.get("created_at").and_then(|s| s.parse().ok()),
        handshake: db.handshake()?,
    })
}

// ---- values for display ----------------------------------------------------------------------

impl Store {
    /// A value for display: codec, size, preview, and the bytes when they are stored inline and
    /// no larger than `inline_limit` (so that listings never read large value files).
    pub fn value_summary(
        &self,
        id: &ValueId,
        inline_limit: u64,
    ) -> Result<Option<ValueSummary>, CallError> {
        let mut s = self.session.lock();
        Ok(s.db.snapshot(|conn| sql::value_summary(conn, id, inline_limit))?)
    }
}

/// One byte of the SQLite header (18: the file format write version, 2 for WAL).
fn header_byte(path: &Path, at: usize) -> Option<u8> {
    use std::io::Read;
    let mut header = Vec::with_capacity(at + 1);
    std::fs::File::open(path)
        .ok()?
        .take(at as u64 + 1)
        .read_to_end(&mut header)
        .ok()?;
    header.get(at).copied()
}
