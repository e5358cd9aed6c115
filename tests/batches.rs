//! Batches: buffered results are visible through the same handle, committed together, and a
//! crash inside a batch loses only what the batch had not committed.

mod common;

use common::{decode, finish, int, role, spawn_child};
use memotag::{FunctionSpec, InputSpec, OpenOptions, RecordOutcome, Store, Value};

const TEST: &str = "a_crash_inside_a_batch_loses_only_that_batch";

#[test]
fn a_lookup_inside_the_batch_sees_its_results_and_others_see_them_after() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.memo");
    let store = Store::open(&path).unwrap();
    let other = Store::open(&path).unwrap();
    let f = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    let x = f.inputs[0].tag;
    store.begin_batch();
    for i in 0..10 {
        let call = store.bind(f.tag, vec![(x, int(i))]).unwrap();
        assert_eq!(
            store.record(&call, vec![int(i + 1)]).unwrap(),
            RecordOutcome::Buffered
        );
        let hit = store
            .lookup(&call)
            .unwrap()
            .expect("visible inside the batch");
        assert_eq!(decode(&hit.outputs[0]), Value::Int(i + 1));
        assert!(
            other.lookup(&call).unwrap().is_none(),
            "not visible to others before commit"
        );
    }
    let outcomes = store.commit_batch().unwrap();
    assert_eq!(outcomes.len(), 10);
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, RecordOutcome::Inserted { .. })));
    let call = other.bind(f.tag, vec![(x, int(3))]).unwrap();
    assert_eq!(
        decode(&other.lookup(&call).unwrap().unwrap().outputs[0]),
        Value::Int(4)
    );
}

#[test]
fn a_batch_commits_every_n_results() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.memo");
    let store = OpenOptions::new().batch_size(100).open(&path).unwrap();
    let f = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    store.begin_batch();
    for i in 0..250 {
        let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(i))]).unwrap();
        store.record(&call, vec![int(i)]).unwrap();
    }
    let other = Store::open(&path).unwrap();
    assert_eq!(other.count_results(f.tag).unwrap(), 200);
    store.abort_batch();
    assert_eq!(other.count_results(f.tag).unwrap(), 200);
}

#[test]
fn the_closure_form_commits_on_ok_and_drops_on_err() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("c.memo")).unwrap();
    let f = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    let x = f.inputs[0].tag;
    store
        .batch(|s| {
            let call = s.bind(f.tag, vec![(x, int(1))])?;
            s.record(&call, vec![int(1)])
        })
        .unwrap();
    let failed: Result<(), memotag::CallError> = store.batch(|s| {
        let call = s.bind(f.tag, vec![(x, int(2))])?;
        s.record(&call, vec![int(2)])?;
        Err(memotag::CallError::MissingValue(int(0).id()))
    });
    assert!(failed.is_err());
    assert_eq!(store.count_results(f.tag).unwrap(), 1);
}

#[test]
fn a_crash_inside_a_batch_loses_only_that_batch() {
    if role().as_deref() == Some("batcher") {
        let path = std::env::var("STORE").unwrap();
        let store = OpenOptions::new().batch_size(1_000).open(&path).unwrap();
        let f = store.function("f", 1).unwrap();
        let x = f.inputs[0].tag;
        store.begin_batch();
        for i in 0..300 {
            let call = store.bind(f.tag, vec![(x, int(i))]).unwrap();
            store.record(&call, vec![int(i)]).unwrap();
        }
        store.commit_batch().unwrap();
        println!("OUT committed");
        store.begin_batch();
        for i in 300..600 {
            let call = store.bind(f.tag, vec![(x, int(i))]).unwrap();
            store.record(&call, vec![int(i)]).unwrap();
        }
        println!("OUT crashing");
        std::process::abort();
    }
    if role().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.memo");
    {
        let store = Store::open(&path).unwrap();
        store
            .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
            .unwrap();
    }
    let child = spawn_child(TEST, "batcher", &[("STORE", path.display().to_string())]);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "the child crashed");
    assert!(String::from_utf8_lossy(&out.stdout).contains("OUT crashing"));
    let store = Store::open(&path).unwrap();
    let f = store.function("f", 1).unwrap();
    assert_eq!(store.count_results(f.tag).unwrap(), 300);
    assert_eq!(store.integrity_check().unwrap(), vec!["ok"]);
    let _ = finish;
}

