//! Versioned procedures: an older and a newer memotag keep sharing a store for every operation
//! they have in common, and fail clearly and narrowly for the others.

mod common;

use std::collections::BTreeMap;

use common::{decode, file_bytes, int};
use memotag::protocol::procedures::{
    format1_menu, RecordRequest, RecordV1, RecordV2, SchemaChangeV1, CALL_RECORD, LOCAL_MENU,
    SCHEMA_CHANGE,
};
use memotag::protocol::{build_menu, negotiate, Menu, Selection, VersionError, Wire, PROTOCOL};
use memotag::storage::maintenance::MigrateOutcome;
use memotag::{
    CallError, FunctionSpec, InputSpec, OpenError, OpenOptions, RecordOutcome, SchemaChange,
    SchemaError, Store, Value,
};
use proptest::prelude::*;

/// The menu of a memotag from before generation 2 of anything.
fn old_client() -> Menu {
    format1_menu()
}

fn fixture_copy(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("gen1.memo");
    std::fs::copy("tests/fixtures/store_gen1.memo", &path).unwrap();
    path
}

#[test]
fn an_old_client_records_through_generation_1_and_a_new_client_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.memo");
    let new = Store::open(&path).unwrap();
    let f = new
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();

    let old = OpenOptions::new()
        .client_menu(old_client())
        .open(&path)
        .unwrap();
    assert_eq!(old.generation("call.record").unwrap(), 1);
    assert_eq!(new.generation("call.record").unwrap(), 3);
    let call = old.bind(f.tag, vec![(f.inputs[0].tag, int(3))]).unwrap();
    assert!(matches!(
        old.record(&call, vec![int(9)]).unwrap(),
        RecordOutcome::Inserted { .. }
    ));
    old.create_function(FunctionSpec::new("g", vec![])).unwrap();

    let hit = new
        .lookup(&new.bind(f.tag, vec![(f.inputs[0].tag, int(3))]).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(decode(&hit.outputs[0]), Value::Int(9));
    assert_eq!(
        hit.code, 0,
        "generation 1 results carry the empty code record"
    );
    assert!(new.function("g", 1).is_ok());
}

#[test]
fn a_new_client_uses_generation_1_with_an_old_file_and_does_not_upgrade_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture_copy(dir.path());
    let store = Store::open(&path).unwrap();
    let info = store.session_info();
    assert_eq!(info.format_generation, 1);
    assert!(
        info.selected.values().all(|g| *g == 1),
        "{:?}",
        info.selected
    );
    // The fixture's results are there, under the renamed family.
    let f = store.function("squared", 1).unwrap();
    assert_eq!(store.function("square", 1).unwrap().tag, f.tag);
    for i in 0..10 {
        let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(i))]).unwrap();
        assert_eq!(
            decode(&store.lookup(&call).unwrap().unwrap().outputs[0]),
            Value::Int(i * i)
        );
    }
    // New results round-trip through generation 1.
    let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(11))]).unwrap();
    store.record(&call, vec![int(121)]).unwrap();
    assert_eq!(
        decode(&store.lookup(&call).unwrap().unwrap().outputs[0]),
        Value::Int(121)
    );
    // What generation 1 cannot express is refused, not guessed.
    let err = store
        .create_function(FunctionSpec::new("square", vec![]).new_family(true))
        .unwrap_err();
    assert!(
        matches!(
            err,
            SchemaError::Version(VersionError::LossyDowngrade { .. })
        ),
        "{err}"
    );
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let generation: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(generation, 1, "opening never migrates");
}

#[test]
fn disjoint_menus_fail_to_open_naming_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.memo");
    drop(Store::open(&path).unwrap());
    let before = file_bytes(&path);
    let alien = Menu::new().with("call.record", [7]).with("teleport", [1]);
    let err = OpenOptions::new()
        .client_menu(alien)
        .open(&path)
        .unwrap_err();
    let OpenError::Version(VersionError::NoCommonMethods { local, remote }) = &err else {
        panic!("{err}")
    };
    assert_eq!(local.generations("call.record"), vec![7]);
    assert_eq!(remote.generations("call.record"), vec![1, 2, 3]);
    let message = err.to_string();
    assert!(
        message.contains("call.record: [7]") && message.contains("call.record: [1, 2, 3]"),
        "{message}"
    );
    assert_eq!(file_bytes(&path), before);
}

