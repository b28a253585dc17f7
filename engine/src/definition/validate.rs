//! Validation: every rule a definition must follow, every problem collected.

use std::collections::{BTreeMap, BTreeSet};

use super::error::{Problem, ProblemKind};
use super::keys::{
    check_condition_name, check_identifier, check_service_name, FieldKey, ItemKey, RoleKey,
};
use super::model::REPETITION;
use super::model::{
    Activity, ActivityKind, CaseDefinition, Deadline, Escalation, FieldDef, FieldType, Milestone,
    Occurrence, OnPart, ParamDef, Sentry, ServiceDef, SlaPeriod, Stage,
};
use super::period::Period;
use super::plan::PlanItem;
use crate::rules::{
    self, Condition, Expected, Expression, FieldInfo, LiteralFormat, Schema, StaticType,
};

/// Checks everything, the dry run of opening included; returns the
/// problems in document order.
pub(crate) fn validate(def: &CaseDefinition) -> Vec<Problem> {
    let mut problems = validate_static(def);
    if problems.is_empty() {
        problems.extend(opening_loops(def));
    }
    problems
}

/// Every check but the dry run of opening.
pub(crate) fn validate_static(def: &CaseDefinition) -> Vec<Problem> {
    let mut v = Validator::new(def);
    v.header();
    v.roles();
    v.fields();
    v.subjects();
    v.services();
    v.permissions();
    v.plan();
    v.flows();
    v.opening();
    v.problems
}

/// Why a definition whose opening cannot fit in one command is refused.
pub(crate) fn opening_too_large(created: usize, max_events: usize) -> Option<Problem> {
    // CaseOpened, then at least one event per instance created.
    (created + 1 > max_events).then(|| {
        Problem::new(
            "",
            ProblemKind::Invalid,
            format!(
                "opening a case creates at least {created} plan items, and the opening is one \
                 append of at most {max_events} events (CaseOpened and one per item): start \
                 parts of the plan later (stages with entry criteria or manual activation) \
                 or make items discretionary"
            ),
        )
    })
}

/// What the validator knows about a plan item.
struct ItemInfo<'a> {
    item: PlanItem<'a>,
    /// Enclosing stages, innermost last.
    ancestors: Vec<&'a ItemKey>,
}

impl Validator<'_> {
    /// A case of this definition can be opened within one command's events.
    fn opening(&mut self) {
        let created = self.def.items_created_on_open();
        if let Some(p) = opening_too_large(created, crate::case::CASCADE_LIMIT) {
            self.problems.push(p);
        }
    }
}

/// Dry runs of opening a case — with the required fields at neutral values
/// (the first of an enumeration, zero, false, empty), then with every
/// field so — and a definition whose opening runs into the cascade bound
/// both ways (a repetition or sentry loop nothing stops) is refused rather
/// than found by its first user. Any other outcome says nothing about the
/// definition (the dry runs' values are made up) and is ignored.
fn opening_loops(def: &CaseDefinition) -> Option<Problem> {
    let (limit, last) = dry_open(def, false)?;
    dry_open(def, true)?;
    Some(Problem::new(
        "",
        ProblemKind::Invalid,
        format!(
            "opening a case (a dry run with the fields at neutral values) runs into the \
             bound of {limit} events per command, still creating '{last}': a repetition or \
             sentry loop nothing stops. Give the repeating item a repeat_while rule or \
             max_instances, or an exit criterion that ends it"
        ),
    ))
}

/// Opens a case of `def` with made-up values (every field when `all`,
/// else the required ones): the bound and the last item when that runs
/// into the cascade bound.
fn dry_open(def: &CaseDefinition, all: bool) -> Option<(usize, String)> {
    use crate::case::{decide, CaseCommand, CaseError, CaseFile, CaseState};
    use crate::security::{Classification, Principal};
    let tenant = crate::log::TenantId::new("validation").ok()?;
    let principal = Principal::new(tenant, "validator")
        .with_roles(def.permissions.open.iter().map(|r| r.as_str().to_string()))
        .with_clearance(Classification::TopSecret);
    let mut file = serde_json::Map::new();
    for f in def.fields.iter().filter(|f| all || f.required) {
        let value = match f.ty {
            FieldType::Text | FieldType::Person | FieldType::Object | FieldType::Location => {
                serde_json::json!("dry-run")
            }
            FieldType::Integer => serde_json::json!(0),
            FieldType::Decimal => serde_json::json!(0.0),
            FieldType::Boolean => serde_json::json!(false),
            FieldType::Date => serde_json::json!("2026-01-01"),
            FieldType::DateTime => serde_json::json!("2026-01-01T00:00:00Z"),
            FieldType::Enumeration => serde_json::json!(f.values.first()?),
            FieldType::GeoPoint => serde_json::json!({ "lat": 51.5, "lon": -0.1 }),
            FieldType::List => serde_json::json!([]),
        };
        file.insert(f.key.as_str().to_string(), value);
    }
    let case_file = CaseFile::from_json(serde_json::Value::Object(file)).ok()?;
    let open = CaseCommand::Open {
        case_file,
        classification: None,
    };
    match decide(
        def,
        &CaseState::default(),
        &principal,
        open,
        crate::log::Timestamp(0),
    ) {
        Err(CaseError::CascadeLimit { limit, last }) => Some((limit, last)),
        _ => None,
    }
}

