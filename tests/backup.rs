//! Copying a store: `memotag backup` of a live store (a writer process records throughout)
//! holds every result acknowledged before the backup started, passes SQLite's integrity check
//! and `memotag check`, and opens as a store of the same mode and `store_id`, in both modes; an
//! existing destination is refused unless forced; a killed backup leaves no destination; `cp` of
//! a closed local store holds everything (the last handle checkpoints), `cp` of a live one does
//! not (the reason `backup` exists).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{decode, int, role, spawn_child, text, unix_ns, ProcessBarrier};
use memotag::{maintenance, BackupError, FunctionSpec, InputSpec, Mode, OpenOptions, Store, Value};

fn memotag_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("memotag")
}

fn run_memotag(args: &[&Path]) -> Output {
    Command::new(memotag_bin())
        .args(args)
        .output()
        .expect("run memotag")
}

fn new_store(path: &Path, mode: Mode) -> Store {
    let store = OpenOptions::new().mode(mode).open(path).unwrap();
    store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    store
}

fn record(store: &Store, i: i64) {
    let f = store.function("f", 1).unwrap();
    let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(i))]).unwrap();
    store.record(&call, vec![int(i * 3)]).unwrap();
}

/// The results of `f` in the store at `path`, by input.
fn results_of(path: &Path) -> Vec<i64> {
    let store = Store::open(path).unwrap();
    let f = store.function("f", 1).unwrap();
    let mut xs: Vec<i64> = store
        .results(f.tag, &[], None)
        .unwrap()
        .iter()
        .map(
            |r| match decode(&store.value(&r.inputs[0].1).unwrap().unwrap()) {
                Value::Int(i) => i,
                other => panic!("unexpected input {other:?}"),
            },
        )
        .collect();
    xs.sort_unstable();
    xs
}

fn store_id(path: &Path) -> Option<String> {
    maintenance::info(path).unwrap().store_id
}

/// The copy is a whole, healthy store: integrity_check, `memotag check`, the same mode and id.
fn assert_healthy_copy(src: &Path, dest: &Path, mode: Mode) {
    let conn =
        rusqlite::Connection::open_with_flags(dest, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(verdict, "ok");
    drop(conn);
    let check = run_memotag(&[Path::new("check"), dest]);
    assert!(
        check.status.success(),
        "memotag check fails the copy: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(store_id(dest), store_id(src));
    assert!(store_id(dest).is_some());
    let store = Store::open(dest).unwrap();
    assert_eq!(store.mode(), mode);
}

const LIVE: &str = "live_backup";

/// A writer process records continuously; the parent, having passed a barrier with it, lets it
/// acknowledge results, then runs `memotag backup` while it goes on.
fn backup_of_a_live_store(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.memo");
    let dest = dir.path().join("copy.memo");
    let stop = dir.path().join("stop");
    let acks_file = dir.path().join("acks");
    drop(new_store(&path, mode));
    let barrier = ProcessBarrier::create(&dir.path().join("barrier"), 2);
    let writer = spawn_child(
        LIVE,
        "writer",
        &[
            ("STORE", path.display().to_string()),
            ("STOP", stop.display().to_string()),
            ("ACKS", acks_file.display().to_string()),
            barrier.env(),
        ],
    );
    barrier.wait("start", "parent");
    // Let the writer acknowledge a good number of results first (shared mode fsyncs every
    // commit and takes the lock for it: fewer per second).
    std::thread::sleep(Duration::from_millis(match mode {
        Mode::Local => 700,
        Mode::Shared => 2000,
    }));
    let started = unix_ns();
    let backup = run_memotag(&[Path::new("backup"), &path, &dest]);
    let finished = unix_ns();
    // Let it go on a little after the backup, to show it was writing throughout.
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(&stop, b"").unwrap();
    common::finish(writer);
    let acks = std::fs::read_to_string(&acks_file).unwrap();
    let lines: Vec<&str> = acks.lines().collect();
    assert!(
        backup.status.success(),
        "memotag backup failed: {}",
        String::from_utf8_lossy(&backup.stderr)
    );
    let said = String::from_utf8_lossy(&backup.stdout);
    println!("{said}");
    assert!(said.contains("results"), "{said}");
    let acks: Vec<(i64, u128)> = lines
        .iter()
        .filter_map(|l| {
            let mut parts = l.strip_prefix("ack ")?.split(' ');
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        })
        .collect();
    let before: Vec<i64> = acks
        .iter()
        .filter(|(_, at)| *at < started)
        .map(|(i, _)| *i)
        .collect();
    let after = acks.iter().filter(|(_, at)| *at > finished).count();
    assert!(
        before.len() >= 20,
        "the writer acknowledged only {} results before the backup",
        before.len()
    );
    assert!(after > 0, "the writer stopped before the backup finished");
    assert_healthy_copy(&path, &dest, mode);
    let copied = results_of(&dest);
    for i in &before {
        assert!(
            copied.binary_search(i).is_ok(),
            "result {i}, acknowledged before the backup started, is missing from the copy"
        );
    }
    // One consistent view: a prefix of the writer's results, nothing torn.
    let n = copied.len() as i64;
    assert_eq!(copied, (0..n).collect::<Vec<_>>());
    println!(
        "{mode}: {} acknowledged before the backup, {n} in the copy, {} of {} in the source",
        before.len(),
        results_of(&path).len(),
        acks.len()
    );
}

#[test]
fn live_backup() {
    match role().as_deref() {
        Some("writer") => {
            let path = std::env::var("STORE").unwrap();
            let stop = PathBuf::from(std::env::var("STOP").unwrap());
            let store = Store::open(&path).unwrap();
            let f = store.function("f", 1).unwrap();
            let barrier = ProcessBarrier::from_env();
            barrier.wait("start", "writer");
            // Acknowledgements go to a file (unbuffered): a pipe nobody reads would fill up.
            let mut acks = std::fs::File::create(std::env::var("ACKS").unwrap()).unwrap();
            let mut i = 0;
            while !stop.exists() {
                let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(i))]).unwrap();
                store.record(&call, vec![int(i * 3)]).unwrap();
                writeln!(acks, "ack {i} {}", unix_ns()).unwrap();
                i += 1;
            }
            return;
        }
        Some(_) => return,
        None => {}
    }
    backup_of_a_live_store(Mode::Local);
    backup_of_a_live_store(Mode::Shared);
}