#[test]
fn a_method_without_a_common_generation_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.memo");
    let new = Store::open(&path).unwrap();
    let f = new
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    drop(new);
    // A client that only knows generation 4 of call.record (say, a future one with it retired).
    let menu = LOCAL_MENU.clone().intersect(&LOCAL_MENU.clone());
    let mut menu = menu;
    menu.0
        .insert("call.record".to_string(), [4].into_iter().collect());
    let client = OpenOptions::new().client_menu(menu).open(&path).unwrap();
    let call = client.bind(f.tag, vec![(f.inputs[0].tag, int(1))]).unwrap();
    let err = client.record(&call, vec![int(1)]).unwrap_err();
    let CallError::Version(VersionError::NoCommonGeneration {
        method,
        local,
        remote,
    }) = &err
    else {
        panic!("{err}")
    };
    assert_eq!(
        (method.as_str(), local.as_slice(), remote.as_slice()),
        ("call.record", &[4][..], &[1, 2, 3][..])
    );
    // Everything else works.
    assert!(client.lookup(&call).unwrap().is_none());
    client
        .create_function(FunctionSpec::new("g", vec![]))
        .unwrap();
    assert_eq!(client.count_results(f.tag).unwrap(), 0);
}

#[test]
fn unknown_method_and_no_common_generation_are_different_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.memo");
    let menu = LOCAL_MENU
        .clone()
        .intersect(&Menu::new().with("schema.log", [1]).with("call.lookup", [1]));
    let store = OpenOptions::new().client_menu(menu).open(&path).unwrap();
    assert!(matches!(
        store.generation("teleport"),
        Err(VersionError::UnknownMethod { .. })
    ));
    assert!(matches!(
        store.generation("call.record"),
        Err(VersionError::NoCommonGeneration { .. })
    ));
    assert_eq!(store.generation("call.lookup"), Ok(1));
}

#[test]
fn a_handshake_mismatch_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.memo");
    drop(Store::open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'protocol'", [])
            .unwrap();
    }
    let before = file_bytes(&path);
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::Version(VersionError::ProtocolMismatch {
                local: PROTOCOL,
                remote: 99
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("protocol 1") && err.to_string().contains("99"));
    assert_eq!(file_bytes(&path), before);
}

#[test]
fn malformed_menus_are_rejected() {
    let dup_method = build_menu([("a", vec![1]), ("a", vec![2])]).unwrap_err();
    assert!(matches!(dup_method, VersionError::MalformedMenu { .. }));
    let dup_generation = build_menu([("a", vec![1, 1])]).unwrap_err();
    assert!(matches!(dup_generation, VersionError::MalformedMenu { .. }));
    assert!(build_menu([("a", vec![])]).is_err());
    let local = Menu::new().with("a", [1, 2]);
    let remote = Menu::new().with("a", [1]);
    let chosen = BTreeMap::from([("a".to_string(), 2)]);
    assert!(matches!(
        Selection::validate(&local, &remote, chosen),
        Err(VersionError::MalformedMenu { .. })
    ));
    let ok = Selection::validate(&local, &remote, BTreeMap::from([("a".to_string(), 1)])).unwrap();
    assert_eq!(ok.generation("a"), Ok(1));
    // The registry of this build is consistent (declared once, generations unique).
    assert_eq!(
        build_menu(memotag::protocol::procedures::declarations()).unwrap(),
        *LOCAL_MENU
    );
}

