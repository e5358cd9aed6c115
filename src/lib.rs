//! memotag is an embedded, SQLite-backed, collaborative memoization store: the results of
//! expensive function calls, kept in one file that a whole team reads and writes, under
//! functions whose names, inputs and versions change while people work.
//!
//! What it promises:
//! - **Immutable tags.** Every function and input gets a UUID that never changes; names are
//!   labels. A rename or an added input (with a default) never loses a recorded result.
//! - **Stale calls are always accepted.** A call from code that knows an older schema is
//!   recorded; missing inputs take their defaults, filled in by SQLite itself.
//! - **No lost results.** Once `record` returns the result survives the process being killed;
//!   concurrent writers never make each other's results disappear; a duplicate is a no-op.
//! - **Schema changes are serialized and checked**: conflicting ones are rejected immediately
//!   with a typed error, identical retries succeed.
//!
//! ```
//! use memotag::{FunctionSpec, InputSpec, Store, Value, EncodedValue};
//!
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("team.memo");
//! let store = Store::open(&path)?;
//! let zero = EncodedValue::from_value(&Value::Int(0))?;
//! let f = store.create_function(FunctionSpec::new(
//!     "square",
//!     vec![InputSpec::required("x"), InputSpec::with_default("offset", zero)],
//! ))?;
//!
//! let x = f.input_named("x").unwrap().tag;
//! let call = store.bind(f.tag, vec![(x, EncodedValue::from_value(&Value::Int(7))?)])?;
//! assert!(store.lookup(&call)?.is_none());
//! store.record(&call, vec![EncodedValue::from_value(&Value::Int(49))?])?;
//!
//! // Renaming keeps every result.
//! store.rename_function("square", "squared")?;
//! let hit = store.lookup(&call)?.expect("recorded above");
//! assert_eq!(memotag::value::decode_canonical(&hit.outputs[0].bytes)?, Value::Int(49));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod calls;
pub mod code;
pub mod error;
pub mod maintenance;
pub mod protocol;
pub mod schema;
pub mod storage;
mod store;
pub mod value;

pub use calls::{BoundCall, CallId, ConflictRow, Hit, RecordOutcome, ResultRow};
pub use code::{CodeRecord, LibraryRef, Policy, Reader, RefKind, SourceText, UserRef};
pub use error::{
    BackupError, BatchError, BatchFlush, CallError, Error, OpenError, SchemaError, StorageError,
};
pub use protocol::procedures::{LookupAnswer, PackageRow};
pub use protocol::{Menu, VersionError};
pub use schema::{
    Catalog, Family, FamilyTag, Function, FunctionSpec, FunctionTag, Input, InputSpec, InputTag,
    Interface, LoggedChange, NameSpan, Notice, Parameter, RenameRecord, Resolution, SchemaChange,
};
pub use storage::catalog::LogEntry;
pub use storage::lock::{Interrupt, LockMethod, DEFAULT_LEASE};
pub use storage::{BackupReport, Mode, FORMAT_GENERATION};
pub use store::{OpenOptions, SessionInfo, Store, DEFAULT_BATCH_SIZE, DEFAULT_BLOB_THRESHOLD};
pub use value::{Codec, EncodedValue, Value, ValueId};