#[test]
fn an_existing_destination_is_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.memo");
    let dest = dir.path().join("d.memo");
    {
        let store = new_store(&path, Mode::Local);
        record(&store, 1);
    }
    std::fs::write(&dest, b"precious").unwrap();
    let refused = run_memotag(&[Path::new("backup"), &path, &dest]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"precious");
    let forced = run_memotag(&[Path::new("backup"), &path, &dest, Path::new("--force")]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert_healthy_copy(&path, &dest, Mode::Local);
    assert_eq!(results_of(&dest), vec![1]);
    // The library says the same, with a typed error.
    let store = Store::open(&path).unwrap();
    match store.backup(&dest) {
        Err(BackupError::DestinationExists { dest: d }) => assert!(d.ends_with("d.memo")),
        other => panic!("expected DestinationExists, got {other:?}"),
    }
    assert!(matches!(
        store.backup(&path),
        Err(BackupError::DestinationExists { .. } | BackupError::SameStore { .. })
    ));
    store.backup_overwriting(&dest).unwrap();
    // Never over a directory, forced or not.
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    match store.backup_overwriting(&folder) {
        Err(e @ BackupError::Failed { .. }) => assert!(e.to_string().contains("directory"), "{e}"),
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn value_files_are_copied_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.memo");
    let dest = dir.path().join("sub").join("d.memo");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    for mode in [Mode::Local, Mode::Shared] {
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir_all(dir.path().join("s.memo.blobs"));
        let _ = std::fs::remove_file(&dest);
        let store = OpenOptions::new()
            .mode(mode)
            .blob_threshold(1000)
            .open(&path)
            .unwrap();
        let f = store
            .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
            .unwrap();
        for i in 0..5 {
            let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(i))]).unwrap();
            store
                .record(&call, vec![text(&format!("{i}").repeat(5000))])
                .unwrap();
        }
        let report = store.backup(&dest).unwrap();
        assert_eq!(report.results, 5);
        assert_eq!(report.value_files, 5);
        assert_eq!(report.mode, mode);
        drop(store);
        assert_healthy_copy(&path, &dest, mode);
        // The copy does not need the original's files.
        std::fs::remove_dir_all(dir.path().join("s.memo.blobs")).unwrap();
        let copy = Store::open(&dest).unwrap();
        let f = copy.function("f", 1).unwrap();
        let call = copy.bind(f.tag, vec![(f.inputs[0].tag, int(3))]).unwrap();
        let hit = copy.lookup(&call).unwrap().unwrap();
        assert_eq!(decode(&hit.outputs[0]), Value::Str("3".repeat(5000)));
        drop(copy);
        std::fs::remove_dir_all(dir.path().join("sub").join("d.memo.blobs")).unwrap();
    }
}

