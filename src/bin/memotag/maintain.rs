//! Maintenance commands: `info`, `check`, `gc`, `migrate`, `set-mode`, `backup`, on top of
//! `memotag::maintenance`. Long work draws a progress bar on stderr when it is a terminal, and
//! nothing when piped.
//!
//! JSON: `info` is one object (`path, format_generation, supported_generation, mode, mode_reason,
//! journal, filesystem: {kind (local, network or unknown), name}, lock, counts: {families,
//! functions, results, values,
//! values_in_files, conflicts, log_entries}, size: {database, wal, blobs, total}, store_id,
//! created_at`); `check` rows are `kind, message`; `gc` rows are `kind` (`value`, `file`,
//! `code` or `source`), `id, codec, size, preview, path` (null where it does not apply; a code
//! record's `id` is its code id and its preview its short form, a source's `id` its hash and its
//! preview its first line).

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use memotag::maintenance::{self, MigrateOutcome, Progress, SetModeOutcome};
use memotag::storage::FilesystemKind;
use memotag::Mode;

use crate::output::{bytes, listing, new_table, out, short_code, time, Format, Row};
use crate::CliError;

/// A progress bar on stderr, drawn only when stderr is a terminal.
#[derive(Default)]
struct Bar(Option<ProgressBar>);

impl Progress for Bar {
    fn start(&mut self, what: &str, total: u64) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::new(total);
        if let Ok(style) =
            ProgressStyle::with_template("{msg:>18} [{bar:40}] {human_pos}/{human_len} {eta}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        self.0 = Some(bar);
    }

    fn advance(&mut self, n: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(n);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

// ---- info ------------------------------------------------------------------------------------

#[derive(Serialize)]
struct InfoJson {
    path: String,
    format_generation: u32,
    supported_generation: u32,
    mode: &'static str,
    mode_reason: Option<String>,
    journal: &'static str,
    filesystem: FilesystemJson,
    lock: &'static str,
    lock_method: &'static str,
    lease_holder: Option<String>,
    last_lock_break: Option<String>,
    counts: CountsJson,
    size: SizeJson,
    store_id: Option<String>,
    created_at: Option<String>,
    protocol: u32,
    read_level: u32,
    write_level: u32,
    written_by: Option<String>,
    /// method → generations the store offers.
    procedures: std::collections::BTreeMap<String, Vec<u32>>,
}

#[derive(Serialize)]
struct FilesystemJson {
    kind: &'static str,
    name: String,
}

#[derive(Serialize)]
struct CountsJson {
    families: u64,
    functions: u64,
    results: u64,
    values: u64,
    values_in_files: u64,
    conflicts: u64,
    log_entries: u64,
}

#[derive(Serialize)]
struct SizeJson {
    database: u64,
    wal: u64,
    blobs: u64,
    total: u64,
}

pub fn info(path: &Path, format: Format) -> Result<(), CliError> {
    let info = maintenance::info(path)?;
    let (fs_kind, fs_name) = match &info.filesystem {
        FilesystemKind::Local(name) => ("local", name.clone()),
        FilesystemKind::Network(name) => ("network", name.clone()),
        FilesystemKind::Unknown(what) => ("unknown", what.clone()),
    };
    let c = &info.counts;
    let json = InfoJson {
        path: info.path.display().to_string(),
        format_generation: info.format_generation,
        supported_generation: info.supported_generation,
        mode: info.mode.as_str(),
        mode_reason: info.mode_reason.clone(),
        journal: info.journal,
        filesystem: FilesystemJson {
            kind: fs_kind,
            name: fs_name.clone(),
        },
        lock: info.lock.as_str(),
        lock_method: info.lock_method.as_str(),
        lease_holder: info.lease_holder.clone(),
        last_lock_break: info.last_lock_break.as_ref().map(ToString::to_string),
        counts: CountsJson {
            families: c.families,
            functions: c.functions,
            results: c.results,
            values: c.values,
            values_in_files: c.values_in_files,
            conflicts: c.conflicts,
            log_entries: c.log_entries,
        },
        size: SizeJson {
            database: info.sizes.database,
            wal: info.sizes.wal,
            blobs: info.sizes.blobs,
            total: info.sizes.total(),
        },
        store_id: info.store_id.clone(),
        created_at: info.created_at_ms.map(time),
        protocol: info.handshake.protocol,
        read_level: info.handshake.read_level,
        write_level: info.handshake.write_level,
        written_by: info.handshake.library_version.clone(),
        procedures: info
            .handshake
            .menu
            .0
            .iter()
            .map(|(m, g)| (m.clone(), g.iter().copied().collect()))
            .collect(),
    };
    let fields: Vec<(&str, String)> = vec![
        ("path", json.path.clone()),
        (
            "format generation",
            format!(
                "{} (this memotag reads up to {})",
                json.format_generation, json.supported_generation
            ),
        ),
        ("mode", format!("{} ({} journal)", json.mode, json.journal)),
        (
            "mode chosen",
            json.mode_reason.clone().unwrap_or_else(|| {
                "not recorded (a store made before memotag recorded it)".to_string()
            }),
        ),
        ("filesystem", format!("{fs_kind} ({fs_name})")),
        (
            "lock",
            match &json.lease_holder {
                Some(holder) => format!("held by {holder} (lock method {})", json.lock_method),
                None => format!("{} (lock method {})", json.lock, json.lock_method),
            },
        ),
        (
            "last broken lock",
            json.last_lock_break
                .clone()
                .unwrap_or_else(|| "none".to_string()),
        ),
        ("families", c.families.to_string()),
        ("function versions", c.functions.to_string()),
        ("results", c.results.to_string()),
        (
            "values",
            format!("{} ({} kept as files)", c.values, c.values_in_files),
        ),
        ("conflicts", c.conflicts.to_string()),
        ("log entries", c.log_entries.to_string()),
        (
            "size on disk",
            format!(
                "{} (database {}, wal {}, value files {})",
                bytes(json.size.total),
                bytes(json.size.database),
                bytes(json.size.wal),
                bytes(json.size.blobs)
            ),
        ),
        ("store id", json.store_id.clone().unwrap_or_default()),
        ("created", json.created_at.clone().unwrap_or_default()),
        (
            "protocol",
            format!(
                "{} (read level {}, write level {}; written by memotag {})",
                json.protocol,
                json.read_level,
                json.write_level,
                json.written_by.as_deref().unwrap_or("before 0.1")
            ),
        ),
        ("procedures", info.handshake.menu.to_string()),
    ];
    match format {
        Format::Json => out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&json).map_err(|e| CliError::new(e.to_string()))?
        )),
        Format::Csv => {
            let mut text = String::from("field,value\n");
            let mut writer = csv::Writer::from_writer(Vec::new());
            for (k, v) in &fields {
                writer
                    .write_record([k, v.as_str()])
                    .map_err(|e| CliError::new(e.to_string()))?;
            }
            let body = writer
                .into_inner()
                .map_err(|e| CliError::new(e.to_string()))?;
            text.push_str(&String::from_utf8_lossy(&body));
            out(&text)
        }
        Format::Table => {
            let mut table = new_table();
            for (k, v) in fields {
                table.add_row(vec![k.to_string(), v]);
            }
            out(&format!("{table}\n"))
        }
    }
}

