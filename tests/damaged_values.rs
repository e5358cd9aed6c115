//! Damage is an error, never a value: a store file altered behind memotag's back (an `UPDATE` of
//! a value's bytes, random byte flips, an index entry pointing at another row) answers every
//! lookup with the right value, a miss or a typed error — never with a wrong value. And a value
//! the store could not read back is refused when it is recorded, so it never poisons its call.

mod common;

use std::path::{Path, PathBuf};

use common::{int, text};
use memotag::value::{decode_canonical, ValueError};
use memotag::{
    CallError, Codec, EncodedValue, FunctionSpec, InputSpec, Mode, OpenOptions, SchemaError,
    StorageError, Store, Value,
};

fn sql(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

/// A local store at `dir/name` with `f(x)` recorded for `xs` (`result(x)` each), checkpointed so
/// that the main file holds everything, and closed.
fn build(dir: &Path, name: &str, xs: std::ops::Range<i64>) -> PathBuf {
    let path = dir.join(name);
    let store = OpenOptions::new().mode(Mode::Local).open(&path).unwrap();
    let f = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    store
        .batch(|s| {
            for x in xs {
                let call = s.bind(f.tag, vec![(f.inputs[0].tag, int(x))])?;
                s.record(&call, vec![result(x)])?;
            }
            Ok::<_, CallError>(())
        })
        .unwrap();
    store.checkpoint().unwrap();
    path
}

fn result(x: i64) -> EncodedValue {
    text(&format!("result {}", 7 * x + 3))
}

/// What a lookup of `f(x)` gave.
#[derive(Debug, PartialEq)]
enum Answer {
    Right,
    Miss,
    Error,
    Wrong(String),
}

fn look_up(store: &Store, x: i64) -> Answer {
    let Ok(f) = store.function("f", 1) else {
        return Answer::Error;
    };
    let Ok(call) = store.bind(f.tag, vec![(f.inputs[0].tag, int(x))]) else {
        return Answer::Error;
    };
    match store.lookup(&call) {
        Err(_) => Answer::Error,
        Ok(None) => Answer::Miss,
        Ok(Some(hit)) if hit.outputs == [result(x)] => Answer::Right,
        Ok(Some(hit)) => Answer::Wrong(format!("{:?}", hit.outputs)),
    }
}

#[test]
fn an_update_of_a_values_bytes_is_an_error_naming_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = build(dir.path(), "u.memo", 0..10);
    let victim = result(5).id();
    let changed = sql(&path)
        .execute(
            "UPDATE \"values\" SET data = ?1 WHERE id = ?2",
            rusqlite::params![int(9999).bytes, victim.as_bytes()],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let store = Store::open(&path).unwrap();
    let f = store.function("f", 1).unwrap();
    let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(5))]).unwrap();
    match store.lookup(&call) {
        Err(CallError::Storage(StorageError::CorruptValue { id })) => assert_eq!(id, victim),
        other => panic!("expected CorruptValue, got {other:?}"),
    }
    match store.value(&victim) {
        Err(CallError::Storage(StorageError::CorruptValue { id })) => assert_eq!(id, victim),
        other => panic!("expected CorruptValue, got {other:?}"),
    }
    let err = store.lookup(&call).unwrap_err().to_string();
    assert!(err.contains(&victim.to_hex()), "{err}");
    // The other results are untouched.
    assert_eq!(look_up(&store, 4), Answer::Right);
}

