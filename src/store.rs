//! `Store` and `OpenOptions`: the session a user holds on one store file.
//!
//! A session keeps the client's copy of the catalog (caught up from the log whenever it might be
//! stale), the client's identity, and the open batches of buffered results: each belongs to the
//! thread that opened it. Every operation goes rules (`schema`, `calls`) → storage; nothing here
//! writes SQL.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::thread::ThreadId;
use std::time::Duration;

use parking_lot::Mutex;
use std::sync::Arc;
use uuid::Uuid;

use crate::code::{judge, CodeHash, CodeRecord, Reader, SourceText, Verdict};
use crate::protocol::procedures::{
    self, Answer, LookupAnswer, LookupRequest, PackageRow, Query, RecordRequest, ResultsWith,
    CALL_LOOKUP, CALL_QUERY, CALL_RECORD, CALL_RECORD_BATCH, CODE_PACKAGES, CODE_PREFLIGHT,
    CODE_RECORD, CODE_RESULTS_WITH, CODE_SOURCE, LOCAL_MENU, SCHEMA_CHANGE, SCHEMA_LOG, VALUE_GET,
};
use crate::protocol::{
    negotiate, Menu, Selection, VersionError, LIBRARY_VERSION, PROTOCOL, READ_LEVEL, WRITE_LEVEL,
};
use crate::storage::FileHandshake;

use crate::calls::{self, BoundCall, CallId, ConflictRow, Hit, RecordOutcome, ResultRow};
use crate::error::{
    BackupError, BatchError, BatchFlush, CallError, OpenError, SchemaError, StorageError,
};
use crate::schema::{
    Catalog, Family, FamilyTag, Function, FunctionSpec, FunctionTag, InputTag, Interface, Notice,
    Plan, RenameRecord, Resolution, SchemaChange,
};
use crate::storage::catalog::LogEntry;
use crate::storage::lock::{Interrupt, LockConfig, LockMethod, DEFAULT_LEASE};
use crate::storage::memo::{self, BlobSink};
use crate::storage::now_ms;
use crate::storage::{BackupReport, Database, Mode, OpenRequest};
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
    client_menu: Option<Menu>,
    lock_method: Option<LockMethod>,
    /// Lease, interrupt and fault injection; the wait is `busy_timeout`.
    lock: LockConfig,
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
            client_menu: None,
            lock_method: None,
            lock: LockConfig {
                lease: DEFAULT_LEASE,
                wait: Duration::from_secs(60),
                interrupt: None,
                pause_before_commit: None,
            },
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

    /// How long a read or write waits for other clients before failing with
    /// `StorageError::Busy` (local mode) or `StorageError::LockTimeout` (shared mode).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Shared mode: how long this client's hold on the store's lock lasts without renewal
    /// (default 10 s). While it holds the lock a thread renews it four times per lease; a client
    /// that finds a lock unchanged for its holder's whole lease breaks it (the holder died or was
    /// paused). Shorter leases recover faster from a dead holder; longer ones tolerate longer
    /// pauses (a stalled filesystem, a suspended laptop) without losing the transaction.
    pub fn lock_lease(mut self, lease: Duration) -> Self {
        self.lock.lease = lease.max(Duration::from_millis(100));
        self
    }

    /// Called while waiting for the store's lock (shared mode, every few milliseconds):
    /// returning `true` gives the wait up with `StorageError::Interrupted`. For example a flag
    /// set by a Ctrl-C handler, or `PyErr_CheckSignals` in a binding.
    pub fn interrupt(mut self, interrupt: Interrupt) -> Self {
        self.lock.interrupt = Some(interrupt);
        self
    }

    /// The lock method this client uses; opening a store that records another one fails with
    /// `OpenError::LockMethodMismatch`. Unset: the store's own (new stores: the mode's).
    pub fn lock_method(mut self, method: LockMethod) -> Self {
        self.lock_method = Some(method);
        self
    }

    /// Fault injection for tests of the shared-mode lock: sleep this long while holding the
    /// lock, just before checking that it is still ours and committing.
    #[doc(hidden)]
    pub fn pause_before_commit(mut self, pause: Duration) -> Self {
        self.lock.pause_before_commit = Some(pause);
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

    /// Offers only these procedures and generations, as an older memotag would (for
    /// compatibility tests and for pinning a client to old behaviour). Default: this build's
    /// full menu ([`crate::protocol::procedures::LOCAL_MENU`]).
    pub fn client_menu(mut self, menu: Menu) -> Self {
        self.client_menu = Some(menu);
        self
    }

    /// Opens (or creates) the store at `path`, then starts the session: handshake (protocol
    /// number and levels) and menu negotiation with the file, before reading anything else.
    pub fn open(&self, path: impl AsRef<Path>) -> Result<Store, OpenError> {
        let req = OpenRequest {
            path: path.as_ref().to_path_buf(),
            mode: self.mode,
            read_only: self.read_only,
            full_durability: self.full_durability,
            blob_threshold: self.blob_threshold,
            busy_timeout: self.busy_timeout,
            menu: LOCAL_MENU.clone(),
            lock_method: self.lock_method,
            lock: LockConfig {
                wait: self.busy_timeout,
                ..self.lock.clone()
            },
        };
        let mut db = Database::open(&req)?;
        let mut handshake = db.handshake()?;
        handshake.menu = procedures::file_offers(handshake.menu, handshake.generation);
        if handshake.protocol != PROTOCOL {
            return Err(VersionError::ProtocolMismatch {
                local: PROTOCOL,
                remote: handshake.protocol,
            }
            .into());
        }
        if handshake.read_level > READ_LEVEL {
            return Err(VersionError::ReadLevel {
                file: handshake.read_level,
                supported: READ_LEVEL,
            }
            .into());
        }
        let local = self
            .client_menu
            .clone()
            .unwrap_or_else(|| LOCAL_MENU.clone());
        let selection = negotiate(&local, &handshake.menu)?;
        if handshake.write_level > WRITE_LEVEL {
            db.restrict_to_reads(format!(
                "it was written by a newer memotag (write level {}, this one writes {WRITE_LEVEL})",
                handshake.write_level
            ));
        }
        db.start()?;
        let client_name = self.client_name.clone().unwrap_or_else(default_client_name);
        let mut session = Session {
            db,
            catalog: Catalog::new(),
            client: None,
            client_name: client_name.clone(),
            selection: Arc::new(selection),
            handshake,
            codes: Default::default(),
            batches: HashMap::new(),
            batch_size: self.batch_size,
            blob_threshold: self.blob_threshold,
        };
        match session.catch_up() {
            Ok(()) => {}
            // A client without `schema.log` still opens; the operations that need the catalog
            // fail when called.
            Err(SchemaError::Version(_)) => {}
            Err(SchemaError::Storage(s)) => return Err(OpenError::Storage(s)),
            Err(other) => return Err(OpenError::Storage(StorageError::Corrupt(other.to_string()))),
        }
        Ok(Store {
            session: Mutex::new(session),
            path: req.path,
            client_name,
        })
    }
}

