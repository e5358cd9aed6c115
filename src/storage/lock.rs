//! The cross-host lock of shared mode: a lease on a lock directory beside the store.
//!
//! SQLite's own locks are POSIX advisory locks, and those are often invisible from one host to
//! the next on network filesystems (through two sshfs mounts of one directory, a third of the
//! acknowledged commits were lost). What every network filesystem does serialize across hosts is
//! `mkdir`: exactly one client creates a directory. So a client in shared mode takes
//! `<store>.memotag-lock/` for every transaction, read or write, and writes into it an `owner`
//! file naming itself (host, pid, process start time) and its lease. While it holds the lock a
//! thread renews the lease by rewriting `owner`.
//!
//! A waiter never compares clocks across hosts: it breaks a lock only after it has seen the same
//! `owner` bytes for a whole lease by its own monotonic clock (renewals change the bytes). A
//! holder fences itself: just before COMMIT it checks that its last confirmed renewal is recent
//! and that `owner` still carries its token; otherwise it gives the transaction up without
//! touching the file (see `Database::write`).
//!
//! This module owns the lock directory and the decisions about it (`Watch`, `fence_decision` are
//! pure and tested without I/O). It knows nothing about SQLite: the storage layer reopens its
//! connection after taking the lock and records broken locks in the store.
//!
//! The directory is deliberately not SQLite's own `<store>.lock` (the unix-dotfile VFS's), and
//! nothing is ever put inside that one.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::now_ms;
use crate::error::StorageError;

/// How long a holder's lease lasts without renewal, by default.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// A holder renews its lease this many times per lease.
const RENEWALS_PER_LEASE: u32 = 4;

/// How clients of one store exclude each other; recorded in the store's `meta` (`lock_method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockMethod {
    /// SQLite's own POSIX locks (and WAL's shared memory): one host only. Local mode.
    Posix,
    /// A leased lock directory beside the store, taken for every transaction. Shared mode.
    LeaseDir,
}

impl LockMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMethod::Posix => "posix",
            LockMethod::LeaseDir => "lease-dir",
        }
    }

    /// The method a store of this mode uses when its meta does not say (stores made before
    /// format generation 3) and when a store is created or switched.
    pub fn for_mode(mode: super::Mode) -> LockMethod {
        match mode {
            super::Mode::Local => LockMethod::Posix,
            super::Mode::Shared => LockMethod::LeaseDir,
        }
    }
}

impl fmt::Display for LockMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LockMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "posix" => Ok(LockMethod::Posix),
            "lease-dir" => Ok(LockMethod::LeaseDir),
            other => Err(format!(
                "unknown lock method `{other}` (this memotag knows `posix` and `lease-dir`)"
            )),
        }
    }
}

/// Called while waiting for the lock; returning `true` gives the wait up with
/// [`StorageError::Interrupted`]. The Python binding can wire it to `PyErr_CheckSignals`.
pub type Interrupt = Arc<dyn Fn() -> bool + Send + Sync>;

/// The lock settings of one client.
#[derive(Clone)]
pub struct LockConfig {
    /// How long this client's lease lasts without renewal.
    pub lease: Duration,
    /// How long to wait for the lock before failing with `StorageError::Busy`.
    pub wait: Duration,
    pub interrupt: Option<Interrupt>,
    /// Fault injection for tests: sleep this long while holding the lock, just before the fence
    /// check of a write.
    pub pause_before_commit: Option<Duration>,
}

impl fmt::Debug for LockConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockConfig")
            .field("lease", &self.lease)
            .field("wait", &self.wait)
            .field("interrupt", &self.interrupt.is_some())
            .finish()
    }
}

/// Who holds a lock, as its `owner` file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Unique per acquisition: the lock's generation, checked before every commit.
    pub token: String,
    pub host: String,
    pub pid: u32,
    /// When the holding process started (unix ms).
    pub started_ms: i64,
    /// When the lock was taken and last renewed (unix ms, the holder's clock; for people only).
    pub acquired_ms: i64,
    pub renewed_ms: i64,
    pub lease_ms: u64,
    pub renewals: u64,
    /// The holder's process space: its kernel's boot id and its pid namespace. A waiter in the
    /// same space can ask the kernel whether the holder is alive (older owners have none).
    pub space: Option<String>,
}

