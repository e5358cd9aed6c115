//! `memotag._memotag`: the Python binding of the memotag core. Conversions, error mapping and the
//! hot path of a decorated call (binding, encoding, hashing, lookup, decoding); every store rule
//! lives in the core crate.

// Tuples are how rows cross into Python; naming each shape would not make them clearer.
#![allow(clippy::type_complexity)]

mod convert;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use memotag::{
    BackupError, CallError, CodeRecord, Error, FunctionTag, InputTag, Interface, Mode, Notice,
    OpenError, OpenOptions, Parameter, Policy, Reader, RecordOutcome, SchemaError, SourceText,
    StorageError, Store,
};
use parking_lot::Mutex;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};

/// Bumped in a forked child (via `os.register_at_fork`): every store reopens its connection.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Set by a SIGINT handler chained before Python's; cleared when an operation starts, so that
/// only a Ctrl-C during that operation ends its lock waits.
static SIGINT_SEEN: std::sync::OnceLock<Arc<std::sync::atomic::AtomicBool>> =
    std::sync::OnceLock::new();

/// Registers the flag (once). signal-hook chains to the handler that was there (Python's), so
/// Python still raises KeyboardInterrupt as usual.
fn watch_sigint() {
    SIGINT_SEEN.get_or_init(|| {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, flag.clone());
        flag
    });
}

fn sigint_seen() -> bool {
    SIGINT_SEEN.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

#[pyfunction]
fn _after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
}

// ---- errors ----------------------------------------------------------------------------------

static ERRORS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// A class from `memotag._errors` (exceptions and warnings are defined in Python).
fn error_class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    let module = ERRORS.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        Ok(py.import("memotag._errors")?.into_any().unbind())
    })?;
    Ok(module.bind(py).getattr(name)?.cast_into::<PyType>()?)
}

fn raise(py: Python<'_>, class: &str, message: String) -> PyErr {
    match error_class(py, class) {
        Ok(cls) => PyErr::from_type(cls, message),
        Err(e) => e,
    }
}

/// `ValueNotStorable` for `what` (e.g. "argument `x` of f()"), caused by the encoder's error.
/// Errors that are not exceptions (KeyboardInterrupt) pass through.
fn not_storable(py: Python<'_>, what: &str, e: PyErr) -> PyErr {
    wrap_value_error(
        py,
        "ValueNotStorable",
        format!("{what} cannot be stored"),
        e,
    )
}

/// `ValueNotReadable` for `what` (e.g. "the output `y` of f()") in the store at `path`.
fn not_readable(py: Python<'_>, what: &str, path: &str, e: PyErr) -> PyErr {
    wrap_value_error(
        py,
        "ValueNotReadable",
        format!("{what} in {path} cannot be read back"),
        e,
    )
}

fn wrap_value_error(py: Python<'_>, class: &str, message: String, e: PyErr) -> PyErr {
    if !e.is_instance_of::<PyException>(py) || e.is_instance(py, &error_class_or_base(py)) {
        return e;
    }
    let cause = match e.value(py).str() {
        Ok(text) => format!(
            "{}: {text}",
            e.get_type(py)
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ),
        Err(_) => e.get_type(py).to_string(),
    };
    let err = raise(py, class, format!("{message} ({cause})"));
    err.set_cause(py, Some(e));
    err
}

/// `MemotagError` (a memotag error already says what happened: it is not wrapped again).
fn error_class_or_base<'py>(py: Python<'py>) -> Bound<'py, PyAny> {
    match error_class(py, "MemotagError") {
        Ok(cls) => cls.into_any(),
        Err(_) => py.get_type::<PyException>().into_any(),
    }
}

fn warn(py: Python<'_>, class: &str, message: &str) -> PyResult<()> {
    let cls = error_class(py, class)?;
    PyErr::warn(
        py,
        &cls,
        &std::ffi::CString::new(message).unwrap_or_default(),
        2,
    )
}

fn storage_error(py: Python<'_>, e: &StorageError) -> PyErr {
    if let StorageError::Interrupted = e {
        // Python's own SIGINT handler ran too: raise its KeyboardInterrupt.
        if let Err(pending) = py.check_signals() {
            return pending;
        }
    }
    match e {
        StorageError::ReadOnly { .. } | StorageError::JournalNeedsWriter { .. } => {
            raise(py, "ReadOnlyStore", e.to_string())
        }
        StorageError::LockTimeout { .. } => raise(py, "StoreLocked", e.to_string()),
        StorageError::CorruptValue { .. } | StorageError::CorruptBlob { .. } => {
            raise(py, "CorruptValue", e.to_string())
        }
        _ if e.is_busy() => raise(py, "StoreLocked", e.to_string()),
        _ => raise(py, "MemotagError", e.to_string()),
    }
}

fn open_error(py: Python<'_>, e: OpenError) -> PyErr {
    match &e {
        OpenError::NotAStore { .. } | OpenError::Truncated { .. } => {
            raise(py, "NotAStore", e.to_string())
        }
        OpenError::NotFound { .. } | OpenError::EmptyPath | OpenError::FolderMissing { .. } => {
            raise(py, "NotAStore", e.to_string())
        }
        OpenError::NewerFormat { .. } | OpenError::Version(_) => {
            raise(py, "VersionError", e.to_string())
        }
        OpenError::ModeMismatch { .. } | OpenError::LockMethodMismatch { .. } => {
            raise(py, "MemotagError", e.to_string())
        }
        OpenError::Storage(s) => storage_error(py, s),
    }
}

