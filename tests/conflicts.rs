//! Two processes recording different outputs for the same call (a non-deterministic function):
//! the first committed stays canonical, the other is kept as a conflict, every reader sees the
//! canonical outputs. Both miss before either records (a barrier between the miss and the
//! record), as two notebooks computing the same call at once do.

mod common;

use common::{decode, finish, int, role, spawn_child, unix_ns, ProcessBarrier};
use memotag::{FunctionSpec, InputSpec, RecordOutcome, Store, Value};

const TEST: &str = "different_outputs_for_one_call_keep_the_first_canonical";

#[test]
fn different_outputs_for_one_call_keep_the_first_canonical() {
    if role().as_deref() == Some("racer") {
        let path = std::env::var("STORE").unwrap();
        let me: i64 = std::env::var("ME").unwrap().parse().unwrap();
        let store = Store::open(&path).unwrap();
        let f = store.function("roll", 1).unwrap();
        let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(1))]).unwrap();
        assert!(store.lookup(&call).unwrap().is_none(), "a miss: compute");
        println!("OUT missed {}", unix_ns());
        ProcessBarrier::from_env().wait("computed", &me.to_string());
        let outcome = store.record(&call, vec![int(100 + me)]).unwrap();
        println!("OUT recorded {}", unix_ns());
        let seen = decode(&store.lookup(&call).unwrap().unwrap().outputs[0]);
        match outcome {
            RecordOutcome::Inserted { .. } => println!("OUT inserted {me} {seen:?}"),
            RecordOutcome::Conflict { .. } => println!("OUT conflict {me} {seen:?}"),
            other => panic!("unexpected {other:?}"),
        }
        return;
    }
    if role().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.memo");
    {
        let store = Store::open(&path).unwrap();
        store
            .create_function(FunctionSpec::new("roll", vec![InputSpec::required("seed")]))
            .unwrap();
    }
    let barrier = ProcessBarrier::create(&dir.path().join("barrier"), 2);
    let children: Vec<_> = (0..2)
        .map(|me| {
            spawn_child(
                TEST,
                "racer",
                &[
                    ("STORE", path.display().to_string()),
                    ("ME", me.to_string()),
                    barrier.env(),
                ],
            )
        })
        .collect();
    let lines: Vec<String> = children.into_iter().flat_map(finish).collect();
    let times = |key: &str| -> Vec<u128> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(key)?.parse().ok())
            .collect()
    };
    let (missed, recorded) = (times("missed "), times("recorded "));
    assert_eq!((missed.len(), recorded.len()), (2, 2), "{lines:?}");
    assert!(
        missed.iter().max() < recorded.iter().min(),
        "both missed before either recorded: {lines:?}"
    );
    let inserted: Vec<_> = lines.iter().filter(|l| l.starts_with("inserted")).collect();
    let conflicted: Vec<_> = lines.iter().filter(|l| l.starts_with("conflict")).collect();
    assert_eq!((inserted.len(), conflicted.len()), (1, 1), "{lines:?}");
    let winner: i64 = inserted[0].split(' ').nth(1).unwrap().parse().unwrap();
    let canonical = format!("{:?}", Value::Int(100 + winner));
    assert!(
        inserted
            .iter()
            .chain(&conflicted)
            .all(|l| l.ends_with(&canonical)),
        "both see the canonical value: {lines:?}"
    );

    let store = Store::open(&path).unwrap();
    let f = store.function("roll", 1).unwrap();
    let conflicts = store.conflicts(Some(f.tag)).unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].outputs, vec![int(100 + (1 - winner)).id()]);
    assert_eq!(store.results(f.tag, &[], None).unwrap().len(), 1);
    // Recording the conflicting value again adds nothing.
    let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(1))]).unwrap();
    assert!(matches!(
        store.record(&call, vec![int(100 + (1 - winner))]).unwrap(),
        RecordOutcome::Conflict { .. }
    ));
    assert_eq!(store.conflicts(None).unwrap().len(), 1);
}
