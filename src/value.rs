//! Values: the canonical encoding of arguments and results, their ids, codecs and previews.
//!
//! This module owns what a value *is* to memotag: the [`Value`] tree the bindings build, its
//! canonical byte encoding (deterministic CBOR, codec `cbor`), the `npy` layout for numpy arrays,
//! the [`ValueId`] that names encoded bytes, and the short human preview the CLI shows. It does not
//! store values, decide where large values live, or know about calls; it never touches SQL.
//!
//! # The `cbor` codec
//!
//! A [`Value`] is encoded as core deterministic CBOR (RFC 8949 §4.2.1), so equal values get equal
//! bytes on every machine and in every language:
//!
//! - Every head uses the shortest argument; lengths are always definite.
//! - Integers in `[-2^64, 2^64)` are major type 0/1, whether or not they fit an `i64`. Integers
//!   outside that range are bignums, tag 2 (`n`) or tag 3 (`-1 - n`), with a minimal big-endian
//!   byte string.
//! - Floats use preferred serialization: the shortest of binary16/32/64 that holds the value
//!   exactly. `-0.0` stays `-0.0` (`f9 8000`); every NaN becomes the one NaN `f9 7e00`.
//! - `None` is `null` (`f6`), booleans are `false`/`true` (`f4`/`f5`): `1`, `1.0` and `True`
//!   encode differently.
//! - `str` is a text string, `bytes` a byte string, `list` an array.
//! - `tuple` is [`TAG_TUPLE`] around an array, so `(1, 2)` and `[1, 2]` differ.
//! - `set` is [`TAG_SET`] (258, "mathematical finite set") around an array; `frozenset` is
//!   [`TAG_FROZENSET`] around an array. Members are sorted by their encoded bytes (plain bytewise
//!   comparison, RFC 8949 §4.2.1) and members with equal encodings are collapsed.
//! - `dict` is a map whose entries are sorted by the encoded bytes of their keys. Keys with equal
//!   encodings are collapsed and the **last inserted** entry wins, as in a Python dict literal.
//!
//! Heads and items are written and read with the `minicbor` crate; the rules above (and the
//! strictness below, where minicbor's decoder is lenient) are enforced here on top of it.
//!
//! [`decode_canonical`] accepts exactly this encoding: non-minimal heads, indefinite lengths,
//! unsorted or duplicate map keys and set members, non-preferred floats, other NaNs, unknown tags,
//! simple values other than `false`/`true`/`null` and trailing bytes are all rejected. It never
//! panics, never pre-allocates more than the remaining input can fill, and stops at
//! [`MAX_DEPTH`] levels of nesting.
//!
//! # Limits
//!
//! Encoder and decoder agree on every limit, so whatever [`encode_canonical`] returns,
//! [`decode_canonical`] reads back: the one limit a [`Value`] can exceed is [`MAX_DEPTH`], and
//! the encoder refuses such a value ([`ValueError::TooDeep`]) instead of writing bytes nobody
//! can read. Every other rule of the decoder (lengths within the input, minimal bignums, known
//! tags, sorted and distinct keys, UTF-8 text, one NaN) holds for every encoder output by
//! construction. For `npy`, [`NPY_MAX_DIMS`] and [`NPY_MAX_DTYPE_LEN`] bound both
//! [`NpyArray::new`] and [`NpyArray::decode`]. [`EncodedValue::check`] applies the decoder's
//! rules to bytes from anywhere (the store runs it on every value it records).
//!
//! # The `npy` codec
//!
//! See [`NpyArray`] for the byte layout.

use std::convert::Infallible;
use std::fmt::{self, Write as _};
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use minicbor::data::{Tag, Type};

/// Tag for a Python `tuple`: an array of its items.
///
/// Tag numbers 256..=65535 take a 3-byte tag head (`d9 xx xx`). 4200 and 4201 are, to our
/// knowledge, unassigned in the IANA CBOR tag registry (range "Specification Required"); they are
/// private to memotag and part of the file format: changing them changes every value id.
pub const TAG_TUPLE: u64 = 4200;
/// Tag for a Python `set`: IANA tag 258, "mathematical finite set", around a sorted array.
pub const TAG_SET: u64 = 258;
/// Tag for a Python `frozenset`: a sorted array of its members. See [`TAG_TUPLE`].
pub const TAG_FROZENSET: u64 = 4201;
/// Tag for an unsigned bignum (RFC 8949 §3.4.3).
pub const TAG_POSITIVE_BIGNUM: u64 = 2;
/// Tag for a negative bignum (RFC 8949 §3.4.3); its content is `-1 - n`.
pub const TAG_NEGATIVE_BIGNUM: u64 = 3;

/// The deepest nesting of lists, tuples, dicts and sets ([`Value::depth`]) that
/// [`encode_canonical`] writes and [`decode_canonical`] reads; deeper is
/// [`ValueError::TooDeep`] on both sides.
pub const MAX_DEPTH: usize = 512;

/// The longest preview, in characters (not bytes).
pub const PREVIEW_MAX_CHARS: usize = 80;

/// The one NaN the codec writes and reads: binary16 `7e00` (a quiet NaN without payload).
const CANONICAL_NAN_F16: u16 = 0x7e00;

/// Everything that can go wrong turning bytes into values, codecs or ids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// The input ended inside an item.
    #[error("cbor: input ends early (at byte {offset})")]
    UnexpectedEnd { offset: usize },
    /// A complete value was followed by more bytes.
    #[error("cbor: {count} trailing byte(s) after the value")]
    TrailingBytes { count: usize },
    /// An indefinite-length string, array or map.
    #[error("cbor: indefinite-length item at byte {offset}")]
    IndefiniteLength { offset: usize },
    /// Well-formed CBOR that is not the canonical encoding of any value.
    #[error("cbor: non-canonical encoding at byte {offset}: {reason}")]
    NonCanonical { offset: usize, reason: &'static str },
    /// A tag this codec does not define.
    #[error("cbor: unknown tag {tag} at byte {offset}")]
    UnknownTag { offset: usize, tag: u64 },
    /// An item that no [`Value`] encodes to (reserved additional information, `undefined`,
    /// other simple values, a tag around the wrong kind of item).
    #[error("cbor: unsupported item at byte {offset}: {reason}")]
    Unsupported { offset: usize, reason: &'static str },
    /// A text string that is not UTF-8.
    #[error("cbor: text string at byte {offset} is not valid UTF-8")]
    InvalidUtf8 { offset: usize },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("cbor: value nested deeper than {limit} levels")]
    TooDeep { limit: usize },
    /// Bytes that are not a valid `npy` encoding.
    #[error("npy: {reason}")]
    InvalidNpy { reason: String },
    /// A codec name or number that memotag does not know.
    #[error("unknown codec {name:?}")]
    UnknownCodec { name: String },
    /// A value id that is not 32 hex digits.
    #[error("invalid value id {input:?}: expected 32 hex digits")]
    InvalidValueId { input: String },
    /// An operation that needs one codec was given bytes of another.
    #[error("expected a {expected} value, found {found}")]
    WrongCodec { expected: Codec, found: Codec },
}

// ---------------------------------------------------------------------------------------------
// Value
// ---------------------------------------------------------------------------------------------

/// A value tree as the bindings build it from Python objects.
///
/// Equality is equality of canonical encodings: floats compare by bits with every NaN equal to
/// every other (and `0.0 != -0.0`), sets and dicts compare regardless of member order, and
/// `Int(1)`, `Float(1.0)` and `Bool(true)` are all different.
#[derive(Debug, Clone)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer outside `i64`. Build it with [`Value::from_i128`] or
    /// [`Value::from_sign_magnitude`], which return [`Value::Int`] when the integer fits.
    BigInt(BigInt),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// Entries in insertion order; duplicate keys are resolved at encoding time (last wins).
    Dict(Vec<(Value, Value)>),
    /// Members in any order; duplicates collapse at encoding time.
    Set(Vec<Value>),
    FrozenSet(Vec<Value>),
}

/// An integer outside the `i64` range, as a sign and a big-endian magnitude without leading
/// zeros. The constructors on [`Value`] keep that invariant, so a `BigInt` never holds an
/// integer that fits an `i64`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BigInt {
    negative: bool,
    magnitude: Vec<u8>,
}

impl BigInt {
    /// Whether the integer is below zero.
    #[must_use]
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// The absolute value, big-endian, without leading zeros (what Python's
    /// `abs(n).to_bytes(len, "big")` gives).
    #[must_use]
    pub fn magnitude(&self) -> &[u8] {
        &self.magnitude
    }