impl Owner {
    fn render(&self) -> String {
        let mut text = format!(
            "token={}\nhost={}\npid={}\nstarted_ms={}\nacquired_ms={}\nrenewed_ms={}\nlease_ms={}\nrenewals={}\n",
            self.token,
            self.host,
            self.pid,
            self.started_ms,
            self.acquired_ms,
            self.renewed_ms,
            self.lease_ms,
            self.renewals
        );
        if let Some(space) = &self.space {
            text.push_str(&format!("space={space}\n"));
        }
        text
    }

    /// Whether the holder is certainly gone: it ran in this process space (same kernel boot,
    /// same pid namespace) and no process with its pid and start time exists. Anything else
    /// (another machine, another namespace, an unreadable /proc) counts as alive: only its lease
    /// can tell.
    pub fn is_dead_here(&self) -> bool {
        let Some(space) = &self.space else {
            return false;
        };
        if process_space().as_deref() != Some(space.as_str()) {
            return false;
        }
        match start_ms_of(&format!("/proc/{}", self.pid)) {
            Some(started) => started != self.started_ms,
            // No such process (or it ended between the reads).
            None => !Path::new(&format!("/proc/{}", self.pid)).exists(),
        }
    }

    /// Parses an `owner` file; `None` for a partial or foreign one.
    pub fn parse(text: &str) -> Option<Owner> {
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
        };
        Some(Owner {
            token: get("token")?,
            host: get("host")?,
            pid: get("pid")?.parse().ok()?,
            started_ms: get("started_ms")?.parse().ok()?,
            acquired_ms: get("acquired_ms")?.parse().ok()?,
            renewed_ms: get("renewed_ms")?.parse().ok()?,
            lease_ms: get("lease_ms")?.parse().ok()?,
            renewals: get("renewals")?.parse().ok()?,
            space: get("space"),
        })
    }

    /// `host pid N (started …)`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} pid {} (process started at unix ms {})",
            self.host, self.pid, self.started_ms
        )
    }
}

/// A lock this client broke because its holder stopped renewing it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokenLock {
    /// The holder, if its `owner` file was readable.
    pub holder: Option<Owner>,
    /// How long the waiter saw the lock unchanged before breaking it.
    pub silent_ms: u64,
    pub broken_at_ms: i64,
    /// `host pid N` of the client that broke it.
    pub broken_by: String,
}

// ---- pure decisions ----------------------------------------------------------------------------

/// What a waiter should do about a lock it cannot take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The holder is alive as far as anyone can tell: wait.
    Wait,
    /// The `owner` bytes have not changed for a whole lease: the holder is dead or paused.
    Expired { silent: Duration },
}

/// A waiter's view of one lock: the `owner` bytes it saw last and since when (its own monotonic
/// clock). No clock of another host is ever trusted.
#[derive(Clone, Debug, Default)]
pub struct Watch {
    seen: Option<(Option<String>, Instant)>,
}

impl Watch {
    /// Records what the `owner` file holds now (`None`: missing or unreadable) and decides.
    /// The lease is the holder's own (from the file), or `default_lease` when it cannot be read.
    pub fn observe(
        &mut self,
        owner: Option<&str>,
        now: Instant,
        default_lease: Duration,
    ) -> Verdict {
        match &self.seen {
            Some((bytes, _)) if bytes.as_deref() == owner => {}
            _ => {
                self.seen = Some((owner.map(str::to_string), now));
                return Verdict::Wait;
            }
        }
        let since = self.seen.as_ref().map(|(_, t)| *t).unwrap_or(now);
        let lease = owner
            .and_then(Owner::parse)
            .map(|o| Duration::from_millis(o.lease_ms))
            .unwrap_or(default_lease);
        let silent = now.saturating_duration_since(since);
        if silent >= lease {
            Verdict::Expired { silent }
        } else {
            Verdict::Wait
        }
    }

    /// The bytes this verdict was about.
    pub fn seen(&self) -> Option<&str> {
        self.seen.as_ref().and_then(|(b, _)| b.as_deref())
    }

