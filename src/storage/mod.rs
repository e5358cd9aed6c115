//! The only code that speaks SQL: opening and creating store files, modes and pragmas, the
//! format migrations in `schema/`, the catalog tables, memo tables, values and blob files.
//!
//! It knows nothing about what a valid schema change or a valid call is (`schema` and `calls`
//! decide that); it stores what it is given, inside transactions it is asked to run.

mod blobs;
pub mod catalog;
pub mod code;
mod file;
pub mod maintenance;
pub mod memo;
mod migrations;
mod mode;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

pub use blobs::BlobStore;
pub use file::APPLICATION_ID;
pub use migrations::{FORMAT_GENERATION, MIGRATIONS};
pub use mode::{filesystem_kind, FilesystemKind, Mode};

use crate::error::{OpenError, StorageError};

/// How long one attempt waits on SQLite's own busy handler before we back off and retry.
const BUSY_SLICE: Duration = Duration::from_millis(200);

/// What the caller wants when opening a path.
#[derive(Clone, Debug)]
pub struct OpenRequest {
    pub path: PathBuf,
    /// `None`: the store's own mode (or, for a new store, the detected one).
    pub mode: Option<Mode>,
    pub read_only: bool,
    /// `synchronous=FULL` in local mode too, so that a returned record survives power loss.
    pub full_durability: bool,
    /// Values larger than this many bytes are kept as files beside the store.
    pub blob_threshold: usize,
    /// How long a write waits for other writers before giving up with `StorageError::Busy`.
    pub busy_timeout: Duration,
    /// The procedures a new store supports (recorded at creation).
    pub menu: crate::protocol::Menu,
}

/// What the file says about itself before a session starts: the handshake number, the library
/// that last created or migrated it, its menu and its compatibility levels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHandshake {
    pub protocol: u32,
    pub library_version: Option<String>,
    pub menu: crate::protocol::Menu,
    pub read_level: u32,
    pub write_level: u32,
    pub generation: u32,
}

