//! Compiled CEL: [`Condition`] (a boolean) and [`Expression`] (any value).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, OnceLock};

use cel::common::ast::Expr;
use cel::{Context, Env, ExecutionError, IdedExpr, Program, Value};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::budget::{self, Budget, RULE_BUDGET};
use super::error::{CompileError, EvalError};
use super::scope::Scope;
use super::value::{cel_to_json, json_to_cel};

/// Plan-state variables every condition can see (see the module docs).
pub(crate) const RESERVED: [&str; 2] = ["state", "reached"];

/// Identifiers CEL itself resolves (type names), never case-file fields.
pub(crate) const TYPE_NAMES: [&str; 10] = [
    "int",
    "uint",
    "double",
    "string",
    "bool",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
];

/// The functions conditions may call (besides operators and the `has`, `all`,
/// `exists`, `exists_one`, `map` and `filter` macros). `cel` is built without
/// its `regex` and `chrono` features, so `matches`, `timestamp` and `duration`
/// are not among them.
pub const SUPPORTED_FUNCTIONS: [&str; 12] = [
    "size",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "bool",
    "dyn",
    "type",
    "contains",
    "startsWith",
    "endsWith",
];

/// One shared standard environment: building it is not free, and `Env` is
/// `Send + Sync`.
fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib())).clone()
}

/// A successfully compiled program and what it refers to.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) program: Program,
    /// Top-level identifiers that name case-file fields.
    pub(crate) fields: BTreeSet<String>,
    /// Whether it reads `state` or `reached`: only then is the plan handed
    /// to it (converting a large plan for every evaluation made opening a
    /// case of a large plan quadratic).
    pub(crate) reads_plan: bool,
}

/// CEL source plus the outcome of compiling it.
///
/// Compile errors are kept rather than raised so that a definition with several
/// bad expressions can be parsed and have all of them reported.
#[derive(Debug, Clone)]
struct Cel {
    source: String,
    compiled: Result<Arc<Compiled>, CompileError>,
}

impl Cel {
    fn new(source: &str) -> Self {
        let compiled = env()
            .compile(source)
            .map_err(|e| CompileError::from_parse(&e))
            .map(|program| {
                let free = free_identifiers(program.expression());
                let reads_plan = free.iter().any(|n| n == "state" || n == "reached");
                let fields = free
                    .into_iter()
                    .filter(|n| {
                        !RESERVED.contains(&n.as_str()) && !TYPE_NAMES.contains(&n.as_str())
                    })
                    .collect();
                Arc::new(Compiled {
                    program,
                    fields,
                    reads_plan,
                })
            });
        Cel {
            source: source.to_string(),
            compiled,
        }
    }

    fn compiled(&self) -> Result<&Compiled, EvalError> {
        self.compiled
            .as_deref()
            .map_err(|error| EvalError::NotCompiled {
                expression: self.source.clone(),
                error: error.clone(),
            })
    }

    /// Runs the program, after charging its cost bound to `budget`.
    /// `Ok(None)` means a value it needed was absent.
    fn run(&self, scope: &Scope<'_>, budget: &Budget) -> Result<Option<Value>, EvalError> {
        let compiled = self.compiled()?;
        self.charge(compiled, scope, budget)?;
        let mut ctx = Context::with_env(env());
        for name in &compiled.fields {
            if let Some(value) = scope.field(name) {
                ctx.add_variable_from_value(name.as_str(), json_to_cel(value));
            }
        }
        let (states, reached) = match scope.plan.filter(|_| compiled.reads_plan) {
            Some(plan) => (
                plan.states
                    .iter()
                    .map(|(k, s)| (k.clone(), Value::from(s.as_str())))
                    .collect(),
                plan.reached
                    .iter()
                    .map(|m| Value::from(m.as_str()))
                    .collect(),
            ),
            None => (std::collections::HashMap::new(), Vec::new()),
        };
        ctx.add_variable_from_value("state", states);
        ctx.add_variable_from_value("reached", reached);
        match compiled.program.execute(&ctx) {
            Ok(value) => Ok(Some(value)),
            Err(ExecutionError::UndeclaredReference(name))
                if compiled.fields.contains(name.as_str()) =>
            {
                Ok(None)
            }
            Err(ExecutionError::NoSuchKey(_)) => Ok(None),
            Err(error) => Err(self.eval_error(error)),
        }
    }

