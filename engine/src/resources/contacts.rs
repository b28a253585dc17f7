//! Contacts: a tenant's directory of people and organisations that
//! notifications and alerts address by contact id or by role.
//!
//! ```toml
//! [[contacts]]
//! id = "victim-care-unit"            # unique in the directory
//! name = "Victim Care Unit"
//! kind = "organisation"              # person | organisation
//! email = "vcu@kent.police.example"  # optional
//! roles = ["victim_care"]            # optional: who answers for these roles
//! clearance = "OFFICIAL-SENSITIVE"   # optional, default OFFICIAL: the
//!                                    # highest marking they may be sent
//! ```

use serde::Deserialize;

use super::{toml_problem, ResourceProblem};
use crate::security::Classification;

/// Most contacts one directory may hold.
pub const MAX_CONTACTS: usize = 100_000;

/// A person or an organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactKind {
    /// A person.
    Person,
    /// An organisation (a unit, a partner agency).
    Organisation,
}

/// One entry of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// Its id.
    pub id: String,
    /// Its display name.
    pub name: String,
    /// Person or organisation.
    pub kind: ContactKind,
    /// Its email address, if it has one.
    pub email: Option<String>,
    /// The roles it answers for.
    pub roles: Vec<String>,
    /// The highest marking it may be sent.
    pub clearance: Classification,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectory {
    #[serde(default)]
    contacts: Vec<RawContact>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContact {
    id: String,
    name: String,
    kind: ContactKind,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    clearance: Option<String>,
}

/// A parsed directory.
#[derive(Debug, Clone)]
pub struct Directory {
    contacts: Vec<Contact>,
}

impl Directory {
    /// Parses and checks a directory.
    ///
    /// Errors: every problem with its path (`contacts[2].email`): TOML
    /// syntax or shape, duplicate ids, an address without `@`, an unknown
    /// clearance.
    pub fn parse(source: &str) -> Result<Directory, Vec<ResourceProblem>> {
        let raw: RawDirectory = toml::from_str(source).map_err(|e| vec![toml_problem(&e)])?;
        let mut problems = Vec::new();
        if raw.contacts.len() > MAX_CONTACTS {
            return Err(vec![ResourceProblem::new(
                "contacts",
                format!("at most {MAX_CONTACTS} contacts per directory"),
            )]);
        }
        let mut contacts: Vec<Contact> = Vec::with_capacity(raw.contacts.len());
        for (i, c) in raw.contacts.into_iter().enumerate() {
            let path = format!("contacts[{i}]");
            if c.id.is_empty() || c.id.len() > 128 {
                problems.push(ResourceProblem::new(
                    format!("{path}.id"),
                    "an id is 1 to 128 bytes",
                ));
            }
            if contacts.iter().any(|o| o.id == c.id) {
                problems.push(ResourceProblem::new(
                    format!("{path}.id"),
                    format!("'{}' is already the id of another contact", c.id),
                ));
            }
            if let Some(e) = &c.email {
                if crate::orchestration::builtin::notify::parse_address(e).is_none() {
                    problems.push(ResourceProblem::new(
                        format!("{path}.email"),
                        "not an email address",
                    ));
                }
            }
            let clearance = match c.clearance.as_deref().map(str::parse::<Classification>) {
                None => Classification::Official,
                Some(Ok(c)) => c,
                Some(Err(_)) => {
                    problems.push(ResourceProblem::new(
                        format!("{path}.clearance"),
                        "use OFFICIAL, OFFICIAL-SENSITIVE, SECRET or TOP SECRET",
                    ));
                    Classification::Official
                }
            };
            contacts.push(Contact {
                id: c.id,
                name: c.name,
                kind: c.kind,
                email: c.email,
                roles: c.roles,
                clearance,
            });
        }
        if problems.is_empty() {
            Ok(Directory { contacts })
        } else {
            Err(problems)
        }
    }

    /// The contact of that id.
    pub fn get(&self, id: &str) -> Option<&Contact> {
        self.contacts.iter().find(|c| c.id == id)
    }

    /// The contacts that answer for `role`, in directory order.
    pub fn for_role<'a>(&'a self, role: &'a str) -> impl Iterator<Item = &'a Contact> + 'a {
        self.contacts
            .iter()
            .filter(move |c| c.roles.iter().any(|r| r == role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_are_found_by_id_and_role() {
        let d = Directory::parse(
            r#"
            [[contacts]]
            id = "vcu"
            name = "Victim Care Unit"
            kind = "organisation"
            email = "vcu@kent.police.example"
            roles = ["victim_care"]
            clearance = "OFFICIAL-SENSITIVE"
            [[contacts]]
            id = "ps-12"
            name = "PS 12 Khan"
            kind = "person"
            roles = ["supervisor", "victim_care"]
            "#,
        )
        .unwrap();
        assert_eq!(
            d.get("vcu").unwrap().clearance,
            Classification::OfficialSensitive
        );
        assert_eq!(d.get("ps-12").unwrap().clearance, Classification::Official);
        let ids: Vec<&str> = d.for_role("victim_care").map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["vcu", "ps-12"]);
        assert!(d.get("nobody").is_none());
    }

    #[test]
    fn invalid_directories_list_every_problem_with_its_path() {
        let paths: Vec<String> = Directory::parse(
            r#"
            [[contacts]]
            id = "a"
            name = "A"
            kind = "person"
            email = "not-an-address"
            [[contacts]]
            id = "a"
            name = "B"
            kind = "person"
            clearance = "MEGA"
            "#,
        )
        .unwrap_err()
        .into_iter()
        .map(|p| p.path)
        .collect();
        assert_eq!(
            paths,
            [
                "contacts[0].email",
                "contacts[1].id",
                "contacts[1].clearance"
            ]
        );
        assert!(Directory::parse("[[contacts]]\nid = 3").is_err());
    }
}
