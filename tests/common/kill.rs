//! SIGKILL at chosen moments: at the Nth call of a system call (strace's fault injection reaches
//! points that timing does not: between the journal's fsync and the database's, between a write
//! and the rename that publishes it) and after a random delay (moments between system calls,
//! such as writes to WAL's memory-mapped index).
//!
//! A kill test prepares a fresh copy of its store for every run, runs the operation under one
//! kill, checks the store, and goes on with N + 1 until the operation completes without reaching
//! its Nth call of that system call.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where a run is killed.
#[derive(Clone, Copy, Debug)]
pub enum KillAt {
    /// On entering the `nth` call (from 1) of `syscall` by any one thread, before the call runs.
    Syscall { syscall: &'static str, nth: u32 },
    /// After this long, wherever the process is.
    Delay(Duration),
}

impl std::fmt::Display for KillAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KillAt::Syscall { syscall, nth } => write!(f, "{syscall} #{nth}"),
            KillAt::Delay(d) => write!(f, "after {} µs", d.as_micros()),
        }
    }
}

/// What one run did.
#[derive(Debug)]
pub struct Run {
    pub at: KillAt,
    /// SIGKILL ended it before it finished.
    pub killed: bool,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The lines it printed as `OUT …`, without the prefix: what it acknowledged.
    pub fn acknowledged(&self) -> Vec<String> {
        self.stdout
            .lines()
            .filter_map(|l| l.find("OUT ").map(|at| l[at + 4..].trim().to_string()))
            .collect()
    }

    /// Panics unless the run was killed or succeeded.
    pub fn assert_killed_or_succeeded(&self) {
        assert!(
            self.killed || self.status.success(),
            "killed {}: the run neither died of SIGKILL nor succeeded: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.at,
            self.status,
            self.stdout,
            self.stderr
        );
    }
}

/// Runs `cmd` (its program, arguments, env and directory) once, killed as `at` says. `strace`
/// is needed for `KillAt::Syscall`.
pub fn run(cmd: &Command, at: KillAt, strace: Option<&Path>) -> Run {
    match at {
        KillAt::Syscall { syscall, nth } => {
            let strace = strace.expect("strace for a kill at a system call");
            let mut traced = Command::new(strace);
            // strace's own output goes nowhere; if the tracee dies of a signal, strace dies of
            // the same signal. (Not --seccomp-bpf: strace 6.1 then injects nothing.)
            traced.args(["-f", "-qq", "-o", "/dev/null"]);
            traced.arg(format!("--trace={syscall}"));
            traced.arg(format!("--inject={syscall}:signal=KILL:when={nth}"));
            traced.arg("--");
            traced.arg(cmd.get_program());
            traced.args(cmd.get_args());
            copy_env_and_dir(cmd, &mut traced);
            let out = traced
                .stdin(Stdio::null())
                .output()
                .expect("run under strace");
            Run {
                at,
                killed: out.status.signal() == Some(libc::SIGKILL),
                status: out.status,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
        KillAt::Delay(delay) => {
            let mut direct = Command::new(cmd.get_program());
            direct.args(cmd.get_args());
            copy_env_and_dir(cmd, &mut direct);
            let started = Instant::now();
            let mut child = direct
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn");
            let drain = |mut pipe: Box<dyn Read + Send>| {
                std::thread::spawn(move || {
                    let mut text = Vec::new();
                    let _ = pipe.read_to_end(&mut text);
                    String::from_utf8_lossy(&text).into_owned()
                })
            };
            let stdout = drain(Box::new(child.stdout.take().unwrap()));
            let stderr = drain(Box::new(child.stderr.take().unwrap()));
            while started.elapsed() < delay {
                let left = delay - started.elapsed();
                std::thread::sleep(left.min(Duration::from_micros(200)));
            }
            // SAFETY: kill(2) on our own child, which is not reaped before `wait` below.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            let status = child.wait().expect("wait");
            Run {
                at,
                killed: status.signal() == Some(libc::SIGKILL),
                status,
                stdout: stdout.join().unwrap(),
                stderr: stderr.join().unwrap(),
            }
        }
    }
}

fn copy_env_and_dir(from: &Command, to: &mut Command) {
    for (key, value) in from.get_envs() {
        match value {
            Some(v) => to.env(key, v),
            None => to.env_remove(key),
        };
    }
    if let Some(dir) = from.get_current_dir() {
        to.current_dir(dir);
    }
}

/// How many kills one operation took, and where.
#[derive(Debug, Default)]
pub struct Tally {
    /// Per system call: how many of its calls were kill points (the operation makes that many).
    pub points: Vec<(&'static str, u32)>,
    pub random_kills: u32,
    /// Random delays that came after the operation had finished.
    pub random_misses: u32,
    pub started: Option<Instant>,
}

impl Tally {
    pub fn start() -> Tally {
        Tally {
            started: Some(Instant::now()),
            ..Tally::default()
        }
    }

    pub fn kills(&self) -> u32 {
        self.points.iter().map(|(_, n)| n).sum::<u32>() + self.random_kills
    }

    /// One line for the test output: `KILLS what: N kills (…), T s`.
    pub fn report(&self, what: &str) -> String {
        let points: Vec<String> = self
            .points
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        format!(
            "KILLS {what}: {} kills: at {} distinct system call points ({}), {} at random moments ({} random delays came too late); {:.1} s",
            self.kills(),
            self.points.iter().map(|(_, n)| n).sum::<u32>(),
            points.join(", "),
            self.random_kills,
            self.random_misses,
            self.started.map_or(0.0, |s| s.elapsed().as_secs_f64())
        )
    }
}

/// The runs after which the store was not as it must be: every one is listed at the end, so
/// that one test run shows every kill point that breaks something, not only the first.
#[derive(Debug, Default)]
pub struct Failures(pub Vec<String>);

impl Failures {
    /// Checks that `run` was killed or succeeded, then runs `verify`; records a panic of either.
    fn check(&mut self, run: &Run, verify: &mut impl FnMut(&Run)) {
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run.assert_killed_or_succeeded();
            verify(run);
        }));
        if let Err(panic) = checked {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(no message)".to_string());
            self.0.push(format!("killed {}: {message}", run.at));
        }
    }

    /// Panics with every failure, if there was one.
    pub fn assert_none(&self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{what}: {} kills left the store broken:\n{}",
            self.0.len(),
            self.0.join("\n---\n")
        );
    }
}

