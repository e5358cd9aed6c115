//! The store file: creation (also by two processes at once), refusal of anything that is not a
//! store (left byte-for-byte unchanged), modes, read-only opening.

mod common;

use common::{
    file_bytes, finish, int, overlapped, role, spawn_child, unix_ns, ProcessBarrier, Span,
};
use memotag::{FunctionSpec, InputSpec, Mode, OpenError, OpenOptions, SchemaError, Store};

#[test]
fn a_missing_path_becomes_a_store_with_memotag_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.memo");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.format_generation(), memotag::FORMAT_GENERATION);
    drop(store);
    let bytes = file_bytes(&path);
    assert_eq!(&bytes[..16], b"SQLite format 3\0");
    assert_eq!(&bytes[68..72], b"memo");
    assert_eq!(
        u32::from_be_bytes(bytes[60..64].try_into().unwrap()),
        memotag::FORMAT_GENERATION
    );
}

#[test]
fn a_zero_byte_file_becomes_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.memo");
    std::fs::write(&path, b"").unwrap();
    let store = Store::open(&path).unwrap();
    store
        .create_function(FunctionSpec::new("f", vec![]))
        .unwrap();
    drop(store);
    assert!(Store::open(&path).unwrap().function("f", 1).is_ok());
}

fn assert_refused_unchanged(path: &std::path::Path) -> OpenError {
    let before = file_bytes(path);
    let siblings = |p: &std::path::Path| {
        let mut names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let listing = siblings(path);
    let err = Store::open(path).unwrap_err();
    let err2 = OpenOptions::new().read_only(true).open(path).unwrap_err();
    assert_eq!(std::mem::discriminant(&err), std::mem::discriminant(&err2));
    assert_eq!(file_bytes(path), before, "refused file must be unchanged");
    assert_eq!(
        siblings(path),
        listing,
        "no -wal, -journal or blob folder left behind"
    );
    err
}

#[test]
fn a_text_file_is_refused_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "dear diary, today I memoized nothing\n").unwrap();
    let err = assert_refused_unchanged(&path);
    assert!(matches!(err, OpenError::NotAStore { .. }), "{err}");
    assert!(err.to_string().contains("not a SQLite database"));
}

#[test]
fn a_foreign_sqlite_database_is_refused_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE meta (key TEXT, value TEXT); INSERT INTO meta VALUES ('mode','local');",
        )
        .unwrap();
    }
    let err = assert_refused_unchanged(&path);
    assert!(matches!(err, OpenError::NotAStore { .. }), "{err}");
}

#[test]
fn a_truncated_store_is_refused_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.memo");
    {
        let store = OpenOptions::new().mode(Mode::Shared).open(&path).unwrap();
        let f = store
            .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
            .unwrap();
        for i in 0..200 {
            let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(i))]).unwrap();
            store.record(&call, vec![int(i * i)]).unwrap();
        }
    }
    let bytes = file_bytes(&path);
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = assert_refused_unchanged(&path);
    assert!(matches!(err, OpenError::Truncated { .. }), "{err}");
    // Shorter than a SQLite header.
    std::fs::write(&path, &bytes[..50]).unwrap();
    let err = assert_refused_unchanged(&path);
    assert!(matches!(err, OpenError::Truncated { .. }), "{err}");
}

#[test]
fn a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Store::open(dir.path()).unwrap_err(),
        OpenError::NotAStore { .. }
    ));
}

#[test]
fn opening_in_another_mode_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.memo");
    drop(OpenOptions::new().mode(Mode::Shared).open(&path).unwrap());
    let before = file_bytes(&path);
    let err = OpenOptions::new()
        .mode(Mode::Local)
        .open(&path)
        .unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::ModeMismatch {
                store: Mode::Shared,
                requested: Mode::Local,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(file_bytes(&path), before);
    assert!(
        !dir.path().join("m.memo-wal").exists(),
        "a shared store never gets a WAL"
    );
    // Without a mode, a client uses the store's own.
    assert_eq!(Store::open(&path).unwrap().mode(), Mode::Shared);
}

#[test]
fn local_mode_uses_wal_and_shared_mode_a_rollback_journal() {
    let dir = tempfile::tempdir().unwrap();
    for (mode, expected) in [(Mode::Local, "wal"), (Mode::Shared, "delete")] {
        let path = dir.path().join(format!("{mode}.memo"));
        drop(OpenOptions::new().mode(mode).open(&path).unwrap());
        let conn = rusqlite::Connection::open(&path).unwrap();
        let journal: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(journal, expected);
    }
}

