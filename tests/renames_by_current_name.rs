//! A rename names the function (or input) by its current name (SPEC §2). A notebook cell re-run
//! after a colleague renamed the function again is refused, saying who renamed it and when, and
//! never renames it back; a retry of a rename that took effect is a no-op; a former input name
//! is not added again as a second input. With real processes: renames racing for the same
//! current name (exactly one wins, the others are told who renamed it), and decorators binding
//! while another process renames the function (they bind to the new name, never a conflict).

mod common;

use common::{assert_overlapped, finish, int, role, spawn_child, unix_ns, ProcessBarrier, Span};
use memotag::{
    FunctionSpec, InputSpec, Interface, Notice, OpenOptions, Parameter, SchemaError, Store,
};

fn open_as(path: &std::path::Path, client: &str) -> Store {
    OpenOptions::new().client_name(client).open(path).unwrap()
}

#[test]
fn a_rerun_rename_cell_does_not_undo_a_colleagues_rename() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("team.memo");
    let alice = open_as(&path, "alice@lab");
    let bob = open_as(&path, "bob@lab");
    let f = alice
        .create_function(FunctionSpec::new(
            "cv_score",
            vec![InputSpec::required("x")],
        ))
        .unwrap();

    // Alice's cell, then Bob's rename.
    assert!(alice
        .rename_function("cv_score", "svc_cv_score")
        .unwrap()
        .is_some());
    bob.rename_function("svc_cv_score", "svc").unwrap();
    let log_len = alice.schema_log(0).unwrap().len();

    // Alice re-runs her cell.
    let err = alice
        .rename_function("cv_score", "svc_cv_score")
        .unwrap_err();
    match &err {
        SchemaError::RenamedSince {
            what,
            name,
            now,
            since,
        } => {
            assert_eq!(
                (*what, name.as_str(), now.as_str()),
                ("function", "cv_score", "svc")
            );
            assert_eq!(since.from, "svc_cv_score");
            assert_eq!(since.to, "svc");
            assert_eq!(since.client.as_deref(), Some("bob@lab"));
            assert!(since.time_ms.is_some());
        }
        other => panic!("expected RenamedSince, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("bob@lab") && message.contains("`svc`") && message.contains("UTC"),
        "{message}"
    );
    // Nothing changed.
    assert_eq!(alice.schema_log(0).unwrap().len(), log_len);
    let catalog = alice.catalog().unwrap();
    assert_eq!(catalog.family(f.family).unwrap().name, "svc");
    // Renaming by the current name still works.
    alice.rename_function("svc", "svc_cv_score").unwrap();
}

#[test]
fn a_retried_rename_that_took_effect_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s.memo")).unwrap();
    let f = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    assert!(store.rename_function("f", "g").unwrap().is_some());
    // The same cell again: `f` is a former name, but the function is already called `g`.
    assert_eq!(store.rename_function("f", "g").unwrap(), None);
    assert_eq!(store.rename_function("g", "g").unwrap(), None);
    assert_eq!(store.schema_log(0).unwrap().len(), 2);

    store.rename_input(f.tag, "x", "value").unwrap();
    assert_eq!(store.rename_input(f.tag, "x", "value").unwrap(), None);
    assert_eq!(store.schema_log(0).unwrap().len(), 3);

    assert!(matches!(
        store.rename_function("never", "h"),
        Err(SchemaError::NoSuchFunction(_))
    ));
}

#[test]
fn a_rerun_input_rename_does_not_undo_a_colleagues_rename() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("team.memo");
    let alice = open_as(&path, "alice@lab");
    let bob = open_as(&path, "bob@lab");
    let f = alice
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("k")]))
        .unwrap();
    alice.rename_input(f.tag, "k", "kk").unwrap();
    bob.rename_input(f.tag, "kk", "key").unwrap();
    let err = alice.rename_input(f.tag, "k", "kk").unwrap_err();
    match &err {
        SchemaError::RenamedSince {
            what,
            name,
            now,
            since,
        } => {
            assert_eq!((*what, name.as_str(), now.as_str()), ("input", "k", "key"));
            assert_eq!(since.client.as_deref(), Some("bob@lab"));
        }
        other => panic!("expected RenamedSince, got {other:?}"),
    }
    let catalog = alice.catalog().unwrap();
    let names: Vec<_> = catalog
        .function(f.tag)
        .unwrap()
        .inputs
        .iter()
        .map(|i| i.name.clone())
        .collect();
    assert_eq!(names, vec!["key"]);
}

