//! A client changing the schema, and a client flushing batches, killed with SIGKILL at every
//! write and sync they make (strace's fault injection, one kill point per run) and at random
//! moments. After every kill: `check` finds nothing (SQLite's integrity check, a gapless log
//! that replays to the catalog, every referenced value present and verified), every change and
//! every batch the client acknowledged is there, a batch is all or nothing, the store opens,
//! takes new results, and the client's work done again completes. Local (WAL) and shared
//! mode; in shared mode the next client breaks the dead client's lock itself.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::kill::{
    operation_window, random_kills, remove_dead_lock, strace_or_skip, sweep, Failures, Run, Tally,
};
use common::{child_command, decode, int, role};
use memotag::{
    EncodedValue, FunctionSpec, FunctionTag, InputSpec, Mode, OpenOptions, Store, Value,
};

/// Kills at random moments per operation and mode (on top of the system call points).
const RANDOM_KILLS: u32 = 20;

/// The clients' lease in shared mode: short, so that the next client breaks a dead one's lock
/// soon.
const LEASE: Duration = Duration::from_millis(300);

/// The lease of a client that runs under strace (every system call stopped, so renewals come
/// late): long enough that it never loses its lock; its lock is removed by hand when it dies.
const TRACED_LEASE: Duration = Duration::from_secs(5);

fn open(path: &Path, mode: Mode, lease: Duration) -> Store {
    OpenOptions::new()
        .mode(mode)
        .lock_lease(lease)
        .blob_threshold(4_096)
        .open(path)
        .unwrap()
}

/// The store a child was given (`STORE`, `MODE`, `LEASE_MS`).
fn open_from_env() -> Store {
    let var = |key: &str| std::env::var(key).unwrap();
    open(
        Path::new(&var("STORE")),
        var("MODE").parse().unwrap(),
        Duration::from_millis(var("LEASE_MS").parse().unwrap()),
    )
}

/// Results recorded before any client is killed: `f(x) = 3x` for these x.
const EARLIER: std::ops::Range<i64> = 10_000..10_040;

/// A store with `f(x)` and the earlier results, in `mode`.
fn store_template(dir: &Path, mode: Mode) -> PathBuf {
    let path = dir.join("team.memo");
    let store = open(&path, mode, LEASE);
    let f = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    for x in EARLIER {
        let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(x))]).unwrap();
        store.record(&call, vec![int(3 * x)]).unwrap();
    }
    path
}

/// Each run gets a fresh copy of the template.
struct Runs {
    _dir: tempfile::TempDir,
    template: PathBuf,
    run: PathBuf,
    test: &'static str,
    role: &'static str,
    mode: Mode,
}

impl Runs {
    fn new(test: &'static str, role: &'static str, mode: Mode) -> Runs {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("template");
        std::fs::create_dir(&template).unwrap();
        store_template(&template, mode);
        Runs {
            run: dir.path().join("run"),
            template,
            _dir: dir,
            test,
            role,
            mode,
        }
    }

    fn store(&self) -> PathBuf {
        self.run.join("team.memo")
    }

    /// The client's command, with this lease in shared mode, on a fresh copy of the template.
    fn prepare(&self, lease: Duration) -> Command {
        if self.run.exists() {
            std::fs::remove_dir_all(&self.run).unwrap();
        }
        common::kill::copy_tree(&self.template, &self.run);
        child_command(
            self.test,
            self.role,
            &[
                ("STORE", self.store().display().to_string()),
                ("MODE", self.mode.to_string()),
                ("LEASE_MS", lease.as_millis().to_string()),
            ],
        )
    }

    /// Does the client's work again, to completion, on the current copy (in this process: a
    /// client that opens the store after the kill); returns the store, checked.
    fn complete(&self, work: fn(&Store)) -> Store {
        let store = open(&self.store(), self.mode, LEASE);
        work(&store);
        let findings = memotag::maintenance::check(&self.store(), &mut ()).unwrap();
        assert!(
            findings.is_empty(),
            "after the client's work was done again: {findings:#?}"
        );
        store
    }
}