#[test]
fn auto_detection_picks_local_on_a_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    let kind = memotag::storage::filesystem_kind(dir.path());
    let store = Store::open(dir.path().join("a.memo")).unwrap();
    assert_eq!(store.mode(), kind.mode());
}

#[test]
fn read_only_open_cannot_write_and_never_creates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.memo");
    let err = OpenOptions::new().read_only(true).open(&path).unwrap_err();
    assert!(matches!(err, OpenError::NotFound { .. }), "{err}");
    assert!(!path.exists());
    {
        let store = Store::open(&path).unwrap();
        store
            .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
            .unwrap();
    }
    let before = file_bytes(&path);
    let ro = OpenOptions::new().read_only(true).open(&path).unwrap();
    assert!(ro.is_read_only());
    let f = ro.function("f", 1).unwrap();
    let err = ro
        .create_function(FunctionSpec::new("g", vec![]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            SchemaError::Storage(memotag::StorageError::ReadOnly { .. })
        ),
        "{err}"
    );
    let call = ro.bind(f.tag, vec![(f.inputs[0].tag, int(1))]).unwrap();
    assert!(ro.lookup(&call).unwrap().is_none());
    assert!(ro.record(&call, vec![int(1)]).is_err());
    drop(ro);
    assert_eq!(file_bytes(&path), before);
}

#[test]
fn a_newer_format_generation_with_our_levels_still_opens() {
    // SQLite-header style: a newer format that keeps the read and write levels stays usable.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.memo");
    drop(Store::open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&format!(
            "PRAGMA user_version = {}",
            memotag::FORMAT_GENERATION + 1
        ))
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert!(!store.is_read_only());
    store
        .create_function(FunctionSpec::new("f", vec![]))
        .unwrap();
}

/// Rounds of the creation race that must really race (both processes past the barrier before
/// either had opened the store), half on a missing path and half on a 0-byte file.
const RACED_ROUNDS: usize = 3;

#[test]
fn two_processes_creating_the_same_store_end_with_one_store() {
    const TEST: &str = "two_processes_creating_the_same_store_end_with_one_store";
    if role().as_deref() == Some("create") {
        let path = std::env::var("STORE").unwrap();
        let me = std::env::var("ME").unwrap();
        let passed = ProcessBarrier::from_env().wait("start", &me);
        let store = Store::open(&path).unwrap();
        let opened = unix_ns();
        let f = store
            .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
            .unwrap();
        let call = store
            .bind(
                f.tag,
                vec![(f.inputs[0].tag, int(std::process::id() as i64))],
            )
            .unwrap();
        store.record(&call, vec![int(1)]).unwrap();
        println!("OUT passed {passed}");
        println!("OUT finished {opened}");
        println!("OUT tag {}", f.tag);
        return;
    }
    if role().is_some() {
        return;
    }
    // Rounds go on until enough of each kind raced (a loaded machine may schedule one process
    // late); every round, raced or not, must end with one store.
    let mut raced = [0usize; 2];
    let mut rounds = 0;
    for round in 0..30 {
        if raced.iter().all(|n| *n >= RACED_ROUNDS) {
            break;
        }
        rounds += 1;
        let kind = round % 2;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("race.memo");
        if kind == 1 {
            std::fs::write(&path, b"").unwrap();
        }
        let barrier = ProcessBarrier::create(&dir.path().join("barrier"), 2);
        let children: Vec<_> = (0..2)
            .map(|me| {
                spawn_child(
                    TEST,
                    "create",
                    &[
                        ("STORE", path.display().to_string()),
                        ("ME", me.to_string()),
                        barrier.env(),
                    ],
                )
            })
            .collect();
        let outputs: Vec<Vec<String>> = children.into_iter().map(finish).collect();
        let tags: Vec<&str> = outputs
            .iter()
            .flatten()
            .filter_map(|l| l.strip_prefix("tag "))
            .collect();
        assert_eq!(tags.len(), 2);
        assert_eq!(
            tags[0], tags[1],
            "both processes must see the same function"
        );
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_log(0).unwrap().len(), 1);
        let f = store.function("f", 1).unwrap();
        assert_eq!(store.count_results(f.tag).unwrap(), 2);
        assert_eq!(store.integrity_check().unwrap(), vec!["ok"]);
        let spans: Vec<Span> = outputs.iter().map(|o| Span::from_lines(o)).collect();
        if overlapped(&spans) {
            raced[kind] += 1;
        }
    }
    println!("{rounds} rounds, raced {raced:?} (missing path, 0-byte file)");
    assert!(
        raced.iter().all(|n| *n >= RACED_ROUNDS),
        "too few rounds where both processes were creating the store at once: {raced:?} \
         (missing path, 0-byte file)"
    );
}
