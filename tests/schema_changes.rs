//! Every schema change, every rejection kind, idempotent retries, renames of families with
//! several versions, and name history — against a real store file.

mod common;

use common::{int, text};
use memotag::{FunctionSpec, InputSpec, Resolution, SchemaError, Store};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s.memo")).unwrap();
    (dir, store)
}

fn f_spec() -> FunctionSpec {
    FunctionSpec::new(
        "f",
        vec![
            InputSpec::required("x"),
            InputSpec::with_default("y", int(1)),
        ],
    )
}

#[test]
fn create_function_assigns_tags_and_logs_it() {
    let (_d, store) = store();
    let f = store.create_function(f_spec()).unwrap();
    assert_eq!(f.version, 1);
    assert_eq!(f.outputs, vec!["out"]);
    assert_eq!(f.inputs.len(), 2);
    assert_ne!(f.inputs[0].tag, f.inputs[1].tag);
    let log = store.schema_log(0).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].seq, 1);
    assert_eq!(log[0].change.kind(), "create_function");
}

#[test]
fn creating_the_same_interface_again_returns_the_same_tags_without_a_log_entry() {
    let (_d, store) = store();
    let first = store.create_function(f_spec()).unwrap();
    let again = store.create_function(f_spec()).unwrap();
    assert_eq!(first, again);
    assert_eq!(store.schema_log(0).unwrap().len(), 1);
}

#[test]
fn creating_f_with_another_interface_is_rejected_and_changes_nothing() {
    let (_d, store) = store();
    store.create_function(f_spec()).unwrap();
    let other_default = FunctionSpec::new(
        "f",
        vec![
            InputSpec::required("x"),
            InputSpec::with_default("y", int(2)),
        ],
    );
    let other_inputs = FunctionSpec::new("f", vec![InputSpec::required("z")]);
    let other_outputs = f_spec().outputs(["a", "b"]);
    for spec in [other_default, other_inputs, other_outputs] {
        let err = store.create_function(spec).unwrap_err();
        assert!(
            matches!(err, SchemaError::ConflictingInterface { .. }),
            "{err}"
        );
    }
    assert_eq!(store.schema_log(0).unwrap().len(), 1);
}

#[test]
fn new_version_gets_new_tags_and_the_old_version_stays() {
    let (_d, store) = store();
    let v1 = store.create_function(f_spec()).unwrap();
    let v2 = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]).version(2))
        .unwrap();
    assert_ne!(v1.tag, v2.tag);
    assert_eq!(v1.family, v2.family);
    assert_ne!(v1.inputs[0].tag, v2.inputs[0].tag);
    assert_eq!(store.function("f", 1).unwrap(), v1);
    assert_eq!(store.schema_log(0).unwrap()[1].change.kind(), "new_version");
}

#[test]
fn add_input_requires_a_default_and_never_changes_one() {
    let (_d, store) = store();
    let f = store.create_function(f_spec()).unwrap();
    let err = store.add_input(f.tag, "z", None).unwrap_err();
    assert!(matches!(err, SchemaError::MissingDefault { .. }), "{err}");
    let z = store.add_input(f.tag, "z", Some(int(0))).unwrap();
    // Retry: no-op success with the same tag.
    assert_eq!(store.add_input(f.tag, "z", Some(int(0))).unwrap(), z);
    let err = store.add_input(f.tag, "z", Some(int(5))).unwrap_err();
    assert!(matches!(err, SchemaError::DefaultChanged { .. }), "{err}");
    let err = store.add_input(f.tag, "x", Some(int(5))).unwrap_err();
    assert!(matches!(err, SchemaError::InputNameTaken { .. }), "{err}");
    assert_eq!(store.schema_log(0).unwrap().len(), 2);
}

#[test]
fn renaming_a_family_renames_every_version_and_keeps_tags() {
    let (_d, store) = store();
    let v1 = store.create_function(f_spec()).unwrap();
    let v2 = store.create_function(f_spec().version(2)).unwrap();
    store.rename_family(v1.family, "g").unwrap();
    assert_eq!(store.function("g", 1).unwrap().tag, v1.tag);
    assert_eq!(store.function("g", 2).unwrap().tag, v2.tag);
    // Retry to the name it already has: success, no entry.
    store.rename_family(v1.family, "g").unwrap();
    assert_eq!(store.schema_log(0).unwrap().len(), 3);
}

#[test]
fn rename_to_a_taken_name_is_rejected() {
    let (_d, store) = store();
    let f = store.create_function(f_spec()).unwrap();
    store
        .create_function(FunctionSpec::new("g", vec![]))
        .unwrap();
    let err = store.rename_family(f.family, "g").unwrap_err();
    assert!(matches!(err, SchemaError::NameTaken { .. }), "{err}");
}

#[test]
fn rename_input_and_reject_taken_input_names() {
    let (_d, store) = store();
    let f = store.create_function(f_spec()).unwrap();
    let x = f.inputs[0].tag;
    store.rename_input_tag(x, "x2").unwrap();
    store.rename_input_tag(x, "x2").unwrap();
    let err = store.rename_input_tag(x, "y").unwrap_err();
    assert!(matches!(err, SchemaError::InputNameTaken { .. }), "{err}");
    let f = store.function("f", 1).unwrap();
    assert_eq!(f.input(x).unwrap().name, "x2");
}