/// Kills the client at every call of each of `syscalls` and at random moments; `verify` checks
/// the store after each run.
fn kill_everywhere(what: &str, runs: &Runs, syscalls: &[&'static str], verify: impl Fn(&Run)) {
    let mut tally = Tally::start();
    let mut failures = Failures::default();
    if let Some(strace) = strace_or_skip() {
        for syscall in syscalls {
            // The dead client's lock is removed by hand here: its lease would run out too, but
            // waiting for that after each of hundreds of kills takes too long.
            let points = sweep(
                &strace,
                syscall,
                &mut failures,
                || runs.prepare(TRACED_LEASE),
                |run| {
                    remove_dead_lock(&runs.store());
                    verify(run)
                },
            );
            tally.points.push((syscall, points));
        }
    }
    // At random moments the next client breaks a dead client's lock itself, after its lease.
    // The same test binary, started and stopping at once.
    let idle = || child_command(runs.test, "idle", &[]);
    let window = operation_window(idle, || runs.prepare(LEASE));
    let (kills, misses) = random_kills(
        RANDOM_KILLS,
        window,
        &mut failures,
        || runs.prepare(LEASE),
        &verify,
    );
    tally.random_kills = kills;
    tally.random_misses = misses;
    println!("{}", tally.report(what));
    failures.assert_none(what);
    assert!(tally.kills() >= 20, "{}", tally.report(what));
}

/// What holds after any kill, whatever the client did: the store opens, the earlier results are
/// there, it takes a new result, and `check` finds nothing.
fn assert_sound(path: &Path, run: &Run) -> Store {
    let context = || format!("after the kill {} (stderr: {})", run.at, run.stderr.trim());
    let store = OpenOptions::new()
        .lock_lease(LEASE)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", context()));
    assert_eq!(
        store.integrity_check().unwrap(),
        vec!["ok"],
        "{}",
        context()
    );
    let f = store.function("f", 1).unwrap();
    let x_tag = f.inputs[0].tag;
    let rows = store.results(f.tag, &[], None).unwrap();
    for x in EARLIER {
        let id = int(x).id();
        let row = rows
            .iter()
            .find(|r| r.inputs.contains(&(x_tag, id)))
            .unwrap_or_else(|| panic!("f({x}) lost {}", context()));
        assert_eq!(row.outputs, vec![int(3 * x).id()], "{}", context());
    }
    let call = store
        .bind(f.tag, vec![(f.inputs[0].tag, int(EARLIER.start))])
        .unwrap();
    assert_eq!(
        decode(&store.lookup(&call).unwrap().unwrap().outputs[0]),
        Value::Int(3 * EARLIER.start)
    );
    let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(-1))]).unwrap();
    store.record(&call, vec![int(-3)]).unwrap();
    assert_eq!(store.lookup(&call).unwrap().unwrap().outputs, vec![int(-3)]);
    let findings = memotag::maintenance::check(path, &mut ())
        .unwrap_or_else(|e| panic!("check cannot run {}: {e}", context()));
    assert!(findings.is_empty(), "{}: {findings:#?}", context());
    store
}

// ---- schema changes --------------------------------------------------------------------------

/// The client's schema changes, in order, one of each kind but creating a function (the
/// template did that): each is one transaction and one log entry, and each is a no-op success
/// when it already took effect (so that the client can simply run again).
const SCHEMA_STEPS: usize = 4;

fn change_the_schema(store: &Store) {
    let f = store.function("f", 1).unwrap();
    // Run again after step 3, `k` is `kk`: adding `k` again would add a second input.
    let k = match f.input_named("kk") {
        Some(kk) => kk.tag,
        None => store.add_input(f.tag, "k", Some(int(1))).unwrap(),
    };
    println!("OUT step 0");
    store.rename_family(f.family, "f2").unwrap();
    println!("OUT step 1");
    store
        .create_function(FunctionSpec::new("f2", vec![InputSpec::required("x")]).version(2))
        .unwrap();
    println!("OUT step 2");
    store.rename_input_tag(k, "kk").unwrap();
    println!("OUT step 3");
}

/// What the schema changes did, as names: f's family name, the name of f's second input (if
/// any), whether f has a version 2.
fn schema_after(store: &Store, f: FunctionTag) -> (String, Option<String>, bool) {
    let catalog = store.catalog().unwrap();
    let f = catalog.function(f).unwrap();
    let family = catalog.family(f.family).unwrap();
    (
        family.name.clone(),
        f.inputs.get(1).map(|i| i.name.clone()),
        family.versions.contains_key(&2),
    )
}

/// `schema_after` once the first `steps` changes took effect.
fn expected_schema(steps: usize) -> (String, Option<String>, bool) {
    (
        if steps >= 2 { "f2" } else { "f" }.to_string(),
        match steps {
            0 => None,
            1..=3 => Some("k".to_string()),
            _ => Some("kk".to_string()),
        },
        steps >= 3,
    )
}

