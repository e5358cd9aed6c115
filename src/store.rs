//! `Store` and `OpenOptions`: the session a user holds on one store file.
//!
//! A session keeps the client's copy of the catalog (caught up from the log whenever it might be
//! stale), the client's identity, and an optional batch of buffered results. Every operation goes
//! rules (`schema`, `calls`) → storage; nothing here writes SQL.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;
use uuid::Uuid;

use crate::calls::{self, BoundCall, CallId, ConflictRow, Hit, RecordOutcome, ResultRow};
use crate::error::{CallError, OpenError, SchemaError, StorageError};
use crate::schema::{
    Catalog, Family, FamilyTag, Function, FunctionSpec, FunctionTag, InputTag, Plan, Resolution,
    SchemaChange,
};
use crate::storage::catalog::LogEntry;
use crate::storage::memo::{self, BlobSink};
use crate::storage::{Database, Mode, OpenRequest};
use crate::value::{EncodedValue, ValueId};

/// Results buffered in a batch before it commits, by default.
pub const DEFAULT_BATCH_SIZE: usize = 1_000;
/// Values larger than this are kept as files beside the store, by default.
pub const DEFAULT_BLOB_THRESHOLD: usize = 1 << 20;

/// How to open a store.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    mode: Option<Mode>,
    read_only: bool,
    full_durability: bool,
    blob_threshold: usize,
    busy_timeout: Duration,
    batch_size: usize,
    client_name: Option<String>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            mode: None,
            read_only: false,
            full_durability: false,
            blob_threshold: DEFAULT_BLOB_THRESHOLD,
            busy_timeout: Duration::from_secs(60),
            batch_size: DEFAULT_BATCH_SIZE,
            client_name: None,
        }
    }
}

impl OpenOptions {
    pub fn new() -> Self {
        OpenOptions::default()
    }

    /// The mode a new store is created in, and the mode an existing store must have (opening a
    /// store of another mode fails). Unset: detected for a new store, the store's own otherwise.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Opens without the right to write; never creates a store.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Makes every returned `record` survive power loss in local mode too (`synchronous=FULL`).
    /// Shared mode is always fully durable.
    pub fn full_durability(mut self, full: bool) -> Self {
        self.full_durability = full;
        self
    }

    /// Values above this many bytes are stored as files beside the store.
    pub fn blob_threshold(mut self, bytes: usize) -> Self {
        self.blob_threshold = bytes;
        self
    }

    /// How long a write waits for other writers before failing with `StorageError::Busy`.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How many results a batch buffers before it commits them (and goes on buffering).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Who this client is in the log and in each result (default: `user@host`).
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = Some(name.into());
        self
    }

    /// Opens (or creates) the store at `path`.
    pub fn open(&self, path: impl AsRef<Path>) -> Result<Store, OpenError> {
        let req = OpenRequest {
            path: path.as_ref().to_path_buf(),
            mode: self.mode,
            read_only: self.read_only,
            full_durability: self.full_durability,
            blob_threshold: self.blob_threshold,
            busy_timeout: self.busy_timeout,
        };
        let mut db = Database::open(&req)?;
        let client_name = self.client_name.clone().unwrap_or_else(default_client_name);
        let client = db.client_id(&client_name)?;
        let mut session = Session {
            db,
            catalog: Catalog::new(),
            client,
            batch: None,
            batch_size: self.batch_size,
            blob_threshold: self.blob_threshold,
        };
        session.catch_up().map_err(|e| match e {
            SchemaError::Storage(s) => OpenError::Storage(s),
            other => OpenError::Storage(StorageError::Corrupt(other.to_string())),
        })?;
        Ok(Store {
            session: Mutex::new(session),
            path: req.path,
            client_name,
        })
    }
}

