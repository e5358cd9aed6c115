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
