//! Read-only listings: `functions`, `log`, `calls`, `show`, `conflicts`, `packages`. Each opens
//! the store read-only (never creating it) and prints through `output`.
//!
//! JSON rows (field names are stable; values are JSON when canonical, else
//! `{"$codec", "$size", "$preview"}`):
//! - functions: `name, version, family, function, inputs: [{name, tag, position, has_default,
//!   default}], outputs: [name], results, created_seq, former_names: [name]`
//! - log: `seq, kind, time, client, summary, change` (`change` as the log stores it)
//! - calls / show: `function, version, call_id, seq, code, client, time, inputs: {name: value},
//!   outputs: {name: value}` (show adds `conflicts: [{outputs, client, time}]`)
//! - conflicts: `function, version, call_id, code, client, time, outputs, canonical`
//! - packages: `name, version, results`

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value as J;

use memotag::{
    CallId, Catalog, EncodedValue, Function, FunctionTag, LoggedChange, OpenOptions, Resolution,
    ResultRow, SchemaError, Store, Value,
};

use crate::output::{listing, time, Format, Named, Row, Values};
use crate::{Assignment, CliError};

/// Opens a store read-only; a missing path is an error, never a new store.
pub fn open_read(path: &Path) -> Result<Store, CliError> {
    Ok(OpenOptions::new().read_only(true).open(path)?)
}

/// Resolves a function name through former names too, saying so on stderr.
pub fn resolve_family(catalog: &Catalog, name: &str) -> Result<memotag::Family, CliError> {
    match catalog.resolve_family(name) {
        None => Err(SchemaError::NoSuchFunction(name.to_string()).into()),
        Some(Resolution::Current(f)) => Ok(f.clone()),
        Some(Resolution::Renamed { from, to, target }) => {
            eprintln!("memotag: note: `{from}` was renamed; it is now called `{to}`");
            Ok(target.clone())
        }
    }
}

/// The function versions of a family: the one asked for, or all, oldest first.
pub fn versions<'c>(
    catalog: &'c Catalog,
    family: &memotag::Family,
    version: Option<u32>,
) -> Result<Vec<&'c Function>, CliError> {
    let pick = |v: &u32| family.versions.get(v).and_then(|t| catalog.function(*t));
    match version {
        Some(v) => pick(&v).map(|f| vec![f]).ok_or_else(|| {
            SchemaError::NoSuchVersion {
                function: family.name.clone(),
                version: v,
            }
            .into()
        }),
        None => Ok(family.versions.keys().filter_map(pick).collect()),
    }
}

fn encode_json(json: &J) -> EncodedValue {
    EncodedValue::from_value(&Value::from_json(json))
}

// ---- functions -------------------------------------------------------------------------------

#[derive(Serialize)]
struct FunctionRow {
    name: String,
    version: u32,
    family: String,
    function: String,
    inputs: Vec<InputRow>,
    outputs: Vec<String>,
    results: u64,
    created_seq: u64,
    former_names: Vec<String>,
}

#[derive(Serialize)]
struct InputRow {
    name: String,
    tag: String,
    position: u32,
    has_default: bool,
    default: J,
    #[serde(skip)]
    default_text: Option<String>,
}