fn schema_kills(test: &'static str, mode: Mode) {
    if role().as_deref() == Some("schema") {
        let store = open_from_env();
        change_the_schema(&store);
        return;
    }
    if role().is_some() {
        return;
    }
    let runs = Runs::new(test, "schema", mode);
    let template = Store::open(runs.template.join("team.memo")).unwrap();
    let base = template.schema_log(0).unwrap().len();
    let f = template.function("f", 1).unwrap().tag;
    drop(template);
    let syscalls = [
        "fsync",
        "fdatasync",
        "pwrite64",
        "write",
        "rename",
        "unlink",
    ];
    kill_everywhere(
        &format!("schema changes ({mode} mode)"),
        &runs,
        &syscalls,
        |run| {
            let path = runs.store();
            let acknowledged = run.acknowledged().len();
            let store = assert_sound(&path, run);
            let log = store.schema_log(0).unwrap();
            let done = log.len() - base;
            assert!(
                done == acknowledged || (run.killed && done == acknowledged + 1),
                "{acknowledged} changes acknowledged, {done} in the log, after the kill {}",
                run.at
            );
            assert!(
                log.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1),
                "log gapless after the kill {}",
                run.at
            );
            assert_eq!(
                schema_after(&store, f),
                expected_schema(done),
                "after the kill {}",
                run.at
            );
            drop(store);
            let store = runs.complete(change_the_schema);
            assert_eq!(store.schema_log(0).unwrap().len(), base + SCHEMA_STEPS);
            assert_eq!(schema_after(&store, f), expected_schema(SCHEMA_STEPS));
        },
    );
}

#[test]
fn sigkill_during_schema_changes_of_a_local_store_loses_nothing() {
    schema_kills(
        "sigkill_during_schema_changes_of_a_local_store_loses_nothing",
        Mode::Local,
    );
}

#[test]
fn sigkill_during_schema_changes_of_a_shared_store_loses_nothing() {
    schema_kills(
        "sigkill_during_schema_changes_of_a_shared_store_loses_nothing",
        Mode::Shared,
    );
}

// ---- batch flushes ---------------------------------------------------------------------------

const BATCHES: i64 = 2;
const PER_BATCH: i64 = 30;

fn batch_output(x: i64) -> EncodedValue {
    if x % 25 == 0 {
        // Kept as a file beside the store (the threshold is 4,096 bytes).
        EncodedValue::raw(vec![x as u8; 5_000])
    } else {
        int(7 * x)
    }
}

fn flush_batches(store: &Store) {
    let f = store.function("f", 1).unwrap();
    for b in 0..BATCHES {
        store
            .batch(|s| -> Result<(), memotag::CallError> {
                for x in b * PER_BATCH..(b + 1) * PER_BATCH {
                    let call = s.bind(f.tag, vec![(f.inputs[0].tag, int(x))])?;
                    s.record(&call, vec![batch_output(x)])?;
                }
                Ok(())
            })
            .unwrap();
        println!("OUT batch {b}");
    }
}

fn batch_kills(test: &'static str, mode: Mode) {
    if role().as_deref() == Some("batches") {
        let store = open_from_env();
        flush_batches(&store);
        return;
    }
    if role().is_some() {
        return;
    }
    let runs = Runs::new(test, "batches", mode);
    let syscalls = [
        "fsync",
        "fdatasync",
        "pwrite64",
        "write",
        "rename",
        "unlink",
    ];
    kill_everywhere(
        &format!("batch flushes ({mode} mode)"),
        &runs,
        &syscalls,
        |run| {
            let path = runs.store();
            let acknowledged: Vec<i64> = run
                .acknowledged()
                .iter()
                .map(|l| l.strip_prefix("batch ").unwrap().parse().unwrap())
                .collect();
            let store = assert_sound(&path, run);
            let f = store.function("f", 1).unwrap();
            let x_tag = f.inputs[0].tag;
            let rows = store.results(f.tag, &[], None).unwrap();
            for b in 0..BATCHES {
                let present: Vec<i64> = (b * PER_BATCH..(b + 1) * PER_BATCH)
                    .filter(|x| {
                        let id = int(*x).id();
                        rows.iter().any(|r| {
                            r.inputs.contains(&(x_tag, id))
                                && r.outputs == vec![batch_output(*x).id()]
                        })
                    })
                    .collect();
                if acknowledged.contains(&b) {
                    assert_eq!(
                        present.len() as i64,
                        PER_BATCH,
                        "acknowledged batch {b} lost results after the kill {}",
                        run.at
                    );
                } else {
                    assert!(
                        present.is_empty() || present.len() as i64 == PER_BATCH,
                        "batch {b} is half there ({} of {PER_BATCH}) after the kill {}",
                        present.len(),
                        run.at
                    );
                }
            }
            drop(store);
            let store = runs.complete(flush_batches);
            let f = store.function("f", 1).unwrap();
            assert_eq!(
                store.count_results(f.tag).unwrap() as i64,
                EARLIER.count() as i64 + 1 + BATCHES * PER_BATCH
            );
        },
    );
}

#[test]
fn sigkill_during_batch_flushes_to_a_local_store_loses_nothing() {
    batch_kills(
        "sigkill_during_batch_flushes_to_a_local_store_loses_nothing",
        Mode::Local,
    );
}

#[test]
fn sigkill_during_batch_flushes_to_a_shared_store_loses_nothing() {
    batch_kills(
        "sigkill_during_batch_flushes_to_a_shared_store_loses_nothing",
        Mode::Shared,
    );
}