    /// Bounds the evaluation's cost from the sizes of what it reads and
    /// charges it, or refuses it (see `rules::budget`).
    fn charge(
        &self,
        compiled: &Compiled,
        scope: &Scope<'_>,
        budget: &Budget,
    ) -> Result<(), EvalError> {
        let fields: Vec<(&str, budget::Shape)> = compiled
            .fields
            .iter()
            .filter_map(|n| scope.field(n).map(|v| (n.as_str(), budget::measure(v))))
            .collect();
        let (state, reached) = match scope.plan.filter(|_| compiled.reads_plan) {
            Some(plan) => (
                budget::names(
                    plan.states.len(),
                    plan.states.keys().map(String::len).max().unwrap_or(0),
                    true,
                ),
                budget::names(
                    plan.reached.len(),
                    plan.reached.iter().map(String::len).max().unwrap_or(0),
                    false,
                ),
            ),
            None => (budget::names(0, 0, true), budget::names(0, 0, false)),
        };
        let input_cost = fields
            .iter()
            .map(|(_, s)| s.size())
            .chain([state.size(), reached.size()])
            .fold(0u64, u64::saturating_add);
        let inputs = |name: &str| match name {
            "state" => Some(state),
            "reached" => Some(reached),
            _ => fields.iter().find(|(n, _)| *n == name).map(|(_, s)| *s),
        };
        let refused = |cost: Option<u64>, limit: u64, reason: String| EvalError::BudgetExceeded {
            expression: self.source.clone(),
            cost,
            limit,
            reason,
        };
        let cost = match budget::bound(compiled.program.expression(), &inputs, input_cost) {
            Ok(cost) => cost,
            Err(why) => {
                let limit = budget.remaining().min(RULE_BUDGET);
                return Err(refused(None, limit, format!("it cannot be bounded: {why}")));
            }
        };
        budget.charge(cost).map_err(|available| {
            refused(
                Some(cost),
                available,
                format!(
                    "with the case's data it may cost up to {cost} units and {available} are \
                     available (a rule may cost at most {RULE_BUDGET}; comprehensions over \
                     long lists multiply)"
                ),
            )
        })
    }

    fn eval_error(&self, error: ExecutionError) -> EvalError {
        let expression = self.source.clone();
        match error {
            ExecutionError::NoSuchOverload(overload) => EvalError::TypeMismatch {
                expression,
                function: overload.function().to_string(),
                argument_types: overload.argument_types().to_vec(),
            },
            ExecutionError::ValuesNotComparable(a, b)
            | ExecutionError::UnsupportedBinaryOperator(_, a, b) => EvalError::TypeMismatch {
                expression,
                function: "comparison".to_string(),
                argument_types: vec![a.type_of().to_string(), b.type_of().to_string()],
            },
            ExecutionError::UnexpectedType { got, want } => EvalError::TypeMismatch {
                expression,
                function: format!("expected {want}"),
                argument_types: vec![got],
            },
            ExecutionError::UndeclaredReference(name) => EvalError::UnknownFunction {
                expression,
                function: name.to_string(),
            },
            ExecutionError::DivisionByZero(_) | ExecutionError::RemainderByZero(_) => {
                EvalError::DivisionByZero { expression }
            }
            other => EvalError::Failed {
                expression,
                message: value_free(&other),
            },
        }
    }
}

