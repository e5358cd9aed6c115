//! Every store operation as a procedure, with all its generations and their wire types.
//!
//! To change an operation: add a generation with a higher number whose wire type is the new
//! model, and turn the old current generation into an explicit wire type with conversions (as
//! `SchemaChangeV1`, `RecordV1` and `RecordV2` below). Never change the meaning of an existing
//! generation, nor reuse its number: the golden samples in `tests/fixtures/wire/` and their
//! hashes in `RELEASED.b3sum` pin them.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use super::{build_menu, Generation, Menu, Procedure, Selection, VersionError, Wire};
use std::sync::Arc;

use crate::calls::{BoundCall, CallId, ConflictRow, Hit, RecordOutcome, ResultRow};
use crate::code::{CodeRecord, Reader, SourceText};
use crate::schema::{FamilyTag, FunctionSpec, FunctionTag, InputSpec, InputTag, SchemaChange};
use crate::storage::catalog::LogEntry;
use crate::value::{EncodedValue, ValueId};

// ---- model types of requests that have no other home -------------------------------------------

/// Record one result of a bound call, with the code it ran (empty: not captured) and the source
/// texts the store may lack (a client that ran `code.preflight` sends only those).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordRequest {
    pub call: BoundCall,
    pub outputs: Vec<EncodedValue>,
    #[serde(default)]
    pub code: CodeRecord,
    #[serde(default)]
    pub sources: Vec<SourceText>,
}

impl RecordRequest {
    /// A result recorded without code.
    pub fn without_code(call: BoundCall, outputs: Vec<EncodedValue>) -> Self {
        RecordRequest {
            call,
            outputs,
            code: CodeRecord::default(),
            sources: Vec::new(),
        }
    }
}

/// Look a call up, as a reader with code and rules (`None`: any code is acceptable).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupRequest {
    pub call: BoundCall,
    pub reader: Option<Arc<Reader>>,
}

/// What a lookup found: the newest acceptable result, how many results exist under code the
/// reader does not accept, and what user code differs in the hit (for a warning).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupAnswer {
    pub hit: Option<Hit>,
    pub other_code: u64,
    pub changed: Vec<String>,
}

/// One library the store has seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRow {
    pub library: String,
    pub version: Option<String>,
    pub declared: bool,
    pub results: u64,
}

/// A read-only question about recorded results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "query", rename_all = "snake_case")]
pub enum Query {
    Results {
        function: FunctionTag,
        inputs: Vec<InputTag>,
        filter: Vec<(InputTag, ValueId)>,
        limit: Option<usize>,
    },
    OfCall {
        call_id: CallId,
        functions: Vec<(FunctionTag, Vec<InputTag>)>,
    },
    Producers {
        value: ValueId,
        functions: Vec<(FunctionTag, Vec<InputTag>)>,
    },
    Conflicts {
        function: Option<FunctionTag>,
    },
    Count {
        function: FunctionTag,
    },
    Preview {
        value: ValueId,
    },
}

/// The answer to a [`Query`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", content = "rows", rename_all = "snake_case")]
pub enum Answer {
    Results(Vec<ResultRow>),
    Conflicts(Vec<ConflictRow>),
    Count(u64),
    Preview(Option<String>),
}

// ---- the declarations ----------------------------------------------------------------------------

/// Validate and apply one schema change; answers the new log sequence number (none for a retry).
/// Generation 1 predates creating a version by family tag and claiming a freed name.
pub static SCHEMA_CHANGE: LazyLock<Procedure<SchemaChange, Option<u64>>> = LazyLock::new(|| {
    Procedure::new(
        "schema.change",
        vec![
            Generation::new::<SchemaChangeV1, Option<u64>>(1),
            Generation::new::<SchemaChange, Option<u64>>(2),
        ],
    )
});

/// Schema log entries after a sequence number.
pub static SCHEMA_LOG: LazyLock<Procedure<u64, Vec<LogEntry>>> =
    LazyLock::new(|| Procedure::new("schema.log", vec![Generation::new::<u64, Vec<LogEntry>>(1)]));

/// Record one result. Generations 1 and 2 predate code records: they can only carry the empty
/// one (2 carries the code as an integer, and only 0, the empty record, has a meaning outside
/// the store that numbered it). Generation 3 carries the code record and its sources.
pub static CALL_RECORD: LazyLock<Procedure<RecordRequest, RecordOutcome>> = LazyLock::new(|| {
    Procedure::new(
        "call.record",
        vec![
            Generation::new::<RecordV1, RecordOutcome>(1),
            Generation::new::<RecordV2, RecordOutcome>(2),
            Generation::new::<RecordRequest, RecordOutcome>(CODE_RECORDS_SINCE),
        ],
    )
});