/// 100 stores, each with one byte of its file flipped (fixed seed), each asked for every one of
/// its 2000 results: every answer is the right value, a miss or an error.
///
/// SQLite checks the structure it needs to walk its B-trees, not what the rows say, so a flip in
/// row content reaches memotag unannounced. memotag checks what it reads against what it is
/// named by:
/// - a value's bytes (or codec) against its id: the id is the hash of both, so it is the value's
///   checksum (`CorruptValue`);
/// - a memo row's output ids: a flipped id names no stored value (`MissingValue`), and the value
///   it might name is verified against that id anyway;
/// - a memo row's call id: a lookup reaches a row through the call index, whose entries point at
///   rows by number; the row's own `call_id` column is compared with the call asked for, so an
///   index entry that points at another call's row is an error. A flip in the `call_id` column
///   itself only makes that row unreachable (a miss) — lookups go through the index — and
///   `memotag check` reports it (it re-derives every row's call id from its inputs);
/// - the catalog and the log: damage there fails opening, the function, or the bind.
///
/// Flips land on the non-zero bytes of the file (its content: page headers, cells, the values
/// themselves), not on the zeros of unused space, where they would change nothing. Before
/// values and rows were verified on read, 9 of these 100 stores answered a lookup with a wrong
/// value.
#[test]
fn byte_flips_in_a_store_file_give_the_right_value_or_an_error() {
    const RESULTS: i64 = 2000;
    const TRIALS: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let pristine = std::fs::read(build(dir.path(), "pristine.memo", 0..RESULTS)).unwrap();
    let content: Vec<usize> = (0..pristine.len()).filter(|&i| pristine[i] != 0).collect();
    let mut rng = fastrand::Rng::with_seed(0x6d65_6d6f);
    let (mut right, mut misses, mut errors, mut unopened, mut damaged_trials) = (0, 0, 0, 0, 0);
    let mut wrong = Vec::new();
    for trial in 0..TRIALS {
        let mut bytes = pristine.clone();
        let at = content[rng.usize(..content.len())];
        bytes[at] ^= rng.u8(1..);
        let path = dir.path().join(format!("trial-{trial}.memo"));
        std::fs::write(&path, &bytes).unwrap();
        let Ok(store) = Store::open(&path) else {
            unopened += 1;
            damaged_trials += 1;
            continue;
        };
        let mut damaged = false;
        for x in 0..RESULTS {
            match look_up(&store, x) {
                Answer::Right => right += 1,
                Answer::Miss => {
                    misses += 1;
                    damaged = true;
                }
                Answer::Error => {
                    errors += 1;
                    damaged = true;
                }
                Answer::Wrong(got) => {
                    wrong.push(format!("trial {trial} (byte {at}): f({x}) answered {got}"))
                }
            }
        }
        damaged_trials += usize::from(damaged);
    }
    println!(
        "{TRIALS} flipped stores: {unopened} refused to open; {damaged_trials} answered some \
         lookup with a miss or an error; lookups: {right} right, {misses} misses, {errors} errors, \
         {} wrong",
        wrong.len()
    );
    assert!(wrong.is_empty(), "wrong values: {wrong:#?}");
    // The flips did reach data: otherwise this test would prove nothing.
    assert!(
        damaged_trials >= 10,
        "only {damaged_trials} trials saw damage"
    );
}

/// The call index leads a lookup to a row by its number; an entry altered to point at another
/// call's row must not hand out that call's result.
#[test]
fn a_call_index_entry_pointing_at_another_result_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = build(dir.path(), "index.memo", 0..10);
    let (call_3, seq_6) = {
        let store = Store::open(&path).unwrap();
        let f = store.function("f", 1).unwrap();
        let x = f.inputs[0].tag;
        let call_3 = store.bind(f.tag, vec![(x, int(3))]).unwrap().call_id();
        let call_6 = store.bind(f.tag, vec![(x, int(6))]).unwrap().call_id();
        let seq_6 = store.results_of_call(&call_6).unwrap()[0].seq;
        (call_3, seq_6)
    };
    // An index record (call_id, code, seq): header [4, blob(16), integer 0, 8-bit integer], then
    // the 16 call id bytes and the one-byte seq.
    let mut bytes = std::fs::read(&path).unwrap();
    let mut pattern = vec![0x04, 0x2c, 0x08, 0x01];
    pattern.extend_from_slice(&call_3.0);
    let at: Vec<usize> = bytes
        .windows(pattern.len())
        .enumerate()
        .filter(|(_, w)| *w == pattern.as_slice())
        .map(|(i, _)| i + pattern.len())
        .collect();
    assert_eq!(at.len(), 1, "the index entry of f(3) is found once");
    bytes[at[0]] = u8::try_from(seq_6).unwrap();
    std::fs::write(&path, &bytes).unwrap();

    let store = Store::open(&path).unwrap();
    match look_up(&store, 3) {
        Answer::Error => {}
        other => panic!("f(3) through an index entry pointing at f(6)'s row: {other:?}"),
    }
    let f = store.function("f", 1).unwrap();
    let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(3))]).unwrap();
    let err = store.lookup(&call).unwrap_err().to_string();
    assert!(err.contains("damaged"), "{err}");
    assert_eq!(look_up(&store, 6), Answer::Right);
    assert_eq!(look_up(&store, 2), Answer::Right);
}