/// An open store: the handle every operation goes through. `Send + Sync`; operations from several
/// threads are serialized on one connection.
pub struct Store {
    session: Mutex<Session>,
    path: PathBuf,
    client_name: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

struct Session {
    db: Database,
    catalog: Catalog,
    client: i64,
    batch: Option<Batch>,
    batch_size: usize,
    blob_threshold: usize,
}

/// Results recorded inside a batch and not yet committed.
#[derive(Default)]
struct Batch {
    pending: Vec<(BoundCall, Vec<EncodedValue>)>,
    by_call: HashMap<(FunctionTag, CallId), usize>,
}

impl Store {
    /// Opens (or creates) the store at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, OpenError> {
        OpenOptions::new().open(path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn client_name(&self) -> &str {
        &self.client_name
    }

    pub fn mode(&self) -> Mode {
        self.session.lock().db.mode()
    }

    pub fn is_read_only(&self) -> bool {
        self.session.lock().db.is_read_only()
    }

    /// The file format generation of the store.
    pub fn format_generation(&self) -> u32 {
        self.session.lock().db.generation()
    }

    /// A copy of the catalog, caught up with the log.
    pub fn catalog(&self) -> Result<Catalog, SchemaError> {
        let mut s = self.session.lock();
        s.catch_up()?;
        Ok(s.catalog.clone())
    }

    /// Runs `f` on the session's catalog, caught up with the log, without copying it.
    pub fn with_catalog<T>(&self, f: impl FnOnce(&Catalog) -> T) -> Result<T, SchemaError> {
        let mut s = self.session.lock();
        s.catch_up()?;
        Ok(f(&s.catalog))
    }

    // ---- schema -------------------------------------------------------------------------------

    /// Validates and applies one schema change in one write transaction. Returns the log
    /// sequence number of the new entry, or `None` if the change had already taken effect.
    pub fn apply(&self, change: &SchemaChange) -> Result<Option<u64>, SchemaError> {
        self.session.lock().apply(change)
    }

    /// Creates a function (or a new version of a family), or returns the existing one if it
    /// already has exactly this interface.
    pub fn create_function(&self, spec: FunctionSpec) -> Result<Function, SchemaError> {
        let mut s = self.session.lock();
        s.apply(&SchemaChange::CreateFunction(spec.clone()))?;
        s.catalog
            .function_named(&spec.name, spec.version)
            .cloned()
            .ok_or_else(|| SchemaError::NoSuchFunction(spec.name.clone()))
    }

    /// Adds an input with a default to one function version; returns its tag.
    pub fn add_input(
        &self,
        function: FunctionTag,
        name: &str,
        default: Option<EncodedValue>,
    ) -> Result<InputTag, SchemaError> {
        let mut s = self.session.lock();
        s.apply(&SchemaChange::AddInput {
            function,
            name: name.to_string(),
            default,
        })?;
        s.catalog
            .function(function)
            .and_then(|f| f.input_named(name))
            .map(|i| i.tag)
            .ok_or(SchemaError::UnknownFunction(function))
    }

    /// Renames a family (every version).
    pub fn rename_function(&self, family: FamilyTag, to: &str) -> Result<(), SchemaError> {
        self.apply(&SchemaChange::RenameFunction {
            family,
            to: to.to_string(),
        })
        .map(drop)
    }

    /// Renames one input of one function version.
    pub fn rename_input(&self, input: InputTag, to: &str) -> Result<(), SchemaError> {
        self.apply(&SchemaChange::RenameInput {
            input,
            to: to.to_string(),
        })
        .map(drop)
    }

    /// Resolves a family name: current, or renamed away (reported with the new name).
    pub fn resolve_function(&self, name: &str) -> Result<Option<Resolution<Family>>, SchemaError> {
        self.with_catalog(|c| {
            c.resolve_family(name).map(|r| match r {
                Resolution::Current(f) => Resolution::Current(f.clone()),
                Resolution::Renamed { from, to, target } => Resolution::Renamed {
                    from,
                    to,
                    target: target.clone(),
                },
            })
        })
    }

    /// One version of a family by its current (or former) name.
    pub fn function(&self, name: &str, version: u32) -> Result<Function, SchemaError> {
        self.with_catalog(|c| {
            let family = c
                .resolve_family(name)
                .ok_or_else(|| SchemaError::NoSuchFunction(name.to_string()))?
                .into_target();
            family
                .versions
                .get(&version)
                .and_then(|t| c.function(*t))
                .cloned()
                .ok_or_else(|| SchemaError::NoSuchVersion {
                    function: family.name.clone(),
                    version,
                })
        })?
    }

    /// Schema log entries after `since`.
    pub fn schema_log(&self, since: u64) -> Result<Vec<LogEntry>, SchemaError> {
        let s = self.session.lock();
        Ok(s.db.read(|conn| crate::storage::catalog::read_log(conn, since))?)
    }

    // ---- calls --------------------------------------------------------------------------------

    /// Checks a call against its function version and computes its id. Inputs are named by tag,
    /// from any schema the caller knows; the ones left out take their defaults.
    pub fn bind(
        &self,
        function: FunctionTag,
        inputs: Vec<(InputTag, EncodedValue)>,
    ) -> Result<BoundCall, CallError> {
        self.session.lock().bind(function, inputs)
    }

    /// Records one result of a bound call. Durable when it returns (outside a batch); an
    /// identical result is a no-op; other outputs for the same call and code become a conflict.
    pub fn record(
        &self,
        call: &BoundCall,
        outputs: Vec<EncodedValue>,
    ) -> Result<RecordOutcome, CallError> {
        self.session.lock().record(call, outputs)
    }

    /// The canonical outputs of the newest result of this call, or `None`.
    pub fn lookup(&self, call: &BoundCall) -> Result<Option<Hit>, CallError> {
        self.session.lock().lookup(call)
    }

    /// Starts buffering results: they are visible to lookups through this handle and committed
    /// in one transaction when the batch ends (or every `batch_size` results). No lock is held
    /// in between.
    pub fn begin_batch(&self) {
        let mut s = self.session.lock();
        if s.batch.is_none() {
            s.batch = Some(Batch::default());
        }
    }

    /// Commits the buffered results and stops buffering.
    pub fn commit_batch(&self) -> Result<Vec<RecordOutcome>, CallError> {
        let mut s = self.session.lock();
        let outcomes = s.flush_batch()?;
        s.batch = None;
        Ok(outcomes)
    }

    /// Drops the buffered results and stops buffering.
    pub fn abort_batch(&self) {
        self.session.lock().batch = None;
    }

    /// Runs `f` inside a batch; commits if it returns `Ok`, drops the batch otherwise.
    pub fn batch<T, E: From<CallError>>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, E>,
    ) -> Result<T, E> {
        self.begin_batch();
        match f(self) {
            Ok(value) => {
                self.commit_batch()?;
                Ok(value)
            }
            Err(e) => {
                self.abort_batch();
                Err(e)
            }
        }
    }

