//! The catalog of function families, function versions and inputs, and the rules for changing it.
//!
//! This module owns what a schema change means and whether it is allowed. It is pure: no SQL, no
//! I/O, no clocks, no randomness (new tags come from the caller). The catalog at log sequence `N`
//! is a function of the log entries up to `N`: [`Catalog::apply`] replays one entry, and the
//! storage layer persists the same entries. It does not own how changes are serialized between
//! processes (that is `storage`) or how calls are identified (that is `calls`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::SchemaError;
use crate::value::{EncodedValue, ValueId};

macro_rules! tag_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The 16 bytes stored in the file.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// Rebuilds a tag from the 16 bytes stored in the file.
            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                $name(Uuid::from_bytes(bytes))
            }

            /// Lowercase hex without dashes, used in SQL identifiers.
            pub fn simple(&self) -> String {
                self.0.simple().to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok($name(Uuid::parse_str(s)?))
            }
        }
    };
}

tag_type!(
    /// The immutable identity of a function family: every version of one name.
    FamilyTag
);
tag_type!(
    /// The immutable identity of one function version (one memo table).
    FunctionTag
);
tag_type!(
    /// The immutable identity of one input of one function version (one memo table column).
    InputTag
);

/// A name something held, from the log entry that gave it up to (not including) the one that
/// took it away.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameSpan {
    pub name: String,
    pub from_seq: u64,
    pub to_seq: Option<u64>,
}

/// All versions of a function that share a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Family {
    pub tag: FamilyTag,
    pub name: String,
    pub names: Vec<NameSpan>,
    pub versions: BTreeMap<u32, FunctionTag>,
    pub created_seq: u64,
}

/// One version of a function: its inputs (in position order) and its output names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub tag: FunctionTag,
    pub family: FamilyTag,
    pub version: u32,
    pub inputs: Vec<Input>,
    pub outputs: Vec<String>,
    pub created_seq: u64,
}

impl Function {
    /// The input with this tag.
    pub fn input(&self, tag: InputTag) -> Option<&Input> {
        self.inputs.iter().find(|i| i.tag == tag)
    }

    /// The input currently called `name`.
    pub fn input_named(&self, name: &str) -> Option<&Input> {
        self.inputs.iter().find(|i| i.name == name)
    }
}

/// One input of one function version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub tag: InputTag,
    pub name: String,
    pub position: u32,
    pub default: Option<ValueId>,
    pub created_seq: u64,
    pub names: Vec<NameSpan>,
}

/// One input as a client declares it when creating a function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSpec {
    pub name: String,
    pub default: Option<EncodedValue>,
}

impl InputSpec {
    /// An input every call must give a value for.
    pub fn required(name: impl Into<String>) -> Self {
        InputSpec {
            name: name.into(),
            default: None,
        }
    }

    /// An input whose value is `default` when a call does not give one.
    pub fn with_default(name: impl Into<String>, default: EncodedValue) -> Self {
        InputSpec {
            name: name.into(),
            default: Some(default),
        }
    }
}

/// What a client asks to create: a new function, or a new version of an existing family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionSpec {
    pub name: String,
    pub version: u32,
    pub inputs: Vec<InputSpec>,
    pub outputs: Vec<String>,
    /// Create a new family under a name that a renamed family once had, instead of being told
    /// about the rename.
    pub new_family: bool,
}

impl FunctionSpec {
    /// Version 1 of `name` with a single output called `out`.
    pub fn new(name: impl Into<String>, inputs: Vec<InputSpec>) -> Self {
        FunctionSpec {
            name: name.into(),
            version: 1,
            inputs,
            outputs: vec!["out".to_string()],
            new_family: false,
        }
    }

    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    pub fn outputs<S: Into<String>>(mut self, outputs: impl IntoIterator<Item = S>) -> Self {
        self.outputs = outputs.into_iter().map(Into::into).collect();
        self
    }

    pub fn new_family(mut self, new_family: bool) -> Self {
        self.new_family = new_family;
        self
    }
}

