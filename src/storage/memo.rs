//! Memo tables (one per function version), values and conflicts: the SQL behind `record`,
//! `lookup` and the queries. Identity and validity are decided by `calls`; this module stores.
//!
//! SQLite checks none of what it stores, so what is read is checked here against what it is
//! named by: a value's bytes against its id (content addressing makes the id its checksum), a
//! result found through the call index against the call id of the row itself. Damage is an
//! error, never a value.

use rusqlite::{params, Connection, OptionalExtension};

use crate::calls::{
    pack_ids, unpack_ids, BoundCall, CallId, ConflictRow, RecordOutcome, ResultRow,
};
use crate::error::StorageError;
use crate::schema::{FunctionTag, InputTag};
use crate::storage::BlobStore;
use crate::value::{Codec, EncodedValue, ValueId};

/// The memo table of a function version.
pub fn memo_table(function: &FunctionTag) -> String {
    format!("memo_{}", function.simple())
}

/// The column of an input in its function's memo table.
pub fn input_column(input: &InputTag) -> String {
    format!("in_{}", input.simple())
}

/// Where values above the size threshold go.
pub struct BlobSink<'a> {
    pub blobs: &'a BlobStore,
    pub threshold: usize,
}

/// Stores a value once, under the id derived from its codec and bytes; large values become
/// files (when `sink` is given).
pub fn put_value(
    conn: &Connection,
    sink: Option<&BlobSink<'_>>,
    value: &EncodedValue,
) -> Result<ValueId, StorageError> {
    let id = value.id();
    let mut exists = conn.prepare_cached("SELECT 1 FROM \"values\" WHERE id = ?1")?;
    if exists.exists([id.as_bytes()])? {
        return Ok(id);
    }
    let preview = crate::value::preview(value.codec, &value.bytes);
    let inline = match sink {
        Some(sink) if value.bytes.len() > sink.threshold => {
            sink.blobs.put(value, &id)?;
            None
        }
        _ => Some(value.bytes.as_slice()),
    };
    let mut insert = conn.prepare_cached(
        "INSERT INTO \"values\" (id, codec, size, data, preview) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    insert.execute(params![
        id.as_bytes(),
        value.codec as u8,
        value.bytes.len() as i64,
        inline,
        preview
    ])?;
    Ok(id)
}

/// Reads a value, from the table or its file, verified against its id: bytes that are not what
/// the id names are [`StorageError::CorruptValue`] (or `CorruptBlob` for a file).
pub fn get_value(
    conn: &Connection,
    blobs: &BlobStore,
    id: &ValueId,
) -> Result<Option<EncodedValue>, StorageError> {
    let mut stmt = conn.prepare_cached("SELECT codec, data FROM \"values\" WHERE id = ?1")?;
    let row = stmt
        .query_row([id.as_bytes()], |r| {
            Ok((r.get::<_, u8>(0)?, r.get::<_, Option<Vec<u8>>>(1)?))
        })
        .optional()?;
    let Some((codec, data)) = row else {
        return Ok(None);
    };
    let codec = Codec::from_u8(codec)
        .map_err(|_| StorageError::Corrupt(format!("value {id} has unknown codec {codec}")))?;
    match data {
        Some(bytes) => {
            let value = EncodedValue { codec, bytes };
            if value.id() != *id {
                return Err(StorageError::CorruptValue { id: *id });
            }
            Ok(Some(value))
        }
        None => blobs.get(id).map(Some),
    }
}

/// The preview of a value, for listings.
pub fn value_preview(conn: &Connection, id: &ValueId) -> Result<Option<String>, StorageError> {
    let mut stmt = conn.prepare_cached("SELECT preview FROM \"values\" WHERE id = ?1")?;
    Ok(stmt.query_row([id.as_bytes()], |r| r.get(0)).optional()?)
}