fn schema_error(py: Python<'_>, e: SchemaError) -> PyErr {
    match &e {
        SchemaError::IncompatibleSignature { .. } => {
            raise(py, "IncompatibleSignature", e.to_string())
        }
        SchemaError::Storage(s) => storage_error(py, s),
        SchemaError::Version(_) => raise(py, "VersionError", e.to_string()),
        SchemaError::NoSuchFunction(_)
        | SchemaError::NoSuchVersion { .. }
        | SchemaError::NoSuchInput { .. } => raise(py, "MemotagError", e.to_string()),
        _ => raise(py, "SchemaConflict", e.to_string()),
    }
}

fn call_error(py: Python<'_>, e: CallError) -> PyErr {
    if let CallError::Batch(batch) = e {
        return batch_error(py, batch);
    }
    match &e {
        CallError::Storage(s) => storage_error(py, s),
        CallError::Version(_) => raise(py, "VersionError", e.to_string()),
        _ => raise(py, "MemotagError", e.to_string()),
    }
}

fn backup_error(py: Python<'_>, e: BackupError) -> PyErr {
    match e {
        BackupError::Open(e) => open_error(py, e),
        BackupError::Failed { ref source, .. } if source.is_busy() => {
            raise(py, "StoreLocked", e.to_string())
        }
        other => raise(py, "MemotagError", other.to_string()),
    }
}

/// `BatchNotStored`, with how many results were and were not stored, and the cause as
/// `__cause__`.
fn batch_error(py: Python<'_>, e: memotag::BatchError) -> PyErr {
    let err = raise(py, "BatchNotStored", e.to_string());
    let value = err.value(py);
    let set = value
        .setattr("stored", e.stored)
        .and_then(|()| value.setattr("not_stored", e.not_stored))
        .and_then(|()| value.setattr("still_buffered", e.still_buffered()));
    if let Err(failed) = set {
        return failed;
    }
    err.set_cause(py, Some(call_error(py, *e.cause)));
    err
}

#[allow(dead_code)]
fn any_error(py: Python<'_>, e: Error) -> PyErr {
    match e {
        Error::Open(e) => open_error(py, e),
        Error::Schema(e) => schema_error(py, e),
        Error::Call(e) => call_error(py, e),
        Error::Storage(e) => storage_error(py, &e),
    }
}

// ---- the store -------------------------------------------------------------------------------

/// An open memotag store.
#[pyclass(module = "memotag._memotag", name = "Store", subclass, frozen)]
pub struct PyStore {
    path: String,
    options: OpenOptions,
    state: Mutex<StoreState>,
    policy: Policy,
    verify_source_hash: bool,
}

struct StoreState {
    store: Option<Arc<Store>>,
    generation: u64,
}

impl StoreState {
    /// Drops the connection, unless it was inherited through a fork: closing the parent's
    /// SQLite handle in a child could checkpoint or delete a WAL the parent is using.
    fn release(&mut self) {
        if let Some(store) = self.store.take() {
            if self.generation != FORK_GENERATION.load(Ordering::Relaxed) {
                std::mem::forget(store);
            }
        }
    }
}

impl Drop for StoreState {
    fn drop(&mut self) {
        self.release();
    }
}

impl PyStore {
    /// The open store, reopened after a fork (the parent's connection is never used or closed
    /// in the child: closing it could checkpoint or delete a WAL the parent is using).
    fn store(&self, py: Python<'_>) -> PyResult<Arc<Store>> {
        if let Some(flag) = SIGINT_SEEN.get() {
            flag.store(false, Ordering::Relaxed);
        }
        let mut state = self.state.lock();
        let generation = FORK_GENERATION.load(Ordering::Relaxed);
        if state.generation != generation {
            if let Some(inherited) = state.store.take() {
                std::mem::forget(inherited);
                let reopened = self
                    .options
                    .open(&self.path)
                    .map_err(|e| open_error(py, e))?;
                state.store = Some(Arc::new(reopened));
            }
            state.generation = generation;
        }
        state.store.clone().ok_or_else(|| {
            raise(
                py,
                "MemotagError",
                format!("the store {} is closed", self.path),
            )
        })
    }
}

fn parse_mode(py: Python<'_>, mode: &str) -> PyResult<Option<Mode>> {
    match mode {
        "auto" => Ok(None),
        other => other
            .parse::<Mode>()
            .map(Some)
            .map_err(|e| raise(py, "MemotagError", e)),
    }
}

