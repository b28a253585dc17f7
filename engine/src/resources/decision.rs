//! Decision tables: first-match tables as data (TOML), e.g. incident
//! grading from a few case fields to a grade and a target attendance time.
//!
//! ```toml
//! description = "Burglary call grading"
//! [inputs]                       # name -> text | integer | decimal | boolean
//! offenders_on_scene = "boolean"
//! premises_type = "text"
//! [outputs]                      # every rule's `then` sets every output
//! grade = "text"
//! attend_within_minutes = "integer"
//!
//! [[rules]]
//! when = { offenders_on_scene = true }          # equality
//! then = { grade = "immediate", attend_within_minutes = 15 }
//! [[rules]]
//! when = { premises_type = ["dwelling", "other"] }   # any of
//! then = { grade = "priority", attend_within_minutes = 60 }
//! [[rules]]                      # no `when`: always matches
//! then = { grade = "extended", attend_within_minutes = 2880 }
//! ```
//!
//! A condition is a value (equal to it), a list (equal to one of them) or
//! a table `{ min = .., max = .. }` (a number within, both ends included).
//! A rule matches when all its conditions hold; an input that is absent
//! holds no condition. The first matching rule gives the outputs; when
//! none does, [`DecisionError::NoMatch`].

use std::collections::BTreeMap;

use super::{toml_problem, ResourceProblem};

/// Most rules one table may hold.
pub const MAX_RULES: usize = 10_000;

/// The type of an input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// A string.
    Text,
    /// A whole number.
    Integer,
    /// A number.
    Decimal,
    /// True or false.
    Boolean,
}

impl ValueType {
    fn parse(s: &str) -> Option<ValueType> {
        Some(match s {
            "text" => ValueType::Text,
            "integer" => ValueType::Integer,
            "decimal" => ValueType::Decimal,
            "boolean" => ValueType::Boolean,
            _ => return None,
        })
    }

    /// Its name in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Text => "text",
            ValueType::Integer => "integer",
            ValueType::Decimal => "decimal",
            ValueType::Boolean => "boolean",
        }
    }

    fn admits(self, v: &serde_json::Value) -> bool {
        match self {
            ValueType::Text => v.is_string(),
            ValueType::Integer => v.is_i64() || v.is_u64(),
            ValueType::Decimal => v.is_number(),
            ValueType::Boolean => v.is_boolean(),
        }
    }
}

#[derive(Debug, Clone)]
enum Test {
    Equals(serde_json::Value),
    OneOf(Vec<serde_json::Value>),
    Range { min: Option<f64>, max: Option<f64> },
}

impl Test {
    fn holds(&self, v: &serde_json::Value) -> bool {
        match self {
            Test::Equals(x) => same(x, v),
            Test::OneOf(xs) => xs.iter().any(|x| same(x, v)),
            Test::Range { min, max } => v
                .as_f64()
                .is_some_and(|n| min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m)),
        }
    }
}

/// Equality with integers and decimals compared as numbers.
fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[derive(Debug, Clone)]
struct Rule {
    when: Vec<(String, Test)>,
    then: BTreeMap<String, serde_json::Value>,
}

/// A parsed decision table.
#[derive(Debug, Clone)]
pub struct DecisionTable {
    /// What it decides.
    pub description: Option<String>,
    inputs: BTreeMap<String, ValueType>,
    outputs: BTreeMap<String, ValueType>,
    rules: Vec<Rule>,
}

/// Why a table could not decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    /// No rule matched the input.
    #[error("no rule matches the input")]
    NoMatch,
    /// An input the table does not declare.
    #[error("the table has no input '{0}'")]
    UnknownInput(String),
    /// An input of the wrong type.
    #[error("input '{name}' must be {expected}")]
    WrongType {
        /// The input.
        name: String,
        /// Its declared type.
        expected: &'static str,
    },
}

