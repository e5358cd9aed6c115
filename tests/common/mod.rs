//! Shared helpers for the end-to-end tests: temporary stores, small values, real child
//! processes (the test binary re-runs itself with one test selected and a role in the env), a
//! barrier that makes child processes overlap, and (in `kill`) SIGKILL at chosen moments.
#![allow(dead_code)]

pub mod kill;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memotag::{EncodedValue, Value};

pub const ROLE_ENV: &str = "MEMOTAG_TEST_ROLE";

pub fn int(i: i64) -> EncodedValue {
    EncodedValue::from_value(&Value::Int(i)).expect("an int encodes")
}

pub fn text(s: &str) -> EncodedValue {
    EncodedValue::from_value(&Value::Str(s.to_string())).expect("a string encodes")
}

pub fn decode(v: &EncodedValue) -> Value {
    memotag::value::decode_canonical(&v.bytes).expect("canonical value")
}

/// The role this process was started with, if it is a child.
pub fn role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

/// The command that runs this test binary again, running only `test_name`, with `role` and
/// extra env vars (stdin closed, stdout piped, stderr inherited).
pub fn child_command(test_name: &str, role: &str, env: &[(&str, String)]) -> Command {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Starts this test binary again running only `test_name`, with `role` and extra env vars.
pub fn spawn_child(test_name: &str, role: &str, env: &[(&str, String)]) -> Child {
    child_command(test_name, role, env)
        .spawn()
        .expect("spawn child test process")
}

/// Waits for a child and returns its stdout lines; panics if it failed.
pub fn finish(child: Child) -> Vec<String> {
    let out = child.wait_with_output().expect("child output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child failed: {:?}\n{stdout}",
        out.status
    );
    // The harness prints "test name ... " without a newline before the child's first line.
    stdout
        .lines()
        .filter_map(|l| l.find("OUT ").map(|at| l[at + 4..].to_string()))
        .collect()
}

pub fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read file")
}

// ---- a barrier for real processes ----------------------------------------------------------

/// The env var that hands a child the barrier's directory and its number of parties.
pub const BARRIER_ENV: &str = "MEMOTAG_TEST_BARRIER";

/// Nanoseconds since the epoch: one clock for every process of this machine, so that children
/// can say when they passed a barrier and when they finished.
pub fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

/// A barrier for `parties` processes: a directory in which each process, on arriving, creates a
/// file, then waits until all `parties` files exist. Nobody passes before everybody arrived.
/// Several rounds can use one barrier: each round is a subdirectory.
pub struct ProcessBarrier {
    dir: PathBuf,
    parties: usize,
}

impl ProcessBarrier {
    /// A new barrier in `dir` (created), for the parent to hand to its children with `env`.
    pub fn create(dir: &Path, parties: usize) -> ProcessBarrier {
        std::fs::create_dir_all(dir).expect("barrier directory");
        ProcessBarrier {
            dir: dir.to_path_buf(),
            parties,
        }
    }

    /// The env var for a child: `(BARRIER_ENV, "PARTIES:DIR")`.
    pub fn env(&self) -> (&'static str, String) {
        (
            BARRIER_ENV,
            format!("{}:{}", self.parties, self.dir.display()),
        )
    }

    /// The barrier the parent handed this child.
    pub fn from_env() -> ProcessBarrier {
        let spec = std::env::var(BARRIER_ENV).expect("the parent passed a barrier");
        let (parties, dir) = spec.split_once(':').expect("PARTIES:DIR");
        ProcessBarrier {
            dir: PathBuf::from(dir),
            parties: parties.parse().expect("a number of parties"),
        }
    }

    /// Arrives at `round` as `me` and waits until all parties have arrived there; returns when
    /// this process passed (`unix_ns`). Panics after two minutes (a party died before arriving).
    pub fn wait(&self, round: &str, me: &str) -> u128 {
        let dir = self.dir.join(round);
        std::fs::create_dir_all(&dir).expect("barrier round directory");
        std::fs::write(dir.join(me), b"").expect("arrive at the barrier");
        let started = Instant::now();
        loop {
            let arrived = std::fs::read_dir(&dir).expect("read barrier").count();
            if arrived >= self.parties {
                return unix_ns();
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "barrier {round}: {arrived} of {} parties arrived in two minutes",
                self.parties
            );
            // Spin briefly (everybody passes within microseconds of the last arrival), then
            // poll gently (a party may still be starting up).
            if started.elapsed() < Duration::from_millis(20) {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

/// When one child passed the start barrier and when it finished its work (`unix_ns`), as it
/// printed them (`OUT passed NS`, `OUT finished NS`).
#[derive(Clone, Copy, Debug)]
pub struct Span {
    pub passed: u128,
    pub finished: u128,
}

impl Span {
    /// The span in one child's `OUT` lines.
    pub fn from_lines(lines: &[String]) -> Span {
        let get = |key: &str| {
            lines
                .iter()
                .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
                .unwrap_or_else(|| panic!("the child printed `OUT {key}NS`: {lines:?}"))
        };
        Span {
            passed: get("passed "),
            finished: get("finished "),
        }
    }
}

/// Whether the processes really ran at once: every one of them had passed the barrier before
/// any of them finished.
pub fn overlapped(spans: &[Span]) -> bool {
    let last_passed = spans.iter().map(|s| s.passed).max().expect("spans");
    let first_finished = spans.iter().map(|s| s.finished).min().expect("spans");
    last_passed < first_finished
}

/// Asserts that the processes really ran at once (see `overlapped`).
pub fn assert_overlapped(spans: &[Span]) {
    assert!(
        overlapped(spans),
        "the processes did not overlap: one finished before another had passed the barrier: {spans:?}"
    );
}
