//! The canonical value encoding, value ids, the npy layout and previews, as a user of the
//! store relies on them: equal values give equal bytes, different values different bytes, and
//! no input makes decoding panic.

use memotag::value::*;
use proptest::prelude::*;

/// The encoding of a value within every limit.
fn enc(v: &Value) -> Vec<u8> {
    encode_canonical(v).expect("within the encoder's limits")
}

fn hex_of(v: &Value) -> String {
    hex::encode(enc(v))
}

fn int(n: i128) -> Value {
    Value::from_i128(n)
}

fn s(text: &str) -> Value {
    Value::Str(text.to_owned())
}

fn decode_hex(h: &str) -> Result<Value, ValueError> {
    decode_canonical(&hex::decode(h).unwrap())
}

// ------------------------------------------------------------------------------------------
// RFC 8949 Appendix A
// ------------------------------------------------------------------------------------------

#[test]
fn integers_match_rfc8949_appendix_a() {
    let two_64: i128 = 1 << 64;
    let cases: &[(i128, &str)] = &[
        (0, "00"),
        (1, "01"),
        (10, "0a"),
        (23, "17"),
        (24, "1818"),
        (25, "1819"),
        (100, "1864"),
        (1000, "1903e8"),
        (1_000_000, "1a000f4240"),
        (1_000_000_000_000, "1b000000e8d4a51000"),
        (two_64 - 1, "1bffffffffffffffff"),
        (two_64, "c249010000000000000000"),
        (-two_64, "3bffffffffffffffff"),
        (-two_64 - 1, "c349010000000000000000"),
        (-1, "20"),
        (-10, "29"),
        (-100, "3863"),
        (-1000, "3903e7"),
    ];
    for &(n, expected) in cases {
        let v = int(n);
        assert_eq!(hex_of(&v), expected, "encoding of {n}");
        assert_eq!(decode_hex(expected).unwrap(), v, "decoding of {expected}");
    }
}

#[test]
fn integers_between_i64_and_the_cbor_range_stay_plain_major_types() {
    // 2^63 does not fit i64 but fits major type 0.
    assert_eq!(hex_of(&int(1 << 63)), "1b8000000000000000");
    assert_eq!(hex_of(&int(i128::from(i64::MIN))), "3b7fffffffffffffff");
    assert_eq!(hex_of(&int(i128::from(i64::MIN) - 1)), "3b8000000000000000");
    assert!(matches!(int(1 << 63), Value::BigInt(_)));
    assert!(matches!(int(i128::from(i64::MIN)), Value::Int(i64::MIN)));
}

#[test]
fn floats_match_rfc8949_appendix_a() {
    let cases: &[(f64, &str)] = &[
        (0.0, "f90000"),
        (-0.0, "f98000"),
        (1.0, "f93c00"),
        (1.1, "fb3ff199999999999a"),
        (1.5, "f93e00"),
        (65504.0, "f97bff"),
        (100_000.0, "fa47c35000"),
        (3.402_823_466_385_288_6e38, "fa7f7fffff"),
        (1.0e300, "fb7e37e43c8800759c"),
        (5.960_464_477_539_063e-8, "f90001"),
        (0.000_061_035_156_25, "f90400"),
        (-4.0, "f9c400"),
        (-4.1, "fbc010666666666666"),
        (f64::INFINITY, "f97c00"),
        (f64::NEG_INFINITY, "f9fc00"),
        (f64::NAN, "f97e00"),
    ];
    for &(x, expected) in cases {
        let v = Value::Float(x);
        assert_eq!(hex_of(&v), expected, "encoding of {x:e}");
        assert_eq!(decode_hex(expected).unwrap(), v, "decoding of {expected}");
    }
}

#[test]
fn strings_bytes_and_arrays_match_rfc8949_appendix_a() {
    assert_eq!(hex_of(&s("")), "60");
    assert_eq!(hex_of(&s("a")), "6161");
    assert_eq!(hex_of(&s("IETF")), "6449455446");
    assert_eq!(hex_of(&s("\"\\")), "62225c");
    assert_eq!(hex_of(&s("\u{fc}")), "62c3bc");
    assert_eq!(hex_of(&s("\u{6c34}")), "63e6b0b4");
    assert_eq!(hex_of(&Value::Bytes(vec![])), "40");
    assert_eq!(hex_of(&Value::Bytes(vec![1, 2, 3, 4])), "4401020304");
    assert_eq!(hex_of(&Value::List(vec![])), "80");
    assert_eq!(
        hex_of(&Value::List(vec![int(1), int(2), int(3)])),
        "83010203"
    );
    let nested = Value::List(vec![
        int(1),
        Value::List(vec![int(2), int(3)]),
        Value::List(vec![int(4), int(5)]),
    ]);
    assert_eq!(hex_of(&nested), "8301820203820405");
    let long = Value::List((1..=25).map(int).collect());
    assert_eq!(
        hex_of(&long),
        "98190102030405060708090a0b0c0d0e0f101112131415161718181819"
    );
    assert_eq!(hex_of(&Value::Bool(false)), "f4");
    assert_eq!(hex_of(&Value::Bool(true)), "f5");
    assert_eq!(hex_of(&Value::None), "f6");
}

#[test]
fn maps_match_rfc8949_appendix_a_with_sorted_keys() {
    assert_eq!(hex_of(&Value::Dict(vec![])), "a0");
    let m = Value::Dict(vec![(int(3), int(4)), (int(1), int(2))]);
    assert_eq!(hex_of(&m), "a201020304");
    let m = Value::Dict(vec![
        (s("b"), Value::List(vec![int(2), int(3)])),
        (s("a"), int(1)),
    ]);
    assert_eq!(hex_of(&m), "a26161016162820203");
    let m = Value::List(vec![s("a"), Value::Dict(vec![(s("b"), s("c"))])]);
    assert_eq!(hex_of(&m), "826161a161626163");
    let m = Value::Dict(
        ["e", "c", "a", "d", "b"]
            .iter()
            .map(|k| (s(k), s(&k.to_uppercase())))
            .collect(),
    );
    assert_eq!(hex_of(&m), "a56161614161626142616361436164614461656145");
}

