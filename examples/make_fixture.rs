//! Writes a small store with this build, for tests/fixtures/ (later versions must open it).
//! Usage: cargo run --example make_fixture -- PATH

use memotag::{EncodedValue, FunctionSpec, InputSpec, Mode, OpenOptions, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: make_fixture PATH")?;
    let int = |i: i64| EncodedValue::from_value(&Value::Int(i)).expect("an int encodes");
    let store = OpenOptions::new()
        .mode(Mode::Local)
        .client_name("fixture@memotag")
        .open(&path)?;
    let f = store.create_function(FunctionSpec::new(
        "square",
        vec![
            InputSpec::required("x"),
            InputSpec::with_default("offset", int(0)),
        ],
    ))?;
    for i in 0..10 {
        let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(i))])?;
        store.record(&call, vec![int(i * i)])?;
    }
    store.add_input(f.tag, "scale", Some(int(1)))?;
    store.rename_family(f.family, "squared")?;
    let g = store.create_function(
        FunctionSpec::new("stats", vec![InputSpec::required("xs")]).outputs(["mean", "n"]),
    )?;
    let xs = EncodedValue::from_value(&Value::Tuple(vec![
        Value::Int(1),
        Value::Int(2),
        Value::Int(3),
    ]))?;
    let call = store.bind(g.tag, vec![(g.inputs[0].tag, xs)])?;
    store.record(
        &call,
        vec![EncodedValue::from_value(&Value::Float(2.0))?, int(3)],
    )?;
    drop(store);
    // Fold the WAL into the file so that the fixture is one self-contained file.
    let conn = rusqlite::Connection::open(&path)?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE;")?;
    Ok(())
}