#[test]
fn nested_batches_belong_to_the_outermost_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("nest.memo")).unwrap();
    let f = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    let rec = |i: i64| {
        let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(i))]).unwrap();
        store.record(&call, vec![int(i)]).unwrap()
    };
    store.begin_batch();
    rec(1);
    store.begin_batch();
    rec(2);
    store.abort_batch(); // an inner scope that failed: its results are the outer batch's to keep
    assert_eq!(
        rec(3),
        RecordOutcome::Buffered,
        "still inside the outer batch"
    );
    assert_eq!(store.count_results(f.tag).unwrap(), 0);
    store.commit_batch().unwrap();
    assert_eq!(store.count_results(f.tag).unwrap(), 3);
}

#[test]
fn a_failed_commit_ends_the_batch_so_later_results_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fail.memo");
    let store = OpenOptions::new().blob_threshold(100).open(&path).unwrap();
    let f = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    // The blob folder cannot be created: committing a large value fails.
    std::fs::write(dir.path().join("fail.memo.blobs"), b"in the way").unwrap();
    store.begin_batch();
    let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(1))]).unwrap();
    store
        .record(&call, vec![memotag::EncodedValue::raw(vec![1; 1_000])])
        .unwrap();
    assert!(store.commit_batch().is_err());
    std::fs::remove_file(dir.path().join("fail.memo.blobs")).unwrap();
    let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(2))]).unwrap();
    assert!(matches!(
        store.record(&call, vec![int(2)]).unwrap(),
        RecordOutcome::Inserted { .. }
    ));
    assert_eq!(Store::open(&path).unwrap().count_results(f.tag).unwrap(), 1);
}

#[test]
fn a_lookup_inside_a_batch_sees_the_newest_buffered_result() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("newest.memo")).unwrap();
    let f = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(1))]).unwrap();
    store.begin_batch();
    let code = |own: &str| memotag::CodeRecord {
        own: Some(own.into()),
        ..Default::default()
    };
    store
        .record_with_code(&call, vec![int(10)], code("a"), vec![])
        .unwrap();
    store
        .record_with_code(&call, vec![int(20)], code("b"), vec![])
        .unwrap();
    assert_eq!(
        decode(&store.lookup(&call).unwrap().unwrap().outputs[0]),
        Value::Int(20)
    );
    let strict = std::sync::Arc::new(memotag::Reader {
        code: code("a"),
        strict: true,
        ..Default::default()
    });
    let answer = store.lookup_with(&call, &strict).unwrap();
    assert_eq!(
        decode(&answer.hit.unwrap().outputs[0]),
        Value::Int(10),
        "the older, acceptable one"
    );
    store.commit_batch().unwrap();
}

#[test]
fn a_flush_that_cannot_start_keeps_every_buffered_result() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keep.memo");
    let f = {
        let store = Store::open(&path).unwrap();
        store
            .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
            .unwrap()
    };
    // A new client (so the first flush must register it) with a short patience.
    let store = OpenOptions::new()
        .batch_size(2)
        .client_name("newcomer@test")
        .busy_timeout(std::time::Duration::from_millis(300))
        .open(&path)
        .unwrap();
    let call = |i: i64| store.bind(f.tag, vec![(f.inputs[0].tag, int(i))]).unwrap();
    store.begin_batch();
    assert_eq!(
        store.record(&call(1), vec![int(10)]).unwrap(),
        RecordOutcome::Buffered
    );
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    assert!(
        store.record(&call(2), vec![int(20)]).is_err(),
        "the auto-flush could not start"
    );
    blocker.execute_batch("COMMIT").unwrap();
    // Nothing was lost or mixed up: lookups inside the batch and the commit see every result.
    assert_eq!(
        decode(&store.lookup(&call(1)).unwrap().unwrap().outputs[0]),
        Value::Int(10)
    );
    assert_eq!(
        decode(&store.lookup(&call(2)).unwrap().unwrap().outputs[0]),
        Value::Int(20)
    );
    store.commit_batch().unwrap();
    assert_eq!(Store::open(&path).unwrap().count_results(f.tag).unwrap(), 2);
}

