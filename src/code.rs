//! Code records and the reader's rules for which recorded code is acceptable: pure, no SQL.
//!
//! Every result keeps the whole record of the code it ran with: the function's own source hash,
//! the user code it depends on (name + hash), and library refs. What counts as a hit is decided
//! by the reader, at lookup time (SPEC §4):
//! - the explicit function version is the contract for the function's own semantics, so a
//!   changed body or helper is still a hit — reported, so the bindings can warn — unless the
//!   reader is strict;
//! - declared library refs are gated by the reader's policy; detected ones never gate.
//!
//! memotag never executes stored source; it keeps it so that anyone can see what code ran.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a library ref points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefKind {
    Function,
    Class,
    Module,
}

/// User code a function depends on (a helper function or class, or a module-level constant),
/// by qualified name without its module, and the hash of its normalized source (or value).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UserRef {
    pub name: String,
    pub hash: String,
}

/// Library code: declared (`deps=`, `@memotag.remote`) or detected (installed packages the
/// function references).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LibraryRef {
    pub name: String,
    pub kind: RefKind,
    pub library: String,
    pub version: Option<String>,
    pub source_hash: Option<String>,
    pub declared: bool,
}

/// The code one result ran with. Source texts are not part of it: they are stored once, by hash.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CodeRecord {
    /// Hash of the function's own normalized source; `None` when no code was captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user: Vec<UserRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub libraries: Vec<LibraryRef>,
    /// How the code was captured where it matters (e.g. "class X: source unavailable, hashed
    /// its methods' sources").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The identity of a code record: 16 bytes of blake3 over its canonical JSON; all zeros for the
/// empty record (a result recorded without code).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct CodeHash(pub [u8; 16]);

impl CodeRecord {
    /// The record with its lists in canonical order, so that equal code gets equal hashes.
    pub fn normalized(mut self) -> Self {
        self.user.sort();
        self.user.dedup();
        self.libraries.sort();
        self.libraries.dedup();
        self.notes.sort();
        self.notes.dedup();
        self
    }

    pub fn is_empty(&self) -> bool {
        self.own.is_none()
            && self.user.is_empty()
            && self.libraries.is_empty()
            && self.notes.is_empty()
    }

    /// The record's id; call on a normalized record.
    pub fn hash(&self) -> CodeHash {
        if self.is_empty() {
            return CodeHash([0; 16]);
        }
        let json = serde_json::to_vec(self).expect("code records serialize");
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"memotag/code/1");
        hasher.update(&json);
        let mut id = [0u8; 16];
        id.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        CodeHash(id)
    }

    /// Every source hash the record mentions (own and user code, declared library sources).
    pub fn source_hashes(&self) -> Vec<String> {
        let mut out: Vec<String> = self.own.iter().cloned().collect();
        out.extend(self.user.iter().map(|u| u.hash.clone()));
        out.extend(self.libraries.iter().filter_map(|l| l.source_hash.clone()));
        out.sort();
        out.dedup();
        out
    }
}

/// A source text, stored once by its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceText {
    pub hash: String,
    pub text: String,
}

/// How declared library versions must relate for a result to be acceptable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// The same version (default).
    #[default]
    Exact,
    /// The same major.minor; calendar and unparsable versions fall back to exact.
    SemverPatch,
    /// Recorded with the caller's version or an older one.
    NewerOk,
    /// The library is present, any version.
    Any,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Exact => "exact",
            Policy::SemverPatch => "semver-patch",
            Policy::NewerOk => "newer-ok",
            Policy::Any => "any",
        }
    }
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "exact" => Ok(Policy::Exact),
            "semver-patch" => Ok(Policy::SemverPatch),
            "newer-ok" => Ok(Policy::NewerOk),
            "any" => Ok(Policy::Any),
            other => Err(format!(
                "unknown policy `{other}` (expected exact, semver-patch, newer-ok or any)"
            )),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reader's side of a lookup: its own code and its rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reader {
    pub code: CodeRecord,
    pub policy: Policy,
    pub verify_source_hash: bool,
    /// Any change to the function's own code or its user code is a miss.
    pub strict: bool,
}

/// Whether a recorded result's code is acceptable to a reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Acceptable; `changed` lists the user code that differs from the reader's (for a warning).
    Accept { changed: Vec<String> },
    /// Not acceptable, and why.
    Reject(String),
}

