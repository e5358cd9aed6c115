//! Code versions: every result keeps the code it ran; the reader decides at lookup what is
//! acceptable (declared library versions by policy, user code only for strict readers).

mod common;

use std::sync::Arc;

use common::{decode, int};
use memotag::{
    CodeRecord, FunctionSpec, InputSpec, LibraryRef, Policy, Reader, RefKind, SourceText, Store,
    UserRef, Value,
};

fn lib(version: Option<&str>, source_hash: Option<&str>, declared: bool) -> LibraryRef {
    LibraryRef {
        name: "StandardizedTransformer".into(),
        kind: RefKind::Class,
        library: "nnterp".into(),
        version: version.map(str::to_string),
        source_hash: source_hash.map(str::to_string),
        declared,
    }
}

fn code(own: &str, helper: &str, libs: Vec<LibraryRef>) -> CodeRecord {
    CodeRecord {
        own: Some(own.into()),
        user: vec![UserRef {
            name: "helper".into(),
            hash: helper.into(),
        }],
        libraries: libs,
        notes: vec![],
    }
}

fn reader(code: CodeRecord, policy: Policy, verify: bool, strict: bool) -> Arc<Reader> {
    Arc::new(Reader {
        code,
        policy,
        verify_source_hash: verify,
        strict,
    })
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Store,
    call: memotag::BoundCall,
}

/// A store with one result of f(1) recorded under `recorded`.
fn recorded_under(recorded: CodeRecord) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("c.memo")).unwrap();
    let f = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(1))]).unwrap();
    store
        .record_with_code(&call, vec![int(10)], recorded, vec![])
        .unwrap();
    Setup {
        _dir: dir,
        store,
        call,
    }
}

#[test]
fn each_policy_against_each_kind_of_library_change() {
    use Policy::*;
    // (case, recorded version, caller version, caller has it, caller's source hash, expected
    // hit under [exact, semver-patch, newer-ok, any]).
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a str, [bool; 4]);
    let cases: Vec<Case> = vec![
        (
            "same version",
            "0.1.0",
            Some("0.1.0"),
            "h",
            [true, true, true, true],
        ),
        (
            "patch bump",
            "0.1.0",
            Some("0.1.5"),
            "h",
            [false, true, true, true],
        ),
        (
            "minor bump",
            "0.1.0",
            Some("0.2.0"),
            "h",
            [false, false, true, true],
        ),
        (
            "older here",
            "0.1.0",
            Some("0.0.9"),
            "h",
            [false, false, false, true],
        ),
        (
            "newer major here",
            "0.1.0",
            Some("1.0.0"),
            "h",
            [false, false, true, true],
        ),
        (
            "missing library",
            "0.1.0",
            None,
            "h",
            [false, false, false, false],
        ),
        (
            "calendar, other date",
            "2024.01.05",
            Some("2024.02.01"),
            "h",
            [false, false, false, true],
        ),
        (
            "calendar, same date",
            "2024.01.05",
            Some("2024.01.05"),
            "h",
            [true, true, true, true],
        ),
        (
            "pep440 pre-release",
            "1.2.0rc1",
            Some("1.2.0"),
            "h",
            [false, true, true, true],
        ),
        (
            "same version, local patch",
            "0.1.0",
            Some("0.1.0"),
            "patched",
            [false, false, false, false],
        ),
    ];
    for (case, recorded, current, caller_hash, expected) in cases {
        let s = recorded_under(code(
            "own",
            "help",
            vec![lib(Some(recorded), Some("h"), true)],
        ));
        for (policy, want) in [Exact, SemverPatch, NewerOk, Any].into_iter().zip(expected) {
            let libs = match current {
                Some(v) => vec![lib(Some(v), Some(caller_hash), true)],
                None => vec![],
            };
            let r = reader(code("own", "help", libs), policy, true, false);
            let answer = s.store.lookup_with(&s.call, &r).unwrap();
            assert_eq!(answer.hit.is_some(), want, "{case} under {policy}");
            if !want {
                assert_eq!(
                    answer.other_code, 1,
                    "{case} under {policy}: the miss says why"
                );
            }
        }
    }
}