// ---- batches belong to the thread that opened them -------------------------------------------
//
// The threads of these tests meet at barriers so that their batches really overlap; they
// assert only after every thread has finished, so that a failure cannot leave one waiting.

/// A store with `f(x)`.
fn store_with_f(path: &std::path::Path) -> (Store, memotag::Function) {
    let store = Store::open(path).unwrap();
    let f = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    (store, f)
}

fn record_int(store: &Store, f: &memotag::Function, x: i64, out: i64) -> RecordOutcome {
    let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(x))]).unwrap();
    store.record(&call, vec![int(out)]).unwrap()
}

fn lookup_int(store: &Store, f: &memotag::Function, x: i64) -> Option<Value> {
    let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(x))]).unwrap();
    store
        .lookup(&call)
        .unwrap()
        .map(|hit| decode(&hit.outputs[0]))
}

#[test]
fn a_thread_without_a_batch_records_durably_while_another_thread_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("threads.memo");
    let (store, f) = store_with_f(&path);
    let barrier = std::sync::Barrier::new(2);
    let b_outcomes = std::thread::scope(|scope| {
        scope.spawn(|| {
            store.begin_batch();
            record_int(&store, &f, 1_000, 0);
            barrier.wait(); // A's batch is open
            barrier.wait(); // B has recorded
            store.abort_batch(); // A's batch fails
        });
        let b = scope.spawn(|| {
            barrier.wait();
            let outcomes: Vec<_> = (0..100).map(|i| record_int(&store, &f, i, i)).collect();
            barrier.wait();
            outcomes
        });
        b.join().unwrap()
    });
    assert!(
        b_outcomes
            .iter()
            .all(|o| matches!(o, RecordOutcome::Inserted { .. })),
        "B has no batch: its results are written at once, not buffered in A's batch"
    );
    let other = Store::open(&path).unwrap();
    assert_eq!(
        other.count_results(f.tag).unwrap(),
        100,
        "A's abort dropped only A's result"
    );
}

#[test]
fn a_threads_batch_commits_its_own_results_while_another_threads_batch_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("own.memo");
    let (store, f) = store_with_f(&path);
    let other = Store::open(&path).unwrap();
    let barrier = std::sync::Barrier::new(2);
    let (a_sees_own, b_committed, visible_after_b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| {
            store.begin_batch();
            for i in 1_000..1_010 {
                record_int(&store, &f, i, i);
            }
            barrier.wait(); // A's batch is open
            barrier.wait(); // B's batch is committed
            let sees = lookup_int(&store, &f, 1_000);
            store.abort_batch();
            sees
        });
        let b = scope.spawn(|| {
            barrier.wait();
            store.begin_batch();
            for i in 0..50 {
                record_int(&store, &f, i, i);
            }
            let committed = store.commit_batch().unwrap().len();
            let visible = other.count_results(f.tag).unwrap();
            barrier.wait();
            (committed, visible)
        });
        let (committed, visible) = b.join().unwrap();
        (a.join().unwrap(), committed, visible)
    });
    assert_eq!(b_committed, 50, "B's commit stored B's results");
    assert_eq!(
        visible_after_b, 50,
        "B's results, and not A's, are in the store"
    );
    assert_eq!(a_sees_own, Some(Value::Int(1_000)), "A's batch stayed open");
    assert_eq!(other.count_results(f.tag).unwrap(), 50);
    assert_eq!(lookup_int(&other, &f, 1_000), None);
}