#[test]
fn map_keys_follow_the_rfc8949_core_deterministic_order() {
    // RFC 8949 §4.2.1: 10, 100, -1, "z", "aa", [100], [-1], false.
    let keys = vec![
        Value::Bool(false),
        s("aa"),
        Value::List(vec![int(-1)]),
        int(-1),
        s("z"),
        int(100),
        Value::List(vec![int(100)]),
        int(10),
    ];
    let m = Value::Dict(keys.into_iter().map(|k| (k, Value::None)).collect());
    assert_eq!(
        hex_of(&m),
        "a80af61864f620f6617af6626161f6811864f68120f6f4f6"
    );
}

#[test]
fn duplicate_dict_keys_keep_the_last_entry() {
    let m = Value::Dict(vec![(int(1), s("a")), (int(2), s("x")), (int(1), s("b"))]);
    let expected = Value::Dict(vec![(int(1), s("b")), (int(2), s("x"))]);
    assert_eq!(enc(&m), enc(&expected));
}

#[test]
fn duplicate_set_members_collapse() {
    let a = Value::Set(vec![int(2), int(1), int(2), int(1)]);
    let b = Value::Set(vec![int(1), int(2)]);
    assert_eq!(enc(&a), enc(&b));
    assert_eq!(hex_of(&b), "d90102820102");
}

// ------------------------------------------------------------------------------------------
// Distinctness and equality
// ------------------------------------------------------------------------------------------

#[test]
fn int_float_bool_str_and_bytes_are_all_different() {
    let values = [
        int(1),
        Value::Float(1.0),
        Value::Bool(true),
        s("1"),
        Value::Bytes(b"1".to_vec()),
    ];
    for (i, a) in values.iter().enumerate() {
        for b in &values[i + 1..] {
            assert_ne!(enc(a), enc(b), "{a:?} vs {b:?}");
            assert_ne!(a, b);
            assert_ne!(ValueId::of_value(a).unwrap(), ValueId::of_value(b).unwrap());
        }
    }
}

#[test]
fn tuples_lists_sets_and_frozensets_are_all_different() {
    let items = vec![int(1), int(2)];
    let values = [
        Value::List(items.clone()),
        Value::Tuple(items.clone()),
        Value::Set(items.clone()),
        Value::FrozenSet(items),
    ];
    for (i, a) in values.iter().enumerate() {
        for b in &values[i + 1..] {
            assert_ne!(enc(a), enc(b), "{a:?} vs {b:?}");
        }
    }
    assert_ne!(
        enc(&Value::Tuple(vec![int(1)])),
        enc(&Value::List(vec![int(1)]))
    );
    assert_ne!(enc(&Value::Tuple(vec![])), enc(&Value::List(vec![])));
}

#[test]
fn dict_keys_of_different_types_are_different() {
    let a = Value::Dict(vec![(int(1), int(2))]);
    let b = Value::Dict(vec![(Value::Float(1.0), int(2))]);
    assert_ne!(enc(&a), enc(&b));
}

#[test]
fn every_nan_is_the_same_value() {
    let nans = [
        f64::NAN,
        -f64::NAN,
        f64::from_bits(0x7ff0_0000_0000_0001),
        f64::from_bits(0xfff8_dead_beef_0000),
        f64::from(f32::from_bits(0x7fc0_0001)),
    ];
    for x in nans {
        assert!(x.is_nan());
        assert_eq!(hex_of(&Value::Float(x)), "f97e00");
        assert_eq!(Value::Float(x), Value::Float(f64::NAN));
    }
}

#[test]
fn zero_and_negative_zero_differ() {
    assert_ne!(Value::Float(0.0), Value::Float(-0.0));
    assert_ne!(enc(&Value::Float(0.0)), enc(&Value::Float(-0.0)));
}

#[test]
fn sets_and_dicts_are_equal_regardless_of_order() {
    assert_eq!(
        Value::Set(vec![int(1), s("a"), int(2)]),
        Value::Set(vec![int(2), int(1), s("a")])
    );
    assert_eq!(
        Value::Dict(vec![(int(1), int(2)), (int(3), int(4))]),
        Value::Dict(vec![(int(3), int(4)), (int(1), int(2))])
    );
    assert_ne!(Value::Set(vec![int(1)]), Value::FrozenSet(vec![int(1)]));
}

#[test]
fn big_integers_normalise_and_convert_back() {
    assert!(matches!(
        Value::from_sign_magnitude(false, &[0, 0, 5]),
        Value::Int(5)
    ));
    assert!(matches!(
        Value::from_sign_magnitude(true, &[]),
        Value::Int(0)
    ));
    assert!(matches!(
        Value::from_sign_magnitude(true, &[0x80, 0, 0, 0, 0, 0, 0, 0]),
        Value::Int(i64::MIN)
    ));
    for n in [
        i128::MAX,
        i128::MIN,
        1 << 64,
        -(1 << 64) - 1,
        i128::from(u64::MAX),
        i128::from(i64::MAX) + 1,
        i128::from(i64::MIN) - 1,
    ] {
        let v = int(n);
        assert!(matches!(v, Value::BigInt(_)), "{n}");
        assert_eq!(v.as_i128(), Some(n));
        assert_eq!(decode_canonical(&enc(&v)).unwrap(), v);
        let Value::BigInt(b) = &v else { unreachable!() };
        let rebuilt = Value::from_sign_magnitude(b.is_negative(), b.magnitude());
        assert_eq!(rebuilt, v);
    }
    // Beyond i128.
    let huge = Value::from_sign_magnitude(false, &[1; 40]);
    let Value::BigInt(b) = &huge else {
        panic!("not a BigInt")
    };
    assert_eq!(b.to_i128(), None);
    assert_eq!(b.magnitude(), &[1; 40]);
    assert_eq!(decode_canonical(&enc(&huge)).unwrap(), huge);
}