    // ---- values and queries -------------------------------------------------------------------

    /// A stored value by id.
    pub fn value(&self, id: &ValueId) -> Result<Option<EncodedValue>, CallError> {
        let s = self.session.lock();
        Ok(memo::get_value(&s.db.conn, &s.db.blobs, id)?)
    }

    /// The short human preview of a stored value.
    pub fn preview(&self, id: &ValueId) -> Result<Option<String>, CallError> {
        let s = self.session.lock();
        Ok(memo::value_preview(&s.db.conn, id)?)
    }

    /// Results of one function version, oldest first, optionally filtered by input values
    /// (by tag) and limited.
    pub fn results(
        &self,
        function: FunctionTag,
        filter: &[(InputTag, EncodedValue)],
        limit: Option<usize>,
    ) -> Result<Vec<ResultRow>, CallError> {
        let mut s = self.session.lock();
        let inputs = s.input_tags(function)?;
        let filter: Vec<_> = filter.iter().map(|(t, v)| (*t, v.id())).collect();
        Ok(s.db.read(|conn| memo::results(conn, &function, &inputs, &filter, None, limit))?)
    }

    /// Every result recorded for one call id, in any function version.
    pub fn results_of_call(&self, call_id: &CallId) -> Result<Vec<ResultRow>, CallError> {
        let mut s = self.session.lock();
        s.catch_up_calls()?;
        let functions: Vec<(FunctionTag, Vec<InputTag>)> = s
            .catalog
            .functions()
            .map(|f| (f.tag, f.inputs.iter().map(|i| i.tag).collect()))
            .collect();
        Ok(s.db.read(|conn| {
            let mut out = Vec::new();
            for (tag, inputs) in &functions {
                out.extend(memo::results(conn, tag, inputs, &[], Some(call_id), None)?);
            }
            Ok::<_, StorageError>(out)
        })?)
    }

