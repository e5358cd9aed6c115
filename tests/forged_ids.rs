//! A caller's ids are never trusted. A `BoundCall` is made by binding; one that arrives as a wire
//! payload (built here with serde, as a server or an older generation would decode it) carries
//! ids its sender claims, and the store re-derives them before it writes or reads anything: the
//! call id from the function tag, the inputs and the defaults; each value id from the value's
//! codec and bytes. A mismatch is a typed error and nothing is written.

mod common;

use common::{decode, int};
use memotag::{
    BoundCall, CallError, CallId, EncodedValue, Function, FunctionSpec, FunctionTag, InputSpec,
    InputTag, Store, Value, ValueId,
};
use serde_json::json;

fn store_with_f() -> (tempfile::TempDir, Store, Function) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("forged.memo")).unwrap();
    let f = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    (dir, store, f)
}

/// A call as a wire payload carries it: whatever ids its sender claims.
fn claimed(
    function: FunctionTag,
    inputs: &[(InputTag, EncodedValue)],
    call_id: CallId,
    input_ids: &[ValueId],
) -> BoundCall {
    serde_json::from_value(json!({
        "function": function,
        "call_id": call_id,
        "inputs": inputs,
        "input_ids": input_ids,
    }))
    .expect("a well-formed call payload")
}

fn out(value: &EncodedValue) -> Value {
    decode(value)
}

#[test]
fn a_forged_call_id_is_refused_at_record_and_nothing_is_written() {
    let (_dir, store, f) = store_with_f();
    let x = f.inputs[0].tag;
    let two = store.bind(f.tag, vec![(x, int(2))]).unwrap();
    // The inputs say f(1), the call id says f(2).
    let forged = claimed(f.tag, &[(x, int(1))], two.call_id(), &[int(1).id()]);
    let err = store.record(&forged, vec![int(99)]).unwrap_err();
    match &err {
        CallError::ForgedCallId {
            function,
            expected,
            given,
        } => {
            assert_eq!(function, "f");
            assert_eq!(*given, two.call_id());
            let one = store.bind(f.tag, vec![(x, int(1))]).unwrap();
            assert_eq!(*expected, one.call_id());
        }
        other => panic!("expected ForgedCallId, got {other:?}"),
    }
    assert!(err.to_string().contains("nothing was recorded"), "{err}");
    assert_eq!(store.count_results(f.tag).unwrap(), 0);
    assert_eq!(store.lookup(&two).unwrap(), None);
    // Not even the output value was stored.
    assert_eq!(store.value(&int(99).id()).unwrap(), None);
}

#[test]
fn a_forged_call_id_never_hits() {
    let (_dir, store, f) = store_with_f();
    let x = f.inputs[0].tag;
    let one = store.bind(f.tag, vec![(x, int(1))]).unwrap();
    store.record(&one, vec![int(5)]).unwrap();
    // Asking for f(2) under f(1)'s call id.
    let forged = claimed(f.tag, &[(x, int(2))], one.call_id(), &[int(2).id()]);
    match store.lookup(&forged) {
        Err(CallError::ForgedCallId { given, .. }) => assert_eq!(given, one.call_id()),
        other => panic!("a forged call id must be refused, got {other:?}"),
    }
    // The honest claim, round-tripped through the wire, still hits.
    let honest = claimed(f.tag, &[(x, int(1))], one.call_id(), &[int(1).id()]);
    assert_eq!(honest, one);
    let hit = store.lookup(&honest).unwrap().expect("recorded above");
    assert_eq!(out(&hit.outputs[0]), Value::Int(5));
}

#[test]
fn a_value_filed_under_a_forged_id_is_refused() {
    let (_dir, store, f) = store_with_f();
    let x = f.inputs[0].tag;
    let six = store.bind(f.tag, vec![(x, int(6))]).unwrap();
    // The bytes are 1, the claimed value id and call id are those of 6: recorded, `f(6)` would
    // answer f(1)'s result and value 6 would read back as 1.
    let forged = claimed(f.tag, &[(x, int(1))], six.call_id(), &[int(6).id()]);
    match store.record(&forged, vec![int(5)]) {
        Err(CallError::ForgedValueId {
            function,
            input,
            expected,
            given,
        }) => {
            assert_eq!((function.as_str(), input.as_str()), ("f", "x"));
            assert_eq!(expected, int(1).id());
            assert_eq!(given, int(6).id());
        }
        other => panic!("expected ForgedValueId, got {other:?}"),
    }
    assert_eq!(store.lookup(&six).unwrap(), None);
    assert_eq!(store.value(&int(6).id()).unwrap(), None);
    assert_eq!(store.value(&int(1).id()).unwrap(), None);
    assert_eq!(store.count_results(f.tag).unwrap(), 0);
}

#[test]
fn a_claimed_call_with_honest_ids_is_recorded_like_a_bound_one() {
    let (_dir, store, f) = store_with_f();
    let x = f.inputs[0].tag;
    let three = store.bind(f.tag, vec![(x, int(3))]).unwrap();
    let wire = claimed(f.tag, &[(x, int(3))], three.call_id(), &[int(3).id()]);
    store.record(&wire, vec![int(9)]).unwrap();
    let hit = store.lookup(&three).unwrap().expect("recorded above");
    assert_eq!(out(&hit.outputs[0]), Value::Int(9));
}

#[test]
fn a_call_bound_before_an_input_was_added_re_derives_to_the_same_id() {
    // Re-deriving uses the store's catalog, which may know more inputs than the binder did:
    // inputs with defaults do not change the id, so a stale call is still honest.
    let (dir, store, f) = store_with_f();
    let x = f.inputs[0].tag;
    let stale = store.bind(f.tag, vec![(x, int(4))]).unwrap();
    let other = Store::open(dir.path().join("forged.memo")).unwrap();
    let y = other.add_input(f.tag, "y", Some(int(0))).unwrap();
    store.record(&stale, vec![int(16)]).unwrap();
    let current = other.bind(f.tag, vec![(x, int(4)), (y, int(0))]).unwrap();
    assert_eq!(current.call_id(), stale.call_id());
    let hit = other
        .lookup(&current)
        .unwrap()
        .expect("recorded by the stale client");
    assert_eq!(out(&hit.outputs[0]), Value::Int(16));
}