// ------------------------------------------------------------------------------------------
// Decoding rejects what the encoder never produces
// ------------------------------------------------------------------------------------------

#[test]
fn decoding_rejects_non_canonical_input() {
    let rejected = [
        "1801",                   // 1 with a 1-byte argument
        "190001",                 // 1 with a 2-byte argument
        "1b00000000ffffffff",     // 8-byte argument that fits 4
        "5f4101ff",               // indefinite byte string
        "9f01ff",                 // indefinite array
        "bf0102ff",               // indefinite map
        "a203040102",             // unsorted map keys
        "a201020103",             // duplicate map keys
        "d90102820201",           // unsorted set
        "d90102820101",           // duplicate set members
        "fa3fc00000",             // 1.5 as f32
        "fb3ff8000000000000",     // 1.5 as f64
        "f97e01",                 // NaN payload
        "f9fe00",                 // negative NaN
        "fa7fc00000",             // NaN as f32
        "c2420100",               // bignum that fits major type 0
        "c249000100000000000000", // bignum with a leading zero
        "c06474657374",           // tag 0: unknown here
        "f7",                     // undefined
        "f0",                     // simple value 16
        "f820",                   // simple value 32
        "ff",                     // lone break
        "1c",                     // reserved additional information
        "0000",                   // trailing byte
        "62c328",                 // invalid UTF-8
        "d9106801",               // tuple tag around a non-array
        "c201",                   // bignum tag around a non-byte-string
    ];
    for h in rejected {
        assert!(decode_hex(h).is_err(), "{h} should be rejected");
    }
}

/// A head of major type `major` whose argument `arg` takes `width` bytes (0: none, the argument
/// is in the initial byte).
fn head(major: u8, arg: u64, width: usize) -> Vec<u8> {
    let info = match width {
        0 => u8::try_from(arg).unwrap(),
        1 => 24,
        2 => 25,
        4 => 26,
        _ => 27,
    };
    let mut bytes = vec![(major << 5) | info];
    bytes.extend_from_slice(&arg.to_be_bytes()[8 - width..]);
    bytes
}

fn shortest_width(arg: u64) -> usize {
    match arg {
        0..=23 => 0,
        24..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xffff_ffff => 4,
        _ => 8,
    }
}

/// Checks that `value` encodes as `head(major, arg, shortest) ++ content`, decodes back, and
/// that every wider head around the same content is rejected.
fn assert_shortest_head(major: u8, arg: u64, content: &[u8], value: &Value) {
    let width = shortest_width(arg);
    let mut expected = head(major, arg, width);
    expected.extend_from_slice(content);
    assert_eq!(enc(value), expected, "major {major}, argument {arg}");
    assert_eq!(&decode_canonical(&expected).unwrap(), value);
    for wider in [1, 2, 4, 8].into_iter().filter(|&w| w > width) {
        let mut wide = head(major, arg, wider);
        wide.extend_from_slice(content);
        assert!(
            matches!(
                decode_canonical(&wide),
                Err(ValueError::NonCanonical { offset: 0, .. })
            ),
            "major {major}, argument {arg} in {wider} bytes should be rejected"
        );
    }
}

#[test]
fn every_head_is_written_and_read_only_in_its_shortest_form() {
    let boundaries = [
        0,
        1,
        23,
        24,
        255,
        256,
        65_535,
        65_536,
        0xffff_ffff,
        0x1_0000_0000,
        u64::MAX,
    ];
    for n in boundaries {
        assert_shortest_head(0, n, &[], &int(i128::from(n)));
        assert_shortest_head(1, n, &[], &int(-1 - i128::from(n)));
        if n <= 65_536 {
            let len = usize::try_from(n).unwrap();
            let content = vec![b'x'; len];
            assert_shortest_head(2, n, &content, &Value::Bytes(content.clone()));
            assert_shortest_head(3, n, &content, &s(&"x".repeat(len)));
            assert_shortest_head(4, n, &vec![0xf6; len], &Value::List(vec![Value::None; len]));
        }
        if n <= 256 {
            // Integer keys sort bytewise in numeric order.
            let entries: Vec<(Value, Value)> =
                (0..i128::from(n)).map(|k| (int(k), Value::None)).collect();
            let mut content = Vec::new();
            for (k, _) in &entries {
                content.extend(enc(k));
                content.push(0xf6);
            }
            assert_shortest_head(5, n, &content, &Value::Dict(entries));
        }
    }
    // Tags: 2 and 3 fit the initial byte, 258, 4200 and 4201 take two bytes.
    let magnitude = [1_u8; 9];
    let mut bignum = head(2, 9, 0);
    bignum.extend_from_slice(&magnitude);
    assert_shortest_head(
        6,
        2,
        &bignum,
        &Value::from_sign_magnitude(false, &magnitude),
    );
    assert_shortest_head(6, TAG_SET, &[0x81, 0x01], &Value::Set(vec![int(1)]));
    assert_shortest_head(6, TAG_TUPLE, &[0x80], &Value::Tuple(vec![]));
    assert_shortest_head(6, TAG_FROZENSET, &[0x80], &Value::FrozenSet(vec![]));
}

#[test]
fn decoding_reports_trailing_bytes_and_unknown_tags() {
    assert_eq!(
        decode_hex("0102"),
        Err(ValueError::TrailingBytes { count: 1 })
    );
    assert!(matches!(
        decode_hex("d82a01"),
        Err(ValueError::UnknownTag { tag: 42, .. })
    ));
    assert!(matches!(
        decode_hex("9f01ff"),
        Err(ValueError::IndefiniteLength { .. })
    ));
    assert!(matches!(
        decode_canonical(&[]),
        Err(ValueError::UnexpectedEnd { .. })
    ));
}