    /// Every result whose outputs include this value.
    pub fn producers(&self, value: &ValueId) -> Result<Vec<ResultRow>, CallError> {
        let mut s = self.session.lock();
        s.catch_up_calls()?;
        let functions: Vec<(FunctionTag, Vec<InputTag>)> = s
            .catalog
            .functions()
            .map(|f| (f.tag, f.inputs.iter().map(|i| i.tag).collect()))
            .collect();
        Ok(s.db.read(|conn| {
            let mut out = Vec::new();
            for (tag, inputs) in &functions {
                out.extend(memo::producers(conn, tag, inputs, value)?);
            }
            Ok::<_, StorageError>(out)
        })?)
    }

    /// Results recorded again with other outputs (the canonical ones stay in the memo tables).
    pub fn conflicts(&self, function: Option<FunctionTag>) -> Result<Vec<ConflictRow>, CallError> {
        let s = self.session.lock();
        Ok(memo::conflicts(&s.db.conn, function.as_ref())?)
    }

    /// How many results a function version has.
    pub fn count_results(&self, function: FunctionTag) -> Result<u64, CallError> {
        let s = self.session.lock();
        Ok(memo::count_results(&s.db.conn, &function)?)
    }

    /// Moves committed results from the write-ahead log into the store file and truncates the
    /// log (local mode), e.g. before measuring or copying the file.
    pub fn checkpoint(&self) -> Result<(), StorageError> {
        self.session.lock().db.checkpoint()
    }

    /// `PRAGMA integrity_check` of the file: `["ok"]` when healthy.
    pub fn integrity_check(&self) -> Result<Vec<String>, StorageError> {
        self.session.lock().db.integrity_check()
    }
}

impl Session {
    /// Applies log entries this session has not seen yet.
    fn catch_up(&mut self) -> Result<(), SchemaError> {
        let entries = crate::storage::catalog::read_log(&self.db.conn, self.catalog.seq())?;
        for entry in entries {
            self.catalog.apply(entry.seq, &entry.change)?;
        }
        Ok(())
    }

    fn catch_up_calls(&mut self) -> Result<(), CallError> {
        self.catch_up().map_err(|e| match e {
            SchemaError::Storage(s) => CallError::Storage(s),
            other => CallError::Storage(StorageError::Corrupt(other.to_string())),
        })
    }

    fn apply(&mut self, change: &SchemaChange) -> Result<Option<u64>, SchemaError> {
        if self.db.is_read_only() {
            return Err(self.db.read_only_error().into());
        }
        let client = self.client;
        let catalog = &mut self.catalog;
        let values = change_values(change);
        let applied = self.db.write(|conn| {
            // Catch up under the write lock, so the change is validated against the schema as
            // it is now, not as this client last saw it.
            let mut next = catalog.clone();
            for entry in crate::storage::catalog::read_log(conn, next.seq())? {
                next.apply(entry.seq, &entry.change)?;
            }
            let plan = next.plan(change, &mut Uuid::new_v4)?;
            let seq = match plan {
                Plan::AlreadyApplied => None,
                Plan::Apply(logged) => {
                    let seq = next.seq() + 1;
                    crate::storage::catalog::append(conn, seq, &logged, &values, client, now_ms())?;
                    next.apply(seq, &logged)?;
                    Some(seq)
                }
            };
            Ok::<_, SchemaError>((next, seq))
        });
        match applied {
            Ok((next, seq)) => {
                *catalog = next;
                Ok(seq)
            }
            Err(e) => Err(e),
        }
    }

    fn function(&mut self, tag: FunctionTag) -> Result<&Function, CallError> {
        if self.catalog.function(tag).is_none() {
            self.catch_up_calls()?;
        }
        self.catalog
            .function(tag)
            .ok_or(CallError::UnknownFunction(tag))
    }

    fn input_tags(&mut self, function: FunctionTag) -> Result<Vec<InputTag>, CallError> {
        self.catch_up_calls()?;
        let f = self.function(function)?;
        Ok(f.inputs.iter().map(|i| i.tag).collect())
    }

    fn bind(
        &mut self,
        function: FunctionTag,
        inputs: Vec<(InputTag, EncodedValue)>,
    ) -> Result<BoundCall, CallError> {
        let f = self.function(function)?;
        let known = inputs.iter().all(|(tag, _)| f.input(*tag).is_some());
        if !known {
            // The caller may know an input this session has not seen yet.
            self.catch_up_calls()?;
        }
        self.function(function)?;
        let f = self.catalog.function(function).expect("found above");
        let name = self.catalog.function_name(function).unwrap_or("?");
        calls::bind(f, name, inputs)
    }

