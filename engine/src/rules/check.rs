//! Static checks of CEL against a case file's schema, without evaluating it.
//!
//! The checks are deliberately conservative: where a type cannot be known
//! (a comprehension variable, an index into a map) nothing is reported, so a
//! problem reported here is a real one.

use std::collections::{BTreeMap, BTreeSet};

use cel::common::ast::{Expr, LiteralValue};
use cel::IdedExpr;

use super::compiled::{Condition, Expression, SUPPORTED_FUNCTIONS, TYPE_NAMES};
use super::scope::ItemState;

/// The CEL type a value has when a condition sees it, as far as it can be
/// known before evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaticType {
    /// `bool`.
    Bool,
    /// `int` (and `uint`).
    Int,
    /// `double`.
    Double,
    /// `string`.
    String,
    /// `bytes`.
    Bytes,
    /// `null`.
    Null,
    /// A list of elements of one type.
    List(Box<StaticType>),
    /// A map.
    Map,
    /// A map with exactly `lat` and `lon` doubles.
    GeoPoint,
    /// Unknown until evaluation.
    Dyn,
}

/// Extra syntax a string literal compared with a field must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteralFormat {
    /// `YYYY-MM-DD`.
    Date,
    /// RFC 3339, e.g. `2024-05-01T09:30:00Z`.
    DateTime,
}

/// What the checker knows about one case-file field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldInfo {
    /// Its type as conditions see it.
    pub ty: StaticType,
    /// The field's declared type, for messages (`integer`, `enumeration`...).
    pub kind: String,
    /// Allowed values for an enumeration (or a list of enumeration values);
    /// empty otherwise.
    pub values: Vec<String>,
    /// The syntax string literals compared with it must follow.
    pub format: Option<LiteralFormat>,
}

/// The names a condition can refer to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    /// Case-file fields by key.
    pub fields: BTreeMap<String, FieldInfo>,
    /// Every plan item key (activities, stages, milestones).
    pub items: BTreeSet<String>,
    /// Milestone keys.
    pub milestones: BTreeSet<String>,
}

/// What an expression's result must be.
#[derive(Debug, Clone, Copy)]
pub enum Expected<'a> {
    /// A boolean (conditions).
    Boolean,
    /// Anything.
    Any,
    /// A value that fits a field or parameter, described as `what` in messages
    /// (e.g. `field 'ward'`).
    Like {
        /// How messages name the target.
        what: &'a str,
        /// Its type.
        info: &'a FieldInfo,
    },
}

/// Checks a condition; returns one message per problem, without duplicates.
/// A condition that did not compile yields no messages (its compile error is
/// the problem to report).
pub fn check_condition(condition: &Condition, schema: &Schema) -> Vec<String> {
    condition
        .ast()
        .map(|ast| check_ast(ast, schema, Expected::Boolean))
        .unwrap_or_default()
}

/// Checks an expression against what its result must be.
pub fn check_expression(
    expression: &Expression,
    schema: &Schema,
    expected: Expected<'_>,
) -> Vec<String> {
    expression
        .ast()
        .map(|ast| check_ast(ast, schema, expected))
        .unwrap_or_default()
}

/// Whether a value of type `a` can be compared with (or stored as) one of type `b`.
pub fn compatible(a: &StaticType, b: &StaticType) -> bool {
    use StaticType::*;
    match (a, b) {
        (Dyn, _) | (_, Dyn) | (Null, _) | (_, Null) => true,
        (Int | Double, Int | Double) => true,
        (List(x), List(y)) => compatible(x, y),
        (GeoPoint, Map) | (Map, GeoPoint) => true,
        _ => a == b,
    }
}

fn check_ast(ast: &IdedExpr, schema: &Schema, expected: Expected<'_>) -> Vec<String> {
    let mut checker = Checker {
        schema,
        bound: Vec::new(),
        messages: Vec::new(),
    };
    let info = checker.infer(ast);
    match expected {
        Expected::Any => {}
        Expected::Boolean => {
            if !matches!(info.ty, StaticType::Bool | StaticType::Dyn) {
                let d = checker.describe(&info);
                checker.push(format!(
                    "a condition must be a boolean, but this one is {d}"
                ));
            }
        }
        Expected::Like { what, info: target } => {
            if !compatible(&info.ty, &target.ty) || info.ty == StaticType::Null {
                let d = checker.describe(&info);
                checker.push(format!(
                    "type mismatch: the expression yields {d} but {what} is {}",
                    article(&target.kind)
                ));
            } else if let About::Lit(s) = &info.about {
                checker.check_literal(what, target, s);
            }
        }
    }
    checker.messages
}