#[test]
fn absurd_lengths_fail_without_allocating() {
    for h in [
        "9b0fffffffffffffff", // array of 2^60 elements
        "bb0fffffffffffffff", // map
        "5b0fffffffffffffff", // byte string
        "7bffffffffffffffff", // text string
        "d910689b0fffffffffffffff",
        "9a7fffffff00",
    ] {
        assert!(
            matches!(decode_hex(h), Err(ValueError::UnexpectedEnd { .. })),
            "{h}"
        );
    }
}

fn nested_lists(depth: usize) -> Value {
    let mut v = int(0);
    for _ in 0..depth {
        v = Value::List(vec![v]);
    }
    v
}

#[test]
fn nesting_up_to_the_limit_round_trips_and_deeper_is_an_error() {
    let ok = nested_lists(MAX_DEPTH);
    assert_eq!(ok.depth(), MAX_DEPTH);
    assert_eq!(decode_canonical(&enc(&ok)).unwrap(), ok);

    // The encoder refuses what the decoder would refuse, instead of writing bytes nobody can
    // read back.
    let too_deep = nested_lists(MAX_DEPTH + 1);
    assert_eq!(
        encode_canonical(&too_deep),
        Err(ValueError::TooDeep { limit: MAX_DEPTH })
    );
    assert_eq!(
        EncodedValue::from_value(&too_deep),
        Err(ValueError::TooDeep { limit: MAX_DEPTH })
    );
    let mut prefix = vec![1];
    assert_eq!(
        encode_into(&too_deep, &mut prefix),
        Err(ValueError::TooDeep { limit: MAX_DEPTH })
    );
    assert_eq!(prefix, [1], "nothing is appended to a refused value");
    // The same bytes, written by hand, are refused by the decoder with the same error.
    let mut by_hand = vec![0x81_u8; MAX_DEPTH + 1];
    by_hand.push(0x00);
    assert_eq!(
        decode_canonical(&by_hand),
        Err(ValueError::TooDeep { limit: MAX_DEPTH })
    );
    let stored = EncodedValue {
        codec: Codec::Cbor,
        bytes: by_hand,
    };
    assert_eq!(
        stored.check(),
        Err(ValueError::TooDeep { limit: MAX_DEPTH })
    );

    // A hostile input nested a million levels deep must not overflow the stack.
    let mut hostile = vec![0x81_u8; 1_000_000];
    hostile.push(0);
    assert_eq!(
        decode_canonical(&hostile),
        Err(ValueError::TooDeep { limit: MAX_DEPTH })
    );
    let mut hostile_tuples = Vec::new();
    for _ in 0..100_000 {
        hostile_tuples.extend_from_slice(&[0xd9, 0x10, 0x68, 0x81]);
    }
    hostile_tuples.push(0);
    assert!(decode_canonical(&hostile_tuples).is_err());
}

// ------------------------------------------------------------------------------------------
// Value ids and codecs
// ------------------------------------------------------------------------------------------

#[test]
fn equal_values_have_equal_ids() {
    let a = Value::Dict(vec![
        (s("x"), int(1)),
        (s("y"), Value::Set(vec![int(2), int(3)])),
    ]);
    let b = Value::Dict(vec![
        (s("y"), Value::Set(vec![int(3), int(2)])),
        (s("x"), int(1)),
    ]);
    assert_eq!(
        EncodedValue::from_value(&a).unwrap().id(),
        EncodedValue::from_value(&b).unwrap().id()
    );
    assert_eq!(
        ValueId::of_value(&a).unwrap(),
        EncodedValue::from_value(&a).unwrap().id()
    );
}

#[test]
fn the_codec_is_part_of_the_id() {
    let cbor = EncodedValue::from_value(&int(1)).unwrap();
    let raw = EncodedValue::raw(cbor.bytes.clone());
    let pickle = EncodedValue::pickle(cbor.bytes.clone());
    assert_ne!(cbor.id(), raw.id());
    assert_ne!(cbor.id(), pickle.id());
    assert_ne!(raw.id(), pickle.id());
}

#[test]
fn value_ids_are_pinned() {
    // If one of these changes, every stored value id changes: that is a file-format change.
    assert_eq!(EncodedValue::from_value(&int(1)).unwrap().bytes, vec![0x01]);
    assert_eq!(
        EncodedValue::from_value(&int(1)).unwrap().id().to_hex(),
        PINNED_ID_INT_1
    );
    let call_args = Value::Tuple(vec![int(1), s("a"), Value::Float(1.5), Value::None]);
    assert_eq!(hex_of(&call_args), "d9106884016161f93e00f6");
    assert_eq!(
        ValueId::of_value(&call_args).unwrap().to_hex(),
        PINNED_ID_TUPLE
    );
    let set = Value::FrozenSet(vec![int(2), int(1)]);
    assert_eq!(hex_of(&set), "d91069820102");
    assert_eq!(ValueId::of(Codec::Raw, b"").to_hex(), PINNED_ID_RAW_EMPTY);
}

const PINNED_ID_INT_1: &str = "2022ec9d571ba774cf9e83d0194962f5";
const PINNED_ID_TUPLE: &str = "3e5696336446205429f1564fb94af3b5";
const PINNED_ID_RAW_EMPTY: &str = "0c389a743e34fda435fbd575bb889dbc";

#[test]
fn value_ids_round_trip_through_hex() {
    let id = ValueId::of_value(&s("hello")).unwrap();
    let text = id.to_string();
    assert_eq!(text.len(), 32);
    assert_eq!(text, id.to_hex());
    assert_eq!(ValueId::from_hex(&text).unwrap(), id);
    assert_eq!(ValueId::from_hex(&text.to_uppercase()).unwrap(), id);
    assert_eq!(text.parse::<ValueId>().unwrap(), id);
    assert_eq!(id.as_bytes(), &id.0);
    assert!(ValueId::from_hex("abc").is_err());
    assert!(ValueId::from_hex(&"zz".repeat(16)).is_err());
    assert!(ValueId::from_hex(&"00".repeat(17)).is_err());
}

