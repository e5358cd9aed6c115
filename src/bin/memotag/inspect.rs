//! Read-only listings: `functions`, `log`, `calls`, `show`, `conflicts`, `packages`, and
//! `source`. Each opens the store read-only (never creating it) and prints through `output`.
//!
//! JSON rows (field names are stable; values are JSON when canonical, else
//! `{"$codec", "$size", "$preview"}`; `code` is the code record as an object, see `CodeJson`):
//! - functions: `name, version, family, function, inputs: [{name, tag, position, has_default,
//!   default}], outputs: [name], results, created_seq, former_names: [name]`
//! - log: `seq, kind, time, client, summary, change` (`change` as the log stores it)
//! - calls / show / packages --library: `function, version, call_id, seq, code_id, code, client,
//!   time, inputs: {name: value}, outputs: {name: value}` (show adds `conflicts: [{outputs,
//!   client, time}]`, and with `--sources` `sources: {hash: text or null}`)
//! - conflicts: `function, version, call_id, code_id, code, client, time, outputs, canonical`
//! - packages: `library, version, declared, results`
//!
//! memotag never executes a stored source text; `show --sources` and `source` only print them.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::Serialize;
use serde_json::Value as J;

use memotag::{
    CallError, CallId, Catalog, CodeRecord, EncodedValue, Function, FunctionTag, LibraryRef,
    LoggedChange, OpenOptions, Resolution, ResultRow, SchemaError, StorageError, Store, UserRef,
    Value,
};

use crate::output::{listing, out, short_code, time, Format, Named, Row, Values};
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

fn encode_json(json: &J) -> Result<EncodedValue, CliError> {
    EncodedValue::from_value(&Value::from_json(json))
        .map_err(|e| CliError::new(format!("the value {json} cannot be stored: {e}")))
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

// ---- code records ----------------------------------------------------------------------------

/// A code record as JSON listings show it: every field always present, plus the record's hash.
#[derive(Clone, Serialize)]
struct CodeJson {
    /// The record's identity (32 hex digits; all zeros for the empty record).
    hash: String,
    /// The hash of the function's own normalized source, or null when no code was captured.
    own: Option<String>,
    user: Vec<UserRef>,
    libraries: Vec<LibraryRef>,
    notes: Vec<String>,
}

/// A code record for listings: `json` (an object, or null when the record is missing or
/// unreadable), `text` (the short form tables show) and the record itself.
#[derive(Clone)]
struct ShownCode {
    json: J,
    text: String,
    record: Option<CodeRecord>,
}

/// Looks code records up once per command.
#[derive(Default)]
struct Codes {
    cache: HashMap<i64, ShownCode>,
    warned: bool,
}

impl Codes {
    fn show(&mut self, store: &Store, id: i64) -> Result<ShownCode, CliError> {
        if let Some(shown) = self.cache.get(&id) {
            return Ok(shown.clone());
        }
        let shown = match store.code_record(id) {
            Ok(Some(record)) => {
                let record = record.normalized();
                ShownCode {
                    json: serde_json::to_value(CodeJson {
                        hash: hex::encode(record.hash().0),
                        own: record.own.clone(),
                        user: record.user.clone(),
                        libraries: record.libraries.clone(),
                        notes: record.notes.clone(),
                    })
                    .map_err(|e| CliError::new(format!("cannot render JSON: {e}")))?,
                    text: format!("{id}: {}", short_code(&record)),
                    record: Some(record),
                }
            }
            Ok(None) => ShownCode {
                json: J::Null,
                text: format!("{id}: missing code record"),
                record: None,
            },
            Err(CallError::Storage(StorageError::Corrupt(why))) => {
                if !self.warned {
                    eprintln!("memotag: note: {why}; run `memotag check PATH` for details");
                    self.warned = true;
                }
                ShownCode {
                    json: J::Null,
                    text: format!("{id}: unreadable code record"),
                    record: None,
                }
            }
            Err(e) => return Err(e.into()),
        };
        self.cache.insert(id, shown.clone());
        Ok(shown)
    }
}

/// The source hashes a record mentions, each with what it is the source of.
fn source_roles(record: &CodeRecord) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(own) = &record.own {
        out.push((own.clone(), "the function's own code".to_string()));
    }
    for u in &record.user {
        out.push((u.hash.clone(), format!("helper `{}`", u.name)));
    }
    for l in &record.libraries {
        if let Some(h) = &l.source_hash {
            out.push((
                h.clone(),
                format!(
                    "`{}` from {} {}",
                    l.name,
                    l.library,
                    l.version.as_deref().unwrap_or("(unknown version)")
                ),
            ));
        }
    }
    out
}