/// Kills a fresh run at the 1st, 2nd, … call of `syscall` until a run completes without
/// reaching it. `prepare` makes the fresh state and returns the command; `verify` checks the
/// state after each run (killed or not); what fails goes to `failures`. Returns the number of
/// kill points.
pub fn sweep(
    strace: &Path,
    syscall: &'static str,
    failures: &mut Failures,
    mut prepare: impl FnMut() -> Command,
    mut verify: impl FnMut(&Run),
) -> u32 {
    for nth in 1.. {
        assert!(
            nth <= 5_000,
            "more than 5,000 calls of {syscall}: the operation never completes"
        );
        let cmd = prepare();
        let run = run(&cmd, KillAt::Syscall { syscall, nth }, Some(strace));
        failures.check(&run, &mut verify);
        if !run.killed {
            return nth - 1;
        }
    }
    unreachable!()
}

/// Kills fresh runs after random delays in `window` until `kills` runs died of it (a delay
/// can come after the run finished: that run is verified too, and counted as a miss); what
/// fails goes to `failures`. Returns (kills, misses).
pub fn random_kills(
    kills: u32,
    window: std::ops::Range<Duration>,
    failures: &mut Failures,
    mut prepare: impl FnMut() -> Command,
    mut verify: impl FnMut(&Run),
) -> (u32, u32) {
    let (mut killed, mut missed) = (0, 0);
    let (from, to) = (
        window.start.as_micros() as u64,
        window.end.as_micros() as u64,
    );
    while killed < kills {
        assert!(
            missed <= 3 * kills + 10,
            "{missed} random delays in {window:?} came after the run had finished"
        );
        let cmd = prepare();
        let delay = Duration::from_micros(fastrand::u64(from..=to.max(from)));
        let run = run(&cmd, KillAt::Delay(delay), None);
        failures.check(&run, &mut verify);
        if run.killed {
            killed += 1;
        } else {
            missed += 1;
        }
    }
    (killed, missed)
}