#[test]
fn negotiation_picks_the_greatest_common_generation() {
    let local = Menu::new()
        .with("a", [1, 2, 4])
        .with("b", [1])
        .with("c", [5]);
    let remote = Menu::new()
        .with("a", [1, 2, 3])
        .with("b", [2])
        .with("c", [5]);
    let s = negotiate(&local, &remote).unwrap();
    assert_eq!(
        s.chosen,
        BTreeMap::from([("a".to_string(), 2), ("c".to_string(), 5)])
    );
}

#[test]
fn a_lossy_downgrade_is_refused_and_never_gives_a_wrong_hit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.memo");
    let new = Store::open(&path).unwrap();
    let f = new
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    new.rename_family(f.family, "g").unwrap();
    let old = OpenOptions::new()
        .client_menu(old_client())
        .open(&path)
        .unwrap();
    let before = old.schema_log(0).unwrap().len();
    let err = old
        .create_function(FunctionSpec::new("f", vec![]).new_family(true))
        .unwrap_err();
    assert!(
        matches!(
            err,
            SchemaError::Version(VersionError::LossyDowngrade { .. })
        ),
        "{err}"
    );
    assert_eq!(old.schema_log(0).unwrap().len(), before, "nothing changed");

    // A result with a code record cannot travel as generation 1: refused, not filed under the
    // empty code record (where it would be a wrong hit for readers without code).
    let call = new.bind(f.tag, vec![(f.inputs[0].tag, int(1))]).unwrap();
    let code = memotag::CodeRecord {
        own: Some("abc".into()),
        ..Default::default()
    };
    let request = RecordRequest {
        call,
        outputs: vec![int(2)],
        code,
        sources: vec![],
    };
    let selection = negotiate(&old_client(), &LOCAL_MENU).unwrap();
    let result: Result<RecordOutcome, VersionError> =
        CALL_RECORD.call(&selection, &request, |_| panic!("must not reach the store"));
    assert!(matches!(result, Err(VersionError::LossyDowngrade { .. })));
    let result: Result<Option<u64>, VersionError> = SCHEMA_CHANGE.call(
        &selection,
        &SchemaChange::CreateVersion {
            family: f.family,
            version: 2,
            inputs: vec![],
            outputs: vec!["out".into()],
        },
        |_| panic!("must not reach the store"),
    );
    assert!(matches!(result, Err(VersionError::LossyDowngrade { .. })));
}

#[test]
fn file_levels_decide_read_only_and_refusal_and_migrate_moves_forward_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.memo");
    drop(Store::open(&path).unwrap());
    let set = |key: &str, value: &str| {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("UPDATE meta SET value = ?2 WHERE key = ?1", [key, value])
            .unwrap();
    };
    // One level above what this build writes, then reads.
    let newer_write = (memotag::protocol::WRITE_LEVEL + 1).to_string();
    let newer_read = memotag::protocol::READ_LEVEL + 1;
    set("write_level", &newer_write);
    let store = Store::open(&path).unwrap();
    assert!(store.is_read_only());
    assert!(store.schema_log(0).is_ok());
    let err = store
        .create_function(FunctionSpec::new("f", vec![]))
        .unwrap_err();
    assert!(err.to_string().contains("newer memotag"), "{err}");
    drop(store);
    set("write_level", "1");
    set("read_level", &newer_read.to_string());
    let before = file_bytes(&path);
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::Version(VersionError::ReadLevel {
                file,
                supported: memotag::protocol::READ_LEVEL,
            }) if file == newer_read
        ),
        "{err}"
    );
    assert_eq!(file_bytes(&path), before);

    // Migrating a format-1 store adds the procedures table with this build's menu (generation 3
    // of call.record), (format 3) the lock method, (4) code records and (5) the levels.
    let old = fixture_copy(dir.path());
    let report = Store::migrate(&old).unwrap();
    assert_eq!(
        report,
        MigrateOutcome::Migrated {
            from: 1,
            to: memotag::FORMAT_GENERATION,
            applied: vec![
                "0002_procedures".into(),
                "0003_lock_method".into(),
                "0004_code_records".into(),
                "0005_levels_follow_locking".into()
            ]
        }
    );
    let store = Store::open(&old).unwrap();
    assert_eq!(store.generation("call.record").unwrap(), 3);
    assert_eq!(
        store
            .count_results(store.function("squared", 1).unwrap().tag)
            .unwrap(),
        10
    );
    drop(store);
    let again = Store::migrate(&old).unwrap();
    assert_eq!(
        again,
        MigrateOutcome::AlreadyCurrent {
            generation: memotag::FORMAT_GENERATION
        }
    );
    // Never backwards.
    let conn = rusqlite::Connection::open(&old).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA user_version = {}",
        memotag::FORMAT_GENERATION + 1
    ))
    .unwrap();
    drop(conn);
    assert!(matches!(
        Store::migrate(&old).unwrap_err(),
        OpenError::NewerFormat { .. }
    ));
}