#[test]
fn lookups_see_only_the_calling_threads_buffered_results() {
    let dir = tempfile::tempdir().unwrap();
    let (store, f) = store_with_f(&dir.path().join("see.memo"));
    let barrier = std::sync::Barrier::new(2);
    let (a_sees, b_sees_before, b_sees_after) = std::thread::scope(|scope| {
        let a = scope.spawn(|| {
            store.begin_batch();
            record_int(&store, &f, 1, 10);
            barrier.wait();
            let sees = lookup_int(&store, &f, 1);
            barrier.wait();
            store.commit_batch().unwrap();
            barrier.wait();
            sees
        });
        let b = scope.spawn(|| {
            barrier.wait();
            let before = lookup_int(&store, &f, 1);
            barrier.wait();
            barrier.wait();
            (before, lookup_int(&store, &f, 1))
        });
        let (before, after) = b.join().unwrap();
        (a.join().unwrap(), before, after)
    });
    assert_eq!(a_sees, Some(Value::Int(10)));
    assert_eq!(b_sees_before, None, "A's buffered result is not B's to see");
    assert_eq!(b_sees_after, Some(Value::Int(10)));
}

const KILLED: &str = "a_batch_committed_beside_another_threads_open_batch_survives_sigkill";

#[test]
fn a_batch_committed_beside_another_threads_open_batch_survives_sigkill() {
    if role().as_deref() == Some("two_threads") {
        let path = std::env::var("STORE").unwrap();
        let store = Store::open(&path).unwrap();
        let f = store.function("f", 1).unwrap();
        let barrier = std::sync::Barrier::new(2);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                store.begin_batch();
                record_int(&store, &f, 1_000, 0);
                barrier.wait(); // A's batch is open, and stays open until the process is killed
                std::thread::sleep(std::time::Duration::from_secs(600));
            });
            scope.spawn(|| {
                barrier.wait();
                store.begin_batch();
                for i in 0..50 {
                    record_int(&store, &f, i, i);
                }
                store.commit_batch().unwrap();
                println!("OUT committed");
            });
        });
        return;
    }
    if role().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killed.memo");
    let f = store_with_f(&path).1;
    let mut child = spawn_child(
        KILLED,
        "two_threads",
        &[("STORE", path.display().to_string())],
    );
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let committed = std::io::BufRead::lines(stdout)
        .map(Result::unwrap)
        .any(|line| line.contains("OUT committed"));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(committed, "the child printed that B's batch was committed");
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.count_results(f.tag).unwrap(),
        50,
        "every result of B's committed batch survived"
    );
    assert_eq!(store.integrity_check().unwrap(), vec!["ok"]);
}

#[test]
fn dropping_the_store_commits_every_threads_open_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drop.memo");
    let (store, f) = store_with_f(&path);
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|scope| {
        for t in 0..2 {
            let (store, f, barrier) = (&store, &f, &barrier);
            scope.spawn(move || {
                store.begin_batch();
                barrier.wait();
                for i in 0..10 {
                    record_int(store, f, t * 100 + i, i);
                }
                // The thread ends with its batch open.
            });
        }
    });
    store.begin_batch();
    record_int(&store, &f, 1_000, 0);
    drop(store);
    assert_eq!(
        Store::open(&path).unwrap().count_results(f.tag).unwrap(),
        21
    );
}