/// The interpreter's error without the values it quotes: rule errors reach
/// callers who may not see the fields the rule read.
fn value_free(error: &ExecutionError) -> String {
    match error {
        ExecutionError::InvalidArgumentCount { expected, actual } => {
            format!("expected {expected} arguments, got {actual}")
        }
        ExecutionError::NotSupportedAsMethod { method, .. } => {
            format!("'{method}' is not a method of its target")
        }
        ExecutionError::FunctionError { function, .. } => format!("'{function}' failed"),
        ExecutionError::MissingArgumentOrTarget => "a missing argument or target".into(),
        ExecutionError::UnsupportedTargetType { .. }
        | ExecutionError::UnsupportedKeyType(_)
        | ExecutionError::UnsupportedIndex(..) => "a value of a type it cannot index with".into(),
        _ => "evaluation failed".into(),
    }
}

impl PartialEq for Cel {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Cel {}

/// The identifiers an expression reads that are not bound by a comprehension
/// (`exists`, `all`, `map`, ... bind their iteration variable).
pub(crate) fn free_identifiers(expr: &IdedExpr) -> BTreeSet<String> {
    fn walk(expr: &IdedExpr, bound: &mut Vec<String>, out: &mut BTreeSet<String>) {
        match &expr.expr {
            Expr::Ident(name) if !bound.iter().any(|b| b == name) => {
                out.insert(name.clone());
            }
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    walk(target, bound, out);
                }
                for arg in &call.args {
                    walk(arg, bound, out);
                }
            }
            Expr::Select(select) => walk(&select.operand, bound, out),
            Expr::List(list) => {
                for e in &list.elements {
                    walk(e, bound, out);
                }
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    if let cel::common::ast::EntryExpr::MapEntry(e) = &entry.expr {
                        walk(&e.key, bound, out);
                        walk(&e.value, bound, out);
                    }
                }
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    match &entry.expr {
                        cel::common::ast::EntryExpr::StructField(f) => walk(&f.value, bound, out),
                        cel::common::ast::EntryExpr::MapEntry(e) => {
                            walk(&e.key, bound, out);
                            walk(&e.value, bound, out);
                        }
                    }
                }
            }
            Expr::Comprehension(c) => {
                walk(&c.iter_range, bound, out);
                walk(&c.accu_init, bound, out);
                let before = bound.len();
                bound.push(c.iter_var.clone());
                if let Some(v2) = &c.iter_var2 {
                    bound.push(v2.clone());
                }
                bound.push(c.accu_var.clone());
                walk(&c.loop_cond, bound, out);
                walk(&c.loop_step, bound, out);
                walk(&c.result, bound, out);
                bound.truncate(before);
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(expr, &mut Vec::new(), &mut out);
    out
}

/// A CEL condition, compiled once; evaluates to a boolean.
///
/// Serializes as its source string. Deserializing compiles it; a source that does
/// not compile still deserializes (so that a definition can report every bad
/// condition at once) and [`Condition::compile_error`] says why — evaluating it
/// returns [`EvalError::NotCompiled`]. Equality compares sources.
///
/// ```
/// use casebook::rules::{Condition, Scope};
/// let cond = Condition::compile("risk == 'high' && age < 18").unwrap();
/// assert_eq!(cond.fields().collect::<Vec<_>>(), ["age", "risk"]);
/// let file = serde_json::json!({ "risk": "high", "age": 15 });
/// assert_eq!(cond.evaluate(&Scope::case_file(&file)), Ok(true));
/// // An absent field makes the condition false, not an error.
/// let file = serde_json::json!({ "risk": "high" });
/// assert_eq!(cond.evaluate(&Scope::case_file(&file)), Ok(false));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Condition(Cel);

impl Condition {
    /// Compiles `source`.
    ///
    /// # Errors
    /// [`CompileError`] when the source is not valid CEL.
    pub fn compile(source: &str) -> Result<Self, CompileError> {
        let cond = Condition::compile_lenient(source);
        match cond.compile_error() {
            Some(e) => Err(e.clone()),
            None => Ok(cond),
        }
    }