struct Validator<'a> {
    def: &'a CaseDefinition,
    problems: Vec<Problem>,
    schema: Schema,
    items: BTreeMap<&'a str, ItemInfo<'a>>,
    deadline_keys: BTreeMap<&'a str, String>,
}

/// Whether a field's values are words (what text search indexes).
fn has_words(ty: FieldType, element: Option<FieldType>) -> bool {
    match ty {
        FieldType::Text | FieldType::Enumeration => true,
        FieldType::List => matches!(element, Some(FieldType::Text | FieldType::Enumeration)),
        _ => false,
    }
}

/// The condition-checker's view of a value type.
fn field_info(ty: FieldType, values: &[String], element: Option<FieldType>) -> FieldInfo {
    fn static_type(ty: FieldType, element: Option<FieldType>) -> StaticType {
        match ty {
            FieldType::Text
            | FieldType::Date
            | FieldType::DateTime
            | FieldType::Enumeration
            | FieldType::Person
            | FieldType::Object
            | FieldType::Location => StaticType::String,
            FieldType::Integer => StaticType::Int,
            FieldType::Decimal => StaticType::Double,
            FieldType::Boolean => StaticType::Bool,
            FieldType::GeoPoint => StaticType::GeoPoint,
            FieldType::List => StaticType::List(Box::new(match element {
                Some(e) if e != FieldType::List => static_type(e, None),
                _ => StaticType::Dyn,
            })),
        }
    }
    let format = match (ty, element) {
        (FieldType::Date, _) | (FieldType::List, Some(FieldType::Date)) => {
            Some(LiteralFormat::Date)
        }
        (FieldType::DateTime, _) | (FieldType::List, Some(FieldType::DateTime)) => {
            Some(LiteralFormat::DateTime)
        }
        _ => None,
    };
    FieldInfo {
        ty: static_type(ty, element),
        kind: ty.as_str().to_string(),
        values: values.to_vec(),
        format,
    }
}

/// Sorts a condition checker's message into a problem kind.
fn kind_of(message: &str) -> ProblemKind {
    if message.starts_with("unknown field") {
        ProblemKind::UnknownField
    } else if message.starts_with("unknown") {
        ProblemKind::UnknownReference
    } else {
        ProblemKind::TypeMismatch
    }
}

impl<'a> Validator<'a> {
    fn new(def: &'a CaseDefinition) -> Self {
        let mut schema = Schema::default();
        for f in &def.fields {
            schema
                .fields
                .entry(f.key.as_str().to_string())
                .or_insert_with(|| field_info(f.ty, &f.values, f.element));
        }
        let mut items = BTreeMap::new();
        let entries = def.plan_items();
        for entry in &entries {
            let key = entry.item.key().as_str();
            schema.items.insert(key.to_string());
            if let PlanItem::Milestone(_) = entry.item {
                schema.milestones.insert(key.to_string());
            }
        }
        for entry in entries {
            let mut ancestors = Vec::new();
            let mut parent = entry.parent;
            while let Some(p) = parent {
                ancestors.insert(0, p);
                parent = def.item(p.as_str()).and_then(|e| e.parent);
            }
            items.entry(entry.item.key().as_str()).or_insert(ItemInfo {
                item: entry.item,
                ancestors,
            });
        }
        Validator {
            def,
            problems: Vec::new(),
            schema,
            items,
            deadline_keys: BTreeMap::new(),
        }
    }

    fn push(&mut self, path: impl Into<String>, kind: ProblemKind, message: impl Into<String>) {
        self.problems.push(Problem::new(path, kind, message));
    }

    fn not_empty(&mut self, path: String, value: &str) {
        if value.trim().is_empty() {
            self.push(path, ProblemKind::Invalid, "must not be empty");
        }
    }

    fn header(&mut self) {
        let def = self.def;
        if let Err(m) = check_identifier(def.key.as_str()).map_err(|e| e.to_string()) {
            self.push("key", ProblemKind::InvalidIdentifier, m);
        }
        self.not_empty("name".into(), &def.name);
        if def.version == 0 {
            self.push("version", ProblemKind::Invalid, "must be at least 1");
        }
        if let Some(t) = &def.team {
            if let Err(m) = check_identifier(t.as_str()).map_err(|e| e.to_string()) {
                self.push("team", ProblemKind::InvalidIdentifier, m);
            }
        }
        if let Some(p) = &def.retention.review_after {
            if let Err(e) = p.parts() {
                self.push(
                    "retention.review_after",
                    ProblemKind::Invalid,
                    e.to_string(),
                );
            }
        }
    }

    fn roles(&mut self) {
        let mut seen = BTreeSet::new();
        for (i, r) in self.def.roles.iter().enumerate() {
            if let Err(m) = check_identifier(r.as_str()).map_err(|e| e.to_string()) {
                self.push(format!("roles[{i}]"), ProblemKind::InvalidIdentifier, m);
            }
            if !seen.insert(r.as_str()) {
                self.push(
                    format!("roles[{i}]"),
                    ProblemKind::Duplicate,
                    format!("duplicate role '{r}'"),
                );
            }
        }
    }

    fn role_ref(&mut self, path: String, role: &RoleKey) {
        if !self.def.roles.is_empty() && !self.def.roles.contains(role) {
            self.push(
                path,
                ProblemKind::UnknownReference,
                format!("unknown role '{role}'"),
            );
        }
    }