#[test]
fn codecs_have_stable_numbers_and_names() {
    for (codec, n, name) in [
        (Codec::Cbor, 1, "cbor"),
        (Codec::Npy, 2, "npy"),
        (Codec::Pickle, 3, "pickle"),
        (Codec::Raw, 4, "raw"),
    ] {
        assert_eq!(codec as u8, n);
        assert_eq!(codec.as_str(), name);
        assert_eq!(codec.to_string(), name);
        assert_eq!(Codec::from_u8(n).unwrap(), codec);
        assert_eq!(name.parse::<Codec>().unwrap(), codec);
    }
    assert!(Codec::from_u8(0).is_err());
    assert!(Codec::from_u8(5).is_err());
    assert!("json".parse::<Codec>().is_err());
}

#[test]
fn encoded_values_decode_only_with_their_codec() {
    let v = Value::List(vec![int(1), s("x")]);
    let encoded = EncodedValue::from_value(&v).unwrap();
    assert_eq!(encoded.to_value().unwrap(), v);
    assert!(matches!(
        EncodedValue::raw(vec![1]).to_value(),
        Err(ValueError::WrongCodec { .. })
    ));
}

// ------------------------------------------------------------------------------------------
// npy
// ------------------------------------------------------------------------------------------

#[test]
fn npy_round_trips() {
    let data: Vec<u8> = (0..12_u32)
        .flat_map(|i| f64::from(i).to_le_bytes())
        .collect();
    let array = NpyArray::new("<f8", vec![3, 4], data).unwrap();
    let bytes = array.encode();
    assert_eq!(NpyArray::decode(&bytes).unwrap(), array);
    let encoded = EncodedValue::npy(&array).unwrap();
    assert_eq!(encoded.codec, Codec::Npy);
    assert_eq!(encoded.to_npy().unwrap(), array);
    assert_eq!(preview(Codec::Npy, &bytes), "array<f8>[3, 4]");

    let scalar = NpyArray::new("<i4", vec![], 7_i32.to_le_bytes().to_vec()).unwrap();
    assert_eq!(NpyArray::decode(&scalar.encode()).unwrap(), scalar);
    assert_eq!(scalar.len().unwrap(), 1);

    let empty = NpyArray::new("<f4", vec![0, 5], vec![]).unwrap();
    assert!(empty.is_empty().unwrap());
    assert_eq!(NpyArray::decode(&empty.encode()).unwrap(), empty);
}

#[test]
fn npy_dtypes_are_normalised_so_equal_arrays_have_equal_ids() {
    let data = 1.0_f64.to_le_bytes().to_vec();
    let native = NpyArray::new("=f8", vec![1], data.clone()).unwrap();
    if cfg!(target_endian = "little") {
        let little = NpyArray::new("<f8", vec![1], data).unwrap();
        assert_eq!(native, little);
        assert_eq!(
            EncodedValue::npy(&native).unwrap().id(),
            EncodedValue::npy(&little).unwrap().id()
        );
    }
    assert_eq!(NpyArray::new("<u1", vec![1], vec![7]).unwrap().dtype, "|u1");
    assert_eq!(NpyArray::new("=b1", vec![1], vec![1]).unwrap().dtype, "|b1");
    assert_eq!(
        NpyArray::new("|S3", vec![1], b"abc".to_vec())
            .unwrap()
            .dtype,
        "|S3"
    );
    assert_eq!(
        NpyArray::new("<U2", vec![1], vec![0; 8]).unwrap().dtype,
        "<U2"
    );
    assert_eq!(
        NpyArray::new("<M8[ns]", vec![1], vec![0; 8]).unwrap().dtype,
        "<M8[ns]"
    );
}

#[test]
fn npy_rejects_wrong_lengths_and_bad_dtypes() {
    assert!(matches!(
        NpyArray::new("<f8", vec![3], vec![0; 23]),
        Err(ValueError::InvalidNpy { .. })
    ));
    assert!(NpyArray::new("<f8", vec![3], vec![0; 25]).is_err());
    for dtype in [
        "|O", "<O8", "f8", "<x4", "<f3", "<i", "<f08", "|f8", "<f8[ns]", "",
    ] {
        assert!(
            NpyArray::new(dtype, vec![1], vec![0; 8]).is_err(),
            "{dtype}"
        );
    }
    // The encoded form is checked the same way.
    let bad = NpyArray {
        dtype: "<f8".to_owned(),
        shape: vec![2],
        data: vec![0; 8],
    };
    assert!(NpyArray::decode(&bad.encode()).is_err());
    let unnormalised = NpyArray {
        dtype: "=f8".to_owned(),
        shape: vec![1],
        data: vec![0; 8],
    };
    assert!(NpyArray::decode(&unnormalised.encode()).is_err());
    assert!(NpyArray::decode(b"").is_err());
    assert!(NpyArray::decode(b"\x93NUMPY").is_err());
    let good = NpyArray::new("<i8", vec![2, 2], vec![0; 32])
        .unwrap()
        .encode();
    for cut in 0..good.len() {
        assert!(NpyArray::decode(&good[..cut]).is_err(), "cut at {cut}");
    }
}

