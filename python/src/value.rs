//! How Python values are stored: JSON values as compact UTF-8 JSON text
//! (what the `waymark` command line shows as written), `bytes` as a zero
//! byte followed by the bytes. No JSON text starts with a zero byte, so
//! the two never meet. A stored value that is neither (written by a Rust
//! caller, say) reads back as `bytes`, unchanged.
//!
//! Encoding follows Python's `json` module, stricter where a reader in
//! another language could not follow: tuples are lists; dictionary keys
//! that are `int`, `float`, `bool` or `None` become the strings `json`
//! makes of them. Refused before anything is written: a value of another
//! type (`TypeError`); `NaN` and infinities, which are not JSON, integers
//! beyond 64 bits, which the CLI and most JSON readers cannot hold, and
//! nesting deeper than [`DEPTH_MAX`] (`ValueError`); strings that are not
//! valid Unicode, such as lone surrogates (`UnicodeEncodeError`, a
//! `ValueError`). Keys that meet once made strings (`1` and `"1"`) are
//! written twice, as `json` writes them, and the last wins on reading, as
//! with `json.loads`.

use std::fmt;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The first byte of a stored `bytes` value.
const BYTES_TAG: u8 = 0;

/// The deepest nesting of lists and dictionaries a value may have. The
/// reader's JSON parser stops at 128 levels; this leaves it room.
pub(crate) const DEPTH_MAX: usize = 100;

/// The stored form of `value`.
pub(crate) fn encode(value: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let mut out = Vec::new();
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Appends the stored form of `value` to `out`; on an error `out` is as it
/// was. Runs no Python code of the caller's: a subclass's `__repr__` or
/// `__iter__` is never called.
pub(crate) fn encode_into(value: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    if let Ok(b) = value.cast::<PyBytes>() {
        tagged(b.as_bytes(), out);
        return Ok(());
    }
    if let Ok(b) = value.cast::<PyByteArray>() {
        tagged(&b.to_vec(), out);
        return Ok(());
    }
    let start = out.len();
    out.reserve(64);
    let written = write_json(value, out, 0);
    if written.is_err() {
        out.truncate(start);
    }
    written
}

/// The stored form of an optional value: `None` is stored as nothing (an
/// empty metadata, say), not as JSON `null`.
pub(crate) fn encode_opt(value: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<u8>> {
    match value {
        Some(v) if !v.is_none() => encode(v),
        _ => Ok(Vec::new()),
    }
}

fn tagged(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() + 1);
    out.push(BYTES_TAG);
    out.extend_from_slice(bytes);
}

fn write_json(v: &Bound<'_, PyAny>, out: &mut Vec<u8>, depth: usize) -> PyResult<()> {
    if v.is_none() {
        out.extend_from_slice(b"null");
    } else if let Ok(b) = v.cast::<PyBool>() {
        out.extend_from_slice(if b.is_true() { b"true" } else { b"false" });
    } else if let Ok(i) = v.cast::<PyInt>() {
        write_int(i, out)?;
    } else if let Ok(f) = v.cast::<PyFloat>() {
        write_float(f.value(), out)?;
    } else if let Ok(s) = v.cast::<PyString>() {
        write_str(s, out)?;
    } else if let Ok(list) = v.cast::<PyList>() {
        write_array(list.iter(), out, deeper(depth)?)?;
    } else if let Ok(tuple) = v.cast::<PyTuple>() {
        write_array(tuple.iter(), out, deeper(depth)?)?;
    } else if let Ok(dict) = v.cast::<PyDict>() {
        let depth = deeper(depth)?;
        out.push(b'{');
        for (i, (key, item)) in dict.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_key(&key, out)?;
            out.push(b':');
            write_json(&item, out, depth)?;
        }
        out.push(b'}');
    } else {
        return Err(PyTypeError::new_err(format!(
            "a value of type {} is not JSON: waymark stores JSON values (dict, list, tuple, str, int, float, bool, None) and bytes",
            type_name(v)
        )));
    }
    Ok(())
}

fn write_array<'py>(
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    out: &mut Vec<u8>,
    depth: usize,
) -> PyResult<()> {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json(&item, out, depth)?;
    }
    out.push(b']');
    Ok(())
}

fn deeper(depth: usize) -> PyResult<usize> {
    if depth >= DEPTH_MAX {
        return Err(PyValueError::new_err(format!(
            "a value nests lists and dictionaries deeper than {DEPTH_MAX} levels"
        )));
    }
    Ok(depth + 1)
}

fn write_int(i: &Bound<'_, PyInt>, out: &mut Vec<u8>) -> PyResult<()> {
    // Written straight into `out`: no string per number.
    let written = if let Ok(n) = i.extract::<i64>() {
        serde_json::to_writer(&mut *out, &n)
    } else if let Ok(n) = i.extract::<u64>() {
        serde_json::to_writer(&mut *out, &n)
    } else {
        return Err(PyValueError::new_err(
            "an integer beyond 64 bits is not stored: store it as a string",
        ));
    };
    written.map_err(|e| PyValueError::new_err(e.to_string()))
}