    /// Compiles `source`, keeping a compile error inside instead of returning it.
    pub fn compile_lenient(source: &str) -> Self {
        Condition(Cel::new(source))
    }

    /// The CEL source as written.
    pub fn source(&self) -> &str {
        &self.0.source
    }

    /// Why the source did not compile, if it did not.
    pub fn compile_error(&self) -> Option<&CompileError> {
        self.0.compiled.as_ref().err()
    }

    /// The case-file fields the condition reads (top-level identifiers other than
    /// `state`, `reached`, type names and comprehension variables), sorted.
    /// Empty when it did not compile.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0
            .compiled
            .as_ref()
            .ok()
            .into_iter()
            .flat_map(|c| c.fields.iter().map(String::as_str))
    }

    /// The plan items and milestones it reads through `state` and `reached`.
    pub fn plan_refs(&self) -> super::PlanRefs {
        self.ast().map(super::refs::plan_refs).unwrap_or_default()
    }

    /// The compiled program's syntax tree (for static checks).
    pub(crate) fn ast(&self) -> Option<&IdedExpr> {
        self.0
            .compiled
            .as_ref()
            .ok()
            .map(|c| c.program.expression())
    }

    /// Evaluates the condition.
    ///
    /// Returns `Ok(false)` when a field or map entry it needs is absent.
    ///
    /// # Errors
    /// [`EvalError::NotCompiled`] if the source did not compile,
    /// [`EvalError::NotABoolean`] if it produced another type, and the other
    /// [`EvalError`] variants for type errors and runtime failures.
    pub fn evaluate(&self, scope: &Scope<'_>) -> Result<bool, EvalError> {
        self.evaluate_within(scope, &Budget::new(RULE_BUDGET))
    }

    /// Evaluates the condition, charging its cost bound to `budget` (a
    /// command's, shared by every rule it evaluates).
    ///
    /// # Errors
    /// As [`Condition::evaluate`], and [`EvalError::BudgetExceeded`] when the
    /// bound exceeds what is left of `budget` (or [`RULE_BUDGET`]).
    pub fn evaluate_within(&self, scope: &Scope<'_>, budget: &Budget) -> Result<bool, EvalError> {
        match self.0.run(scope, budget)? {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(b),
            Some(other) => Err(EvalError::NotABoolean {
                expression: self.0.source.clone(),
                got: other.type_of().to_string(),
            }),
        }
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition").field(&self.0.source).finish()
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.source)
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.source)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = String::deserialize(deserializer)?;
        Ok(Condition::compile_lenient(&source))
    }
}

/// A CEL expression, compiled once; evaluates to a value (converted to JSON).
///
/// Used for service-task inputs and automatic-step assignments. Serialization,
/// lenient compilation and equality work as for [`Condition`].
///
/// ```
/// use casebook::rules::{Expression, Scope};
/// let expr = Expression::compile("'Ward ' + ward").unwrap();
/// let file = serde_json::json!({ "ward": "Bishopsgate" });
/// assert_eq!(
///     expr.evaluate(&Scope::case_file(&file)),
///     Ok(Some(serde_json::json!("Ward Bishopsgate")))
/// );
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Expression(Cel);

impl Expression {
    /// Compiles `source`.
    ///
    /// # Errors
    /// [`CompileError`] when the source is not valid CEL.
    pub fn compile(source: &str) -> Result<Self, CompileError> {
        let expr = Expression::compile_lenient(source);
        match expr.compile_error() {
            Some(e) => Err(e.clone()),
            None => Ok(expr),
        }
    }

    /// Compiles `source`, keeping a compile error inside instead of returning it.
    pub fn compile_lenient(source: &str) -> Self {
        Expression(Cel::new(source))
    }

    /// The CEL source as written.
    pub fn source(&self) -> &str {
        &self.0.source
    }

    /// Why the source did not compile, if it did not.
    pub fn compile_error(&self) -> Option<&CompileError> {
        self.0.compiled.as_ref().err()
    }

