//! Python objects ⇄ memotag values. Exact builtin types become the canonical value tree (encoded
//! by the core crate); numpy arrays become `npy`; anything else — and a tree the canonical
//! encoding cannot hold (nested deeper than its limit) — is pickled (protocol 5).

use memotag::value::{self, NpyArray, Value, MAX_DEPTH};
use memotag::{Codec, EncodedValue};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString, PyTuple,
};

static PICKLE_DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static PICKLE_LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn pickle_fn<'py>(
    py: Python<'py>,
    cell: &PyOnceLock<Py<PyAny>>,
    name: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let f = cell.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        Ok(py.import("pickle")?.getattr(name)?.unbind())
    })?;
    Ok(f.bind(py).clone())
}

/// Encodes a Python object as a stored value.
pub fn encode(obj: &Bound<'_, PyAny>) -> PyResult<EncodedValue> {
    if let Some(v) = to_value(obj, 0)? {
        // The core encoder decides what canonical CBOR can hold (what its decoder reads back);
        // the rest is pickled like any other object.
        if let Ok(encoded) = EncodedValue::from_value(&v) {
            return Ok(encoded);
        }
    }
    if let Some(array) = to_npy(obj)? {
        if let Ok(encoded) = EncodedValue::npy(&array) {
            return Ok(encoded);
        }
    }
    let py = obj.py();
    let dumps = pickle_fn(py, &PICKLE_DUMPS, "dumps")?;
    let bytes = dumps.call1((obj, 5))?;
    Ok(EncodedValue::pickle(
        bytes.cast::<PyBytes>()?.as_bytes().to_vec(),
    ))
}

/// The canonical value tree of `obj`, or `None` if it (or something inside it) is not one of the
/// exact builtin types the canonical encoding covers. Conversion stops just past
/// [`MAX_DEPTH`] (so that a deeply nested object is not walked to its end); the encoder checks
/// the limit itself.
fn to_value(obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<Option<Value>> {
    if depth > MAX_DEPTH {
        return Ok(None);
    }
    let py = obj.py();
    if obj.is_none() {
        return Ok(Some(Value::None));
    }
    if obj.is_exact_instance_of::<PyBool>() {
        return Ok(Some(Value::Bool(obj.is_truthy()?)));
    }
    if obj.is_exact_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Some(Value::Int(i)));
        }
        let negative = obj.lt(0)?;
        let magnitude = obj.call_method0("__abs__")?;
        let bits: usize = magnitude.call_method0("bit_length")?.extract()?;
        let bytes = magnitude.call_method1("to_bytes", (bits.div_ceil(8), "big"))?;
        return Ok(Some(Value::from_sign_magnitude(
            negative,
            bytes.cast::<PyBytes>()?.as_bytes(),
        )));
    }
    if obj.is_exact_instance_of::<PyString>() {
        return Ok(Some(Value::Str(
            obj.cast::<PyString>()?.to_cow()?.into_owned(),
        )));
    }
    if obj.is_exact_instance_of::<PyFloat>() {
        return Ok(Some(Value::Float(obj.cast::<PyFloat>()?.value())));
    }
    if obj.is_exact_instance_of::<PyBytes>() {
        return Ok(Some(Value::Bytes(
            obj.cast::<PyBytes>()?.as_bytes().to_vec(),
        )));
    }
    let items = |iter: Bound<'_, pyo3::types::PyIterator>| -> PyResult<Option<Vec<Value>>> {
        let mut out = Vec::new();
        for item in iter {
            match to_value(&item?, depth + 1)? {
                Some(v) => out.push(v),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    };
    if obj.is_exact_instance_of::<PyTuple>() {
        return Ok(items(obj.try_iter()?)?.map(Value::Tuple));
    }
    if obj.is_exact_instance_of::<PyList>() {
        return Ok(items(obj.try_iter()?)?.map(Value::List));
    }
    if obj.is_exact_instance_of::<PyDict>() {
        let dict = obj.cast::<PyDict>()?;
        let mut entries = Vec::with_capacity(dict.len());
        for (k, v) in dict.iter() {
            let (Some(k), Some(v)) = (to_value(&k, depth + 1)?, to_value(&v, depth + 1)?) else {
                return Ok(None);
            };
            entries.push((k, v));
        }
        return Ok(Some(Value::Dict(entries)));
    }
    if obj.is_exact_instance_of::<PySet>() {
        return Ok(items(obj.try_iter()?)?.map(Value::Set));
    }
    if obj.is_exact_instance_of::<PyFrozenSet>() {
        return Ok(items(obj.try_iter()?)?.map(Value::FrozenSet));
    }
    let _ = py;
    Ok(None)
}