/// Judges a recorded code record against a reader. Detected library refs never gate.
pub fn judge(reader: &Reader, recorded: &CodeRecord) -> Verdict {
    for dep in recorded.libraries.iter().filter(|l| l.declared) {
        let current = reader
            .code
            .libraries
            .iter()
            .find(|l| l.library == dep.library && l.name == dep.name);
        let Some(current) = current else {
            return Verdict::Reject(format!(
                "declared dependency `{}` ({}) is not present",
                dep.name, dep.library
            ));
        };
        if let Err(reason) = versions_acceptable(
            reader.policy,
            dep.version.as_deref(),
            current.version.as_deref(),
        ) {
            return Verdict::Reject(format!("`{}` from {}: {reason}", dep.name, dep.library));
        }
        let same_version = dep.version == current.version;
        if reader.verify_source_hash
            && same_version
            && dep.source_hash.is_some()
            && current.source_hash.is_some()
            && dep.source_hash != current.source_hash
        {
            return Verdict::Reject(format!(
                "`{}` from {} {} has another source hash (a local patch)",
                dep.name,
                dep.library,
                dep.version.as_deref().unwrap_or("?")
            ));
        }
    }
    if reader.strict && recorded.is_empty() && !reader.code.is_empty() {
        return Verdict::Reject(
            "recorded without code, so a strict reader cannot tell it is the same".to_string(),
        );
    }
    let changed = user_code_changes(&reader.code, recorded);
    if reader.strict && !changed.is_empty() {
        return Verdict::Reject(format!("code changed: {}", changed.join(", ")));
    }
    Verdict::Accept { changed }
}

/// What differs between the reader's user code and a recorded one (empty records, i.e. results
/// recorded without code, differ from nothing).
pub fn user_code_changes(reader: &CodeRecord, recorded: &CodeRecord) -> Vec<String> {
    if recorded.is_empty() || reader.is_empty() {
        return Vec::new();
    }
    let mut changed = Vec::new();
    if reader.own != recorded.own {
        changed.push("the function's own code".to_string());
    }
    for theirs in &recorded.user {
        match reader.user.iter().find(|u| u.name == theirs.name) {
            Some(ours) if ours.hash == theirs.hash => {}
            Some(_) => changed.push(format!("helper `{}`", theirs.name)),
            None => changed.push(format!("helper `{}` (no longer used)", theirs.name)),
        }
    }
    for ours in &reader.user {
        if !recorded.user.iter().any(|u| u.name == ours.name) {
            changed.push(format!("helper `{}` (new)", ours.name));
        }
    }
    changed
}

/// A version as the policies compare it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParsedVersion {
    /// A PEP 440 version with an ordinary release number.
    Pep440(pep440_rs::Version),
    /// A semantic version that is not valid PEP 440.
    Semver(semver::Version),
    /// A calendar version (first release component looks like a year): compared by equality.
    Calendar(String),
    /// Not parsable: compared by equality.
    Opaque(String),
}

impl ParsedVersion {
    pub fn parse(s: &str) -> ParsedVersion {
        let s = s.trim();
        if let Ok(v) = pep440_rs::Version::from_str(s) {
            if v.release().first().is_some_and(|major| *major >= 1900) {
                return ParsedVersion::Calendar(s.to_string());
            }
            return ParsedVersion::Pep440(v);
        }
        if let Ok(v) = semver::Version::parse(s.trim_start_matches('v')) {
            return ParsedVersion::Semver(v);
        }
        ParsedVersion::Opaque(s.to_string())
    }

    /// (major, minor) for the semver-patch policy.
    fn major_minor(&self) -> Option<(u64, u64)> {
        match self {
            ParsedVersion::Pep440(v) => {
                let r = v.release();
                Some((
                    r.first().copied().unwrap_or(0),
                    r.get(1).copied().unwrap_or(0),
                ))
            }
            ParsedVersion::Semver(v) => Some((v.major, v.minor)),
            _ => None,
        }
    }

    fn compare(&self, other: &ParsedVersion) -> Option<Ordering> {
        match (self, other) {
            (ParsedVersion::Pep440(a), ParsedVersion::Pep440(b)) => Some(a.cmp(b)),
            (ParsedVersion::Semver(a), ParsedVersion::Semver(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    fn by_equality(&self) -> bool {
        matches!(self, ParsedVersion::Calendar(_) | ParsedVersion::Opaque(_))
    }
}

/// Whether a result recorded with library version `recorded` is acceptable to a caller that has
/// `current`, under `policy`. `Err` says why not (and notes equality fallbacks).
pub fn versions_acceptable(
    policy: Policy,
    recorded: Option<&str>,
    current: Option<&str>,
) -> Result<(), String> {
    if policy == Policy::Any {
        return Ok(());
    }
    let (Some(recorded), Some(current)) = (recorded, current) else {
        return if recorded == current {
            Ok(())
        } else {
            Err(format!(
                "version {} recorded, {} here",
                recorded.unwrap_or("unknown"),
                current.unwrap_or("unknown")
            ))
        };
    };
    let (r, c) = (
        ParsedVersion::parse(recorded),
        ParsedVersion::parse(current),
    );
    let equal = match r.compare(&c) {
        Some(ordering) => ordering == Ordering::Equal,
        None => recorded == current,
    };
    if equal {
        return Ok(());
    }
    let fallback = r.by_equality() || c.by_equality() || r.compare(&c).is_none();
    if fallback {
        return Err(format!(
            "version {recorded} recorded, {current} here (calendar or unparsable versions compare by equality)"
        ));
    }
    let ok = match policy {
        Policy::Exact => false,
        Policy::SemverPatch => r.major_minor() == c.major_minor(),
        Policy::NewerOk => r.compare(&c) == Some(Ordering::Less),
        Policy::Any => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "version {recorded} recorded, {current} here (policy {policy})"
        ))
    }
}