#[test]
fn a_killed_backup_leaves_no_destination() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.memo");
    let dest = dir.path().join("copy.memo");
    {
        // Many value files: each is written and fsynced on its own, which takes a while.
        let store = OpenOptions::new().blob_threshold(1000).open(&path).unwrap();
        let f = store
            .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
            .unwrap();
        store
            .batch(|s| -> Result<(), memotag::CallError> {
                for i in 0..400 {
                    let call = s.bind(f.tag, vec![(f.inputs[0].tag, int(i))]).unwrap();
                    s.record(&call, vec![text(&format!("{i:05}").repeat(4000))])?;
                }
                Ok(())
            })
            .unwrap();
    }
    let mut killed_mid_copy = 0;
    for round in 0..3 {
        let mut child = Command::new(memotag_bin())
            .args([Path::new("backup"), &path, &dest])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the copy is under way (its temporary file exists), then kill it, a little
        // later each round.
        let started = Instant::now();
        let temporary = || {
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().contains(".backup-"))
        };
        while !temporary() && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_millis(5 * round));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.signal() == Some(libc::SIGKILL) {
            killed_mid_copy += 1;
            assert!(
                !dest.exists(),
                "a backup killed mid-copy left {}",
                dest.display()
            );
        } else {
            std::fs::remove_file(&dest).unwrap();
        }
    }
    assert!(killed_mid_copy > 0, "no backup was killed mid-copy");
    // A later backup is not disturbed by what the killed ones left.
    let done = run_memotag(&[Path::new("backup"), &path, &dest]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_healthy_copy(&path, &dest, Mode::Local);
    assert_eq!(results_of(&dest).len(), 400);
}

/// Why `backup` exists: `cp` of the main file of a local store that a client holds misses what
/// is still in the write-ahead log.
#[test]
fn cp_of_a_live_local_store_misses_the_wal_and_backup_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.memo");
    let store = new_store(&path, Mode::Local);
    for i in 0..20 {
        record(&store, i);
    }
    let copied = dir.path().join("cp.memo");
    std::fs::copy(&path, &copied).unwrap();
    // (The function itself may be only in the WAL too.)
    let in_cp = match Store::open(&copied).unwrap().function("f", 1) {
        Ok(_) => results_of(&copied).len(),
        Err(_) => 0,
    };
    assert!(in_cp < 20, "cp of a live store held all {in_cp} results");
    let backed_up = dir.path().join("backup.memo");
    let report = store.backup(&backed_up).unwrap();
    assert_eq!(report.results, 20);
    assert_eq!(results_of(&backed_up), (0..20).collect::<Vec<_>>());
}

const CLOSED: &str = "cp_of_a_closed_local_store_holds_every_result";

/// The last handle to close checkpoints the WAL into the main file and removes it: a closed
/// store copies whole with `cp`.
#[test]
fn cp_of_a_closed_local_store_holds_every_result() {
    match role().as_deref() {
        Some("writer") => {
            let path = std::env::var("STORE").unwrap();
            let store = Store::open(&path).unwrap();
            for i in 0..500 {
                record(&store, i);
            }
            println!("OUT done");
            return;
        }
        Some(_) => return,
        None => {}
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.memo");
    drop(new_store(&path, Mode::Local));
    // Two processes record, the second while the first still holds the store.
    let first = Store::open(&path).unwrap();
    record(&first, 1000);
    let child = spawn_child(CLOSED, "writer", &[("STORE", path.display().to_string())]);
    common::finish(child);
    record(&first, 1001);
    drop(first);
    let wal = dir.path().join("s.memo-wal");
    assert!(!wal.exists(), "the last handle left the WAL");
    let copied = dir.path().join("cp.memo");
    std::fs::copy(&path, &copied).unwrap();
    let mut expected: Vec<i64> = (0..500).collect();
    expected.extend([1000, 1001]);
    assert_eq!(results_of(&copied), expected);
}

/// A value file that is missing (or damaged) fails the backup, naming it, and leaves no
/// destination.
#[test]
fn a_missing_value_file_fails_the_backup_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.memo");
    let dest = dir.path().join("d.memo");
    let store = OpenOptions::new().blob_threshold(1000).open(&path).unwrap();
    let f = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(1))]).unwrap();
    store.record(&call, vec![text(&"v".repeat(5000))]).unwrap();
    std::fs::remove_dir_all(dir.path().join("s.memo.blobs")).unwrap();
    match store.backup(&dest) {
        Err(e @ BackupError::Failed { .. }) => {
            assert!(e.to_string().contains("missing"), "{e}");
            assert!(e.to_string().contains("nothing was written"), "{e}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(!dest.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".backup-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Local mode bounds its write-ahead log (checkpoints every 1,000 pages, truncated back to
/// 4 MiB): a full disk is never mostly log. With the former 10,000-page bound the log reached
/// ~41 MB, and an 8 MiB disk held 613 results instead of 30,518.
#[test]
fn the_write_ahead_log_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.memo");
    let store = new_store(&path, Mode::Local);
    let f = store.function("f", 1).unwrap();
    let mut largest = 0;
    for i in 0..6000 {
        let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(i))]).unwrap();
        store.record(&call, vec![int(i)]).unwrap();
        if i % 100 == 0 {
            let wal = std::fs::metadata(dir.path().join("s.memo-wal")).map_or(0, |m| m.len());
            largest = largest.max(wal);
        }
    }
    println!("largest WAL: {} KiB", largest / 1024);
    assert!(
        largest <= 6 << 20,
        "the write-ahead log grew to {largest} bytes"
    );
}
