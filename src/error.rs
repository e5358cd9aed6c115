//! Error enums, one per operation family, each converting into the top-level [`Error`].
//!
//! A caller of `Store::open` matches on [`OpenError`], a caller of a schema change on
//! [`SchemaError`], a caller of `record`/`lookup` on [`CallError`]. Everything below SQL that can go
//! wrong at any time (I/O, a busy database after all retries, corruption) is a [`StorageError`].

use std::path::PathBuf;

use crate::calls::CallId;
use crate::schema::{FamilyTag, FunctionTag, InputTag, RenameRecord};
use crate::value::{ValueError, ValueId};

/// The database could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("SQLite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the store stayed locked by other writers for {waited_ms} ms; try again")]
    Busy { waited_ms: u64 },
    #[error("the store is corrupt: {0}")]
    Corrupt(String),
    #[error("the shared-mode lock {path} stayed held by {holder} for {waited_ms} ms; try again")]
    LockTimeout {
        path: PathBuf,
        waited_ms: u64,
        holder: String,
    },
    #[error("lost the shared-mode lock {path} before committing ({reason}); nothing of this transaction was written: try again")]
    LockLost { path: PathBuf, reason: String },
    #[error("interrupted while waiting for the store's lock")]
    Interrupted,
    #[error("{path} was switched to another mode or lock method (`memotag set-mode`) since this client opened it; open it again")]
    ModeSwitched { path: PathBuf },
    #[error("this store is open read-only{reason}", reason = reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    ReadOnly { reason: Option<String> },
    #[error("a client died in the middle of a commit to {path} and left its journal {journal}; rolling it back needs write access to the store's folder, which this client does not have ({source}). Open the store once as a user who may write there (e.g. `memotag check`), then read again")]
    JournalNeedsWriter {
        path: PathBuf,
        journal: PathBuf,
        source: std::io::Error,
    },
    #[error("value {id} is stored as a file but the file {path} is missing")]
    MissingBlob { id: ValueId, path: PathBuf },
    #[error("value file {path} does not match its id {id}: it was modified or damaged")]
    CorruptBlob { id: ValueId, path: PathBuf },
    /// A value kept in the store file whose bytes (or codec) are not what its id names.
    #[error("value {id} in the store does not match its id: it was modified or damaged (run `memotag check`)")]
    CorruptValue { id: ValueId },
}