// ---- check -----------------------------------------------------------------------------------

#[derive(Serialize)]
struct FindingRow {
    kind: &'static str,
    message: String,
}

impl Row for FindingRow {
    fn header() -> &'static [&'static str] {
        &["kind", "message"]
    }

    fn cells(&self) -> Vec<String> {
        vec![self.kind.to_string(), self.message.clone()]
    }
}

pub fn check(path: &Path, format: Format) -> Result<(), CliError> {
    let findings = maintenance::check(path, &mut Bar::default())?;
    let rows: Vec<FindingRow> = findings
        .into_iter()
        .map(|f| FindingRow {
            kind: f.kind,
            message: f.message,
        })
        .collect();
    listing(
        format,
        &rows,
        &format!("ok: {} passed every check", path.display()),
    )?;
    if rows.is_empty() {
        Ok(())
    } else {
        Err(CliError::findings(format!(
            "{} has {} problem{} (listed above)",
            path.display(),
            rows.len(),
            if rows.len() == 1 { "" } else { "s" }
        )))
    }
}

// ---- gc --------------------------------------------------------------------------------------

#[derive(Serialize, PartialEq, Eq)]
struct GcRow {
    kind: &'static str,
    id: String,
    codec: Option<&'static str>,
    size: u64,
    preview: Option<String>,
    path: Option<String>,
}

impl Row for GcRow {
    fn header() -> &'static [&'static str] {
        &["kind", "id", "codec", "size", "preview", "path"]
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.kind.to_string(),
            self.id.clone(),
            self.codec.unwrap_or_default().to_string(),
            self.size.to_string(),
            self.preview.clone().unwrap_or_default(),
            self.path.clone().unwrap_or_default(),
        ]
    }
}