#[test]
fn a_lookup_inside_a_batch_returns_the_committed_canonical_result() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canonical.memo");
    let (store, f) = store_with_f(&path);
    let other = Store::open(&path).unwrap();
    store.begin_batch();
    record_int(&store, &f, 1, 10);
    record_int(&store, &f, 2, 20);
    assert_eq!(lookup_int(&store, &f, 1), Some(Value::Int(10)));
    // Another client computes f(1) otherwise (a non-deterministic function) and commits first.
    assert!(matches!(
        record_int(&other, &f, 1, 99),
        RecordOutcome::Inserted { .. }
    ));
    assert_eq!(
        lookup_int(&store, &f, 1),
        Some(Value::Int(99)),
        "the committed result is canonical: the buffered one will be a conflict"
    );
    assert_eq!(
        lookup_int(&store, &f, 2),
        Some(Value::Int(20)),
        "no committed result: the batch's own"
    );
    let outcomes = store.commit_batch().unwrap();
    assert!(matches!(outcomes[0], RecordOutcome::Conflict { .. }));
    assert_eq!(lookup_int(&store, &f, 1), Some(Value::Int(99)));
}

#[test]
fn inside_a_batch_the_first_buffered_result_of_a_call_and_code_is_the_canonical_one() {
    let dir = tempfile::tempdir().unwrap();
    let (store, f) = store_with_f(&dir.path().join("first.memo"));
    store.begin_batch();
    record_int(&store, &f, 1, 10);
    record_int(&store, &f, 1, 11); // a conflict once committed
    assert_eq!(lookup_int(&store, &f, 1), Some(Value::Int(10)));
    store.commit_batch().unwrap();
    assert_eq!(lookup_int(&store, &f, 1), Some(Value::Int(10)));
}

#[test]
fn inside_a_batch_a_buffered_result_under_new_code_is_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("newcode.memo");
    let (store, f) = store_with_f(&path);
    let code = |own: &str| memotag::CodeRecord {
        own: Some(own.into()),
        ..Default::default()
    };
    let strict = |own: &str| {
        std::sync::Arc::new(memotag::Reader {
            code: code(own),
            strict: true,
            ..Default::default()
        })
    };
    let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(1))]).unwrap();
    store
        .record_with_code(&call, vec![int(10)], code("a"), vec![])
        .unwrap();
    store.begin_batch();
    store
        .record_with_code(&call, vec![int(20)], code("b"), vec![])
        .unwrap();
    let newest = |store: &Store| decode(&store.lookup(&call).unwrap().unwrap().outputs[0]);
    let as_of = |store: &Store, own: &str| {
        let answer = store.lookup_with(&call, &strict(own)).unwrap();
        decode(&answer.hit.unwrap().outputs[0])
    };
    assert_eq!(
        newest(&store),
        Value::Int(20),
        "it will be the newest result"
    );
    assert_eq!(as_of(&store, "a"), Value::Int(10));
    assert_eq!(as_of(&store, "b"), Value::Int(20));
    store.commit_batch().unwrap();
    assert_eq!(
        newest(&store),
        Value::Int(20),
        "the same answer after the commit"
    );
    assert_eq!(as_of(&store, "a"), Value::Int(10));
}

#[test]
fn an_auto_flush_that_fails_says_what_was_stored_and_keeps_the_rest_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auto.memo");
    let f = store_with_f(&path).1;
    let store = OpenOptions::new()
        .batch_size(2)
        .busy_timeout(std::time::Duration::from_millis(300))
        .open(&path)
        .unwrap();
    store.begin_batch();
    record_int(&store, &f, 1, 1);
    record_int(&store, &f, 2, 2); // flushed
    record_int(&store, &f, 3, 3);
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(4))]).unwrap();
    let err = store.record(&call, vec![int(4)]).unwrap_err();
    blocker.execute_batch("COMMIT").unwrap();
    let memotag::CallError::Batch(e) = &err else {
        panic!("not a batch error: {err}");
    };
    assert_eq!(e.flush, memotag::BatchFlush::AutoFlush);
    assert_eq!((e.stored, e.not_stored), (2, 2));
    assert!(e.still_buffered());
    assert!(e.cause.to_string().contains("locked"), "{}", e.cause);
    let message = err.to_string();
    assert!(
        message.contains("2 of its results are stored")
            && message.contains("2 are not, and stay buffered"),
        "{message}"
    );
    assert_eq!(store.commit_batch().unwrap().len(), 2);
    assert_eq!(Store::open(&path).unwrap().count_results(f.tag).unwrap(), 4);
}