/// Every kind of container counts one level, dict keys and values alike, tagged or not: the
/// encoder's limit is the decoder's, container by container.
#[test]
fn every_container_counts_toward_the_depth_limit() {
    type Wrap = fn(Value) -> Value;
    let wrappers: [(&str, Wrap); 7] = [
        ("list", |v| Value::List(vec![v])),
        ("tuple", |v| Value::Tuple(vec![v])),
        ("set", |v| Value::Set(vec![v])),
        ("frozenset", |v| Value::FrozenSet(vec![v])),
        ("dict value", |v| Value::Dict(vec![(Value::Int(0), v)])),
        ("dict key", |v| Value::Dict(vec![(v, Value::Int(0))])),
        ("empty list", |_| Value::List(vec![])),
    ];
    for (name, wrap) in wrappers {
        // `wrap` is the innermost container; lists around it make up the rest.
        for depth in [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1] {
            let mut v = wrap(Value::Int(7));
            for _ in 1..depth {
                v = Value::List(vec![v]);
            }
            assert_eq!(v.depth(), depth, "{name}");
            match encode_canonical(&v) {
                Ok(bytes) => {
                    assert!(depth <= MAX_DEPTH, "{name} at depth {depth} encoded");
                    assert_eq!(decode_canonical(&bytes).unwrap(), v, "{name} at {depth}");
                }
                Err(e) => {
                    assert!(depth > MAX_DEPTH, "{name} at depth {depth} refused: {e}");
                    assert_eq!(e, ValueError::TooDeep { limit: MAX_DEPTH });
                }
            }
        }
    }
}

#[test]
fn npy_arrays_the_decoder_refuses_are_refused_when_encoding() {
    // More dimensions than the decoder reads: refused by `new` and by `EncodedValue::npy`.
    let too_many = vec![1; NPY_MAX_DIMS + 1];
    assert!(NpyArray::new("<f8", too_many.clone(), vec![0; 8]).is_err());
    let built = NpyArray {
        dtype: "<f8".to_owned(),
        shape: too_many,
        data: vec![0; 8],
    };
    assert!(matches!(
        EncodedValue::npy(&built),
        Err(ValueError::InvalidNpy { .. })
    ));
    let most = NpyArray::new("<f8", vec![1; NPY_MAX_DIMS], vec![0; 8]).unwrap();
    let encoded = EncodedValue::npy(&most).unwrap();
    assert_eq!(encoded.check(), Ok(()));
    assert_eq!(encoded.to_npy().unwrap(), most);
    // Bytes of the right layout but the wrong length are refused by `check` like by `decode`.
    let mut short = encoded.clone();
    short.bytes.pop();
    assert!(short.check().is_err());
    assert!(NpyArray::decode(&short.bytes).is_err());
}

#[test]
fn npy_rejects_absurd_shapes() {
    for shape in [
        vec![1 << 40, 1 << 40],
        vec![u64::MAX],
        vec![1 << 62, 4],
        vec![0, u64::MAX],
    ] {
        assert!(
            matches!(
                NpyArray::new("<f8", shape.clone(), vec![]),
                Err(ValueError::InvalidNpy { .. })
            ),
            "{shape:?}"
        );
    }
    // product * itemsize overflows even though the product alone does not.
    assert!(NpyArray::new("<f8", vec![1 << 61], vec![]).is_err());
    let many_dims = NpyArray {
        dtype: "<f8".to_owned(),
        shape: vec![1; 65],
        data: vec![0; 8],
    };
    assert!(NpyArray::decode(&many_dims.encode()).is_err());
}

// ------------------------------------------------------------------------------------------
// Previews
// ------------------------------------------------------------------------------------------

#[test]
fn previews_read_like_python_reprs() {
    let cases: Vec<(Value, &str)> = vec![
        (Value::None, "None"),
        (Value::Bool(true), "True"),
        (Value::Bool(false), "False"),
        (int(-42), "-42"),
        (int(1 << 64), "18446744073709551616"),
        (int(-(1 << 100)), "-1267650600228229401496703205376"),
        (Value::Float(1.0), "1.0"),
        (Value::Float(1.5), "1.5"),
        (Value::Float(-0.0), "-0.0"),
        (Value::Float(0.1), "0.1"),
        (Value::Float(100_000.0), "100000.0"),
        (Value::Float(1e16), "1e+16"),
        (Value::Float(1e15), "1000000000000000.0"),
        (Value::Float(1.5e-5), "1.5e-05"),
        (Value::Float(0.0001), "0.0001"),
        (Value::Float(1e300), "1e+300"),
        (Value::Float(f64::NAN), "nan"),
        (Value::Float(f64::NEG_INFINITY), "-inf"),
        (s("it's"), "\"it's\""),
        (s("a\nb"), "'a\\nb'"),
        (Value::Bytes(vec![0, b'a', b'\'']), "b\"\\x00a'\""),
        (Value::List(vec![int(1), s("x")]), "[1, 'x']"),
        (Value::Tuple(vec![int(1)]), "(1,)"),
        (Value::Tuple(vec![]), "()"),
        (Value::Tuple(vec![int(1), int(2)]), "(1, 2)"),
        (Value::Set(vec![]), "set()"),
        (Value::Set(vec![int(1), int(2)]), "{1, 2}"),
        (Value::FrozenSet(vec![]), "frozenset()"),
        (Value::FrozenSet(vec![int(1)]), "frozenset({1})"),
        (Value::Dict(vec![]), "{}"),
        (Value::Dict(vec![(s("a"), int(1))]), "{'a': 1}"),
    ];
    for (v, expected) in cases {
        assert_eq!(v.preview(), expected, "{v:?}");
        assert_eq!(preview(Codec::Cbor, &enc(&v)), expected);
    }
    assert_eq!(preview(Codec::Pickle, &[0; 12]), "<pickle, 12 bytes>");
    assert_eq!(preview(Codec::Raw, &[0; 3]), "<3 bytes>");
    assert_eq!(preview(Codec::Cbor, &[0xff]), "<invalid cbor, 1 bytes>");
}