/// A numpy array (exact `numpy.ndarray`, not of object or structured dtype) as dtype, shape and
/// C-order bytes; `None` for anything else. numpy is never imported here: an array can only
/// exist if the user already imported it.
fn to_npy(obj: &Bound<'_, PyAny>) -> PyResult<Option<NpyArray>> {
    let ty = obj.get_type();
    if ty.name()?.to_cow()? != "ndarray" || ty.module()?.to_cow()? != "numpy" {
        return Ok(None);
    }
    let dtype = obj.getattr("dtype")?;
    if dtype.getattr("hasobject")?.is_truthy()? || !dtype.getattr("fields")?.is_none() {
        return Ok(None);
    }
    let dtype_str: String = dtype.getattr("str")?.extract()?;
    let shape: Vec<u64> = obj.getattr("shape")?.extract()?;
    let data = obj.call_method1("tobytes", ("C",))?;
    let data = data.cast::<PyBytes>()?.as_bytes().to_vec();
    match NpyArray::new(&dtype_str, shape, data) {
        Ok(array) => Ok(Some(array)),
        Err(_) => Ok(None),
    }
}

/// Decodes a stored value back into the Python object it was.
pub fn decode(py: Python<'_>, value: &EncodedValue) -> PyResult<Py<PyAny>> {
    match value.codec {
        Codec::Cbor => {
            let v = value::decode_canonical(&value.bytes).map_err(|e| {
                PyValueError::new_err(format!("stored value cannot be decoded: {e}"))
            })?;
            from_value(py, &v)
        }
        Codec::Npy => {
            let array = value.to_npy().map_err(|e| {
                PyValueError::new_err(format!("stored array cannot be decoded: {e}"))
            })?;
            let numpy = py.import("numpy")?;
            let flat = numpy.call_method1(
                "frombuffer",
                (
                    PyBytes::new(py, &array.data),
                    numpy.call_method1("dtype", (array.dtype.as_str(),))?,
                ),
            )?;
            let shape = PyTuple::new(py, &array.shape)?;
            Ok(flat
                .call_method1("reshape", (shape,))?
                .call_method0("copy")?
                .unbind())
        }
        Codec::Pickle => {
            let loads = pickle_fn(py, &PICKLE_LOADS, "loads")?;
            Ok(loads.call1((PyBytes::new(py, &value.bytes),))?.unbind())
        }
        Codec::Raw => Ok(PyBytes::new(py, &value.bytes).into_any().unbind()),
    }
}

/// Builds the Python object for a canonical value tree.
pub fn from_value(py: Python<'_>, v: &Value) -> PyResult<Py<PyAny>> {
    Ok(match v {
        Value::None => py.None(),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any().unbind(),
        Value::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        Value::BigInt(big) => {
            let magnitude = PyBytes::new(py, big.magnitude());
            let int = py
                .get_type::<PyInt>()
                .call_method1("from_bytes", (magnitude, "big"))?;
            if big.is_negative() {
                int.neg()?.unbind()
            } else {
                int.unbind()
            }
        }
        Value::Float(f) => PyFloat::new(py, *f).into_any().unbind(),
        Value::Str(s) => PyString::new(py, s).into_any().unbind(),
        Value::Bytes(b) => PyBytes::new(py, b).into_any().unbind(),
        Value::List(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(from_value(py, item)?)?;
            }
            list.into_any().unbind()
        }
        Value::Tuple(items) => {
            let objs = items
                .iter()
                .map(|i| from_value(py, i))
                .collect::<PyResult<Vec<_>>>()?;
            PyTuple::new(py, objs)?.into_any().unbind()
        }
        Value::Dict(entries) => {
            let dict = PyDict::new(py);
            for (k, v) in entries {
                dict.set_item(from_value(py, k)?, from_value(py, v)?)?;
            }
            dict.into_any().unbind()
        }
        Value::Set(items) => {
            let set = PySet::empty(py)?;
            for item in items {
                set.add(from_value(py, item)?)?;
            }
            set.into_any().unbind()
        }
        Value::FrozenSet(items) => {
            let objs = items
                .iter()
                .map(|i| from_value(py, i))
                .collect::<PyResult<Vec<_>>>()?;
            PyFrozenSet::new(py, &objs)?.into_any().unbind()
        }
    })
}