/// Inserts one result. The first result for (call id, code) stays canonical; a later one with
/// other outputs goes to the conflicts table (once per distinct outputs).
#[allow(clippy::too_many_arguments)]
pub fn insert_result(
    conn: &Connection,
    sink: &BlobSink<'_>,
    call: &BoundCall,
    code: i64,
    outputs: &[EncodedValue],
    client: i64,
    time_ms: i64,
) -> Result<RecordOutcome, StorageError> {
    // Ids derived here, whatever the call claims (the session has checked its claims already).
    let mut input_ids = Vec::with_capacity(call.inputs().len());
    for (_, value) in call.inputs() {
        input_ids.push(put_value(conn, Some(sink), value)?);
    }
    let mut output_ids = Vec::with_capacity(outputs.len());
    for value in outputs {
        output_ids.push(put_value(conn, Some(sink), value)?);
    }
    let packed = pack_ids(&output_ids);
    let table = memo_table(&call.function());
    let mut sql = format!("INSERT INTO \"{table}\" (call_id, code, outputs, client, time");
    for (tag, _) in call.inputs() {
        sql.push_str(&format!(", \"{}\"", input_column(tag)));
    }
    sql.push_str(") VALUES (?, ?, ?, ?, ?");
    for _ in call.inputs() {
        sql.push_str(", ?");
    }
    sql.push_str(") ON CONFLICT (call_id, code) DO NOTHING");
    let mut insert = conn.prepare_cached(&sql)?;
    let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(5 + call.inputs().len());
    let call_id = call.call_id().0;
    values.push(&call_id);
    values.push(&code);
    values.push(&packed);
    values.push(&client);
    values.push(&time_ms);
    let id_bytes: Vec<[u8; 16]> = input_ids.iter().map(|id| id.0).collect();
    for bytes in &id_bytes {
        values.push(bytes);
    }
    if insert.execute(values.as_slice())? == 1 {
        return Ok(RecordOutcome::Inserted {
            seq: conn.last_insert_rowid(),
        });
    }
    let (seq, canonical): (i64, Vec<u8>) = conn
        .prepare_cached(&format!(
            "SELECT seq, outputs FROM \"{table}\" WHERE call_id = ?1 AND code = ?2"
        ))?
        .query_row(params![call_id, code], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if canonical == packed {
        return Ok(RecordOutcome::AlreadyRecorded { seq });
    }
    let known: bool = conn
        .prepare_cached(
            "SELECT 1 FROM conflicts WHERE call_id = ?1 AND code = ?2 AND outputs = ?3 AND function = ?4",
        )?
        .exists(params![call_id, code, packed, call.function().as_bytes()])?;
    if !known {
        conn.prepare_cached(
            "INSERT INTO conflicts (function, call_id, code, outputs, client, time)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            call.function().as_bytes(),
            call_id,
            code,
            packed,
            client,
            time_ms
        ])?;
    }
    let canonical = unpack_ids(&canonical)
        .ok_or_else(|| StorageError::Corrupt(format!("result {seq} of {table} has bad outputs")))?;
    Ok(RecordOutcome::Conflict { seq, canonical })
}

/// Every result of a call (any code) as (seq, code, output ids), newest first. Almost always one
/// row; sorting in Rust is cheaper than asking SQLite for an ordered scan.
///
/// The rows are found through the call index, and each row's own `call_id` is compared with
/// the one asked for: SQLite trusts an index entry's row pointer, so a damaged one would hand
/// out another call's result. Reading the row by its `seq` in a second loop (`t`) makes SQLite
/// read `call_id` from the row, not from the index entry that led there; the B-tree work is the
/// same as for one loop (an index probe, then the row by `seq`).
pub fn call_results(
    conn: &Connection,
    function: &FunctionTag,
    call_id: &CallId,
) -> Result<Vec<(i64, i64, Vec<ValueId>)>, StorageError> {
    let sql = LOOKUP_SQL.with(|cache| {
        cache
            .borrow_mut()
            .entry(*function)
            .or_insert_with(|| {
                let table = memo_table(function);
                format!(
                    "SELECT t.seq, t.code, t.outputs, t.call_id \
                     FROM \"{table}\" AS i CROSS JOIN \"{table}\" AS t ON t.seq = i.seq \
                     WHERE i.call_id = ?1"
                )
                .into()
            })
            .clone()
    });
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([call_id.0])?;
    let mut out = Vec::with_capacity(1);
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let code: i64 = row.get(1)?;
        let packed = row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
        let ids = unpack_ids(packed).ok_or_else(|| {
            StorageError::Corrupt(format!(
                "result {seq} of {} has bad outputs",
                memo_table(function)
            ))
        })?;
        let own = row.get_ref(3)?.as_blob().map_err(rusqlite::Error::from)?;
        if own != call_id.0 {
            return Err(StorageError::Corrupt(format!(
                "the call index of {} leads call {call_id} to result {seq}, which is of call {}: the store is damaged (run `memotag check`)",
                memo_table(function),
                hex::encode(own)
            )));
        }
        out.push((seq, code, ids));
    }
    out.sort_unstable_by_key(|r| std::cmp::Reverse(r.0));
    Ok(out)
}

thread_local! {
    /// The lookup statement of each memo table: built once, not on every hit.
    static LOOKUP_SQL: std::cell::RefCell<std::collections::HashMap<FunctionTag, std::rc::Rc<str>>> =
        Default::default();
}

/// A filter on one input's value.
pub type InputFilter = (InputTag, ValueId);