/// A schema change as a client requests it. Default values travel encoded, so that the store can
/// keep them in the same transaction as the change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SchemaChange {
    /// Create a function, or a new version of an existing family, by name.
    CreateFunction(FunctionSpec),
    /// Create a new version of the family with this tag (whatever it is called by now).
    CreateVersion {
        family: FamilyTag,
        version: u32,
        inputs: Vec<InputSpec>,
        outputs: Vec<String>,
    },
    /// Add an input, which must have a default, to one function version.
    AddInput {
        function: FunctionTag,
        name: String,
        default: Option<EncodedValue>,
    },
    /// Rename a family (every version).
    RenameFunction { family: FamilyTag, to: String },
    /// Rename one input of one function version.
    RenameInput { input: InputTag, to: String },
}

/// One input as the log records it, with its tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedInput {
    pub tag: InputTag,
    pub name: String,
    pub default: Option<ValueId>,
}

/// A schema change as the log records it: every tag it introduced, so that replaying it needs
/// nothing else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LoggedChange {
    CreateFunction {
        family: FamilyTag,
        function: FunctionTag,
        name: String,
        version: u32,
        inputs: Vec<LoggedInput>,
        outputs: Vec<String>,
    },
    NewVersion {
        family: FamilyTag,
        function: FunctionTag,
        version: u32,
        inputs: Vec<LoggedInput>,
        outputs: Vec<String>,
    },
    AddInput {
        function: FunctionTag,
        input: InputTag,
        name: String,
        default: ValueId,
    },
    RenameFunction {
        family: FamilyTag,
        from: String,
        to: String,
    },
    RenameInput {
        function: FunctionTag,
        input: InputTag,
        from: String,
        to: String,
    },
}

impl LoggedChange {
    /// The short kind stored next to the change in the log.
    pub fn kind(&self) -> &'static str {
        match self {
            LoggedChange::CreateFunction { .. } => "create_function",
            LoggedChange::NewVersion { .. } => "new_version",
            LoggedChange::AddInput { .. } => "add_input",
            LoggedChange::RenameFunction { .. } => "rename_function",
            LoggedChange::RenameInput { .. } => "rename_input",
        }
    }
}

/// What validating a change against the catalog decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The change already took effect: a retry, accepted without a new log entry.
    AlreadyApplied,
    /// The change is valid and becomes this log entry.
    Apply(LoggedChange),
}

/// How a name was resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution<T> {
    /// Something has this name now.
    Current(T),
    /// Nothing has this name now, but `T` once had it and is now called `to`.
    Renamed { from: String, to: String, target: T },
}

impl<T> Resolution<T> {
    pub fn target(&self) -> &T {
        match self {
            Resolution::Current(t) | Resolution::Renamed { target: t, .. } => t,
        }
    }

    pub fn into_target(self) -> T {
        match self {
            Resolution::Current(t) | Resolution::Renamed { target: t, .. } => t,
        }
    }
}

/// The log entry that gave a function or input its current name: what an error names when a
/// change refers to it by a name it had before. The pure rules know the sequence number and the
/// names; the session fills in who made the change and when, from the same log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenameRecord {
    pub seq: u64,
    pub from: String,
    pub to: String,
    /// The client that made the rename (`user@host`), once read from the log.
    pub client: Option<String>,
    /// When, in milliseconds since the Unix epoch, once read from the log.
    pub time_ms: Option<i64>,
}