/// Record many results in one transaction (a batch). Generations as `call.record`.
pub static CALL_RECORD_BATCH: LazyLock<Procedure<Vec<RecordRequest>, Vec<RecordOutcome>>> =
    LazyLock::new(|| {
        Procedure::new(
            "call.record_batch",
            vec![
                Generation::new::<Vec<RecordV1>, Vec<RecordOutcome>>(1),
                Generation::new::<Vec<RecordV2>, Vec<RecordOutcome>>(2),
                Generation::new::<Vec<RecordRequest>, Vec<RecordOutcome>>(CODE_RECORDS_SINCE),
            ],
        )
    });

/// The first generation of `call.record` and `call.record_batch` that carries code records.
pub const CODE_RECORDS_SINCE: u32 = 3;

/// Fails, before any I/O, unless this session can record a result with a non-empty code record:
/// `method` (`call.record` or `call.record_batch`) must have been negotiated at
/// [`CODE_RECORDS_SINCE`] or later. A store file offers that generation once `memotag migrate`
/// has moved it to format generation 5; an older one offers 1 and 2 only.
///
/// The error is `NoCommonGeneration` naming, on this side, the generations that can carry such
/// a request (there is none in common for it), and the store's whole menu for the method.
pub fn require_code_records(selection: &Selection, method: &str) -> Result<(), VersionError> {
    if selection.generation(method)? >= CODE_RECORDS_SINCE {
        return Ok(());
    }
    Err(VersionError::NoCommonGeneration {
        method: method.to_string(),
        local: selection
            .local
            .generations(method)
            .into_iter()
            .filter(|g| *g >= CODE_RECORDS_SINCE)
            .collect(),
        remote: selection.remote.generations(method),
    })
}

/// The canonical outputs of the newest acceptable result of a call. Generation 1 predates
/// reader code rules: it cannot carry them.
pub static CALL_LOOKUP: LazyLock<Procedure<LookupRequest, LookupAnswer>> = LazyLock::new(|| {
    Procedure::new(
        "call.lookup",
        vec![
            Generation::new::<BoundCall, Option<Hit>>(1),
            Generation::new::<LookupRequest, LookupAnswer>(2),
        ],
    )
});

/// Which of these source hashes the store already holds (advisory: the store has the final say).
pub static CODE_PREFLIGHT: LazyLock<Procedure<Vec<String>, Vec<String>>> = LazyLock::new(|| {
    Procedure::new(
        "code.preflight",
        vec![Generation::new::<Vec<String>, Vec<String>>(1)],
    )
});

/// A code record by its store id.
pub static CODE_RECORD: LazyLock<Procedure<i64, Option<CodeRecord>>> = LazyLock::new(|| {
    Procedure::new(
        "code.record",
        vec![Generation::new::<i64, Option<CodeRecord>>(1)],
    )
});

/// A source text by hash.
pub static CODE_SOURCE: LazyLock<Procedure<String, Option<String>>> = LazyLock::new(|| {
    Procedure::new(
        "code.source",
        vec![Generation::new::<String, Option<String>>(1)],
    )
});

/// The libraries the store has seen, with how many results used each version.
pub static CODE_PACKAGES: LazyLock<Procedure<Vec<FunctionTag>, Vec<PackageRow>>> =
    LazyLock::new(|| {
        Procedure::new(
            "code.packages",
            vec![Generation::new::<Vec<FunctionTag>, Vec<PackageRow>>(1)],
        )
    });

/// Results computed with one library version.
pub static CODE_RESULTS_WITH: LazyLock<Procedure<ResultsWith, Vec<ResultRow>>> =
    LazyLock::new(|| {
        Procedure::new(
            "code.results_with",
            vec![Generation::new::<ResultsWith, Vec<ResultRow>>(1)],
        )
    });

/// "Results computed with `library` `version`", over these function versions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultsWith {
    pub library: String,
    pub version: Option<String>,
    pub functions: Vec<(FunctionTag, Vec<InputTag>)>,
}

/// Queries over recorded results.
pub static CALL_QUERY: LazyLock<Procedure<Query, Answer>> =
    LazyLock::new(|| Procedure::new("call.query", vec![Generation::new::<Query, Answer>(1)]));

/// A stored value by id.
pub static VALUE_GET: LazyLock<Procedure<ValueId, Option<EncodedValue>>> = LazyLock::new(|| {
    Procedure::new(
        "value.get",
        vec![Generation::new::<ValueId, Option<EncodedValue>>(1)],
    )
});

