//! Call identity and the rules for binding a call to a function version: pure, no SQL.
//!
//! A call is identified by its function tag and the inputs whose values differ from their
//! defaults, so an input added later (with a default) never changes the identity of older calls,
//! and a stale client that does not know an input computes the same id as a current one.
//!
//! Ids are derived, never accepted: [`bind`] derives a call's id and its inputs' value ids, and a
//! call that arrives from elsewhere (a wire payload) is checked by [`rederive`] before the store
//! uses it.

use std::fmt;

use crate::error::CallError;
use crate::schema::{Function, FunctionTag, InputTag};
use crate::value::{EncodedValue, ValueId};

/// The identity of a call: blake3 over the function tag and, in input-tag order, the
/// (input tag, value id) pairs of every input whose value is not its default; 128 bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub [u8; 16]);

impl serde::Serialize for CallId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for CallId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CallId::from_hex(&s).ok_or_else(|| serde::de::Error::custom("a call id is 32 hex digits"))
    }
}

impl CallId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<CallId> {
        let bytes = hex::decode(s).ok()?;
        Some(CallId(bytes.try_into().ok()?))
    }

    /// Computes the id from the function tag and the non-default inputs, in any order.
    pub fn compute(function: FunctionTag, non_default: &mut [(InputTag, ValueId)]) -> CallId {
        non_default.sort_unstable_by_key(|a| a.0);
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"memotag/call/1");
        hasher.update(function.as_bytes());
        for (input, value) in non_default.iter() {
            hasher.update(input.as_bytes());
            hasher.update(value.as_bytes());
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        CallId(id)
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallId({})", self.to_hex())
    }
}

/// A call checked against its function version, with its id computed: what `lookup` and
/// `record` take. Inputs the caller did not give are left out; they take their defaults.
///
/// Only [`bind`] (`Store::bind`) makes one with derived ids. One decoded from a wire payload
/// (serde) holds the ids its sender claims; the store re-derives them ([`rederive`]) before it
/// records or looks it up, and refuses a mismatch. Equality compares the call, not where its ids
/// came from.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BoundCall {
    function: FunctionTag,
    call_id: CallId,
    inputs: Vec<(InputTag, EncodedValue)>,
    input_ids: Vec<ValueId>,
    /// Whether [`bind`] derived the ids in this process (not a claim from a payload).
    #[serde(skip)]
    derived: bool,
}

impl BoundCall {
    /// The function version called.
    pub fn function(&self) -> FunctionTag {
        self.function
    }

    /// The call's id.
    pub fn call_id(&self) -> CallId {
        self.call_id
    }

    /// The inputs given, by tag (the others take their defaults).
    pub fn inputs(&self) -> &[(InputTag, EncodedValue)] {
        &self.inputs
    }

    /// The value id of each input, in the order of [`Self::inputs`].
    pub fn input_ids(&self) -> &[ValueId] {
        &self.input_ids
    }

    /// Whether [`bind`] derived the ids here, so that they need no re-deriving.
    pub(crate) fn is_derived(&self) -> bool {
        self.derived
    }

    /// A call as a wire payload states it: ids claimed by its sender, re-derived before use.
    pub(crate) fn claimed(
        function: FunctionTag,
        call_id: CallId,
        inputs: Vec<(InputTag, EncodedValue)>,
        input_ids: Vec<ValueId>,
    ) -> BoundCall {
        debug_assert_eq!(inputs.len(), input_ids.len(), "one value id per input");
        BoundCall {
            function,
            call_id,
            inputs,
            input_ids,
            derived: false,
        }
    }
}

impl PartialEq for BoundCall {
    fn eq(&self, other: &BoundCall) -> bool {
        self.function == other.function
            && self.call_id == other.call_id
            && self.inputs == other.inputs
            && self.input_ids == other.input_ids
    }
}

impl Eq for BoundCall {}

/// The wire form of a [`BoundCall`], field for field.
#[derive(serde::Deserialize)]
struct BoundCallWire {
    function: FunctionTag,
    call_id: CallId,
    inputs: Vec<(InputTag, EncodedValue)>,
    input_ids: Vec<ValueId>,
}

impl<'de> serde::Deserialize<'de> for BoundCall {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = BoundCallWire::deserialize(d)?;
        if wire.inputs.len() != wire.input_ids.len() {
            return Err(serde::de::Error::custom(format!(
                "a call has one value id per input: {} inputs, {} ids",
                wire.inputs.len(),
                wire.input_ids.len()
            )));
        }
        Ok(BoundCall::claimed(
            wire.function,
            wire.call_id,
            wire.inputs,
            wire.input_ids,
        ))
    }
}

/// Binds `inputs` (named by tag, from any schema the caller knows) to `function`.
///
/// Fails if a tag is not an input of this function, if an input is given twice, or if an input
/// without a default is missing.
pub fn bind(
    function: &Function,
    function_name: &str,
    inputs: Vec<(InputTag, EncodedValue)>,
) -> Result<BoundCall, CallError> {
    let (call_id, input_ids) = derive_ids(function, function_name, &inputs)?;
    Ok(BoundCall {
        function: function.tag,
        call_id,
        inputs,
        input_ids,
        derived: true,
    })
}