#[test]
fn verify_source_hash_applies_only_to_equal_versions() {
    let s = recorded_under(code(
        "own",
        "help",
        vec![lib(Some("0.1.0"), Some("h1"), true)],
    ));
    let patched = |v: &str, verify: bool, policy: Policy| {
        reader(
            code("own", "help", vec![lib(Some(v), Some("h2"), true)]),
            policy,
            verify,
            false,
        )
    };
    assert!(s
        .store
        .lookup_with(&s.call, &patched("0.1.0", true, Policy::Exact))
        .unwrap()
        .hit
        .is_none());
    assert!(s
        .store
        .lookup_with(&s.call, &patched("0.1.0", false, Policy::Exact))
        .unwrap()
        .hit
        .is_some());
    // Different versions: the hash is not compared, the policy decides.
    assert!(s
        .store
        .lookup_with(&s.call, &patched("0.1.3", true, Policy::SemverPatch))
        .unwrap()
        .hit
        .is_some());
}

#[test]
fn detected_library_versions_never_gate() {
    let s = recorded_under(code("own", "help", vec![lib(Some("1.0"), None, false)]));
    for current in [vec![lib(Some("9.9"), None, false)], vec![]] {
        let r = reader(code("own", "help", current), Policy::Exact, true, false);
        assert!(s.store.lookup_with(&s.call, &r).unwrap().hit.is_some());
    }
}

#[test]
fn user_code_changes_warn_unless_strict_and_a_revert_hits_again() {
    let s = recorded_under(code("body-v1", "helper-v1", vec![]));
    let same = reader(
        code("body-v1", "helper-v1", vec![]),
        Policy::Exact,
        true,
        true,
    );
    let answer = s.store.lookup_with(&s.call, &same).unwrap();
    assert!(answer.hit.is_some() && answer.changed.is_empty());

    for (own, helper, what) in [
        ("body-v2", "helper-v1", "own code"),
        ("body-v1", "helper-v2", "helper `helper`"),
    ] {
        let warn = reader(code(own, helper, vec![]), Policy::Exact, true, false);
        let answer = s.store.lookup_with(&s.call, &warn).unwrap();
        assert!(answer.hit.is_some(), "non-strict readers still hit");
        assert!(
            answer.changed.iter().any(|c| c.contains(what)),
            "{:?}",
            answer.changed
        );
        let strict = reader(code(own, helper, vec![]), Policy::Exact, true, true);
        let answer = s.store.lookup_with(&s.call, &strict).unwrap();
        assert!(answer.hit.is_none(), "strict readers miss");
        assert_eq!(answer.other_code, 1);
    }
    // A strict reader and a warn reader of the same store never make each other miss: the
    // strict reader's new result sits beside the old one.
    let strict = reader(
        code("body-v2", "helper-v1", vec![]),
        Policy::Exact,
        true,
        true,
    );
    s.store
        .record_with_code(&s.call, vec![int(20)], strict.code.clone(), vec![])
        .unwrap();
    let hit = s.store.lookup_with(&s.call, &strict).unwrap().hit.unwrap();
    assert_eq!(decode(&hit.outputs[0]), Value::Int(20));
    let old = reader(
        code("body-v1", "helper-v1", vec![]),
        Policy::Exact,
        true,
        true,
    );
    let hit = s.store.lookup_with(&s.call, &old).unwrap().hit.unwrap();
    assert_eq!(
        decode(&hit.outputs[0]),
        Value::Int(10),
        "the reverted code finds its own result"
    );
    // A reader without rules gets the newest result of any code.
    assert_eq!(
        decode(&s.store.lookup(&s.call).unwrap().unwrap().outputs[0]),
        Value::Int(20)
    );
}