fn article(kind: &str) -> String {
    match kind.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {kind}"),
        _ => format!("a {kind}"),
    }
}

/// Where a value came from, for messages and literal checks.
#[derive(Debug, Clone)]
enum About {
    Field(String),
    State(String),
    Lit(String),
    LitList(Vec<String>),
    Reached,
    Other,
}

#[derive(Debug, Clone)]
struct Info {
    ty: StaticType,
    about: About,
}

impl Info {
    fn of(ty: StaticType) -> Self {
        Info {
            ty,
            about: About::Other,
        }
    }
}

struct Checker<'s> {
    schema: &'s Schema,
    bound: Vec<(String, StaticType)>,
    messages: Vec<String>,
}

impl Checker<'_> {
    fn push(&mut self, message: String) {
        if !self.messages.contains(&message) {
            self.messages.push(message);
        }
    }

    fn describe(&self, info: &Info) -> String {
        if let About::Field(name) = &info.about {
            if let Some(f) = self.schema.fields.get(name) {
                return format!("{} field '{name}'", f.kind);
            }
        }
        if let About::State(item) = &info.about {
            return format!("the state of '{item}'");
        }
        match &info.ty {
            StaticType::Bool => "a boolean".into(),
            StaticType::Int => "an integer".into(),
            StaticType::Double => "a decimal".into(),
            StaticType::String => "a string".into(),
            StaticType::Bytes => "bytes".into(),
            StaticType::Null => "null".into(),
            StaticType::List(_) => "a list".into(),
            StaticType::Map => "a map".into(),
            StaticType::GeoPoint => "a geo point".into(),
            StaticType::Dyn => "a value".into(),
        }
    }

    fn is_bound(&self, name: &str) -> Option<&StaticType> {
        self.bound
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
    }

    /// Checks a string literal compared with (or assigned to) something whose
    /// values are constrained.
    fn check_literal(&mut self, what: &str, info: &FieldInfo, lit: &str) {
        if !info.values.is_empty() && !info.values.iter().any(|v| v == lit) {
            self.push(format!(
                "'{lit}' is not a value of {what} (allowed: {})",
                info.values.join(", ")
            ));
        }
        match info.format {
            Some(LiteralFormat::Date) => {
                let fmt = time::macros::format_description!("[year]-[month]-[day]");
                if time::Date::parse(lit, fmt).is_err() {
                    self.push(format!(
                        "'{lit}' is not a date (YYYY-MM-DD) as {what} requires"
                    ));
                }
            }
            Some(LiteralFormat::DateTime) => {
                let fmt = time::format_description::well_known::Rfc3339;
                if time::OffsetDateTime::parse(lit, &fmt).is_err() {
                    self.push(format!(
                        "'{lit}' is not an RFC 3339 date-time as {what} requires"
                    ));
                }
            }
            None => {}
        }
    }

    /// Literal checks for `a <op> b` where one side is constrained.
    fn check_against(&mut self, a: &Info, b: &Info) {
        for (x, y) in [(a, b), (b, a)] {
            let lits: Vec<String> = match &y.about {
                About::Lit(s) => vec![s.clone()],
                _ => continue,
            };
            match &x.about {
                About::Field(name) => {
                    if let Some(info) = self.schema.fields.get(name).cloned() {
                        let what = format!("{} field '{name}'", info.kind);
                        for lit in &lits {
                            self.check_literal(&what, &info, lit);
                        }
                    }
                }
                About::State(_) => {
                    for lit in &lits {
                        if !ItemState::ALL.iter().any(|s| s.as_str() == lit) {
                            let all: Vec<&str> =
                                ItemState::ALL.iter().map(|s| s.as_str()).collect();
                            self.push(format!(
                                "'{lit}' is not a plan item state (one of: {})",
                                all.join(", ")
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn mismatch(&mut self, a: &Info, b: &Info, verb: &str) {
        let (da, db) = (self.describe(a), self.describe(b));
        self.push(format!("type mismatch: cannot {verb} {da} with {db}"));
    }

    fn expect_bool(&mut self, info: &Info) {
        if !matches!(info.ty, StaticType::Bool | StaticType::Dyn) {
            let d = self.describe(info);
            self.push(format!("type mismatch: {d} is not a boolean"));
        }
    }

    fn infer(&mut self, expr: &IdedExpr) -> Info {
        match &expr.expr {
            Expr::Literal(lit) => match lit {
                LiteralValue::Boolean(_) => Info::of(StaticType::Bool),
                LiteralValue::Bytes(_) => Info::of(StaticType::Bytes),
                LiteralValue::Double(_) => Info::of(StaticType::Double),
                LiteralValue::Int(_) | LiteralValue::UInt(_) => Info::of(StaticType::Int),
                LiteralValue::Null => Info::of(StaticType::Null),
                LiteralValue::String(s) => Info {
                    ty: StaticType::String,
                    about: About::Lit(s.inner().to_string()),
                },
            },
            Expr::Ident(name) => self.ident(name),
            Expr::Select(select) => {
                let operand = self.infer(&select.operand);
                let field = &select.field;
                let ty = if select.test {
                    StaticType::Bool
                } else {
                    StaticType::Dyn
                };
                if matches!(&select.operand.expr, Expr::Ident(n) if n == "state" && self.is_bound("state").is_none())
                {
                    if !self.schema.items.contains(field) {
                        self.push(format!("unknown plan item '{field}'"));
                    }
                    if select.test {
                        return Info::of(ty);
                    }
                    return Info {
                        ty: StaticType::String,
                        about: About::State(field.clone()),
                    };
                }
                match &operand.ty {
                    StaticType::GeoPoint => {
                        if field != "lat" && field != "lon" {
                            let d = self.describe(&operand);
                            self.push(format!("{d} has no member '{field}' (use lat or lon)"));
                        }
                        if select.test {
                            Info::of(ty)
                        } else {
                            Info::of(StaticType::Double)
                        }
                    }
                    StaticType::Map | StaticType::Dyn => Info::of(ty),
                    _ => {
                        let d = self.describe(&operand);
                        self.push(format!("type mismatch: {d} has no member '{field}'"));
                        Info::of(ty)
                    }
                }
            }
            Expr::Call(call) => {
                let target = call.target.as_deref().map(|t| self.infer(t));
                let args: Vec<Info> = call.args.iter().map(|a| self.infer(a)).collect();
                self.call(&call.func_name, target, &args, &call.args)
            }
            Expr::List(list) => {
                let infos: Vec<Info> = list.elements.iter().map(|e| self.infer(e)).collect();
                let elem = match infos.first() {
                    Some(first) if infos.iter().all(|i| i.ty == first.ty) => first.ty.clone(),
                    _ => StaticType::Dyn,
                };
                let lits: Option<Vec<String>> = infos
                    .iter()
                    .map(|i| match &i.about {
                        About::Lit(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect();
                Info {
                    ty: StaticType::List(Box::new(elem)),
                    about: lits.map(About::LitList).unwrap_or(About::Other),
                }
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    if let cel::common::ast::EntryExpr::MapEntry(e) = &entry.expr {
                        self.infer(&e.key);
                        self.infer(&e.value);
                    }
                }
                Info::of(StaticType::Map)
            }
            Expr::Comprehension(c) => {
                let range = self.infer(&c.iter_range);
                let elem = match range.ty {
                    StaticType::List(e) => *e,
                    StaticType::Map => StaticType::String,
                    _ => StaticType::Dyn,
                };
                let accu = self.infer(&c.accu_init);
                let before = self.bound.len();
                self.bound.push((c.iter_var.clone(), elem));
                if let Some(v2) = &c.iter_var2 {
                    self.bound.push((v2.clone(), StaticType::Dyn));
                }
                self.bound.push((c.accu_var.clone(), accu.ty));
                self.infer(&c.loop_cond);
                self.infer(&c.loop_step);
                let result = self.infer(&c.result);
                self.bound.truncate(before);
                Info::of(result.ty)
            }
            _ => Info::of(StaticType::Dyn),
        }
    }

    fn ident(&mut self, name: &str) -> Info {
        if let Some(ty) = self.is_bound(name) {
            return Info::of(ty.clone());
        }
        match name {
            "state" => return Info::of(StaticType::Map),
            "reached" => {
                return Info {
                    ty: StaticType::List(Box::new(StaticType::String)),
                    about: About::Reached,
                }
            }
            _ if TYPE_NAMES.contains(&name) => return Info::of(StaticType::Dyn),
            _ => {}
        }
        match self.schema.fields.get(name) {
            Some(f) => Info {
                ty: f.ty.clone(),
                about: About::Field(name.to_string()),
            },
            None => {
                self.push(format!("unknown field '{name}'"));
                Info::of(StaticType::Dyn)
            }
        }
    }

    fn call(
        &mut self,
        func: &str,
        target: Option<Info>,
        args: &[Info],
        arg_exprs: &[IdedExpr],
    ) -> Info {
        use StaticType as T;
        match (func, args) {
            ("_==_" | "_!=_" | "_<_" | "_<=_" | "_>_" | "_>=_", [a, b]) => {
                if compatible(&a.ty, &b.ty) {
                    self.check_against(a, b);
                } else {
                    self.mismatch(a, b, "compare");
                }
                Info::of(T::Bool)
            }
            ("_&&_" | "_||_", [a, b]) => {
                self.expect_bool(a);
                self.expect_bool(b);
                Info::of(T::Bool)
            }
            ("!_", [a]) => {
                self.expect_bool(a);
                Info::of(T::Bool)
            }
            ("-_", [a]) => Info::of(a.ty.clone()),
            ("_+_" | "_-_" | "_*_" | "_/_" | "_%_", [a, b]) => {
                if !compatible(&a.ty, &b.ty) {
                    let op = func.trim_matches('_');
                    self.mismatch(a, b, &format!("apply '{op}' to"));
                    return Info::of(T::Dyn);
                }
                Info::of(if a.ty == b.ty { a.ty.clone() } else { T::Dyn })
            }
            ("@in", [a, b]) => {
                self.check_in(a, b, arg_exprs);
                Info::of(T::Bool)
            }
            ("_?_:_", [c, a, b]) => {
                self.expect_bool(c);
                Info::of(if a.ty == b.ty { a.ty.clone() } else { T::Dyn })
            }
            ("_[_]", [a, _]) => match &a.ty {
                T::List(e) => Info::of((**e).clone()),
                _ => Info::of(T::Dyn),
            },
            ("@not_strictly_false", _) => Info::of(T::Bool),
            ("size" | "int" | "uint", _) => Info::of(T::Int),
            ("double", _) => Info::of(T::Double),
            ("string", _) => Info::of(T::String),
            ("bytes", _) => Info::of(T::Bytes),
            ("bool", _) => Info::of(T::Bool),
            ("contains" | "startsWith" | "endsWith", _) => {
                if let Some(t) = &target {
                    if !matches!(t.ty, T::String | T::Dyn) {
                        let d = self.describe(t);
                        self.push(format!(
                            "type mismatch: '{func}' needs a string, but {d} is not one"
                        ));
                    }
                }
                Info::of(T::Bool)
            }
            _ => {
                let operator =
                    func.starts_with('_') || func.starts_with('@') || func.ends_with('_');
                if !operator && !SUPPORTED_FUNCTIONS.contains(&func) {
                    self.push(format!("unknown function '{func}'"));
                }
                Info::of(T::Dyn)
            }
        }
    }

    fn check_in(&mut self, a: &Info, b: &Info, arg_exprs: &[IdedExpr]) {
        if let (About::Lit(m), About::Reached) = (&a.about, &b.about) {
            if !self.schema.milestones.contains(m) {
                self.push(format!("unknown milestone '{m}'"));
            }
            return;
        }
        match &b.ty {
            StaticType::List(elem) => {
                let elem_info = Info::of((**elem).clone());
                if !compatible(&a.ty, elem) {
                    let (da, db) = (self.describe(a), self.describe(b));
                    self.push(format!("type mismatch: cannot look for {da} in {db}"));
                    return;
                }
                // `field in ['a', 'b']`: every literal must suit the field.
                if let About::LitList(lits) = &b.about {
                    for lit in lits {
                        let lit = Info {
                            ty: StaticType::String,
                            about: About::Lit(lit.clone()),
                        };
                        self.check_against(a, &lit);
                    }
                }
                // `'a' in list_field`: the literal must suit the list's elements.
                if let (About::Lit(_), About::Field(name)) = (&a.about, &b.about) {
                    if let Some(info) = self.schema.fields.get(name).cloned() {
                        let what = format!("{} field '{name}'", info.kind);
                        if let About::Lit(s) = &a.about {
                            self.check_literal(&what, &info, s);
                        }
                    }
                }
                let _ = (elem_info, arg_exprs);
            }
            StaticType::Map | StaticType::Dyn | StaticType::GeoPoint => {}
            _ => {
                let (da, db) = (self.describe(a), self.describe(b));
                self.push(format!("type mismatch: cannot look for {da} in {db}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        let mut s = Schema::default();
        let f = |ty, kind: &str, values: &[&str], format| FieldInfo {
            ty,
            kind: kind.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
            format,
        };
        s.fields
            .insert("age".into(), f(StaticType::Int, "integer", &[], None));
        s.fields
            .insert("name".into(), f(StaticType::String, "text", &[], None));
        s.fields.insert(
            "risk".into(),
            f(
                StaticType::String,
                "enumeration",
                &["standard", "medium", "high"],
                None,
            ),
        );
        s.fields.insert(
            "seen".into(),
            f(StaticType::String, "date", &[], Some(LiteralFormat::Date)),
        );
        s.fields.insert(
            "loc".into(),
            f(StaticType::GeoPoint, "geo point", &[], None),
        );
        s.fields.insert(
            "flags".into(),
            f(
                StaticType::List(Box::new(StaticType::String)),
                "list",
                &["a", "b"],
                None,
            ),
        );
        s.items.insert("attend".into());
        s.items.insert("review".into());
        s.milestones.insert("review".into());
        s
    }

    fn msgs(src: &str) -> Vec<String> {
        check_condition(&Condition::compile(src).expect("compiles"), &schema())
    }

    #[test]
    fn accepts_well_typed_conditions() {
        for src in [
            "age >= 18 && risk == 'high'",
            "risk in ['medium', 'high']",
            "seen > '2024-01-01'",
            "loc.lat > 51.0",
            "state.attend == 'completed'",
            "'review' in reached",
            "'a' in flags",
            "flags.exists(f, f == 'a')",
            "size(name) > 0 && name.startsWith('A')",
            "age > 1.5",
        ] {
            assert_eq!(msgs(src), Vec::<String>::new(), "{src}");
        }
    }

    #[test]
    fn reports_unknown_names() {
        assert_eq!(msgs("risky == 'high'"), ["unknown field 'risky'"]);
        assert_eq!(
            msgs("state.atend == 'active'"),
            ["unknown plan item 'atend'"]
        );
        assert_eq!(msgs("'revue' in reached"), ["unknown milestone 'revue'"]);
        assert_eq!(msgs("max(age, 1) > 2"), ["unknown function 'max'"]);
        assert_eq!(msgs("name.matches('x')"), ["unknown function 'matches'"]);
    }

    #[test]
    fn reports_type_mismatches() {
        assert_eq!(
            msgs("age == 'ten'"),
            ["type mismatch: cannot compare integer field 'age' with a string"]
        );
        assert_eq!(
            msgs("risk == 'hgh'"),
            ["'hgh' is not a value of enumeration field 'risk' (allowed: standard, medium, high)"]
        );
        assert_eq!(
            msgs("risk in ['high', 'extreme']"),
            ["'extreme' is not a value of enumeration field 'risk' (allowed: standard, medium, high)"]
        );
        assert_eq!(
            msgs("seen > '01/02/2024'"),
            ["'01/02/2024' is not a date (YYYY-MM-DD) as date field 'seen' requires"]
        );
        assert_eq!(
            msgs("age"),
            ["a condition must be a boolean, but this one is integer field 'age'"]
        );
        assert_eq!(msgs("state.attend == 'done'").len(), 1);
        assert_eq!(
            msgs("loc.x > 1.0"),
            ["geo point field 'loc' has no member 'x' (use lat or lon)"]
        );
        assert_eq!(
            msgs("name && true"),
            ["type mismatch: text field 'name' is not a boolean"]
        );
    }

    #[test]
    fn checks_expressions_against_their_target() {
        let target = FieldInfo {
            ty: StaticType::Int,
            kind: "integer".into(),
            values: vec![],
            format: None,
        };
        let e = Expression::compile("name").unwrap();
        let what = "field 'count'";
        assert_eq!(
            check_expression(&e, &schema(), Expected::Like { what, info: &target }),
            ["type mismatch: the expression yields text field 'name' but field 'count' is an integer"]
        );
        let e = Expression::compile("age + 1").unwrap();
        assert!(check_expression(
            &e,
            &schema(),
            Expected::Like {
                what,
                info: &target
            }
        )
        .is_empty());
    }
}
