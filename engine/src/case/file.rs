//! [`CaseFile`]: case-file values by field key, as a caller supplies them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::definition::FieldKey;

/// Case-file values by field key: what opening a case, updating its case
/// file and completing a task (its form fields, or a service task's results)
/// take. Values are JSON; the case runtime checks each against the field's
/// declared type and classification.
///
/// ```
/// use casebook::case::CaseFile;
/// use serde_json::json;
///
/// let from_json = CaseFile::from_json(json!({"requester": "A. Smith", "days": 20})).unwrap();
/// let from_pairs = CaseFile::new().with("requester", "A. Smith").with("days", 20);
/// assert_eq!(from_json, from_pairs);
/// assert!(CaseFile::from_json(json!(["not", "an", "object"])).is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CaseFile(BTreeMap<FieldKey, serde_json::Value>);

/// A JSON value that is not an object was given as a case file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a case file is a JSON object of field key -> value; got {found}")]
pub struct NotAnObject {
    /// What was given instead (`array`, `string`, ...).
    pub found: &'static str,
}

impl NotAnObject {
    /// Always [`crate::ErrorKind::InvalidArgument`].
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::invalid("case_file")
    }
}

impl CaseFile {
    /// An empty case file.
    pub fn new() -> Self {
        CaseFile::default()
    }

    /// The case file a JSON object describes.
    ///
    /// Errors: [`NotAnObject`] for any other JSON value.
    pub fn from_json(value: serde_json::Value) -> Result<Self, NotAnObject> {
        match value {
            serde_json::Value::Object(map) => Ok(map.into_iter().collect()),
            other => Err(NotAnObject {
                found: match other {
                    serde_json::Value::Null => "null",
                    serde_json::Value::Bool(_) => "a boolean",
                    serde_json::Value::Number(_) => "a number",
                    serde_json::Value::String(_) => "a string",
                    serde_json::Value::Array(_) => "an array",
                    serde_json::Value::Object(_) => "an object",
                },
            }),
        }
    }

    /// This case file with `key` set to `value`.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.insert(key, value);
        self
    }

    /// Sets `key` to `value`, returning the previous value.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Option<serde_json::Value> {
        self.0.insert(FieldKey::new(key.into()), value.into())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.get(key)
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many values there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The values in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&FieldKey, &serde_json::Value)> {
        self.0.iter()
    }

    /// The values by field key.
    pub fn into_inner(self) -> BTreeMap<FieldKey, serde_json::Value> {
        self.0
    }

    /// The case file as a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                .collect(),
        )
    }
}

impl<K: Into<String>, V: Into<serde_json::Value>> FromIterator<(K, V)> for CaseFile {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        CaseFile(
            iter.into_iter()
                .map(|(k, v)| (FieldKey::new(k.into()), v.into()))
                .collect(),
        )
    }
}

impl From<BTreeMap<FieldKey, serde_json::Value>> for CaseFile {
    fn from(map: BTreeMap<FieldKey, serde_json::Value>) -> Self {
        CaseFile(map)
    }
}

impl From<BTreeMap<String, serde_json::Value>> for CaseFile {
    fn from(map: BTreeMap<String, serde_json::Value>) -> Self {
        map.into_iter().collect()
    }
}

impl TryFrom<serde_json::Value> for CaseFile {
    type Error = NotAnObject;
    fn try_from(value: serde_json::Value) -> Result<Self, NotAnObject> {
        CaseFile::from_json(value)
    }
}

impl IntoIterator for CaseFile {
    type Item = (FieldKey, serde_json::Value);
    type IntoIter = std::collections::btree_map::IntoIter<FieldKey, serde_json::Value>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_from_json_pairs_and_maps_alike() {
        let a = CaseFile::from_json(json!({"b": 2, "a": [1]})).unwrap();
        let b: CaseFile = [("a", json!([1])), ("b", json!(2))].into_iter().collect();
        let mut m = BTreeMap::new();
        m.insert("a".to_string(), json!([1]));
        m.insert("b".to_string(), json!(2));
        assert_eq!(a, b);
        assert_eq!(a, CaseFile::from(m));
        assert_eq!(a.to_json(), json!({"a": [1], "b": 2}));
        assert_eq!(a.get("b"), Some(&json!(2)));
        assert_eq!(a.len(), 2);
        assert_eq!(
            CaseFile::from_json(json!(null)).unwrap_err().to_string(),
            "a case file is a JSON object of field key -> value; got null"
        );
    }

    #[test]
    fn serializes_as_a_plain_map() {
        let f = CaseFile::new().with("x", 1);
        assert_eq!(serde_json::to_value(&f).unwrap(), json!({"x": 1}));
    }
}
