//! A child recording in a loop is killed with SIGKILL at random moments, 20 times: the file is
//! intact and every result whose `record` had returned is present.

mod common;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use common::{decode, int, role, spawn_child};
use memotag::{FunctionSpec, InputSpec, Store, Value};

const TEST: &str = "sigkill_never_loses_a_returned_record";

#[test]
fn sigkill_never_loses_a_returned_record() {
    if role().as_deref() == Some("recorder") {
        let path = std::env::var("STORE").unwrap();
        let start: i64 = std::env::var("FROM").unwrap().parse().unwrap();
        let store = Store::open(&path).unwrap();
        let f = store.function("f", 1).unwrap();
        let x = f.inputs[0].tag;
        // Large enough values now and then, so that some records write blob files too.
        for i in start.. {
            let call = store.bind(f.tag, vec![(x, int(i))]).unwrap();
            let out = if i % 50 == 0 {
                memotag::EncodedValue::raw(vec![(i % 251) as u8; 5_000])
            } else {
                int(i * 7)
            };
            store.record(&call, vec![out]).unwrap();
            println!("OUT {i}");
        }
        return;
    }
    if role().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.memo");
    {
        let store = memotag::OpenOptions::new()
            .blob_threshold(4_096)
            .open(&path)
            .unwrap();
        store
            .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
            .unwrap();
    }
    let mut acknowledged: Vec<i64> = Vec::new();
    let mut next = 0i64;
    for round in 0..20 {
        let env = [
            ("STORE", path.display().to_string()),
            ("FROM", next.to_string()),
        ];
        let mut child = spawn_child(TEST, "recorder", &env);
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("OUT ") {
                    seen.push(line[at + 4..].trim().parse::<i64>().unwrap());
                }
            }
            seen
        });
        let delay = Duration::from_millis(20 + fastrand::u64(0..150) + round * 3);
        let started = Instant::now();
        while started.elapsed() < delay {
            std::thread::sleep(Duration::from_millis(2));
        }
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        let seen = reader.join().unwrap();
        next = seen.last().map_or(next, |last| last + 1) + 1_000;
        acknowledged.extend(seen);

        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.integrity_check().unwrap(),
            vec!["ok"],
            "round {round}"
        );
    }
    assert!(
        acknowledged.len() > 100,
        "the children recorded something ({})",
        acknowledged.len()
    );
    let store = Store::open(&path).unwrap();
    let f = store.function("f", 1).unwrap();
    for i in acknowledged {
        let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(i))]).unwrap();
        let hit = store
            .lookup(&call)
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged result {i} lost"));
        if i % 50 != 0 {
            assert_eq!(decode(&hit.outputs[0]), Value::Int(i * 7));
        } else {
            assert_eq!(hit.outputs[0].bytes.len(), 5_000);
        }
    }
}
