//! `memotag migrate`, `gc` and `set-mode` killed with SIGKILL at every write, sync, rename and
//! unlink they make (strace's fault injection, one kill point per run) and at random moments:
//! after every kill the store passes `check` (SQLite's integrity check, a gapless log that
//! replays to the catalog, every referenced value present and verified), every result recorded
//! before is there with its outputs, the store opens and records, and the command run again
//! completes and leaves the store as it should be. Local (WAL) and shared-mode stores. The
//! lock a killed command leaves on a shared store is removed by hand (after checking that its
//! holder is dead): the CLI's lease is 10 s, and tests/shared_mode.rs and
//! tests/kill_schema_and_batches.rs show clients breaking such locks themselves.
//!
//! Last, the read commands (`check`, `info`, `functions`, `calls`) must read a store that a
//! client killed in the middle of a schema change left behind, before any writer opens it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::int;
use common::kill::{
    copy_tree, operation_window, random_kills, remove_dead_lock, strace_or_skip, sweep, Failures,
    Run, Tally,
};
use memotag::storage::memo::memo_table;
use memotag::storage::BlobStore;
use memotag::{CodeRecord, EncodedValue, FunctionSpec, InputSpec, Mode, OpenOptions, Store, Value};

/// Kills at random moments per operation and mode (on top of the system call points).
const RANDOM_KILLS: u32 = 20;

/// One result a user relies on: `function` version 1 called with `inputs` (by name) returns
/// `outputs`.
#[derive(Clone, Debug)]
struct Expected {
    function: String,
    inputs: Vec<(String, EncodedValue)>,
    outputs: Vec<EncodedValue>,
}