/// An open store: the handle every operation goes through. `Send + Sync`; operations from several
/// threads are serialized on one connection, and each thread has its own batch.
///
/// Dropping the store commits the results still buffered in open batches (of every thread); if
/// that fails, it says so on stderr. [`Store::close`] does the same and returns the error.
pub struct Store {
    pub(crate) session: Mutex<Session>,
    path: PathBuf,
    client_name: String,
}

impl Drop for Store {
    fn drop(&mut self) {
        let session = self.session.get_mut();
        let (results, batches) = session.buffered();
        if results == 0 {
            return;
        }
        if let Err(e) = session.flush_all_batches() {
            let (lost, cause) = match &e {
                CallError::Batch(b) => (b.not_stored, b.cause.to_string()),
                other => (results, other.to_string()),
            };
            eprintln!(
                "memotag: {}: the store was dropped with {results} results buffered in {batches} \
                 open batches; {} were stored, and {lost} could not be and are lost: {cause}",
                self.path.display(),
                results - lost
            );
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Session {
    pub(crate) db: Database,
    catalog: Catalog,
    /// This client's id in the `clients` table, registered with its first write.
    client: Option<i64>,
    client_name: String,
    selection: Arc<Selection>,
    handshake: FileHandshake,
    /// Code records read so far, by store id (they never change).
    codes: std::collections::HashMap<i64, Arc<CodeRecord>>,
    /// Open batches, by the thread that opened them. Empty on the hot path.
    batches: HashMap<ThreadId, Batch>,
    batch_size: usize,
    blob_threshold: usize,
}

/// Results recorded inside a batch and not yet committed.
#[derive(Default)]
struct Batch {
    pending: Vec<RecordRequest>,
    /// Indices into `pending` per call, oldest first.
    by_call: HashMap<(FunctionTag, CallId), Vec<usize>>,
    /// Nested `begin_batch` calls: only the outermost commit or abort ends the batch.
    depth: usize,
    /// Results of this batch committed by earlier flushes.
    stored: usize,
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

    /// How this store's clients exclude each other (`posix` in local mode, `lease-dir` in
    /// shared mode unless the store says otherwise).
    pub fn lock_method(&self) -> LockMethod {
        self.session.lock().db.lock_method()
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

    /// Renames the function currently called `from` (every version) to `to`; returns the log
    /// sequence number of the rename, or `None` if it is already called `to` (a retry).
    ///
    /// `from` must be the function's current name (SPEC §2). A name it had before resolves to
    /// it, but renaming from it is refused with [`SchemaError::RenamedSince`], naming who
    /// renamed it since and when, instead of silently undoing their rename. The check runs in
    /// the write transaction that applies the rename, so no other rename can come between.
    pub fn rename_function(&self, from: &str, to: &str) -> Result<Option<u64>, SchemaError> {
        let mut s = self.session.lock();
        s.catch_up()?;
        let family = s
            .catalog
            .resolve_family(from)
            .map(|r| r.into_target().tag)
            .ok_or_else(|| SchemaError::NoSuchFunction(from.to_string()))?;
        let change = SchemaChange::RenameFunction {
            family,
            to: to.to_string(),
        };
        s.apply_checked(&change, Some(from))
    }

    /// Renames the input currently called `from` of one function version to `to`, checked as
    /// [`Store::rename_function`] is.
    pub fn rename_input(
        &self,
        function: FunctionTag,
        from: &str,
        to: &str,
    ) -> Result<Option<u64>, SchemaError> {
        let mut s = self.session.lock();
        s.catch_up()?;
        let catalog = &s.catalog;
        let f = catalog
            .function(function)
            .ok_or(SchemaError::UnknownFunction(function))?;
        let input = catalog
            .resolve_input(f, from)
            .map(|r| r.into_target().tag)
            .ok_or_else(|| SchemaError::NoSuchInput {
                function: format!(
                    "{} version {}",
                    catalog.function_name(function).unwrap_or("?"),
                    f.version
                ),
                input: from.to_string(),
            })?;
        let change = SchemaChange::RenameInput {
            input,
            to: to.to_string(),
        };
        s.apply_checked(&change, Some(from))
    }

    /// Renames the family with this tag (every version) to `to`, whatever it is called now.
    /// The tag names the family, so there is no name to check; code that found the tag by a
    /// name should call [`Store::rename_function`] with that name instead.
    pub fn rename_family(&self, family: FamilyTag, to: &str) -> Result<(), SchemaError> {
        self.apply(&SchemaChange::RenameFunction {
            family,
            to: to.to_string(),
        })
        .map(drop)
    }

    /// Renames the input with this tag to `to`, whatever it is called now (see
    /// [`Store::rename_family`]).
    pub fn rename_input_tag(&self, input: InputTag, to: &str) -> Result<(), SchemaError> {
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

    /// Binds code's interface to the store, as a decorator does at definition time: creates the
    /// function or version if needed, adds new parameters that have defaults as inputs, and
    /// returns the function version, the input tag of each parameter (in order) and notices
    /// (renames, inputs the code lacks). Fails with `IncompatibleSignature` where the code
    /// cannot bind to the version it names.
    pub fn bind_interface(
        &self,
        interface: &Interface,
    ) -> Result<(Function, Vec<InputTag>, Vec<Notice>), SchemaError> {
        let mut s = self.session.lock();
        s.catch_up()?;
        // The plan is made against this session's schema, outside the write lock; each change
        // is validated again under it. If another client changed the schema in between (renamed
        // the function this code names, created the version), a change can be refused although
        // the code binds fine to the schema as it is now: plan again against that schema. Each
        // retry needs someone else's change to have landed, so the loop ends.
        let mut retries = 0;
        let plan = loop {
            let planned_at = s.catalog.seq();
            let plan = s.catalog.plan_interface(interface)?;
            match plan.changes.iter().try_for_each(|c| s.apply(c).map(drop)) {
                Ok(()) => break plan,
                Err(e) => {
                    s.catch_up()?;
                    if s.catalog.seq() == planned_at || retries == BIND_RETRIES {
                        return Err(e);
                    }
                    retries += 1;
                }
            }
        };
        let family = s
            .catalog
            .resolve_family(&interface.name)
            .map(|r| r.into_target().tag)
            .ok_or_else(|| SchemaError::NoSuchFunction(interface.name.clone()))?;
        let catalog = &s.catalog;
        let function = catalog
            .family(family)
            .and_then(|f| f.versions.get(&interface.version))
            .and_then(|t| catalog.function(*t))
            .ok_or_else(|| SchemaError::NoSuchFunction(interface.name.clone()))?;
        let tags = interface
            .parameters
            .iter()
            .map(|p| {
                catalog
                    .resolve_input(function, &p.name)
                    .map(|r| r.into_target().tag)
                    .ok_or_else(|| SchemaError::NoSuchInput {
                        function: interface.name.clone(),
                        input: p.name.clone(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((function.clone(), tags, plan.notices))
    }

    /// Schema log entries after `since`.
    pub fn schema_log(&self, since: u64) -> Result<Vec<LogEntry>, SchemaError> {
        self.session.lock().read_log(since)
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
    ///
    /// The call's ids are re-derived first (a call decoded from a payload may claim any), and
    /// every value must be one the store can read back; otherwise nothing is recorded
    /// ([`CallError::ForgedCallId`], [`CallError::ForgedValueId`],
    /// [`CallError::UnreadableValue`]).
    pub fn record(
        &self,
        call: &BoundCall,
        outputs: Vec<EncodedValue>,
    ) -> Result<RecordOutcome, CallError> {
        self.session
            .lock()
            .record(RecordRequest::without_code(call.clone(), outputs))
    }

    /// Records one result with the code it ran. `sources` are the source texts of the record's
    /// hashes that the store may lack (see [`Store::preflight`]); sending all of them is fine.
    pub fn record_with_code(
        &self,
        call: &BoundCall,
        outputs: Vec<EncodedValue>,
        code: CodeRecord,
        sources: Vec<SourceText>,
    ) -> Result<RecordOutcome, CallError> {
        let request = RecordRequest {
            call: call.clone(),
            outputs,
            code: code.normalized(),
            sources,
        };
        self.session.lock().record(request)
    }

    /// Fails with `NoCommonGeneration` (naming `memotag migrate`), before any I/O, unless this
    /// session can record results with a code record through both `call.record` and
    /// `call.record_batch`: a store not migrated to format generation 5 cannot.
    /// [`Store::record_with_code`] checks the same for each non-empty record; bindings that
    /// always capture code (the Python decorator) ask first.
    pub fn can_record_code(&self) -> Result<(), VersionError> {
        let s = self.session.lock();
        procedures::require_code_records(&s.selection, CALL_RECORD.method)?;
        procedures::require_code_records(&s.selection, CALL_RECORD_BATCH.method)
    }

    /// The canonical outputs of the newest result of this call, whatever code it ran, or `None`.
    pub fn lookup(&self, call: &BoundCall) -> Result<Option<Hit>, CallError> {
        Ok(self.session.lock().lookup(call, None)?.hit)
    }

    /// The newest result of this call whose code `reader` accepts (SPEC §4): its declared
    /// library refs satisfy the reader's policy and, for a strict reader, its own and user code
    /// equal the reader's. A miss says how many results exist under other code.
    pub fn lookup_with(
        &self,
        call: &BoundCall,
        reader: &Arc<Reader>,
    ) -> Result<LookupAnswer, CallError> {
        self.session.lock().lookup(call, Some(reader.clone()))
    }

    // ---- code ---------------------------------------------------------------------------------

    /// Which of these source hashes the store already holds, so that a client sends only the
    /// others. Advisory: the store stores whatever it is sent, once.
    pub fn preflight(&self, hashes: &[String]) -> Result<Vec<String>, CallError> {
        let mut s = self.session.lock();
        let selection = s.selection.clone();
        let db = &mut s.db;
        CODE_PREFLIGHT.call(&selection, &hashes.to_vec(), |hashes| {
            Ok(db.read(|conn| crate::storage::code::held_sources(conn, hashes))?)
        })
    }

    /// The code record with this store id (`Hit::code`, `ResultRow::code`).
    ///
    /// Id 0 is the empty record in every store (results recorded without code, and every result
    /// of a store older than format generation 4): it is answered here, so listing such results
    /// works with a store that does not offer `code.record`.
    pub fn code_record(&self, id: i64) -> Result<Option<CodeRecord>, CallError> {
        if id == 0 {
            return Ok(Some(CodeRecord::default()));
        }
        let mut s = self.session.lock();
        let selection = s.selection.clone();
        let db = &mut s.db;
        CODE_RECORD.call(&selection, &id, |id| {
            Ok(db.snapshot(|conn| crate::storage::code::code_record(conn, *id))?)
        })
    }

    /// A stored source text by hash. memotag never executes it.
    pub fn source(&self, hash: &str) -> Result<Option<String>, CallError> {
        let mut s = self.session.lock();
        let selection = s.selection.clone();
        let db = &mut s.db;
        CODE_SOURCE.call(&selection, &hash.to_string(), |hash| {
            Ok(db.snapshot(|conn| crate::storage::code::source(conn, hash))?)
        })
    }

    /// The libraries and versions the store has seen, with how many results used each.
    pub fn packages(&self) -> Result<Vec<PackageRow>, CallError> {
        let mut s = self.session.lock();
        let functions: Vec<FunctionTag> = s.all_functions()?.into_iter().map(|(t, _)| t).collect();
        let selection = s.selection.clone();
        let db = &mut s.db;
        CODE_PACKAGES.call(&selection, &functions, |functions| {
            Ok(db.read(|conn| -> Result<Vec<PackageRow>, StorageError> {
                let mut out = Vec::new();
                for (library, version, declared, codes) in crate::storage::code::libraries(conn)? {
                    let mut results = 0;
                    for f in functions {
                        let table = memo::memo_table(f);
                        results += crate::storage::code::count_with_codes(conn, &table, &codes)?;
                    }
                    let version = (!version.is_empty()).then_some(version);
                    out.push(PackageRow {
                        library,
                        version,
                        declared,
                        results,
                    });
                }
                Ok(out)
            })?)
        })
    }

    /// Results computed with `library` (at `version`, or any version).
    pub fn results_with(
        &self,
        library: &str,
        version: Option<&str>,
    ) -> Result<Vec<ResultRow>, CallError> {
        let mut s = self.session.lock();
        let request = ResultsWith {
            library: library.to_string(),
            version: version.map(str::to_string),
            functions: s.all_functions()?,
        };
        let selection = s.selection.clone();
        let db = &mut s.db;
        CODE_RESULTS_WITH.call(&selection, &request, |request| {
            Ok(db.read(|conn| -> Result<Vec<ResultRow>, StorageError> {
                let codes: Vec<i64> = crate::storage::code::libraries(conn)?
                    .into_iter()
                    .filter(|(lib, ver, _, _)| {
                        lib == &request.library && request.version.as_ref().is_none_or(|v| v == ver)
                    })
                    .flat_map(|(_, _, _, codes)| codes)
                    .collect();
                let mut out = Vec::new();
                if codes.is_empty() {
                    return Ok(out);
                }
                for (tag, inputs) in &request.functions {
                    let rows = memo::results(conn, tag, inputs, &[], None, None)?;
                    out.extend(rows.into_iter().filter(|r| codes.contains(&r.code)));
                }
                Ok(out)
            })?)
        })
    }

    /// Starts buffering this thread's results: they are visible to this thread's lookups
    /// through this handle and committed in one transaction when the batch ends (or every
    /// `batch_size` results). No lock is held in between.
    ///
    /// A batch belongs to the thread that opened it: other threads using the same handle record
    /// durably at once (or in batches of their own) and do not see its results before it commits.
    ///
    /// Batches nest: an inner `begin_batch`/`commit_batch` (or `abort_batch`) pair is part of
    /// the outer batch, which alone commits or drops the results.
    pub fn begin_batch(&self) {
        let thread = std::thread::current().id();
        let mut s = self.session.lock();
        s.batches.entry(thread).or_default().depth += 1;
    }

    /// Commits this thread's buffered results and stops buffering (for the outermost batch; an
    /// inner one only closes its scope). Buffering stops even when the commit fails: the
    /// [`BatchError`] says how many results of the batch are stored and how many were dropped,
    /// and later records are written directly, never left buffered.
    pub fn commit_batch(&self) -> Result<Vec<RecordOutcome>, CallError> {
        let thread = std::thread::current().id();
        let mut s = self.session.lock();
        match s.batches.get_mut(&thread) {
            Some(batch) if batch.depth > 1 => {
                batch.depth -= 1;
                return Ok(Vec::new());
            }
            None => return Ok(Vec::new()),
            Some(_) => {}
        }
        let outcomes = s.flush_batch(thread, BatchFlush::Commit);
        s.batches.remove(&thread);
        outcomes
    }

    /// Drops this thread's buffered results and stops buffering (for the outermost batch; an
    /// inner one only closes its scope).
    pub fn abort_batch(&self) {
        let thread = std::thread::current().id();
        let mut s = self.session.lock();
        match s.batches.get_mut(&thread) {
            Some(batch) if batch.depth > 1 => batch.depth -= 1,
            _ => {
                s.batches.remove(&thread);
            }
        }
    }

    /// Commits the results buffered in every thread's open batch now; the batches stay open.
    /// Returns how many results were committed. On failure, the [`BatchError`] says how many
    /// were stored, and the others stay buffered.
    pub fn flush_batches(&self) -> Result<usize, CallError> {
        self.session.lock().flush_all_batches()
    }

    /// Commits the results buffered in every thread's open batch, then closes the store. If
    /// they cannot be committed, the store is returned, still open and with the results still
    /// buffered, with the error (so that nothing is dropped without the caller deciding so).
    /// Dropping a store does the same, but can only report a failure on stderr.
    #[allow(clippy::result_large_err)]
    pub fn close(self) -> Result<(), (Store, CallError)> {
        match self.flush_batches() {
            Ok(_) => Ok(()),
            Err(e) => Err((self, e)),
        }
    }

    /// Runs `f` inside a batch (this thread's); commits if it returns `Ok`, drops the batch
    /// otherwise.
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

    /// Copies the store, as it is now, to a new store at `dest` (SQLite's online backup; see
    /// `memotag backup`): one consistent view, with the value files it references, of the same
    /// mode and `store_id`. Other clients go on writing meanwhile (in shared mode they wait for
    /// the copy, which holds the lock). Results still buffered in open batches are not committed
    /// and so not copied. An existing `dest` is refused with [`BackupError::DestinationExists`].
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<BackupReport, BackupError> {
        self.session.lock().db.backup(dest.as_ref(), false)
    }

    /// [`Store::backup`], replacing `dest` if it exists (never one a client has open).
    pub fn backup_overwriting(&self, dest: impl AsRef<Path>) -> Result<BackupReport, BackupError> {
        self.session.lock().db.backup(dest.as_ref(), true)
    }

    // ---- values and queries -------------------------------------------------------------------

    /// A stored value by id.
    pub fn value(&self, id: &ValueId) -> Result<Option<EncodedValue>, CallError> {
        let mut s = self.session.lock();
        let selection = s.selection.clone();
        let db = &mut s.db;
        VALUE_GET.call(&selection, id, |id| {
            let blobs = db.blobs.clone();
            Ok(db.snapshot(|conn| memo::get_value(conn, &blobs, id))?)
        })
    }

    /// The short human preview of a stored value.
    pub fn preview(&self, id: &ValueId) -> Result<Option<String>, CallError> {
        match self.session.lock().query(&Query::Preview { value: *id })? {
            Answer::Preview(p) => Ok(p),
            other => Err(unexpected(other)),
        }
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
        let filter = filter.iter().map(|(t, v)| (*t, v.id())).collect();
        rows(s.query(&Query::Results {
            function,
            inputs,
            filter,
            limit,
        })?)
    }

    /// Every result recorded for one call id, in any function version.
    pub fn results_of_call(&self, call_id: &CallId) -> Result<Vec<ResultRow>, CallError> {
        let mut s = self.session.lock();
        let functions = s.all_functions()?;
        rows(s.query(&Query::OfCall {
            call_id: *call_id,
            functions,
        })?)
    }

    /// Every result whose outputs include this value.
    pub fn producers(&self, value: &ValueId) -> Result<Vec<ResultRow>, CallError> {
        let mut s = self.session.lock();
        let functions = s.all_functions()?;
        rows(s.query(&Query::Producers {
            value: *value,
            functions,
        })?)
    }

    /// Results recorded again with other outputs (the canonical ones stay in the memo tables).
    pub fn conflicts(&self, function: Option<FunctionTag>) -> Result<Vec<ConflictRow>, CallError> {
        match self.session.lock().query(&Query::Conflicts { function })? {
            Answer::Conflicts(rows) => Ok(rows),
            other => Err(unexpected(other)),
        }
    }

    /// How many results a function version has.
    pub fn count_results(&self, function: FunctionTag) -> Result<u64, CallError> {
        match self.session.lock().query(&Query::Count { function })? {
            Answer::Count(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// Moves committed results from the write-ahead log into the store file and truncates the
    /// log (local mode), e.g. before measuring or copying the file. (File maintenance.)
    pub fn checkpoint(&self) -> Result<(), StorageError> {
        self.session.lock().db.checkpoint()
    }

    /// `PRAGMA integrity_check` of the file: `["ok"]` when healthy. (File maintenance, not a
    /// store procedure: it never goes to a server.)
    pub fn integrity_check(&self) -> Result<Vec<String>, StorageError> {
        self.session.lock().db.integrity_check()
    }

    // ---- versions -----------------------------------------------------------------------------

    /// What this session negotiated: protocol, both library versions, both menus, the chosen
    /// generation per method, and the file's compatibility levels.
    pub fn session_info(&self) -> SessionInfo {
        let s = self.session.lock();
        SessionInfo {
            protocol: PROTOCOL,
            local_library: LIBRARY_VERSION.to_string(),
            store_library: s.handshake.library_version.clone(),
            selected: s.selection.chosen.clone(),
            local_menu: s.selection.local.clone(),
            store_menu: s.handshake.menu.clone(),
            read_level: s.handshake.read_level,
            write_level: s.handshake.write_level,
            format_generation: s.handshake.generation,
        }
    }

    /// The generation this session uses for `method`: fails with `UnknownMethod` for a method
    /// nobody declared and `NoCommonGeneration` for one left out of the negotiated menu.
    pub fn generation(&self, method: &str) -> Result<u32, VersionError> {
        self.session.lock().selection.generation(method)
    }

    /// Moves the store at `path` forward to this build's format generation and procedure menu.
    /// Explicit and forward-only: opening never migrates, and a newer store is refused.
    pub fn migrate(
        path: impl AsRef<Path>,
    ) -> Result<crate::storage::maintenance::MigrateOutcome, OpenError> {
        crate::storage::maintenance::migrate(path.as_ref(), Duration::from_secs(60), now_ms())
    }
}

/// What a session negotiated with its store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub protocol: u32,
    pub local_library: String,
    pub store_library: Option<String>,
    pub selected: std::collections::BTreeMap<String, u32>,
    pub local_menu: Menu,
    pub store_menu: Menu,
    pub read_level: u32,
    pub write_level: u32,
    pub format_generation: u32,
}

fn rows(answer: Answer) -> Result<Vec<ResultRow>, CallError> {
    match answer {
        Answer::Results(rows) => Ok(rows),
        other => Err(unexpected(other)),
    }
}

fn unexpected(answer: Answer) -> CallError {
    CallError::Storage(StorageError::Corrupt(format!(
        "unexpected answer to a query: {answer:?}"
    )))
}

impl Session {
    /// Log entries after `since`, through the `schema.log` procedure.
    fn read_log(&mut self, since: u64) -> Result<Vec<LogEntry>, SchemaError> {
        let db = &mut self.db;
        SCHEMA_LOG.call(&self.selection, &since, |since| {
            Ok(db.read(|conn| crate::storage::catalog::read_log(conn, *since))?)
        })
    }

    /// Applies log entries this session has not seen yet.
    fn catch_up(&mut self) -> Result<(), SchemaError> {
        for entry in self.read_log(self.catalog.seq())? {
            self.catalog.apply(entry.seq, &entry.change)?;
        }
        Ok(())
    }

    fn catch_up_calls(&mut self) -> Result<(), CallError> {
        self.catch_up().map_err(|e| match e {
            SchemaError::Storage(s) => CallError::Storage(s),
            SchemaError::Version(v) => CallError::Version(v),
            other => CallError::Storage(StorageError::Corrupt(other.to_string())),
        })
    }

    /// This client's id, registering it on first use.
    fn client_id(&mut self) -> Result<i64, StorageError> {
        if let Some(id) = self.client {
            return Ok(id);
        }
        let id = self.db.client_id(&self.client_name)?;
        self.client = Some(id);
        Ok(id)
    }

    fn apply(&mut self, change: &SchemaChange) -> Result<Option<u64>, SchemaError> {
        self.apply_checked(change, None)
    }

    /// Applies `change`; for a rename, `from` is the name the caller named the function or
    /// input by, checked ([`Catalog::check_rename_from`]) against the schema as it is under the
    /// write lock, in the transaction that applies the change. The name travels no further than
    /// this session: the check is made here, between reading the log and appending to it, while
    /// no other client can write, so no rename can come between the check and the change.
    fn apply_checked(
        &mut self,
        change: &SchemaChange,
        from: Option<&str>,
    ) -> Result<Option<u64>, SchemaError> {
        if self.db.is_read_only() {
            return Err(self.db.read_only_error().into());
        }
        let selection = self.selection.clone();
        let client = self.client_id()?;
        let catalog = &mut self.catalog;
        let db = &mut self.db;
        SCHEMA_CHANGE.call(&selection, change, |change| {
            let values = change_values(change);
            // A default the store could not read back would poison every call that omits it.
            for value in &values {
                value.check()?;
            }
            let (next, seq) = db.write(|conn| {
                // Catch up under the write lock, so the change is validated against the schema
                // as it is now, not as this client last saw it.
                let mut next = catalog.clone();
                for entry in crate::storage::catalog::read_log(conn, next.seq())? {
                    next.apply(entry.seq, &entry.change)?;
                }
                let planned = match from {
                    Some(from) => next.check_rename_from(change, from),
                    None => Ok(()),
                }
                .and_then(|()| next.plan(change, &mut Uuid::new_v4));
                let planned = match planned {
                    Err(SchemaError::RenamedSince {
                        what,
                        name,
                        now,
                        mut since,
                    }) => {
                        name_renamer(conn, &mut since)?;
                        return Err(SchemaError::RenamedSince {
                            what,
                            name,
                            now,
                            since,
                        });
                    }
                    Err(SchemaError::FormerInputName {
                        function,
                        name,
                        now,
                        mut since,
                    }) => {
                        name_renamer(conn, &mut since)?;
                        return Err(SchemaError::FormerInputName {
                            function,
                            name,
                            now,
                            since,
                        });
                    }
                    other => other?,
                };
                let seq = match planned {
                    Plan::AlreadyApplied => None,
                    Plan::Apply(logged) => {
                        let seq = next.seq() + 1;
                        crate::storage::catalog::append(
                            conn,
                            seq,
                            &logged,
                            &values,
                            client,
                            now_ms(),
                        )?;
                        next.apply(seq, &logged)?;
                        Some(seq)
                    }
                };
                Ok::<_, SchemaError>((next, seq))
            })?;
            *catalog = next;
            Ok(seq)
        })
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

    fn all_functions(&mut self) -> Result<Vec<(FunctionTag, Vec<InputTag>)>, CallError> {
        self.catch_up_calls()?;
        Ok(self
            .catalog
            .functions()
            .map(|f| (f.tag, f.inputs.iter().map(|i| i.tag).collect()))
            .collect())
    }

    fn bind(
        &mut self,
        function: FunctionTag,
        inputs: Vec<(InputTag, EncodedValue)>,
    ) -> Result<BoundCall, CallError> {
        let (f, name) = self.function_knowing(function, &inputs)?;
        calls::bind(f, name, inputs)
    }

    /// The function version and its name, caught up with the log if `inputs` name an input
    /// this session has not seen yet (the caller may know a newer schema).
    fn function_knowing(
        &mut self,
        function: FunctionTag,
        inputs: &[(InputTag, EncodedValue)],
    ) -> Result<(&Function, &str), CallError> {
        let f = self.function(function)?;
        let known = inputs.iter().all(|(tag, _)| f.input(*tag).is_some());
        if !known {
            self.catch_up_calls()?;
        }
        self.function(function)?;
        let f = self.catalog.function(function).expect("found above");
        let name = self.catalog.function_name(function).unwrap_or("?");
        Ok((f, name))
    }

    /// Re-derives the ids of a call that `bind` did not make here (see [`calls::rederive`]).
    fn rederive(&mut self, call: &BoundCall) -> Result<(), CallError> {
        let (f, name) = self.function_knowing(call.function(), call.inputs())?;
        calls::rederive(f, name, call)
    }

    fn record(&mut self, request: RecordRequest) -> Result<RecordOutcome, CallError> {
        if self.db.is_read_only() {
            return Err(self.db.read_only_error().into());
        }
        if !request.code.is_empty() {
            // Refused here, before anything is buffered or written: in a batch the failure would
            // otherwise come at the flush and take the batch's other results with it.
            let method = match own_batch(&mut self.batches) {
                Some(_) => CALL_RECORD_BATCH.method,
                None => CALL_RECORD.method,
            };
            procedures::require_code_records(&self.selection, method)?;
        }
        self.check_outputs(request.call.function(), request.outputs.len())?;
        // Ids are re-derived on every record, however the call was made; and nothing is stored
        // that could not be read back.
        let (f, name) = self.function_knowing(request.call.function(), request.call.inputs())?;
        calls::rederive(f, name, &request.call)?;
        calls::check_values(f, name, &request.call, &request.outputs)?;
        if let Some((thread, batch)) = own_batch(&mut self.batches) {
            let key = (request.call.function(), request.call.call_id());
            batch
                .by_call
                .entry(key)
                .or_default()
                .push(batch.pending.len());
            batch.pending.push(request);
            if batch.pending.len() >= self.batch_size {
                self.flush_batch(thread, BatchFlush::AutoFlush)?;
            }
            return Ok(RecordOutcome::Buffered);
        }
        let selection = self.selection.clone();
        let client = self.client_id()?;
        let threshold = self.blob_threshold;
        let db = &mut self.db;
        let blobs = db.blobs.clone();
        CALL_RECORD.call(&selection, &request, |request| {
            db.write(|conn| {
                let sink = BlobSink {
                    blobs: &blobs,
                    threshold,
                };
                Ok::<_, CallError>(insert_request(conn, &sink, request, client, now_ms())?)
            })
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

    /// Commits the buffered results of `thread`'s batch in one transaction. On failure they
    /// are all still buffered, and the error says so as `flush` goes on to report it.
    fn flush_batch(
        &mut self,
        thread: ThreadId,
        flush: BatchFlush,
    ) -> Result<Vec<RecordOutcome>, CallError> {
        let Some(batch) = self.batches.get(&thread) else {
            return Ok(Vec::new());
        };
        if batch.pending.is_empty() {
            return Ok(Vec::new());
        }
        let (stored, not_stored) = (batch.stored, batch.pending.len());
        let not_stored = |cause: CallError| {
            CallError::from(BatchError {
                flush,
                stored,
                not_stored,
                cause: Box::new(cause),
            })
        };
        // Before the results leave the batch: if this fails, they are all still buffered.
        let client = self
            .client_id()
            .map_err(|e| not_stored(CallError::from(e)))?;
        let batch = self.batches.get_mut(&thread).expect("checked above");
        let pending = std::mem::take(&mut batch.pending);
        let selection = self.selection.clone();
        let threshold = self.blob_threshold;
        let db = &mut self.db;
        let blobs = db.blobs.clone();
        let result = CALL_RECORD_BATCH.call(&selection, &pending, |pending| {
            db.write(|conn| {
                let sink = BlobSink {
                    blobs: &blobs,
                    threshold,
                };
                let time = now_ms();
                let mut outcomes = Vec::with_capacity(pending.len());
                for request in pending {
                    outcomes.push(insert_request(conn, &sink, request, client, time)?);
                }
                Ok::<_, CallError>(outcomes)
            })
        });
        let batch = self.batches.get_mut(&thread).expect("batch checked above");
        match result {
            Ok(outcomes) => {
                batch.by_call.clear();
                batch.stored += outcomes.len();
                Ok(outcomes)
            }
            Err(e) => {
                // Keep the results so that the caller can retry the commit.
                batch.pending = pending;
                Err(not_stored(e))
            }
        }
    }

    /// Commits every open batch's buffered results (for closing); the batches stay open.
    fn flush_all_batches(&mut self) -> Result<usize, CallError> {
        let threads: Vec<ThreadId> = self.batches.keys().copied().collect();
        let mut stored = 0;
        for (i, thread) in threads.iter().enumerate() {
            match self.flush_batch(*thread, BatchFlush::Close) {
                Ok(outcomes) => stored += outcomes.len(),
                Err(CallError::Batch(e)) => {
                    let not_stored = threads[i..]
                        .iter()
                        .filter_map(|t| self.batches.get(t))
                        .map(|b| b.pending.len())
                        .sum();
                    return Err(BatchError {
                        flush: BatchFlush::Close,
                        stored,
                        not_stored,
                        cause: e.cause,
                    }
                    .into());
                }
                Err(other) => return Err(other),
            }
        }
        Ok(stored)
    }

    /// How many results are buffered in open batches, and in how many batches.
    fn buffered(&self) -> (usize, usize) {
        let results = self.batches.values().map(|b| b.pending.len()).sum();
        let batches = self
            .batches
            .values()
            .filter(|b| !b.pending.is_empty())
            .count();
        (results, batches)
    }

    fn lookup(
        &mut self,
        call: &BoundCall,
        reader: Option<Arc<Reader>>,
    ) -> Result<LookupAnswer, CallError> {
        if !call.is_derived() {
            // A claimed call id never hits: it is checked before anything is read.
            self.rederive(call)?;
        }
        let outputs_count = self.function(call.function())?.outputs.len();
        // This thread's buffered results of this call, oldest first.
        let buffered: Vec<&RecordRequest> = match own_batch(&mut self.batches) {
            Some((_, batch)) => batch
                .by_call
                .get(&(call.function(), call.call_id()))
                .into_iter()
                .flatten()
                .map(|&i| &batch.pending[i])
                .collect(),
            None => Vec::new(),
        };
        let request = LookupRequest {
            call: call.clone(),
            reader,
        };
        let db = &mut self.db;
        let blobs = db.blobs.clone();
        let codes = &mut self.codes;
        CALL_LOOKUP.call(&self.selection, &request, |request| {
            db.snapshot(|conn| {
                let mut answer = LookupAnswer::default();
                let results =
                    memo::call_results(conn, &request.call.function(), &request.call.call_id())?;
                if !buffered.is_empty() {
                    if let Some(answer) =
                        buffered_answer(conn, codes, &results, &buffered, &request.reader)?
                    {
                        return Ok(answer);
                    }
                }
                for (seq, code, output_ids) in results {
                    if output_ids.len() != outputs_count {
                        return Err(StorageError::Corrupt(format!(
                            "result {seq} of {} has {} outputs, its function {outputs_count}: the store is damaged (run `memotag check`)",
                            memo::memo_table(&request.call.function()),
                            output_ids.len()
                        ))
                        .into());
                    }
                    if let Some(reader) = &request.reader {
                        let record = cached_code_record(conn, codes, seq, code)?;
                        match judge(reader, &record) {
                            Verdict::Reject(_) => {
                                answer.other_code += 1;
                                continue;
                            }
                            Verdict::Accept { changed } => answer.changed = changed,
                        }
                    }
                    let mut outputs = Vec::with_capacity(output_ids.len());
                    for id in &output_ids {
                        let value = memo::get_value(conn, &blobs, id)?
                            .ok_or(CallError::MissingValue(*id))?;
                        outputs.push(value);
                    }
                    answer.hit = Some(Hit {
                        seq,
                        code,
                        output_ids,
                        outputs,
                    });
                    break;
                }
                if answer.hit.is_some() {
                    answer.other_code = 0;
                }
                Ok(answer)
            })
        })
    }

    fn query(&mut self, query: &Query) -> Result<Answer, CallError> {
        let db = &mut self.db;
        CALL_QUERY.call(&self.selection, query, |query| {
            Ok(db.read(|conn| -> Result<Answer, StorageError> {
                Ok(match query {
                    Query::Results {
                        function,
                        inputs,
                        filter,
                        limit,
                    } => Answer::Results(memo::results(
                        conn, function, inputs, filter, None, *limit,
                    )?),
                    Query::OfCall { call_id, functions } => {
                        let mut out = Vec::new();
                        for (tag, inputs) in functions {
                            out.extend(memo::results(conn, tag, inputs, &[], Some(call_id), None)?);
                        }
                        Answer::Results(out)
                    }
                    Query::Producers { value, functions } => {
                        let mut out = Vec::new();
                        for (tag, inputs) in functions {
                            out.extend(memo::producers(conn, tag, inputs, value)?);
                        }
                        Answer::Results(out)
                    }
                    Query::Conflicts { function } => {
                        Answer::Conflicts(memo::conflicts(conn, function.as_ref())?)
                    }
                    Query::Count { function } => {
                        Answer::Count(memo::count_results(conn, function)?)
                    }
                    Query::Preview { value } => Answer::Preview(memo::value_preview(conn, value)?),
                })
            })?)
        })
    }
}

/// The calling thread's open batch, if it has one; cheap when no batch is open (the hot path).
fn own_batch(batches: &mut HashMap<ThreadId, Batch>) -> Option<(ThreadId, &mut Batch)> {
    if batches.is_empty() {
        return None;
    }
    let thread = std::thread::current().id();
    batches.get_mut(&thread).map(|batch| (thread, batch))
}

/// A code record by store id, read once per session (records never change).
fn cached_code_record(
    conn: &rusqlite::Connection,
    codes: &mut HashMap<i64, Arc<CodeRecord>>,
    seq: i64,
    code: i64,
) -> Result<Arc<CodeRecord>, StorageError> {
    if let Some(record) = codes.get(&code) {
        return Ok(record.clone());
    }
    let record = crate::storage::code::code_record(conn, code)?.ok_or_else(|| {
        StorageError::Corrupt(format!("result {seq} refers to missing code record {code}"))
    })?;
    let record = Arc::new(record);
    codes.insert(code, record.clone());
    Ok(record)
}

/// Inside a batch, a lookup answers as it would once the batch is committed: a buffered result
/// whose call and code already have a committed result (or an earlier buffered one) will be a
/// conflict, so the canonical outputs win over it; a buffered result under new code will be the
/// newest. Returns the newest acceptable buffered result that will be canonical, if any;
/// otherwise the committed results answer.
fn buffered_answer(
    conn: &rusqlite::Connection,
    codes: &mut HashMap<i64, Arc<CodeRecord>>,
    committed: &[(i64, i64, Vec<ValueId>)],
    buffered: &[&RecordRequest],
    reader: &Option<Arc<Reader>>,
) -> Result<Option<LookupAnswer>, StorageError> {
    let mut taken: HashSet<CodeHash> = HashSet::with_capacity(committed.len() + buffered.len());
    for (seq, code, _) in committed {
        taken.insert(cached_code_record(conn, codes, *seq, *code)?.hash());
    }
    let canonical: Vec<&RecordRequest> = buffered
        .iter()
        .copied()
        .filter(|pending| taken.insert(pending.code.hash()))
        .collect();
    for pending in canonical.into_iter().rev() {
        let changed = match reader.as_ref().map(|r| judge(r, &pending.code)) {
            Some(Verdict::Reject(_)) => continue,
            Some(Verdict::Accept { changed }) => changed,
            None => Vec::new(),
        };
        let outputs = pending.outputs.clone();
        let hit = Hit {
            seq: 0,
            code: -1,
            output_ids: outputs.iter().map(EncodedValue::id).collect(),
            outputs,
        };
        return Ok(Some(LookupAnswer {
            hit: Some(hit),
            other_code: 0,
            changed,
        }));
    }
    Ok(None)
}

/// Stores one record request: its sources, its code record, then the result.
fn insert_request(
    conn: &rusqlite::Connection,
    sink: &BlobSink<'_>,
    request: &RecordRequest,
    client: i64,
    time_ms: i64,
) -> Result<RecordOutcome, StorageError> {
    crate::storage::code::put_sources(conn, &request.sources)?;
    let code = crate::storage::code::code_id(conn, &request.code)?;
    memo::insert_result(
        conn,
        sink,
        &request.call,
        code,
        &request.outputs,
        client,
        time_ms,
    )
}

/// How many times [`Store::bind_interface`] plans again after other clients changed the schema
/// under it.
const BIND_RETRIES: usize = 16;

/// Fills in who made a rename and when, from its log entry.
fn name_renamer(conn: &rusqlite::Connection, since: &mut RenameRecord) -> Result<(), StorageError> {
    if let Some(entry) = crate::storage::catalog::read_entry(conn, since.seq)? {
        since.client = Some(entry.client);
        since.time_ms = Some(entry.time_ms);
    }
    Ok(())
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

/// `user@host`: the login name (environment, else the password database) and `gethostname`.
fn default_client_name() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .or_else(|_| std::env::var("USERNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(login_name)
        .unwrap_or_else(|| "unknown".to_string());
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

/// The name of the current uid in the password database.
fn login_name() -> Option<String> {
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r fills `pwd` with pointers into `buf`, which outlives their use here.
    let rc = unsafe {
        libc::getpwuid_r(
            libc::getuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}