#[test]
fn previews_never_exceed_80_characters() {
    let huge_list = Value::List((0..1_000_000).map(int).collect());
    let p = huge_list.preview();
    assert_eq!(p.chars().count(), PREVIEW_MAX_CHARS);
    assert!(p.starts_with("[0, 1, 2, "));
    assert!(p.ends_with('…'));

    let long_text = s(&"é".repeat(10_000));
    let p = long_text.preview();
    assert_eq!(p.chars().count(), PREVIEW_MAX_CHARS);
    assert!(p.ends_with('…'));

    let exactly = s(&"x".repeat(78)); // 78 + 2 quotes
    assert_eq!(exactly.preview().chars().count(), 80);
    assert!(!exactly.preview().contains('…'));

    let big = Value::from_sign_magnitude(true, &[0xff; 5000]);
    assert!(big.preview().chars().count() <= PREVIEW_MAX_CHARS);
    let bytes = Value::Bytes(vec![0; 1_000_000]);
    assert!(bytes.preview().chars().count() <= PREVIEW_MAX_CHARS);
    let shape = NpyArray {
        dtype: "<f8".to_owned(),
        shape: vec![u64::MAX; 64],
        data: vec![],
    };
    assert!(preview(Codec::Npy, &shape.encode()).chars().count() <= PREVIEW_MAX_CHARS);
}

// ------------------------------------------------------------------------------------------
// JSON
// ------------------------------------------------------------------------------------------

#[test]
fn json_numbers_name_the_same_values_as_python() {
    let parse = |text: &str| Value::from_json(&serde_json::from_str(text).unwrap());
    assert_eq!(
        ValueId::of_value(&parse("1")).unwrap(),
        ValueId::of_value(&int(1)).unwrap()
    );
    assert_eq!(parse("1.0"), Value::Float(1.0));
    assert_eq!(parse("-7"), int(-7));
    assert_eq!(parse("18446744073709551615"), int(i128::from(u64::MAX)));
    assert_eq!(parse("null"), Value::None);
    assert_eq!(parse("true"), Value::Bool(true));
    assert_eq!(parse("\"1\""), s("1"));
    assert_eq!(parse("[1, 2]"), Value::List(vec![int(1), int(2)]));
    assert_eq!(
        parse(r#"{"b": 1, "a": [null]}"#),
        Value::Dict(vec![
            (s("a"), Value::List(vec![Value::None])),
            (s("b"), int(1))
        ])
    );
}

#[test]
fn values_render_as_json() {
    use serde_json::json;
    let v = Value::Dict(vec![
        (s("t"), Value::Tuple(vec![int(1), Value::Float(2.5)])),
        (s("b"), Value::Bytes(vec![0xde, 0xad])),
        (int(3), Value::Set(vec![Value::Bool(true)])),
        (s("nan"), Value::Float(f64::NAN)),
        (s("inf"), Value::Float(f64::INFINITY)),
        (s("big"), int(1 << 64)),
        (s("u64"), int(1 << 63)),
    ]);
    assert_eq!(
        v.to_json(),
        json!({
            "t": [1, 2.5],
            "b": {"$bytes": "dead"},
            "3": [true],
            "nan": "NaN",
            "inf": "Infinity",
            "big": "18446744073709551616",
            "u64": 9_223_372_036_854_775_808_u64,
        })
    );
}

// ------------------------------------------------------------------------------------------
// Properties
// ------------------------------------------------------------------------------------------

fn arb_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        any::<f32>().prop_map(f64::from),
        (-2048_i32..2048).prop_map(|n| f64::from(n) / 8.0),
        Just(f64::NAN),
        Just(-0.0),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(5.960_464_477_539_063e-8),
        Just(65504.0),
        Just(65520.0),
    ]
}

fn arb_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        (-30_i64..30).prop_map(Value::Int),
        any::<i128>().prop_map(Value::from_i128),
        (any::<bool>(), prop::collection::vec(any::<u8>(), 0..24))
            .prop_map(|(neg, mag)| Value::from_sign_magnitude(neg, &mag)),
        arb_float().prop_map(Value::Float),
        "[a-c\u{e9}\u{1f600}]{0,4}".prop_map(Value::Str),
        prop::collection::vec(any::<u8>(), 0..6).prop_map(Value::Bytes),
    ]
}

fn arb_value() -> impl Strategy<Value = Value> {
    arb_leaf().prop_recursive(4, 48, 6, |inner| {
        let items = prop::collection::vec(inner.clone(), 0..6);
        prop_oneof![
            items.clone().prop_map(Value::List),
            items.clone().prop_map(Value::Tuple),
            items.clone().prop_map(Value::Set),
            items.prop_map(Value::FrozenSet),
            prop::collection::vec((inner.clone(), inner), 0..6).prop_map(Value::Dict),
        ]
    })
}

/// Drops dict entries whose key reappears later, which is what encoding does: afterwards the
/// order of entries carries no meaning at all.
fn without_shadowed_keys(v: Value) -> Value {
    let map = |items: Vec<Value>| items.into_iter().map(without_shadowed_keys).collect();
    match v {
        Value::List(items) => Value::List(map(items)),
        Value::Tuple(items) => Value::Tuple(map(items)),
        Value::Set(items) => Value::Set(map(items)),
        Value::FrozenSet(items) => Value::FrozenSet(map(items)),
        Value::Dict(entries) => {
            let entries: Vec<(Value, Value)> = entries
                .into_iter()
                .map(|(k, v)| (without_shadowed_keys(k), without_shadowed_keys(v)))
                .collect();
            let keys: Vec<Vec<u8>> = entries.iter().map(|(k, _)| enc(k)).collect();
            let kept = entries
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !keys[i + 1..].contains(&keys[*i]))
                .map(|(_, e)| e)
                .collect();
            Value::Dict(kept)
        }
        other => other,
    }
}