#[pymethods]
impl PyStore {
    #[new]
    #[pyo3(signature = (path, mode = "auto", policy = "exact", verify_source_hash = true, readonly = false, *, lock_lease = None, busy_timeout = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: std::path::PathBuf,
        mode: &str,
        policy: &str,
        verify_source_hash: bool,
        readonly: bool,
        lock_lease: Option<f64>,
        busy_timeout: Option<f64>,
    ) -> PyResult<Self> {
        let seconds = |what: &str, v: f64| -> PyResult<std::time::Duration> {
            std::time::Duration::try_from_secs_f64(v).map_err(|_| {
                PyValueError::new_err(format!("{what} must be a non-negative number of seconds"))
            })
        };
        let policy: Policy = policy.parse().map_err(PyValueError::new_err)?;
        // Ctrl-C while another process holds the store ends the wait. The wait may run with the
        // GIL released and the store's session locked, so it must not take the GIL (another
        // thread may hold it while waiting for the session): it reads a flag that a chained
        // SIGINT handler sets, and Python's own handler still runs and raises KeyboardInterrupt
        // once the call returns.
        let interrupt: memotag::storage::lock::Interrupt = Arc::new(sigint_seen);
        let mut options = OpenOptions::new().read_only(readonly).interrupt(interrupt);
        if let Some(lease) = lock_lease {
            options = options.lock_lease(seconds("lock_lease", lease)?);
        }
        if let Some(wait) = busy_timeout {
            options = options.busy_timeout(seconds("busy_timeout", wait)?);
        }
        if let Some(mode) = parse_mode(py, mode)? {
            options = options.mode(mode);
        }
        let path_str = path.to_string_lossy().into_owned();
        let store = py
            .detach(|| options.open(&path))
            .map_err(|e| open_error(py, e))?;
        Ok(PyStore {
            path: path_str,
            options,
            policy,
            verify_source_hash,
            state: Mutex::new(StoreState {
                store: Some(Arc::new(store)),
                generation: FORK_GENERATION.load(Ordering::Relaxed),
            }),
        })
    }

    /// The path of the store file.
    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    /// `"local"` or `"shared"`.
    #[getter]
    fn mode(&self, py: Python<'_>) -> PyResult<&'static str> {
        Ok(self.store(py)?.mode().as_str())
    }

    #[getter]
    fn readonly(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.store(py)?.is_read_only())
    }

    #[getter]
    fn closed(&self) -> bool {
        self.state.lock().store.is_none()
    }

    /// Commits the results buffered in every thread's open batch, then closes the connection.
    /// If they cannot be committed, raises `BatchNotStored` and stays open, the results still
    /// buffered. In a forked child the inherited connection is never closed (it belongs to the
    /// parent, and so do its batches): it is let go of instead.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let store = {
            let mut state = self.state.lock();
            match &state.store {
                Some(store) if state.generation == FORK_GENERATION.load(Ordering::Relaxed) => {
                    store.clone()
                }
                _ => {
                    state.release();
                    return Ok(());
                }
            }
        };
        py.detach(|| store.flush_batches())
            .map_err(|e| call_error(py, e))?;
        self.state.lock().release();
        // Results that other threads buffered meanwhile are committed when the last user of
        // the store lets go of it.
        py.detach(move || drop(store));
        Ok(())
    }

    /// Copies the store as it is now to a new store at `dest` (SQLite's online backup: one
    /// consistent view, with its value files, renamed into place only when complete). Returns
    /// what was copied. An existing `dest` is refused unless `overwrite`.
    #[pyo3(signature = (dest, overwrite = false))]
    fn backup<'py>(
        &self,
        py: Python<'py>,
        dest: std::path::PathBuf,
        overwrite: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let store = self.store(py)?;
        let report = py
            .detach(|| {
                if overwrite {
                    store.backup_overwriting(&dest)
                } else {
                    store.backup(&dest)
                }
            })
            .map_err(|e| backup_error(py, e))?;
        let out = PyDict::new(py);
        out.set_item("dest", report.dest.to_string_lossy().into_owned())?;
        out.set_item("mode", report.mode.as_str())?;
        out.set_item("results", report.results)?;
        out.set_item("values", report.values)?;
        out.set_item("value_files", report.value_files)?;
        out.set_item("bytes", report.bytes)?;
        out.set_item("seconds", report.elapsed.as_secs_f64())?;
        Ok(out)
    }

    /// Binds a Python function to the store and returns its memoized form. `params`: one
    /// `(name, has_default, default, ignored)` per parameter, in order.
    /// `capture(func, renames) -> (record json, {hash: source}, [(globals, name, id)])` captures
    /// the function's code; `code` is "warn", "strict" or "ignore"; `policy` overrides the
    /// store's.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (func, name, version, params, outputs, new, capture, code, policy))]
    fn _memo(
        slf: &Bound<'_, Self>,
        func: Py<PyAny>,
        name: String,
        version: u32,
        params: Vec<(String, bool, Py<PyAny>, bool)>,
        outputs: Vec<String>,
        new: bool,
        capture: Py<PyAny>,
        code: &str,
        policy: Option<&str>,
    ) -> PyResult<(Memo, Vec<(&'static str, String)>)> {
        let code_mode = match code {
            "warn" => CodeMode::Warn,
            "strict" => CodeMode::Strict,
            "ignore" => CodeMode::Ignore,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown code= mode {other:?}"
                )))
            }
        };
        let policy = match policy {
            Some(p) => p.parse().map_err(PyValueError::new_err)?,
            None => slf.get().policy,
        };
        let py = slf.py();
        let store = slf.get().store(py)?;
        // Every result of a memoized function is recorded with its code. A store that cannot
        // hold code records (not migrated to format generation 5) is refused here, before the
        // function is bound or anything computed; a read-only store records nothing anyway.
        if !store.is_read_only() {
            if let Err(e) = store.can_record_code() {
                let path = store.path().display();
                return Err(raise(
                    py,
                    "VersionError",
                    format!(
                        "@store.memo records the code each result ran with, which {path} (format generation {}) cannot hold: {e}. Run `memotag migrate {path}` once; nothing was changed",
                        store.format_generation()
                    ),
                ));
            }
        }
        let mut parameters = Vec::new();
        let mut plan = Vec::new();
        for (pname, has_default, default, ignored) in params {
            let encoded = if has_default {
                Some(convert::encode(default.bind(py)).map_err(|e| {
                    not_storable(py, &format!("the default of `{pname}` of {name}()"), e)
                })?)
            } else {
                None
            };
            if !ignored {
                parameters.push(Parameter {
                    name: pname.clone(),
                    default: encoded.clone(),
                });
            }
            plan.push(PlannedParam {
                name: pname,
                tag: None,
                default: has_default.then_some(default),
                encoded,
                ignored,
                omit_default: false,
            });
        }
        let interface = Interface {
            name: name.clone(),
            version,
            parameters,
            outputs: outputs.clone(),
            new_family: new,
        };
        let (function, tags, notices) = py
            .detach(|| store.bind_interface(&interface))
            .map_err(|e| schema_error(py, e))?;
        // Returned rather than raised here, so that Python can point them at the user's code.
        let mut warnings = Vec::new();
        for notice in notices {
            match notice {
                Notice::FunctionRenamed { from, to } => warnings.push((
                    "RenamedWarning",
                    format!("function `{from}` was renamed to `{to}`; this code binds to it (rename it in the code too)"),
                )),
                Notice::InputRenamed { from, to } => warnings.push((
                    "RenamedWarning",
                    format!("input `{from}` of `{name}` was renamed to `{to}`; this code binds to it"),
                )),
                Notice::InputNotInCode { .. } => {}
            }
        }
        let mut tags = tags.into_iter();
        for p in plan.iter_mut().filter(|p| !p.ignored) {
            let tag = tags.next().expect("one tag per bound parameter");
            let store_default = function.input(tag).and_then(|i| i.default);
            p.omit_default =
                p.encoded.as_ref().map(|e| e.id()) == store_default && store_default.is_some();
            p.tag = Some(tag);
        }
        let family_name = store
            .with_catalog(|c| c.function_name(function.tag).map(str::to_string))
            .map_err(|e| schema_error(py, e))?
            .unwrap_or(name);
        let mut memo = Memo {
            store: slf.clone().unbind(),
            func,
            params: plan,
            function: function.tag,
            name: family_name,
            version: function.version,
            outputs: function.outputs.clone(),
            capture,
            code_mode,
            policy,
            verify_source_hash: slf.get().verify_source_hash,
            code: Mutex::new(CodeState::default()),
            warned: std::sync::atomic::AtomicBool::new(false),
            warned_not_stored: std::sync::atomic::AtomicBool::new(false),
        };
        let state = memo.capture_code(py, &store)?;
        memo.code = Mutex::new(state);
        Ok((memo, warnings))
    }

    /// Batches are per thread: see `Store::begin_batch` in the core crate.
    fn begin_batch(&self, py: Python<'_>) -> PyResult<()> {
        let store = self.store(py)?;
        py.detach(|| store.begin_batch());
        Ok(())
    }

    fn commit_batch(&self, py: Python<'_>) -> PyResult<usize> {
        let store = self.store(py)?;
        let outcomes = py
            .detach(|| store.commit_batch())
            .map_err(|e| call_error(py, e))?;
        Ok(outcomes.len())
    }

    fn abort_batch(&self, py: Python<'_>) -> PyResult<()> {
        let store = self.store(py)?;
        py.detach(|| store.abort_batch());
        Ok(())
    }

    /// `(name, version, tag, inputs, outputs, n_calls)` per function version.
    fn _functions(
        &self,
        py: Python<'_>,
    ) -> PyResult<Vec<(String, u32, String, Vec<String>, Vec<String>, u64)>> {
        let store = self.store(py)?;
        let catalog = store.catalog().map_err(|e| schema_error(py, e))?;
        let mut out = Vec::new();
        for family in catalog.families() {
            for tag in family.versions.values() {
                let f = catalog.function(*tag).expect("catalog is consistent");
                let n = store.count_results(f.tag).map_err(|e| call_error(py, e))?;
                out.push((
                    family.name.clone(),
                    f.version,
                    f.tag.to_string(),
                    f.inputs.iter().map(|i| i.name.clone()).collect(),
                    f.outputs.clone(),
                    n,
                ));
            }
        }
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        Ok(out)
    }

    /// Results as dicts: call_id, function, version, inputs, outputs, created_at (unix ms),
    /// client, code.
    #[pyo3(signature = (name, version = None, r#where = None, limit = None))]
    fn _calls<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        version: Option<u32>,
        r#where: Option<Bound<'py, PyDict>>,
        limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let store = self.store(py)?;
        let catalog = store.catalog().map_err(|e| schema_error(py, e))?;
        let family = catalog
            .resolve_family(name)
            .ok_or_else(|| {
                raise(
                    py,
                    "MemotagError",
                    format!("no function is called `{name}`"),
                )
            })?
            .into_target()
            .clone();
        let versions: Vec<FunctionTag> = match version {
            Some(v) => vec![*family.versions.get(&v).ok_or_else(|| {
                raise(
                    py,
                    "MemotagError",
                    format!("function `{}` has no version {v}", family.name),
                )
            })?],
            None => family.versions.values().copied().collect(),
        };
        let out = PyList::empty(py);
        let mut cache: std::collections::HashMap<memotag::ValueId, Py<PyAny>> = Default::default();
        let mut value_of = |id: &memotag::ValueId| -> PyResult<Py<PyAny>> {
            if let Some(v) = cache.get(id) {
                return Ok(v.clone_ref(py));
            }
            let stored = store.value(id).map_err(|e| call_error(py, e))?;
            let obj = match stored {
                Some(v) => convert::decode(py, &v).map_err(|e| {
                    not_readable(py, &format!("value {id} of `{name}`"), &self.path, e)
                })?,
                None => py.None(),
            };
            cache.insert(*id, obj.clone_ref(py));
            Ok(obj)
        };
        for tag in versions {
            let f = catalog.function(tag).expect("catalog is consistent");
            let mut filter = Vec::new();
            if let Some(w) = &r#where {
                let mut matched_all = true;
                for (k, v) in w.iter() {
                    let key: String = k.extract()?;
                    match catalog.resolve_input(f, &key) {
                        Some(r) => filter.push((
                            r.target().tag,
                            convert::encode(&v).map_err(|e| {
                                not_storable(py, &format!("the where= value of `{key}`"), e)
                            })?,
                        )),
                        None => matched_all = false,
                    }
                }
                if !matched_all {
                    continue;
                }
            }
            let rows = store
                .results(tag, &filter, limit)
                .map_err(|e| call_error(py, e))?;
            for row in rows {
                let d = PyDict::new(py);
                d.set_item("call_id", row.call_id.to_hex())?;
                d.set_item("function", &family.name)?;
                d.set_item("version", f.version)?;
                let inputs = PyDict::new(py);
                for (input_tag, id) in &row.inputs {
                    if let Some(input) = f.input(*input_tag) {
                        inputs.set_item(&input.name, value_of(id)?)?;
                    }
                }
                d.set_item("inputs", inputs)?;
                let outputs = PyDict::new(py);
                for (oname, id) in f.outputs.iter().zip(&row.outputs) {
                    outputs.set_item(oname, value_of(id)?)?;
                }
                d.set_item("outputs", outputs)?;
                d.set_item("created_at", row.time_ms)?;
                d.set_item("client", &row.client)?;
                d.set_item("code", row.code)?;
                out.append(d)?;
                if limit.is_some_and(|l| out.len() >= l) {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// Renames the function currently called `old` (every version). Refused with
    /// `SchemaConflict` if `old` is a name it had before: someone renamed it since.
    fn rename_function(&self, py: Python<'_>, old: &str, new: &str) -> PyResult<()> {
        let store = self.store(py)?;
        match py.detach(|| store.rename_function(old, new)) {
            Ok(_) => Ok(()),
            Err(SchemaError::NoSuchFunction(_)) => Err(raise(
                py,
                "MemotagError",
                format!("no function is called `{old}`"),
            )),
            Err(e) => Err(schema_error(py, e)),
        }
    }

    /// Renames the input currently called `old` of one version (`None`: the newest), checked as
    /// `rename_function` is.
    #[pyo3(signature = (function, old, new, version = None))]
    fn rename_input(
        &self,
        py: Python<'_>,
        function: &str,
        old: &str,
        new: &str,
        version: Option<u32>,
    ) -> PyResult<()> {
        let store = self.store(py)?;
        let tag = self.function_tag(py, &store, function, version)?;
        match py.detach(|| store.rename_input(tag, old, new)) {
            Ok(_) => Ok(()),
            Err(SchemaError::NoSuchInput { .. }) => Err(raise(
                py,
                "MemotagError",
                format!("function `{function}` has no input called `{old}`"),
            )),
            Err(e) => Err(schema_error(py, e)),
        }
    }

    /// Adds an input with a default to one version (`None`: the newest).
    #[pyo3(signature = (function, name, default, version = None))]
    fn add_input(
        &self,
        py: Python<'_>,
        function: &str,
        name: &str,
        default: Bound<'_, PyAny>,
        version: Option<u32>,
    ) -> PyResult<()> {
        let store = self.store(py)?;
        let tag = self.function_tag(py, &store, function, version)?;
        let default = convert::encode(&default).map_err(|e| {
            not_storable(
                py,
                &format!("the default of new input `{name}` of {function}()"),
                e,
            )
        })?;
        py.detach(|| store.add_input(tag, name, Some(default)))
            .map_err(|e| schema_error(py, e))?;
        Ok(())
    }

    /// The schema log after `since`: (seq, kind, change as JSON, client, unix ms).
    #[pyo3(signature = (since = 0))]
    fn _schema_log(
        &self,
        py: Python<'_>,
        since: u64,
    ) -> PyResult<Vec<(u64, String, String, String, i64)>> {
        let store = self.store(py)?;
        let log = store.schema_log(since).map_err(|e| schema_error(py, e))?;
        Ok(log
            .into_iter()
            .map(|e| {
                let json = serde_json::to_string(&e.change).unwrap_or_default();
                (
                    e.seq,
                    e.change.kind().to_string(),
                    json,
                    e.client,
                    e.time_ms,
                )
            })
            .collect())
    }

    /// Conflicts as dicts: function, version, call_id, outputs, client, created_at.
    #[pyo3(signature = (name = None))]
    fn _conflicts<'py>(&self, py: Python<'py>, name: Option<&str>) -> PyResult<Bound<'py, PyList>> {
        let store = self.store(py)?;
        let catalog = store.catalog().map_err(|e| schema_error(py, e))?;
        let rows = store.conflicts(None).map_err(|e| call_error(py, e))?;
        let out = PyList::empty(py);
        for row in rows {
            let Some(f) = catalog.function(row.function) else {
                continue;
            };
            let fname = catalog.function_name(f.tag).unwrap_or("?");
            if let Some(name) = name {
                let wanted = catalog.resolve_family(name).map(|r| r.target().tag);
                if wanted != Some(f.family) {
                    continue;
                }
            }
            let d = PyDict::new(py);
            d.set_item("function", fname)?;
            d.set_item("version", f.version)?;
            d.set_item("call_id", row.call_id.to_hex())?;
            let outputs = PyDict::new(py);
            for (oname, id) in f.outputs.iter().zip(&row.outputs) {
                let v = store.value(id).map_err(|e| call_error(py, e))?;
                outputs.set_item(
                    oname,
                    match v {
                        Some(v) => convert::decode(py, &v).map_err(|e| {
                            not_readable(
                                py,
                                &format!("the output `{oname}` of {fname}() (value {id})"),
                                &self.path,
                                e,
                            )
                        })?,
                        None => py.None(),
                    },
                )?;
            }
            d.set_item("outputs", outputs)?;
            d.set_item("client", row.client)?;
            d.set_item("created_at", row.time_ms)?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// (library, version, declared, results) for every library version the store has seen.
    fn _packages(&self, py: Python<'_>) -> PyResult<Vec<(String, Option<String>, bool, u64)>> {
        let store = self.store(py)?;
        let rows = store.packages().map_err(|e| call_error(py, e))?;
        Ok(rows
            .into_iter()
            .map(|r| (r.library, r.version, r.declared, r.results))
            .collect())
    }

    /// A code record by store id, as JSON (None if unknown).
    fn _code_record(&self, py: Python<'_>, id: i64) -> PyResult<Option<String>> {
        let store = self.store(py)?;
        let record = store.code_record(id).map_err(|e| call_error(py, e))?;
        Ok(record.map(|r| serde_json::to_string(&r).unwrap_or_default()))
    }

    /// A stored source text by hash.
    fn source(&self, py: Python<'_>, hash: &str) -> PyResult<Option<String>> {
        let store = self.store(py)?;
        store.source(hash).map_err(|e| call_error(py, e))
    }

    /// The canonical encoding of a Python object, as (codec, bytes, value id hex). For tests and
    /// for checking what a value will be stored as.
    #[staticmethod]
    fn _encode(obj: Bound<'_, PyAny>) -> PyResult<(String, Vec<u8>, String)> {
        let v = convert::encode(&obj)?;
        Ok((
            v.codec.as_str().to_string(),
            v.bytes.clone(),
            v.id().to_hex(),
        ))
    }

    /// The inverse of `_encode`.
    #[staticmethod]
    fn _decode(py: Python<'_>, codec: &str, data: Vec<u8>) -> PyResult<Py<PyAny>> {
        let codec: memotag::Codec = codec
            .parse()
            .map_err(|e: memotag::value::ValueError| PyValueError::new_err(e.to_string()))?;
        convert::decode(py, &memotag::EncodedValue { codec, bytes: data })
    }
}

impl PyStore {
    fn function_tag(
        &self,
        py: Python<'_>,
        store: &Store,
        function: &str,
        version: Option<u32>,
    ) -> PyResult<FunctionTag> {
        let family = store
            .resolve_function(function)
            .map_err(|e| schema_error(py, e))?
            .ok_or_else(|| {
                raise(
                    py,
                    "MemotagError",
                    format!("no function is called `{function}`"),
                )
            })?
            .into_target();
        let tag = match version {
            Some(v) => family.versions.get(&v).copied(),
            None => family.versions.values().next_back().copied(),
        };
        tag.ok_or_else(|| {
            raise(
                py,
                "MemotagError",
                format!("function `{}` has no version {version:?}", family.name),
            )
        })
    }
}

// ---- memoized functions ----------------------------------------------------------------------

struct PlannedParam {
    name: String,
    tag: Option<InputTag>,
    default: Option<Py<PyAny>>,
    encoded: Option<memotag::EncodedValue>,
    ignored: bool,
    /// The default equals the store's default: a call that leaves it out need not send it.
    omit_default: bool,
}

/// A function memoized in a store: calling it returns the recorded result or computes and
/// records it.
#[pyclass(module = "memotag._memotag", dict, weakref, frozen)]
pub struct Memo {
    store: Py<PyStore>,
    func: Py<PyAny>,
    params: Vec<PlannedParam>,
    function: FunctionTag,
    name: String,
    version: u32,
    outputs: Vec<String>,
    /// `memotag._code.capture` bound to this function's renames and declared deps.
    capture: Py<PyAny>,
    code_mode: CodeMode,
    policy: Policy,
    verify_source_hash: bool,
    code: Mutex<CodeState>,
    /// `CodeChangedWarning` is given once per function and process.
    warned: std::sync::atomic::AtomicBool,
    /// `ResultNotStoredWarning` is given once per function and process.
    warned_not_stored: std::sync::atomic::AtomicBool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CodeMode {
    Warn,
    Strict,
    Ignore,
}

/// The code this function runs now, as the reader it looks up with.
#[derive(Default)]
struct CodeState {
    reader: Arc<Reader>,
    /// Sources the store did not hold at capture time; sent with the next record.
    pending: Vec<SourceText>,
    /// (globals dict, name, the object it held or `None` if absent): a redefined (or newly
    /// defined) helper is noticed by identity, without reading any source on the hot path. The
    /// objects are held, so their addresses cannot be reused by a redefinition.
    watch: Vec<(Py<PyDict>, Py<pyo3::types::PyString>, Option<Py<PyAny>>)>,
}

impl Memo {
    /// Captures the function's code (through Python) and asks the store which sources it
    /// already holds, so that records send only the others.
    fn capture_code(&self, py: Python<'_>, store: &Store) -> PyResult<CodeState> {
        let renames = PyDict::new(py);
        for p in &self.params {
            if let Some(tag) = p.tag {
                renames.set_item(&p.name, tag.to_string())?;
            }
        }
        let captured = self.capture.bind(py).call1((self.func.bind(py), renames))?;
        let (json, sources, watch): (
            String,
            std::collections::HashMap<String, String>,
            Vec<(
                Bound<'_, PyDict>,
                Bound<'_, pyo3::types::PyString>,
                Option<Bound<'_, PyAny>>,
            )>,
        ) = captured.extract()?;
        let record: CodeRecord = serde_json::from_str(&json).map_err(|e| {
            PyValueError::new_err(format!("captured code record is malformed: {e}"))
        })?;
        let hashes: Vec<String> = sources.keys().cloned().collect();
        let held = store.preflight(&hashes).unwrap_or_default();
        let pending = sources
            .into_iter()
            .filter(|(hash, _)| !held.contains(hash))
            .map(|(hash, text)| SourceText { hash, text })
            .collect();
        let reader = Reader {
            code: record.normalized(),
            policy: self.policy,
            verify_source_hash: self.verify_source_hash,
            strict: self.code_mode == CodeMode::Strict,
        };
        Ok(CodeState {
            reader: Arc::new(reader),
            pending,
            watch: watch
                .into_iter()
                .map(|(g, n, obj)| (g.unbind(), n.unbind(), obj.map(Bound::unbind)))
                .collect(),
        })
    }

    /// The reader for this call, recaptured first if a referenced global was redefined.
    fn reader(&self, py: Python<'_>, store: &Store) -> PyResult<Arc<Reader>> {
        let stale = {
            let state = self.code.lock();
            let mut stale = false;
            for (globals, name, held) in &state.watch {
                let now = globals.bind(py).get_item(name.bind(py))?;
                let same = match (&now, held) {
                    (Some(now), Some(held)) => now.is(held.bind(py)),
                    (None, None) => true,
                    _ => false,
                };
                if !same {
                    stale = true;
                    break;
                }
            }
            if !stale {
                return Ok(state.reader.clone());
            }
            stale
        };
        debug_assert!(stale);
        let fresh = self.capture_code(py, store)?;
        let reader = fresh.reader.clone();
        *self.code.lock() = fresh;
        Ok(reader)
    }

    /// Binds arguments like Python does, then to input tags: the call the store sees.
    fn bind_call(
        &self,
        py: Python<'_>,
        store: &Store,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<memotag::BoundCall> {
        if args.len() > self.params.len() {
            return Err(PyTypeError::new_err(format!(
                "{}() takes {} arguments but {} were given",
                self.name,
                self.params.len(),
                args.len()
            )));
        }
        let mut inputs = Vec::with_capacity(self.params.len());
        let mut used_kwargs = 0;
        for (i, p) in self.params.iter().enumerate() {
            let positional = if i < args.len() {
                Some(args.get_item(i)?)
            } else {
                None
            };
            let keyword = match kwargs {
                Some(kw) => kw.get_item(&p.name)?,
                None => None,
            };
            if keyword.is_some() {
                used_kwargs += 1;
            }
            let value = match (positional, keyword) {
                (Some(_), Some(_)) => {
                    return Err(PyTypeError::new_err(format!(
                        "{}() got multiple values for argument '{}'",
                        self.name, p.name
                    )));
                }
                (Some(v), None) | (None, Some(v)) => Some(v),
                (None, None) => None,
            };
            if p.ignored {
                if value.is_none() && p.default.is_none() {
                    return Err(missing(&self.name, &p.name));
                }
                continue;
            }
            let tag = p.tag.expect("bound parameters have tags");
            match value {
                Some(v) => inputs.push((
                    tag,
                    convert::encode(&v).map_err(|e| {
                        not_storable(py, &format!("argument `{}` of {}()", p.name, self.name), e)
                    })?,
                )),
                None => match &p.encoded {
                    Some(_) if p.omit_default => {}
                    Some(encoded) => inputs.push((tag, encoded.clone())),
                    None => return Err(missing(&self.name, &p.name)),
                },
            }
        }
        if let Some(kw) = kwargs {
            if used_kwargs != kw.len() {
                for key in kw.keys() {
                    let key: String = key.extract()?;
                    if !self.params.iter().any(|p| p.name == key) {
                        return Err(PyTypeError::new_err(format!(
                            "{}() got an unexpected keyword argument '{key}'",
                            self.name
                        )));
                    }
                }
            }
        }
        store
            .bind(self.function, inputs)
            .map_err(|e| call_error(py, e))
    }

    fn outputs_to_python(
        &self,
        py: Python<'_>,
        values: &[memotag::EncodedValue],
    ) -> PyResult<Py<PyAny>> {
        let path = self.store.borrow(py).path.clone();
        let decode = |(name, v): (&String, &memotag::EncodedValue)| {
            convert::decode(py, v).map_err(|e| {
                not_readable(
                    py,
                    &format!(
                        "the output `{name}` of {}() recorded for these arguments",
                        self.name
                    ),
                    &path,
                    e,
                )
            })
        };
        if self.outputs.len() == 1 {
            return decode((&self.outputs[0], &values[0]));
        }
        let items = self
            .outputs
            .iter()
            .zip(values)
            .map(decode)
            .collect::<PyResult<Vec<_>>>()?;
        Ok(PyTuple::new(py, items)?.into_any().unbind())
    }
}

/// What a lookup of one call needs and finds: the store, the bound call, the reader it looked
/// up as, and the answer.
type LookedUp = (
    Arc<Store>,
    memotag::BoundCall,
    Arc<Reader>,
    memotag::LookupAnswer,
);

impl Memo {
    /// Binds the arguments and looks the call up as this function's current code would.
    fn look_up(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<LookedUp> {
        let store = self.store.get().store(py)?;
        let call = self.bind_call(py, &store, args, kwargs)?;
        let reader = self.reader(py, &store)?;
        // A shared-mode lookup takes the store's lease lock and may wait for it: other Python
        // threads go on meanwhile. (In local mode a hit never waits; keeping the GIL is cheaper.)
        let answer = if store.lock_method() == memotag::LockMethod::LeaseDir {
            py.detach(|| store.lookup_with(&call, &reader))
        } else {
            store.lookup_with(&call, &reader)
        }
        .map_err(|e| call_error(py, e))?;
        Ok((store, call, reader, answer))
    }
}

impl Memo {
    /// Returns a computed result that cannot be stored (it cannot be encoded, or the store could
    /// not read it back), telling the user once: later calls compute it again.
    fn not_stored(
        &self,
        py: Python<'_>,
        result: Bound<'_, PyAny>,
        reason: &str,
    ) -> PyResult<Py<PyAny>> {
        if !self.warned_not_stored.swap(true, Ordering::Relaxed) {
            warn(
                py,
                "ResultNotStoredWarning",
                &format!(
                    "{}(): the result was returned but not stored, so later calls compute it again: {reason} (this warning is shown once)",
                    self.name
                ),
            )?;
        }
        Ok(result.unbind())
    }
}

fn missing(function: &str, param: &str) -> PyErr {
    PyTypeError::new_err(format!("{function}() missing required argument: '{param}'"))
}

#[pymethods]
impl Memo {
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let (store, call, reader, answer) = self.look_up(py, args, kwargs)?;
        if let Some(hit) = answer.hit {
            if !answer.changed.is_empty()
                && self.code_mode == CodeMode::Warn
                && !self.warned.swap(true, Ordering::Relaxed)
            {
                warn(
                    py,
                    "CodeChangedWarning",
                    &format!(
                        "{}(): served a result recorded under different code ({} changed); pass version= to the decorator if results should differ (this warning is shown once)",
                        self.name,
                        answer.changed.join(", ")
                    ),
                )?;
            }
            return self.outputs_to_python(py, &hit.outputs);
        }
        let result = self.func.bind(py).call(args, kwargs)?;
        let outputs: Vec<memotag::EncodedValue> = if self.outputs.len() == 1 {
            match convert::encode(&result) {
                Ok(encoded) => vec![encoded],
                Err(e) if e.is_instance_of::<PyException>(py) => {
                    return self.not_stored(py, result, &e.to_string());
                }
                Err(e) => return Err(e),
            }
        } else {
            let items: Vec<Bound<'_, PyAny>> = match result.cast::<PyTuple>() {
                Ok(t) if t.len() == self.outputs.len() => t.iter().collect(),
                _ => {
                    return Err(PyTypeError::new_err(format!(
                        "{}() must return a tuple of {} values ({}) for its outputs",
                        self.name,
                        self.outputs.len(),
                        self.outputs.join(", ")
                    )));
                }
            };
            match items.iter().map(convert::encode).collect::<PyResult<_>>() {
                Ok(encoded) => encoded,
                Err(e) if e.is_instance_of::<PyException>(py) => {
                    return self.not_stored(py, result, &e.to_string());
                }
                Err(e) => return Err(e),
            }
        };
        let sources = std::mem::take(&mut self.code.lock().pending);
        let code = reader.code.clone();
        let recorded = py.detach(|| store.record_with_code(&call, outputs, code, sources.clone()));
        let outcome = match recorded {
            // Buffered in a batch that may still be dropped: send the sources again next time
            // (the store keeps each once).
            Ok(RecordOutcome::Buffered) => {
                self.code.lock().pending.extend(sources);
                RecordOutcome::Buffered
            }
            Ok(outcome) => outcome,
            Err(e) => {
                // Not stored: send them again next time.
                self.code.lock().pending.extend(sources);
                if let CallError::UnreadableValue { .. } = e {
                    return self.not_stored(py, result, &e.to_string());
                }
                return Err(call_error(py, e));
            }
        };
        if let RecordOutcome::Conflict { .. } = outcome {
            warn(
                py,
                "ConflictWarning",
                &format!(
                    "{}(): another process recorded different outputs for this call first; returning those (the canonical ones) — is the function deterministic?",
                    self.name
                ),
            )?;
            let answer = store
                .lookup_with(&call, &reader)
                .map_err(|e| call_error(py, e))?;
            if let Some(hit) = answer.hit {
                return self.outputs_to_python(py, &hit.outputs);
            }
        }
        Ok(result.unbind())
    }

    /// The recorded result; raises `memotag.Miss` if there is none. Never computes.
    #[pyo3(signature = (*args, **kwargs))]
    fn lookup(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let (_, _, _, answer) = self.look_up(py, args, kwargs)?;
        match answer.hit {
            Some(hit) => self.outputs_to_python(py, &hit.outputs),
            None if answer.other_code > 0 => Err(raise(
                py,
                "Miss",
                format!(
                    "no recorded result of {}() for these arguments under code this caller accepts ({} result(s) exist under other code)",
                    self.name, answer.other_code
                ),
            )),
            None => Err(raise(
                py,
                "Miss",
                format!("no recorded result of {}() for these arguments", self.name),
            )),
        }
    }

    /// The call id these arguments map to (hex).
    #[pyo3(signature = (*args, **kwargs))]
    fn call_id(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<String> {
        let store = self.store.get().store(py)?;
        Ok(self.bind_call(py, &store, args, kwargs)?.call_id().to_hex())
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    #[getter]
    fn version(&self) -> u32 {
        self.version
    }

    #[getter]
    fn tag(&self) -> String {
        self.function.to_string()
    }

    #[getter]
    fn outputs(&self) -> Vec<String> {
        self.outputs.clone()
    }

    /// The code record this function looks up and records with (as JSON).
    #[getter]
    fn code_record(&self, py: Python<'_>) -> PyResult<String> {
        let store = self.store.get().store(py)?;
        let reader = self.reader(py, &store)?;
        serde_json::to_string(&reader.code).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    #[getter]
    fn store(&self, py: Python<'_>) -> Py<PyStore> {
        self.store.clone_ref(py)
    }

    /// Pickled by reference (module + qualified name), like a plain function.
    fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Ok(slf.getattr("__qualname__")?.unbind())
    }

    fn __repr__(&self) -> String {
        format!(
            "<memoized {} v{} ({})>",
            self.name, self.version, self.function
        )
    }
}

#[pymodule]
fn _memotag(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyStore>()?;
    m.add_class::<Memo>()?;
    m.add_function(wrap_pyfunction!(_after_fork_in_child, m)?)?;
    watch_sigint();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