impl Row for FunctionRow {
    fn header() -> &'static [&'static str] {
        &[
            "name",
            "version",
            "inputs",
            "outputs",
            "results",
            "created_seq",
            "former_names",
        ]
    }

    fn cells(&self) -> Vec<String> {
        let inputs = self
            .inputs
            .iter()
            .map(|i| match &i.default_text {
                Some(d) => format!("{}={d}", i.name),
                None => i.name.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        vec![
            self.name.clone(),
            self.version.to_string(),
            inputs,
            self.outputs.join(", "),
            self.results.to_string(),
            self.created_seq.to_string(),
            self.former_names.join(", "),
        ]
    }
}

pub fn functions(path: &Path, format: Format) -> Result<(), CliError> {
    let store = open_read(path)?;
    let catalog = store.catalog()?;
    let mut values = Values::default();
    let mut families: Vec<_> = catalog.families().collect();
    families.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rows = Vec::new();
    for family in families {
        for tag in family.versions.values() {
            let Some(f) = catalog.function(*tag) else {
                continue;
            };
            let mut inputs = Vec::new();
            for input in &f.inputs {
                let shown = match &input.default {
                    Some(id) => Some(values.show(&store, id)?),
                    None => None,
                };
                inputs.push(InputRow {
                    name: input.name.clone(),
                    tag: input.tag.to_string(),
                    position: input.position,
                    has_default: shown.is_some(),
                    default: shown.as_ref().map_or(J::Null, |s| s.json.clone()),
                    default_text: shown.map(|s| s.text),
                });
            }
            rows.push(FunctionRow {
                name: family.name.clone(),
                version: f.version,
                family: family.tag.to_string(),
                function: f.tag.to_string(),
                inputs,
                outputs: f.outputs.clone(),
                results: store.count_results(f.tag)?,
                created_seq: f.created_seq,
                former_names: family
                    .names
                    .iter()
                    .filter(|n| n.name != family.name)
                    .map(|n| n.name.clone())
                    .collect(),
            });
        }
    }
    listing(format, &rows, "no functions yet")
}

// ---- log -------------------------------------------------------------------------------------

#[derive(Serialize)]
struct LogRow {
    seq: u64,
    kind: &'static str,
    time: String,
    client: String,
    summary: String,
    change: LoggedChange,
}

impl Row for LogRow {
    fn header() -> &'static [&'static str] {
        &["seq", "time", "client", "kind", "summary"]
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.seq.to_string(),
            self.time.clone(),
            self.client.clone(),
            self.kind.to_string(),
            self.summary.clone(),
        ]
    }
}

pub fn log(path: &Path, since: u64, format: Format) -> Result<(), CliError> {
    let store = open_read(path)?;
    let mut values = Values::default();
    let mut catalog = Catalog::new();
    let mut rows = Vec::new();
    // Replay from the start, so that each summary names things as they were called then.
    for entry in store.schema_log(0)? {
        let summary = summarize(&store, &catalog, &entry.change, &mut values)?;
        catalog.apply(entry.seq, &entry.change)?;
        if entry.seq > since {
            rows.push(LogRow {
                seq: entry.seq,
                kind: entry.change.kind(),
                time: time(entry.time_ms),
                client: entry.client,
                summary,
                change: entry.change,
            });
        }
    }
    listing(format, &rows, "no schema changes")
}

fn summarize(
    store: &Store,
    catalog: &Catalog,
    change: &LoggedChange,
    values: &mut Values,
) -> Result<String, CliError> {
    let label = |tag: &FunctionTag| match (catalog.function_name(*tag), catalog.function(*tag)) {
        (Some(name), Some(f)) => format!("`{name}` v{}", f.version),
        _ => format!("function {tag}"),
    };
    let mut interface = |inputs: &[memotag::schema::LoggedInput], outputs: &[String]| {
        let mut parts = Vec::new();
        for input in inputs {
            match &input.default {
                Some(id) => parts.push(format!("{}={}", input.name, values.show(store, id)?.text)),
                None => parts.push(input.name.clone()),
            }
        }
        Ok::<_, CliError>(format!("({}) -> {}", parts.join(", "), outputs.join(", ")))
    };
    Ok(match change {
        LoggedChange::CreateFunction {
            name,
            version,
            inputs,
            outputs,
            ..
        } => format!("create `{name}` v{version} {}", interface(inputs, outputs)?),
        LoggedChange::NewVersion {
            family,
            version,
            inputs,
            outputs,
            ..
        } => {
            let name = catalog.family(*family).map_or("?", |f| f.name.as_str());
            format!(
                "new version `{name}` v{version} {}",
                interface(inputs, outputs)?
            )
        }
        LoggedChange::AddInput {
            function,
            name,
            default,
            ..
        } => format!(
            "add input `{name}`={} to {}",
            values.show(store, default)?.text,
            label(function)
        ),
        LoggedChange::RenameFunction { from, to, .. } => format!("rename `{from}` to `{to}`"),
        LoggedChange::RenameInput {
            function, from, to, ..
        } => format!("rename input `{from}` of {} to `{to}`", label(function)),
    })
}