    /// The sign and the big-endian magnitude.
    #[must_use]
    pub fn into_parts(self) -> (bool, Vec<u8>) {
        (self.negative, self.magnitude)
    }

    /// The integer, if it fits an `i128`.
    #[must_use]
    pub fn to_i128(&self) -> Option<i128> {
        if self.magnitude.len() > 16 {
            return None;
        }
        let magnitude = self
            .magnitude
            .iter()
            .fold(0_u128, |acc, &b| (acc << 8) | u128::from(b));
        if self.negative {
            0_i128.checked_sub_unsigned(magnitude)
        } else {
            i128::try_from(magnitude).ok()
        }
    }
}

impl Value {
    /// An integer of any size up to `i128`: [`Value::Int`] when it fits an `i64`.
    #[must_use]
    pub fn from_i128(n: i128) -> Value {
        if let Ok(small) = i64::try_from(n) {
            return Value::Int(small);
        }
        let bytes = n.unsigned_abs().to_be_bytes();
        Value::from_sign_magnitude(n < 0, &bytes)
    }

    /// An integer of any size from its sign and big-endian magnitude (leading zeros allowed):
    /// [`Value::Int`] when it fits an `i64`. A zero magnitude is `0` whatever the sign.
    #[must_use]
    pub fn from_sign_magnitude(negative: bool, magnitude: &[u8]) -> Value {
        let start = magnitude
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(magnitude.len());
        let magnitude = &magnitude[start..];
        if magnitude.len() <= 8 {
            let m = be_u64(magnitude);
            if negative {
                if m <= 1 << 63 {
                    // -m fits i64; `wrapping_neg` maps 2^63 to i64::MIN.
                    return Value::Int(0_i64.wrapping_sub_unsigned(m));
                }
            } else if let Ok(small) = i64::try_from(m) {
                return Value::Int(small);
            }
        }
        Value::BigInt(BigInt {
            negative,
            magnitude: magnitude.to_vec(),
        })
    }

    /// The integer, if this is an `Int` or a `BigInt` that fits an `i128`.
    #[must_use]
    pub fn as_i128(&self) -> Option<i128> {
        match self {
            Value::Int(n) => Some(i128::from(*n)),
            Value::BigInt(b) => b.to_i128(),
            _ => None,
        }
    }

