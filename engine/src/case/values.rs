//! Case-file values: checking a JSON value against a field's type.

use serde_json::Value;

use crate::definition::{FieldDef, FieldType};
use crate::error::ErrorKind;

/// Longest text value accepted.
pub const MAX_TEXT_LEN: usize = 100_000;
/// Longest POLE reference id accepted.
pub const MAX_REF_LEN: usize = 128;
/// Most list elements accepted.
pub const MAX_LIST_LEN: usize = 10_000;
/// Deepest nesting of lists and objects a case-file value may have (a
/// scalar is depth 0; the deepest value a field type allows, a list of geo
/// points, is depth 2). Checked without recursion before anything walks a
/// value recursively (cloning, comparing, encoding, dropping), so a value
/// nested 100,000 deep is refused instead of overflowing a thread's stack.
pub const MAX_VALUE_DEPTH: usize = 32;
/// Most bytes of text a text-searchable field may hold in all (for a list,
/// its elements together): every word of it is indexed, so a value that
/// could not be fully indexed is refused instead of partly indexed.
pub const MAX_SEARCH_TEXT: usize = MAX_TEXT_LEN;

/// A value a case-file field cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A value of another type or form.
    #[error("expected {expected}, got {got}")]
    Expected {
        /// What the field expects.
        expected: String,
        /// What was given: its kind, never its value.
        got: String,
    },
    /// Text over `MAX_TEXT_LEN` bytes.
    #[error("text longer than {max} bytes")]
    TextTooLong {
        /// The maximum.
        max: usize,
    },
    /// A value an enumeration does not allow.
    #[error("expected one of [{}], got {got}", allowed.join(", "))]
    NotAllowed {
        /// The values it allows.
        allowed: Vec<String>,
        /// What was given: its kind, never its value.
        got: String,
    },
    /// A list inside a list.
    #[error("lists cannot be nested")]
    NestedList,
    /// Lists or objects nested deeper than [`MAX_VALUE_DEPTH`].
    #[error("a value nested deeper than {max} levels")]
    TooDeep {
        /// The maximum.
        max: usize,
    },
    /// A text-searchable field with more text than [`MAX_SEARCH_TEXT`].
    #[error("more than {max} bytes of text in a text-searchable field")]
    TooMuchTextToSearch {
        /// The maximum.
        max: usize,
    },
    /// A list over `MAX_LIST_LEN` elements.
    #[error("a list longer than {max} elements")]
    ListTooLong {
        /// The maximum.
        max: usize,
    },
    /// A list field whose definition has no element type.
    #[error("the field's element type is not defined")]
    NoElementType,
    /// A list element that its element type does not allow.
    #[error("element {index}: {error}")]
    Element {
        /// The element's position.
        index: usize,
        /// What is wrong with it.
        #[source]
        error: Box<ValueError>,
    },
}

impl ValueError {
    /// What the error means to a caller: [`ErrorKind::InvalidArgument`]
    /// (the caller knows which field the value was for).
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument { paths: Vec::new() }
    }
}

/// Checks a (non-null) value against a field definition.
///
/// # Errors
/// A [`ValueError`] saying what the field expects, e.g.
/// `expected an integer, got "ten"`.
pub fn check_value(field: &FieldDef, value: &Value) -> Result<(), ValueError> {
    value_error(field, value)
}

/// Checks a (non-null) value against a field definition, with a typed error.
pub(crate) fn value_error(field: &FieldDef, value: &Value) -> Result<(), ValueError> {
    check_depth(value)?;
    check_typed(field.ty, &field.values, field.element, value, true)?;
    if field.text_searchable() && searchable_text_len(value) > MAX_SEARCH_TEXT {
        return Err(ValueError::TooMuchTextToSearch {
            max: MAX_SEARCH_TEXT,
        });
    }
    Ok(())
}

/// [`ValueError::TooDeep`] for a value nested deeper than
/// [`MAX_VALUE_DEPTH`], found without recursion.
///
/// # Errors
/// [`ValueError::TooDeep`].
pub fn check_depth(value: &Value) -> Result<(), ValueError> {
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        if depth >= MAX_VALUE_DEPTH {
            return Err(ValueError::TooDeep {
                max: MAX_VALUE_DEPTH,
            });
        }
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    Ok(())
}