/// Shuffles every set and dict, at every level, with a small deterministic generator.
fn shuffled(v: &Value, seed: &mut u64) -> Value {
    fn next(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }
    fn shuffle<T>(items: &mut [T], seed: &mut u64) {
        for i in (1..items.len()).rev() {
            let j = usize::try_from(next(seed) % (i as u64 + 1)).unwrap();
            items.swap(i, j);
        }
    }
    let map = |items: &[Value], seed: &mut u64| -> Vec<Value> {
        items.iter().map(|x| shuffled(x, seed)).collect()
    };
    match v {
        Value::List(items) => Value::List(map(items, seed)),
        Value::Tuple(items) => Value::Tuple(map(items, seed)),
        Value::Set(items) => {
            let mut items = map(items, seed);
            shuffle(&mut items, seed);
            Value::Set(items)
        }
        Value::FrozenSet(items) => {
            let mut items = map(items, seed);
            shuffle(&mut items, seed);
            Value::FrozenSet(items)
        }
        Value::Dict(entries) => {
            let mut entries: Vec<(Value, Value)> = entries
                .iter()
                .map(|(k, v)| (shuffled(k, seed), shuffled(v, seed)))
                .collect();
            shuffle(&mut entries, seed);
            Value::Dict(entries)
        }
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn insertion_order_of_sets_and_dicts_does_not_change_the_bytes(
        v in arb_value(),
        seed in 1_u64..,
    ) {
        let v = without_shadowed_keys(v);
        let mut seed = seed;
        let w = shuffled(&v, &mut seed);
        prop_assert_eq!(enc(&v), enc(&w));
        prop_assert_eq!(ValueId::of_value(&v).unwrap(), ValueId::of_value(&w).unwrap());
        prop_assert_eq!(&v, &w);
    }

    #[test]
    fn decoding_an_encoding_gives_the_value_back(v in arb_value()) {
        let bytes = enc(&v);
        let decoded = decode_canonical(&bytes).unwrap();
        prop_assert_eq!(enc(&decoded), bytes);
        prop_assert_eq!(&decoded, &v);
        prop_assert!(v.preview().chars().count() <= PREVIEW_MAX_CHARS);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_only_canonical_bytes_decode(
        bytes in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        if let Ok(v) = decode_canonical(&bytes) {
            prop_assert_eq!(&enc(&v), &bytes);
        }
        let _ = NpyArray::decode(&bytes);
        for codec in Codec::ALL {
            prop_assert!(preview(codec, &bytes).chars().count() <= PREVIEW_MAX_CHARS);
        }
    }

    #[test]
    fn mutated_encodings_never_panic_and_only_canonical_bytes_decode(
        v in arb_value(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = enc(&v);
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if let Ok(decoded) = decode_canonical(&bytes) {
            prop_assert_eq!(&enc(&decoded), &bytes);
        }
    }

    /// Whatever encodes decodes back equal, and whatever does not encode is deeper than the
    /// decoder reads: values are wrapped in chains of containers around the depth limit.
    #[test]
    fn whatever_encodes_decodes_back_equal(
        v in arb_value(),
        chain in prop::collection::vec(0_u8..5, MAX_DEPTH - 8..MAX_DEPTH + 4),
    ) {
        let mut v = v;
        for kind in chain {
            v = match kind {
                0 => Value::List(vec![v]),
                1 => Value::Tuple(vec![v, Value::None]),
                2 => Value::Set(vec![v]),
                3 => Value::FrozenSet(vec![v]),
                _ => Value::Dict(vec![(Value::Int(1), v)]),
            };
        }
        match encode_canonical(&v) {
            Ok(bytes) => {
                prop_assert!(v.depth() <= MAX_DEPTH);
                let stored = EncodedValue { codec: Codec::Cbor, bytes: bytes.clone() };
                prop_assert_eq!(stored.check(), Ok(()));
                let decoded = decode_canonical(&bytes).unwrap();
                prop_assert_eq!(&decoded, &v);
                prop_assert_eq!(enc(&decoded), bytes);
            }
            Err(e) => {
                prop_assert!(v.depth() > MAX_DEPTH);
                prop_assert_eq!(e, ValueError::TooDeep { limit: MAX_DEPTH });
            }
        }
    }

    #[test]
    fn any_value_renders_as_json_and_reads_back_without_failing(v in arb_value()) {
        // Whatever the value, rendering it as JSON works and reading that back is total.
        let json = v.to_json();
        let _ = Value::from_json(&json);
    }
}

/// binary16 → f64, written independently of the encoder.
fn half_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 == 0 { 1.0 } else { -1.0 };
    let exponent = i32::from((h >> 10) & 0x1f);
    let fraction = f64::from(h & 0x3ff);
    sign * match exponent {
        0 => fraction * 2f64.powi(-24),
        31 if fraction == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1024.0 + fraction) * 2f64.powi(exponent - 25),
    }
}

#[test]
fn every_binary16_value_encodes_as_itself_and_its_neighbours_do_not() {
    for h in 0..=u16::MAX {
        let x = half_to_f64(h);
        if x.is_nan() {
            continue;
        }
        let mut expected = vec![0xf9];
        expected.extend_from_slice(&h.to_be_bytes());
        assert_eq!(enc(&Value::Float(x)), expected, "{h:04x}");
        if x.is_finite() && x != 0.0 {
            // The next f32 above and below are never binary16 values.
            let single = f32::from_bits(h_to_f32_bits(x) + 1);
            assert_eq!(enc(&Value::Float(f64::from(single)))[0], 0xfa);
            let double = f64::from_bits(x.to_bits() + 1);
            assert_eq!(enc(&Value::Float(double))[0], 0xfb);
        }
    }
    // Half the smallest subnormal is a binary32 value, not a binary16 one.
    assert_eq!(hex_of(&Value::Float(2f64.powi(-25))), "fa33000000");
    assert_eq!(hex_of(&Value::Float(65520.0)), "fa477ff000");
}

#[allow(clippy::cast_possible_truncation)]
fn h_to_f32_bits(x: f64) -> u32 {
    (x as f32).to_bits()
}