pub fn gc(path: &Path, dry_run: bool, format: Format) -> Result<(), CliError> {
    let report = maintenance::gc(path, dry_run, &mut Bar::default())?;
    let garbage = &report.garbage;
    let mut rows = Vec::new();
    for v in &garbage.values {
        rows.push(GcRow {
            kind: "value",
            id: v.id.to_hex(),
            codec: v.codec.map(|c| c.as_str()),
            size: v.size,
            preview: Some(v.preview.clone()),
            path: v.file.as_ref().map(|f| f.path.display().to_string()),
        });
    }
    for f in &garbage.orphan_files {
        rows.push(GcRow {
            kind: "file",
            id: f.id.to_hex(),
            codec: None,
            size: f.size,
            preview: None,
            path: Some(f.path.display().to_string()),
        });
    }
    for c in &garbage.codes {
        rows.push(GcRow {
            kind: "code",
            id: c.id.to_string(),
            codec: None,
            size: c.size,
            preview: Some(match &c.record {
                Some(record) => format!("{} (hash {})", short_code(record), c.hash),
                None => format!("unreadable (hash {})", c.hash),
            }),
            path: None,
        });
    }
    for s in &garbage.sources {
        rows.push(GcRow {
            kind: "source",
            id: s.hash.clone(),
            codec: None,
            size: s.size,
            preview: Some(s.first_line.clone()),
            path: None,
        });
    }
    listing(format, &rows, "nothing to collect")?;
    let files = garbage.files().count();
    let freed: u64 = rows.iter().map(|r| r.size).sum();
    if !garbage.is_empty() {
        let verb = if dry_run { "would remove" } else { "removed" };
        let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        eprintln!(
            "memotag: {verb} {}, {}, {} and {} ({})",
            count(garbage.values.len(), "value"),
            count(files, "file"),
            count(garbage.codes.len(), "code record"),
            count(garbage.sources.len(), "source text"),
            bytes(freed)
        );
    }
    if !report.file_errors.is_empty() {
        for e in &report.file_errors {
            eprintln!("memotag: {e}");
        }
        return Err(CliError::new(format!(
            "{} value file{} could not be removed (listed above); run gc again",
            report.file_errors.len(),
            if report.file_errors.len() == 1 {
                ""
            } else {
                "s"
            }
        )));
    }
    Ok(())
}

// ---- migrate and set-mode --------------------------------------------------------------------

pub fn migrate(path: &Path) -> Result<(), CliError> {
    let spinner = std::io::stderr().is_terminal().then(|| {
        let s = ProgressBar::new_spinner();
        s.set_message("migrating");
        s.enable_steady_tick(Duration::from_millis(100));
        s
    });
    let outcome = maintenance::migrate(path);
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    match outcome? {
        MigrateOutcome::AlreadyCurrent { generation } => out(&format!(
            "{} is at format generation {generation}, the newest this memotag knows; nothing to do\n",
            path.display()
        )),
        MigrateOutcome::Migrated { from, to, applied } => out(&format!(
            "migrated {} from format generation {from} to {to} ({})\n",
            path.display(),
            applied.join(", ")
        )),
    }
}

pub fn set_mode(path: &Path, mode: Mode, force: bool) -> Result<(), CliError> {
    match maintenance::set_mode(path, mode, force)? {
        SetModeOutcome::AlreadyInMode(mode) => out(&format!(
            "{} is already in {mode} mode; nothing changed\n",
            path.display()
        )),
        SetModeOutcome::Switched { from, to } => {
            let what = match to {
                Mode::Local => "WAL journal, synchronous=NORMAL",
                Mode::Shared => "rollback journal, synchronous=FULL, no mmap",
            };
            out(&format!(
                "switched {} from {from} to {to} mode ({what})\n",
                path.display()
            ))
        }
    }
}

// ---- backup ----------------------------------------------------------------------------------

pub fn backup(src: &Path, dest: &Path, force: bool) -> Result<(), CliError> {
    let spinner = std::io::stderr().is_terminal().then(|| {
        let s = ProgressBar::new_spinner();
        s.set_message("copying");
        s.enable_steady_tick(Duration::from_millis(100));
        s
    });
    let report = maintenance::backup(src, dest, force);
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let report = report?;
    out(&format!(
        "copied {} to {} ({} mode): {} results, {} values ({} in value files), {} in {:.2} s\n",
        src.display(),
        report.dest.display(),
        report.mode,
        report.results,
        report.values,
        report.value_files,
        bytes(report.bytes),
        report.elapsed.as_secs_f64()
    ))
}