    /// How deeply containers nest: 0 for a scalar, 1 for a flat list, and so on.
    /// Values deeper than [`MAX_DEPTH`] have no encoding.
    #[must_use]
    pub fn depth(&self) -> usize {
        match self {
            Value::List(items)
            | Value::Tuple(items)
            | Value::Set(items)
            | Value::FrozenSet(items) => 1 + items.iter().map(Value::depth).max().unwrap_or(0),
            Value::Dict(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.depth().max(v.depth()))
                    .max()
                    .unwrap_or(0)
            }
            _ => 0,
        }
    }

    /// The canonical encoding; see the module documentation.
    ///
    /// # Errors
    ///
    /// [`ValueError::TooDeep`] for a value nested deeper than [`MAX_DEPTH`].
    pub fn encode(&self) -> Result<Vec<u8>, ValueError> {
        encode_canonical(self)
    }

    /// A Python-like repr of at most [`PREVIEW_MAX_CHARS`] characters.
    #[must_use]
    pub fn preview(&self) -> String {
        let mut writer = PreviewWriter::new(PREVIEW_MAX_CHARS);
        // An Err only means the budget ran out; what was written is kept.
        let _ = write_repr(self, &mut writer);
        writer.finish()
    }

    /// The value a JSON document denotes, so that `--where x=1` on the command line names the
    /// same value as Python's `f(1)`: `null` → `None`, numbers without a fraction or exponent →
    /// `Int` (or `BigInt` beyond `i64`), other numbers → `Float`, arrays → `List`, objects →
    /// `Dict` with `Str` keys.
    #[must_use]
    pub fn from_json(json: &serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::None,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::from_i128(i128::from(u))
                } else {
                    Value::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(items) => {
                Value::List(items.iter().map(Value::from_json).collect())
            }
            serde_json::Value::Object(map) => Value::Dict(
                map.iter()
                    .map(|(k, v)| (Value::Str(k.clone()), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// A JSON rendering for display and export. Lossy: tuples, sets and frozensets become
    /// arrays, bytes become `{"$bytes": "<hex>"}`, non-string dict keys become their preview,
    /// NaN and infinities become the strings `"NaN"`, `"Infinity"`, `"-Infinity"`, and integers
    /// beyond `u64`/`i64` become decimal strings.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::None => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(n) => J::from(*n),
            Value::BigInt(b) => {
                if !b.negative && b.magnitude.len() <= 8 {
                    J::from(be_u64(&b.magnitude))
                } else {
                    J::String(bigint_decimal(b))
                }
            }
            Value::Float(x) => match serde_json::Number::from_f64(*x) {
                Some(n) => J::Number(n),
                None if x.is_nan() => J::String("NaN".to_owned()),
                None if *x > 0.0 => J::String("Infinity".to_owned()),
                None => J::String("-Infinity".to_owned()),
            },
            Value::Str(s) => J::String(s.clone()),
            Value::Bytes(b) => {
                let mut object = serde_json::Map::new();
                object.insert("$bytes".to_owned(), J::String(hex::encode(b)));
                J::Object(object)
            }
            Value::List(items)
            | Value::Tuple(items)
            | Value::Set(items)
            | Value::FrozenSet(items) => J::Array(items.iter().map(Value::to_json).collect()),
            Value::Dict(entries) => {
                let mut object = serde_json::Map::new();
                for (k, v) in entries {
                    let key = match k {
                        Value::Str(s) => s.clone(),
                        other => other.preview(),
                    };
                    object.insert(key, v.to_json());
                }
                J::Object(object)
            }
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::None, Value::None) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::BigInt(a), Value::BigInt(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => {
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
            }
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::List(a), Value::List(b)) | (Value::Tuple(a), Value::Tuple(b)) => a == b,
            // Unordered collections: compare what they mean, which is their canonical encoding.
            (Value::Dict(_), Value::Dict(_))
            | (Value::Set(_), Value::Set(_))
            | (Value::FrozenSet(_), Value::FrozenSet(_)) => {
                encode_unchecked(self) == encode_unchecked(other)
            }
            _ => false,
        }
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Consistent with `eq`, which is equality of canonical encodings.
        encode_unchecked(self).hash(state);
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

impl From<i128> for Value {
    fn from(n: i128) -> Value {
        Value::from_i128(n)
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Value {
        Value::Float(x)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Value {
        Value::Bytes(b)
    }
}

fn be_u64(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0_u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// A non-negative `i64` as `u64` (`i64::cast_unsigned` is newer than our MSRV).
#[allow(clippy::cast_sign_loss)]
fn non_negative(n: i64) -> u64 {
    debug_assert!(n >= 0);
    n as u64
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------
//
// Every head and item is written by minicbor's `Encoder`, which always picks the shortest
// argument (RFC 8949 §4.2.1) and only writes definite lengths through the methods used here.
// What is canonical about the encoding is decided here: shortest float, one NaN, bignum
// boundaries, the tuple and set tags and the order of set members and map entries.

/// minicbor's `Encoder` over the output buffer, one method per head or item written.
///
/// Writing into the buffer cannot fail ([`Sink`]'s write error is `Infallible`) and the encoder
/// methods used here raise no error of their own, so these methods return nothing.
/// That also keeps minicbor's `Result`s out of the frames of the recursive functions below,
/// which matters for deeply nested values in unoptimised builds.
struct Writer<'a> {
    enc: minicbor::Encoder<Sink<'a>>,
}

/// The output buffer as a `minicbor::encode::Write`. minicbor implements that trait for
/// `Vec<u8>` itself, but not inline, so every head would cost a call into minicbor and a
/// `memmove`; defined here, it is inlined and a head of a few bytes is copied in place.
struct Sink<'a>(&'a mut Vec<u8>);

impl minicbor::encode::Write for Sink<'_> {
    type Error = Infallible;

    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> Result<(), Infallible> {
        self.0.extend_from_slice(buf);
        Ok(())
    }
}

/// Checks the result of one minicbor write; see [`Writer`].
#[inline]
fn written<T>(result: Result<T, minicbor::encode::Error<Infallible>>) {
    if let Err(e) = result {
        write_failed(&e);
    }
}

#[cold]
#[inline(never)]
fn write_failed(e: &minicbor::encode::Error<Infallible>) -> ! {
    unreachable!("writing CBOR into a Vec cannot fail: {e}")
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut Vec<u8>) -> Writer<'a> {
        Writer {
            enc: minicbor::Encoder::new(Sink(out)),
        }
    }

    /// How many bytes the buffer holds.
    fn len(&self) -> usize {
        self.enc.writer().0.len()
    }

    /// Appends items that minicbor has already written (into a scratch buffer).
    fn items(&mut self, encoded: &[u8]) {
        self.enc.writer_mut().0.extend_from_slice(encoded);
    }

    fn null(&mut self) {
        written(self.enc.null());
    }

    fn bool(&mut self, b: bool) {
        written(self.enc.bool(b));
    }

    fn u64(&mut self, n: u64) {
        written(self.enc.u64(n));
    }

    fn i64(&mut self, n: i64) {
        written(self.enc.i64(n));
    }

    /// An integer in `[-2^64, -1]`, which minicbor writes as major type 1.
    fn negative(&mut self, n: i128) {
        debug_assert!((-(1_i128 << 64)..0).contains(&n));
        written(self.enc.i128(n));
    }

    fn f16(&mut self, x: f32) {
        written(self.enc.f16(x));
    }

    fn f32(&mut self, x: f32) {
        written(self.enc.f32(x));
    }

    fn f64(&mut self, x: f64) {
        written(self.enc.f64(x));
    }

    fn str(&mut self, s: &str) {
        written(self.enc.str(s));
    }

    fn bytes(&mut self, b: &[u8]) {
        written(self.enc.bytes(b));
    }

    fn tag(&mut self, tag: u64) {
        written(self.enc.tag(Tag::new(tag)));
    }

    fn array(&mut self, len: usize) {
        written(self.enc.array(len as u64));
    }

    fn map(&mut self, len: usize) {
        written(self.enc.map(len as u64));
    }
}

/// The canonical `cbor` encoding of `value`; see the module documentation.
///
/// # Errors
///
/// [`ValueError::TooDeep`] for a value nested deeper than [`MAX_DEPTH`], which
/// [`decode_canonical`] would refuse.
pub fn encode_canonical(value: &Value) -> Result<Vec<u8>, ValueError> {
    let mut out = Vec::with_capacity(16);
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Appends the canonical encoding of `value` to `out`. Scalars, lists and tuples are written
/// straight into `out`; only sets and dicts use a temporary buffer, to sort their members.
///
/// # Errors
///
/// As [`encode_canonical`]; nothing is appended then.
pub fn encode_into(value: &Value, out: &mut Vec<u8>) -> Result<(), ValueError> {
    if nested_deeper_than(value, MAX_DEPTH) {
        return Err(ValueError::TooDeep { limit: MAX_DEPTH });
    }
    write_value(value, &mut Writer::new(out));
    Ok(())
}

/// The encoding without the limit check, for comparing what values mean (`Eq`, `Hash`).
fn encode_unchecked(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    write_value(value, &mut Writer::new(&mut out));
    out
}

/// Whether containers nest more than `levels` deep ([`Value::depth`] > `levels`), without
/// descending further than that: the decoder refuses to open a container at depth
/// [`MAX_DEPTH`] (counted from 0), so a value of depth [`MAX_DEPTH`] is the deepest it reads.
fn nested_deeper_than(value: &Value, levels: usize) -> bool {
    match value {
        Value::List(items) | Value::Tuple(items) | Value::Set(items) | Value::FrozenSet(items) => {
            levels == 0 || items.iter().any(|v| nested_deeper_than(v, levels - 1))
        }
        Value::Dict(entries) => {
            levels == 0
                || entries.iter().any(|(k, v)| {
                    nested_deeper_than(k, levels - 1) || nested_deeper_than(v, levels - 1)
                })
        }
        _ => false,
    }
}

fn write_value(value: &Value, w: &mut Writer<'_>) {
    match value {
        Value::None => w.null(),
        Value::Bool(b) => w.bool(*b),
        Value::Int(n) => w.i64(*n),
        Value::BigInt(b) => write_bigint(b, w),
        Value::Float(x) => write_f64(*x, w),
        Value::Str(s) => w.str(s),
        Value::Bytes(b) => w.bytes(b),
        Value::List(items) => write_array(items, w),
        Value::Tuple(items) => {
            w.tag(TAG_TUPLE);
            write_array(items, w);
        }
        Value::Set(items) => {
            w.tag(TAG_SET);
            write_sorted_members(items, w);
        }
        Value::FrozenSet(items) => {
            w.tag(TAG_FROZENSET);
            write_sorted_members(items, w);
        }
        Value::Dict(entries) => write_map(entries, w),
    }
}

fn write_bigint(b: &BigInt, w: &mut Writer<'_>) {
    // Work on the value, not on the invariant, so that the bytes are right however the
    // magnitude was built.
    let start = b
        .magnitude
        .iter()
        .position(|&x| x != 0)
        .unwrap_or(b.magnitude.len());
    let magnitude = &b.magnitude[start..];
    if !b.negative || magnitude.is_empty() {
        if magnitude.len() <= 8 {
            w.u64(be_u64(magnitude));
        } else {
            w.tag(TAG_POSITIVE_BIGNUM);
            w.bytes(magnitude);
        }
        return;
    }
    // Negative: the encoded argument is magnitude - 1.
    let mut arg = magnitude.to_vec();
    for byte in arg.iter_mut().rev() {
        if *byte == 0 {
            *byte = 0xff;
        } else {
            *byte -= 1;
            break;
        }
    }
    let start = arg.iter().position(|&x| x != 0).unwrap_or(arg.len());
    let arg = &arg[start..];
    if arg.len() <= 8 {
        w.negative(-1 - i128::from(be_u64(arg)));
    } else {
        w.tag(TAG_NEGATIVE_BIGNUM);
        w.bytes(arg);
    }
}

fn write_f64(x: f64, w: &mut Writer<'_>) {
    if x.is_nan() {
        // minicbor (through `half`) writes the quiet NaN as f97e00, the one canonical NaN.
        w.f16(f32::NAN);
        return;
    }
    #[allow(clippy::cast_possible_truncation)]
    let single = x as f32;
    if f64::from(single).to_bits() != x.to_bits() {
        w.f64(x);
    } else if f32_to_f16_exact(single).is_some() {
        // Exact, so minicbor's round-to-nearest conversion to binary16 does not round.
        w.f16(single);
    } else {
        w.f32(single);
    }
}

/// Whether binary16 holds `x` exactly (NaN excluded), and its bits if so.
fn f32_to_f16_exact(x: f32) -> Option<u16> {
    let bits = x.to_bits();
    #[allow(clippy::cast_possible_truncation)]
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exponent = (bits >> 23) & 0xff;
    let mantissa = bits & 0x7f_ffff;
    if exponent == 0xff {
        // Infinity (NaN never gets here).
        return (mantissa == 0).then_some(sign | 0x7c00);
    }
    if exponent == 0 {
        // Zero; binary32 subnormals are far below the binary16 range.
        return (mantissa == 0).then_some(sign);
    }
    let e = i64::from(exponent) - 127;
    if (-14..=15).contains(&e) {
        // Normal binary16: 10 mantissa bits, the low 13 must be zero.
        if mantissa & 0x1fff != 0 {
            return None;
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let biased = (e + 15) as u16;
        #[allow(clippy::cast_possible_truncation)]
        let m = (mantissa >> 13) as u16;
        return Some(sign | (biased << 10) | m);
    }
    if (-24..=-15).contains(&e) {
        // Subnormal binary16: value = h * 2^-24 with h = significand * 2^(e + 1 - 23 + 23).
        let significand = 0x80_0000 | mantissa;
        #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
        let shift = (-(e + 1)) as u32; // 14..=23
        if significand & ((1 << shift) - 1) != 0 {
            return None;
        }
        #[allow(clippy::cast_possible_truncation)]
        let h = (significand >> shift) as u16;
        return Some(sign | h);
    }
    None
}

fn write_array(items: &[Value], w: &mut Writer<'_>) {
    w.array(items.len());
    for item in items {
        write_value(item, w);
    }
}

/// Encodes `items` into one scratch buffer, sorts the encodings bytewise, drops duplicates and
/// writes the array.
fn write_sorted_members(items: &[Value], w: &mut Writer<'_>) {
    if items.len() <= 1 {
        write_array(items, w);
        return;
    }
    let mut scratch = Vec::with_capacity(items.len() * 4);
    let mut spans = Vec::with_capacity(items.len());
    {
        let mut members = Writer::new(&mut scratch);
        for item in items {
            let start = members.len();
            write_value(item, &mut members);
            spans.push((start, members.len()));
        }
    }
    spans.sort_unstable_by(|a, b| scratch[a.0..a.1].cmp(&scratch[b.0..b.1]));
    spans.dedup_by(|a, b| scratch[a.0..a.1] == scratch[b.0..b.1]);
    w.array(spans.len());
    for (start, end) in spans {
        w.items(&scratch[start..end]);
    }
}

/// Sorts entries by the encoding of their keys; of entries with equal keys the last one wins.
fn write_map(entries: &[(Value, Value)], w: &mut Writer<'_>) {
    if entries.len() <= 1 {
        w.map(entries.len());
        for (k, v) in entries {
            write_value(k, w);
            write_value(v, w);
        }
        return;
    }
    let mut scratch = Vec::with_capacity(entries.len() * 8);
    // (key start, key end = value start, value end)
    let mut spans = Vec::with_capacity(entries.len());
    {
        let mut items = Writer::new(&mut scratch);
        for (k, v) in entries {
            let start = items.len();
            write_value(k, &mut items);
            let middle = items.len();
            write_value(v, &mut items);
            spans.push((start, middle, items.len()));
        }
    }
    // Stable, so equal keys stay in insertion order and the last of each run is the newest.
    spans.sort_by(|a, b| scratch[a.0..a.1].cmp(&scratch[b.0..b.1]));
    let mut kept: Vec<(usize, usize, usize)> = Vec::with_capacity(spans.len());
    for span in spans {
        match kept.last_mut() {
            Some(last) if scratch[last.0..last.1] == scratch[span.0..span.1] => *last = span,
            _ => kept.push(span),
        }
    }
    w.map(kept.len());
    for (start, _, end) in kept {
        w.items(&scratch[start..end]);
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------
//
// Items are read by minicbor's `Decoder`. It is lenient where canonical CBOR is strict: it
// accepts arguments wider than needed, so every head's width is checked against its argument
// (from the decoder's position before and after the head); its `datatype` tells indefinite
// lengths, reserved additional information, breaks and simple values apart, and those are
// rejected here before minicbor is asked to read them. Lengths are checked against the input
// that is left before anything is allocated.

/// Decodes a canonical `cbor` encoding, rejecting anything [`encode_canonical`] would not
/// produce. Sets come back sorted and dicts in key order, so `decode_canonical(&v.encode()?)`
/// equals `v`.
///
/// # Errors
///
/// A [`ValueError`] naming the first problem and its byte offset.
pub fn decode_canonical(bytes: &[u8]) -> Result<Value, ValueError> {
    let mut reader = Reader {
        dec: minicbor::Decoder::new(bytes),
    };
    let value = reader.item(0)?;
    let end = reader.dec.position();
    if end != bytes.len() {
        return Err(ValueError::TrailingBytes {
            count: bytes.len().saturating_sub(end),
        });
    }
    Ok(value)
}

/// The length of a head whose argument is `arg`, in its shortest form.
fn shortest_head_len(arg: u64) -> usize {
    match arg {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// The length of the head that starts with `initial` (additional information 0..=27).
fn head_len(initial: u8) -> usize {
    match initial & 0x1f {
        24 => 2,
        25 => 3,
        26 => 5,
        27 => 9,
        _ => 1,
    }
}

struct Reader<'b> {
    dec: minicbor::Decoder<'b>,
}

impl<'b> Reader<'b> {
    fn input(&self) -> &'b [u8] {
        self.dec.input()
    }

    fn remaining(&self) -> usize {
        self.input().len().saturating_sub(self.dec.position())
    }

    fn truncated(&self) -> ValueError {
        ValueError::UnexpectedEnd {
            offset: self.input().len(),
        }
    }

    /// Maps a minicbor error. After the type checks here the only one it can report is the end
    /// of the input; anything else is reported as an unsupported item rather than trusted.
    fn error(&self, e: &minicbor::decode::Error, offset: usize) -> ValueError {
        if e.is_end_of_input() {
            self.truncated()
        } else {
            ValueError::Unsupported {
                offset,
                reason: "malformed item",
            }
        }
    }

    fn datatype(&self, offset: usize) -> Result<Type, ValueError> {
        self.dec.datatype().map_err(|e| self.error(&e, offset))
    }

    /// Rejects a head at `offset..head_end` whose argument `arg` would fit a shorter head.
    fn check_head(offset: usize, head_end: usize, arg: u64) -> Result<(), ValueError> {
        if head_end.checked_sub(offset) == Some(shortest_head_len(arg)) {
            Ok(())
        } else {
            Err(ValueError::NonCanonical {
                offset,
                reason: "argument not in its shortest form",
            })
        }
    }

    /// Reads a definite byte string (the datatype has been checked).
    fn byte_string(&mut self, offset: usize) -> Result<&'b [u8], ValueError> {
        // Besides the end of the input, minicbor only fails a length that does not fit a
        // `usize`, which the input cannot hold either.
        let content = self.dec.bytes().map_err(|_| self.truncated())?;
        let head_end = self.dec.position() - content.len();
        Self::check_head(offset, head_end, content.len() as u64)?;
        Ok(content)
    }

    /// Reads a definite text string (the datatype has been checked).
    fn text_string(&mut self, offset: usize) -> Result<&'b str, ValueError> {
        match self.dec.str() {
            Ok(text) => {
                let head_end = self.dec.position() - text.len();
                Self::check_head(offset, head_end, text.len() as u64)?;
                Ok(text)
            }
            Err(e) if e.is_end_of_input() => Err(self.truncated()),
            Err(_) => {
                // Either the content was read and is not UTF-8, or (where `usize` is narrower
                // than 64 bits) the length does not fit a `usize` and nothing was read.
                let initial = self.input().get(offset).copied().unwrap_or(0);
                if self.dec.position() > offset + head_len(initial) {
                    Err(ValueError::InvalidUtf8 { offset })
                } else {
                    Err(self.truncated())
                }
            }
        }
    }

    /// Refuses to open a container at `depth` or deeper than [`MAX_DEPTH`].
    fn enter(depth: usize) -> Result<(), ValueError> {
        if depth >= MAX_DEPTH {
            Err(ValueError::TooDeep { limit: MAX_DEPTH })
        } else {
            Ok(())
        }
    }

    /// The element count of an array or map whose head (at `offset`) minicbor has just read,
    /// checked for a definite length, its shortest form, and against the input that is left
    /// (each element takes at least `bytes_per_element` bytes).
    fn definite_length(
        &self,
        offset: usize,
        len: Option<u64>,
        bytes_per_element: usize,
    ) -> Result<usize, ValueError> {
        let Some(n) = len else {
            return Err(ValueError::IndefiniteLength { offset });
        };
        Self::check_head(offset, self.dec.position(), n)?;
        match usize::try_from(n) {
            Ok(n) if n <= self.remaining() / bytes_per_element => Ok(n),
            _ => Err(self.truncated()),
        }
    }

    // The heads of containers are read outside the recursive functions, so that minicbor's
    // errors take no room in their frames.

    /// Reads the head of the array at `offset`, opened at `depth`: its element count.
    fn array_head(&mut self, offset: usize, depth: usize) -> Result<usize, ValueError> {
        Self::enter(depth)?;
        let len = self.dec.array().map_err(|e| self.error(&e, offset))?;
        self.definite_length(offset, len, 1)
    }

    /// Reads the head of the map at `offset`, opened at `depth`: its entry count.
    fn map_head(&mut self, offset: usize, depth: usize) -> Result<usize, ValueError> {
        Self::enter(depth)?;
        let len = self.dec.map().map_err(|e| self.error(&e, offset))?;
        self.definite_length(offset, len, 2)
    }

    /// Reads the tag head at `offset`: the tag number.
    fn tag_head(&mut self, offset: usize) -> Result<u64, ValueError> {
        let tag = self.dec.tag().map_err(|e| self.error(&e, offset))?.as_u64();
        Self::check_head(offset, self.dec.position(), tag)?;
        Ok(tag)
    }

    fn item(&mut self, depth: usize) -> Result<Value, ValueError> {
        let offset = self.dec.position();
        match self.datatype(offset)? {
            Type::Array | Type::ArrayIndef => self.array(offset, depth),
            Type::Map | Type::MapIndef => self.map(offset, depth),
            Type::Tag => self.tagged(offset, depth),
            other => self.scalar(offset, other),
        }
    }

    /// Any item but an array, a map or a tag, whose datatype minicbor has named.
    fn scalar(&mut self, offset: usize, datatype: Type) -> Result<Value, ValueError> {
        match datatype {
            Type::U8 | Type::U16 | Type::U32 | Type::U64 => {
                let n = self.dec.u64().map_err(|e| self.error(&e, offset))?;
                Self::check_head(offset, self.dec.position(), n)?;
                Ok(match i64::try_from(n) {
                    Ok(small) => Value::Int(small),
                    Err(_) => Value::from_sign_magnitude(false, &n.to_be_bytes()),
                })
            }
            Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => {
                let n = i128::from(self.dec.int().map_err(|e| self.error(&e, offset))?);
                // Major type 1 holds -1 - arg, so arg = -1 - n, in 0..2^64.
                let arg = u64::try_from(-1 - n).map_err(|_| ValueError::Unsupported {
                    offset,
                    reason: "malformed item",
                })?;
                Self::check_head(offset, self.dec.position(), arg)?;
                Ok(Value::from_i128(n))
            }
            Type::Bytes => Ok(Value::Bytes(self.byte_string(offset)?.to_vec())),
            Type::String => Ok(Value::Str(self.text_string(offset)?.to_owned())),
            Type::BytesIndef | Type::StringIndef => Err(ValueError::IndefiniteLength { offset }),
            Type::Bool => Ok(Value::Bool(
                self.dec.bool().map_err(|e| self.error(&e, offset))?,
            )),
            Type::Null => {
                self.dec.null().map_err(|e| self.error(&e, offset))?;
                Ok(Value::None)
            }
            Type::F16 => {
                let half = self.dec.f16().map_err(|e| self.error(&e, offset))?;
                // minicbor returns the value, not its bits: the one canonical NaN, f97e00, is
                // checked on the input.
                let raw = self.input().get(offset + 1..offset + 3);
                if half.is_nan() && raw != Some(&CANONICAL_NAN_F16.to_be_bytes()[..]) {
                    return Err(ValueError::NonCanonical {
                        offset,
                        reason: "NaN other than f97e00",
                    });
                }
                Ok(Value::Float(f64::from(half)))
            }
            Type::F32 => {
                let single = self.dec.f32().map_err(|e| self.error(&e, offset))?;
                if single.is_nan() || f32_to_f16_exact(single).is_some() {
                    return Err(ValueError::NonCanonical {
                        offset,
                        reason: "float not in its shortest exact form",
                    });
                }
                Ok(Value::Float(f64::from(single)))
            }
            Type::F64 => {
                let x = self.dec.f64().map_err(|e| self.error(&e, offset))?;
                #[allow(clippy::cast_possible_truncation)]
                let fits_f32 = f64::from(x as f32).to_bits() == x.to_bits();
                if x.is_nan() || fits_f32 {
                    return Err(ValueError::NonCanonical {
                        offset,
                        reason: "float not in its shortest exact form",
                    });
                }
                Ok(Value::Float(x))
            }
            Type::Undefined | Type::Simple => Err(ValueError::Unsupported {
                offset,
                reason: "simple value other than false, true and null",
            }),
            Type::Break => Err(ValueError::Unsupported {
                offset,
                reason: "break outside an indefinite-length item",
            }),
            // minicbor names no type for additional information 28..=31 of major types 0, 1
            // and 6, nor for 28..=30 of the others.
            Type::Unknown(initial) if initial & 0x1f == 31 => {
                Err(ValueError::IndefiniteLength { offset })
            }
            Type::Unknown(initial) if initial >> 5 == 7 => Err(ValueError::Unsupported {
                offset,
                reason: "simple value other than false, true and null",
            }),
            Type::Unknown(_) => Err(ValueError::Unsupported {
                offset,
                reason: "reserved additional information",
            }),
            Type::Array | Type::ArrayIndef | Type::Map | Type::MapIndef | Type::Tag => {
                Err(ValueError::Unsupported {
                    offset,
                    reason: "container where a scalar was expected",
                })
            }
        }
    }

    fn array(&mut self, offset: usize, depth: usize) -> Result<Value, ValueError> {
        let len = self.array_head(offset, depth)?;
        let mut items = Vec::with_capacity(len);
        for _ in 0..len {
            items.push(self.item(depth + 1)?);
        }
        Ok(Value::List(items))
    }

    fn map(&mut self, offset: usize, depth: usize) -> Result<Value, ValueError> {
        let len = self.map_head(offset, depth)?;
        let mut entries = Vec::with_capacity(len);
        let mut previous_key: Option<&'b [u8]> = None;
        for _ in 0..len {
            let key_start = self.dec.position();
            let key = self.item(depth + 1)?;
            let key_bytes = &self.input()[key_start..self.dec.position()];
            if previous_key.is_some_and(|prev| prev >= key_bytes) {
                return Err(ValueError::NonCanonical {
                    offset: key_start,
                    reason: "map keys not in strictly increasing bytewise order",
                });
            }
            previous_key = Some(key_bytes);
            let value = self.item(depth + 1)?;
            entries.push((key, value));
        }
        Ok(Value::Dict(entries))
    }

    fn tagged(&mut self, offset: usize, depth: usize) -> Result<Value, ValueError> {
        let tag = self.tag_head(offset)?;
        match tag {
            TAG_POSITIVE_BIGNUM | TAG_NEGATIVE_BIGNUM => self.bignum(offset, tag),
            TAG_TUPLE | TAG_SET | TAG_FROZENSET => self.collection(tag, depth),
            _ => Err(ValueError::UnknownTag { offset, tag }),
        }
    }

    /// The array inside a tuple, set or frozenset tag.
    fn collection(&mut self, tag: u64, depth: usize) -> Result<Value, ValueError> {
        let inner = self.dec.position();
        if !matches!(self.datatype(inner)?, Type::Array | Type::ArrayIndef) {
            return Err(ValueError::Unsupported {
                offset: inner,
                reason: "tuple, set and frozenset tags must wrap an array",
            });
        }
        let len = self.array_head(inner, depth)?;
        let mut items = Vec::with_capacity(len);
        let mut previous: Option<&'b [u8]> = None;
        for _ in 0..len {
            let start = self.dec.position();
            items.push(self.item(depth + 1)?);
            if tag != TAG_TUPLE {
                let member = &self.input()[start..self.dec.position()];
                if previous.is_some_and(|prev| prev >= member) {
                    return Err(ValueError::NonCanonical {
                        offset: start,
                        reason: "set members not in strictly increasing bytewise order",
                    });
                }
                previous = Some(member);
            }
        }
        Ok(match tag {
            TAG_TUPLE => Value::Tuple(items),
            TAG_SET => Value::Set(items),
            _ => Value::FrozenSet(items),
        })
    }

    fn bignum(&mut self, offset: usize, tag: u64) -> Result<Value, ValueError> {
        let inner = self.dec.position();
        match self.datatype(inner)? {
            Type::Bytes => {}
            Type::BytesIndef => return Err(ValueError::IndefiniteLength { offset: inner }),
            _ => {
                return Err(ValueError::Unsupported {
                    offset: inner,
                    reason: "a bignum tag must wrap a byte string",
                })
            }
        }
        let content = self.byte_string(inner)?;
        // Canonical bignums are exactly the integers that major types 0/1 cannot hold:
        // a content of more than 8 bytes without a leading zero.
        if content.len() <= 8 || content[0] == 0 {
            return Err(ValueError::NonCanonical {
                offset,
                reason: "bignum that is not minimal or fits a plain integer",
            });
        }
        if tag == TAG_POSITIVE_BIGNUM {
            return Ok(Value::BigInt(BigInt {
                negative: false,
                magnitude: content.to_vec(),
            }));
        }
        // magnitude = content + 1
        let mut magnitude = content.to_vec();
        let mut carry = true;
        for byte in magnitude.iter_mut().rev() {
            let (sum, overflow) = byte.overflowing_add(1);
            *byte = sum;
            if !overflow {
                carry = false;
                break;
            }
        }
        if carry {
            magnitude.insert(0, 1);
        }
        Ok(Value::BigInt(BigInt {
            negative: true,
            magnitude,
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Codecs and ids
// ---------------------------------------------------------------------------------------------

/// How a value's bytes are to be read. The number is stored and hashed into the [`ValueId`]:
/// it must never change.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Codec {
    /// Canonical CBOR of a [`Value`].
    Cbor = 1,
    /// A numpy array as an [`NpyArray`].
    Npy = 2,
    /// A Python pickle (protocol 5): not canonical, and decoding it runs code.
    Pickle = 3,
    /// Opaque bytes.
    Raw = 4,
}

impl Codec {
    /// Every codec, in number order.
    pub const ALL: [Codec; 4] = [Codec::Cbor, Codec::Npy, Codec::Pickle, Codec::Raw];

    /// The lowercase name: `cbor`, `npy`, `pickle` or `raw`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Cbor => "cbor",
            Codec::Npy => "npy",
            Codec::Pickle => "pickle",
            Codec::Raw => "raw",
        }
    }

    /// The stored number.
    #[must_use]
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The codec with this stored number.
    ///
    /// # Errors
    ///
    /// [`ValueError::UnknownCodec`] for a number no codec has.
    pub fn from_u8(n: u8) -> Result<Codec, ValueError> {
        Codec::ALL
            .into_iter()
            .find(|c| c.as_u8() == n)
            .ok_or_else(|| ValueError::UnknownCodec {
                name: n.to_string(),
            })
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Codec {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Codec, ValueError> {
        Codec::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ValueError::UnknownCodec { name: s.to_owned() })
    }
}

impl serde::Serialize for Codec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Codec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Codec, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The id of a stored value: BLAKE3 over the codec number followed by the bytes, truncated to
/// 128 bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ValueId(pub [u8; 16]);

impl ValueId {
    /// The id of `bytes` read with `codec`.
    #[must_use]
    pub fn of(codec: Codec, bytes: &[u8]) -> ValueId {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&[codec.as_u8()]);
        hasher.update(bytes);
        let mut id = [0; 16];
        id.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        ValueId(id)
    }

    /// The id of a value's canonical encoding.
    ///
    /// # Errors
    ///
    /// As [`encode_canonical`].
    pub fn of_value(value: &Value) -> Result<ValueId, ValueError> {
        Ok(ValueId::of(Codec::Cbor, &encode_canonical(value)?))
    }

    /// 32 lowercase hex digits.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 32 hex digits (either case).
    ///
    /// # Errors
    ///
    /// [`ValueError::InvalidValueId`] for anything else.
    pub fn from_hex(s: &str) -> Result<ValueId, ValueError> {
        let mut id = [0; 16];
        hex::decode_to_slice(s, &mut id).map_err(|_| ValueError::InvalidValueId {
            input: s.chars().take(64).collect(),
        })?;
        Ok(ValueId(id))
    }

    /// The 16 id bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for ValueId {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<ValueId, ValueError> {
        ValueId::from_hex(s)
    }
}

impl serde::Serialize for ValueId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for ValueId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ValueId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        ValueId::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Bytes together with the codec that reads them: what the store keeps for a value.
/// On the wire (serde): `{"codec": "cbor", "bytes": "<hex>"}`.
///
/// A value has no id field: its id is always derived from its codec and bytes ([`Self::id`]),
/// never taken from whoever built it. Its bytes may come from anywhere (the fields are public,
/// and wire payloads decode into it); [`Self::check`] says whether the store could read them
/// back.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct EncodedValue {
    pub codec: Codec,
    #[serde(with = "hex::serde")]
    pub bytes: Vec<u8>,
}

impl EncodedValue {
    /// The canonical `cbor` encoding of `value`.
    ///
    /// # Errors
    ///
    /// [`ValueError::TooDeep`] for a value nested deeper than [`MAX_DEPTH`].
    pub fn from_value(value: &Value) -> Result<EncodedValue, ValueError> {
        Ok(EncodedValue {
            codec: Codec::Cbor,
            bytes: encode_canonical(value)?,
        })
    }

    /// A numpy array in the `npy` layout.
    ///
    /// # Errors
    ///
    /// [`ValueError::InvalidNpy`] for an array that [`NpyArray::decode`] would not read back
    /// (one not built by [`NpyArray::new`]).
    pub fn npy(array: &NpyArray) -> Result<EncodedValue, ValueError> {
        array.validate()?;
        Ok(EncodedValue {
            codec: Codec::Npy,
            bytes: array.encode(),
        })
    }

    /// Pickle bytes, as Python produced them.
    #[must_use]
    pub fn pickle(bytes: Vec<u8>) -> EncodedValue {
        EncodedValue {
            codec: Codec::Pickle,
            bytes,
        }
    }

    /// Opaque bytes.
    #[must_use]
    pub fn raw(bytes: Vec<u8>) -> EncodedValue {
        EncodedValue {
            codec: Codec::Raw,
            bytes,
        }
    }

    /// The value id: BLAKE3 over the codec number and the bytes, 128 bits.
    #[must_use]
    pub fn id(&self) -> ValueId {
        ValueId::of(self.codec, &self.bytes)
    }

    /// Checks that the bytes are what their codec's decoder reads back: canonical CBOR within
    /// every limit of [`decode_canonical`] for `cbor`, the layout of [`NpyArray::decode`] for
    /// `npy`. `pickle` and `raw` bytes are not checked (reading a pickle runs code; raw bytes
    /// are anything).
    ///
    /// # Errors
    ///
    /// The decoder's error.
    pub fn check(&self) -> Result<(), ValueError> {
        match self.codec {
            Codec::Cbor => decode_canonical(&self.bytes).map(drop),
            Codec::Npy => npy_check(&self.bytes),
            Codec::Pickle | Codec::Raw => Ok(()),
        }
    }

    /// The short human preview; see [`preview`].
    #[must_use]
    pub fn preview(&self) -> String {
        preview(self.codec, &self.bytes)
    }

    /// Decodes a `cbor` value.
    ///
    /// # Errors
    ///
    /// [`ValueError::WrongCodec`] for another codec, or the decoding error.
    pub fn to_value(&self) -> Result<Value, ValueError> {
        match self.codec {
            Codec::Cbor => decode_canonical(&self.bytes),
            found => Err(ValueError::WrongCodec {
                expected: Codec::Cbor,
                found,
            }),
        }
    }

    /// Decodes an `npy` array.
    ///
    /// # Errors
    ///
    /// [`ValueError::WrongCodec`] for another codec, or the decoding error.
    pub fn to_npy(&self) -> Result<NpyArray, ValueError> {
        match self.codec {
            Codec::Npy => NpyArray::decode(&self.bytes),
            found => Err(ValueError::WrongCodec {
                expected: Codec::Npy,
                found,
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// npy
// ---------------------------------------------------------------------------------------------

const NPY_MAGIC: &[u8; 6] = b"MTNPY\x01";
/// The most dimensions an `npy` value has, for [`NpyArray::new`] and [`NpyArray::decode`]
/// alike: numpy's own limit (`NPY_MAXDIMS` is 64 since numpy 2).
pub const NPY_MAX_DIMS: usize = 64;
/// The longest dtype string of an `npy` value, for [`NpyArray::new`] and [`NpyArray::decode`]
/// alike.
pub const NPY_MAX_DTYPE_LEN: usize = 64;

/// A numpy array as the `npy` codec stores it: dtype, shape and C-order data.
///
/// Byte layout (all integers little-endian):
///
/// ```text
/// magic   6 bytes  "MTNPY" 0x01   (0x01 is the layout version)
/// dlen    u32      length of the dtype string
/// dtype   dlen     ASCII, numpy's `dtype.str` normalised (below)
/// ndim    u32      number of dimensions (0 for a scalar array)
/// shape   ndim × u64
/// data    the rest: product(shape) × itemsize bytes, C order
/// ```
///
/// The dtype is numpy's `dtype.str` (`"<f8"`, `">i4"`, `"|b1"`, `"<U5"`, `"<M8[ns]"`): a byte
/// order (`<`, `>` or `|`), a kind (`b i u f c m M S U V`) and a size, plus a unit for
/// datetimes. [`NpyArray::new`] normalises it so that equal arrays get equal bytes: `=` becomes
/// the native order, and kinds without byte order (`b`, `S`, `V` and 1-byte types) get `|`.
/// Object arrays (`O`) and structured dtypes have no `npy` encoding: pickle them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NpyArray {
    pub dtype: String,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

impl NpyArray {
    /// An array with a normalised dtype, checked against its shape and data.
    ///
    /// # Errors
    ///
    /// [`ValueError::InvalidNpy`] for an unsupported dtype, an absurd shape, or data whose
    /// length is not `product(shape) × itemsize`.
    pub fn new(dtype: &str, shape: Vec<u64>, data: Vec<u8>) -> Result<NpyArray, ValueError> {
        let dtype = normalize_dtype(dtype)?;
        let array = NpyArray { dtype, shape, data };
        array.validate()?;
        Ok(array)
    }

    /// The item size in bytes that the dtype denotes.
    ///
    /// # Errors
    ///
    /// [`ValueError::InvalidNpy`] for an unsupported dtype.
    pub fn itemsize(&self) -> Result<u64, ValueError> {
        Ok(parse_dtype(&self.dtype)?.itemsize)
    }

    /// The number of elements, `product(shape)`.
    ///
    /// # Errors
    ///
    /// [`ValueError::InvalidNpy`] if the product overflows.
    pub fn len(&self) -> Result<u64, ValueError> {
        element_count(&self.shape)
    }

    /// Whether the array has no elements.
    ///
    /// # Errors
    ///
    /// As [`NpyArray::len`].
    pub fn is_empty(&self) -> Result<bool, ValueError> {
        Ok(self.len()? == 0)
    }

    /// Writes the fields verbatim in the layout above. Build the array with [`NpyArray::new`]
    /// so that the dtype is normalised.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(6 + 8 + self.dtype.len() + 8 * self.shape.len() + self.data.len());
        out.extend_from_slice(NPY_MAGIC);
        #[allow(clippy::cast_possible_truncation)]
        out.extend_from_slice(&(self.dtype.len() as u32).to_le_bytes());
        out.extend_from_slice(self.dtype.as_bytes());
        #[allow(clippy::cast_possible_truncation)]
        out.extend_from_slice(&(self.shape.len() as u32).to_le_bytes());
        for dim in &self.shape {
            out.extend_from_slice(&dim.to_le_bytes());
        }
        out.extend_from_slice(&self.data);
        out
    }

    /// Reads the layout above, accepting only what [`NpyArray::new`] + [`NpyArray::encode`]
    /// produce.
    ///
    /// # Errors
    ///
    /// [`ValueError::InvalidNpy`] naming the problem.
    pub fn decode(bytes: &[u8]) -> Result<NpyArray, ValueError> {
        let (dtype, shape, data_start) = npy_header(bytes)?;
        let array = NpyArray {
            dtype,
            shape,
            data: bytes[data_start..].to_vec(),
        };
        array.validate()?;
        Ok(array)
    }

    fn validate(&self) -> Result<(), ValueError> {
        if self.shape.len() > NPY_MAX_DIMS {
            return Err(npy_error(format!(
                "{} dimensions (at most {NPY_MAX_DIMS})",
                self.shape.len()
            )));
        }
        if normalize_dtype(&self.dtype)? != self.dtype {
            return Err(npy_error(format!(
                "dtype {:?} is not normalised",
                self.dtype
            )));
        }
        let expected = expected_data_len(&self.dtype, &self.shape)?;
        if self.data.len() as u64 != expected {
            return Err(npy_error(format!(
                "data is {} bytes, dtype {} and shape {:?} need {expected}",
                self.data.len(),
                self.dtype,
                self.shape
            )));
        }
        Ok(())
    }
}

/// What [`NpyArray::decode`] checks, without copying the data.
fn npy_check(bytes: &[u8]) -> Result<(), ValueError> {
    let (dtype, shape, data_start) = npy_header(bytes)?;
    if normalize_dtype(&dtype)? != dtype {
        return Err(npy_error(format!("dtype {dtype:?} is not normalised")));
    }
    let expected = expected_data_len(&dtype, &shape)?;
    let len = (bytes.len() - data_start) as u64;
    if len != expected {
        return Err(npy_error(format!(
            "data is {len} bytes, dtype {dtype} and shape {shape:?} need {expected}"
        )));
    }
    Ok(())
}

fn npy_error(reason: impl Into<String>) -> ValueError {
    ValueError::InvalidNpy {
        reason: reason.into(),
    }
}

/// Parses the header: (dtype, shape, offset of the data). Checks the header only.
fn npy_header(bytes: &[u8]) -> Result<(String, Vec<u64>, usize), ValueError> {
    let truncated = || npy_error("truncated header");
    if bytes.len() < NPY_MAGIC.len() || &bytes[..NPY_MAGIC.len()] != NPY_MAGIC {
        return Err(npy_error("missing MTNPY magic or unknown layout version"));
    }
    let mut pos = NPY_MAGIC.len();
    let read_u32 = |pos: &mut usize| -> Result<usize, ValueError> {
        let raw = bytes.get(*pos..*pos + 4).ok_or_else(truncated)?;
        *pos += 4;
        let n = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        usize::try_from(n).map_err(|_| truncated())
    };
    let dtype_len = read_u32(&mut pos)?;
    if dtype_len > NPY_MAX_DTYPE_LEN {
        return Err(npy_error("dtype string too long"));
    }
    let dtype_raw = bytes.get(pos..pos + dtype_len).ok_or_else(truncated)?;
    let dtype = std::str::from_utf8(dtype_raw)
        .map_err(|_| npy_error("dtype is not ASCII"))?
        .to_owned();
    pos += dtype_len;
    let ndim = read_u32(&mut pos)?;
    if ndim > NPY_MAX_DIMS {
        return Err(npy_error(format!(
            "{ndim} dimensions (at most {NPY_MAX_DIMS})"
        )));
    }
    let mut shape = Vec::with_capacity(ndim);
    for _ in 0..ndim {
        let raw = bytes.get(pos..pos + 8).ok_or_else(truncated)?;
        let mut dim = [0; 8];
        dim.copy_from_slice(raw);
        shape.push(u64::from_le_bytes(dim));
        pos += 8;
    }
    Ok((dtype, shape, pos))
}

struct Dtype {
    order: u8,
    kind: u8,
    itemsize: u64,
}

fn parse_dtype(dtype: &str) -> Result<Dtype, ValueError> {
    let bad = || npy_error(format!("unsupported dtype {dtype:?}"));
    let bytes = dtype.as_bytes();
    if bytes.len() < 3 || bytes.len() > NPY_MAX_DTYPE_LEN || !dtype.is_ascii() {
        return Err(bad());
    }
    let order = bytes[0];
    let kind = bytes[1];
    if !matches!(order, b'<' | b'>' | b'|' | b'=') {
        return Err(bad());
    }
    let rest = &dtype[2..];
    let (digits, unit) = match rest.find('[') {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return Err(bad());
    }
    let count: u64 = digits.parse().map_err(|_| bad())?;
    let itemsize = match kind {
        b'b' if count == 1 => 1,
        b'i' | b'u' if matches!(count, 1 | 2 | 4 | 8) => count,
        b'f' if matches!(count, 2 | 4 | 8 | 12 | 16) => count,
        b'c' if matches!(count, 8 | 16 | 24 | 32) => count,
        b'm' | b'M' if count == 8 => 8,
        b'S' | b'V' => count,
        b'U' => count.checked_mul(4).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    match (kind, unit) {
        (b'm' | b'M', Some(unit)) => {
            let inner = unit
                .strip_prefix('[')
                .and_then(|u| u.strip_suffix(']'))
                .ok_or_else(bad)?;
            if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(bad());
            }
        }
        (_, None) => {}
        (_, Some(_)) => return Err(bad()),
    }
    Ok(Dtype {
        order,
        kind,
        itemsize,
    })
}

fn normalize_dtype(dtype: &str) -> Result<String, ValueError> {
    let parsed = parse_dtype(dtype)?;
    let orderless = matches!(parsed.kind, b'b' | b'S' | b'V') || parsed.itemsize <= 1;
    let order = if orderless {
        b'|'
    } else {
        match parsed.order {
            b'=' if cfg!(target_endian = "little") => b'<',
            b'=' => b'>',
            b'|' => return Err(npy_error(format!("dtype {dtype:?} needs a byte order"))),
            other => other,
        }
    };
    let mut normalized = String::with_capacity(dtype.len());
    normalized.push(char::from(order));
    normalized.push_str(&dtype[1..]);
    Ok(normalized)
}

fn element_count(shape: &[u64]) -> Result<u64, ValueError> {
    // numpy indexes with a signed pointer-sized integer; nothing beyond i64 is an array.
    let limit = non_negative(i64::MAX);
    let mut count: u64 = 1;
    for &dim in shape {
        if dim > limit {
            return Err(npy_error(format!("absurd dimension {dim}")));
        }
        count = count
            .checked_mul(dim)
            .filter(|&c| c <= limit)
            .ok_or_else(|| npy_error(format!("shape {shape:?} is too large")))?;
    }
    Ok(count)
}

fn expected_data_len(dtype: &str, shape: &[u64]) -> Result<u64, ValueError> {
    let itemsize = parse_dtype(dtype)?.itemsize;
    element_count(shape)?
        .checked_mul(itemsize)
        .filter(|&n| n <= non_negative(i64::MAX))
        .ok_or_else(|| npy_error(format!("shape {shape:?} of {dtype} is too large")))
}

// ---------------------------------------------------------------------------------------------
// Previews
// ---------------------------------------------------------------------------------------------

/// A human preview of stored bytes, at most [`PREVIEW_MAX_CHARS`] characters: a Python-like
/// repr for `cbor`, `array<f8>[3, 4]` for `npy`, `<pickle, N bytes>` and `<N bytes>` otherwise.
/// Never fails: bytes that do not decode get a `<invalid …>` preview.
#[must_use]
pub fn preview(codec: Codec, bytes: &[u8]) -> String {
    let text = match codec {
        Codec::Cbor => match decode_canonical(bytes) {
            Ok(value) => return value.preview(),
            Err(_) => format!("<invalid cbor, {} bytes>", bytes.len()),
        },
        Codec::Npy => match npy_header(bytes) {
            Ok((dtype, shape, _)) => {
                let kind = dtype.get(1..).unwrap_or("?");
                let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
                format!("array<{kind}>[{}]", dims.join(", "))
            }
            Err(_) => format!("<invalid npy, {} bytes>", bytes.len()),
        },
        Codec::Pickle => format!("<pickle, {} bytes>", bytes.len()),
        Codec::Raw => format!("<{} bytes>", bytes.len()),
    };
    let mut writer = PreviewWriter::new(PREVIEW_MAX_CHARS);
    let _ = writer.write_str(&text);
    writer.finish()
}

/// Collects at most `limit + 1` characters, then refuses more so that a huge value stops
/// being rendered as soon as its preview is known to be cut.
struct PreviewWriter {
    out: String,
    chars: usize,
    limit: usize,
}

impl PreviewWriter {
    fn new(limit: usize) -> PreviewWriter {
        PreviewWriter {
            out: String::with_capacity(limit + 4),
            chars: 0,
            limit,
        }
    }

    fn finish(mut self) -> String {
        if self.chars > self.limit {
            let cut = self
                .out
                .char_indices()
                .nth(self.limit - 1)
                .map_or(self.out.len(), |(i, _)| i);
            self.out.truncate(cut);
            self.out.push('…');
        }
        self.out
    }
}

impl fmt::Write for PreviewWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.chars > self.limit {
                return Err(fmt::Error);
            }
            self.out.push(c);
            self.chars += 1;
        }
        if self.chars > self.limit {
            return Err(fmt::Error);
        }
        Ok(())
    }
}

fn write_repr(value: &Value, w: &mut PreviewWriter) -> fmt::Result {
    match value {
        Value::None => w.write_str("None"),
        Value::Bool(true) => w.write_str("True"),
        Value::Bool(false) => w.write_str("False"),
        Value::Int(n) => write!(w, "{n}"),
        Value::BigInt(b) => w.write_str(&bigint_decimal(b)),
        Value::Float(x) => w.write_str(&python_float_repr(*x)),
        Value::Str(s) => write_str_repr(s, w),
        Value::Bytes(b) => write_bytes_repr(b, w),
        Value::List(items) => write_seq(w, "[", items, "]"),
        Value::Tuple(items) if items.len() == 1 => {
            w.write_str("(")?;
            write_repr(&items[0], w)?;
            w.write_str(",)")
        }
        Value::Tuple(items) => write_seq(w, "(", items, ")"),
        Value::Set(items) if items.is_empty() => w.write_str("set()"),
        Value::Set(items) => write_seq(w, "{", items, "}"),
        Value::FrozenSet(items) if items.is_empty() => w.write_str("frozenset()"),
        Value::FrozenSet(items) => write_seq(w, "frozenset({", items, "})"),
        Value::Dict(entries) => {
            w.write_str("{")?;
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    w.write_str(", ")?;
                }
                write_repr(k, w)?;
                w.write_str(": ")?;
                write_repr(v, w)?;
            }
            w.write_str("}")
        }
    }
}

fn write_seq(w: &mut PreviewWriter, open: &str, items: &[Value], close: &str) -> fmt::Result {
    w.write_str(open)?;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            w.write_str(", ")?;
        }
        write_repr(item, w)?;
    }
    w.write_str(close)
}