impl fmt::Display for RenameRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "renamed from `{}` to `{}`", self.from, self.to)?;
        if let Some(client) = &self.client {
            write!(f, " by {client}")?;
        }
        if let Some(ms) = self.time_ms {
            write!(f, " at {}", utc_time(ms))?;
        }
        write!(f, " (schema log entry {})", self.seq)
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` for milliseconds since the Unix epoch.
fn utc_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm), for
/// messages that name a time (here and in the CLI).
#[doc(hidden)]
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The rename that gave these spans their last name.
fn last_rename(spans: &[NameSpan]) -> RenameRecord {
    let n = spans.len();
    let last = &spans[n - 1];
    RenameRecord {
        seq: last.from_seq,
        from: if n >= 2 {
            spans[n - 2].name.clone()
        } else {
            last.name.clone()
        },
        to: last.name.clone(),
        client: None,
        time_ms: None,
    }
}

/// Longest name accepted for a function, input or output.
pub const MAX_NAME_LEN: usize = 256;

/// The whole schema at one log sequence number.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    seq: u64,
    families: BTreeMap<FamilyTag, Family>,
    functions: BTreeMap<FunctionTag, Function>,
    input_owner: HashMap<InputTag, FunctionTag>,
    family_by_name: HashMap<String, FamilyTag>,
}

impl Catalog {
    /// The empty catalog, at sequence 0.
    pub fn new() -> Self {
        Catalog::default()
    }

    /// Rebuilds a catalog from log entries `1..=n`, in order.
    pub fn replay<'a>(
        entries: impl IntoIterator<Item = (u64, &'a LoggedChange)>,
    ) -> Result<Self, SchemaError> {
        let mut catalog = Catalog::new();
        for (seq, change) in entries {
            catalog.apply(seq, change)?;
        }
        Ok(catalog)
    }

    /// The sequence number of the last log entry applied.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn families(&self) -> impl Iterator<Item = &Family> {
        self.families.values()
    }

    pub fn functions(&self) -> impl Iterator<Item = &Function> {
        self.functions.values()
    }

    pub fn family(&self, tag: FamilyTag) -> Option<&Family> {
        self.families.get(&tag)
    }

    pub fn function(&self, tag: FunctionTag) -> Option<&Function> {
        self.functions.get(&tag)
    }

    /// The function version that owns this input.
    pub fn input_owner(&self, tag: InputTag) -> Option<&Function> {
        self.input_owner
            .get(&tag)
            .and_then(|f| self.functions.get(f))
    }

    /// The family currently called `name`.
    pub fn family_named(&self, name: &str) -> Option<&Family> {
        self.family_by_name
            .get(name)
            .and_then(|t| self.families.get(t))
    }

    /// The name of the family this function belongs to.
    pub fn function_name(&self, tag: FunctionTag) -> Option<&str> {
        let function = self.functions.get(&tag)?;
        self.families.get(&function.family).map(|f| f.name.as_str())
    }

    /// One version of the family currently called `name`.
    pub fn function_named(&self, name: &str, version: u32) -> Option<&Function> {
        let family = self.family_named(name)?;
        family
            .versions
            .get(&version)
            .and_then(|t| self.functions.get(t))
    }

    /// Resolves a family name: the family that has it now, or else the family that had it most
    /// recently (reported as renamed).
    pub fn resolve_family(&self, name: &str) -> Option<Resolution<&Family>> {
        if let Some(family) = self.family_named(name) {
            return Some(Resolution::Current(family));
        }
        self.families
            .values()
            .filter_map(|f| latest_span_named(&f.names, name).map(|span| (span, f)))
            .max_by_key(|(span, _)| span.to_seq)
            .map(|(_, family)| Resolution::Renamed {
                from: name.to_string(),
                to: family.name.clone(),
                target: family,
            })
    }

    /// Resolves an input name within one function version, as [`Catalog::resolve_family`] does.
    pub fn resolve_input<'a>(
        &'a self,
        function: &'a Function,
        name: &str,
    ) -> Option<Resolution<&'a Input>> {
        if let Some(input) = function.input_named(name) {
            return Some(Resolution::Current(input));
        }
        function
            .inputs
            .iter()
            .filter_map(|i| latest_span_named(&i.names, name).map(|span| (span, i)))
            .max_by_key(|(span, _)| span.to_seq)
            .map(|(_, input)| Resolution::Renamed {
                from: name.to_string(),
                to: input.name.clone(),
                target: input,
            })
    }

    /// Checks a rename against the name its caller named the function or input by: that name
    /// must be its current one (SPEC §2). A rename from a name it no longer has (a notebook cell
    /// re-run after a colleague renamed it again) is refused with [`SchemaError::RenamedSince`]
    /// instead of renaming it back; a retry of a rename that already took effect (it is already
    /// called `to`) passes, and [`Catalog::plan`] answers it as already applied. Other changes
    /// pass unchecked.
    pub fn check_rename_from(&self, change: &SchemaChange, from: &str) -> Result<(), SchemaError> {
        let (what, name, names, to) = match change {
            SchemaChange::RenameFunction { family, to } => {
                let fam = self
                    .families
                    .get(family)
                    .ok_or(SchemaError::UnknownFamily(*family))?;
                ("function", &fam.name, &fam.names, to)
            }
            SchemaChange::RenameInput { input, to } => {
                let function = self
                    .input_owner(*input)
                    .ok_or(SchemaError::UnknownInput(*input))?;
                let i = function
                    .input(*input)
                    .expect("input_owner and inputs agree");
                ("input", &i.name, &i.names, to)
            }
            _ => return Ok(()),
        };
        if name == from || name == to {
            return Ok(());
        }
        Err(SchemaError::RenamedSince {
            what,
            name: from.to_string(),
            now: name.clone(),
            since: Box::new(last_rename(names)),
        })
    }

    /// Validates `change` against the catalog as it is now. `new_tag` supplies fresh UUIDs for
    /// whatever the change creates; it is called only for changes that will be applied.
    pub fn plan(
        &self,
        change: &SchemaChange,
        new_tag: &mut dyn FnMut() -> Uuid,
    ) -> Result<Plan, SchemaError> {
        match change {
            SchemaChange::CreateFunction(spec) => self.plan_create(spec, new_tag),
            SchemaChange::CreateVersion {
                family,
                version,
                inputs,
                outputs,
            } => {
                let fam = self
                    .families
                    .get(family)
                    .ok_or(SchemaError::UnknownFamily(*family))?;
                let spec = FunctionSpec {
                    name: fam.name.clone(),
                    version: *version,
                    inputs: inputs.clone(),
                    outputs: outputs.clone(),
                    new_family: false,
                };
                self.plan_create(&spec, new_tag)
            }
            SchemaChange::AddInput {
                function,
                name,
                default,
            } => self.plan_add_input(
                *function,
                name,
                default.as_ref().map(EncodedValue::id),
                new_tag,
            ),
            SchemaChange::RenameFunction { family, to } => self.plan_rename_function(*family, to),
            SchemaChange::RenameInput { input, to } => self.plan_rename_input(*input, to),
        }
    }

    fn plan_create(
        &self,
        spec: &FunctionSpec,
        new_tag: &mut dyn FnMut() -> Uuid,
    ) -> Result<Plan, SchemaError> {
        check_name("function", &spec.name)?;
        if spec.version == 0 {
            return Err(SchemaError::InvalidVersion {
                name: spec.name.clone(),
            });
        }
        if spec.outputs.is_empty() {
            return Err(SchemaError::NoOutputs {
                name: spec.name.clone(),
            });
        }
        for (i, output) in spec.outputs.iter().enumerate() {
            check_name("output", output)?;
            if spec.outputs[..i].contains(output) {
                return Err(SchemaError::DuplicateName {
                    what: "output",
                    name: output.clone(),
                    function: spec.name.clone(),
                });
            }
        }
        for (i, input) in spec.inputs.iter().enumerate() {
            check_name("input", &input.name)?;
            if spec.inputs[..i]
                .iter()
                .any(|other| other.name == input.name)
            {
                return Err(SchemaError::DuplicateName {
                    what: "input",
                    name: input.name.clone(),
                    function: spec.name.clone(),
                });
            }
        }

        let logged_inputs = |new_tag: &mut dyn FnMut() -> Uuid| -> Vec<LoggedInput> {
            spec.inputs
                .iter()
                .map(|i| LoggedInput {
                    tag: InputTag(new_tag()),
                    name: i.name.clone(),
                    default: i.default.as_ref().map(EncodedValue::id),
                })
                .collect()
        };

        if let Some(family) = self.family_named(&spec.name) {
            if let Some(existing) = family.versions.get(&spec.version) {
                let existing = &self.functions[existing];
                return match interface_difference(existing, spec) {
                    None => Ok(Plan::AlreadyApplied),
                    Some(reason) => Err(SchemaError::ConflictingInterface {
                        name: spec.name.clone(),
                        version: spec.version,
                        reason,
                    }),
                };
            }
            let inputs = logged_inputs(new_tag);
            return Ok(Plan::Apply(LoggedChange::NewVersion {
                family: family.tag,
                function: FunctionTag(new_tag()),
                version: spec.version,
                inputs,
                outputs: spec.outputs.clone(),
            }));
        }

        if !spec.new_family {
            if let Some(Resolution::Renamed { to, target, .. }) = self.resolve_family(&spec.name) {
                return Err(SchemaError::FormerName {
                    name: spec.name.clone(),
                    now: to,
                    family: target.tag,
                });
            }
        }
        let family = FamilyTag(new_tag());
        let function = FunctionTag(new_tag());
        let inputs = logged_inputs(new_tag);
        Ok(Plan::Apply(LoggedChange::CreateFunction {
            family,
            function,
            name: spec.name.clone(),
            version: spec.version,
            inputs,
            outputs: spec.outputs.clone(),
        }))
    }

    fn plan_add_input(
        &self,
        function: FunctionTag,
        name: &str,
        default: Option<ValueId>,
        new_tag: &mut dyn FnMut() -> Uuid,
    ) -> Result<Plan, SchemaError> {
        let f = self
            .functions
            .get(&function)
            .ok_or(SchemaError::UnknownFunction(function))?;
        let function_name = self.function_name(function).unwrap_or_default().to_string();
        check_name("input", name)?;
        if let Some(existing) = f.input_named(name) {
            return match (existing.default, default) {
                (Some(have), Some(want)) if have == want => Ok(Plan::AlreadyApplied),
                (Some(have), Some(want)) => Err(SchemaError::DefaultChanged {
                    function: function_name,
                    input: name.to_string(),
                    existing: have,
                    requested: want,
                }),
                _ => Err(SchemaError::InputNameTaken {
                    function: function_name,
                    name: name.to_string(),
                }),
            };
        }
        // A name the function's input once had binds to that input (SPEC §2, renamed-function
        // caveat): adding it again would make a second input for the same thing.
        if let Some(Resolution::Renamed { to, target, .. }) = self.resolve_input(f, name) {
            return Err(SchemaError::FormerInputName {
                function: function_name,
                name: name.to_string(),
                now: to,
                since: Box::new(last_rename(&target.names)),
            });
        }
        let Some(default) = default else {
            return Err(SchemaError::MissingDefault {
                function: function_name,
                input: name.to_string(),
            });
        };
        Ok(Plan::Apply(LoggedChange::AddInput {
            function,
            input: InputTag(new_tag()),
            name: name.to_string(),
            default,
        }))
    }

    fn plan_rename_function(&self, family: FamilyTag, to: &str) -> Result<Plan, SchemaError> {
        let fam = self
            .families
            .get(&family)
            .ok_or(SchemaError::UnknownFamily(family))?;
        check_name("function", to)?;
        if fam.name == to {
            return Ok(Plan::AlreadyApplied);
        }
        if let Some(holder) = self.family_named(to) {
            return Err(SchemaError::NameTaken {
                name: to.to_string(),
                family: holder.tag,
            });
        }
        Ok(Plan::Apply(LoggedChange::RenameFunction {
            family,
            from: fam.name.clone(),
            to: to.to_string(),
        }))
    }

    fn plan_rename_input(&self, input: InputTag, to: &str) -> Result<Plan, SchemaError> {
        let function = self
            .input_owner(input)
            .ok_or(SchemaError::UnknownInput(input))?;
        let current = function.input(input).expect("input_owner and inputs agree");
        check_name("input", to)?;
        if current.name == to {
            return Ok(Plan::AlreadyApplied);
        }
        if function.input_named(to).is_some() {
            let function_name = self
                .function_name(function.tag)
                .unwrap_or_default()
                .to_string();
            return Err(SchemaError::InputNameTaken {
                function: function_name,
                name: to.to_string(),
            });
        }
        Ok(Plan::Apply(LoggedChange::RenameInput {
            function: function.tag,
            input,
            from: current.name.clone(),
            to: to.to_string(),
        }))
    }

    /// Applies log entry `seq`. Entries must come in order, without gaps; an entry that does not
    /// fit the catalog means the log is corrupt.
    pub fn apply(&mut self, seq: u64, change: &LoggedChange) -> Result<(), SchemaError> {
        if seq != self.seq + 1 {
            return Err(SchemaError::CorruptLog {
                seq,
                reason: format!("expected entry {} next", self.seq + 1),
            });
        }
        let corrupt = |reason: &str| SchemaError::CorruptLog {
            seq,
            reason: reason.to_string(),
        };
        match change {
            LoggedChange::CreateFunction {
                family,
                function,
                name,
                version,
                inputs,
                outputs,
            } => {
                if self.families.contains_key(family) || self.family_by_name.contains_key(name) {
                    return Err(corrupt("family exists"));
                }
                self.families.insert(
                    *family,
                    Family {
                        tag: *family,
                        name: name.clone(),
                        names: vec![NameSpan {
                            name: name.clone(),
                            from_seq: seq,
                            to_seq: None,
                        }],
                        versions: BTreeMap::new(),
                        created_seq: seq,
                    },
                );
                self.family_by_name.insert(name.clone(), *family);
                self.insert_function(seq, *family, *function, *version, inputs, outputs)
                    .map_err(&corrupt)?;
            }
            LoggedChange::NewVersion {
                family,
                function,
                version,
                inputs,
                outputs,
            } => {
                if !self.families.contains_key(family) {
                    return Err(corrupt("unknown family"));
                }
                self.insert_function(seq, *family, *function, *version, inputs, outputs)
                    .map_err(&corrupt)?;
            }
            LoggedChange::AddInput {
                function,
                input,
                name,
                default,
            } => {
                if self.input_owner.contains_key(input) {
                    return Err(corrupt("input tag reused"));
                }
                let f = self
                    .functions
                    .get_mut(function)
                    .ok_or_else(|| corrupt("unknown function"))?;
                if f.input_named(name).is_some() {
                    return Err(corrupt("input name taken"));
                }
                f.inputs.push(Input {
                    tag: *input,
                    name: name.clone(),
                    position: f.inputs.len() as u32,
                    default: Some(*default),
                    created_seq: seq,
                    names: vec![NameSpan {
                        name: name.clone(),
                        from_seq: seq,
                        to_seq: None,
                    }],
                });
                self.input_owner.insert(*input, *function);
            }
            LoggedChange::RenameFunction { family, from, to } => {
                if self.family_by_name.contains_key(to) {
                    return Err(corrupt("name taken"));
                }
                let fam = self
                    .families
                    .get_mut(family)
                    .ok_or_else(|| corrupt("unknown family"))?;
                if &fam.name != from {
                    return Err(corrupt("family had another name"));
                }
                rename_spans(&mut fam.names, to, seq);
                fam.name = to.clone();
                self.family_by_name.remove(from);
                self.family_by_name.insert(to.clone(), *family);
            }
            LoggedChange::RenameInput {
                function,
                input,
                from,
                to,
            } => {
                let f = self
                    .functions
                    .get_mut(function)
                    .ok_or_else(|| corrupt("unknown function"))?;
                if f.input_named(to).is_some() {
                    return Err(corrupt("input name taken"));
                }
                let i = f
                    .inputs
                    .iter_mut()
                    .find(|i| i.tag == *input)
                    .ok_or_else(|| corrupt("unknown input"))?;
                if &i.name != from {
                    return Err(corrupt("input had another name"));
                }
                rename_spans(&mut i.names, to, seq);
                i.name = to.clone();
            }
        }
        self.seq = seq;
        Ok(())
    }

    fn insert_function(
        &mut self,
        seq: u64,
        family: FamilyTag,
        function: FunctionTag,
        version: u32,
        inputs: &[LoggedInput],
        outputs: &[String],
    ) -> Result<(), &'static str> {
        if self.functions.contains_key(&function) {
            return Err("function tag reused");
        }
        let fam = self.families.get_mut(&family).ok_or("unknown family")?;
        if fam.versions.contains_key(&version) {
            return Err("version exists");
        }
        if inputs.iter().any(|i| self.input_owner.contains_key(&i.tag)) {
            return Err("input tag reused");
        }
        fam.versions.insert(version, function);
        let inputs = inputs
            .iter()
            .enumerate()
            .map(|(position, i)| Input {
                tag: i.tag,
                name: i.name.clone(),
                position: position as u32,
                default: i.default,
                created_seq: seq,
                names: vec![NameSpan {
                    name: i.name.clone(),
                    from_seq: seq,
                    to_seq: None,
                }],
            })
            .collect::<Vec<_>>();
        for input in &inputs {
            self.input_owner.insert(input.tag, function);
        }
        self.functions.insert(
            function,
            Function {
                tag: function,
                family,
                version,
                inputs,
                outputs: outputs.to_vec(),
                created_seq: seq,
            },
        );
        Ok(())
    }
}

fn rename_spans(spans: &mut Vec<NameSpan>, to: &str, seq: u64) {
    if let Some(last) = spans.last_mut() {
        last.to_seq = Some(seq);
    }
    spans.push(NameSpan {
        name: to.to_string(),
        from_seq: seq,
        to_seq: None,
    });
}

fn latest_span_named<'a>(spans: &'a [NameSpan], name: &str) -> Option<&'a NameSpan> {
    spans
        .iter()
        .filter(|s| s.name == name && s.to_seq.is_some())
        .max_by_key(|s| s.to_seq)
}

/// Why an existing function version differs from a requested one, or `None` if the request is
/// a retry of the change that created it: the same outputs, and either every current input or
/// the inputs it was created with (under their current or original names) with the same
/// defaults. Inputs added later all have defaults, so a retry from before them still matches.
fn interface_difference(existing: &Function, spec: &FunctionSpec) -> Option<String> {
    if existing.outputs != spec.outputs {
        return Some(format!(
            "outputs are {:?}, not {:?}",
            existing.outputs, spec.outputs
        ));
    }
    let original: Vec<&Input> = existing
        .inputs
        .iter()
        .filter(|i| i.created_seq == existing.created_seq)
        .collect();
    let current: Vec<&Input> = existing.inputs.iter().collect();
    let candidates: &[Vec<&Input>] = if original.len() == current.len() {
        std::slice::from_ref(&current)
    } else {
        &[current.clone(), original]
    };
    let mut reason = None;
    for candidate in candidates {
        match inputs_difference(candidate, &spec.inputs) {
            None => return None,
            Some(r) => {
                reason.get_or_insert(r);
            }
        }
    }
    reason
}

fn inputs_difference(have: &[&Input], want: &[InputSpec]) -> Option<String> {
    let names_match = have.len() == want.len()
        && have.iter().zip(want).all(|(h, w)| {
            h.name == w.name || h.names.first().is_some_and(|first| first.name == w.name)
        });
    if !names_match {
        let have: Vec<&str> = have.iter().map(|i| i.name.as_str()).collect();
        let want: Vec<&str> = want.iter().map(|i| i.name.as_str()).collect();
        return Some(format!("inputs are {have:?}, not {want:?}"));
    }
    for (have, want) in have.iter().zip(want) {
        let want_default = want.default.as_ref().map(EncodedValue::id);
        if have.default != want_default {
            return Some(format!(
                "input `{}` has default {}, not {} (a changed default needs a new version)",
                have.name,
                describe_default(have.default),
                describe_default(want_default)
            ));
        }
    }
    None
}

fn describe_default(default: Option<ValueId>) -> String {
    match default {
        Some(id) => format!("value {}", &id.to_hex()[..12]),
        None => "none".to_string(),
    }
}

/// Names are free text, but must be usable in a terminal and a log line.
pub fn check_name(what: &'static str, name: &str) -> Result<(), SchemaError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_NAME_LEN {
        "it is longer than 256 bytes"
    } else if name.chars().any(char::is_control) {
        "it contains a control character"
    } else if name.trim() != name {
        "it starts or ends with whitespace"
    } else {
        return Ok(());
    };
    Err(SchemaError::InvalidName {
        what,
        name: name.to_string(),
        reason,
    })
}

/// One parameter of a function as the code declares it (e.g. a Python signature).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parameter {
    pub name: String,
    pub default: Option<EncodedValue>,
}

/// What the code declares: a function name, an explicit version, parameters and outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub version: u32,
    pub parameters: Vec<Parameter>,
    pub outputs: Vec<String>,
    /// Create a new family under a freed name instead of binding to the renamed one.
    pub new_family: bool,
}

/// Something worth telling the user when code binds to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The code's function name is a former name of a family.
    FunctionRenamed { from: String, to: String },
    /// A parameter name is a former name of an input.
    InputRenamed { from: String, to: String },
    /// An input the code does not have; its calls take the default.
    InputNotInCode { name: String },
}

/// How code binds to the store: the changes to make first, then which input each parameter is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfacePlan {
    /// Schema changes to apply, in order (creating the function or version, adding inputs).
    pub changes: Vec<SchemaChange>,
    pub notices: Vec<Notice>,
}

impl Catalog {
    /// Compares code's interface with the store and decides how to bind it: the schema changes
    /// needed (create the function or version, add parameters that have defaults), and what to
    /// warn about. Fails with [`SchemaError::IncompatibleSignature`] where the code cannot bind
    /// to the version it names: a new parameter without a default, a changed or dropped default,
    /// other outputs, or a required input the code lacks.
    pub fn plan_interface(&self, code: &Interface) -> Result<InterfacePlan, SchemaError> {
        let mut notices = Vec::new();
        let family = match self.resolve_family(&code.name) {
            Some(Resolution::Current(f)) => Some(f),
            Some(Resolution::Renamed { .. }) if code.new_family => None,
            Some(Resolution::Renamed { from, to, target }) => {
                notices.push(Notice::FunctionRenamed { from, to });
                Some(target)
            }
            None => None,
        };
        let create = |name: &str| FunctionSpec {
            name: name.to_string(),
            version: code.version,
            inputs: code
                .parameters
                .iter()
                .map(|p| InputSpec {
                    name: p.name.clone(),
                    default: p.default.clone(),
                })
                .collect(),
            outputs: code.outputs.clone(),
            new_family: code.new_family,
        };
        let Some(family) = family else {
            return Ok(InterfacePlan {
                changes: vec![SchemaChange::CreateFunction(create(&code.name))],
                notices,
            });
        };
        let Some(function) = family
            .versions
            .get(&code.version)
            .and_then(|t| self.function(*t))
        else {
            return Ok(InterfacePlan {
                changes: vec![SchemaChange::CreateFunction(create(&family.name))],
                notices,
            });
        };
        let incompatible = |reason: String| SchemaError::IncompatibleSignature {
            function: family.name.clone(),
            version: code.version,
            reason,
        };
        if function.outputs != code.outputs {
            return Err(incompatible(format!(
                "the store has outputs {:?}, the code {:?}",
                function.outputs, code.outputs
            )));
        }
        let mut changes = Vec::new();
        let mut bound = Vec::new();
        for p in &code.parameters {
            match self.resolve_input(function, &p.name) {
                Some(resolution) => {
                    let input = resolution.target();
                    if bound.contains(&input.tag) {
                        return Err(incompatible(format!(
                            "parameters `{}` and `{}` are the same input (one is its former name)",
                            p.name, input.name
                        )));
                    }
                    if let Resolution::Renamed { from, to, .. } = &resolution {
                        notices.push(Notice::InputRenamed {
                            from: from.clone(),
                            to: to.clone(),
                        });
                    }
                    bound.push(input.tag);
                    let code_default = p.default.as_ref().map(EncodedValue::id);
                    match (input.default, code_default) {
                        (Some(have), Some(want)) if have != want => {
                            return Err(incompatible(format!(
                                "parameter `{}` changed its default; defaults never change within a version",
                                p.name
                            )));
                        }
                        (Some(_), None) => {
                            return Err(incompatible(format!(
                                "parameter `{}` dropped its default; calls recorded without it would change meaning",
                                p.name
                            )));
                        }
                        _ => {}
                    }
                }
                None => match &p.default {
                    Some(default) => changes.push(SchemaChange::AddInput {
                        function: function.tag,
                        name: p.name.clone(),
                        default: Some(default.clone()),
                    }),
                    None => {
                        return Err(incompatible(format!(
                            "new parameter `{}` has no default, so earlier results cannot stand for it",
                            p.name
                        )));
                    }
                },
            }
        }
        for input in &function.inputs {
            if bound.contains(&input.tag) {
                continue;
            }
            if input.default.is_none() {
                return Err(incompatible(format!(
                    "the store's input `{}` has no default and the code has no such parameter",
                    input.name
                )));
            }
            notices.push(Notice::InputNotInCode {
                name: input.name.clone(),
            });
        }
        Ok(InterfacePlan { changes, notices })
    }
}
