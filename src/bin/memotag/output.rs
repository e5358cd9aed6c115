//! How the CLI prints: listings as a table that fits the terminal, JSON (an array with one object
//! per row) or CSV; values as JSON when canonical and as their preview otherwise; times as
//! RFC 3339 UTC. It owns no store logic.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};

use clap::ValueEnum;
use comfy_table::{presets, ContentArrangement, Table};
use serde::ser::SerializeMap;
use serde::Serialize;
use serde_json::{json, Value as J};

use memotag::value::decode_canonical;
use memotag::{CodeRecord, Codec, Store, ValueId};

use crate::CliError;

/// How a listing is printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table that fits the terminal.
    #[default]
    Table,
    /// A JSON array with one object per row (stable field names, for scripts).
    Json,
    /// RFC 4180 CSV with a header row; cells as in the table.
    Csv,
}

/// One row of a listing: serialized as a JSON object, shown as cells in tables and CSV.
pub trait Row: Serialize {
    fn header() -> &'static [&'static str];
    fn cells(&self) -> Vec<String>;
}

/// Writes to stdout; a closed pipe (`memotag calls … | head`) ends the program quietly.
pub fn out(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                CliError::quiet()
            } else {
                CliError::new(format!("cannot write to standard output: {e}"))
            }
        })
}

/// Prints a listing; `empty` is the sentence a table shows when there are no rows.
pub fn listing<R: Row>(format: Format, rows: &[R], empty: &str) -> Result<(), CliError> {
    match format {
        Format::Json => {
            let text = serde_json::to_string_pretty(rows)
                .map_err(|e| CliError::new(format!("cannot render JSON: {e}")))?;
            out(&format!("{text}\n"))
        }
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(Vec::new());
            let csv_error = |e: csv::Error| CliError::new(format!("cannot render CSV: {e}"));
            writer.write_record(R::header()).map_err(csv_error)?;
            for row in rows {
                writer.write_record(row.cells()).map_err(csv_error)?;
            }
            let bytes = writer
                .into_inner()
                .map_err(|e| CliError::new(format!("cannot render CSV: {e}")))?;
            out(&String::from_utf8_lossy(&bytes))
        }
        Format::Table if rows.is_empty() => out(&format!("{empty}\n")),
        Format::Table => {
            let mut table = new_table();
            table.set_header(R::header().iter().map(|h| h.replace('_', " ")));
            for row in rows {
                table.add_row(row.cells());
            }
            out(&format!("{table}\n"))
        }
    }
}

/// A table with our look, as wide as the terminal when stdout is one.
pub fn new_table() -> Table {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED);
    if std::io::stdout().is_terminal() {
        table.set_content_arrangement(ContentArrangement::Dynamic);
    }
    table
}

/// A value as listings show it: `json` for JSON output, `text` (the preview) for tables and CSV.
#[derive(Clone, Debug)]
pub struct Shown {
    pub json: J,
    pub text: String,
}

/// Values larger than this are shown by their preview, so that listings never read big values.
const INLINE_LIMIT: u64 = 64 * 1024;

/// Looks values up once per command.
#[derive(Default)]
pub struct Values {
    cache: HashMap<ValueId, Shown>,
}

impl Values {
    /// A canonical (`cbor`) value shows as its JSON rendering; any other value, or one too large
    /// to read for a listing, as `{"$codec", "$size", "$preview"}`; a value missing from the
    /// store as `{"$missing": id}`.
    pub fn show(&mut self, store: &Store, id: &ValueId) -> Result<Shown, CliError> {
        if let Some(shown) = self.cache.get(id) {
            return Ok(shown.clone());
        }
        let shown = match store.value_summary(id, INLINE_LIMIT)? {
            None => Shown {
                json: json!({ "$missing": id.to_hex() }),
                text: format!("<missing value {id}>"),
            },
            Some(summary) => {
                let decoded = match (summary.codec, &summary.bytes) {
                    (Some(Codec::Cbor), Some(bytes)) => decode_canonical(bytes).ok(),
                    _ => None,
                };
                match decoded {
                    Some(value) => Shown {
                        json: value.to_json(),
                        text: summary.preview,
                    },
                    None => Shown {
                        json: json!({
                            "$codec": summary.codec.map_or("unknown", Codec::as_str),
                            "$size": summary.size,
                            "$preview": summary.preview,
                        }),
                        text: summary.preview,
                    },
                }
            }
        };
        self.cache.insert(*id, shown.clone());
        Ok(shown)
    }

    /// Named values (inputs or outputs), in order.
    pub fn named(
        &mut self,
        store: &Store,
        pairs: impl IntoIterator<Item = (String, ValueId)>,
    ) -> Result<Named, CliError> {
        let mut out = Vec::new();
        for (name, id) in pairs {
            out.push((name, self.show(store, &id)?));
        }
        Ok(Named(out))
    }
}

/// Names and values in a fixed order: a JSON object whose keys keep that order.
#[derive(Clone, Debug, Default)]
pub struct Named(pub Vec<(String, Shown)>);

impl Named {
    /// `x=1, y='a'`
    pub fn text(&self) -> String {
        self.0
            .iter()
            .map(|(name, v)| format!("{name}={}", v.text))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Serialize for Named {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, &value.json)?;
        }
        map.end()
    }
}

/// A code record in a few words: `own 1a2b3c4d, 2 helpers, nnterp==0.1.0` (the own source hash
/// prefix, the number of helpers, libraries as name==version, `?` for an unknown version);
/// `none` for the empty record (results recorded without code).
pub fn short_code(record: &CodeRecord) -> String {
    if record.is_empty() {
        return "none".to_string();
    }
    let mut parts = Vec::new();
    if let Some(own) = &record.own {
        parts.push(format!("own {}", own.get(..8).unwrap_or(own)));
    }
    match record.user.len() {
        0 => {}
        1 => parts.push("1 helper".to_string()),
        n => parts.push(format!("{n} helpers")),
    }
    let mut libraries: Vec<String> = record
        .libraries
        .iter()
        .map(|l| format!("{}=={}", l.library, l.version.as_deref().unwrap_or("?")))
        .collect();
    libraries.sort();
    libraries.dedup();
    parts.extend(libraries);
    parts.join(", ")
}

/// Unix milliseconds as RFC 3339 UTC, e.g. `2026-05-01T12:00:00.123Z`.
pub fn time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = memotag::schema::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A byte count for people: `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_times_as_rfc3339_utc() {
        assert_eq!(super::time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::time(951_782_400_123), "2000-02-29T00:00:00.123Z");
    }
}