// ---- calls and show --------------------------------------------------------------------------

#[derive(Serialize)]
struct CallRow {
    function: String,
    version: u32,
    call_id: String,
    seq: i64,
    code: i64,
    client: String,
    time: String,
    inputs: Named,
    outputs: Named,
    #[serde(skip_serializing_if = "Option::is_none")]
    conflicts: Option<Vec<ConflictedOutputs>>,
}

#[derive(Serialize)]
struct ConflictedOutputs {
    outputs: Named,
    client: String,
    time: String,
}

impl Row for CallRow {
    fn header() -> &'static [&'static str] {
        &[
            "function",
            "version",
            "call_id",
            "seq",
            "code",
            "inputs",
            "outputs",
            "conflicts",
            "client",
            "time",
        ]
    }

    fn cells(&self) -> Vec<String> {
        let conflicts = self
            .conflicts
            .iter()
            .flatten()
            .map(|c| format!("{} ({}, {})", c.outputs.text(), c.client, c.time))
            .collect::<Vec<_>>()
            .join("; ");
        vec![
            self.function.clone(),
            self.version.to_string(),
            self.call_id.clone(),
            self.seq.to_string(),
            self.code.to_string(),
            self.inputs.text(),
            self.outputs.text(),
            conflicts,
            self.client.clone(),
            self.time.clone(),
        ]
    }
}

fn call_row(
    store: &Store,
    catalog: &Catalog,
    row: ResultRow,
    values: &mut Values,
) -> Result<CallRow, CliError> {
    let function = catalog.function(row.function);
    let input_name = |tag| {
        function
            .and_then(|f| f.input(tag))
            .map_or_else(|| tag.to_string(), |i| i.name.clone())
    };
    let output_names: Vec<String> = function.map(|f| f.outputs.clone()).unwrap_or_default();
    let inputs = values.named(
        store,
        row.inputs.iter().map(|(tag, id)| (input_name(*tag), *id)),
    )?;
    let outputs = values.named(store, named_outputs(&output_names, &row.outputs))?;
    Ok(CallRow {
        function: catalog
            .function_name(row.function)
            .unwrap_or("?")
            .to_string(),
        version: function.map_or(0, |f| f.version),
        call_id: row.call_id.to_hex(),
        seq: row.seq,
        code: row.code,
        client: row.client,
        time: time(row.time_ms),
        inputs,
        outputs,
        conflicts: None,
    })
}

fn named_outputs(names: &[String], ids: &[memotag::ValueId]) -> Vec<(String, memotag::ValueId)> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let name = names.get(i).cloned().unwrap_or_else(|| format!("#{i}"));
            (name, *id)
        })
        .collect()
}

pub fn calls(
    path: &Path,
    function: &str,
    version: Option<u32>,
    filters: &[Assignment],
    limit: Option<usize>,
    format: Format,
) -> Result<(), CliError> {
    let store = open_read(path)?;
    let catalog = store.catalog()?;
    let family = resolve_family(&catalog, function)?;
    let mut values = Values::default();
    let mut rows = Vec::new();
    let mut searched = 0;
    for f in versions(&catalog, &family, version)? {
        let mut filter = Vec::new();
        let mut applies = true;
        for Assignment { name, value } in filters {
            match catalog.resolve_input(f, name) {
                Some(resolution) => filter.push((resolution.target().tag, encode_json(value))),
                None if version.is_some() => {
                    return Err(SchemaError::NoSuchInput {
                        function: format!("{} version {}", family.name, f.version),
                        input: name.clone(),
                    }
                    .into())
                }
                None => applies = false,
            }
        }
        if !applies {
            continue;
        }
        searched += 1;
        let left = limit.map(|l| l.saturating_sub(rows.len()));
        if left == Some(0) {
            break;
        }
        for row in store.results(f.tag, &filter, left)? {
            rows.push(call_row(&store, &catalog, row, &mut values)?);
        }
    }
    if searched == 0 {
        let names: Vec<&str> = filters.iter().map(|a| a.name.as_str()).collect();
        return Err(CliError::new(format!(
            "no version of `{}` has all the inputs {}; `memotag functions PATH` shows them",
            family.name,
            names.join(", ")
        )));
    }
    listing(format, &rows, "no results")
}