    fn record(
        &mut self,
        call: &BoundCall,
        outputs: Vec<EncodedValue>,
    ) -> Result<RecordOutcome, CallError> {
        if self.db.is_read_only() {
            return Err(self.db.read_only_error().into());
        }
        self.check_outputs(call.function, outputs.len())?;
        if let Some(batch) = &mut self.batch {
            let key = (call.function, call.call_id);
            batch.by_call.entry(key).or_insert(batch.pending.len());
            batch.pending.push((call.clone(), outputs));
            if batch.pending.len() >= self.batch_size {
                self.flush_batch()?;
            }
            return Ok(RecordOutcome::Buffered);
        }
        let client = self.client;
        let threshold = self.blob_threshold;
        let blobs = self.db.blobs.clone();
        self.db.write(|conn| {
            let sink = BlobSink {
                blobs: &blobs,
                threshold,
            };
            Ok::<_, CallError>(memo::insert_result(
                conn,
                &sink,
                call,
                0,
                &outputs,
                client,
                now_ms(),
            )?)
        })
    }

    fn check_outputs(&mut self, function: FunctionTag, given: usize) -> Result<(), CallError> {
        self.function(function)?;
        let f = self.catalog.function(function).expect("found above");
        if f.outputs.len() != given {
            return Err(CallError::OutputCount {
                function: self
                    .catalog
                    .function_name(function)
                    .unwrap_or("?")
                    .to_string(),
                expected: f.outputs.len(),
                given,
                names: f.outputs.join(", "),
            });
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<Vec<RecordOutcome>, CallError> {
        let Some(batch) = self.batch.as_mut() else {
            return Ok(Vec::new());
        };
        if batch.pending.is_empty() {
            return Ok(Vec::new());
        }
        let pending = std::mem::take(&mut batch.pending);
        let client = self.client;
        let threshold = self.blob_threshold;
        let blobs = self.db.blobs.clone();
        let result = self.db.write(|conn| {
            let sink = BlobSink {
                blobs: &blobs,
                threshold,
            };
            let time = now_ms();
            let mut outcomes = Vec::with_capacity(pending.len());
            for (call, outputs) in &pending {
                outcomes.push(memo::insert_result(
                    conn, &sink, call, 0, outputs, client, time,
                )?);
            }
            Ok::<_, CallError>(outcomes)
        });
        let batch = self.batch.as_mut().expect("batch checked above");
        match result {
            Ok(outcomes) => {
                batch.by_call.clear();
                Ok(outcomes)
            }
            Err(e) => {
                // Keep the results so that the caller can retry the commit.
                batch.pending = pending;
                Err(e)
            }
        }
    }

    fn lookup(&mut self, call: &BoundCall) -> Result<Option<Hit>, CallError> {
        if let Some(batch) = &self.batch {
            if let Some(&i) = batch.by_call.get(&(call.function, call.call_id)) {
                let outputs = batch.pending[i].1.clone();
                return Ok(Some(Hit {
                    seq: 0,
                    code: 0,
                    output_ids: outputs.iter().map(EncodedValue::id).collect(),
                    outputs,
                }));
            }
        }
        let conn = &self.db.conn;
        let Some((seq, code, output_ids)) =
            memo::newest_result(conn, &call.function, &call.call_id)?
        else {
            return Ok(None);
        };
        let mut outputs = Vec::with_capacity(output_ids.len());
        for id in &output_ids {
            let value =
                memo::get_value(conn, &self.db.blobs, id)?.ok_or(CallError::MissingValue(*id))?;
            outputs.push(value);
        }
        Ok(Some(Hit {
            seq,
            code,
            output_ids,
            outputs,
        }))
    }
}

/// The encoded default values a change carries.
fn change_values(change: &SchemaChange) -> Vec<EncodedValue> {
    match change {
        SchemaChange::CreateFunction(spec) => spec
            .inputs
            .iter()
            .filter_map(|i| i.default.clone())
            .collect(),
        SchemaChange::AddInput { default, .. } => default.iter().cloned().collect(),
        _ => Vec::new(),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `user@host`, from the environment and `gethostname`.
fn default_client_name() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".to_string());
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let host = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "localhost".to_string()
    };
    format!("{user}@{host}")
}