    pub fn reset(&mut self) {
        self.seen = None;
    }
}

/// Why a holder may not commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lost {
    /// The lease was not confirmed for this long (at least half a lease): a waiter may already
    /// have broken it, or will while the commit writes.
    NotRenewed { for_ms: u64, lease_ms: u64 },
    /// The `owner` file no longer carries this holder's token: the lock was broken.
    Taken,
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lost::NotRenewed { for_ms, lease_ms } => write!(
                f,
                "its lease was last confirmed {for_ms} ms ago (lease {lease_ms} ms): the process was paused or the filesystem stalled"
            ),
            Lost::Taken => f.write_str("another client broke the lock after its lease expired"),
        }
    }
}

/// Whether a holder may commit now: only with a renewal confirmed less than half a lease ago
/// (so the commit's writes finish well inside the lease) and its token still in `owner`.
pub fn fence_decision(
    since_confirmed: Duration,
    lease: Duration,
    token_still_ours: bool,
) -> Result<(), Lost> {
    if !token_still_ours {
        return Err(Lost::Taken);
    }
    if since_confirmed >= lease / 2 {
        return Err(Lost::NotRenewed {
            for_ms: since_confirmed.as_millis() as u64,
            lease_ms: lease.as_millis() as u64,
        });
    }
    Ok(())
}

/// The next sleep of a waiter: jittered, growing to 50 ms.
fn backoff(step: u32) -> Duration {
    let base = (2u64 << step.min(5)).min(50);
    Duration::from_millis(base / 2 + fastrand::u64(0..=base / 2))
}

// ---- the lock directory ------------------------------------------------------------------------

/// The lease lock of one store, as one client sees it.
#[derive(Debug)]
pub struct LeaseLock {
    dir: PathBuf,
    config: LockConfig,
}

impl LeaseLock {
    pub fn beside(store: &Path, config: LockConfig) -> LeaseLock {
        LeaseLock {
            dir: lock_dir(store),
            config,
        }
    }

    pub fn config(&self) -> &LockConfig {
        &self.config
    }

    /// Takes the lock, waiting for the holder to release it or for its lease to expire (then
    /// breaking it), until the configured wait has passed or the interrupt says stop.
    pub fn acquire(&self) -> Result<Held, StorageError> {
        let started = Instant::now();
        let mut watch = Watch::default();
        let mut broke = None;
        let mut step = 0;
        loop {
            match fs::create_dir(&self.dir) {
                Ok(()) => return self.hold(broke),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                // A folder this client may not write (or a read-only file system) is not
                // contention: waiting would only end in a timeout that names nobody.
                Err(e) if self.folder_refuses_writes(&e) => {
                    return Err(StorageError::ReadOnly {
                        reason: Some(format!(
                            "the shared-mode lock {} cannot be created: {e}; every client of a \
                             shared-mode store, readers included, takes this lock, so it needs \
                             write access to the store's folder",
                            self.dir.display()
                        )),
                    });
                }
                // Network filesystems report a lost race for a directory in other ways too
                // (sshfs: EPERM for SFTP's generic failure, ENOENT while another client renames
                // the lock away): contention, as long as the store's directory is there.
                Err(e) if self.dir.parent().is_some_and(Path::is_dir) => {
                    let _ = e;
                }
                Err(e) => return Err(StorageError::io(&self.dir, e)),
            }
            let owner = fs::read_to_string(self.dir.join("owner")).ok();
            let now = Instant::now();
            // A holder that died on this machine (a killed `migrate`, a crashed notebook) is
            // broken at once, not after its lease: the kernel says it is gone.
            if owner
                .as_deref()
                .and_then(Owner::parse)
                .is_some_and(|o| o.is_dead_here())
            {
                if let Some(b) = self.break_expired(owner.as_deref(), Duration::ZERO)? {
                    broke = Some(b);
                    watch.reset();
                    continue;
                }
            }
            if let Verdict::Expired { silent } =
                watch.observe(owner.as_deref(), now, self.config.lease)
            {
                if let Some(b) = self.break_expired(watch.seen(), silent)? {
                    broke = Some(b);
                    watch.reset();
                    continue;
                }
                watch.reset();
            }
            if self.config.interrupt.as_ref().is_some_and(|stop| stop()) {
                return Err(StorageError::Interrupted);
            }
            let waited = started.elapsed();
            if waited >= self.config.wait {
                return Err(StorageError::LockTimeout {
                    path: self.dir.clone(),
                    waited_ms: waited.as_millis() as u64,
                    holder: owner
                        .as_deref()
                        .and_then(Owner::parse)
                        .map(|o| o.describe())
                        .unwrap_or_else(|| "unknown".to_string()),
                });
            }
            std::thread::sleep(backoff(step));
            step += 1;
        }
    }