    fn role_refs(&mut self, path: &str, roles: &[RoleKey]) {
        for (i, r) in roles.iter().enumerate() {
            self.role_ref(format!("{path}[{i}]"), r);
        }
    }

    /// The rules on `values` and `element` shared by fields and parameters.
    fn value_type(
        &mut self,
        path: &str,
        ty: FieldType,
        values: &[String],
        element: Option<FieldType>,
    ) {
        let enumerated = ty == FieldType::Enumeration
            || (ty == FieldType::List && element == Some(FieldType::Enumeration));
        if ty == FieldType::List {
            match element {
                None => self.push(
                    format!("{path}.element"),
                    ProblemKind::Invalid,
                    "a list needs an element type",
                ),
                Some(FieldType::List) => self.push(
                    format!("{path}.element"),
                    ProblemKind::Invalid,
                    "lists of lists are not supported",
                ),
                Some(_) => {}
            }
        } else if element.is_some() {
            self.push(
                format!("{path}.element"),
                ProblemKind::Invalid,
                "only a list has an element type",
            );
        }
        if enumerated && values.is_empty() {
            self.push(
                format!("{path}.values"),
                ProblemKind::Invalid,
                "an enumeration needs at least one value",
            );
        }
        if !enumerated && !values.is_empty() {
            self.push(
                format!("{path}.values"),
                ProblemKind::Invalid,
                "only an enumeration (or a list of enumeration values) has values",
            );
        }
        let mut seen = BTreeSet::new();
        for (i, value) in values.iter().enumerate() {
            if value.trim().is_empty() {
                self.push(
                    format!("{path}.values[{i}]"),
                    ProblemKind::Invalid,
                    "must not be empty",
                );
            }
            if !seen.insert(value.as_str()) {
                self.push(
                    format!("{path}.values[{i}]"),
                    ProblemKind::Duplicate,
                    format!("duplicate value '{value}'"),
                );
            }
        }
    }