fn input_spec() -> impl Strategy<Value = InputSpec> {
    ("[a-z]{1,6}", prop::option::of(any::<i64>())).prop_map(|(name, d)| InputSpec {
        name,
        default: d.map(int),
    })
}

fn representable_change() -> impl Strategy<Value = SchemaChange> {
    let uuid = any::<u128>().prop_map(uuid::Uuid::from_u128);
    prop_oneof![
        (
            "[a-z]{1,8}",
            1..5u32,
            prop::collection::vec(input_spec(), 0..4),
            prop::collection::vec("[a-z]{1,4}", 1..3)
        )
            .prop_map(
                |(name, version, inputs, outputs)| SchemaChange::CreateFunction(FunctionSpec {
                    name,
                    version,
                    inputs,
                    outputs,
                    new_family: false
                })
            ),
        (uuid.clone(), "[a-z]{1,8}", prop::option::of(any::<i64>())).prop_map(|(u, name, d)| {
            SchemaChange::AddInput {
                function: memotag::FunctionTag(u),
                name,
                default: d.map(int),
            }
        }),
        (uuid.clone(), "[a-z]{1,8}").prop_map(|(u, to)| SchemaChange::RenameFunction {
            family: memotag::FamilyTag(u),
            to
        }),
        (uuid, "[a-z]{1,8}").prop_map(|(u, to)| SchemaChange::RenameInput {
            input: memotag::InputTag(u),
            to
        }),
    ]
}

proptest! {
    #[test]
    fn upgrade_of_downgrade_is_identity_where_representable(change in representable_change()) {
        let wire = SchemaChangeV1::downgrade(&change).unwrap();
        let bytes = serde_json::to_vec(&wire).unwrap();
        let back: SchemaChangeV1 = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(Wire::<SchemaChange>::upgrade(back), change);
    }

    #[test]
    fn records_survive_generations_1_and_2_when_they_have_no_code(xs in prop::collection::vec(any::<i64>(), 1..4), out in any::<i64>()) {
        let dir = tempfile::tempdir().unwrap();
        let _ = dir;
        let function = memotag::FunctionTag(uuid::Uuid::from_u128(1));
        let inputs: Vec<_> = xs.iter().enumerate().map(|(i, x)| (memotag::InputTag(uuid::Uuid::from_u128(10 + i as u128)), int(*x))).collect();
        let input_ids: Vec<_> = inputs.iter().map(|(_, v)| v.id()).collect();
        let call: memotag::BoundCall = serde_json::from_value(serde_json::json!({
            "function": function, "call_id": memotag::CallId([7; 16]), "inputs": inputs, "input_ids": input_ids,
        })).unwrap();
        let request = RecordRequest::without_code(call, vec![int(out)]);
        let wire = RecordV1::downgrade(&request).unwrap();
        let back: RecordV1 = serde_json::from_slice(&serde_json::to_vec(&wire).unwrap()).unwrap();
        prop_assert_eq!(Wire::<RecordRequest>::upgrade(back), request.clone());
        let wire = RecordV2::downgrade(&request).unwrap();
        let back: RecordV2 = serde_json::from_slice(&serde_json::to_vec(&wire).unwrap()).unwrap();
        prop_assert_eq!(Wire::<RecordRequest>::upgrade(back), request);
    }
}