/// Results of one function version, oldest first, optionally filtered by input values.
pub fn results(
    conn: &Connection,
    function: &FunctionTag,
    inputs: &[InputTag],
    filter: &[InputFilter],
    call_id: Option<&CallId>,
    limit: Option<usize>,
) -> Result<Vec<ResultRow>, StorageError> {
    let table = memo_table(function);
    let mut sql =
        String::from("SELECT m.seq, m.call_id, m.code, m.outputs, coalesce(c.name, '?'), m.time");
    for tag in inputs {
        sql.push_str(&format!(", m.\"{}\"", input_column(tag)));
    }
    sql.push_str(&format!(
        " FROM \"{table}\" m LEFT JOIN clients c ON c.id = m.client WHERE 1"
    ));
    let mut args: Vec<Vec<u8>> = Vec::new();
    for (tag, value) in filter {
        sql.push_str(&format!(" AND m.\"{}\" = ?", input_column(tag)));
        args.push(value.as_bytes().to_vec());
    }
    if let Some(call_id) = call_id {
        sql.push_str(" AND m.call_id = ?");
        args.push(call_id.0.to_vec());
    }
    sql.push_str(" ORDER BY m.seq");
    if let Some(limit) = limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
        let seq: i64 = r.get(0)?;
        let call_id: Vec<u8> = r.get(1)?;
        let code: i64 = r.get(2)?;
        let outputs: Vec<u8> = r.get(3)?;
        let client: String = r.get(4)?;
        let time_ms: i64 = r.get(5)?;
        let mut values = Vec::with_capacity(inputs.len());
        for (i, tag) in inputs.iter().enumerate() {
            let bytes: Option<Vec<u8>> = r.get(6 + i)?;
            values.push((*tag, bytes));
        }
        Ok((seq, call_id, code, outputs, client, time_ms, values))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, call_id, code, outputs, client, time_ms, values) = row?;
        let corrupt = || StorageError::Corrupt(format!("result {seq} of {table} is malformed"));
        let call_id = CallId(call_id.try_into().map_err(|_| corrupt())?);
        let outputs = unpack_ids(&outputs).ok_or_else(corrupt)?;
        let mut inputs = Vec::with_capacity(values.len());
        for (tag, bytes) in values {
            let Some(bytes) = bytes else { continue };
            inputs.push((tag, ValueId(bytes.try_into().map_err(|_| corrupt())?)));
        }
        out.push(ResultRow {
            function: *function,
            seq,
            call_id,
            code,
            inputs,
            outputs,
            client,
            time_ms,
        });
    }
    Ok(out)
}

/// The number of results of a function version.
pub fn count_results(conn: &Connection, function: &FunctionTag) -> Result<u64, StorageError> {
    let n: i64 = conn.query_row(
        &format!("SELECT count(*) FROM \"{}\"", memo_table(function)),
        [],
        |r| r.get(0),
    )?;
    Ok(n as u64)
}

/// Conflicting results, optionally of one function version only.
pub fn conflicts(
    conn: &Connection,
    function: Option<&FunctionTag>,
) -> Result<Vec<ConflictRow>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT f.function, f.call_id, f.code, f.outputs, coalesce(c.name, '?'), f.time
         FROM conflicts f LEFT JOIN clients c ON c.id = f.client
         WHERE ?1 IS NULL OR f.function = ?1 ORDER BY f.id",
    )?;
    let rows = stmt.query_map([function.map(|f| f.as_bytes().to_vec())], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Vec<u8>>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, i64>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (function, call_id, code, outputs, client, time_ms) = row?;
        let corrupt = || StorageError::Corrupt("a conflicts row is malformed".to_string());
        out.push(ConflictRow {
            function: FunctionTag::from_bytes(function.try_into().map_err(|_| corrupt())?),
            call_id: CallId(call_id.try_into().map_err(|_| corrupt())?),
            code,
            outputs: unpack_ids(&outputs).ok_or_else(corrupt)?,
            client,
            time_ms,
        });
    }
    Ok(out)
}

/// Results whose outputs include `value`, in one function version.
pub fn producers(
    conn: &Connection,
    function: &FunctionTag,
    inputs: &[InputTag],
    value: &ValueId,
) -> Result<Vec<ResultRow>, StorageError> {
    // Candidate rows by substring, then exact check on 16-byte boundaries.
    let table = memo_table(function);
    let seqs: Vec<i64> = {
        let mut stmt = conn.prepare(&format!(
            "SELECT seq, outputs FROM \"{table}\" WHERE instr(outputs, ?1) > 0 ORDER BY seq"
        ))?;
        let rows = stmt.query_map([value.as_bytes()], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut seqs = Vec::new();
        for row in rows {
            let (seq, outputs) = row?;
            if unpack_ids(&outputs).is_some_and(|ids| ids.contains(value)) {
                seqs.push(seq);
            }
        }
        seqs
    };
    let all = results(conn, function, inputs, &[], None, None)?;
    Ok(all.into_iter().filter(|r| seqs.contains(&r.seq)).collect())
}
