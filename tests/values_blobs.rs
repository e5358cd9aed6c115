//! Values: stored once, large ones as verified files beside the store.

mod common;

use common::int;
use memotag::{CallError, EncodedValue, FunctionSpec, InputSpec, OpenOptions, StorageError, Store};

#[test]
fn a_50_mb_value_round_trips_through_the_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.memo");
    let store = Store::open(&path).unwrap();
    let f = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    let big: Vec<u8> = (0..50 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let value = EncodedValue::raw(big.clone());
    let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(1))]).unwrap();
    store.record(&call, vec![value.clone()]).unwrap();
    let blob = memotag::storage::BlobStore::beside(&path).path_of(&value.id());
    assert!(blob.exists(), "large values live beside the store");
    assert!(
        std::fs::metadata(&path).unwrap().len() < 5 * 1024 * 1024,
        "not inside the database"
    );
    drop(store);
    let store = Store::open(&path).unwrap();
    let hit = store.lookup(&call).unwrap().unwrap();
    assert!(hit.outputs[0].bytes == big);
}

#[test]
fn a_corrupted_blob_file_is_detected_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.memo");
    let store = OpenOptions::new()
        .blob_threshold(1_000)
        .open(&path)
        .unwrap();
    let f = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    let value = EncodedValue::raw(vec![7u8; 10_000]);
    let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(1))]).unwrap();
    store.record(&call, vec![value.clone()]).unwrap();
    let blob = memotag::storage::BlobStore::beside(&path).path_of(&value.id());
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[5_000] ^= 0xFF;
    std::fs::write(&blob, bytes).unwrap();
    let err = store.lookup(&call).unwrap_err();
    assert!(
        matches!(err, CallError::Storage(StorageError::CorruptBlob { .. })),
        "{err}"
    );
    std::fs::remove_file(&blob).unwrap();
    let err = store.lookup(&call).unwrap_err();
    assert!(
        matches!(err, CallError::Storage(StorageError::MissingBlob { .. })),
        "{err}"
    );
}

#[test]
fn each_value_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("once.memo");
    let store = Store::open(&path).unwrap();
    let f = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    for i in 0..100 {
        let call = store
            .bind(f.tag, vec![(f.inputs[0].tag, int(i % 3))])
            .unwrap();
        store.record(&call, vec![int(42)]).unwrap();
    }
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM \"values\"", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 4, "0, 1, 2 and 42");
    let preview: String = conn
        .query_row(
            "SELECT preview FROM \"values\" WHERE id = ?1",
            [int(42).id().as_bytes()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(preview, "42");
}