// ---- calls and show --------------------------------------------------------------------------

#[derive(Serialize)]
struct CallRow {
    function: String,
    version: u32,
    call_id: String,
    seq: i64,
    code_id: i64,
    code: J,
    #[serde(skip)]
    code_text: String,
    #[serde(skip)]
    code_record: Option<CodeRecord>,
    client: String,
    time: String,
    inputs: Named,
    outputs: Named,
    #[serde(skip_serializing_if = "Option::is_none")]
    conflicts: Option<Vec<ConflictedOutputs>>,
    /// With `show --sources`: every source text the code record mentions (null if not stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    sources: Option<BTreeMap<String, Option<String>>>,
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
            self.code_text.clone(),
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
    codes: &mut Codes,
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
    let code = codes.show(store, row.code)?;
    Ok(CallRow {
        function: catalog
            .function_name(row.function)
            .unwrap_or("?")
            .to_string(),
        version: function.map_or(0, |f| f.version),
        call_id: row.call_id.to_hex(),
        seq: row.seq,
        code_id: row.code,
        code: code.json,
        code_text: code.text,
        code_record: code.record,
        client: row.client,
        time: time(row.time_ms),
        inputs,
        outputs,
        conflicts: None,
        sources: None,
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
    let mut codes = Codes::default();
    let mut rows = Vec::new();
    let mut searched = 0;
    for f in versions(&catalog, &family, version)? {
        let mut filter = Vec::new();
        let mut applies = true;
        for Assignment { name, value } in filters {
            match catalog.resolve_input(f, name) {
                Some(resolution) => filter.push((resolution.target().tag, encode_json(value)?)),
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
            rows.push(call_row(&store, &catalog, row, &mut values, &mut codes)?);
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

pub fn show(
    path: &Path,
    call_id: &CallId,
    with_sources: bool,
    format: Format,
) -> Result<(), CliError> {
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
    let mut codes = Codes::default();
    let mut rows = Vec::new();
    let mut texts: HashMap<String, Option<String>> = HashMap::new();
    for result in results {
        let (function, code) = (result.function, result.code);
        let names = catalog
            .function(function)
            .map(|f| f.outputs.clone())
            .unwrap_or_default();
        let mut row = call_row(&store, &catalog, result, &mut values, &mut codes)?;
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
        if with_sources {
            let mut sources = BTreeMap::new();
            for (hash, _) in row.code_record.iter().flat_map(source_roles) {
                let text = match texts.get(&hash) {
                    Some(text) => text.clone(),
                    None => {
                        let text = store.source(&hash)?;
                        texts.insert(hash.clone(), text.clone());
                        text
                    }
                };
                sources.insert(hash, text);
            }
            row.sources = Some(sources);
        }
        rows.push(row);
    }
    listing(format, &rows, "no results")?;
    if !with_sources {
        return Ok(());
    }
    match format {
        Format::Json => Ok(()),
        Format::Csv => {
            eprintln!("memotag: note: --sources shows source texts in table and JSON output only");
            Ok(())
        }
        Format::Table => print_sources(&rows, &texts),
    }
}

/// Prints each source text the rows' code records mention, once, under a line saying what it is.
fn print_sources(
    rows: &[CallRow],
    texts: &HashMap<String, Option<String>>,
) -> Result<(), CliError> {
    let mut seen = HashSet::new();
    let mut text = String::new();
    for row in rows {
        for (hash, role) in row.code_record.iter().flat_map(source_roles) {
            if !seen.insert(hash.clone()) {
                continue;
            }
            text.push_str(&format!(
                "\n── source {hash}: {role} (code record {}) ──\n",
                row.code_id
            ));
            match texts.get(&hash).cloned().flatten() {
                Some(source) => {
                    text.push_str(&source);
                    if !source.ends_with('\n') {
                        text.push('\n');
                    }
                }
                None => text
                    .push_str("(not stored: sources are advisory, and no client sent this one)\n"),
            }
        }
    }
    if seen.is_empty() {
        text.push_str("\n(no source texts: these results were recorded without code)\n");
    }
    out(&text)
}

/// `memotag source PATH HASH`: the stored text, as it was sent.
pub fn source(path: &Path, hash: &str) -> Result<(), CliError> {
    let store = open_read(path)?;
    match store.source(hash)? {
        Some(text) if text.ends_with('\n') || text.is_empty() => out(&text),
        Some(text) => out(&format!("{text}\n")),
        None => Err(CliError::new(format!(
            "{} holds no source text with hash `{hash}`; sources are advisory, so the client that \
             recorded it may not have sent it (`memotag show PATH CALL_ID --sources` lists the \
             hashes a result mentions)",
            path.display()
        ))),
    }
}

// ---- conflicts -------------------------------------------------------------------------------

#[derive(Serialize)]
struct ConflictRow {
    function: String,
    version: u32,
    call_id: String,
    code_id: i64,
    code: J,
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
    let mut codes = Codes::default();
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
            code_id: c.code,
            code: codes.show(&store, c.code)?.json,
            client: c.client,
            time: time(c.time_ms),
            outputs: values.named(&store, named_outputs(&names, &c.outputs))?,
            canonical: values.named(&store, named_outputs(&names, &canonical))?,
        });
    }
    listing(format, &rows, "no conflicts")
}

// ---- packages --------------------------------------------------------------------------------

/// A library version seen in code records.
#[derive(Serialize)]
struct PackageRow {
    library: String,
    /// null when the recording client could not tell the version.
    version: Option<String>,
    /// Whether any code record declared it (`deps=`, `@memotag.remote`), rather than only
    /// detecting it.
    declared: bool,
    /// Results computed with it.
    results: u64,
}

impl Row for PackageRow {
    fn header() -> &'static [&'static str] {
        &["library", "version", "declared", "results"]
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.library.clone(),
            self.version
                .clone()
                .unwrap_or_else(|| "unknown".to_string()),
            if self.declared { "yes" } else { "no" }.to_string(),
            self.results.to_string(),
        ]
    }
}

pub fn packages(path: &Path, format: Format) -> Result<(), CliError> {
    let store = open_read(path)?;
    let rows: Vec<PackageRow> = store
        .packages()?
        .into_iter()
        .map(|p| PackageRow {
            library: p.library,
            version: p.version,
            declared: p.declared,
            results: p.results,
        })
        .collect();
    listing(
        format,
        &rows,
        "no libraries recorded (no result in this store was recorded with library code)",
    )
}

/// `packages --library NAME [--version V]`: the results computed with that library, as `calls`
/// lists them.
pub fn results_with(
    path: &Path,
    library: &str,
    version: Option<&str>,
    format: Format,
) -> Result<(), CliError> {
    let store = open_read(path)?;
    let catalog = store.catalog()?;
    let which = match version {
        Some(v) => format!("{library} {v}"),
        None => library.to_string(),
    };
    let seen = store.packages()?.into_iter().any(|p| {
        p.library == library
            && version.is_none_or(|v| p.version.as_deref().unwrap_or_default() == v)
    });
    if !seen {
        eprintln!(
            "memotag: note: this store has seen no library {which}; `memotag packages PATH` lists those it has"
        );
    }
    let mut values = Values::default();
    let mut codes = Codes::default();
    let mut rows = Vec::new();
    for row in store.results_with(library, version)? {
        rows.push(call_row(&store, &catalog, row, &mut values, &mut codes)?);
    }
    listing(format, &rows, &format!("no results computed with {which}"))
}