fn memotag(args: &[&str], path: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_memotag"));
    cmd.arg(args[0]).arg(path).args(&args[1..]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

fn run_ok(mut cmd: Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().expect("run memotag");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A scratch copy of a template store for each run.
struct Scratch {
    _dir: tempfile::TempDir,
    template: PathBuf,
    run: PathBuf,
    name: &'static str,
}

impl Scratch {
    fn new(name: &'static str) -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("template");
        std::fs::create_dir(&template).unwrap();
        Scratch {
            run: dir.path().join("run"),
            template,
            _dir: dir,
            name,
        }
    }

    fn template_store(&self) -> PathBuf {
        self.template.join(self.name)
    }

    /// The store of the current run.
    fn store(&self) -> PathBuf {
        self.run.join(self.name)
    }

    /// A fresh copy of the template.
    fn fresh(&self) -> PathBuf {
        if self.run.exists() {
            std::fs::remove_dir_all(&self.run).unwrap();
        }
        copy_tree(&self.template, &self.run);
        self.store()
    }
}

/// What must hold after any kill: the store opens (a client that opens it read-write finishes
/// or undoes what the killed one left), every expected result is there, it records a new
/// result, and `check` finds nothing (SQLite's integrity check, the log gapless from 1 and
/// replaying to the catalog, every referenced value present and matching its id, every value
/// file present and verified).
fn assert_sound(path: &Path, expected: &[Expected], run: &Run) {
    let context = || format!("after the kill {} (stderr: {})", run.at, run.stderr.trim());
    remove_dead_lock(path);
    let store = Store::open(path).unwrap_or_else(|e| panic!("open {}: {e}", context()));
    assert_eq!(
        store.integrity_check().unwrap(),
        vec!["ok"],
        "{}",
        context()
    );
    // Every result, read in one transaction per function (in shared mode each transaction
    // takes the lock), then a few through the user's path: bind, lookup, decode.
    let mut functions = std::collections::HashMap::new();
    for e in expected {
        let (f, all) = functions.entry(e.function.clone()).or_insert_with(|| {
            let f = store.function(&e.function, 1).unwrap();
            let rows = store.results(f.tag, &[], None).unwrap();
            (f, rows)
        });
        let found: Vec<_> = all
            .iter()
            .filter(|row| {
                e.inputs.iter().all(|(name, v)| {
                    let tag = f.input_named(name).unwrap().tag;
                    row.inputs.contains(&(tag, v.id()))
                })
            })
            .collect();
        assert_eq!(found.len(), 1, "{e:?} {}", context());
        let ids: Vec<_> = e.outputs.iter().map(EncodedValue::id).collect();
        assert_eq!(found[0].outputs, ids, "{e:?} {}", context());
    }
    for _ in 0..3 {
        let e = &expected[fastrand::usize(..expected.len())];
        let f = &functions[&e.function].0;
        let inputs = e
            .inputs
            .iter()
            .map(|(name, v)| (f.input_named(name).unwrap().tag, v.clone()))
            .collect();
        let call = store.bind(f.tag, inputs).unwrap();
        let hit = store
            .lookup(&call)
            .unwrap()
            .unwrap_or_else(|| panic!("{e:?} lost {}", context()));
        assert_eq!(hit.outputs, e.outputs, "{e:?} {}", context());
    }
    let after = store
        .create_function(FunctionSpec::new(
            "after_kill",
            vec![InputSpec::required("x")],
        ))
        .unwrap_or_else(|e| panic!("the store takes no schema change {}: {e}", context()));
    let call = store
        .bind(after.tag, vec![(after.inputs[0].tag, int(1))])
        .unwrap();
    store.record(&call, vec![int(2)]).unwrap();
    assert_eq!(store.lookup(&call).unwrap().unwrap().outputs, vec![int(2)]);
    drop(store);
    let findings = memotag::maintenance::check(path, &mut ())
        .unwrap_or_else(|e| panic!("check cannot run {}: {e}", context()));
    assert!(findings.is_empty(), "{}: {findings:#?}", context());
}

/// Kills `command` at every call of each of `syscalls` and at `RANDOM_KILLS` random moments,
/// each time on a fresh copy of the template; `verify` checks the store after each run.
fn kill_everywhere(
    what: &str,
    scratch: &Scratch,
    syscalls: &[&'static str],
    command: impl Fn(&Path) -> Command,
    mut verify: impl FnMut(&Path, &Run),
) {
    let mut tally = Tally::start();
    let mut failures = Failures::default();
    let prepare = || command(&scratch.fresh());
    if let Some(strace) = strace_or_skip() {
        for syscall in syscalls {
            let points = sweep(&strace, syscall, &mut failures, prepare, |run| {
                verify(&scratch.store(), run)
            });
            tally.points.push((syscall, points));
        }
    }
    // The same program, started and stopping at once.
    let idle = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_memotag"));
        cmd.arg("--version");
        cmd
    };
    let window = operation_window(idle, prepare);
    let (kills, misses) = random_kills(RANDOM_KILLS, window, &mut failures, prepare, |run| {
        verify(&scratch.store(), run)
    });
    tally.random_kills = kills;
    tally.random_misses = misses;
    println!("{}", tally.report(what));
    failures.assert_none(what);
    assert!(tally.kills() >= 20, "{}", tally.report(what));
}

// ---- migrate ---------------------------------------------------------------------------------

/// The results in tests/fixtures/store_gen1.memo (examples/make_fixture.rs).
fn fixture_results() -> Vec<Expected> {
    let mut expected: Vec<Expected> = (0..10)
        .map(|i| Expected {
            function: "squared".into(),
            inputs: vec![("x".into(), int(i))],
            outputs: vec![int(i * i)],
        })
        .collect();
    expected.push(Expected {
        function: "stats".into(),
        inputs: vec![(
            "xs".into(),
            EncodedValue::from_value(&Value::Tuple(vec![
                Value::Int(1),
                Value::Int(2),
                Value::Int(3),
            ]))
            .expect("encodable"),
        )],
        outputs: vec![
            EncodedValue::from_value(&Value::Float(2.0)).expect("encodable"),
            int(3),
        ],
    });
    expected
}

/// How the fixture is laid out before `migrate`.
#[derive(Clone, Copy, Debug)]
enum Gen1 {
    /// As committed: rollback journal, mode `local`.
    AsCommitted,
    /// In WAL, as a local store is after use.
    Wal,
    /// Mode `shared` (rollback journal), as a format-1 shared store is.
    Shared,
}

fn migrate_kills(layout: Gen1) {
    let scratch = Scratch::new("gen1.memo");
    let template = scratch.template_store();
    std::fs::copy("tests/fixtures/store_gen1.memo", &template).unwrap();
    {
        let conn = rusqlite::Connection::open(&template).unwrap();
        match layout {
            Gen1::AsCommitted => {}
            Gen1::Wal => {
                let mode: String = conn
                    .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                    .unwrap();
                assert_eq!(mode, "wal");
            }
            Gen1::Shared => {
                conn.execute("UPDATE meta SET value = 'shared' WHERE key = 'mode'", [])
                    .unwrap();
            }
        }
    }
    let expected = fixture_results();
    let syscalls = [
        "fsync",
        "fdatasync",
        "pwrite64",
        "unlink",
        "unlinkat",
        "rename",
    ];
    kill_everywhere(
        &format!("migrate of the format-1 fixture ({layout:?})"),
        &scratch,
        &syscalls,
        |path| memotag(&["migrate"], path),
        |path, run| {
            assert_sound(path, &expected, run);
            // All or nothing: format 1 untouched, or migrated completely.
            let generation = Store::open(path).unwrap().format_generation();
            assert!(
                generation == 1 || generation == memotag::FORMAT_GENERATION,
                "format generation {generation} after the kill {}",
                run.at
            );
            if !run.killed {
                assert_eq!(generation, memotag::FORMAT_GENERATION);
            }
            // Running it again completes the migration.
            run_ok(memotag(&["migrate"], path));
            let store = Store::open(path).unwrap();
            assert_eq!(store.format_generation(), memotag::FORMAT_GENERATION);
            // A migrated store carries code records (call.record generation 3).
            assert_eq!(store.generation("call.record").unwrap(), 3);
            drop(store);
            assert_sound(path, &expected, run);
        },
    );
}

#[test]
fn sigkill_during_migrate_of_the_format_1_fixture_loses_nothing() {
    migrate_kills(Gen1::AsCommitted);
}

#[test]
fn sigkill_during_migrate_of_a_format_1_wal_store_loses_nothing() {
    migrate_kills(Gen1::Wal);
}

#[test]
fn sigkill_during_migrate_of_a_format_1_shared_store_loses_nothing() {
    migrate_kills(Gen1::Shared);
}

// ---- gc --------------------------------------------------------------------------------------

/// A store with results (some values kept as files) and garbage: the values of deleted results
/// (some of them files), value files nothing claims, a code record and a source nothing uses.
/// Returns the results that stay.
fn store_with_garbage(path: &Path, mode: Mode) -> Vec<Expected> {
    let store = OpenOptions::new()
        .mode(mode)
        .blob_threshold(1_000)
        .open(path)
        .unwrap();
    let square = store
        .create_function(FunctionSpec::new(
            "square",
            vec![
                InputSpec::required("x"),
                InputSpec::with_default("offset", int(0)),
            ],
        ))
        .unwrap();
    let blobby = store
        .create_function(FunctionSpec::new("blobby", vec![InputSpec::required("x")]))
        .unwrap();
    let square_out = |x: i64| {
        if x % 5 == 0 {
            EncodedValue::raw(vec![x as u8; 2_000])
        } else {
            int(x * x)
        }
    };
    let blobby_out = |x: i64| EncodedValue::raw(vec![100 + x as u8; 3_000]);
    store
        .batch(|s| -> Result<(), memotag::CallError> {
            for x in 0..40 {
                let call = s.bind(square.tag, vec![(square.inputs[0].tag, int(x))])?;
                s.record(&call, vec![square_out(x)])?;
            }
            for x in 0..10 {
                let call = s.bind(blobby.tag, vec![(blobby.inputs[0].tag, int(1_000 + x))])?;
                s.record(&call, vec![blobby_out(x)])?;
            }
            Ok(())
        })
        .unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(path).unwrap();
    let x_column = format!("in_{}", square.inputs[0].tag.simple());
    for x in (1..40).step_by(2) {
        conn.execute(
            &format!(
                "DELETE FROM \"{}\" WHERE \"{x_column}\" = ?1",
                memo_table(&square.tag)
            ),
            [int(x).id().as_bytes()],
        )
        .unwrap();
    }
    let blobby_x = format!("in_{}", blobby.inputs[0].tag.simple());
    for x in 5..10 {
        conn.execute(
            &format!(
                "DELETE FROM \"{}\" WHERE \"{blobby_x}\" = ?1",
                memo_table(&blobby.tag)
            ),
            [int(1_000 + x).id().as_bytes()],
        )
        .unwrap();
    }
    // A code record nothing refers to, with the source only it mentions, and the newest record
    // (never collected: its id must not be reused).
    for (id, own) in [(7, "0ddba11"), (8, "0ddba12")] {
        let record = CodeRecord {
            own: Some(own.into()),
            ..Default::default()
        };
        conn.execute(
            "INSERT INTO code_records (id, hash, record) VALUES (?1, ?2, ?3)",
            rusqlite::params![id, record.hash().0, serde_json::to_string(&record).unwrap()],
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO sources (hash, text) VALUES ('0ddba11', 'def f(x): return x')",
        [],
    )
    .unwrap();
    drop(conn);
    for i in 0..5u8 {
        let orphan = EncodedValue::raw(vec![200 + i; 1_500]);
        BlobStore::beside(path).put(&orphan, &orphan.id()).unwrap();
    }
    let mut expected: Vec<Expected> = (0..40)
        .step_by(2)
        .map(|x| Expected {
            function: "square".into(),
            inputs: vec![("x".into(), int(x))],
            outputs: vec![square_out(x)],
        })
        .collect();
    expected.extend((0..5).map(|x| Expected {
        function: "blobby".into(),
        inputs: vec![("x".into(), int(1_000 + x))],
        outputs: vec![blobby_out(x)],
    }));
    expected
}

fn gc_kills(mode: Mode) {
    let scratch = Scratch::new("team.memo");
    let expected = store_with_garbage(&scratch.template_store(), mode);
    let listed = run_ok({
        let mut cmd = memotag(
            &["gc", "--dry-run", "--format", "json"],
            &scratch.template_store(),
        );
        cmd.stderr(Stdio::inherit());
        cmd
    });
    let garbage: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert!(
        garbage.as_array().unwrap().len() > 40,
        "the template has garbage to collect: {garbage}"
    );
    let syscalls = [
        "fsync",
        "fdatasync",
        "pwrite64",
        "unlink",
        "unlinkat",
        "rename",
        "write",
    ];
    kill_everywhere(
        &format!("gc ({mode} mode)"),
        &scratch,
        &syscalls,
        |path| memotag(&["gc"], path),
        |path, run| {
            assert_sound(path, &expected, run);
            // Running it again collects whatever the killed run left.
            run_ok(memotag(&["gc"], path));
            let left = run_ok(memotag(&["gc", "--dry-run", "--format", "json"], path));
            assert_eq!(left.trim(), "[]", "after the kill {}", run.at);
            assert_sound(path, &expected, run);
        },
    );
}

#[test]
fn sigkill_during_gc_of_a_local_store_loses_nothing() {
    gc_kills(Mode::Local);
}

#[test]
fn sigkill_during_gc_of_a_shared_store_loses_nothing() {
    gc_kills(Mode::Shared);
}

// ---- set-mode --------------------------------------------------------------------------------

fn set_mode_kills(from: Mode, to: Mode) {
    let scratch = Scratch::new("team.memo");
    let expected = store_with_garbage(&scratch.template_store(), from);
    let target = to.to_string();
    let syscalls = [
        "fsync",
        "fdatasync",
        "pwrite64",
        "ftruncate",
        "unlink",
        "unlinkat",
        "rename",
        "write",
    ];
    kill_everywhere(
        &format!("set-mode {from} -> {to}"),
        &scratch,
        &syscalls,
        |path| memotag(&["set-mode", &target], path),
        |path, run| {
            assert_sound(path, &expected, run);
            {
                let store = Store::open(path).unwrap();
                let mode = store.mode();
                assert!(
                    mode == from || mode == to,
                    "mode {mode} after the kill {}",
                    run.at
                );
                if !run.killed {
                    assert_eq!(mode, to);
                }
                assert_eq!(
                    store.lock_method(),
                    memotag::LockMethod::for_mode(mode),
                    "mode and lock method go together (after the kill {})",
                    run.at
                );
            }
            // Running it again completes the switch.
            run_ok(memotag(&["set-mode", &target], path));
            let store = Store::open(path).unwrap();
            assert_eq!(
                (store.mode(), store.lock_method()),
                (to, memotag::LockMethod::for_mode(to))
            );
            drop(store);
            let wal = std::fs::read(path).unwrap()[18] == 2;
            assert_eq!(wal, to == Mode::Local, "the journal follows the mode");
            assert_sound(path, &expected, run);
        },
    );
}

#[test]
fn sigkill_during_set_mode_to_shared_loses_nothing() {
    set_mode_kills(Mode::Local, Mode::Shared);
}

#[test]
fn sigkill_during_set_mode_to_local_loses_nothing() {
    set_mode_kills(Mode::Shared, Mode::Local);
}

// ---- inspecting what a killed client left --------------------------------------------------

/// The first thing a user does after a crash is look: `check`, `info`, `functions`, `calls`
/// read the store a client killed in the middle of a schema change left behind (its journal or
/// WAL not cleaned up), without a writer opening it first.
fn inspect_after_kills(mode: Mode, killed: &[&str]) {
    let scratch = Scratch::new("team.memo");
    store_with_garbage(&scratch.template_store(), mode);
    let mut failures = Failures::default();
    let mut tally = Tally::start();
    let Some(strace) = strace_or_skip() else {
        return;
    };
    let change = |path: &Path| memotag(killed, path);
    for syscall in ["fsync", "pwrite64"] {
        let points = sweep(
            &strace,
            syscall,
            &mut failures,
            || change(&scratch.fresh()),
            |_run| {
                let path = scratch.store();
                remove_dead_lock(&path);
                let mut failed = Vec::new();
                for args in [
                    vec!["check"],
                    vec!["info"],
                    vec!["functions"],
                    vec!["calls", "square"],
                ] {
                    let out = memotag(&args, &path).output().unwrap();
                    let stdout = String::from_utf8_lossy(&out.stdout);
                    if !out.status.success()
                        || (args[0] == "check" && !stdout.contains("passed every check"))
                    {
                        failed.push(format!(
                            "`memotag {}` fails: {}{}",
                            args.join(" "),
                            stdout.trim(),
                            String::from_utf8_lossy(&out.stderr).trim()
                        ));
                    }
                }
                assert!(failed.is_empty(), "{}", failed.join("; "));
            },
        );
        tally.points.push((syscall, points));
    }
    println!(
        "{}",
        tally.report(&format!(
            "inspecting after a killed add-input ({mode} mode)"
        ))
    );
    failures.assert_none(&format!("read commands after a kill ({mode} mode)"));
}

#[test]
fn read_commands_read_what_a_killed_client_left_in_a_local_store() {
    inspect_after_kills(Mode::Local, &["add-input", "square", "k", "--default", "1"]);
}

#[test]
fn read_commands_read_what_a_killed_client_left_in_a_shared_store() {
    inspect_after_kills(
        Mode::Shared,
        &["add-input", "square", "k", "--default", "1"],
    );
}

/// A `set-mode` killed while it switched journal modes leaves a hot rollback journal beside a
/// WAL header (or the reverse); read-only commands roll it back themselves.
#[test]
fn read_commands_read_what_a_killed_set_mode_left() {
    inspect_after_kills(Mode::Local, &["set-mode", "shared"]);
}
