//! Conversions between JSON case-file values and CEL values.

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::Key;
use cel::Value;

use crate::error::ErrorKind;

/// Converts a JSON value into a CEL value.
///
/// Integers that fit become `int` (larger positive ones `uint`), other numbers
/// `double`, objects maps with string keys.
pub fn json_to_cel(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(items) => {
            Value::List(Arc::new(items.iter().map(json_to_cel).collect()))
        }
        serde_json::Value::Object(map) => {
            let map: HashMap<Key, Value> = map
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), json_to_cel(v)))
                .collect();
            Value::from(map)
        }
    }
}

/// A CEL value that has no JSON form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoJsonForm {
    /// A NaN or infinite decimal.
    #[error("the decimal {value} has no JSON form")]
    NonFiniteDecimal {
        /// The decimal as CEL prints it.
        value: String,
    },
    /// Bytes, a type, a function or an opaque value.
    #[error("a {cel_type} has no JSON form")]
    Type {
        /// The CEL type name.
        cel_type: String,
    },
}

impl NoJsonForm {
    /// What the error means to a caller: [`ErrorKind::Internal`], as for
    /// the [`crate::rules::EvalError`] it becomes (a definition's expression
    /// produced the value).
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }
}

/// Converts a CEL value into JSON, or says why it cannot.
///
/// # Errors
/// A non-finite double, bytes, a type, a function or an opaque value has no
/// JSON form; [`NoJsonForm`] names what was found.
pub fn cel_to_json(value: &Value) -> Result<serde_json::Value, NoJsonForm> {
    Ok(match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(i) => serde_json::Value::from(*i),
        Value::UInt(u) => serde_json::Value::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .ok_or_else(|| NoJsonForm::NonFiniteDecimal {
                value: f.to_string(),
            })?,
        Value::String(s) => serde_json::Value::String(s.as_str().to_string()),
        Value::List(items) => serde_json::Value::Array(
            items
                .iter()
                .map(cel_to_json)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Value::Map(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map.map.iter() {
                let key = match k {
                    Key::String(s) => s.as_str().to_string(),
                    Key::Int(i) => i.to_string(),
                    Key::Uint(u) => u.to_string(),
                    Key::Bool(b) => b.to_string(),
                };
                out.insert(key, cel_to_json(v)?);
            }
            serde_json::Value::Object(out)
        }
        other => {
            return Err(NoJsonForm::Type {
                cel_type: other.type_of().to_string(),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_through_cel() {
        let v = json!({"a": 1, "b": [true, "x", 2.5], "c": null, "d": {"lat": 51.5, "lon": -0.1}});
        assert_eq!(cel_to_json(&json_to_cel(&v)), Ok(v));
    }

    #[test]
    fn bytes_have_no_json_form() {
        let err = cel_to_json(&Value::Bytes(Arc::new(vec![1]))).unwrap_err();
        assert_eq!(
            err,
            NoJsonForm::Type {
                cel_type: "bytes".into()
            }
        );
        assert_eq!(err.to_string(), "a bytes has no JSON form");
        assert_eq!(err.kind(), ErrorKind::Internal);
        let nan = cel_to_json(&Value::Float(f64::NAN)).unwrap_err();
        assert_eq!(nan.to_string(), "the decimal NaN has no JSON form");
    }
}