fn write_float(f: f64, out: &mut Vec<u8>) -> PyResult<()> {
    if !f.is_finite() {
        return Err(PyValueError::new_err(format!(
            "{f} is not a JSON number: NaN and infinities are not stored"
        )));
    }
    // serde_json writes the shortest text that reads back as the same
    // float, with a ".0" on whole numbers so that they stay floats.
    serde_json::to_writer(&mut *out, &f).map_err(|e| PyValueError::new_err(e.to_string()))
}

fn write_str(s: &Bound<'_, PyString>, out: &mut Vec<u8>) -> PyResult<()> {
    // Python's own UTF-8 (it refuses lone surrogates), read in place: no
    // Rust string of it.
    let utf8 = s.encode_utf8()?;
    write_utf8(utf8.as_bytes(), out);
    Ok(())
}

/// `text` (valid UTF-8) as a JSON string, exactly as serde_json writes it.
fn write_utf8(text: &[u8], out: &mut Vec<u8>) {
    // Most strings need no escape: copied at once. The check reads every
    // byte without stopping early, which the compiler turns into vector
    // compares.
    let plain = text.iter().fold(true, |plain, &b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text);
        out.push(b'"');
        return;
    }
    let text = std::str::from_utf8(text).expect("Python's UTF-8 encoder writes valid UTF-8");
    // Writing a str to a Vec cannot fail: serde_json's only errors here
    // are the writer's, and a Vec's writes do not fail.
    serde_json::to_writer(&mut *out, text).expect("writing JSON text into a Vec cannot fail");
}

/// A dictionary key, as `json.dumps` makes it: strings as they are;
/// `int`, `float`, `bool` and `None` as their JSON text.
fn write_key(key: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    if let Ok(s) = key.cast::<PyString>() {
        return write_str(s, out);
    }
    let mut text = Vec::new();
    if key.is_none() || key.cast::<PyBool>().is_ok() || key.cast::<PyInt>().is_ok() {
        write_json(key, &mut text, 0)?;
    } else if let Ok(f) = key.cast::<PyFloat>() {
        // `json` writes a float key as `repr` does (`1e+16`, `1e-05`),
        // which is not how a float value is written.
        if !f.value().is_finite() {
            return write_float(f.value(), out);
        }
        // `float.__repr__`, never a subclass's (as `json` does).
        let repr = PyFloat::new(key.py(), f.value()).repr()?;
        text.extend_from_slice(repr.encode_utf8()?.as_bytes());
    } else {
        return Err(PyTypeError::new_err(format!(
            "a dictionary key of type {} is not JSON: keys must be str, int, float, bool or None",
            type_name(key)
        )));
    }
    write_utf8(&text, out);
    Ok(())
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map_or_else(|_| "?".to_owned(), |n| n.to_string())
}

/// The Python value of a stored value (see the module's doc).
pub(crate) fn decode<'py>(py: Python<'py>, stored: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    if let Some((&BYTES_TAG, rest)) = stored.split_first() {
        return Ok(PyBytes::new(py, rest).into_any());
    }
    let mut de = serde_json::Deserializer::from_slice(stored);
    match PySeed(py)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
    {
        Ok(v) => Ok(v),
        // A Python error raised while building the value (out of memory):
        // not a sign that the bytes are not JSON.
        Err(_) if PyErr::occurred(py) => Err(PyErr::fetch(py)),
        Err(_) => Ok(PyBytes::new(py, stored).into_any()),
    }
}

/// The Python value of stored metadata: `None` when empty.
pub(crate) fn decode_opt<'py>(py: Python<'py>, stored: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    if stored.is_empty() {
        return Ok(py.None().into_bound(py));
    }
    decode(py, stored)
}

/// Builds Python objects straight from the JSON text, keeping the order of
/// every object's keys as written.
struct PySeed<'py>(Python<'py>);

/// A Python error while building a value; the error itself stays set in
/// the interpreter for [`decode`] to fetch.
#[derive(Debug)]
struct Raised;

impl fmt::Display for Raised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Python error was raised")
    }
}

fn raised<E: de::Error>(py: Python<'_>, e: PyErr) -> E {
    e.restore(py);
    E::custom(Raised)
}

impl<'de, 'py> DeserializeSeed<'de> for PySeed<'py> {
    type Value = Bound<'py, PyAny>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 'py> Visitor<'de> for PySeed<'py> {
    type Value = Bound<'py, PyAny>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.0.None().into_bound(self.0))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(PyBool::new(self.0, v).to_owned().into_any())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        let Ok(int) = v.into_pyobject(self.0);
        Ok(int.into_any())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        let Ok(int) = v.into_pyobject(self.0);
        Ok(int.into_any())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(PyFloat::new(self.0, v).into_any())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(PyString::new(self.0, v).into_any())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let list = PyList::empty(self.0);
        while let Some(item) = seq.next_element_seed(PySeed(self.0))? {
            list.append(item).map_err(|e| raised(self.0, e))?;
        }
        Ok(list.into_any())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let dict = PyDict::new(self.0);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let value = map.next_value_seed(PySeed(self.0))?;
            dict.set_item(key.as_ref(), value)
                .map_err(|e| raised(self.0, e))?;
        }
        Ok(dict.into_any())
    }
}
