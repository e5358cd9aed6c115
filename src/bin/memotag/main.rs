//! `memotag`: inspect and maintain a store without Python.
//!
//! This file owns the command line (clap), the mapping of errors to one sentence on stderr and an
//! exit code (0 success, 1 findings or an operational error, 2 a usage error), and dispatch. The
//! commands live in `inspect` (read-only listings), `change` (schema changes) and `maintain`
//! (info, check, gc, migrate, set-mode, backup); printing in `output`.

mod change;
mod inspect;
mod maintain;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use memotag::maintenance::MaintenanceError;
use memotag::{BackupError, CallError, CallId, OpenError, SchemaError, StorageError};

use output::Format;

/// Inspect and maintain a memotag store: the functions, calls and schema log it holds, its
/// health, its format and its sharing mode.
///
/// Values on the command line are JSON (`1`, `2.5`, `"text"`, `[1, 2]`, `{"a": 1}`, `null`,
/// `true`), converted to memotag's canonical encoding, so `--where x=1` finds what Python's
/// `f(1)` recorded. Read commands never create or change a store.
#[derive(Debug, Parser)]
#[command(name = "memotag", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct FormatArg {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Format generation, sharing mode, lock state, counts and size on disk.
    Info {
        /// The store file.
        path: PathBuf,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Every function version: inputs (with defaults), outputs, number of results.
    Functions {
        path: PathBuf,
        #[command(flatten)]
        format: FormatArg,
    },
    /// The schema log: every accepted schema change, who made it and when.
    Log {
        path: PathBuf,
        /// Only entries after this sequence number.
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        since: u64,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Recorded results of a function (current or former name), oldest first.
    Calls {
        path: PathBuf,
        /// The function's name; a former name works too.
        function: String,
        /// Only this version (default: every version).
        #[arg(long)]
        version: Option<u32>,
        /// Only calls whose input NAME has this value (JSON); repeatable.
        #[arg(long = "where", value_name = "NAME=VALUE", value_parser = parse_assignment)]
        filters: Vec<Assignment>,
        /// At most this many results.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// One call: its inputs and every recorded result (outputs, code record, conflicts).
    Show {
        path: PathBuf,
        /// The call id (32 hex digits), as `calls` lists it.
        #[arg(value_parser = parse_call_id)]
        call_id: CallId,
        /// Also print the source texts the results' code records mention (memotag never runs
        /// them).
        #[arg(long)]
        sources: bool,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Print a stored source text by its hash, as code records name it (never run).
    Source {
        path: PathBuf,
        /// The source hash (from `code` in `calls` or `show`).
        hash: String,
    },
    /// Results recorded again with other outputs, next to the canonical outputs.
    Conflicts {
        path: PathBuf,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Create a function, or a new version of one (creates the store if the path is missing).
    Create {
        path: PathBuf,
        /// The function's name.
        name: String,
        /// An input, in order: `x`, or `y=VALUE` for one with a default (JSON); repeatable.
        #[arg(long = "input", value_name = "NAME[=VALUE]", value_parser = parse_input)]
        inputs: Vec<InputArg>,
        /// An output name, in order; repeatable (default: a single `out`).
        #[arg(long = "output", value_name = "NAME")]
        outputs: Vec<String>,
        /// The version to create.
        #[arg(long, default_value_t = 1)]
        version: u32,
        /// Create a new function under a name that a renamed function once had.
        #[arg(long)]
        new_family: bool,
    },
    /// Add an input, with its default, to a function version.
    AddInput {
        path: PathBuf,
        function: String,
        /// The new input's name.
        name: String,
        /// Its default (JSON): every call recorded before it existed had this value.
        #[arg(long, value_parser = parse_json)]
        default: Option<serde_json::Value>,
        /// The version to change (needed when the function has several).
        #[arg(long)]
        version: Option<u32>,
    },
    /// Rename a function (every version); results are kept.
    Rename {
        path: PathBuf,
        old: String,
        new: String,
    },
    /// Rename an input of a function version; results are kept.
    RenameInput {
        path: PathBuf,
        function: String,
        old: String,
        new: String,
        /// The version to change (needed when the function has several).
        #[arg(long)]
        version: Option<u32>,
    },
    /// Libraries and versions that recorded results ran with, or (with --library) the results
    /// computed with one library.
    Packages {
        path: PathBuf,
        /// List the results computed with this library instead, as `calls` lists them.
        #[arg(long, value_name = "NAME")]
        library: Option<String>,
        /// Only results computed with this version of the library (needs --library).
        #[arg(long, value_name = "V", requires = "library")]
        version: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Check integrity and memotag's invariants; exits 1 with a list of findings if broken.
    Check {
        path: PathBuf,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Remove values, value files, code records and source texts that nothing refers to.
    Gc {
        path: PathBuf,
        /// List what would be removed, and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Upgrade the store's file format to the newest this memotag knows (forward only).
    Migrate { path: PathBuf },
    /// Switch the store's sharing mode; refused while other clients hold the store.
    SetMode {
        path: PathBuf,
        #[arg(value_enum)]
        mode: ModeArg,
        /// Switch to local mode even on a network filesystem.
        #[arg(long)]
        force: bool,
    },
    /// Copy a store while other clients use it: one consistent view (SQLite's online backup),
    /// with its value files, written beside DEST and renamed into place only when complete.
    Backup {
        /// The store to copy.
        src: PathBuf,
        /// The new store (refused if it exists, unless --force).
        dest: PathBuf,
        /// Replace DEST if it exists (never one a client has open).
        #[arg(long)]
        force: bool,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// A local disk: WAL, readers never wait for writers.
    Local,
    /// A network filesystem: rollback journal, full durability.
    Shared,
}

/// `NAME=VALUE` with VALUE as JSON.
#[derive(Clone, Debug)]
pub struct Assignment {
    pub name: String,
    pub value: serde_json::Value,
}

/// `NAME` or `NAME=VALUE`.
#[derive(Clone, Debug)]
pub struct InputArg {
    pub name: String,
    pub default: Option<serde_json::Value>,
}

fn parse_json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| {
        format!(
            "`{text}` is not JSON ({e}); write numbers as 1 or 2.5, strings in double quotes \
             ('\"text\"' in a shell), lists as [1, 2], and null, true, false"
        )
    })
}

fn parse_assignment(text: &str) -> Result<Assignment, String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE (for example x=1)"))?;
    Ok(Assignment {
        name: name.to_string(),
        value: parse_json(value)?,
    })
}

fn parse_input(text: &str) -> Result<InputArg, String> {
    match text.split_once('=') {
        None => Ok(InputArg {
            name: text.to_string(),
            default: None,
        }),
        Some((name, value)) => Ok(InputArg {
            name: name.to_string(),
            default: Some(parse_json(value)?),
        }),
    }
}

fn parse_call_id(text: &str) -> Result<CallId, String> {
    CallId::from_hex(text)
        .ok_or_else(|| format!("`{text}` is not a call id (32 hex digits, as `calls` lists them)"))
}

/// An error for the user: one sentence to stderr and an exit code.
#[derive(Debug)]
pub struct CliError {
    message: Option<String>,
    code: u8,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> Self {
        CliError {
            message: Some(message.into()),
            code: 1,
        }
    }

    /// Ends the program without a message (stdout was closed).
    pub fn quiet() -> Self {
        CliError {
            message: None,
            code: 0,
        }
    }

    /// Exit 1 after the output already said what is wrong.
    pub fn findings(message: impl Into<String>) -> Self {
        CliError::new(message)
    }
}

impl From<OpenError> for CliError {
    fn from(e: OpenError) -> Self {
        if let OpenError::NotFound { path } = &e {
            return CliError::new(format!(
                "{} does not exist, and only `memotag create` makes a new store; check the path",
                path.display()
            ));
        }
        let hint = match &e {
            OpenError::NotAStore { .. } => {
                "; memotag only opens stores it created, and left this file unchanged: check the path"
            }
            OpenError::Truncated { .. } => "; memotag left it unchanged: restore it from a backup",
            _ => "",
        };
        CliError::new(format!("{e}{hint}"))
    }
}

impl From<SchemaError> for CliError {
    fn from(e: SchemaError) -> Self {
        match e {
            SchemaError::Storage(s) => s.into(),
            SchemaError::NoSuchFunction(_) => {
                CliError::new(format!("{e}; `memotag functions PATH` lists them"))
            }
            SchemaError::NoSuchInput { .. } | SchemaError::NoSuchVersion { .. } => {
                CliError::new(format!("{e}; `memotag functions PATH` shows them"))
            }
            other => CliError::new(format!("the change was rejected: {other}")),
        }
    }
}

impl From<CallError> for CliError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Storage(s) => s.into(),
            other => CliError::new(other.to_string()),
        }
    }
}

impl From<StorageError> for CliError {
    fn from(e: StorageError) -> Self {
        let hint = match &e {
            StorageError::Corrupt(_)
            | StorageError::MissingBlob { .. }
            | StorageError::CorruptBlob { .. } => "; run `memotag check PATH` for details",
            _ => "",
        };
        CliError::new(format!("{e}{hint}"))
    }
}

impl From<BackupError> for CliError {
    fn from(e: BackupError) -> Self {
        match e {
            BackupError::Open(e) => e.into(),
            other => CliError::new(other.to_string()),
        }
    }
}

impl From<MaintenanceError> for CliError {
    fn from(e: MaintenanceError) -> Self {
        match e {
            MaintenanceError::Open(e) => e.into(),
            MaintenanceError::Storage(e) => e.into(),
            other => CliError::new(other.to_string()),
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Info { path, format } => maintain::info(&path, format.format),
        Command::Functions { path, format } => inspect::functions(&path, format.format),
        Command::Log {
            path,
            since,
            format,
        } => inspect::log(&path, since, format.format),
        Command::Calls {
            path,
            function,
            version,
            filters,
            limit,
            format,
        } => inspect::calls(&path, &function, version, &filters, limit, format.format),
        Command::Show {
            path,
            call_id,
            sources,
            format,
        } => inspect::show(&path, &call_id, sources, format.format),
        Command::Source { path, hash } => inspect::source(&path, &hash),
        Command::Conflicts { path, format } => inspect::conflicts(&path, format.format),
        Command::Packages {
            path,
            library,
            version,
            format,
        } => match library {
            Some(library) => {
                inspect::results_with(&path, &library, version.as_deref(), format.format)
            }
            None => inspect::packages(&path, format.format),
        },
        Command::Create {
            path,
            name,
            inputs,
            outputs,
            version,
            new_family,
        } => change::create(&path, &name, &inputs, &outputs, version, new_family),
        Command::AddInput {
            path,
            function,
            name,
            default,
            version,
        } => change::add_input(&path, &function, &name, default.as_ref(), version),
        Command::Rename { path, old, new } => change::rename(&path, &old, &new),
        Command::RenameInput {
            path,
            function,
            old,
            new,
            version,
        } => change::rename_input(&path, &function, &old, &new, version),
        Command::Check { path, format } => maintain::check(&path, format.format),
        Command::Gc {
            path,
            dry_run,
            format,
        } => maintain::gc(&path, dry_run, format.format),
        Command::Migrate { path } => maintain::migrate(&path),
        Command::SetMode { path, mode, force } => {
            let mode = match mode {
                ModeArg::Local => memotag::Mode::Local,
                ModeArg::Shared => memotag::Mode::Shared,
            };
            maintain::set_mode(&path, mode, force)
        }
        Command::Backup { src, dest, force } => maintain::backup(&src, &dest, force),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "memotag", &mut script);
            output::out(&String::from_utf8_lossy(&script))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(message) = e.message {
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "memotag: {message}");
            }
            ExitCode::from(e.code)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