/// Every procedure this build declares, as (method, generations).
pub fn declarations() -> Vec<(&'static str, Vec<u32>)> {
    vec![
        (SCHEMA_CHANGE.method, SCHEMA_CHANGE.versions()),
        (SCHEMA_LOG.method, SCHEMA_LOG.versions()),
        (CALL_RECORD.method, CALL_RECORD.versions()),
        (CALL_RECORD_BATCH.method, CALL_RECORD_BATCH.versions()),
        (CALL_LOOKUP.method, CALL_LOOKUP.versions()),
        (CODE_PREFLIGHT.method, CODE_PREFLIGHT.versions()),
        (CODE_RECORD.method, CODE_RECORD.versions()),
        (CODE_SOURCE.method, CODE_SOURCE.versions()),
        (CODE_PACKAGES.method, CODE_PACKAGES.versions()),
        (CODE_RESULTS_WITH.method, CODE_RESULTS_WITH.versions()),
        (CALL_QUERY.method, CALL_QUERY.versions()),
        (VALUE_GET.method, VALUE_GET.versions()),
    ]
}

/// This build's full menu.
pub static LOCAL_MENU: LazyLock<Menu> =
    LazyLock::new(|| build_menu(declarations()).expect("procedure declarations are consistent"));

/// The menu a store file of format generation 1 supports: it predates the procedures table and
/// code records; every operation it knew is generation 1.
/// What a file offers, from the menu rows it recorded and its format generation. Format 4 brought
/// the code-record tables, and the build that wrote format-4 files (v0.1.0) recorded its
/// code-record generation of `call.record` and `call.record_batch` as 2, a number that means
/// "code as an integer" since it was first released. Such a file holds code records as well as
/// any newer one: it offers generation 3, which is what those rows meant.
pub fn file_offers(rows: Menu, format_generation: u32) -> Menu {
    let mut menu = rows;
    if format_generation >= 4 {
        for method in [CALL_RECORD.method, CALL_RECORD_BATCH.method] {
            if menu.generations(method).contains(&2) {
                menu = menu.with(method, [CODE_RECORDS_SINCE]);
            }
        }
    }
    menu
}

pub fn format1_menu() -> Menu {
    let mut menu = Menu::new();
    for (method, _) in declarations() {
        if !method.starts_with("code.") {
            menu = menu.with(method, [1]);
        }
    }
    menu
}

// ---- generation 1 of schema.change ---------------------------------------------------------------

/// One input of a create, as generation 1 sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputV1 {
    pub name: String,
    pub default: Option<EncodedValue>,
}

/// A schema change as generation 1 knows it: create by name only, no freed-name claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SchemaChangeV1 {
    CreateFunction {
        name: String,
        version: u32,
        inputs: Vec<InputV1>,
        outputs: Vec<String>,
    },
    AddInput {
        function: FunctionTag,
        name: String,
        default: Option<EncodedValue>,
    },
    RenameFunction {
        family: FamilyTag,
        to: String,
    },
    RenameInput {
        input: InputTag,
        to: String,
    },
}

impl Wire<SchemaChange> for SchemaChangeV1 {
    fn downgrade(model: &SchemaChange) -> Result<Self, String> {
        Ok(match model {
            SchemaChange::CreateFunction(spec) if spec.new_family => {
                return Err(format!(
                    "creating a new `{}` under a freed name would bind to the renamed function instead",
                    spec.name
                ));
            }
            SchemaChange::CreateFunction(spec) => SchemaChangeV1::CreateFunction {
                name: spec.name.clone(),
                version: spec.version,
                inputs: spec
                    .inputs
                    .iter()
                    .map(|i| InputV1 {
                        name: i.name.clone(),
                        default: i.default.clone(),
                    })
                    .collect(),
                outputs: spec.outputs.clone(),
            },
            SchemaChange::CreateVersion {
                family, version, ..
            } => {
                return Err(format!(
                    "creating version {version} of family {family} by tag is unknown to generation 1, and by name it could land in another family"
                ));
            }
            SchemaChange::AddInput {
                function,
                name,
                default,
            } => SchemaChangeV1::AddInput {
                function: *function,
                name: name.clone(),
                default: default.clone(),
            },
            SchemaChange::RenameFunction { family, to } => SchemaChangeV1::RenameFunction {
                family: *family,
                to: to.clone(),
            },
            SchemaChange::RenameInput { input, to } => SchemaChangeV1::RenameInput {
                input: *input,
                to: to.clone(),
            },
        })
    }

    fn upgrade(self) -> SchemaChange {
        match self {
            SchemaChangeV1::CreateFunction {
                name,
                version,
                inputs,
                outputs,
            } => SchemaChange::CreateFunction(FunctionSpec {
                name,
                version,
                inputs: inputs
                    .into_iter()
                    .map(|i| InputSpec {
                        name: i.name,
                        default: i.default,
                    })
                    .collect(),
                outputs,
                new_family: false,
            }),
            SchemaChangeV1::AddInput {
                function,
                name,
                default,
            } => SchemaChange::AddInput {
                function,
                name,
                default,
            },
            SchemaChangeV1::RenameFunction { family, to } => {
                SchemaChange::RenameFunction { family, to }
            }
            SchemaChangeV1::RenameInput { input, to } => SchemaChange::RenameInput { input, to },
        }
    }
}