    /// Whether `mkdir` failed because the store's folder cannot be written by this client (a
    /// read-only file system, or no write permission), as opposed to another client's lock.
    fn folder_refuses_writes(&self, e: &std::io::Error) -> bool {
        match e.raw_os_error() {
            Some(libc::EROFS) => true,
            Some(libc::EACCES) => !super::file::may_write(super::file::folder_of(&self.dir)),
            _ => false,
        }
    }

    /// Breaks a lock whose `owner` bytes were `seen` unchanged for a lease. Renaming the
    /// directory away is atomic: of several waiters that decide at once, one breaks it. Returns
    /// `None` if the lock changed meanwhile (it is then watched afresh).
    fn break_expired(
        &self,
        seen: Option<&str>,
        silent: Duration,
    ) -> Result<Option<BrokenLock>, StorageError> {
        let now_owner = fs::read_to_string(self.dir.join("owner")).ok();
        if now_owner.as_deref() != seen {
            return Ok(None);
        }
        let me = identity();
        let aside = sibling(
            &self.dir,
            &format!("broken-{}", uuid::Uuid::new_v4().simple()),
        );
        match fs::rename(&self.dir, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::io(&self.dir, e)),
        }
        // What was moved aside is what was judged (a live holder cannot have taken the lock in
        // the one round trip between the re-read and the rename); if not, that holder is fenced.
        let holder = fs::read_to_string(aside.join("owner"))
            .ok()
            .as_deref()
            .and_then(Owner::parse);
        let _ = fs::remove_dir_all(&aside);
        let broken = BrokenLock {
            holder,
            silent_ms: silent.as_millis() as u64,
            broken_at_ms: now_ms(),
            broken_by: format!("{} pid {}", me.host, me.pid),
        };
        let why = if silent.is_zero() {
            "its process is gone".to_string()
        } else {
            format!("not renewed for {} ms", broken.silent_ms)
        };
        eprintln!(
            "memotag: broke the shared-mode lock {}: held by {}, {why}",
            self.dir.display(),
            broken
                .holder
                .as_ref()
                .map(Owner::describe)
                .unwrap_or_else(|| "an unknown client".to_string()),
        );
        Ok(Some(broken))
    }

    /// Writes `owner` into a directory this client just made and starts renewing.
    fn hold(&self, broke: Option<BrokenLock>) -> Result<Held, StorageError> {
        let me = identity();
        let now = now_ms();
        let owner = Owner {
            token: uuid::Uuid::new_v4().simple().to_string(),
            host: me.host.clone(),
            pid: me.pid,
            started_ms: me.started_ms,
            acquired_ms: now,
            renewed_ms: now,
            lease_ms: self.config.lease.as_millis() as u64,
            renewals: 0,
            space: process_space(),
        };
        let confirmed = Instant::now();
        let path = self.dir.join("owner");
        let written =
            fs::File::create_new(&path).and_then(|mut f| f.write_all(owner.render().as_bytes()));
        if let Err(e) = written {
            let _ = fs::remove_file(&path);
            let _ = fs::remove_dir(&self.dir);
            return Err(StorageError::io(&path, e));
        }
        let state = Arc::new(Mutex::new(RenewState {
            owner,
            confirmed,
            lost: false,
        }));
        let (stop, stopped) = mpsc::channel::<()>();
        let renewer = {
            let state = state.clone();
            let dir = self.dir.clone();
            let every = self.config.lease / RENEWALS_PER_LEASE;
            let spawned = std::thread::Builder::new()
                .name("memotag-lease".into())
                .spawn(move || {
                    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                        if !renew(&dir, &state) {
                            break;
                        }
                    }
                });
            match spawned {
                Ok(renewer) => renewer,
                Err(e) => {
                    // Without renewals the lock would look live for a whole lease: give it back.
                    let _ = fs::remove_file(&path);
                    let _ = fs::remove_dir(&self.dir);
                    return Err(StorageError::io(&self.dir, e));
                }
            }
        };
        Ok(Held {
            dir: self.dir.clone(),
            lease: self.config.lease,
            state,
            stop: Some(stop),
            renewer: Some(renewer),
            broke,
            released: false,
        })
    }

    /// The current holder, if any (for `memotag info`; never waits, never breaks).
    pub fn holder(store: &Path) -> Option<Result<Owner, String>> {
        let dir = lock_dir(store);
        if !dir.is_dir() {
            return None;
        }
        Some(match fs::read_to_string(dir.join("owner")) {
            Ok(text) => Owner::parse(&text).ok_or(text),
            Err(e) => Err(e.to_string()),
        })
    }
}