/// Drops a value without recursion: a value too deep to keep may be too
/// deep for the recursive drop of `serde_json::Value` too.
pub fn discard(value: Value) {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

/// The bytes of text a text-searchable field's value holds (a list's
/// texts together; other values count as their JSON text).
fn searchable_text_len(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(|v| v.as_str().map_or(0, str::len)).sum(),
        _ => 0,
    }
}

/// What a value is, never what it holds: error messages reach callers who
/// may not see the field (an automatic step's output, a service's result), so
/// they name kinds, not values.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer".into(),
        Value::Number(_) => "a decimal".into(),
        Value::String(s) => match s.chars().count() {
            1 => "a text of 1 character".into(),
            n => format!("a text of {n} characters"),
        },
        Value::Array(a) => match a.len() {
            1 => "a list of 1 element".into(),
            n => format!("a list of {n} elements"),
        },
        Value::Object(_) => "an object".into(),
    }
}

fn check_typed(
    ty: FieldType,
    values: &[String],
    element: Option<FieldType>,
    v: &Value,
    top: bool,
) -> Result<(), ValueError> {
    let expected = |what: &str| {
        Err(ValueError::Expected {
            expected: what.to_string(),
            got: describe(v),
        })
    };
    match ty {
        FieldType::Text => match v.as_str() {
            Some(s) if s.len() <= MAX_TEXT_LEN => Ok(()),
            Some(_) => Err(ValueError::TextTooLong { max: MAX_TEXT_LEN }),
            None => expected("text"),
        },
        FieldType::Integer => {
            if v.as_i64().is_some() {
                Ok(())
            } else {
                expected("an integer")
            }
        }
        FieldType::Decimal => {
            if v.is_number() {
                Ok(())
            } else {
                expected("a number")
            }
        }
        FieldType::Boolean => {
            if v.is_boolean() {
                Ok(())
            } else {
                expected("true or false")
            }
        }
        FieldType::Date => {
            let fmt = time::macros::format_description!("[year]-[month]-[day]");
            match v.as_str() {
                Some(s) if s.len() == 10 && time::Date::parse(s, &fmt).is_ok() => Ok(()),
                _ => expected("a date YYYY-MM-DD"),
            }
        }
        FieldType::DateTime => {
            let ok = v.as_str().is_some_and(|s| {
                (s.ends_with('Z') || s.ends_with('z'))
                    && time::OffsetDateTime::parse(
                        s,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .is_ok()
            });
            if ok {
                Ok(())
            } else {
                expected("an RFC 3339 date-time in UTC, e.g. 2026-03-01T14:05:00Z")
            }
        }
        FieldType::Enumeration => match v.as_str() {
            Some(s) if values.iter().any(|a| a == s) => Ok(()),
            _ => Err(ValueError::NotAllowed {
                allowed: values.to_vec(),
                got: describe(v),
            }),
        },
        FieldType::GeoPoint => {
            let obj = match v.as_object() {
                Some(o) if o.len() == 2 => o,
                _ => return expected("a geo point {lat, lon}"),
            };
            let lat = obj.get("lat").and_then(Value::as_f64);
            let lon = obj.get("lon").and_then(Value::as_f64);
            match (lat, lon) {
                (Some(lat), Some(lon))
                    if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) =>
                {
                    Ok(())
                }
                _ => expected("a geo point {lat: -90..90, lon: -180..180}"),
            }
        }
        FieldType::List => {
            let Some(items) = v.as_array() else {
                return expected("a list");
            };
            if !top {
                return Err(ValueError::NestedList);
            }
            if items.len() > MAX_LIST_LEN {
                return Err(ValueError::ListTooLong { max: MAX_LIST_LEN });
            }
            let Some(el) = element else {
                return Err(ValueError::NoElementType);
            };
            for (i, item) in items.iter().enumerate() {
                check_typed(el, values, None, item, false).map_err(|e| ValueError::Element {
                    index: i,
                    error: Box::new(e),
                })?;
            }
            Ok(())
        }
        FieldType::Person | FieldType::Object | FieldType::Location => match v.as_str() {
            Some(s) if !s.trim().is_empty() && s.len() <= MAX_REF_LEN => Ok(()),
            _ => expected(&format!(
                "a {} reference (an id of 1 to {MAX_REF_LEN} bytes)",
                ty.as_str()
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::FieldKey;
    use serde_json::json;

    fn field(ty: FieldType) -> FieldDef {
        FieldDef {
            key: FieldKey::new("f"),
            ty,
            values: vec!["a".into(), "b".into()],
            element: Some(FieldType::Enumeration),
            required: false,
            classification: None,
            label: None,
            description: None,
            search: None,
        }
    }

    #[test]
    fn values_are_checked_against_types() {
        let ok = [
            (FieldType::Text, json!("x")),
            (FieldType::Integer, json!(3)),
            (FieldType::Decimal, json!(3)),
            (FieldType::Decimal, json!(2.5)),
            (FieldType::Boolean, json!(true)),
            (FieldType::Date, json!("2026-02-28")),
            (FieldType::DateTime, json!("2026-02-28T10:00:00Z")),
            (FieldType::Enumeration, json!("a")),
            (FieldType::GeoPoint, json!({"lat": 51.5, "lon": -0.1})),
            (FieldType::List, json!(["a", "b"])),
            (FieldType::Person, json!("P-1")),
        ];
        for (ty, v) in ok {
            assert_eq!(check_value(&field(ty), &v), Ok(()), "{ty:?} {v}");
        }
        let bad = [
            (FieldType::Text, json!(1)),
            (FieldType::Integer, json!(2.5)),
            (FieldType::Integer, json!("3")),
            (FieldType::Boolean, json!("true")),
            (FieldType::Date, json!("2026-02-30")),
            (FieldType::DateTime, json!("2026-02-28T10:00:00+01:00")),
            (FieldType::Enumeration, json!("c")),
            (FieldType::GeoPoint, json!({"lat": 91, "lon": 0})),
            (FieldType::List, json!(["a", "z"])),
            (FieldType::Location, json!("")),
        ];
        for (ty, v) in bad {
            assert!(check_value(&field(ty), &v).is_err(), "{ty:?} {v}");
        }
    }

    #[test]
    fn depth_is_checked_without_recursion_and_deep_values_drop_safely() {
        let nested = |depth: usize| {
            let mut v = json!(1);
            for _ in 0..depth {
                v = Value::Array(vec![v]);
            }
            v
        };
        assert_eq!(check_depth(&nested(MAX_VALUE_DEPTH)), Ok(()));
        assert_eq!(
            check_depth(&nested(MAX_VALUE_DEPTH + 1)),
            Err(ValueError::TooDeep {
                max: MAX_VALUE_DEPTH
            })
        );
        // Far deeper than a thread's stack could walk recursively.
        let deep = nested(1_000_000);
        assert!(check_depth(&deep).is_err());
        assert!(value_error(&field(FieldType::Text), &deep).is_err());
        discard(deep);
        let mut obj = json!(1);
        for _ in 0..100_000 {
            obj = Value::Object([("k".to_string(), obj)].into_iter().collect());
        }
        assert!(check_depth(&obj).is_err());
        discard(obj);
    }

    #[test]
    fn a_text_searchable_field_holds_no_more_text_than_is_indexed() {
        let mut f = field(FieldType::List);
        f.element = Some(FieldType::Text);
        f.search = Some(crate::definition::FieldSearch::Text);
        let half = "w".repeat(MAX_SEARCH_TEXT / 2);
        assert_eq!(value_error(&f, &json!([half, half])), Ok(()));
        assert_eq!(
            value_error(&f, &json!([half, half, "x"])),
            Err(ValueError::TooMuchTextToSearch {
                max: MAX_SEARCH_TEXT
            })
        );
        f.search = None;
        assert_eq!(value_error(&f, &json!([half, half, "x"])), Ok(()));
    }

    #[test]
    fn value_errors_are_typed_and_read_as_before() {
        let err = value_error(&field(FieldType::List), &json!(["a", "z"])).unwrap_err();
        assert_eq!(
            err,
            ValueError::Element {
                index: 1,
                error: Box::new(ValueError::NotAllowed {
                    allowed: vec!["a".into(), "b".into()],
                    got: "a text of 1 character".into(),
                }),
            }
        );
        assert_eq!(
            err.to_string(),
            "element 1: expected one of [a, b], got a text of 1 character"
        );
        assert_eq!(err.kind(), ErrorKind::InvalidArgument { paths: vec![] });
        assert_eq!(
            check_value(&field(FieldType::Integer), &json!("ten")).map_err(|e| e.to_string()),
            Err("expected an integer, got a text of 3 characters".to_string())
        );
    }
}