#[test]
fn sources_are_stored_once_and_preflight_says_what_the_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.memo");
    let store = Store::open(&path).unwrap();
    let f = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    let big = "class Big:\n".to_string() + &"    def m(self):\n        return 1\n".repeat(1_000);
    assert!(big.len() > 30_000);
    let hash = blake3::hash(big.as_bytes()).to_hex().to_string();
    assert_eq!(
        store.preflight(std::slice::from_ref(&hash)).unwrap(),
        Vec::<String>::new()
    );
    let record = CodeRecord {
        own: Some(hash.clone()),
        ..Default::default()
    };
    for i in 0..1_000 {
        let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(i))]).unwrap();
        // This client never asks and always sends the source; the store keeps it once.
        let sources = vec![SourceText {
            hash: hash.clone(),
            text: big.clone(),
        }];
        store
            .record_with_code(&call, vec![int(i)], record.clone(), sources)
            .unwrap();
    }
    assert_eq!(
        store.preflight(&[hash.clone(), "ffff".into()]).unwrap(),
        vec![hash.clone()]
    );
    assert_eq!(store.source(&hash).unwrap().as_deref(), Some(big.as_str()));
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (n, bytes): (i64, i64) = conn
        .query_row("SELECT count(*), sum(length(text)) FROM sources", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((n, bytes), (1, big.len() as i64));
    let records: i64 = conn
        .query_row("SELECT count(*) FROM code_records WHERE id > 0", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(records, 1);
}

#[test]
fn packages_list_what_the_store_has_seen_and_which_results_used_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("p.memo")).unwrap();
    let f = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    for (i, version) in [(1, "0.1.0"), (2, "0.1.0"), (3, "0.2.0")] {
        let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(i))]).unwrap();
        let record = code("own", "help", vec![lib(Some(version), None, true)]);
        store
            .record_with_code(&call, vec![int(i)], record, vec![])
            .unwrap();
    }
    let packages = store.packages().unwrap();
    let rows: Vec<_> = packages
        .iter()
        .map(|p| (p.library.as_str(), p.version.as_deref(), p.results))
        .collect();
    assert_eq!(
        rows,
        vec![("nnterp", Some("0.1.0"), 2), ("nnterp", Some("0.2.0"), 1)]
    );
    assert_eq!(
        store.results_with("nnterp", Some("0.1.0")).unwrap().len(),
        2
    );
    assert_eq!(store.results_with("nnterp", None).unwrap().len(), 3);
    assert!(store.results_with("torch", None).unwrap().is_empty());
    let row = &store.results_with("nnterp", Some("0.2.0")).unwrap()[0];
    let record = store.code_record(row.code).unwrap().unwrap();
    assert_eq!(record.libraries[0].version.as_deref(), Some("0.2.0"));
}

#[test]
fn a_client_from_before_code_records_still_records_and_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.memo");
    let new = Store::open(&path).unwrap();
    let f = new
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    let old = memotag::OpenOptions::new()
        .client_menu(memotag::protocol::procedures::format1_menu())
        .open(&path)
        .unwrap();
    let call = old.bind(f.tag, vec![(f.inputs[0].tag, int(5))]).unwrap();
    old.record(&call, vec![int(50)]).unwrap();
    // A reader with code finds it: a result without code differs from nothing, and declares no
    // library to gate on.
    let r = reader(
        code("own", "help", vec![lib(Some("0.1.0"), None, true)]),
        Policy::Exact,
        true,
        false,
    );
    let answer = new.lookup_with(&call, &r).unwrap();
    assert_eq!(decode(&answer.hit.unwrap().outputs[0]), Value::Int(50));
    let strict = reader(code("own", "help", vec![]), Policy::Exact, true, true);
    assert_eq!(
        new.lookup_with(&call, &strict).unwrap().other_code,
        1,
        "strict readers want known code"
    );
    // The old client cannot carry a reader's rules; it is told so instead of guessing.
    assert!(old.lookup_with(&call, &r).is_err());
    assert!(old.lookup(&call).unwrap().is_some());
}