struct RenewState {
    owner: Owner,
    /// When the last renewal that found our token started (or when the lock was taken).
    confirmed: Instant,
    lost: bool,
}

/// One renewal: confirms the token is still ours, then rewrites `owner` atomically. Returns
/// whether renewing should go on.
fn renew(dir: &Path, state: &Mutex<RenewState>) -> bool {
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    let started = Instant::now();
    let path = dir.join("owner");
    // The token is checked through the very file that is then rewritten: a file that carries
    // our token is ours (nobody else writes it), so a renewal can never overwrite the owner file
    // of a client that broke our lock and took a new one at the same path in between.
    let mut file = match fs::OpenOptions::new().read(true).write(true).open(&path) {
        Ok(file) => file,
        Err(_) => {
            state.lost = true;
            return false;
        }
    };
    let mut text = String::new();
    let ours = std::io::Read::read_to_string(&mut file, &mut text).is_ok()
        && Owner::parse(&text).is_some_and(|o| o.token == state.owner.token);
    if !ours {
        state.lost = true;
        return false;
    }
    let mut next = state.owner.clone();
    next.renewals += 1;
    next.renewed_ms = now_ms();
    // Rewritten in place, not replaced by a rename: on FUSE a file replaced while another
    // process of the same mount has it open turns into a `.fuse_hidden…` file, and the lock
    // directory could no longer be removed. A waiter that reads a half-written file only sees
    // "changed" and watches afresh.
    let written = file.set_len(0).and_then(|()| {
        use std::os::unix::fs::FileExt;
        file.write_all_at(next.render().as_bytes(), 0)
    });
    drop(file);
    // Not confirmed on failure: if that goes on, the fence refuses to commit.
    if written.is_ok() {
        state.owner = next;
        state.confirmed = started;
    }
    true
}

/// A held lock. Released on drop if not released explicitly.
pub struct Held {
    dir: PathBuf,
    lease: Duration,
    state: Arc<Mutex<RenewState>>,
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<JoinHandle<()>>,
    broke: Option<BrokenLock>,
    released: bool,
}

impl Held {
    /// The lock this client broke to get this one, if it did.
    pub fn broke(&self) -> Option<&BrokenLock> {
        self.broke.as_ref()
    }