#[test]
fn unknown_tags_are_rejected() {
    let (_d, store) = store();
    let f = store.create_function(f_spec()).unwrap();
    let bogus = uuid::Uuid::new_v4();
    assert!(matches!(
        store
            .rename_family(memotag::FamilyTag(bogus), "h")
            .unwrap_err(),
        SchemaError::UnknownFamily(_)
    ));
    assert!(matches!(
        store
            .rename_input_tag(memotag::InputTag(bogus), "h")
            .unwrap_err(),
        SchemaError::UnknownInput(_)
    ));
    assert!(matches!(
        store
            .add_input(memotag::FunctionTag(bogus), "h", Some(int(1)))
            .unwrap_err(),
        SchemaError::UnknownFunction(_)
    ));
    let _ = f;
}

#[test]
fn invalid_names_and_interfaces_are_rejected() {
    let (_d, store) = store();
    for spec in [
        FunctionSpec::new("", vec![]),
        FunctionSpec::new("bad\nname", vec![]),
        FunctionSpec::new(
            "f",
            vec![InputSpec::required("x"), InputSpec::required("x")],
        ),
        FunctionSpec::new("f", vec![]).outputs(Vec::<String>::new()),
        FunctionSpec::new("f", vec![]).outputs(["a", "a"]),
        FunctionSpec::new("f", vec![]).version(0),
    ] {
        assert!(store.create_function(spec).is_err());
    }
    assert!(store.schema_log(0).unwrap().is_empty());
}

#[test]
fn a_former_name_resolves_to_the_renamed_family() {
    let (_d, store) = store();
    let f = store.create_function(f_spec()).unwrap();
    store.rename_family(f.family, "g").unwrap();
    match store.resolve_function("f").unwrap().unwrap() {
        Resolution::Renamed { from, to, target } => {
            assert_eq!((from.as_str(), to.as_str()), ("f", "g"));
            assert_eq!(target.tag, f.family);
        }
        other => panic!("expected a rename, got {other:?}"),
    }
    // Creating `f` again is refused unless asked for explicitly.
    let err = store.create_function(f_spec()).unwrap_err();
    assert!(
        matches!(err, SchemaError::FormerName { ref now, .. } if now == "g"),
        "{err}"
    );
    let fresh = store.create_function(f_spec().new_family(true)).unwrap();
    assert_ne!(fresh.family, f.family);
    assert!(matches!(
        store.resolve_function("f").unwrap().unwrap(),
        Resolution::Current(_)
    ));
}

#[test]
fn name_history_keeps_every_name_with_its_range() {
    let (_d, store) = store();
    let f = store.create_function(f_spec()).unwrap();
    store.rename_family(f.family, "g").unwrap();
    store.rename_family(f.family, "h").unwrap();
    let x = f.inputs[0].tag;
    store.rename_input_tag(x, "a").unwrap();
    let catalog = store.catalog().unwrap();
    let family = catalog.family(f.family).unwrap();
    let names: Vec<_> = family
        .names
        .iter()
        .map(|s| (s.name.as_str(), s.from_seq, s.to_seq))
        .collect();
    assert_eq!(
        names,
        vec![("f", 1, Some(2)), ("g", 2, Some(3)), ("h", 3, None)]
    );
    let function = catalog.function(f.tag).unwrap();
    let input = function.input(x).unwrap();
    let names: Vec<_> = input
        .names
        .iter()
        .map(|s| (s.name.as_str(), s.from_seq, s.to_seq))
        .collect();
    assert_eq!(names, vec![("x", 1, Some(4)), ("a", 4, None)]);
    match catalog.resolve_input(function, "x").unwrap() {
        Resolution::Renamed { to, .. } => assert_eq!(to, "a"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_log_rebuilds_the_catalog_in_a_fresh_session() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.memo");
    let built = {
        let store = Store::open(&path).unwrap();
        let f = store.create_function(f_spec()).unwrap();
        store.add_input(f.tag, "z", Some(text("zz"))).unwrap();
        store.rename_family(f.family, "g").unwrap();
        store
            .create_function(f_spec().version(3).new_family(true))
            .unwrap();
        store.catalog().unwrap()
    };
    let reopened = Store::open(&path).unwrap().catalog().unwrap();
    assert_eq!(built, reopened);
    let log = Store::open(&path).unwrap().schema_log(0).unwrap();
    let replayed = memotag::Catalog::replay(log.iter().map(|e| (e.seq, &e.change))).unwrap();
    assert_eq!(replayed, reopened);
}

#[test]
fn another_handle_sees_changes_and_validates_against_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.memo");
    let a = Store::open(&path).unwrap();
    let b = Store::open(&path).unwrap();
    let f = a.create_function(f_spec()).unwrap();
    // b has not looked at the store since it opened; its change is checked against the store.
    let err = b
        .create_function(FunctionSpec::new("f", vec![]))
        .unwrap_err();
    assert!(matches!(err, SchemaError::ConflictingInterface { .. }));
    b.rename_family(f.family, "g").unwrap();
    assert_eq!(a.function("g", 1).unwrap().tag, f.tag);
}