fn write_str_repr(s: &str, w: &mut PreviewWriter) -> fmt::Result {
    // Python prefers single quotes unless the text has one and no double quote.
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    w.write_char(quote)?;
    for c in s.chars() {
        match c {
            '\\' => w.write_str("\\\\")?,
            '\n' => w.write_str("\\n")?,
            '\r' => w.write_str("\\r")?,
            '\t' => w.write_str("\\t")?,
            c if c == quote => {
                w.write_char('\\')?;
                w.write_char(c)?;
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => write!(w, "\\x{:02x}", c as u32)?,
            c => w.write_char(c)?,
        }
    }
    w.write_char(quote)
}

fn write_bytes_repr(bytes: &[u8], w: &mut PreviewWriter) -> fmt::Result {
    let quote = if bytes.contains(&b'\'') && !bytes.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    w.write_char('b')?;
    w.write_char(char::from(quote))?;
    for &b in bytes {
        match b {
            b'\\' => w.write_str("\\\\")?,
            b'\n' => w.write_str("\\n")?,
            b'\r' => w.write_str("\\r")?,
            b'\t' => w.write_str("\\t")?,
            b if b == quote => {
                w.write_char('\\')?;
                w.write_char(char::from(b))?;
            }
            0x20..=0x7e => w.write_char(char::from(b))?,
            b => write!(w, "\\x{b:02x}")?,
        }
    }
    w.write_char(char::from(quote))
}

/// Python's `repr(float)`: the shortest round-tripping digits, positional for decimal
/// exponents in `-4..16`, scientific (`1e+16`, `1.5e-05`) otherwise.
fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest round-tripping digits: "-1.2345e-5".
    let sci = format!("{x:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::from(sign);
    if (-4..16).contains(&exponent) {
        let point = exponent + 1; // digits before the decimal point
        if point <= 0 {
            out.push_str("0.");
            for _ in 0..-point {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            #[allow(clippy::cast_sign_loss)]
            let point = point as usize;
            if digits.len() <= point {
                out.push_str(&digits);
                for _ in digits.len()..point {
                    out.push('0');
                }
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exponent < 0 { '-' } else { '+' },
            exponent.unsigned_abs()
        );
    }
    out
}

/// The decimal digits of a bignum. Quadratic in the size, so very large integers are
/// summarised instead (Python itself refuses to print more than 4300 digits).
fn bigint_decimal(b: &BigInt) -> String {
    const MAX_BYTES: usize = 2048;
    let sign = if b.negative { "-" } else { "" };
    if b.magnitude.len() > MAX_BYTES {
        return format!("<{sign}int of {} bits>", b.magnitude.len() * 8);
    }
    // Base 2^32 limbs, most significant first, divided repeatedly by 10^9.
    let mut limbs: Vec<u32> = Vec::with_capacity(b.magnitude.len() / 4 + 1);
    let head = b.magnitude.len() % 4;
    if head > 0 {
        limbs.push(
            b.magnitude[..head]
                .iter()
                .fold(0, |acc, &x| (acc << 8) | u32::from(x)),
        );
    }
    for chunk in b.magnitude[head..].chunks_exact(4) {
        limbs.push(u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
    }
    let mut groups = Vec::new();
    while limbs.iter().any(|&l| l != 0) {
        let mut remainder: u64 = 0;
        for limb in &mut limbs {
            let current = (remainder << 32) | u64::from(*limb);
            #[allow(clippy::cast_possible_truncation)]
            {
                *limb = (current / 1_000_000_000) as u32;
            }
            remainder = current % 1_000_000_000;
        }
        groups.push(remainder);
        let zeros = limbs.iter().take_while(|&&l| l == 0).count();
        limbs.drain(..zeros);
    }
    let mut out = String::from(sign);
    match groups.split_last() {
        None => out.push('0'),
        Some((most, rest)) => {
            let _ = write!(out, "{most}");
            for group in rest.iter().rev() {
                let _ = write!(out, "{group:09}");
            }
        }
    }
    out
}

impl fmt::Display for Value {
    /// The preview; see [`Value::preview`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.preview())
    }
}
