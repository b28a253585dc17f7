//! Reference data: a tenant's versioned lookup tables (TOML), e.g. offence
//! codes to their description and Home Office class.
//!
//! ```toml
//! description = "Home Office offence codes"
//! columns = ["description", "home_office_class"]
//! [entries."28/1"]
//! description = "Burglary in a dwelling"
//! home_office_class = "28"
//! ```
//!
//! Every entry sets every column, as text; keys are 1 to 128 bytes.

use std::collections::BTreeMap;

use super::{toml_problem, ResourceProblem};

/// Most entries one table may hold.
pub const MAX_ENTRIES: usize = 100_000;

/// A parsed reference table.
#[derive(Debug, Clone)]
pub struct ReferenceTable {
    /// What it lists.
    pub description: Option<String>,
    columns: Vec<String>,
    entries: BTreeMap<String, BTreeMap<String, String>>,
}

impl ReferenceTable {
    /// Parses and checks a table.
    ///
    /// Errors: every problem with its path (`entries."28/1".description`):
    /// TOML syntax, unknown keys, no columns, an entry that leaves out a
    /// column or sets one not declared, a value that is not text.
    pub fn parse(source: &str) -> Result<ReferenceTable, Vec<ResourceProblem>> {
        let table: toml::Table = toml::from_str(source).map_err(|e| vec![toml_problem(&e)])?;
        let mut problems = Vec::new();
        for key in table.keys() {
            if !["description", "columns", "entries"].contains(&key.as_str()) {
                problems.push(ResourceProblem::new(
                    key.as_str(),
                    "unknown key: a reference table has description, columns and entries",
                ));
            }
        }
        let description = table
            .get("description")
            .and_then(|d| d.as_str())
            .map(str::to_string);
        let columns: Vec<String> = match table.get("columns") {
            Some(toml::Value::Array(cs)) if !cs.is_empty() => cs
                .iter()
                .enumerate()
                .filter_map(|(i, c)| match c.as_str() {
                    Some(s) if !s.is_empty() => Some(s.to_string()),
                    _ => {
                        problems.push(ResourceProblem::new(
                            format!("columns[{i}]"),
                            "a column is a non-empty string",
                        ));
                        None
                    }
                })
                .collect(),
            _ => {
                problems.push(ResourceProblem::new(
                    "columns",
                    "declare the columns: a non-empty list of names",
                ));
                Vec::new()
            }
        };
        let mut entries = BTreeMap::new();
        match table.get("entries") {
            Some(toml::Value::Table(es)) if es.len() <= MAX_ENTRIES => {
                for (key, row) in es {
                    let path = format!("entries.{key:?}");
                    if key.is_empty() || key.len() > 128 {
                        problems.push(ResourceProblem::new(&path, "a key is 1 to 128 bytes"));
                    }
                    let Some(row) = row.as_table() else {
                        problems.push(ResourceProblem::new(
                            path,
                            "an entry is a table: column = text",
                        ));
                        continue;
                    };
                    let mut values = BTreeMap::new();
                    for (column, v) in row {
                        if !columns.contains(column) {
                            problems.push(ResourceProblem::new(
                                format!("{path}.{column}"),
                                format!("'{column}' is not one of the columns"),
                            ));
                        } else if let Some(s) = v.as_str() {
                            values.insert(column.clone(), s.to_string());
                        } else {
                            problems.push(ResourceProblem::new(
                                format!("{path}.{column}"),
                                "values are text",
                            ));
                        }
                    }
                    for column in &columns {
                        if !row.contains_key(column) {
                            problems.push(ResourceProblem::new(
                                &path,
                                format!("sets no '{column}': every entry sets every column"),
                            ));
                        }
                    }
                    entries.insert(key.clone(), values);
                }
            }
            Some(toml::Value::Table(_)) => problems.push(ResourceProblem::new(
                "entries",
                format!("at most {MAX_ENTRIES} entries per table"),
            )),
            _ => problems.push(ResourceProblem::new("entries", "add a table of entries")),
        }
        if problems.is_empty() {
            Ok(ReferenceTable {
                description,
                columns,
                entries,
            })
        } else {
            Err(problems)
        }
    }

    /// The columns, in declared order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The entry of `key`: column -> value.
    pub fn lookup(&self, key: &str) -> Option<&BTreeMap<String, String>> {
        self.entries.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_found_by_key() {
        let t = ReferenceTable::parse(
            r#"
            columns = ["description", "home_office_class"]
            [entries."28/1"]
            description = "Burglary in a dwelling"
            home_office_class = "28"
            [entries."30/1"]
            description = "Burglary in a building other than a dwelling"
            home_office_class = "30"
            "#,
        )
        .unwrap();
        assert_eq!(t.lookup("28/1").unwrap()["home_office_class"], "28");
        assert_eq!(t.lookup("99/9"), None);
        assert_eq!(t.columns(), ["description", "home_office_class"]);
    }

    #[test]
    fn invalid_tables_list_every_problem_with_its_path() {
        let paths: Vec<String> = ReferenceTable::parse(
            r#"
            columns = ["description", "class"]
            [entries."28/1"]
            description = 28
            colour = "red"
            "#,
        )
        .unwrap_err()
        .into_iter()
        .map(|p| p.path)
        .collect();
        assert_eq!(
            paths,
            [
                "entries.\"28/1\".colour",
                "entries.\"28/1\".description",
                "entries.\"28/1\"",
            ]
        );
        assert_eq!(ReferenceTable::parse("").unwrap_err().len(), 2);
    }
}