/// When to kill at random so that most kills land in the operation, not in starting the
/// process: from the time `idle` (the same program doing nothing) takes to the time the
/// operation takes (the shortest of three clean runs each).
pub fn operation_window(
    mut idle: impl FnMut() -> Command,
    mut prepare: impl FnMut() -> Command,
) -> std::ops::Range<Duration> {
    let shortest = |make: &mut dyn FnMut() -> Command| {
        (0..3)
            .map(|_| {
                let mut cmd = make();
                let started = Instant::now();
                let out = cmd.stdin(Stdio::null()).output().expect("run");
                assert!(out.status.success(), "a clean run fails: {out:?}");
                started.elapsed()
            })
            .min()
            .unwrap()
    };
    let idle = shortest(&mut idle);
    let whole = shortest(&mut prepare);
    idle.min(whole)..whole
}

// ---- strace ----------------------------------------------------------------------------------

/// strace, when this machine has it or can install it (root with apt-get); otherwise why not.
pub fn strace() -> Result<PathBuf, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND.get_or_init(find_or_install_strace).clone()
}

fn find_or_install_strace() -> Result<PathBuf, String> {
    let found = which("strace").or_else(|| {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let apt = which("apt-get")?;
        if !root {
            return None;
        }
        let install = |args: &[&str]| {
            Command::new(&apt)
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !install(&["install", "-y", "-q", "strace"]) {
            install(&["update", "-q"]);
            install(&["install", "-y", "-q", "strace"]);
        }
        which("strace")
    });
    let Some(strace) = found else {
        // SAFETY: geteuid has no preconditions.
        return Err(if unsafe { libc::geteuid() } != 0 {
            "not installed, and installing it needs root".to_string()
        } else if which("apt-get").is_none() {
            "not installed, and there is no apt-get".to_string()
        } else {
            "not installed, and `apt-get install -y strace` failed".to_string()
        });
    };
    // ptrace may be forbidden (a container without CAP_SYS_PTRACE, yama), and injection may
    // not work: kill `true` as it exits, once.
    let probe = Command::new(&strace)
        .args([
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "--trace=exit_group",
            "--inject=exit_group:signal=KILL:when=1",
            "--",
            "true",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output();
    match probe {
        Ok(out) if out.status.signal() == Some(libc::SIGKILL) => Ok(strace),
        Ok(out) => Err(format!(
            "{} cannot trace here: {}",
            strace.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("{} does not run: {e}", strace.display())),
    }
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// strace for a kill test, or `None` after printing the one SKIPPED line (once per test
/// binary). Under CI (`CI=true`) as root a missing strace fails the test instead.
pub fn strace_or_skip() -> Option<PathBuf> {
    match strace() {
        Ok(path) => Some(path),
        Err(reason) => {
            // SAFETY: geteuid has no preconditions.
            let root = unsafe { libc::geteuid() } == 0;
            if std::env::var("CI").is_ok_and(|v| v == "true") && root {
                panic!("kill tests cannot run under CI: strace unavailable ({reason})");
            }
            static SAID: OnceLock<()> = OnceLock::new();
            SAID.get_or_init(|| println!("SKIPPED: kill tests: strace unavailable ({reason})"));
            None
        }
    }
}

// ---- stores after a kill ---------------------------------------------------------------------

/// Removes the shared-mode lock directory a killed process left, after making sure its holder
/// is dead. Returns whether there was one. (A live client breaks such a lock itself once its
/// holder's lease has run out, as tests/shared_mode.rs shows; the CLI's lease is 10 s, too long
/// to wait out hundreds of times here.)
pub fn remove_dead_lock(store: &Path) -> bool {
    let mut name = store.as_os_str().to_os_string();
    name.push(".memotag-lock");
    let lock = PathBuf::from(name);
    if !lock.exists() {
        return false;
    }
    let owner = std::fs::read_to_string(lock.join("owner")).unwrap_or_default();
    if let Some(pid) = owner
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|p| p.parse::<libc::pid_t>().ok())
    {
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "the lock's holder, pid {pid}, is alive: {owner}");
    }
    std::fs::remove_dir_all(&lock).expect("remove the dead holder's lock");
    true
}

/// Copies a directory tree (a store, its journal or WAL, its value files).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create directory");
    for entry in std::fs::read_dir(from).expect("read directory") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}