/// An open connection to a store file, in the store's mode.
pub struct Database {
    pub(crate) conn: Connection,
    path: PathBuf,
    mode: Mode,
    read_only: bool,
    read_only_reason: Option<String>,
    generation: u32,
    busy_timeout: Duration,
    full_durability: bool,
    pub(crate) blobs: BlobStore,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.path)
            .field("mode", &self.mode)
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl Database {
    /// Opens the store at `req.path`, creating it if the path is missing or a 0-byte file.
    /// Anything that is not a memotag store is refused before SQLite opens it.
    pub fn open(req: &OpenRequest) -> Result<Database, OpenError> {
        let path = &req.path;
        match file::inspect(path)? {
            file::FileState::Missing | file::FileState::Empty if req.read_only => {
                return Err(OpenError::NotFound { path: path.clone() });
            }
            file::FileState::Missing | file::FileState::Empty => create(req)?,
            // A newer format generation is fine as long as its read level is one we read: the
            // session handshake decides (see `handshake`).
            file::FileState::Store { .. } => {}
        }
        open_existing(req)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Applies the store's mode to the connection (journal mode, synchronous, caches), once the
    /// session has accepted the store. Read-only handles change nothing.
    pub fn start(&mut self) -> Result<(), StorageError> {
        if !self.read_only {
            self.mode.configure(&self.conn, self.full_durability)?;
        }
        Ok(())
    }

    /// The file format generation (SQLite `user_version`).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub(crate) fn read_only_error(&self) -> StorageError {
        StorageError::ReadOnly {
            reason: self.read_only_reason.clone(),
        }
    }

    /// Opens the store read-only from here on, e.g. because its write level is newer than ours.
    #[allow(dead_code)] // for the compatibility levels of the procedure layer
    pub(crate) fn restrict_to_reads(&mut self, reason: String) {
        self.read_only = true;
        self.read_only_reason = Some(reason);
    }

    /// Runs `f` in a write transaction that takes the write lock before reading
    /// (`BEGIN IMMEDIATE`), waiting out other writers with jittered backoff, and commits it.
    /// If `f` fails, nothing it did is kept.
    pub fn write<T, E>(&mut self, f: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StorageError>,
    {
        if self.read_only {
            return Err(self.read_only_error().into());
        }
        let started = Instant::now();
        retry_busy(started, self.busy_timeout, || {
            self.conn.execute_batch("BEGIN IMMEDIATE")
        })?;
        let result = f(&self.conn);
        match result {
            Ok(value) => {
                let committed = retry_busy(started, self.busy_timeout, || {
                    self.conn.execute_batch("COMMIT")
                });
                if let Err(e) = committed {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(e.into());
                }
                Ok(value)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Runs `f` in a read transaction, so that everything it reads is one snapshot.
    pub fn read<T, E>(&self, f: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StorageError>,
    {
        let started = Instant::now();
        retry_busy(started, self.busy_timeout, || {
            self.conn.execute_batch("BEGIN DEFERRED")?;
            // Take the read snapshot now, so that busy errors surface here and not inside `f`.
            self.conn
                .query_row("SELECT count(*) FROM meta", [], |_| Ok(()))
                .inspect_err(|_| {
                    let _ = self.conn.execute_batch("ROLLBACK");
                })
        })?;
        let result = f(&self.conn);
        let _ = self.conn.execute_batch("COMMIT");
        result
    }

    /// Reads the handshake the file offers. A format-1 file predates the procedures table and
    /// the levels: its menu is every method at generation 1, its levels 1.
    pub fn handshake(&self) -> Result<FileHandshake, StorageError> {
        let number = |key: &str, default: u32| -> Result<u32, StorageError> {
            match self.meta(key)? {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| {
                    StorageError::Corrupt(format!("meta `{key}` is not a number: {v:?}"))
                }),
            }
        };
        let has_procedures: bool = self.conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'procedures'",
            [],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )?;
        let menu = if has_procedures {
            let mut menu = crate::protocol::Menu::new();
            let mut stmt = self
                .conn
                .prepare("SELECT method, generation FROM procedures")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))?;
            for row in rows {
                let (method, generation) = row?;
                menu = menu.with(&method, [generation]);
            }
            menu
        } else {
            crate::protocol::procedures::format1_menu()
        };
        Ok(FileHandshake {
            protocol: number("protocol", 1)?,
            library_version: self.meta("library_version")?,
            menu,
            read_level: number("read_level", 1)?,
            write_level: number("write_level", 1)?,
            generation: self.generation,
        })
    }

    /// Runs a few reads as one snapshot with as little ceremony as possible (the hot path of a
    /// hit): one read lock instead of one per statement.
    pub fn snapshot<T, E: From<StorageError>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let begin = self
            .conn
            .prepare_cached("BEGIN")
            .and_then(|mut s| s.execute([]));
        if begin.is_err() {
            // Already inside a transaction: read within it.
            return f(&self.conn);
        }
        if self.mode == Mode::Shared {
            // A rollback-journal reader waits for a committing writer: take the shared lock now,
            // with the same patience as writes, so that busy never surfaces from `f`.
            let locked = retry_busy(Instant::now(), self.busy_timeout, || {
                self.conn
                    .prepare_cached("SELECT 1 FROM meta LIMIT 1")?
                    .exists([])
            });
            if let Err(e) = locked {
                let _ = self
                    .conn
                    .prepare_cached("ROLLBACK")
                    .and_then(|mut s| s.execute([]));
                return Err(e.into());
            }
        }
        let result = f(&self.conn);
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let _ = self
            .conn
            .prepare_cached(end)
            .and_then(|mut s| s.execute([]));
        result
    }

    /// One value from `meta`.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StorageError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Registers (or finds) a client name, returning its small id.
    pub fn client_id(&mut self, name: &str) -> Result<i64, StorageError> {
        if let Some(id) = self
            .conn
            .query_row("SELECT id FROM clients WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?
        {
            return Ok(id);
        }
        if self.read_only {
            return Ok(0);
        }
        self.write(|conn| {
            conn.execute("INSERT OR IGNORE INTO clients (name) VALUES (?1)", [name])?;
            Ok::<_, StorageError>(conn.query_row(
                "SELECT id FROM clients WHERE name = ?1",
                [name],
                |r| r.get(0),
            )?)
        })
    }

    /// Copies the write-ahead log into the main file and truncates it (local mode), so that the
    /// main file alone holds every committed result; a no-op in shared mode.
    pub fn checkpoint(&self) -> Result<(), StorageError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// `PRAGMA integrity_check`: `["ok"]` for a healthy file.
    pub fn integrity_check(&self) -> Result<Vec<String>, StorageError> {
        let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Retries `op` while SQLite says the database is busy or locked, with jittered, growing sleeps,
/// until `timeout` has passed since `started`.
fn retry_busy<T>(
    started: Instant,
    timeout: Duration,
    mut op: impl FnMut() -> rusqlite::Result<T>,
) -> Result<T, StorageError> {
    let mut backoff_ms = 1u64;
    loop {
        match op() {
            Ok(value) => return Ok(value),
            Err(e) if is_busy(&e) => {
                let waited = started.elapsed();
                if waited >= timeout {
                    return Err(StorageError::Busy {
                        waited_ms: waited.as_millis() as u64,
                    });
                }
                let sleep = backoff_ms / 2 + fastrand::u64(0..=backoff_ms);
                std::thread::sleep(Duration::from_millis(sleep));
                backoff_ms = (backoff_ms * 2).min(50);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Turns a missing path or a 0-byte file into a store. Concurrent creators serialize on SQLite's
/// exclusive lock: the first applies the format, the others find it applied and do nothing.
fn create(req: &OpenRequest) -> Result<(), OpenError> {
    let dir = match req.path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mode = req.mode.unwrap_or_else(|| Mode::detect(&dir));
    let conn = Connection::open_with_flags(
        &req.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_SLICE)?;
    let started = Instant::now();
    retry_busy(started, req.busy_timeout, || {
        conn.execute_batch("BEGIN EXCLUSIVE")
    })?;
    let created = (|| -> Result<bool, OpenError> {
        let app_id: u32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let table_count: i64 =
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        if app_id == APPLICATION_ID {
            return Ok(false);
        }
        if table_count > 0 {
            // Something else wrote a database here between our check and our lock.
            return Err(OpenError::NotAStore {
                path: req.path.clone(),
                reason: "another program created a database at this path".to_string(),
            });
        }
        migrations::apply_from(&conn, 0, now_ms(), &req.menu)?;
        let store_id = uuid::Uuid::new_v4().to_string();
        let mut insert = conn.prepare("INSERT INTO meta (key, value) VALUES (?1, ?2)")?;
        insert.execute(["mode", mode.as_str()])?;
        insert.execute(["store_id", store_id.as_str()])?;
        insert.execute(["created_at", &now_ms().to_string()])?;
        insert.execute(["blob_threshold", &req.blob_threshold.to_string()])?;
        conn.execute_batch(&format!("PRAGMA application_id = {APPLICATION_ID};"))?;
        Ok(true)
    })();
    match created {
        Ok(true) => {
            retry_busy(started, req.busy_timeout, || conn.execute_batch("COMMIT"))?;
            // Journal mode lives in the file header; set it now so the file is in its mode.
            mode.configure(&conn, req.full_durability)?;
        }
        Ok(false) => {
            let _ = conn.execute_batch("ROLLBACK");
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(())
}

fn open_existing(req: &OpenRequest) -> Result<Database, OpenError> {
    let path = &req.path;
    let flags = if req.read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_SLICE)?;
    let has_meta: bool = conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'meta'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has_meta {
        return Err(OpenError::NotAStore {
            path: path.clone(),
            reason: "it has memotag's application_id but no memotag tables (damaged?)".to_string(),
        });
    }
    let stored_mode: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'mode'", [], |r| {
            r.get(0)
        })
        .optional()?
        .ok_or_else(|| OpenError::NotAStore {
            path: path.clone(),
            reason: "its meta table does not record a mode (damaged?)".to_string(),
        })?;
    let store_mode: Mode = stored_mode.parse().map_err(|reason| OpenError::NotAStore {
        path: path.clone(),
        reason,
    })?;
    if let Some(requested) = req.mode {
        if requested != store_mode {
            return Err(OpenError::ModeMismatch {
                path: path.clone(),
                store: store_mode,
                requested,
            });
        }
    }
    // Pragmas that can write the file (journal mode) wait for `Database::start`, after the
    // session's version checks: a store refused for its version is left as it was.
    if store_mode == Mode::Shared {
        conn.execute_batch("PRAGMA mmap_size=0;")?;
    }
    let generation: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let blobs = BlobStore::beside(path);
    Ok(Database {
        conn,
        path: path.clone(),
        mode: store_mode,
        read_only: req.read_only,
        read_only_reason: None,
        generation,
        busy_timeout: req.busy_timeout,
        full_durability: req.full_durability,
        blobs,
    })
}