#[test]
fn adding_an_input_under_its_former_name_is_refused_not_a_second_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("team.memo");
    let alice = open_as(&path, "alice@lab");
    let bob = open_as(&path, "bob@lab");
    let f = alice
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    alice.add_input(f.tag, "k", Some(int(1))).unwrap();
    bob.rename_input(f.tag, "k", "kk").unwrap();
    let log_len = alice.schema_log(0).unwrap().len();

    // Alice's cell again, with the same default and with another.
    for default in [1, 2] {
        let err = alice.add_input(f.tag, "k", Some(int(default))).unwrap_err();
        match &err {
            SchemaError::FormerInputName {
                name, now, since, ..
            } => {
                assert_eq!((name.as_str(), now.as_str()), ("k", "kk"));
                assert_eq!(since.client.as_deref(), Some("bob@lab"));
            }
            other => panic!("expected FormerInputName, got {other:?}"),
        }
        assert!(err.to_string().contains("bob@lab"), "{err}");
    }
    assert_eq!(alice.schema_log(0).unwrap().len(), log_len);
    let catalog = alice.catalog().unwrap();
    assert_eq!(catalog.function(f.tag).unwrap().inputs.len(), 2);
}

// ---- real processes -----------------------------------------------------------------------------

const RACERS: usize = 4;
const RACE_ROUNDS: usize = 12;
const RENAME_RACE: &str = "processes_renaming_the_same_name_at_once_never_undo_each_other";

/// Each round, every process renames `f_ROUND` (its current name) to a name of its own, at once.
fn rename_racer(path: &str, me: usize) {
    let store = open_as(std::path::Path::new(path), &format!("racer{me}@lab"));
    let barrier = ProcessBarrier::from_env();
    println!("OUT passed {}", barrier.wait("start", &me.to_string()));
    for round in 0..RACE_ROUNDS {
        barrier.wait(&format!("round-{round}"), &me.to_string());
        match store.rename_function(&format!("f_{round}"), &format!("p{me}_{round}")) {
            Ok(Some(_)) => println!("OUT won {round}"),
            Ok(None) => panic!("round {round}: a rename to my own name cannot be a retry"),
            Err(SchemaError::RenamedSince { since, .. }) => {
                assert!(since.client.as_deref().unwrap().starts_with("racer"));
                println!("OUT refused {round}");
            }
            Err(e) => panic!("round {round}: unexpected error {e}"),
        }
    }
    println!("OUT finished {}", unix_ns());
}