// ---- generation 1 of call.record -----------------------------------------------------------------

/// A result as generation 1 sends it: no code record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordV1 {
    pub function: FunctionTag,
    pub call_id: CallId,
    pub inputs: Vec<(InputTag, EncodedValue)>,
    pub outputs: Vec<EncodedValue>,
}

impl Wire<RecordRequest> for RecordV1 {
    fn downgrade(model: &RecordRequest) -> Result<Self, String> {
        if !model.code.is_empty() {
            return Err("the result carries a code record, which generation 1 cannot send; dropping it would file the result under other code".to_string());
        }
        Ok(RecordV1 {
            function: model.call.function(),
            call_id: model.call.call_id(),
            inputs: model.call.inputs().to_vec(),
            outputs: model.outputs.clone(),
        })
    }

    /// The call id stays what the payload claims; the store re-derives it before recording.
    fn upgrade(self) -> RecordRequest {
        let input_ids = self.inputs.iter().map(|(_, v)| v.id()).collect();
        RecordRequest::without_code(
            BoundCall::claimed(self.function, self.call_id, self.inputs, input_ids),
            self.outputs,
        )
    }
}

impl Wire<Vec<RecordRequest>> for Vec<RecordV1> {
    fn downgrade(model: &Vec<RecordRequest>) -> Result<Self, String> {
        model.iter().map(RecordV1::downgrade).collect()
    }

    fn upgrade(self) -> Vec<RecordRequest> {
        self.into_iter().map(RecordV1::upgrade).collect()
    }
}

// ---- generation 2 of call.record -----------------------------------------------------------------

/// A result as generation 2 sends it (format generations 2 to 4 offer it): the bound call, the
/// outputs and the code as an integer. The integer was a row of the receiving store's
/// `code_records`; the builds that released this generation only ever sent 0, the empty record,
/// and no other number means the same to two stores, so 0 is the only code this generation
/// carries. A code record needs generation 3.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordV2 {
    pub call: BoundCall,
    pub outputs: Vec<EncodedValue>,
    pub code: EmptyCodeV2,
}

/// Generation 2's `"code"`: always the integer 0. Decoding any other number fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmptyCodeV2;

impl Serialize for EmptyCodeV2 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(0)
    }
}

impl<'de> Deserialize<'de> for EmptyCodeV2 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match i64::deserialize(deserializer)? {
            0 => Ok(EmptyCodeV2),
            other => Err(serde::de::Error::custom(format!(
                "code {other} is a row number of the store that sent it; generation 2 can only carry code 0, the empty record"
            ))),
        }
    }
}

impl Wire<RecordRequest> for RecordV2 {
    fn downgrade(model: &RecordRequest) -> Result<Self, String> {
        if !model.code.is_empty() {
            return Err("the result carries a code record, which generation 2 cannot send (its code is an integer, and only 0, the empty record, means the same to every store); dropping it would file the result under other code (run `memotag migrate` on the store)".to_string());
        }
        // Sources only matter to the code record they belong to; with the empty one there are
        // none to keep.
        Ok(RecordV2 {
            call: model.call.clone(),
            outputs: model.outputs.clone(),
            code: EmptyCodeV2,
        })
    }

    fn upgrade(self) -> RecordRequest {
        RecordRequest::without_code(self.call, self.outputs)
    }
}

impl Wire<Vec<RecordRequest>> for Vec<RecordV2> {
    fn downgrade(model: &Vec<RecordRequest>) -> Result<Self, String> {
        model.iter().map(RecordV2::downgrade).collect()
    }

    fn upgrade(self) -> Vec<RecordRequest> {
        self.into_iter().map(RecordV2::upgrade).collect()
    }
}

// ---- generation 1 of call.lookup -----------------------------------------------------------------

/// Generation 1 sends the bound call alone: no reader rules.
impl Wire<LookupRequest> for BoundCall {
    fn downgrade(model: &LookupRequest) -> Result<Self, String> {
        match &model.reader {
            None => Ok(model.call.clone()),
            Some(_) => Err("the reader's code rules cannot travel as generation 1; without them a result recorded under unacceptable code could be a hit (run `memotag migrate` on the store)".to_string()),
        }
    }

    fn upgrade(self) -> LookupRequest {
        LookupRequest {
            call: self,
            reader: None,
        }
    }
}

/// Generation 1 answers with the hit alone.
impl Wire<LookupAnswer> for Option<Hit> {
    fn downgrade(model: &LookupAnswer) -> Result<Self, String> {
        Ok(model.hit.clone())
    }

    fn upgrade(self) -> LookupAnswer {
        LookupAnswer {
            hit: self,
            other_code: 0,
            changed: Vec::new(),
        }
    }
}