fn json_of(v: &toml::Value) -> Option<serde_json::Value> {
    Some(match v {
        toml::Value::String(s) => serde_json::Value::from(s.as_str()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Value::from(*f),
        toml::Value::Boolean(b) => serde_json::Value::from(*b),
        _ => return None,
    })
}

fn types(
    table: &toml::Table,
    key: &str,
    problems: &mut Vec<ResourceProblem>,
) -> BTreeMap<String, ValueType> {
    let mut out = BTreeMap::new();
    match table.get(key) {
        Some(toml::Value::Table(t)) => {
            for (name, ty) in t {
                match ty.as_str().and_then(ValueType::parse) {
                    Some(ty) => {
                        out.insert(name.clone(), ty);
                    }
                    None => problems.push(ResourceProblem::new(
                        format!("{key}.{name}"),
                        "the type must be text, integer, decimal or boolean",
                    )),
                }
            }
        }
        Some(_) => problems.push(ResourceProblem::new(key, "must be a table: name = type")),
        None => {}
    }
    if out.is_empty() && key == "outputs" && !problems.iter().any(|p| p.path.starts_with(key)) {
        problems.push(ResourceProblem::new(key, "declare at least one output"));
    }
    out
}

impl DecisionTable {
    /// Parses and checks a table.
    ///
    /// Errors: every problem with its path (`rules[2].then.grade`, ...):
    /// TOML syntax, unknown top-level keys, undeclared inputs or outputs,
    /// values of the wrong type, a rule that does not set every output.
    pub fn parse(source: &str) -> Result<DecisionTable, Vec<ResourceProblem>> {
        let table: toml::Table = toml::from_str(source).map_err(|e| vec![toml_problem(&e)])?;
        let mut problems = Vec::new();
        for key in table.keys() {
            if !["description", "inputs", "outputs", "rules"].contains(&key.as_str()) {
                problems.push(ResourceProblem::new(
                    key.as_str(),
                    "unknown key: a table has description, inputs, outputs and rules",
                ));
            }
        }
        let description = match table.get("description") {
            None => None,
            Some(toml::Value::String(s)) => Some(s.clone()),
            Some(_) => {
                problems.push(ResourceProblem::new("description", "must be a string"));
                None
            }
        };
        let inputs = types(&table, "inputs", &mut problems);
        let outputs = types(&table, "outputs", &mut problems);
        let mut rules = Vec::new();
        let raw_rules = match table.get("rules") {
            Some(toml::Value::Array(a)) => a.as_slice(),
            Some(_) => {
                problems.push(ResourceProblem::new("rules", "must be an array of tables"));
                &[]
            }
            None => &[],
        };
        if raw_rules.is_empty() {
            problems.push(ResourceProblem::new("rules", "add at least one rule"));
        }
        if raw_rules.len() > MAX_RULES {
            problems.push(ResourceProblem::new(
                "rules",
                format!("at most {MAX_RULES} rules per table"),
            ));
            return Err(problems);
        }
        for (i, raw) in raw_rules.iter().enumerate() {
            let path = format!("rules[{i}]");
            let Some(raw) = raw.as_table() else {
                problems.push(ResourceProblem::new(path, "a rule is a table: when, then"));
                continue;
            };
            for key in raw.keys() {
                if key != "when" && key != "then" {
                    problems.push(ResourceProblem::new(
                        format!("{path}.{key}"),
                        "unknown key: a rule has when and then",
                    ));
                }
            }
            let mut when = Vec::new();
            match raw.get("when") {
                None => {}
                Some(toml::Value::Table(conditions)) => {
                    for (name, c) in conditions {
                        let at = format!("{path}.when.{name}");
                        let Some(&ty) = inputs.get(name) else {
                            problems.push(ResourceProblem::new(
                                at,
                                format!("'{name}' is not declared under [inputs]"),
                            ));
                            continue;
                        };
                        match condition(c, ty) {
                            Ok(test) => when.push((name.clone(), test)),
                            Err(message) => problems.push(ResourceProblem::new(at, message)),
                        }
                    }
                }
                Some(_) => problems.push(ResourceProblem::new(
                    format!("{path}.when"),
                    "must be a table: input = condition",
                )),
            }
            let mut then = BTreeMap::new();
            match raw.get("then") {
                Some(toml::Value::Table(values)) => {
                    for (name, v) in values {
                        let at = format!("{path}.then.{name}");
                        let Some(&ty) = outputs.get(name) else {
                            problems.push(ResourceProblem::new(
                                at,
                                format!("'{name}' is not declared under [outputs]"),
                            ));
                            continue;
                        };
                        match json_of(v).filter(|j| ty.admits(j)) {
                            Some(j) => {
                                then.insert(name.clone(), j);
                            }
                            None => problems
                                .push(ResourceProblem::new(at, format!("must be {}", ty.as_str()))),
                        }
                    }
                    for name in outputs.keys() {
                        if !values.contains_key(name) {
                            problems.push(ResourceProblem::new(
                                format!("{path}.then"),
                                format!("sets no '{name}': every rule sets every output"),
                            ));
                        }
                    }
                }
                _ => problems.push(ResourceProblem::new(
                    format!("{path}.then"),
                    "every rule needs a table: output = value",
                )),
            }
            rules.push(Rule { when, then });
        }
        if problems.is_empty() {
            Ok(DecisionTable {
                description,
                inputs,
                outputs,
                rules,
            })
        } else {
            Err(problems)
        }
    }

    /// The declared outputs and their types.
    pub fn outputs(&self) -> impl Iterator<Item = (&str, ValueType)> {
        self.outputs.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// The first rule that matches `input`: its index and its outputs.
    ///
    /// Errors: [`DecisionError::UnknownInput`], [`DecisionError::WrongType`]
    /// (null counts as absent), [`DecisionError::NoMatch`].
    pub fn evaluate(
        &self,
        input: &BTreeMap<String, serde_json::Value>,
    ) -> Result<(usize, BTreeMap<String, serde_json::Value>), DecisionError> {
        for (name, v) in input {
            let ty = self
                .inputs
                .get(name)
                .ok_or_else(|| DecisionError::UnknownInput(name.clone()))?;
            if !v.is_null() && !ty.admits(v) {
                return Err(DecisionError::WrongType {
                    name: name.clone(),
                    expected: ty.as_str(),
                });
            }
        }
        self.rules
            .iter()
            .enumerate()
            .find(|(_, r)| {
                r.when.iter().all(|(name, test)| {
                    input
                        .get(name)
                        .filter(|v| !v.is_null())
                        .is_some_and(|v| test.holds(v))
                })
            })
            .map(|(i, r)| (i, r.then.clone()))
            .ok_or(DecisionError::NoMatch)
    }
}

fn condition(c: &toml::Value, ty: ValueType) -> Result<Test, String> {
    let scalar = |v: &toml::Value| {
        json_of(v)
            .filter(|j| ty.admits(j) || (ty == ValueType::Decimal && j.is_number()))
            .ok_or_else(|| format!("must be {} (or a list of them)", ty.as_str()))
    };
    match c {
        toml::Value::Array(xs) if xs.is_empty() => Err("an empty list never matches".into()),
        toml::Value::Array(xs) => xs
            .iter()
            .map(scalar)
            .collect::<Result<_, _>>()
            .map(Test::OneOf),
        toml::Value::Table(t) => {
            if !matches!(ty, ValueType::Integer | ValueType::Decimal) {
                return Err("a range { min, max } applies to integer and decimal inputs".into());
            }
            let bound = |k: &str| match t.get(k) {
                None => Ok(None),
                Some(toml::Value::Integer(i)) => Ok(Some(*i as f64)),
                Some(toml::Value::Float(f)) if f.is_finite() => Ok(Some(*f)),
                Some(_) => Err(format!("'{k}' must be a number")),
            };
            let (min, max) = (bound("min")?, bound("max")?);
            if t.keys().any(|k| k != "min" && k != "max") {
                return Err("a range has only min and max".into());
            }
            if min.is_none() && max.is_none() {
                return Err("a range needs min, max or both".into());
            }
            Ok(Test::Range { min, max })
        }
        v => scalar(v).map(Test::Equals),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GRADING: &str = r#"
        description = "Burglary grading"
        [inputs]
        offenders_on_scene = "boolean"
        victim_vulnerable = "boolean"
        premises_type = "text"
        loss = "decimal"
        [outputs]
        grade = "text"
        attend_within_minutes = "integer"
        [[rules]]
        when = { offenders_on_scene = true }
        then = { grade = "immediate", attend_within_minutes = 15 }
        [[rules]]
        when = { victim_vulnerable = true, premises_type = ["dwelling", "other"] }
        then = { grade = "priority", attend_within_minutes = 60 }
        [[rules]]
        when = { loss = { min = 10000 } }
        then = { grade = "priority", attend_within_minutes = 60 }
        [[rules]]
        then = { grade = "extended", attend_within_minutes = 2880 }
    "#;

    fn input(v: serde_json::Value) -> BTreeMap<String, serde_json::Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let t = DecisionTable::parse(GRADING).unwrap();
        let (i, out) = t
            .evaluate(&input(
                json!({"offenders_on_scene": true, "victim_vulnerable": true}),
            ))
            .unwrap();
        assert_eq!((i, out["grade"].clone()), (0, json!("immediate")));
        let (i, out) = t
            .evaluate(&input(json!({"offenders_on_scene": false, "victim_vulnerable": true, "premises_type": "dwelling"})))
            .unwrap();
        assert_eq!((i, out["attend_within_minutes"].clone()), (1, json!(60)));
        let (i, _) = t.evaluate(&input(json!({"loss": 12000}))).unwrap();
        assert_eq!(i, 2);
        let (i, out) = t
            .evaluate(&input(
                json!({"victim_vulnerable": true, "premises_type": "commercial", "loss": 50.5}),
            ))
            .unwrap();
        assert_eq!((i, out["grade"].clone()), (3, json!("extended")));
    }

    #[test]
    fn bad_input_and_no_match_are_errors() {
        let t = DecisionTable::parse(GRADING).unwrap();
        assert_eq!(
            t.evaluate(&input(json!({"colour": "red"}))),
            Err(DecisionError::UnknownInput("colour".into()))
        );
        assert!(matches!(
            t.evaluate(&input(json!({"offenders_on_scene": "yes"}))),
            Err(DecisionError::WrongType { .. })
        ));
        let strict = DecisionTable::parse(
            "[inputs]\na = \"integer\"\n[outputs]\nb = \"text\"\n[[rules]]\nwhen = { a = 1 }\nthen = { b = \"one\" }\n",
        )
        .unwrap();
        assert_eq!(
            strict.evaluate(&input(json!({"a": 2}))),
            Err(DecisionError::NoMatch)
        );
    }

    #[test]
    fn invalid_tables_list_every_problem_with_its_path() {
        let bad = r#"
            colour = "red"
            [inputs]
            a = "integer"
            b = "complex"
            [outputs]
            grade = "text"
            [[rules]]
            when = { a = "one", c = 1 }
            then = { grade = 3 }
            [[rules]]
            when = { a = { min = "x" } }
            then = { }
        "#;
        let paths: Vec<String> = DecisionTable::parse(bad)
            .unwrap_err()
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(
            paths,
            [
                "colour",
                "inputs.b",
                "rules[0].when.a",
                "rules[0].when.c",
                "rules[0].then.grade",
                "rules[1].when.a",
                "rules[1].then",
            ]
        );
        assert!(!DecisionTable::parse("rules = [").unwrap_err().is_empty());
    }
}