    /// The case-file fields the expression reads, sorted.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0
            .compiled
            .as_ref()
            .ok()
            .into_iter()
            .flat_map(|c| c.fields.iter().map(String::as_str))
    }

    /// The plan items and milestones it reads through `state` and `reached`.
    pub fn plan_refs(&self) -> super::PlanRefs {
        self.ast().map(super::refs::plan_refs).unwrap_or_default()
    }

    /// The compiled program's syntax tree (for static checks).
    pub(crate) fn ast(&self) -> Option<&IdedExpr> {
        self.0
            .compiled
            .as_ref()
            .ok()
            .map(|c| c.program.expression())
    }

    /// Evaluates the expression; `Ok(None)` when a value it needs is absent.
    ///
    /// # Errors
    /// [`EvalError::NotCompiled`] if the source did not compile,
    /// [`EvalError::Unrepresentable`] if the result has no JSON form, and the
    /// other [`EvalError`] variants for type errors and runtime failures.
    pub fn evaluate(&self, scope: &Scope<'_>) -> Result<Option<serde_json::Value>, EvalError> {
        self.evaluate_within(scope, &Budget::new(RULE_BUDGET))
    }

    /// Evaluates the expression, charging its cost bound to `budget`.
    ///
    /// # Errors
    /// As [`Expression::evaluate`], and [`EvalError::BudgetExceeded`] when
    /// the bound exceeds what is left of `budget` (or [`RULE_BUDGET`]).
    pub fn evaluate_within(
        &self,
        scope: &Scope<'_>,
        budget: &Budget,
    ) -> Result<Option<serde_json::Value>, EvalError> {
        match self.0.run(scope, budget)? {
            None => Ok(None),
            Some(value) => {
                cel_to_json(&value)
                    .map(Some)
                    .map_err(|reason| EvalError::Unrepresentable {
                        expression: self.0.source.clone(),
                        reason,
                    })
            }
        }
    }
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expression").field(&self.0.source).finish()
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.source)
    }
}

impl Serialize for Expression {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.source)
    }
}