    /// Checks, immediately before a commit, that this client still holds the lock.
    pub fn fence(&self) -> Result<(), StorageError> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let ours = !state.lost
            && fs::read_to_string(self.dir.join("owner"))
                .ok()
                .as_deref()
                .and_then(Owner::parse)
                .is_some_and(|o| o.token == state.owner.token);
        fence_decision(state.confirmed.elapsed(), self.lease, ours).map_err(|lost| {
            StorageError::LockLost {
                path: self.dir.clone(),
                reason: lost.to_string(),
            }
        })
    }

    /// Stops renewing and removes the lock directory, if it is still ours.
    pub fn release(mut self) {
        self.release_inner();
    }

    fn release_inner(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        drop(self.stop.take());
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let owner = self.dir.join("owner");
        let ours = fs::read_to_string(&owner)
            .ok()
            .as_deref()
            .and_then(Owner::parse)
            .is_some_and(|o| o.token == state.owner.token);
        if ours {
            // Renamed away first, so that the lock is free at once even if removing what is in
            // it fails (on FUSE, a file another process of the same mount has open becomes a
            // `.fuse_hidden…` file until it is closed).
            let aside = sibling(&self.dir, &format!("released-{}", state.owner.token));
            if fs::rename(&self.dir, &aside).is_ok() && fs::remove_dir_all(&aside).is_err() {
                sweep_leftovers(&self.dir);
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release_inner();
    }
}

/// Removes lock directories earlier clients renamed away but could not remove (best effort;
/// they hold nothing).
fn sweep_leftovers(dir: &Path) {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return;
    };
    let mut prefix = name.to_os_string();
    prefix.push(".");
    let prefix = prefix.to_string_lossy().into_owned();
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let n = entry.file_name();
        let n = n.to_string_lossy();
        if n.starts_with(&prefix) && (n.contains(".released-") || n.contains(".broken-")) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// `<store>.memotag-lock`: the lock directory of the store at `store`, named after the resolved path (symlinks
/// followed), so that every name of one store means one lock.
pub fn lock_dir(store: &Path) -> PathBuf {
    let store = super::file::resolve(store);
    let mut name = store.as_os_str().to_os_string();
    name.push(".memotag-lock");
    PathBuf::from(name)
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.as_os_str().to_os_string();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// This process: host name, pid, start time.
struct Identity {
    host: String,
    pid: u32,
    started_ms: i64,
}

/// This process's identity, computed once per process: a forked child (Python's
/// multiprocessing) has another pid and start time, and must never write its parent's.
fn identity() -> Arc<Identity> {
    static ME: Mutex<Option<Arc<Identity>>> = Mutex::new(None);
    let mut me = ME.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    match &*me {
        Some(known) if known.pid == pid => known.clone(),
        _ => {
            let fresh = Arc::new(Identity {
                host: host_name(),
                pid,
                started_ms: process_start_ms().unwrap_or_else(now_ms),
            });
            *me = Some(fresh.clone());
            fresh
        }
    }
}

/// The kernel boot id and pid namespace of this process (`None` where /proc does not say):
/// two processes with the same space see the same pids.
fn process_space() -> Option<String> {
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let pid_ns = fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{}/{}", boot.trim(), pid_ns.display()))
}

// Never cached across a fork: a forked child has another pid.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "localhost".to_string()
    }
}

/// The process start time from /proc (boot time + start ticks), in unix ms.
fn process_start_ms() -> Option<i64> {
    start_ms_of("/proc/self")
}