pub fn show(path: &Path, call_id: &CallId, format: Format) -> Result<(), CliError> {
    let store = open_read(path)?;
    let catalog = store.catalog()?;
    let results = store.results_of_call(call_id)?;
    if results.is_empty() {
        return Err(CliError::new(format!(
            "no result has call id {call_id}; `memotag calls PATH FUNCTION` lists call ids"
        )));
    }
    let conflicts: Vec<_> = store
        .conflicts(None)?
        .into_iter()
        .filter(|c| c.call_id == *call_id)
        .collect();
    let mut values = Values::default();
    let mut rows = Vec::new();
    for result in results {
        let (function, code) = (result.function, result.code);
        let names = catalog
            .function(function)
            .map(|f| f.outputs.clone())
            .unwrap_or_default();
        let mut row = call_row(&store, &catalog, result, &mut values)?;
        let mut mine = Vec::new();
        for c in conflicts
            .iter()
            .filter(|c| c.function == function && c.code == code)
        {
            mine.push(ConflictedOutputs {
                outputs: values.named(&store, named_outputs(&names, &c.outputs))?,
                client: c.client.clone(),
                time: time(c.time_ms),
            });
        }
        row.conflicts = Some(mine);
        rows.push(row);
    }
    listing(format, &rows, "no results")
}

// ---- conflicts -------------------------------------------------------------------------------

#[derive(Serialize)]
struct ConflictRow {
    function: String,
    version: u32,
    call_id: String,
    code: i64,
    client: String,
    time: String,
    /// The outputs recorded later, kept aside.
    outputs: Named,
    /// The outputs every reader sees.
    canonical: Named,
}

impl Row for ConflictRow {
    fn header() -> &'static [&'static str] {
        &[
            "function",
            "version",
            "call_id",
            "canonical",
            "outputs",
            "client",
            "time",
        ]
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.function.clone(),
            self.version.to_string(),
            self.call_id.clone(),
            self.canonical.text(),
            self.outputs.text(),
            self.client.clone(),
            self.time.clone(),
        ]
    }
}

pub fn conflicts(path: &Path, format: Format) -> Result<(), CliError> {
    let store = open_read(path)?;
    let catalog = store.catalog()?;
    let mut values = Values::default();
    let mut canonical_of: HashMap<CallId, Vec<ResultRow>> = HashMap::new();
    let mut rows = Vec::new();
    for c in store.conflicts(None)? {
        let results = match canonical_of.entry(c.call_id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(store.results_of_call(&c.call_id)?),
        };
        let canonical = results
            .iter()
            .find(|r| r.function == c.function && r.code == c.code)
            .map(|r| r.outputs.clone())
            .unwrap_or_default();
        let function = catalog.function(c.function);
        let names = function.map(|f| f.outputs.clone()).unwrap_or_default();
        rows.push(ConflictRow {
            function: catalog.function_name(c.function).unwrap_or("?").to_string(),
            version: function.map_or(0, |f| f.version),
            call_id: c.call_id.to_hex(),
            code: c.code,
            client: c.client,
            time: time(c.time_ms),
            outputs: values.named(&store, named_outputs(&names, &c.outputs))?,
            canonical: values.named(&store, named_outputs(&names, &canonical))?,
        });
    }
    listing(format, &rows, "no conflicts")
}

// ---- packages --------------------------------------------------------------------------------

/// A library seen in code records. No rows yet: code records are not stored yet.
#[derive(Serialize)]
#[allow(dead_code)] // Built once code records exist; the columns are fixed now.
struct PackageRow {
    name: String,
    version: String,
    results: u64,
}

impl Row for PackageRow {
    fn header() -> &'static [&'static str] {
        &["name", "version", "results"]
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.version.clone(),
            self.results.to_string(),
        ]
    }
}

pub fn packages(path: &Path, format: Format) -> Result<(), CliError> {
    let _store = open_read(path)?;
    listing::<PackageRow>(
        format,
        &[],
        "no packages recorded (this store holds no code records yet)",
    )
}
