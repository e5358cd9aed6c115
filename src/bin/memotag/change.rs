//! Schema changes from the command line: `create`, `add-input`, `rename`, `rename-input`. Each is
//! one `SchemaChange` applied through the store (validated, logged, or rejected with nothing
//! changed); a retry of a change that already took effect succeeds and says so.

use std::path::Path;

use memotag::{EncodedValue, FunctionSpec, InputSpec, OpenOptions, SchemaChange, Store, Value};

use crate::inspect::{resolve_family, versions};
use crate::output::out;
use crate::{CliError, InputArg};

/// Opens a store for writing; only `create` may make a new one.
fn open_write(path: &Path) -> Result<Store, CliError> {
    memotag::storage::maintenance::existing_generation(path)?;
    Ok(OpenOptions::new().open(path)?)
}

fn encode_json(json: &serde_json::Value) -> Result<EncodedValue, CliError> {
    EncodedValue::from_value(&Value::from_json(json))
        .map_err(|e| CliError::new(format!("the value {json} cannot be stored: {e}")))
}

fn applied(seq: Option<u64>, done: String, already: String) -> Result<(), CliError> {
    match seq {
        Some(seq) => out(&format!("{done} (schema log entry {seq})\n")),
        None => out(&format!("{already}; nothing changed\n")),
    }
}

pub fn create(
    path: &Path,
    name: &str,
    inputs: &[InputArg],
    outputs: &[String],
    version: u32,
    new_family: bool,
) -> Result<(), CliError> {
    let store = OpenOptions::new().open(path)?;
    let specs = inputs
        .iter()
        .map(|i| match &i.default {
            Some(d) => Ok(InputSpec::with_default(i.name.clone(), encode_json(d)?)),
            None => Ok(InputSpec::required(i.name.clone())),
        })
        .collect::<Result<_, CliError>>()?;
    let mut spec = FunctionSpec::new(name, specs)
        .version(version)
        .new_family(new_family);
    if !outputs.is_empty() {
        spec = spec.outputs(outputs.iter().cloned());
    }
    let seq = store.apply(&SchemaChange::CreateFunction(spec))?;
    let interface = format!(
        "({}) -> {}",
        inputs
            .iter()
            .map(|i| match &i.default {
                Some(d) => format!("{}={d}", i.name),
                None => i.name.clone(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        if outputs.is_empty() {
            "out".to_string()
        } else {
            outputs.join(", ")
        }
    );
    applied(
        seq,
        format!("created `{name}` version {version} {interface}"),
        format!("`{name}` version {version} already exists with this interface"),
    )
}

pub fn add_input(
    path: &Path,
    function: &str,
    name: &str,
    default: Option<&serde_json::Value>,
    version: Option<u32>,
) -> Result<(), CliError> {
    let store = open_write(path)?;
    let catalog = store.catalog()?;
    let family = resolve_family(&catalog, function)?;
    let f = one_version(&catalog, &family, version)?;
    let seq = store.apply(&SchemaChange::AddInput {
        function: f.tag,
        name: name.to_string(),
        default: default.map(encode_json).transpose()?,
    })?;
    let shown = default.map_or_else(String::new, |d| format!(" (default {d})"));
    applied(
        seq,
        format!(
            "added input `{name}`{shown} to `{}` version {}",
            family.name, f.version
        ),
        format!(
            "`{}` version {} already has input `{name}` with this default",
            family.name, f.version
        ),
    )
}

pub fn rename(path: &Path, old: &str, new: &str) -> Result<(), CliError> {
    let store = open_write(path)?;
    // `old` must be the function's current name; the store checks it in the transaction that
    // renames, and refuses a name it had before (someone renamed it since).
    let seq = store.rename_function(old, new)?;
    applied(
        seq,
        format!("renamed `{old}` to `{new}`"),
        format!("the function is already called `{new}`"),
    )
}

pub fn rename_input(
    path: &Path,
    function: &str,
    old: &str,
    new: &str,
    version: Option<u32>,
) -> Result<(), CliError> {
    let store = open_write(path)?;
    let catalog = store.catalog()?;
    let family = resolve_family(&catalog, function)?;
    let f = one_version(&catalog, &family, version)?;
    let seq = store.rename_input(f.tag, old, new)?;
    applied(
        seq,
        format!(
            "renamed input `{old}` of `{}` version {} to `{new}`",
            family.name, f.version
        ),
        format!("the input is already called `{new}`"),
    )
}

/// The version a change applies to: the one asked for, or the only one there is.
fn one_version<'c>(
    catalog: &'c memotag::Catalog,
    family: &memotag::Family,
    version: Option<u32>,
) -> Result<&'c memotag::Function, CliError> {
    let all = versions(catalog, family, version)?;
    match all.as_slice() {
        [one] => Ok(one),
        many => Err(CliError::new(format!(
            "`{}` has versions {}; say which with --version",
            family.name,
            many.iter()
                .map(|f| f.version.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
