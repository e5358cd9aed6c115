//! Two processes recording different outputs for the same call (a non-deterministic function):
//! the first committed stays canonical, the other is kept as a conflict, every reader sees the
//! canonical outputs.

mod common;

use common::{decode, finish, int, role, spawn_child};
use memotag::{FunctionSpec, InputSpec, RecordOutcome, Store, Value};

const TEST: &str = "different_outputs_for_one_call_keep_the_first_canonical";

#[test]
fn different_outputs_for_one_call_keep_the_first_canonical() {
    if role().as_deref() == Some("racer") {
        let path = std::env::var("STORE").unwrap();
        let me: i64 = std::env::var("ME").unwrap().parse().unwrap();
        let start: u128 = std::env::var("START_AT").unwrap().parse().unwrap();
        let store = Store::open(&path).unwrap();
        let f = store.function("roll", 1).unwrap();
        let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(1))]).unwrap();
        while std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            < start
        {
            std::hint::spin_loop();
        }
        let outcome = store.record(&call, vec![int(100 + me)]).unwrap();
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
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 300;
    let children: Vec<_> = (0..2)
        .map(|me| {
            spawn_child(
                TEST,
                "racer",
                &[
                    ("STORE", path.display().to_string()),
                    ("ME", me.to_string()),
                    ("START_AT", start.to_string()),
                ],
            )
        })
        .collect();
    let lines: Vec<String> = children.into_iter().flat_map(finish).collect();
    let inserted: Vec<_> = lines.iter().filter(|l| l.starts_with("inserted")).collect();
    let conflicted: Vec<_> = lines.iter().filter(|l| l.starts_with("conflict")).collect();
    assert_eq!((inserted.len(), conflicted.len()), (1, 1), "{lines:?}");
    let winner: i64 = inserted[0].split(' ').nth(1).unwrap().parse().unwrap();
    let canonical = format!("{:?}", Value::Int(100 + winner));
    assert!(
        lines.iter().all(|l| l.ends_with(&canonical)),
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