impl StorageError {
    /// Whether other clients holding the store caused this (busy or locked), as opposed to a
    /// damaged or unusable file.
    pub fn is_busy(&self) -> bool {
        match self {
            StorageError::Busy { .. } => true,
            StorageError::Sqlite(e) => crate::storage::is_busy(e),
            _ => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Opening a store failed; the file was left as it was.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path} is not a memotag store: {reason}")]
    NotAStore { path: PathBuf, reason: String },
    #[error("{path} is a truncated memotag store: its header says {expected} bytes but the file has {actual}")]
    Truncated {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{path} does not exist (a read-only open never creates a store)")]
    NotFound { path: PathBuf },
    #[error("the store path is empty (\"\"); give the store's file, e.g. `results.memo`")]
    EmptyPath,
    #[error("{path} does not exist{via}, and neither does its folder {folder}, so no store can be created there; create the folder first or check the path", via = link_to.as_ref().map(|t| format!(" (it is a symbolic link to {})", t.display())).unwrap_or_default())]
    FolderMissing {
        path: PathBuf,
        /// Where a dangling symbolic link at `path` points.
        link_to: Option<PathBuf>,
        folder: PathBuf,
    },
    #[error("{path} is format generation {found}, newer than this memotag reads (up to {supported}); upgrade memotag")]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path} is a {store} store, but it was asked to be opened in {requested} mode; the mode is a property of the store (switch it explicitly with `memotag set-mode`)")]
    ModeMismatch {
        path: PathBuf,
        store: crate::storage::Mode,
        requested: crate::storage::Mode,
    },
    #[error("{path} uses the lock method `{store}`, but this client was asked to use `{requested}`; every client of a store must use the same one (switch it explicitly with `memotag set-mode`)")]
    LockMethodMismatch {
        path: PathBuf,
        store: String,
        requested: crate::storage::LockMethod,
    },
    #[error(transparent)]
    Version(#[from] crate::protocol::VersionError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<rusqlite::Error> for OpenError {
    fn from(e: rusqlite::Error) -> Self {
        OpenError::Storage(StorageError::Sqlite(e))
    }
}

/// A schema change was rejected (and changed nothing), or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("the name `{name}` is already taken by another function (family {family})")]
    NameTaken { name: String, family: FamilyTag },
    #[error("function `{function}` already has an input named `{name}`")]
    InputNameTaken { function: String, name: String },
    #[error("the {what} name `{name}` appears twice in `{function}`")]
    DuplicateName {
        what: &'static str,
        name: String,
        function: String,
    },
    #[error("no function has the tag {0}")]
    UnknownFunction(FunctionTag),
    #[error("no function family has the tag {0}")]
    UnknownFamily(FamilyTag),
    #[error("no input has the tag {0}")]
    UnknownInput(InputTag),
    #[error("no function is called `{0}`")]
    NoSuchFunction(String),
    #[error("function `{function}` has no version {version}")]
    NoSuchVersion { function: String, version: u32 },
    #[error("function `{function}` has no input called `{input}`")]
    NoSuchInput { function: String, input: String },
    #[error("input `{input}` of `{function}` needs a default: inputs added after a function was created must have one, so that older calls stay valid")]
    MissingDefault { function: String, input: String },
    #[error("input `{input}` of `{function}` already has default {existing}, not {requested}: defaults never change; create a new version instead")]
    DefaultChanged {
        function: String,
        input: String,
        existing: ValueId,
        requested: ValueId,
    },
    #[error("`{name}` version {version} already exists with another interface: {reason}; use another version number for the new interface")]
    ConflictingInterface {
        name: String,
        version: u32,
        reason: String,
    },
    #[error("`{name}` was renamed to `{now}`; use `{now}`, or ask explicitly for a new function under the freed name")]
    FormerName {
        name: String,
        now: String,
        family: FamilyTag,
    },
    /// A rename named the function or input by a name it no longer has: someone renamed it since.
    #[error("{what} `{name}` is now called `{now}`: {since}; renaming from `{name}` would undo that. Rename `{now}` if that is still meant")]
    RenamedSince {
        what: &'static str,
        name: String,
        now: String,
        since: Box<RenameRecord>,
    },
    /// An input was added under a name one of the function's inputs had before.
    #[error("input `{name}` of `{function}` is now called `{now}`: {since}; adding `{name}` again would make a second input for the same thing: use `{now}`")]
    FormerInputName {
        function: String,
        name: String,
        now: String,
        since: Box<RenameRecord>,
    },
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error("`{name}`: versions start at 1")]
    InvalidVersion { name: String },
    #[error("`{name}` must have at least one output")]
    NoOutputs { name: String },
    #[error("`{function}` version {version} does not fit this code: {reason}; give the code a new `version=`")]
    IncompatibleSignature {
        function: String,
        version: u32,
        reason: String,
    },
    #[error("schema log entry {seq} is inconsistent: {reason}")]
    CorruptLog { seq: u64, reason: String },
    #[error("invalid default value: {0}")]
    Value(#[from] ValueError),
    #[error(transparent)]
    Version(#[from] crate::protocol::VersionError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<rusqlite::Error> for SchemaError {
    fn from(e: rusqlite::Error) -> Self {
        SchemaError::Storage(StorageError::Sqlite(e))
    }
}

/// Recording or looking up a call failed (and recorded nothing).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no function has the tag {0}")]
    UnknownFunction(FunctionTag),
    #[error("function `{function}` has no input with tag {input}")]
    UnknownInput { function: String, input: InputTag },
    #[error("function `{function}` has no input called `{input}`")]
    NoSuchInput { function: String, input: String },
    #[error("input `{input}` of `{function}` has no default, so every call must give it a value")]
    MissingInput { function: String, input: String },
    #[error("input `{input}` of `{function}` is given twice")]
    DuplicateInput { function: String, input: String },
    #[error("`{function}` has {expected} outputs ({names}), but {given} values were given")]
    OutputCount {
        function: String,
        expected: usize,
        given: usize,
        names: String,
    },
    #[error("value {0} is not in the store")]
    MissingValue(ValueId),
    /// A call whose call id is not the id of its function and inputs (a forged or damaged
    /// payload): nothing was recorded, and a lookup never hits.
    #[error("the call id {given} given for `{function}` is not the id of its inputs ({expected}); nothing was recorded")]
    ForgedCallId {
        function: String,
        expected: CallId,
        given: CallId,
    },
    /// An input whose bytes are not what its claimed value id names: nothing was recorded.
    #[error("input `{input}` of `{function}` claims value id {given}, but its bytes have id {expected}; nothing was recorded")]
    ForgedValueId {
        function: String,
        input: String,
        expected: ValueId,
        given: ValueId,
    },
    /// A value the store could not read back once stored (bytes its codec's decoder refuses,
    /// such as CBOR nested deeper than the decoder's limit): nothing was recorded.
    #[error("{what} of `{function}` (value {id}) cannot be stored, because it could not be read back: {reason}; nothing was recorded")]
    UnreadableValue {
        function: String,
        what: String,
        id: ValueId,
        reason: ValueError,
    },
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Value(#[from] ValueError),
    #[error(transparent)]
    Version(#[from] crate::protocol::VersionError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// When a batch's buffered results were being committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchFlush {
    /// The batch reached `batch_size` results while recording one more.
    AutoFlush,
    /// The batch ended (`commit_batch`, the end of `Store::batch`).
    Commit,
    /// The store was being closed with batches open (`Store::close`, `Store::flush_batches`).
    Close,
}

/// Buffered results could not be committed: how many were stored and what became of the others.
/// A flush is one transaction, so either all of its results are stored or none.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.describe())]
pub struct BatchError {
    pub flush: BatchFlush,
    /// Auto-flush and commit: results of this batch committed by its earlier auto-flushes.
    /// Close: results committed by this close before the failure.
    pub stored: usize,
    /// Results not stored: still buffered after an auto-flush or a close, dropped after a
    /// commit (see [`BatchError::still_buffered`]).
    pub not_stored: usize,
    /// Why the flush failed.
    pub cause: Box<CallError>,
}

impl BatchError {
    /// Whether the results not stored are still buffered (and committed with their batch, or by
    /// a later close), rather than dropped.
    pub fn still_buffered(&self) -> bool {
        self.flush != BatchFlush::Commit
    }

    fn describe(&self) -> String {
        let (stored, not_stored, cause) = (self.stored, self.not_stored, &self.cause);
        match self.flush {
            BatchFlush::AutoFlush => format!(
                "a batch could not commit its buffered results ({cause}): {stored} of its results \
                 are stored (by earlier flushes); {not_stored} are not, and stay buffered in this \
                 thread's batch: they are committed when it ends and dropped if it is aborted"
            ),
            BatchFlush::Commit => format!(
                "a batch could not commit ({cause}): {stored} of its results are stored (by \
                 earlier flushes); the other {not_stored} were not stored and are dropped"
            ),
            BatchFlush::Close => format!(
                "the store could not commit the results buffered in its open batches before \
                 closing ({cause}): {stored} were stored; {not_stored} were not, and stay \
                 buffered in the still open store"
            ),
        }
    }
}

impl From<rusqlite::Error> for CallError {
    fn from(e: rusqlite::Error) -> Self {
        CallError::Storage(StorageError::Sqlite(e))
    }
}

/// Any memotag error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A backup (`Store::backup`, `memotag backup`) was refused or failed. Either way the
/// destination is as it was: a backup is renamed into place only when it is complete.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{dest} already exists; nothing was copied (pass --force, or overwrite=True in Python, to replace it)")]
    DestinationExists { dest: PathBuf },
    #[error("{dest} has {journal} beside it: a client has it open or did not close it, and SQLite would apply that journal to the copy; nothing was copied (close its clients, or choose another destination)")]
    DestinationInUse { dest: PathBuf, journal: PathBuf },
    #[error("{path} is the store being copied; choose another destination")]
    SameStore { path: PathBuf },
    #[error("copying {src} to {dest} failed: {source}; nothing was written to {dest} (the partial copy was removed)")]
    Failed {
        src: PathBuf,
        dest: PathBuf,
        source: StorageError,
    },
    #[error(transparent)]
    Open(#[from] OpenError),
}