/// Re-derives the ids of `call`, whatever it claims, against `function` (its function version,
/// from the store's catalog): each input's value id from its codec and bytes, then the call id
/// from the function tag, the inputs and the defaults.
///
/// # Errors
///
/// What [`bind`] refuses; [`CallError::ForgedValueId`] for an input whose bytes are not what its
/// claimed value id names; [`CallError::ForgedCallId`] for a call id that is not the id of the
/// call's inputs.
pub fn rederive(
    function: &Function,
    function_name: &str,
    call: &BoundCall,
) -> Result<(), CallError> {
    if call.function != function.tag {
        return Err(CallError::UnknownFunction(call.function));
    }
    let (call_id, input_ids) = derive_ids(function, function_name, &call.inputs)?;
    for (((tag, _), expected), given) in call.inputs.iter().zip(&input_ids).zip(&call.input_ids) {
        if expected != given {
            let input = function
                .input(*tag)
                .map_or_else(|| tag.to_string(), |i| i.name.clone());
            return Err(CallError::ForgedValueId {
                function: function_name.to_string(),
                input,
                expected: *expected,
                given: *given,
            });
        }
    }
    if call_id != call.call_id {
        return Err(CallError::ForgedCallId {
            function: function_name.to_string(),
            expected: call_id,
            given: call.call_id,
        });
    }
    Ok(())
}

/// Checks `inputs` against `function` and derives the call id and the inputs' value ids.
fn derive_ids(
    function: &Function,
    function_name: &str,
    inputs: &[(InputTag, EncodedValue)],
) -> Result<(CallId, Vec<ValueId>), CallError> {
    let mut input_ids = Vec::with_capacity(inputs.len());
    let mut non_default = Vec::with_capacity(inputs.len());
    for (i, (tag, value)) in inputs.iter().enumerate() {
        let Some(input) = function.input(*tag) else {
            return Err(CallError::UnknownInput {
                function: function_name.to_string(),
                input: *tag,
            });
        };
        if inputs[..i].iter().any(|(other, _)| other == tag) {
            return Err(CallError::DuplicateInput {
                function: function_name.to_string(),
                input: input.name.clone(),
            });
        }
        let id = value.id();
        input_ids.push(id);
        if input.default != Some(id) {
            non_default.push((*tag, id));
        }
    }
    for input in &function.inputs {
        if input.default.is_none() && !inputs.iter().any(|(tag, _)| *tag == input.tag) {
            return Err(CallError::MissingInput {
                function: function_name.to_string(),
                input: input.name.clone(),
            });
        }
    }
    let call_id = CallId::compute(function.tag, &mut non_default);
    Ok((call_id, input_ids))
}

/// Checks that every value of a result can be read back once stored: the call's inputs and
/// `outputs` (in the order of the function's outputs, which name them in the error).
///
/// # Errors
///
/// [`CallError::UnreadableValue`] naming the first value that cannot.
pub fn check_values(
    function: &Function,
    function_name: &str,
    call: &BoundCall,
    outputs: &[EncodedValue],
) -> Result<(), CallError> {
    let unreadable = |what: String, value: &EncodedValue, reason| CallError::UnreadableValue {
        function: function_name.to_string(),
        what,
        id: value.id(),
        reason,
    };
    for (tag, value) in &call.inputs {
        if let Err(reason) = value.check() {
            let name = function
                .input(*tag)
                .map_or_else(|| tag.to_string(), |i| i.name.clone());
            return Err(unreadable(format!("input `{name}`"), value, reason));
        }
    }
    for (i, value) in outputs.iter().enumerate() {
        if let Err(reason) = value.check() {
            let name = function.outputs.get(i).map_or("?", String::as_str);
            return Err(unreadable(format!("output `{name}`"), value, reason));
        }
    }
    Ok(())
}

/// What `record` did with a result.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RecordOutcome {
    /// A new result, with its sequence number.
    Inserted { seq: i64 },
    /// The same result (same call, code and outputs) was already there: nothing changed.
    AlreadyRecorded { seq: i64 },
    /// The same call and code were recorded earlier with other outputs; those stay canonical and
    /// these were kept in the conflicts table.
    Conflict { seq: i64, canonical: Vec<ValueId> },
    /// Inside a batch: kept in memory until the batch commits.
    Buffered,
}

/// A recorded result found by `lookup`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hit {
    pub seq: i64,
    pub code: i64,
    pub output_ids: Vec<ValueId>,
    pub outputs: Vec<EncodedValue>,
}

/// One recorded result, as queries return it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResultRow {
    pub function: FunctionTag,
    pub seq: i64,
    pub call_id: CallId,
    pub code: i64,
    /// Every input the function version has, by tag, with its value id (defaults filled in).
    pub inputs: Vec<(InputTag, ValueId)>,
    pub outputs: Vec<ValueId>,
    pub client: String,
    pub time_ms: i64,
}

/// A result that was recorded again with other outputs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConflictRow {
    pub function: FunctionTag,
    pub call_id: CallId,
    pub code: i64,
    pub outputs: Vec<ValueId>,
    pub client: String,
    pub time_ms: i64,
}

/// Output value ids packed as stored in a memo row: 16 bytes each, in output order.
pub fn pack_ids(ids: &[ValueId]) -> Vec<u8> {
    let mut packed = Vec::with_capacity(ids.len() * 16);
    for id in ids {
        packed.extend_from_slice(id.as_bytes());
    }
    packed
}

/// The inverse of [`pack_ids`]; `None` if the length is not a multiple of 16.
pub fn unpack_ids(packed: &[u8]) -> Option<Vec<ValueId>> {
    if packed.len() % 16 != 0 {
        return None;
    }
    Some(
        packed
            .chunks_exact(16)
            .map(|c| ValueId(c.try_into().expect("chunks of 16")))
            .collect(),
    )
}
