//! Measures the local-mode WAL bound (`WAL_AUTOCHECKPOINT_PAGES` in `src/storage/mode.rs`):
//! `time DIR` times 10,000 unbatched records and a batch of 10,000; `fill PATH MODE` records
//! until the disk is full (e.g. a `tmpfs` mounted with `size=8m`) and reports how many fit, the
//! error, and the store reopened; `make PATH N` records N results in one batch (for timing
//! `memotag backup`).
//!
//! ```text
//! cargo run --release --example wal_bound -- fill /mnt/small/s.memo local
//! ```

use memotag::{EncodedValue, FunctionSpec, InputSpec, Mode, OpenOptions, Store, Value};
use std::path::Path;
use std::time::Instant;

fn int(x: i64) -> EncodedValue {
    EncodedValue::from_value(&Value::Int(x)).unwrap()
}

fn open(path: &Path, mode: Mode) -> Store {
    let store = OpenOptions::new().mode(mode).open(path).unwrap();
    if store.function("f", 1).is_err() {
        store
            .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
            .unwrap();
    }
    store
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args[1].as_str() {
        "time" => {
            let dir = Path::new(&args[2]);
            let path = dir.join("t.memo");
            let store = open(&path, Mode::Local);
            let f = store.function("f", 1).unwrap();
            let x = f.inputs[0].tag;
            let t = Instant::now();
            for i in 0..10_000 {
                let call = store.bind(f.tag, vec![(x, int(i))]).unwrap();
                store.record(&call, vec![int(i)]).unwrap();
            }
            let unbatched = t.elapsed();
            let t = Instant::now();
            store
                .batch(|s| -> Result<(), memotag::CallError> {
                    for i in 10_000..20_000 {
                        let call = s.bind(f.tag, vec![(x, int(i))]).unwrap();
                        s.record(&call, vec![int(i)])?;
                    }
                    Ok(())
                })
                .unwrap();
            let batched = t.elapsed();
            let wal = std::fs::metadata(dir.join("t.memo-wal"))
                .map(|m| m.len())
                .unwrap_or(0);
            println!(
                "unbatched 10k: {:.2} s, batch of 10k: {:.3} s, wal now {} KiB",
                unbatched.as_secs_f64(),
                batched.as_secs_f64(),
                wal / 1024
            );
        }
        "fill" => {
            let path = Path::new(&args[2]);
            let mode: Mode = args[3].parse().unwrap();
            let store = open(path, mode);
            let f = store.function("f", 1).unwrap();
            let x = f.inputs[0].tag;
            let mut n = 0;
            let err = loop {
                let call = store.bind(f.tag, vec![(x, int(n))]).unwrap();
                match store.record(&call, vec![int(n)]) {
                    Ok(_) => n += 1,
                    Err(e) => break e,
                }
            };
            println!("{mode}: {n} results fit; then: {err}");
            drop(store);
            match Store::open(path) {
                Ok(s) => {
                    let f = s.function("f", 1).unwrap();
                    println!(
                        "reopened: {} results, integrity {:?}",
                        s.count_results(f.tag).unwrap(),
                        s.integrity_check().unwrap()
                    );
                }
                Err(e) => println!("reopen failed: {e}"),
            }
        }
        "make" => {
            let path = Path::new(&args[2]);
            let n: i64 = args[3].parse().unwrap();
            let store = open(path, Mode::Local);
            let f = store.function("f", 1).unwrap();
            let x = f.inputs[0].tag;
            store
                .batch(|s| -> Result<(), memotag::CallError> {
                    for i in 0..n {
                        let call = s.bind(f.tag, vec![(x, int(i))]).unwrap();
                        s.record(&call, vec![int(i)])?;
                    }
                    Ok(())
                })
                .unwrap();
        }
        _ => panic!("time DIR | fill PATH MODE | make PATH N"),
    }
}
