//! Stale calls are always accepted: a client that knows an older schema records calls that a
//! current client finds, renames keep hits, and added inputs keep old calls for their default.

mod common;

use common::{decode, int};
use memotag::{CallError, FunctionSpec, InputSpec, RecordOutcome, Store, Value};

fn two_handles() -> (tempfile::TempDir, Store, Store) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.memo");
    let a = Store::open(&path).unwrap();
    let b = Store::open(&path).unwrap();
    (dir, a, b)
}

#[test]
fn a_call_from_a_schema_two_changes_old_is_recorded_and_found() {
    let (_d, stale, current) = two_handles();
    let f = stale
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    let x = f.inputs[0].tag;
    // Two changes the stale client never looks at.
    let y = current.add_input(f.tag, "y", Some(int(0))).unwrap();
    current.rename_input_tag(x, "x2").unwrap();

    let call = stale.bind(f.tag, vec![(x, int(1))]).unwrap();
    assert!(matches!(
        stale.record(&call, vec![int(10)]).unwrap(),
        RecordOutcome::Inserted { .. }
    ));

    let now = current.function("f", 1).unwrap();
    assert_eq!(now.input(x).unwrap().name, "x2");
    for inputs in [vec![(x, int(1))], vec![(x, int(1)), (y, int(0))]] {
        let call = current.bind(f.tag, inputs).unwrap();
        let hit = current.lookup(&call).unwrap().expect("stale call is found");
        assert_eq!(decode(&hit.outputs[0]), Value::Int(10));
    }
    let other = current.bind(f.tag, vec![(x, int(1)), (y, int(5))]).unwrap();
    assert!(current.lookup(&other).unwrap().is_none());

    // SQLite filled the default of `y` into the stale row.
    let rows = current.results(f.tag, &[], None).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].inputs.contains(&(y, int(0).id())));
}

#[test]
fn a_rename_keeps_hits() {
    let (_d, a, b) = two_handles();
    let f = a
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    let call = a.bind(f.tag, vec![(f.inputs[0].tag, int(3))]).unwrap();
    a.record(&call, vec![int(9)]).unwrap();
    b.rename_family(f.family, "g").unwrap();
    let g = b.function("g", 1).unwrap();
    let call = b.bind(g.tag, vec![(g.inputs[0].tag, int(3))]).unwrap();
    assert_eq!(
        decode(&b.lookup(&call).unwrap().unwrap().outputs[0]),
        Value::Int(9)
    );
    // The old name still reaches it, reported as a rename.
    assert_eq!(b.function("f", 1).unwrap().tag, f.tag);
}

#[test]
fn an_added_input_keeps_old_calls_for_its_default_and_misses_other_values() {
    let (_d, a, _b) = two_handles();
    let f = a
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    let x = f.inputs[0].tag;
    for i in 0..10 {
        let call = a.bind(f.tag, vec![(x, int(i))]).unwrap();
        a.record(&call, vec![int(i * 2)]).unwrap();
    }
    let scale = a.add_input(f.tag, "scale", Some(int(1))).unwrap();
    for i in 0..10 {
        let hit = a.bind(f.tag, vec![(x, int(i)), (scale, int(1))]).unwrap();
        assert_eq!(
            decode(&a.lookup(&hit).unwrap().unwrap().outputs[0]),
            Value::Int(i * 2)
        );
        let miss = a.bind(f.tag, vec![(x, int(i)), (scale, int(3))]).unwrap();
        assert!(a.lookup(&miss).unwrap().is_none());
    }
    // Same call id with and without the default given.
    assert_eq!(
        a.bind(f.tag, vec![(x, int(4))]).unwrap().call_id(),
        a.bind(f.tag, vec![(x, int(4)), (scale, int(1))])
            .unwrap()
            .call_id()
    );
}

#[test]
fn an_input_tag_the_function_does_not_have_is_an_error() {
    let (_d, a, _b) = two_handles();
    let f = a
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    let g = a
        .create_function(FunctionSpec::new("g", vec![InputSpec::required("x")]))
        .unwrap();
    let err = a.bind(f.tag, vec![(g.inputs[0].tag, int(1))]).unwrap_err();
    assert!(matches!(err, CallError::UnknownInput { .. }), "{err}");
    let err = a.bind(f.tag, vec![]).unwrap_err();
    assert!(matches!(err, CallError::MissingInput { .. }), "{err}");
    let err = a
        .bind(
            f.tag,
            vec![(f.inputs[0].tag, int(1)), (f.inputs[0].tag, int(2))],
        )
        .unwrap_err();
    assert!(matches!(err, CallError::DuplicateInput { .. }), "{err}");
    let call = a.bind(f.tag, vec![(f.inputs[0].tag, int(1))]).unwrap();
    let err = a.record(&call, vec![int(1), int(2)]).unwrap_err();
    assert!(matches!(err, CallError::OutputCount { .. }), "{err}");
    assert!(a.results(f.tag, &[], None).unwrap().is_empty());
}

#[test]
fn an_input_added_by_another_client_is_accepted_by_tag() {
    let (_d, a, b) = two_handles();
    let f = a
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    let _ = a.catalog().unwrap();
    let y = b.add_input(f.tag, "y", Some(int(0))).unwrap();
    // `a` has not seen `y` yet; binding with it catches up instead of failing.
    let call = a
        .bind(f.tag, vec![(f.inputs[0].tag, int(1)), (y, int(2))])
        .unwrap();
    a.record(&call, vec![int(3)]).unwrap();
    assert!(b.lookup(&call).unwrap().is_some());
}

#[test]
fn duplicates_are_idempotent_and_queries_find_results() {
    let (_d, a, _b) = two_handles();
    let f = a
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    let x = f.inputs[0].tag;
    let call = a.bind(f.tag, vec![(x, int(1))]).unwrap();
    let first = a.record(&call, vec![int(5)]).unwrap();
    let RecordOutcome::Inserted { seq } = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        a.record(&call, vec![int(5)]).unwrap(),
        RecordOutcome::AlreadyRecorded { seq }
    );
    let other = a.bind(f.tag, vec![(x, int(2))]).unwrap();
    a.record(&other, vec![int(5)]).unwrap();

    assert_eq!(a.results(f.tag, &[(x, int(2))], None).unwrap().len(), 1);
    assert_eq!(a.results(f.tag, &[], Some(1)).unwrap().len(), 1);
    assert_eq!(a.results_of_call(&call.call_id()).unwrap().len(), 1);
    assert_eq!(a.producers(&int(5).id()).unwrap().len(), 2);
    assert!(a.producers(&int(6).id()).unwrap().is_empty());
}