/// Canonical CBOR nested one level deeper than the decoder reads, written by hand (the encoder
/// refuses to produce it).
fn too_deep() -> EncodedValue {
    let mut bytes = vec![0x81; memotag::value::MAX_DEPTH + 1];
    bytes.push(0x80);
    EncodedValue {
        codec: Codec::Cbor,
        bytes,
    }
}

#[test]
fn a_value_that_cannot_be_read_back_is_refused_at_record_and_the_call_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("deep.memo")).unwrap();
    let f = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    let x = f.inputs[0].tag;
    let call = store.bind(f.tag, vec![(x, int(1))]).unwrap();
    match store.record(&call, vec![too_deep()]) {
        Err(CallError::UnreadableValue {
            function,
            what,
            id,
            reason,
        }) => {
            assert_eq!((function.as_str(), what.as_str()), ("f", "output `out`"));
            assert_eq!(id, too_deep().id());
            assert_eq!(reason, ValueError::TooDeep { limit: 512 });
        }
        other => panic!("expected UnreadableValue, got {other:?}"),
    }
    // Nothing was stored: the call is a miss, not an error, and can be recorded properly.
    assert_eq!(store.lookup(&call).unwrap(), None);
    assert_eq!(store.value(&too_deep().id()).unwrap(), None);
    store.record(&call, vec![int(2)]).unwrap();
    assert_eq!(store.lookup(&call).unwrap().unwrap().outputs, [int(2)]);

    // Inside a batch it is refused at once, and the batch goes on.
    let other = store.bind(f.tag, vec![(x, int(3))]).unwrap();
    store.begin_batch();
    assert!(matches!(
        store.record(&other, vec![too_deep()]),
        Err(CallError::UnreadableValue { .. })
    ));
    store.record(&other, vec![int(4)]).unwrap();
    store.commit_batch().unwrap();
    assert_eq!(store.lookup(&other).unwrap().unwrap().outputs, [int(4)]);

    // Inputs too, and bytes of any codec the store decodes.
    let bad_input = store.bind(f.tag, vec![(x, too_deep())]).unwrap();
    assert!(matches!(
        store.record(&bad_input, vec![int(0)]),
        Err(CallError::UnreadableValue { what, .. }) if what == "input `x`"
    ));
    for garbage in [
        EncodedValue {
            codec: Codec::Cbor,
            bytes: vec![0x18, 0x01],
        },
        EncodedValue {
            codec: Codec::Npy,
            bytes: b"MTNPY\x01junk".to_vec(),
        },
    ] {
        assert!(matches!(
            store.record(&call, vec![garbage]),
            Err(CallError::UnreadableValue { .. })
        ));
    }
    // Pickles and raw bytes are the caller's business.
    let raw = store.bind(f.tag, vec![(x, int(5))]).unwrap();
    store
        .record(&raw, vec![EncodedValue::raw(vec![0xff, 0x00])])
        .unwrap();
    assert_eq!(store.count_results(f.tag).unwrap(), 3);
    let decoded = decode_canonical(&store.lookup(&call).unwrap().unwrap().outputs[0].bytes);
    assert_eq!(decoded, Ok(Value::Int(2)));
}

#[test]
fn a_default_that_cannot_be_read_back_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("default.memo")).unwrap();
    let created = store.create_function(FunctionSpec::new(
        "g",
        vec![
            InputSpec::required("x"),
            InputSpec::with_default("y", too_deep()),
        ],
    ));
    assert!(
        matches!(created, Err(SchemaError::Value(ValueError::TooDeep { .. }))),
        "{created:?}"
    );
    assert!(store.function("g", 1).is_err(), "nothing was created");
    let f = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    assert!(matches!(
        store.add_input(f.tag, "y", Some(too_deep())),
        Err(SchemaError::Value(_))
    ));
    assert_eq!(store.function("f", 1).unwrap().inputs.len(), 1);
}
