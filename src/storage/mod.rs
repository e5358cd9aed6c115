//! The only code that speaks SQL: opening and creating store files, modes and pragmas, the
//! format migrations in `schema/`, the catalog tables, memo tables, values and blob files.
//!
//! It knows nothing about what a valid schema change or a valid call is (`schema` and `calls`
//! decide that); it stores what it is given, inside transactions it is asked to run.

mod backup;
mod blobs;
pub mod catalog;
pub mod code;
mod file;
pub mod lock;
pub mod maintenance;
pub mod memo;
mod migrations;
mod mode;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

pub use backup::BackupReport;
pub use blobs::BlobStore;
pub use file::APPLICATION_ID;
pub use lock::{LockConfig, LockMethod};
pub use migrations::{FORMAT_GENERATION, MIGRATIONS};
pub use mode::{filesystem_kind, FilesystemKind, Mode};

use lock::{Held, LeaseLock};

use crate::error::{OpenError, StorageError};

/// How long one attempt waits on SQLite's own busy handler before we back off and retry.
const BUSY_SLICE: Duration = Duration::from_millis(200);

/// SQLite's unix VFS without any file locking: in shared mode the lease lock (see `lock`) is
/// the only lock, for every client on every host, so POSIX locks would only add locks that do
/// not work across hosts and that a fenced connection could leave behind.
const NO_LOCK_VFS: &str = "unix-none";

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
    /// `None`: the store's own lock method. Otherwise an existing store must use this one.
    pub lock_method: Option<LockMethod>,
    /// Lease, wait and interrupt of the shared-mode lock.
    pub lock: LockConfig,
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
    /// In shared mode, replaced by a fresh connection every time the lock is taken.
    pub(crate) conn: Connection,
    path: PathBuf,
    mode: Mode,
    lock_method: LockMethod,
    /// The lease lock every transaction takes (lock method `lease-dir`).
    lease: Option<LeaseLock>,
    read_only: bool,
    read_only_reason: Option<String>,
    generation: u32,
    busy_timeout: Duration,
    /// Polled while waiting for other writers (local mode; shared mode's lock polls its own).
    interrupt: Option<lock::Interrupt>,
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
    ///
    /// Every name of one store file (symlinks) opens the same store: the path is resolved
    /// first, so that all its clients share one lock, one journal and one blob folder.
    pub fn open(req: &OpenRequest) -> Result<Database, OpenError> {
        let resolved = OpenRequest {
            path: file::resolve(&req.path),
            ..req.clone()
        };
        let req = &resolved;
        let path = &req.path;
        match inspect_confirmed(path, &req.lock)? {
            file::FileState::Missing | file::FileState::Empty if req.read_only => {
                return Err(OpenError::NotFound { path: path.clone() });
            }
            file::FileState::Missing | file::FileState::Empty => create(req)?,
            // A newer format generation is fine as long as its read level is one we read: the
            // session handshake decides (see `handshake`).
            file::FileState::Store { .. } => {}
        }
        refuse_hard_links(path)?;
        let was_wal = file::is_wal(path);
        match open_existing(req) {
            // A switch to shared mode killed half way leaves a rollback-mode header and a
            // journal holding the WAL header: the lock-less connection rolled it back, and the
            // file is a WAL (local) store again. Open it as one.
            Err(_) if !was_wal && file::is_wal(path) => open_existing(req),
            other => other,
        }
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

    pub fn lock_method(&self) -> LockMethod {
        self.lock_method
    }

    /// Applies the store's mode to the file and connection (journal mode, synchronous, caches),
    /// once the session has accepted the store. Read-only handles change nothing.
    pub fn start(&mut self) -> Result<(), StorageError> {
        if !self.read_only && self.lease.is_none() {
            // Switching the journal mode needs a moment alone with the file: another client
            // opening or creating the store at the same time makes it wait, not fail.
            retry_busy(Instant::now(), self.busy_timeout, || {
                self.mode.configure(&self.conn, self.full_durability)
            })?;
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
        if self.lease.is_some() {
            return self.write_leased(f);
        }
        let started = Instant::now();
        retry_busy_interruptible(started, self.busy_timeout, self.interrupt.as_ref(), || {
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

    /// `write` in shared mode: take the lease lock, reopen (fresh pages, hot journal of a dead
    /// holder rolled back), run `f`, and commit only if the lock is still ours just before COMMIT.
    fn write_leased<T, E>(&mut self, f: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StorageError>,
    {
        let held = self.take_lease()?;
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(StorageError::from)?;
        let result = f(&self.conn);
        if let Some(pause) = self
            .lease
            .as_ref()
            .and_then(|l| l.config().pause_before_commit)
        {
            std::thread::sleep(pause);
        }
        if let Err(lost) = held.fence() {
            // Neither COMMIT nor ROLLBACK: with the lock gone, even a rollback would write (it
            // deletes the journal by name, which may now be the new holder's). The transaction
            // lives only in this connection's cache (cache_spill is off); drop it unclosed.
            self.abandon_connection();
            return Err(lost.into());
        }
        let outcome = match result {
            Ok(value) => match self.conn.execute_batch("COMMIT") {
                Ok(()) => Ok(value),
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    Err(StorageError::from(e).into())
                }
            },
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        };
        held.release();
        outcome
    }

    /// Takes the lease lock and reopens the connection under it.
    fn take_lease(&mut self) -> Result<Held, StorageError> {
        let lease = self.lease.as_ref().expect("shared mode has a lease lock");
        let held = lease.acquire()?;
        // A store switched to local mode is in WAL, which a lock-less connection cannot open.
        self.reopen().map_err(|e| {
            if file::is_wal(&self.path) {
                StorageError::ModeSwitched {
                    path: self.path.clone(),
                }
            } else {
                e
            }
        })?;
        // `memotag set-mode` may have switched the store (under this same lock) since it was
        // opened: never go on with the old method.
        // (A store older than format 3 records no method: its mode's.)
        let switched = || StorageError::ModeSwitched {
            path: self.path.clone(),
        };
        // A store switched to local mode is in WAL, which this lock-less connection cannot open.
        let method = meta_value(&self.conn, "lock_method").map_err(|e| {
            if file::is_wal(&self.path) {
                switched()
            } else {
                e
            }
        })?;
        let mode = meta_value(&self.conn, "mode")?;
        let method_ok = method.is_none_or(|m| m == LockMethod::LeaseDir.as_str());
        if !method_ok || mode.as_deref() != Some(Mode::Shared.as_str()) {
            return Err(switched());
        }
        if let Some(broken) = held.broke() {
            self.note_broken_lock(broken);
        }
        Ok(held)
    }

    /// A new connection to the file, opened after the lock was taken. Reopening is what makes
    /// the pages fresh on NFS (close-to-open consistency) and on sshfs without `kernel_cache`;
    /// it is also when SQLite rolls back a hot journal a dead holder left.
    fn reopen(&mut self) -> Result<(), StorageError> {
        if self.read_only {
            recover_hot_journal(&self.path, Some(NO_LOCK_VFS))?;
        }
        let conn = connect(&self.path, self.read_only, Some(NO_LOCK_VFS))?;
        conn.busy_timeout(BUSY_SLICE)?;
        Mode::Shared.configure_connection(&conn)?;
        self.conn = conn;
        Ok(())
    }

    /// Replaces the connection without closing the old one: closing would roll back, and a
    /// rollback writes. The leak (a few file descriptors and the cache) happens only when a
    /// paused holder lost its lock.
    fn abandon_connection(&mut self) {
        match Connection::open_in_memory() {
            Ok(placeholder) => std::mem::forget(std::mem::replace(&mut self.conn, placeholder)),
            Err(_) => {
                // Cannot happen in practice; never close the abandoned connection regardless.
                let abandoned = std::mem::replace(
                    &mut self.conn,
                    Connection::open_in_memory().expect("an in-memory database"),
                );
                std::mem::forget(abandoned);
            }
        }
    }

    /// Records a lock this client broke: a row in `lock_breaks` (format 3 and later, writable
    /// sessions; `memotag info` shows the last one). The log line was written when it broke.
    fn note_broken_lock(&self, broken: &lock::BrokenLock) {
        if self.read_only {
            return;
        }
        let holder = broken.holder.as_ref();
        let recorded = self.conn.execute(
            "INSERT INTO lock_breaks (broken_at, holder_host, holder_pid, holder_started,
                                      holder_token, lease_ms, silent_ms, broken_by)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
             WHERE EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'lock_breaks')",
            rusqlite::params![
                broken.broken_at_ms,
                holder.map(|o| o.host.clone()),
                holder.map(|o| o.pid),
                holder.map(|o| o.started_ms),
                holder.map(|o| o.token.clone()),
                holder.map(|o| o.lease_ms as i64),
                broken.silent_ms as i64,
                broken.broken_by,
            ],
        );
        if let Err(e) = recorded {
            eprintln!("memotag: could not record the broken lock in the store: {e}");
        }
    }

    /// Runs `f` on one consistent view of the store: in local mode directly (each statement is
    /// its own snapshot, and WAL readers never wait), in shared mode inside `read`, under the
    /// lock.
    pub fn snapshot<T, E>(&mut self, f: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StorageError>,
    {
        if self.lease.is_some() {
            return self.read(f);
        }
        // One read transaction: one WAL read lock instead of one per statement (the hot path of
        // a hit). Already inside a transaction: read within it.
        let begin = self
            .conn
            .prepare_cached("BEGIN")
            .and_then(|mut s| s.execute([]));
        if begin.is_err() {
            return f(&self.conn);
        }
        let result = f(&self.conn);
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let _ = self
            .conn
            .prepare_cached(end)
            .and_then(|mut s| s.execute([]));
        result
    }

    /// Copies the write-ahead log into the main file and truncates it (local mode), so that the
    /// main file alone holds every committed result; a no-op in shared mode.
    pub fn checkpoint(&self) -> Result<(), StorageError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Runs `f` in a read transaction, so that everything it reads is one snapshot. In shared
    /// mode it takes the same lock as a write: a reader never sees a half-written transaction
    /// and never mistakes a live writer's journal for a dead one's.
    pub fn read<T, E>(&mut self, f: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StorageError>,
    {
        if self.lease.is_some() {
            let held = self.take_lease()?;
            self.conn
                .execute_batch("BEGIN DEFERRED")
                .map_err(StorageError::from)?;
            let result = f(&self.conn);
            let _ = self.conn.execute_batch("COMMIT");
            // What was read while the lock was lost may be torn: do not hand it out.
            held.fence()?;
            held.release();
            return result;
        }
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
    pub fn handshake(&mut self) -> Result<FileHandshake, StorageError> {
        let generation = self.generation;
        self.snapshot(|conn| handshake_of(conn, generation))
    }

    /// One value from `meta`.
    pub fn meta(&mut self, key: &str) -> Result<Option<String>, StorageError> {
        self.snapshot(|conn| meta_value(conn, key))
    }

    /// Registers (or finds) a client name, returning its small id.
    pub fn client_id(&mut self, name: &str) -> Result<i64, StorageError> {
        let found = self.snapshot(|conn| -> Result<Option<i64>, StorageError> {
            Ok(conn
                .query_row("SELECT id FROM clients WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()?)
        })?;
        if let Some(id) = found {
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

    /// `PRAGMA integrity_check`: `["ok"]` for a healthy file.
    pub fn integrity_check(&mut self) -> Result<Vec<String>, StorageError> {
        self.snapshot(|conn| {
            let mut stmt = conn.prepare("PRAGMA integrity_check")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

/// The handshake a file offers (see `Database::handshake`).
fn handshake_of(conn: &Connection, generation: u32) -> Result<FileHandshake, StorageError> {
    {
        let number = |key: &str, default: u32| -> Result<u32, StorageError> {
            match meta_value(conn, key)? {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| {
                    StorageError::Corrupt(format!("meta `{key}` is not a number: {v:?}"))
                }),
            }
        };
        let has_procedures: bool = conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'procedures'",
            [],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )?;
        let menu = if has_procedures {
            let mut menu = crate::protocol::Menu::new();
            let mut stmt = conn.prepare("SELECT method, generation FROM procedures")?;
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
            library_version: meta_value(conn, "library_version")?,
            menu,
            read_level: number("read_level", 1)?,
            write_level: number("write_level", 1)?,
            generation,
        })
    }
}

fn meta_value(conn: &Connection, key: &str) -> Result<Option<String>, StorageError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

/// Retries `op` while SQLite says the database is busy or locked, with jittered, growing sleeps,
/// until `timeout` has passed since `started`.
fn retry_busy<T>(
    started: Instant,
    timeout: Duration,
    op: impl FnMut() -> rusqlite::Result<T>,
) -> Result<T, StorageError> {
    retry_busy_interruptible(started, timeout, None, op)
}

/// [`retry_busy`], giving up with `StorageError::Interrupted` when `interrupt` says so (e.g. the
/// user pressed Ctrl-C while another process held the store).
fn retry_busy_interruptible<T>(
    started: Instant,
    timeout: Duration,
    interrupt: Option<&lock::Interrupt>,
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
                if interrupt.is_some_and(|stop| stop()) {
                    return Err(StorageError::Interrupted);
                }
                let sleep = backoff_ms / 2 + fastrand::u64(0..=backoff_ms);
                std::thread::sleep(Duration::from_millis(sleep));
                backoff_ms = (backoff_ms * 2).min(50);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether SQLite said another connection holds the database (busy or locked).
pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Unix milliseconds, as every time column and log entry stores them.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Opens a SQLite connection to an existing file, with the given VFS (`None`: the default, for
/// local-mode stores in WAL).
fn connect(path: &Path, read_only: bool, vfs: Option<&str>) -> Result<Connection, StorageError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    Ok(match vfs {
        Some(vfs) => Connection::open_with_flags_and_vfs(path, flags, vfs)?,
        None if read_only && wal_needs_immutable(path)? => {
            let uri = format!("file:{}?immutable=1", uri_path(path));
            Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)?
        }
        None => Connection::open_with_flags(path, flags)?,
    })
}

/// Whether a read-only client must read a WAL store as immutable. SQLite reads a WAL database
/// through its `-shm` file, which a read-only client can use when it exists or create when it may
/// write the folder. Otherwise: on a read-only file system nothing can change the store, so it
/// is read as immutable; in a folder others may still write, no consistent read is possible, and
/// the error says what is missing.
fn wal_needs_immutable(path: &Path) -> Result<bool, StorageError> {
    let shm = file::side_file(path, "-shm");
    let folder = file::folder_of(path);
    if shm.exists() || file::may_write(folder) {
        return Ok(false);
    }
    if file::on_read_only_file_system(folder) {
        return Ok(true);
    }
    Err(StorageError::ReadOnly {
        reason: Some(format!(
            "reading this local-mode store needs its shared-memory file {}, which no client has \
             open now and which this client may not create in {} (no write access); open it \
             as a user who may write that folder, or read a copy",
            shm.display(),
            folder.display()
        )),
    })
}

/// A path as a SQLite URI path (`%`, `?` and `#` escaped).
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

/// `file::inspect`, with a truncation (or a first page that is not all there yet) confirmed
/// under the store's lease lock before it is believed: a shared-mode writer and every creator
/// hold that lock for their whole commit, so under it the file is at rest. (A WAL file's only
/// writer of the main file is a checkpoint, which `inspect` already
/// sees through the WAL beside it.) If the lock cannot be taken, the lock-free verdict stands.
pub(crate) fn inspect_confirmed(
    path: &Path,
    lock: &LockConfig,
) -> Result<file::FileState, OpenError> {
    let doubtful = |e: &OpenError| match e {
        OpenError::Truncated { .. } => !file::is_wal(path),
        // Seen through a network filesystem, a store another client is creating may show its
        // first page late: zeros, or already whole when read again.
        OpenError::NotAStore { .. } => {
            file::may_be_in_creation(path) || file::inspect(path).is_ok()
        }
        _ => false,
    };
    match file::inspect(path) {
        Err(e) if doubtful(&e) => match LeaseLock::beside(path, lock.clone()).acquire() {
            Ok(held) => {
                let confirmed = file::inspect(path);
                drop(held);
                confirmed
            }
            Err(_) => file::inspect(path),
        },
        other => other,
    }
}

/// Rolls back the journal a client killed mid-commit left (a shared-mode writer, or a
/// `set-mode` switching journal modes), for a read-only client: a read-only SQLite connection
/// cannot roll a hot journal back and would fail every read until some writer came along. This
/// opens a read-write connection (with the VFS the caller reads with: `unix-none` under the lease
/// lock, where any journal is hot because every writer holds that lock until its journal is
/// gone; the default VFS otherwise, whose POSIX locks tell a live writer's journal from a dead
/// one's) just long enough for SQLite to roll it back. A client that may not write the store
/// gets `StorageError::JournalNeedsWriter`, saying what recovers it.
fn recover_hot_journal(path: &Path, vfs: Option<&str>) -> Result<(), StorageError> {
    let journal = file::side_file(path, "-journal");
    let hot = || std::fs::metadata(&journal).is_ok_and(|m| m.len() > 0);
    if !hot() {
        return Ok(());
    }
    let needs_writer = |source: std::io::Error| StorageError::JournalNeedsWriter {
        path: path.to_path_buf(),
        journal: journal.clone(),
        source,
    };
    // Opening read-write succeeds on a read-only file system or file (SQLite falls back to read
    // only), so ask the file system first.
    if let Err(e) = std::fs::OpenOptions::new().write(true).open(path) {
        return Err(needs_writer(e));
    }
    let conn = connect(path, false, vfs)?;
    conn.busy_timeout(BUSY_SLICE)?;
    match conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(())) {
        Ok(()) => Ok(()),
        // Rolled back, then the restored header asked for WAL, which this VFS cannot open: the
        // recovery is done all the same, and the caller opens the file in its restored mode.
        Err(_) if !hot() => Ok(()),
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ReadOnly) => {
            Err(needs_writer(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                e.to_string(),
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// Refuses a store file with more than one hard link: SQLite names the journal and WAL after
/// the name it was opened by, and memotag its lock and blob folder, so two names of one file
/// would be two stores writing one file. (Symlinks are resolved instead; see `Database::open`.)
fn refuse_hard_links(path: &Path) -> Result<(), OpenError> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(meta) if meta.nlink() > 1 => Err(OpenError::NotAStore {
            path: path.to_path_buf(),
            reason: format!(
                "the file has {} hard links; memotag (like SQLite) names a store's journal, lock \
                 and blob folder after its path, so two names of one file would corrupt it. \
                 Keep one name (remove the other links, or copy the file with `cp`)",
                meta.nlink()
            ),
        }),
        _ => Ok(()),
    }
}

/// Turns a missing path or a 0-byte file into a store. Concurrent creators serialize on SQLite's
/// exclusive lock (and, for a shared-mode store, on the lease lock first, because SQLite's locks
/// may not reach across hosts): the first applies the format, the others find it applied.
fn create(req: &OpenRequest) -> Result<(), OpenError> {
    let dir = file::folder_of(&req.path);
    let (mode, mode_reason) = req.mode.map_or_else(
        || Mode::detect_with_reason(dir),
        |m| (m, format!("asked for when the store was created ({m})")),
    );
    let method = req.lock_method.unwrap_or(LockMethod::for_mode(mode));
    // Every creator takes the lease lock, whatever the mode: until the new file is in WAL, an
    // opener cannot tell a local store from a shared one and reads it under that lock (see
    // `open_existing`), so the lock must keep it out of a half-created store of either mode.
    let held = LeaseLock::beside(&req.path, req.lock.clone()).acquire()?;
    let vfs = (method == LockMethod::LeaseDir).then_some(NO_LOCK_VFS);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match vfs {
        Some(vfs) => Connection::open_with_flags_and_vfs(&req.path, flags, vfs)?,
        None => Connection::open_with_flags(&req.path, flags)?,
    };
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
        let mut insert = conn.prepare(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )?;
        insert.execute(["mode", mode.as_str()])?;
        insert.execute(["mode_reason", mode_reason.as_str()])?;
        insert.execute(["lock_method", method.as_str()])?;
        insert.execute(["store_id", store_id.as_str()])?;
        insert.execute(["created_at", &now_ms().to_string()])?;
        insert.execute(["blob_threshold", &req.blob_threshold.to_string()])?;
        migrations::raise_levels(&conn)?;
        conn.execute_batch(&format!("PRAGMA application_id = {APPLICATION_ID};"))?;
        Ok(true)
    })();
    match created {
        Ok(true) => {
            retry_busy(started, req.busy_timeout, || conn.execute_batch("COMMIT"))?;
            // Journal mode lives in the file header; set it now so the file is in its mode.
            retry_busy(Instant::now(), req.busy_timeout, || {
                mode.configure(&conn, req.full_durability)
            })?;
        }
        Ok(false) => {
            let _ = conn.execute_batch("ROLLBACK");
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    drop(conn);
    drop(held);
    Ok(())
}

fn open_existing(req: &OpenRequest) -> Result<Database, OpenError> {
    let path = &req.path;
    // A file in rollback-journal mode may be a shared store: read even its mode under the lease
    // lock, as every shared-mode client reads everything. A WAL file is a local store (one that
    // a creator switched to WAL while we waited for the lock is one too).
    let mut lease = None;
    let mut held = None;
    // On a read-only file system nothing can change the store: a reader needs no lock (and
    // could not take one), whatever the mode, and reads it as immutable.
    let frozen = req.read_only && file::on_read_only_file_system(file::folder_of(path));
    if !frozen && !file::is_wal(path) {
        let lock = LeaseLock::beside(path, req.lock.clone());
        let taken = lock.acquire()?;
        if file::is_wal(path) {
            drop(taken);
        } else {
            lease = Some(lock);
            held = Some(taken);
        }
    }
    if req.read_only {
        recover_hot_journal(path, held.as_ref().map(|_| NO_LOCK_VFS))?;
    }
    let mut conn = connect(path, req.read_only, held.as_ref().map(|_| NO_LOCK_VFS))?;
    // While opening, wait as long as a write would: a client creating or converting the store at
    // the same moment holds it briefly, and opening must not fail for that.
    conn.busy_timeout(req.busy_timeout)?;
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
    let stored_mode = meta_value(&conn, "mode")?.ok_or_else(|| OpenError::NotAStore {
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
    // Stores made before format generation 3 do not record a method: their mode's.
    let stored_method = meta_value(&conn, "lock_method")?
        .unwrap_or_else(|| LockMethod::for_mode(store_mode).as_str().to_string());
    let requested_method = req
        .lock_method
        .unwrap_or_else(|| LockMethod::for_mode(store_mode));
    let method: LockMethod = match stored_method.parse() {
        Ok(m) if req.lock_method.is_none() || m == requested_method => m,
        _ => {
            return Err(OpenError::LockMethodMismatch {
                path: path.clone(),
                store: stored_method,
                requested: requested_method,
            })
        }
    };
    match (method, held.is_some()) {
        _ if frozen => {}
        (LockMethod::LeaseDir, true) | (LockMethod::Posix, false) => {}
        (LockMethod::LeaseDir, false) => {
            // A WAL header on a store that says shared: a switch was interrupted. Take the lock
            // and reopen; configuring below leaves WAL.
            drop(conn);
            lease = Some(LeaseLock::beside(path, req.lock.clone()));
            held = lease.as_ref().map(LeaseLock::acquire).transpose()?;
            conn = connect(path, req.read_only, Some(NO_LOCK_VFS))?;
            conn.busy_timeout(req.busy_timeout)?;
        }
        (LockMethod::Posix, true) => {
            drop(conn);
            drop(held.take());
            lease = None;
            conn = connect(path, req.read_only, None)?;
            conn.busy_timeout(req.busy_timeout)?;
        }
    }
    // Pragmas that can write the file (the journal mode) wait for `Database::start`, after the
    // session's version checks: a store refused for its version is left as it was.
    store_mode.configure_connection(&conn)?;
    let generation: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    conn.busy_timeout(BUSY_SLICE)?;
    let blobs = BlobStore::beside(path);
    // SQLite silently opens a file this user may not write read-only: say so, as a read-only
    // store, instead of failing every write with a generic error.
    let file_read_only = !req.read_only && conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false);
    let db = Database {
        conn,
        path: path.clone(),
        mode: store_mode,
        lock_method: method,
        lease,
        read_only: req.read_only || file_read_only,
        read_only_reason: file_read_only
            .then(|| "the store file is not writable by this user".to_string()),
        generation,
        busy_timeout: req.busy_timeout,
        interrupt: req.lock.interrupt.clone(),
        full_durability: req.full_durability,
        blobs,
    };
    if let Some(broken) = held.as_ref().and_then(Held::broke) {
        db.note_broken_lock(broken);
    }
    drop(held);
    Ok(db)
}