impl<'de> Deserialize<'de> for Expression {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = String::deserialize(deserializer)?;
        Ok(Expression::compile_lenient(&source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{ItemState, PlanState};
    use serde_json::json;

    fn eval(src: &str, file: serde_json::Value) -> Result<bool, EvalError> {
        Condition::compile(src)
            .expect("compiles")
            .evaluate(&Scope::case_file(&file))
    }

    #[test]
    fn conditions_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Condition>();
        assert_send_sync::<Expression>();
    }

    #[test]
    fn evaluates_over_the_case_file() {
        assert_eq!(eval("age >= 18", json!({"age": 30})), Ok(true));
        assert_eq!(eval("age >= 18", json!({"age": 3})), Ok(false));
        assert_eq!(eval("score > 2.5", json!({"score": 3})), Ok(true));
        assert_eq!(eval("'a' in tags", json!({"tags": ["a", "b"]})), Ok(true));
        assert_eq!(
            eval("loc.lat > 51.0", json!({"loc": {"lat": 51.5, "lon": 0.1}})),
            Ok(true)
        );
    }

    #[test]
    fn absent_field_is_false_not_an_error() {
        assert_eq!(eval("age >= 18", json!({})), Ok(false));
        assert_eq!(eval("age >= 18", json!({"age": null})), Ok(false));
        assert_eq!(eval("!(age >= 18)", json!({})), Ok(false));
        assert_eq!(eval("loc.lat > 1.0", json!({"loc": {}})), Ok(false));
        // CEL's commutative || still lets a present field decide.
        assert_eq!(
            eval(
                "age >= 18 || grade == 'immediate'",
                json!({"grade": "immediate"})
            ),
            Ok(true)
        );
    }

    #[test]
    fn type_errors_are_typed() {
        let err = eval("age > 'ten'", json!({"age": 3})).unwrap_err();
        assert_eq!(
            err,
            EvalError::TypeMismatch {
                expression: "age > 'ten'".into(),
                function: "_>_".into(),
                argument_types: vec!["int".into(), "string".into()],
            }
        );
        assert!(
            matches!(eval("age", json!({"age": 3})), Err(EvalError::NotABoolean { got, .. }) if got == "int")
        );
        assert!(matches!(
            eval("1 / n == 1", json!({"n": 0})),
            Err(EvalError::DivisionByZero { .. })
        ));
        assert!(
            matches!(eval("max(1, 2) == 2", json!({})), Err(EvalError::UnknownFunction { function, .. }) if function == "max")
        );
    }

    #[test]
    fn plan_state_is_visible() {
        let mut plan = PlanState::default();
        plan.states.insert("attend".into(), ItemState::Completed);
        plan.reached.insert("supervisor_review".into());
        let file = json!({});
        let scope = Scope::case_file(&file).with_plan(&plan);
        let c = |s: &str| Condition::compile(s).expect("compiles").evaluate(&scope);
        assert_eq!(c("state.attend == 'completed'"), Ok(true));
        assert_eq!(c("'supervisor_review' in reached"), Ok(true));
        assert_eq!(c("'other' in reached"), Ok(false));
        // An item that does not exist yet is absent.
        assert_eq!(c("state.grade == 'active'"), Ok(false));
        assert_eq!(c("has(state.grade)"), Ok(false));
    }

    #[test]
    fn references_exclude_comprehension_variables_and_reserved_names() {
        let c = Condition::compile(
            "tags.exists(t, t == flag) && state.x == 'active' && type(n) == int",
        )
        .unwrap();
        assert_eq!(c.fields().collect::<Vec<_>>(), ["flag", "n", "tags"]);
    }

    #[test]
    fn compile_errors_are_kept_by_lenient_compilation() {
        let c = Condition::compile_lenient("age >");
        let err = c.compile_error().expect("an error");
        assert_eq!(err.column, 6);
        assert!(matches!(
            c.evaluate(&Scope::case_file(&json!({}))),
            Err(EvalError::NotCompiled { .. })
        ));
        assert!(Condition::compile("age >").is_err());
    }

    #[test]
    fn supported_functions_all_exist() {
        let file = json!({});
        let scope = Scope::case_file(&file);
        for src in [
            "size('ab') == 2",
            "int('3') == 3",
            "uint(3) == 3u",
            "double(1) == 1.0",
            "string(1) == '1'",
            "bytes('a') == b'a'",
            "bool('true')",
            "dyn(1) == 1",
            "type(1) == int",
            "'abc'.contains('b')",
            "'abc'.startsWith('a')",
            "'abc'.endsWith('c')",
        ] {
            assert_eq!(
                Condition::compile(src).unwrap().evaluate(&scope),
                Ok(true),
                "{src}"
            );
        }
        assert_eq!(SUPPORTED_FUNCTIONS.len(), 12);
    }

    #[test]
    fn expressions_yield_json_or_none_when_absent() {
        let e = Expression::compile("count + 1").unwrap();
        assert_eq!(
            e.evaluate(&Scope::case_file(&json!({"count": 1}))),
            Ok(Some(json!(2)))
        );
        assert_eq!(e.evaluate(&Scope::case_file(&json!({}))), Ok(None));
        let b = Expression::compile("b'x'").unwrap();
        assert!(matches!(
            b.evaluate(&Scope::case_file(&json!({}))),
            Err(EvalError::Unrepresentable { .. })
        ));
    }

    #[test]
    fn serializes_as_source() {
        let c = Condition::compile("a == 1").unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"a == 1\"");
        let back: Condition = serde_json::from_str("\"a == 1\"").unwrap();
        assert_eq!(back, c);
        let bytes = rmp_serde::to_vec(&c).unwrap();
        assert_eq!(rmp_serde::from_slice::<Condition>(&bytes).unwrap(), c);
    }
}