#[test]
fn processes_renaming_the_same_name_at_once_never_undo_each_other() {
    if role().as_deref() == Some("racer") {
        let me = std::env::var("ME").unwrap().parse().unwrap();
        rename_racer(&std::env::var("STORE").unwrap(), me);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("race.memo");
    let store = Store::open(&path).unwrap();
    let families: Vec<_> = (0..RACE_ROUNDS)
        .map(|round| {
            store
                .create_function(FunctionSpec::new(
                    format!("f_{round}"),
                    vec![InputSpec::required("x")],
                ))
                .unwrap()
                .family
        })
        .collect();
    let barrier = ProcessBarrier::create(&dir.path().join("barrier"), RACERS);
    let children: Vec<_> = (0..RACERS)
        .map(|me| {
            spawn_child(
                RENAME_RACE,
                "racer",
                &[
                    ("STORE", path.display().to_string()),
                    ("ME", me.to_string()),
                    barrier.env(),
                ],
            )
        })
        .collect();
    let outputs: Vec<Vec<String>> = children.into_iter().map(finish).collect();
    assert_overlapped(
        &outputs
            .iter()
            .map(|o| Span::from_lines(o))
            .collect::<Vec<_>>(),
    );
    let catalog = store.catalog().unwrap();
    for (round, family) in families.iter().enumerate() {
        let winners: Vec<usize> = (0..RACERS)
            .filter(|me| outputs[*me].contains(&format!("won {round}")))
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one rename wins");
        let refused = outputs
            .iter()
            .filter(|o| o.contains(&format!("refused {round}")))
            .count();
        assert_eq!(refused, RACERS - 1, "round {round}: the others are refused");
        // The family was renamed once, to the winner's name.
        let fam = catalog.family(*family).unwrap();
        assert_eq!(fam.name, format!("p{}_{round}", winners[0]));
        assert_eq!(
            fam.names.len(),
            2,
            "round {round}: renamed once: {:?}",
            fam.names
        );
    }
}

const BINDERS: usize = 3;
const BIND_ROUNDS: usize = 16;
const BIND_RACE: &str = "decorating_while_another_process_renames_binds_to_the_new_name";

/// The code each binder declares in `round`: version 2 of `f_ROUND` (which the store has not
/// got yet, so binding creates it by name) with a new parameter that has a default.
fn interface(round: usize) -> Interface {
    Interface {
        name: format!("f_{round}"),
        version: 2,
        parameters: vec![
            Parameter {
                name: "x".into(),
                default: None,
            },
            Parameter {
                name: "scale".into(),
                default: Some(int(1)),
            },
        ],
        outputs: vec!["out".into()],
        new_family: false,
    }
}

fn bind_racer(path: &str, me: &str) {
    let store = open_as(std::path::Path::new(path), &format!("{me}@lab"));
    let barrier = ProcessBarrier::from_env();
    println!("OUT passed {}", barrier.wait("start", me));
    for round in 0..BIND_ROUNDS {
        // Every process reads the schema before the round, so that its plan is made against
        // the schema from before the rename.
        store.catalog().unwrap();
        barrier.wait(&format!("round-{round}"), me);
        if me == "renamer" {
            store
                .rename_function(&format!("f_{round}"), &format!("g_{round}"))
                .unwrap();
            continue;
        }
        match store.bind_interface(&interface(round)) {
            Ok((function, _, notices)) => {
                let renamed = notices.iter().any(|n| {
                    matches!(n, Notice::FunctionRenamed { to, .. } if *to == format!("g_{round}"))
                });
                println!("OUT bound {round} {} renamed={renamed}", function.family);
            }
            Err(e) => println!("OUT error {round} {e}"),
        }
    }
    println!("OUT finished {}", unix_ns());
}

#[test]
fn decorating_while_another_process_renames_binds_to_the_new_name() {
    if role().as_deref() == Some("binder") {
        bind_racer(
            &std::env::var("STORE").unwrap(),
            &std::env::var("ME").unwrap(),
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bind.memo");
    let store = Store::open(&path).unwrap();
    let families: Vec<_> = (0..BIND_ROUNDS)
        .map(|round| {
            store
                .create_function(FunctionSpec::new(
                    format!("f_{round}"),
                    vec![InputSpec::required("x")],
                ))
                .unwrap()
                .family
        })
        .collect();
    let names: Vec<String> = std::iter::once("renamer".to_string())
        .chain((0..BINDERS).map(|i| format!("binder{i}")))
        .collect();
    let barrier = ProcessBarrier::create(&dir.path().join("barrier"), names.len());
    let children: Vec<_> = names
        .iter()
        .map(|me| {
            spawn_child(
                BIND_RACE,
                "binder",
                &[
                    ("STORE", path.display().to_string()),
                    ("ME", me.clone()),
                    barrier.env(),
                ],
            )
        })
        .collect();
    let outputs: Vec<Vec<String>> = children.into_iter().map(finish).collect();
    assert_overlapped(
        &outputs
            .iter()
            .map(|o| Span::from_lines(o))
            .collect::<Vec<_>>(),
    );
    let errors: Vec<&String> = outputs
        .iter()
        .flatten()
        .filter(|l| l.starts_with("error "))
        .collect();
    assert!(errors.is_empty(), "binding failed: {errors:?}");
    let catalog = store.catalog().unwrap();
    for (round, family) in families.iter().enumerate() {
        let bound: Vec<&String> = outputs
            .iter()
            .flatten()
            .filter(|l| l.starts_with(&format!("bound {round} ")))
            .collect();
        assert_eq!(bound.len(), BINDERS);
        assert!(
            bound.iter().all(|l| l.contains(&family.to_string())),
            "round {round}: every binder binds to the renamed family: {bound:?}"
        );
        let fam = catalog.family(*family).unwrap();
        assert_eq!(fam.name, format!("g_{round}"));
        assert_eq!(
            fam.versions.len(),
            2,
            "round {round}: one version 2, in that family"
        );
    }
    assert_eq!(
        catalog.families().count(),
        BIND_ROUNDS,
        "no family was created by a former name"
    );
}