/// A store whose value files cannot be written (a file is in the way of the folder), so that
/// committing a large value fails.
fn store_without_blob_folder(path: &std::path::Path, batch_size: usize) -> Store {
    let store = OpenOptions::new()
        .blob_threshold(100)
        .batch_size(batch_size)
        .open(path)
        .unwrap();
    std::fs::write(path.with_extension("memo.blobs"), b"in the way").unwrap();
    store
}

fn large() -> memotag::EncodedValue {
    memotag::EncodedValue::raw(vec![1; 1_000])
}

#[test]
fn a_failed_commit_says_how_many_results_were_stored_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("commit.memo");
    let f = store_with_f(&path).1;
    let store = store_without_blob_folder(&path, 2);
    store.begin_batch();
    record_int(&store, &f, 1, 1);
    record_int(&store, &f, 2, 2); // flushed
    let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(3))]).unwrap();
    store.record(&call, vec![large()]).unwrap();
    let err = store.commit_batch().unwrap_err();
    let memotag::CallError::Batch(e) = &err else {
        panic!("not a batch error: {err}");
    };
    assert_eq!(e.flush, memotag::BatchFlush::Commit);
    assert_eq!((e.stored, e.not_stored), (2, 1));
    assert!(!e.still_buffered());
    assert!(
        err.to_string()
            .contains("the other 1 were not stored and are dropped"),
        "{err}"
    );
    assert_eq!(store.count_results(f.tag).unwrap(), 2);
}

#[test]
fn close_commits_every_threads_batch_or_gives_the_store_back_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("close.memo");
    let f = store_with_f(&path).1;
    let store = store_without_blob_folder(&path, 1_000);
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|scope| {
        for t in 0..2 {
            let (store, f, barrier) = (&store, &f, &barrier);
            scope.spawn(move || {
                store.begin_batch();
                barrier.wait();
                for i in 0..5 {
                    record_int(store, f, t * 100 + i, i);
                }
            });
        }
    });
    store.begin_batch();
    let call = store
        .bind(f.tag, vec![(f.inputs[0].tag, int(1_000))])
        .unwrap();
    store.record(&call, vec![large()]).unwrap();
    let (store, err) = store.close().unwrap_err();
    let memotag::CallError::Batch(e) = &err else {
        panic!("not a batch error: {err}");
    };
    assert_eq!(e.flush, memotag::BatchFlush::Close);
    assert!(e.still_buffered());
    assert_eq!(e.stored + e.not_stored, 11, "{err}");
    assert!(e.not_stored >= 1, "{err}");
    std::fs::remove_file(path.with_extension("memo.blobs")).unwrap();
    store.close().unwrap();
    assert_eq!(
        Store::open(&path).unwrap().count_results(f.tag).unwrap(),
        11
    );
}

const DROPPED: &str = "a_store_dropped_with_results_it_cannot_store_says_so";

#[test]
fn a_store_dropped_with_results_it_cannot_store_says_so() {
    if role().as_deref() == Some("dropper") {
        let path = std::path::PathBuf::from(std::env::var("STORE").unwrap());
        let store = store_without_blob_folder(&path, 1_000);
        let f = store.function("f", 1).unwrap();
        store.begin_batch();
        let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(1))]).unwrap();
        store.record(&call, vec![large()]).unwrap();
        drop(store);
        return;
    }
    if role().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dropped.memo");
    store_with_f(&path);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([DROPPED, "--exact", "--nocapture", "--test-threads=1"])
        .env(common::ROLE_ENV, "dropper")
        .env("STORE", &path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dropped with 1 results buffered in 1 open batches; 0 were stored, and 1 could not be and are lost"),
        "{stderr}"
    );
}