/// The start time of the process at `proc_dir` (`/proc/<pid>`), in unix ms.
fn start_ms_of(proc_dir: &str) -> Option<i64> {
    let stat = fs::read_to_string(format!("{proc_dir}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    let ticks: i64 = after.split(' ').nth(19)?.parse().ok()?;
    let btime: i64 = fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| btime * 1000 + ticks * 1000 / hz as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(10);

    fn owner(token: &str, renewals: u64, lease_ms: u64) -> String {
        Owner {
            token: token.into(),
            host: "h".into(),
            pid: 7,
            started_ms: 1,
            acquired_ms: 2,
            renewed_ms: 3,
            lease_ms,
            renewals,
            space: None,
        }
        .render()
    }

    #[test]
    fn owner_round_trips_and_partial_files_do_not_parse() {
        let text = owner("abc", 3, 500);
        let o = Owner::parse(&text).unwrap();
        assert_eq!(
            (o.token.as_str(), o.pid, o.renewals, o.lease_ms),
            ("abc", 7, 3, 500)
        );
        assert_eq!(Owner::parse(&text[..text.len() / 2]), None);
        assert_eq!(Owner::parse(""), None);
    }

    #[test]
    fn a_lock_expires_only_after_a_whole_lease_unchanged_by_the_waiters_clock() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        let a = owner("t", 0, 2_000);
        assert_eq!(w.observe(Some(&a), t0, LEASE), Verdict::Wait);
        // The holder's own lease (2 s), not the waiter's default (10 s), decides.
        assert_eq!(
            w.observe(Some(&a), t0 + Duration::from_millis(1_999), LEASE),
            Verdict::Wait
        );
        assert_eq!(
            w.observe(Some(&a), t0 + Duration::from_secs(2), LEASE),
            Verdict::Expired {
                silent: Duration::from_secs(2)
            }
        );
    }

    #[test]
    fn a_renewal_restarts_the_waiters_clock() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        w.observe(Some(&owner("t", 0, 2_000)), t0, LEASE);
        let renewed = owner("t", 1, 2_000);
        let t1 = t0 + Duration::from_millis(1_500);
        assert_eq!(w.observe(Some(&renewed), t1, LEASE), Verdict::Wait);
        assert_eq!(
            w.observe(Some(&renewed), t0 + Duration::from_millis(3_000), LEASE),
            Verdict::Wait
        );
        assert!(matches!(
            w.observe(Some(&renewed), t1 + Duration::from_secs(2), LEASE),
            Verdict::Expired { .. }
        ));
    }

    #[test]
    fn a_lock_without_a_readable_owner_expires_after_the_default_lease() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        assert_eq!(w.observe(None, t0, LEASE), Verdict::Wait);
        assert_eq!(
            w.observe(None, t0 + Duration::from_secs(9), LEASE),
            Verdict::Wait
        );
        assert!(matches!(
            w.observe(None, t0 + LEASE, LEASE),
            Verdict::Expired { .. }
        ));
        // The holder finally wrote its owner file: watched afresh.
        assert_eq!(
            w.observe(Some(&owner("t", 0, 10_000)), t0 + LEASE * 2, LEASE),
            Verdict::Wait
        );
    }

    #[test]
    fn a_holder_commits_only_with_its_token_and_a_recent_renewal() {
        assert_eq!(fence_decision(Duration::from_secs(1), LEASE, true), Ok(()));
        assert_eq!(
            fence_decision(Duration::from_secs(1), LEASE, false),
            Err(Lost::Taken)
        );
        assert_eq!(
            fence_decision(Duration::from_secs(5), LEASE, true),
            Err(Lost::NotRenewed {
                for_ms: 5_000,
                lease_ms: 10_000
            })
        );
        assert_eq!(
            fence_decision(Duration::from_millis(4_999), LEASE, true),
            Ok(())
        );
    }

    #[test]
    fn lock_methods_parse_and_follow_modes() {
        for m in [LockMethod::Posix, LockMethod::LeaseDir] {
            assert_eq!(m.as_str().parse::<LockMethod>(), Ok(m));
        }
        assert!("flock".parse::<LockMethod>().is_err());
        assert_eq!(
            LockMethod::for_mode(super::super::Mode::Shared),
            LockMethod::LeaseDir
        );
    }

    #[test]
    fn one_client_takes_a_free_lock_breaks_a_dead_one_and_is_fenced_after_losing_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.memo");
        let config = LockConfig {
            lease: Duration::from_millis(300),
            wait: Duration::from_secs(5),
            interrupt: None,
            pause_before_commit: None,
        };
        let lock = LeaseLock::beside(&store, config.clone());
        let held = lock.acquire().unwrap();
        assert!(held.broke().is_none());
        held.fence().unwrap();
        let holder = LeaseLock::holder(&store).unwrap().unwrap();
        assert_eq!(holder.pid, std::process::id());
        // A dead holder: stop its renewals without releasing (as SIGKILL would).
        let mut dead = held;
        drop(dead.stop.take());
        dead.renewer.take().unwrap().join().unwrap();
        let other = LeaseLock::beside(&store, config.clone()).acquire().unwrap();
        let broke = other.broke().expect("broke the dead lock").clone();
        assert_eq!(broke.holder.unwrap().pid, std::process::id());
        assert!(broke.silent_ms >= 300);
        assert!(matches!(dead.fence(), Err(StorageError::LockLost { .. })));
        // The fenced holder's release leaves the new holder's lock alone.
        drop(dead);
        other.fence().unwrap();
        other.release();
        assert!(LeaseLock::holder(&store).is_none());
    }

    #[test]
    fn a_wait_gives_up_at_its_deadline_or_when_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.memo");
        let config = LockConfig {
            lease: Duration::from_secs(30),
            wait: Duration::from_millis(100),
            interrupt: None,
            pause_before_commit: None,
        };
        let held = LeaseLock::beside(&store, config.clone()).acquire().unwrap();
        let waiter = LeaseLock::beside(&store, config.clone());
        assert!(matches!(
            waiter.acquire(),
            Err(StorageError::LockTimeout { .. })
        ));
        let interrupted = LeaseLock::beside(
            &store,
            LockConfig {
                wait: Duration::from_secs(30),
                interrupt: Some(Arc::new(|| true)),
                ..config
            },
        );
        assert!(matches!(
            interrupted.acquire(),
            Err(StorageError::Interrupted)
        ));
        held.release();
    }

    /// An `owner` file as a process of this machine would have written it.
    fn owner_of(pid: u32, started_ms: i64, space: Option<String>) -> String {
        Owner {
            token: "t".into(),
            host: host_name(),
            pid,
            started_ms,
            acquired_ms: 1,
            renewed_ms: 1,
            lease_ms: 60_000,
            renewals: 0,
            space,
        }
        .render()
    }

    #[test]
    fn a_holder_that_died_on_this_machine_is_broken_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.memo");
        let config = LockConfig {
            lease: Duration::from_secs(60),
            wait: Duration::from_millis(300),
            interrupt: None,
            pause_before_commit: None,
        };
        let plant = |owner: String| {
            let lock = lock_dir(&store);
            let _ = fs::remove_dir_all(&lock);
            fs::create_dir(&lock).unwrap();
            fs::write(lock.join("owner"), owner).unwrap();
        };
        // A process that has exited: its pid is free.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id();
        gone.wait().unwrap();
        plant(owner_of(gone_pid, 1, process_space()));
        let started = Instant::now();
        let held = LeaseLock::beside(&store, config.clone()).acquire().unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(300),
            "not after its 60 s lease"
        );
        assert_eq!(held.broke().unwrap().holder.as_ref().unwrap().pid, gone_pid);
        held.release();

        // A live process of this machine, a holder in another process space, and an owner
        // written before spaces were recorded: all wait for their lease.
        let mut live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let live_start = start_ms_of(&format!("/proc/{}", live.id())).unwrap();
        for owner in [
            owner_of(live.id(), live_start, process_space()),
            owner_of(gone_pid, 1, Some("another-boot/pid:[1]".into())),
            owner_of(gone_pid, 1, None),
        ] {
            plant(owner.clone());
            assert!(
                matches!(
                    LeaseLock::beside(&store, config.clone()).acquire(),
                    Err(StorageError::LockTimeout { .. })
                ),
                "{owner}"
            );
        }
        live.kill().unwrap();
        live.wait().unwrap();
    }

    #[test]
    fn a_renewal_never_overwrites_the_owner_file_of_the_next_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.memo");
        let config = LockConfig {
            lease: Duration::from_secs(60),
            wait: Duration::from_secs(1),
            interrupt: None,
            pause_before_commit: None,
        };
        let mut held = LeaseLock::beside(&store, config).acquire().unwrap();
        // Stop its own renewals; renew by hand below, after another client broke the lock and
        // took it at the same path.
        drop(held.stop.take());
        held.renewer.take().unwrap().join().unwrap();
        let lock = lock_dir(&store);
        fs::rename(&lock, dir.path().join("aside")).unwrap();
        fs::create_dir(&lock).unwrap();
        let next = owner_of(4242, 1, None).replace("token=t", "token=next");
        fs::write(lock.join("owner"), &next).unwrap();
        assert!(
            !renew(&lock, &held.state),
            "the renewer sees the lock is gone"
        );
        assert_eq!(fs::read_to_string(lock.join("owner")).unwrap(), next);
        assert!(matches!(held.fence(), Err(StorageError::LockLost { .. })));
    }
}
