//! Four real processes record 2,000 results each (overlapping) while a fifth changes the schema:
//! every acknowledged result is present, no error reaches a writer, the log is gapless and the
//! file intact. A barrier starts all five together; the test checks that they overlapped and
//! that the writers' commits interleave.

mod common;

use common::{
    assert_overlapped, decode, finish, int, role, spawn_child, unix_ns, ProcessBarrier, Span,
};
use memotag::{FunctionSpec, InputSpec, OpenOptions, Store, Value};

const TEST: &str = "writers_lose_nothing_while_the_schema_changes";
const PER_WRITER: i64 = 2_000;
const STRIDE: i64 = 1_500; // writer w records [w*STRIDE, w*STRIDE + PER_WRITER): 500 overlap

#[test]
fn writers_lose_nothing_while_the_schema_changes() {
    match role().as_deref() {
        Some("writer") => {
            let path = std::env::var("STORE").unwrap();
            let me: i64 = std::env::var("ME").unwrap().parse().unwrap();
            let store = OpenOptions::new()
                .client_name(format!("writer-{me}"))
                .open(&path)
                .unwrap();
            // This client never refreshes its view of `f`: every call after the first schema
            // change is a stale call.
            let f = store.function("f", 1).unwrap();
            let x = f.inputs[0].tag;
            let barrier = ProcessBarrier::from_env();
            println!("OUT passed {}", barrier.wait("start", &me.to_string()));
            for i in me * STRIDE..me * STRIDE + PER_WRITER {
                let call = store.bind(f.tag, vec![(x, int(i))]).unwrap();
                store.record(&call, vec![int(i * 3)]).unwrap();
            }
            println!("OUT finished {}", unix_ns());
            println!("OUT done {me}");
            return;
        }
        Some("schema") => {
            let path = std::env::var("STORE").unwrap();
            let store = Store::open(&path).unwrap();
            let f = store.function("f", 1).unwrap();
            let barrier = ProcessBarrier::from_env();
            println!("OUT passed {}", barrier.wait("start", "schema"));
            for round in 0..30 {
                store
                    .add_input(f.tag, &format!("extra_{round}"), Some(int(round)))
                    .unwrap();
                store
                    .rename_family(f.family, &format!("f_{round}"))
                    .unwrap();
                store
                    .create_function(FunctionSpec::new(
                        format!("other_{round}"),
                        vec![InputSpec::required("a")],
                    ))
                    .unwrap();
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            store.rename_family(f.family, "f").unwrap();
            println!("OUT finished {}", unix_ns());
            println!("OUT done schema");
            return;
        }
        Some(_) => return,
        None => {}
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.memo");
    {
        let store = Store::open(&path).unwrap();
        store
            .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
            .unwrap();
    }
    let barrier = ProcessBarrier::create(&dir.path().join("barrier"), 5);
    let env = |me: i64| {
        vec![
            ("STORE", path.display().to_string()),
            ("ME", me.to_string()),
            barrier.env(),
        ]
    };
    let mut children: Vec<_> = (0..4)
        .map(|me| spawn_child(TEST, "writer", &env(me)))
        .collect();
    children.push(spawn_child(TEST, "schema", &env(9)));
    let spans: Vec<Span> = children
        .into_iter()
        .map(|child| Span::from_lines(&finish(child)))
        .collect();
    assert_overlapped(&spans);

    let store = Store::open(&path).unwrap();
    let f = store.function("f", 1).unwrap();
    let x = f.inputs[0].tag;
    let total = 3 * STRIDE + PER_WRITER;
    assert_eq!(store.count_results(f.tag).unwrap(), total as u64);
    // The writers recorded while the schema changed: some of their results were committed
    // between the first and the last schema change (stale calls, racing the changes).
    let rows = store.results(f.tag, &[], None).unwrap();
    let log = store.schema_log(1).unwrap();
    let (first_change, last_change) = (log[0].time_ms, log[log.len() - 1].time_ms);
    let during = rows
        .iter()
        .filter(|r| r.time_ms > first_change && r.time_ms < last_change)
        .count();
    println!("{during} of {total} results were recorded while the schema changed");
    assert!(
        during > 0,
        "no result was recorded while the schema changed (changes from {first_change} to {last_change} ms)"
    );
    for i in 0..total {
        let call = store.bind(f.tag, vec![(x, int(i))]).unwrap();
        let hit = store
            .lookup(&call)
            .unwrap()
            .unwrap_or_else(|| panic!("result {i} lost"));
        assert_eq!(decode(&hit.outputs[0]), Value::Int(i * 3));
    }
    let log = store.schema_log(0).unwrap();
    assert!(
        log.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1),
        "log gapless"
    );
    assert_eq!(log.len(), 1 + 30 * 3 + 1);
    assert!(store.conflicts(None).unwrap().is_empty());
    assert_eq!(store.integrity_check().unwrap(), vec!["ok"]);
}
