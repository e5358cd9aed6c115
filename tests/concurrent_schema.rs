//! Four real processes changing the schema at once: identical changes are idempotent, conflicting
//! ones are rejected (exactly one wins), the log stays gapless, the file stays intact. A barrier
//! starts the processes together and starts every round together, so that each round's
//! conflicting changes really race; the test checks that the processes overlapped.

mod common;

use common::{assert_overlapped, finish, int, role, spawn_child, unix_ns, ProcessBarrier, Span};
use memotag::{FunctionSpec, InputSpec, SchemaError, Store};

const TEST: &str = "four_processes_change_the_schema_at_once";

fn worker(path: &str, me: i64) {
    let store = Store::open(path).unwrap();
    let barrier = ProcessBarrier::from_env();
    let me_str = me.to_string();
    println!("OUT passed {}", barrier.wait("start", &me_str));
    let common_spec = || {
        FunctionSpec::new(
            "common",
            vec![
                InputSpec::required("x"),
                InputSpec::with_default("y", int(1)),
            ],
        )
    };
    for round in 0..10 {
        barrier.wait(&format!("round-{round}"), &me_str);
        let common = store.create_function(common_spec()).unwrap();
        println!("OUT common {}", common.tag);

        // Everyone proposes a different interface for the same name: one wins.
        let contested = FunctionSpec::new(
            format!("contested_{round}"),
            vec![InputSpec::with_default("x", int(me))],
        );
        match store.create_function(contested) {
            Ok(_) => println!("OUT contested_won {round}"),
            Err(SchemaError::ConflictingInterface { .. }) => println!("OUT contested_lost {round}"),
            Err(e) => panic!("unexpected error: {e}"),
        }

        // Everyone adds the same input with a different default: one wins.
        match store.add_input(common.tag, &format!("extra_{round}"), Some(int(me))) {
            Ok(_) => println!("OUT extra_won {round}"),
            Err(SchemaError::DefaultChanged { .. }) => println!("OUT extra_lost {round}"),
            Err(e) => panic!("unexpected error: {e}"),
        }

        // Everyone adds the same input with the same default: all succeed, one entry.
        let same = store
            .add_input(common.tag, &format!("same_{round}"), Some(int(7)))
            .unwrap();
        println!("OUT same {round} {same}");

        // Some private load.
        let own = store
            .create_function(FunctionSpec::new(
                format!("own_{me}_{round}"),
                vec![InputSpec::required("x")],
            ))
            .unwrap();
        store.add_input(own.tag, "k", Some(int(round))).unwrap();
    }
    println!("OUT finished {}", unix_ns());
}

#[test]
fn four_processes_change_the_schema_at_once() {
    if role().as_deref() == Some("worker") {
        let path = std::env::var("STORE").unwrap();
        let me: i64 = std::env::var("ME").unwrap().parse().unwrap();
        worker(&path, me);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schema.memo");
    drop(Store::open(&path).unwrap());
    let barrier = ProcessBarrier::create(&dir.path().join("barrier"), 4);
    let children: Vec<_> = (0..4)
        .map(|me| {
            spawn_child(
                TEST,
                "worker",
                &[
                    ("STORE", path.display().to_string()),
                    ("ME", me.to_string()),
                    barrier.env(),
                ],
            )
        })
        .collect();
    let outputs: Vec<Vec<String>> = children.into_iter().map(finish).collect();
    let spans: Vec<Span> = outputs.iter().map(|o| Span::from_lines(o)).collect();
    assert_overlapped(&spans);
    let all: Vec<&String> = outputs.iter().flatten().collect();

    let common_tags: std::collections::BTreeSet<_> = all
        .iter()
        .filter_map(|l| l.strip_prefix("common "))
        .collect();
    assert_eq!(
        common_tags.len(),
        1,
        "identical creates must return the same tags"
    );
    for round in 0..10 {
        let won = all
            .iter()
            .filter(|l| **l == &format!("contested_won {round}"))
            .count();
        let lost = all
            .iter()
            .filter(|l| **l == &format!("contested_lost {round}"))
            .count();
        assert_eq!(
            (won, lost),
            (1, 3),
            "round {round}: exactly one conflicting create wins"
        );
        let won = all
            .iter()
            .filter(|l| **l == &format!("extra_won {round}"))
            .count();
        assert_eq!(
            won, 1,
            "round {round}: exactly one conflicting add_input wins"
        );
        let same: std::collections::BTreeSet<_> = all
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("same {round} ")))
            .collect();
        assert_eq!(same.len(), 1);
    }

    let store = Store::open(&path).unwrap();
    let log = store.schema_log(0).unwrap();
    let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=log.len() as u64).collect::<Vec<_>>(),
        "log must be gapless"
    );
    // 1 common + per round: 1 contested + 1 extra + 1 same + 4 own + 4 own inputs.
    assert_eq!(log.len(), 1 + 10 * (1 + 1 + 1 + 4 + 4));
    let replayed = memotag::Catalog::replay(log.iter().map(|e| (e.seq, &e.change))).unwrap();
    assert_eq!(replayed, store.catalog().unwrap());
    assert_eq!(store.integrity_check().unwrap(), vec!["ok"]);
}