    fn fields(&mut self) {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, f) in self.def.fields.iter().enumerate() {
            let path = format!("fields[{i}]");
            if let Err(e) = check_condition_name(f.key.as_str()) {
                self.push(
                    format!("{path}.key"),
                    ProblemKind::InvalidIdentifier,
                    e.to_string(),
                );
            }
            if let Some(first) = seen.insert(f.key.as_str(), i) {
                self.push(
                    format!("{path}.key"),
                    ProblemKind::Duplicate,
                    format!(
                        "duplicate field '{}' (first declared at fields[{first}])",
                        f.key
                    ),
                );
            }
            self.value_type(&path, f.ty, &f.values, f.element);
            if f.text_searchable() && !has_words(f.ty, f.element) {
                self.push(
                    format!("{path}.search"),
                    ProblemKind::Invalid,
                    format!(
                        "text search needs words: use it on a text or enumeration field (or a list of them), not {}",
                        f.ty.as_str()
                    ),
                );
            }
            if let Some(c) = f.classification {
                if c < self.def.default_classification {
                    self.push(
                        format!("{path}.classification"),
                        ProblemKind::Invalid,
                        format!(
                            "{c} is below the case's default classification {}; a field can only raise it",
                            self.def.default_classification
                        ),
                    );
                }
            }
        }
    }

    /// `[[subjects]]`: unique keys, an id field of a person or text type,
    /// a date of birth of type date, and each field belonging to at most
    /// one subject.
    fn subjects(&mut self) {
        let def = self.def;
        if let Some(class) = &def.retention.class {
            if let Err(m) = check_identifier(class).map_err(|e| e.to_string()) {
                self.push("retention.class", ProblemKind::InvalidIdentifier, m);
            }
        }
        let mut keys: BTreeMap<&str, usize> = BTreeMap::new();
        let mut owner: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, s) in def.subjects.iter().enumerate() {
            let path = format!("subjects[{i}]");
            if let Err(m) = check_identifier(&s.key).map_err(|e| e.to_string()) {
                self.push(format!("{path}.key"), ProblemKind::InvalidIdentifier, m);
            }
            if let Some(first) = keys.insert(&s.key, i) {
                self.push(
                    format!("{path}.key"),
                    ProblemKind::Duplicate,
                    format!(
                        "duplicate subject '{}' (first declared at subjects[{first}])",
                        s.key
                    ),
                );
            }
            let typed = |v: &mut Self, at: String, key: &FieldKey, want: &[FieldType]| match def
                .field(key.as_str())
            {
                None => v.push(
                    at,
                    ProblemKind::UnknownField,
                    format!("unknown field '{key}'"),
                ),
                Some(f) if !want.contains(&f.ty) => v.push(
                    at,
                    ProblemKind::TypeMismatch,
                    format!(
                        "'{key}' is a {} field; use a {} field",
                        f.ty.as_str(),
                        want.iter()
                            .map(|t| t.as_str())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                ),
                Some(_) => {}
            };
            typed(
                self,
                format!("{path}.id"),
                &s.id,
                &[FieldType::Person, FieldType::Text],
            );
            if let Some(d) = &s.date_of_birth {
                typed(self, format!("{path}.date_of_birth"), d, &[FieldType::Date]);
            }
            let mut mine: Vec<(String, &FieldKey)> = vec![(format!("{path}.id"), &s.id)];
            if let Some(d) = &s.date_of_birth {
                mine.push((format!("{path}.date_of_birth"), d));
            }
            for (j, f) in s.fields.iter().enumerate() {
                let at = format!("{path}.fields[{j}]");
                self.field_ref(&at, f);
                mine.push((at, f));
            }
            for (at, f) in mine {
                if let Some(first) = owner.insert(f.as_str(), i) {
                    self.push(
                        at,
                        ProblemKind::Duplicate,
                        format!(
                            "field '{f}' already holds personal data of subjects[{first}]; a field \
                             belongs to one subject"
                        ),
                    );
                }
            }
        }
    }

    fn services(&mut self) {
        let mut seen = BTreeSet::new();
        for (i, s) in self.def.services.iter().enumerate() {
            let path = format!("services[{i}]");
            if let Err(e) = check_service_name(s.name.as_str()) {
                self.push(
                    format!("{path}.name"),
                    ProblemKind::InvalidIdentifier,
                    e.to_string(),
                );
            }
            if !seen.insert(s.name.as_str()) {
                self.push(
                    format!("{path}.name"),
                    ProblemKind::Duplicate,
                    format!("duplicate service '{}'", s.name),
                );
            }
            for (group, params) in [("inputs", &s.inputs), ("outputs", &s.outputs)] {
                for (name, p) in params {
                    let ppath = format!("{path}.{group}.{name}");
                    if let Err(m) = check_identifier(name) {
                        self.push(ppath.clone(), ProblemKind::InvalidIdentifier, m.to_string());
                    }
                    self.value_type(&ppath, p.ty, &p.values, p.element);
                }
            }
        }
    }

    fn permissions(&mut self) {
        for (action, roles) in self.def.permissions.actions() {
            self.role_refs(&format!("permissions.{action}"), roles);
        }
    }

    fn plan(&mut self) {
        let def = self.def;
        let mut keys: BTreeMap<&str, String> = BTreeMap::new();
        for entry in def.plan_items() {
            let key = entry.item.key();
            if let Err(e) = check_condition_name(key.as_str()) {
                self.push(
                    format!("{}.key", entry.path),
                    ProblemKind::InvalidIdentifier,
                    e.to_string(),
                );
            }
            if let Some(first) = keys.get(key.as_str()) {
                self.push(
                    format!("{}.key", entry.path),
                    ProblemKind::Duplicate,
                    format!("duplicate key '{key}' (already used at {first})"),
                );
            } else {
                keys.insert(key.as_str(), entry.path.clone());
            }
            self.not_empty(format!("{}.name", entry.path), entry.item.name());
            match entry.item {
                PlanItem::Activity(a) => self.activity(&entry.path, a),
                PlanItem::Stage(s) => self.stage(&entry.path, s),
                PlanItem::Milestone(m) => self.milestone(&entry.path, m),
            }
            self.item_rules(&entry.path, entry.item);
        }
        for (i, s) in def.exit.iter().enumerate() {
            self.sentry(&format!("exit[{i}]"), s, None, false);
        }
        for (i, d) in def.deadlines.iter().enumerate() {
            self.deadline(&format!("deadlines[{i}]"), d, None);
        }
    }

    fn control(
        &mut self,
        path: &str,
        key: &ItemKey,
        discretionary: bool,
        applicability: Option<&Condition>,
        planners: &[RoleKey],
    ) {
        if !discretionary && applicability.is_some() {
            self.push(
                format!("{path}.applicability"),
                ProblemKind::Invalid,
                "only a discretionary item has an applicability rule",
            );
        }
        if !discretionary && !planners.is_empty() {
            self.push(
                format!("{path}.planners"),
                ProblemKind::Invalid,
                "only a discretionary item has planners",
            );
        }
        if let Some(c) = applicability {
            self.condition(&format!("{path}.applicability"), c);
        }
        self.role_refs(&format!("{path}.planners"), planners);
        let _ = key;
    }

    fn activity(&mut self, path: &str, a: &'a Activity) {
        self.role_refs(&format!("{path}.roles"), &a.roles);
        if let Some(t) = &a.team {
            if let Err(m) = check_identifier(t.as_str()).map_err(|e| e.to_string()) {
                self.push(format!("{path}.team"), ProblemKind::InvalidIdentifier, m);
            } else if a.kind != ActivityKind::HumanTask {
                self.push(
                    format!("{path}.team"),
                    ProblemKind::Invalid,
                    "only a human task goes to a team's work queue",
                );
            }
        }
        self.control(
            path,
            &a.key,
            a.discretionary,
            a.applicability.as_ref(),
            &a.planners,
        );
        if a.kind == ActivityKind::HumanTask {
            if a.roles.is_empty() {
                self.push(
                    format!("{path}.roles"),
                    ProblemKind::Invalid,
                    "a human task needs at least one candidate role",
                );
            }
            let mut seen = BTreeSet::new();
            for (i, f) in a.form.iter().enumerate() {
                let fpath = format!("{path}.form[{i}].field");
                self.field_ref(&fpath, &f.field);
                if !seen.insert(f.field.as_str()) {
                    self.push(
                        fpath,
                        ProblemKind::Duplicate,
                        format!("duplicate form field '{}'", f.field),
                    );
                }
            }
        } else if !a.form.is_empty() {
            self.push(
                format!("{path}.form"),
                ProblemKind::Invalid,
                "only a human task has a form",
            );
        }
        if a.kind == ActivityKind::ServiceTask {
            self.service_task(path, a);
            if let Some(r) = &a.retry {
                self.retry(&format!("{path}.retry"), r);
            }
        } else {
            if a.retry.is_some() {
                self.push(
                    format!("{path}.retry"),
                    ProblemKind::Invalid,
                    "only a service task has a retry policy",
                );
            }
            if a.service.is_some() {
                self.push(
                    format!("{path}.service"),
                    ProblemKind::Invalid,
                    "only a service task calls a service",
                );
            }
            if !a.input.is_empty() {
                self.push(
                    format!("{path}.input"),
                    ProblemKind::Invalid,
                    "only a service task has an input mapping",
                );
            }
            if !a.output.is_empty() {
                self.push(
                    format!("{path}.output"),
                    ProblemKind::Invalid,
                    "only a service task has an output mapping",
                );
            }
        }
        if a.kind == ActivityKind::Automatic {
            for (field, expr) in &a.set {
                let spath = format!("{path}.set.{field}");
                match self.def.field(field.as_str()) {
                    None => self.push(
                        spath,
                        ProblemKind::UnknownField,
                        format!("unknown field '{field}'"),
                    ),
                    Some(f) => {
                        let info = field_info(f.ty, &f.values, f.element);
                        let what = format!("field '{field}'");
                        self.expression(
                            &spath,
                            expr,
                            Expected::Like {
                                what: &what,
                                info: &info,
                            },
                        );
                    }
                }
            }
        } else if !a.set.is_empty() {
            self.push(
                format!("{path}.set"),
                ProblemKind::Invalid,
                "only an automatic step sets fields",
            );
        }
        match (a.kind, &a.wait) {
            (ActivityKind::Wait, Some(w)) => self.period(
                &format!("{path}.wait"),
                &format!("wait step '{}'", a.key),
                w.within.as_ref(),
                w.working_days,
            ),
            (ActivityKind::Wait, None) => self.push(
                format!("{path}.wait"),
                ProblemKind::Invalid,
                format!(
                    "wait step '{}' needs a wait, e.g. wait = {{ working_days = 5 }}",
                    a.key
                ),
            ),
            (_, Some(_)) => self.push(
                format!("{path}.wait"),
                ProblemKind::Invalid,
                "only a wait step (kind = \"wait\") waits",
            ),
            (_, None) => {}
        }
        self.sentries(path, &a.key, &a.entry, &a.exit);
        for (i, d) in a.deadlines.iter().enumerate() {
            self.deadline(&format!("{path}.deadlines[{i}]"), d, Some(&a.key));
        }
    }

    fn retry(&mut self, path: &str, r: &crate::definition::RetryPolicy) {
        use crate::definition::RetryPolicy;
        if let Some(n) = r.max_attempts {
            if n == 0 || n > RetryPolicy::MAX_ATTEMPTS_LIMIT {
                self.push(
                    format!("{path}.max_attempts"),
                    ProblemKind::Invalid,
                    format!(
                        "max_attempts must be from 1 to {}",
                        RetryPolicy::MAX_ATTEMPTS_LIMIT
                    ),
                );
            }
        }
        for (name, p) in [
            ("timeout", &r.timeout),
            ("backoff", &r.backoff),
            ("max_backoff", &r.max_backoff),
        ] {
            if let Some(p) = p {
                let ok = p
                    .duration()
                    .is_some_and(|d| d.is_positive() && d <= time::Duration::days(1));
                if !ok {
                    self.push(
                        format!("{path}.{name}"),
                        ProblemKind::Invalid,
                        format!(
                            "'{}' is not a fixed period from a moment to a day (e.g. PT30S)",
                            p.as_str()
                        ),
                    );
                }
            }
        }
    }

    fn service_task(&mut self, path: &str, a: &Activity) {
        let Some(name) = &a.service else {
            self.push(
                format!("{path}.service"),
                ProblemKind::Invalid,
                "a service task needs a service",
            );
            return;
        };
        let def = self.def;
        let Some(service) = def.services.iter().find(|s| &s.name == name) else {
            self.push(
                format!("{path}.service"),
                ProblemKind::UnknownReference,
                format!("unknown service '{name}': declare it under [[services]]"),
            );
            return;
        };
        self.inputs(path, a, service);
        for (result, field) in &a.output {
            let opath = format!("{path}.output.{result}");
            let Some(param) = service.outputs.get(result) else {
                self.push(
                    opath,
                    ProblemKind::UnknownReference,
                    format!("service '{name}' has no output '{result}'"),
                );
                continue;
            };
            match def.field(field.as_str()) {
                None => self.push(
                    opath,
                    ProblemKind::UnknownField,
                    format!("unknown field '{field}'"),
                ),
                Some(f) => {
                    if let Some(m) = assign_mismatch(param, f) {
                        self.push(
                            opath,
                            ProblemKind::TypeMismatch,
                            format!("type mismatch: output '{result}' of service '{name}' is {m}"),
                        );
                    }
                }
            }
        }
    }

    fn inputs(&mut self, path: &str, a: &Activity, service: &ServiceDef) {
        let name = &service.name;
        for (param, expr) in &a.input {
            let ipath = format!("{path}.input.{param}");
            match service.inputs.get(param) {
                None => self.push(
                    ipath,
                    ProblemKind::UnknownReference,
                    format!("service '{name}' has no input '{param}'"),
                ),
                Some(p) => {
                    let info = field_info(p.ty, &p.values, p.element);
                    let what = format!("input '{param}' of service '{name}'");
                    self.expression(
                        &ipath,
                        expr,
                        Expected::Like {
                            what: &what,
                            info: &info,
                        },
                    );
                }
            }
        }
        for (param, p) in &service.inputs {
            if p.required && !a.input.contains_key(param) {
                self.push(
                    format!("{path}.input"),
                    ProblemKind::Invalid,
                    format!("required input '{param}' of service '{name}' is not mapped"),
                );
            }
        }
    }

    fn stage(&mut self, path: &str, s: &'a Stage) {
        self.control(
            path,
            &s.key,
            s.discretionary,
            s.applicability.as_ref(),
            &s.planners,
        );
        if s.activities.is_empty() && s.stages.is_empty() && s.milestones.is_empty() {
            self.push(
                path,
                ProblemKind::Invalid,
                "a stage needs at least one activity, stage or milestone",
            );
        }
        self.sentries(path, &s.key, &s.entry, &s.exit);
        for (i, d) in s.deadlines.iter().enumerate() {
            self.deadline(&format!("{path}.deadlines[{i}]"), d, Some(&s.key));
        }
    }

    /// Repetition, required and manual activation rules.
    fn item_rules(&mut self, path: &str, item: PlanItem<'a>) {
        let repeatable = item.repeatable();
        let only_repeatable =
            |what: &str| format!("only a repeatable item (repeatable = true) has {what}");
        if let Some(c) = item.repeat_while() {
            let rpath = format!("{path}.repeat_while");
            if !repeatable {
                self.push(
                    &rpath,
                    ProblemKind::Invalid,
                    only_repeatable("a repetition rule"),
                );
            }
            if self.def.field(REPETITION).is_some() {
                self.push(
                    &rpath,
                    ProblemKind::Invalid,
                    format!(
                        "the case file has a field named '{REPETITION}', which would hide the \
                         repetition count this rule reads; rename the field"
                    ),
                );
            } else if let Some(e) = c.compile_error() {
                self.push(&rpath, ProblemKind::InvalidCel, e.to_string());
            } else {
                let mut schema = self.schema.clone();
                schema.fields.insert(
                    REPETITION.to_string(),
                    field_info(FieldType::Integer, &[], None),
                );
                for m in rules::check_condition(c, &schema) {
                    self.push(&rpath, kind_of(&m), m);
                }
                if let Some(ast) = c.ast() {
                    self.bounds(&rpath, ast);
                }
            }
        }
        for (name, limit) in [
            ("max_instances", item.max_instances()),
            ("max_concurrent", item.max_concurrent()),
        ] {
            let Some(limit) = limit else { continue };
            let lpath = format!("{path}.{name}");
            if !repeatable {
                self.push(&lpath, ProblemKind::Invalid, only_repeatable(name));
            } else if limit == 0 {
                self.push(
                    &lpath,
                    ProblemKind::Invalid,
                    format!("{name} must be at least 1"),
                );
            }
        }
        if item.max_concurrent().is_some()
            && item.entry().is_empty()
            && !item.discretionary()
            && repeatable
        {
            self.push(
                format!("{path}.max_concurrent"),
                ProblemKind::Invalid,
                "without entry criteria an item repeats only when its instance completes, so \
                 at most one runs at a time: max_concurrent needs entry criteria (or a \
                 discretionary item)",
            );
        }
        if let Some(c) = item.required_if() {
            let rpath = format!("{path}.required_if");
            if item.required() {
                self.push(
                    &rpath,
                    ProblemKind::Invalid,
                    "set either required = true or required_if, not both",
                );
            }
            self.condition(&rpath, c);
        }
        if let Some(c) = item.manual_activation_if() {
            let rpath = format!("{path}.manual_activation_if");
            if item.manual_activation() {
                self.push(
                    &rpath,
                    ProblemKind::Invalid,
                    "set either manual_activation = true or manual_activation_if, not both",
                );
            }
            self.condition(&rpath, c);
        }
    }

    fn milestone(&mut self, path: &str, m: &'a Milestone) {
        self.sentries(path, &m.key, &m.entry, &m.exit);
    }

    fn sentries(&mut self, path: &str, owner: &ItemKey, entry: &[Sentry], exit: &[Sentry]) {
        for (i, s) in entry.iter().enumerate() {
            self.sentry(&format!("{path}.entry[{i}]"), s, Some(owner), true);
        }
        for (i, s) in exit.iter().enumerate() {
            self.sentry(&format!("{path}.exit[{i}]"), s, Some(owner), false);
        }
    }

    /// Information never flows down: an automatic step or a service output
    /// may write a field only if the field is marked at least as high as
    /// what the value reveals (the fields it is computed from and the
    /// step's own marking), and the case's status may not reveal more than
    /// the case's default classification. See `markings.rs`.
    fn flows(&mut self) {
        let def = self.def;
        let marks = super::markings::Markings::compute(def);
        let field = |k: &str| {
            def.field(k)
                .and_then(|f| f.classification)
                .unwrap_or_default()
        };
        for entry in def.plan_items() {
            let PlanItem::Activity(a) = entry.item else {
                continue;
            };
            let own = marks.item(a.key.as_str());
            let why = || {
                marks
                    .item_reason(a.key.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            for (target, expr) in &a.set {
                let (mut need, mut reason) = (own, format!("the step {}", why()));
                for f in expr.fields() {
                    if field(f) > need {
                        (need, reason) = (field(f), format!("it is computed from `{f}`"));
                    }
                }
                if field(target.as_str()) < need {
                    self.push(
                        format!("{}.set.{target}", entry.path),
                        ProblemKind::Downgrade,
                        format!(
                            "moves {need} information into `{target}`, marked {} ({reason}): \
                             mark `{target}` {need} or higher",
                            field(target.as_str())
                        ),
                    );
                }
            }
            for (result, target) in &a.output {
                if field(target.as_str()) < own {
                    self.push(
                        format!("{}.output.{result}", entry.path),
                        ProblemKind::Downgrade,
                        format!(
                            "moves {own} information into `{target}`, marked {} (the task {}): \
                             mark `{target}` {own} or higher",
                            field(target.as_str()),
                            why()
                        ),
                    );
                }
            }
        }
        if marks.status() > def.default_classification {
            self.push(
                "exit",
                ProblemKind::Downgrade,
                format!(
                    "the case's status would reveal {} information ({}) to everyone who may see \
                     a case marked {}: raise `default_classification`, or end the case on \
                     criteria that read nothing above it",
                    marks.status(),
                    marks.status_reason(),
                    def.default_classification
                ),
            );
        }
    }

    fn field_ref(&mut self, path: &str, field: &FieldKey) {
        if !self.def.has_field(field) {
            self.push(
                path,
                ProblemKind::UnknownField,
                format!("unknown field '{field}'"),
            );
        }
    }

    /// Checks a reference to a plan item that must be (or must not be) a milestone.
    fn item_ref(&mut self, path: &str, key: &ItemKey, want_milestone: bool, verb: &str) {
        match self.items.get(key.as_str()).map(|i| i.item) {
            None => self.push(
                path,
                ProblemKind::UnknownReference,
                format!("unknown plan item '{key}'"),
            ),
            Some(PlanItem::Milestone(_)) if !want_milestone => self.push(
                path,
                ProblemKind::UnknownReference,
                format!("'{key}' is a milestone, which is reached, not {verb}: use reached"),
            ),
            Some(item) if want_milestone && !matches!(item, PlanItem::Milestone(_)) => self.push(
                path,
                ProblemKind::UnknownReference,
                format!("'{key}' is a {}, not a milestone", item.kind_name()),
            ),
            Some(_) => {}
        }
    }

    fn sentry(&mut self, path: &str, s: &Sentry, owner: Option<&ItemKey>, is_entry: bool) {
        if s.on.is_empty() && s.condition.is_none() {
            self.push(
                path,
                ProblemKind::Invalid,
                "a sentry needs at least one 'on' part or an 'if' condition",
            );
        }
        for (j, on) in s.on.iter().enumerate() {
            let (variant, key) = match on {
                OnPart::Completed(k) => ("completed", Some(k)),
                OnPart::Terminated(k) => ("terminated", Some(k)),
                OnPart::Reached(k) => ("reached", Some(k)),
                OnPart::Changed(f) => {
                    self.field_ref(&format!("{path}.on[{j}].changed"), f);
                    ("changed", None)
                }
            };
            let Some(key) = key else { continue };
            let opath = format!("{path}.on[{j}].{variant}");
            self.item_ref(&opath, key, variant == "reached", variant);
            if owner == Some(key) {
                self.push(
                    opath,
                    ProblemKind::SelfReference,
                    format!("a sentry cannot listen to its own item '{key}'"),
                );
            } else if is_entry && variant == "completed" {
                let encloses = owner
                    .and_then(|o| self.items.get(o.as_str()))
                    .is_some_and(|info| info.ancestors.contains(&key));
                if encloses {
                    self.push(
                        opath,
                        ProblemKind::Invalid,
                        format!("'{key}' encloses this item, so its completion can never start it"),
                    );
                }
            }
        }
        if let Some(c) = &s.condition {
            self.condition(&format!("{path}.if"), c);
        }
    }

    fn condition(&mut self, path: &str, c: &Condition) {
        if let Some(e) = c.compile_error() {
            self.push(path, ProblemKind::InvalidCel, e.to_string());
            return;
        }
        for m in rules::check_condition(c, &self.schema) {
            self.push(path, kind_of(&m), m);
        }
        if let Some(ast) = c.ast() {
            self.bounds(path, ast);
        }
    }

    /// Refuses a rule that could never run within its budget on a case whose
    /// lists are full, or whose comprehensions nest too deep
    /// (`rules::budget`).
    fn bounds(&mut self, path: &str, ast: &cel::IdedExpr) {
        let longest = crate::case::MAX_LIST_LEN as u64;
        let field_len = |name: &str| match self.def.field(name).map(|f| f.ty) {
            Some(FieldType::List) => longest,
            Some(FieldType::GeoPoint) => 2,
            _ => 0,
        };
        let items = self.schema.items.len() as u64;
        let milestones = self.schema.milestones.len() as u64;
        for m in rules::check_bounds(ast, &field_len, longest, items, milestones) {
            self.push(path, ProblemKind::Invalid, m);
        }
    }

    fn expression(&mut self, path: &str, e: &Expression, expected: Expected<'_>) {
        if let Some(err) = e.compile_error() {
            self.push(path, ProblemKind::InvalidCel, err.to_string());
            return;
        }
        for m in rules::check_expression(e, &self.schema, expected) {
            self.push(path, kind_of(&m), m);
        }
        if let Some(ast) = e.ast() {
            self.bounds(path, ast);
        }
    }

    fn occurrence(&mut self, path: &str, o: &Occurrence) {
        match o {
            Occurrence::CaseOpened | Occurrence::CaseClosed => {}
            Occurrence::Activated(k) => {
                self.item_ref(&format!("{path}.activated"), k, false, "activated")
            }
            Occurrence::Completed(k) => {
                self.item_ref(&format!("{path}.completed"), k, false, "completed")
            }
            Occurrence::Reached(k) => self.item_ref(&format!("{path}.reached"), k, true, "reached"),
            Occurrence::Changed(f) => self.field_ref(&format!("{path}.changed"), f),
        }
    }

    /// A deadline's or a wait step's `within` / `working_days`: exactly one,
    /// positive, and at most [`SlaPeriod::MAX_DAYS`] days or
    /// [`SlaPeriod::MAX_WORKING_DAYS`] working days.
    fn period(
        &mut self,
        path: &str,
        what: &str,
        within: Option<&Period>,
        working_days: Option<u32>,
    ) {
        match (within, working_days) {
            (Some(_), Some(_)) => self.push(
                path,
                ProblemKind::Invalid,
                "give either 'within' or 'working_days', not both",
            ),
            (None, None) => self.push(
                path,
                ProblemKind::Invalid,
                format!("{what} needs 'within' or 'working_days'"),
            ),
            (Some(p), None) => match p.parts() {
                Err(e) => self.push(
                    format!("{path}.within"),
                    ProblemKind::Invalid,
                    e.to_string(),
                ),
                Ok(parts) if parts.is_calendar() => self.push(
                    format!("{path}.within"),
                    ProblemKind::Invalid,
                    format!(
                        "'{p}' has years or months, whose length varies: use days or working_days"
                    ),
                ),
                Ok(_) => {
                    let ok = p.duration().is_some_and(|d| {
                        d.is_positive() && d <= time::Duration::days(SlaPeriod::MAX_DAYS)
                    });
                    if !ok {
                        self.push(
                            format!("{path}.within"),
                            ProblemKind::Invalid,
                            format!(
                                "{what}: '{p}' must be longer than nothing and at most {} days",
                                SlaPeriod::MAX_DAYS
                            ),
                        );
                    }
                }
            },
            (None, Some(n)) if n == 0 || n > SlaPeriod::MAX_WORKING_DAYS => self.push(
                format!("{path}.working_days"),
                ProblemKind::Invalid,
                format!(
                    "{what}: working_days must be from 1 to {} (about ten years), not {n}",
                    SlaPeriod::MAX_WORKING_DAYS
                ),
            ),
            (None, Some(_)) => {}
        }
    }

    fn deadline(&mut self, path: &str, d: &'a Deadline, owner: Option<&ItemKey>) {
        if let Err(m) = check_identifier(d.key.as_str()).map_err(|e| e.to_string()) {
            self.push(format!("{path}.key"), ProblemKind::InvalidIdentifier, m);
        }
        if let Some(first) = self.deadline_keys.get(d.key.as_str()) {
            let message = format!("duplicate deadline '{}' (already used at {first})", d.key);
            self.push(format!("{path}.key"), ProblemKind::Duplicate, message);
        } else {
            self.deadline_keys.insert(d.key.as_str(), path.to_string());
        }
        self.period(
            path,
            &format!("deadline '{}'", d.key),
            d.within.as_ref(),
            d.working_days,
        );
        if let Some(o) = &d.from {
            self.occurrence(&format!("{path}.from"), o);
        }
        if let Some(o) = &d.until {
            self.occurrence(&format!("{path}.until"), o);
        }
        if let Some(c) = &d.condition {
            self.condition(&format!("{path}.if"), c);
        }
        if d.escalate.is_empty() {
            self.push(
                format!("{path}.escalate"),
                ProblemKind::Invalid,
                "a deadline needs at least one escalation",
            );
        }
        for (j, e) in d.escalate.iter().enumerate() {
            let epath = format!("{path}.escalate[{j}]");
            match e {
                Escalation::Notify(roles) => {
                    if roles.is_empty() {
                        self.push(
                            format!("{epath}.notify"),
                            ProblemKind::Invalid,
                            "name at least one role to notify",
                        );
                    }
                    self.role_refs(&format!("{epath}.notify"), roles);
                }
                Escalation::RaisePriority(_) => {}
                Escalation::Start(k) => {
                    let spath = format!("{epath}.start");
                    self.item_ref(&spath, k, false, "started");
                    if owner == Some(k) {
                        self.push(
                            spath,
                            ProblemKind::SelfReference,
                            format!("a deadline cannot start its own item '{k}'"),
                        );
                    }
                }
            }
        }
    }
}

/// Why a service result cannot be stored in a field, if it cannot.
fn assign_mismatch(param: &ParamDef, field: &FieldDef) -> Option<String> {
    let same =
        param.ty == field.ty && (param.ty != FieldType::List || param.element == field.element);
    let widening = param.ty == FieldType::Integer && field.ty == FieldType::Decimal;
    if !same && !widening {
        return Some(format!(
            "{} but field '{}' is {}",
            param.ty.as_str(),
            field.key,
            field.ty.as_str()
        ));
    }
    let extra: Vec<&str> = param
        .values
        .iter()
        .filter(|v| !field.values.contains(v))
        .map(String::as_str)
        .collect();
    if !extra.is_empty() {
        return Some(format!(
            "an enumeration with values field '{}' does not allow: {}",
            field.key,
            extra.join(", ")
        ));
    }
    None
}
