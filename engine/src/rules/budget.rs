//! Rule budgets: what evaluating a rule may cost, bounded before it runs.
//!
//! The `cel` interpreter has no hook to count steps or stop an evaluation
//! half-way, so the budget is enforced by an upper bound computed just before
//! each evaluation, from the program's syntax tree and the **actual sizes** of
//! the values in scope (the case-file fields it reads, the plan's state). An
//! evaluation whose bound exceeds what is left of its budget is refused
//! before the interpreter starts; one within it cannot do more work or
//! allocate more than the bound says.
//!
//! # The cost model
//!
//! A **unit** is one value (a scalar, a list element, a map entry) or 16
//! bytes of text. Every value is given a [`Shape`]: an upper bound on its
//! total size in units, on how many items iterating it yields, and on the
//! size of any one item. Inputs are measured; each operation derives its
//! result's shape from its operands' (a concatenation adds them, an index
//! yields at most an item, a comparison one unit) and adds its work to the
//! cost: one unit per node evaluated, plus the size of every value it copies,
//! builds or scans (`==` and `in` scan both sides, a list literal copies its
//! elements). A comprehension (`all`, `exists`, `exists_one`, `map`,
//! `filter`) costs its range, plus **one iteration's cost times the number of
//! items** of its range — so nesting multiplies — plus its result. Its
//! accumulator is bounded by fixpoint: a step that does not grow it (the
//! boolean and counting macros) leaves its bound unchanged; a step that adds
//! the same amount whatever the accumulator holds (`map`, `filter`) grows it
//! by that amount per item; anything else is refused as unbounded. The cost
//! of `map` / `filter` follows the interpreter's in-place append (it does not
//! copy the accumulator at each step).
//!
//! Since every allocation the interpreter makes is a value some operation
//! builds, and every operation's work is counted, the bound limits time and
//! memory together: a rule within budget cannot exhaust memory.
//!
//! # The numbers
//!
//! - [`RULE_BUDGET`] = 1,000,000 units for one evaluation: a comprehension
//!   over a full list field (10,000 items) costs about 120,000 and fits;
//!   two nested comprehensions over one (about 10^9) do not.
//! - [`COMMAND_BUDGET`] = 4,000,000 units for every rule a command evaluates
//!   (its sentries, applicability rules, deadline conditions, automatic
//!   steps and service inputs, along the whole cascade).
//! - [`INLINE_BUDGET`] = 10,000 units: what the engine lets a command's
//!   rules cost on an async worker thread (see `engine/src/engine/mod.rs`);
//!   ordinary conditions cost tens of units each.
//! - [`MAX_NESTING`] = 3 comprehensions inside one another.
//!
//! `benches/rule_budget.rs` measures what a unit costs: about 150 ns in a
//! development build on a loaded 2-core machine. So the inline budget is
//! about 1.5 ms of a worker thread at most; a rule within [`RULE_BUDGET`]
//! takes up to about 150 ms and a command within [`COMMAND_BUDGET`] up to
//! about 0.6 s, both on a blocking thread. Refusing a rule costs measuring
//! what it reads, not running it.
//!
//! # At deploy
//!
//! [`check_bounds`] is what the definition validator asks: with every list
//! field at its longest ([`crate::case::MAX_LIST_LEN`] items), would the
//! iterations alone exceed [`RULE_BUDGET`], or are comprehensions nested
//! deeper than [`MAX_NESTING`]? Such a rule could never run on a full case,
//! so it is refused with its path.

use std::cell::Cell;

use cel::common::ast::{EntryExpr, Expr, LiteralValue};
use cel::IdedExpr;

/// Units one evaluation may cost (see the module docs).
pub const RULE_BUDGET: u64 = 1_000_000;

/// Units all the rules one command evaluates may cost together.
pub const COMMAND_BUDGET: u64 = 4_000_000;

/// Units a command's rules may cost on an async worker thread; a command
/// whose rules need more is decided again on a blocking thread.
pub const INLINE_BUDGET: u64 = 10_000;

/// How many comprehensions may sit inside one another.
pub const MAX_NESTING: usize = 3;

/// Bytes of text that count as one unit.
const TEXT_UNIT: u64 = 16;

/// What is left to spend on evaluating rules: one per command (or per
/// evaluation, for [`crate::rules::Condition::evaluate`]).
///
/// It is charged the *bound* of each evaluation, before the evaluation runs,
/// so the work actually done never exceeds what was charged.
///
/// ```
/// use casebook::rules::{Budget, Condition, EvalError, Scope};
/// let tags: Vec<i64> = (0..10_000).collect();
/// let file = serde_json::json!({ "tags": tags });
/// let budget = Budget::new(casebook::rules::COMMAND_BUDGET);
/// let once = Condition::compile("tags.exists(t, t == 5)").unwrap();
/// assert_eq!(once.evaluate_within(&Scope::case_file(&file), &budget), Ok(true));
/// let nested = Condition::compile("tags.exists(a, tags.exists(b, a + b == -1))").unwrap();
/// assert!(matches!(
///     nested.evaluate_within(&Scope::case_file(&file), &budget),
///     Err(EvalError::BudgetExceeded { .. })
/// ));
/// ```
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    spent: Cell<u64>,
}

impl Budget {
    /// A budget of `limit` units.
    pub fn new(limit: u64) -> Self {
        Budget {
            limit,
            spent: Cell::new(0),
        }
    }

    /// The units this budget started with.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The units charged so far.
    pub fn spent(&self) -> u64 {
        self.spent.get()
    }

    /// The units left.
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.spent.get())
    }

    /// Charges `cost` if it fits in what is left (and in [`RULE_BUDGET`]);
    /// otherwise charges nothing and says how much was available.
    pub(crate) fn charge(&self, cost: u64) -> Result<(), u64> {
        let available = self.remaining().min(RULE_BUDGET);
        if cost > available {
            return Err(available);
        }
        self.spent.set(self.spent.get() + cost);
        Ok(())
    }
}

/// An upper bound on a value: its size in units, how many items iterating
/// it yields, and the size of any one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Shape {
    size: u64,
    len: u64,
    item: u64,
}

impl Shape {
    const SCALAR: Shape = Shape {
        size: 1,
        len: 0,
        item: 0,
    };

    /// The bound on the value's size, in units.
    pub(crate) fn size(self) -> u64 {
        self.size
    }

    /// The shape of an unknown value of at most `size` units.
    fn within(size: u64) -> Shape {
        Shape {
            size,
            len: size,
            item: size,
        }
    }

    fn text(bytes: usize) -> Shape {
        Shape {
            size: 1 + bytes as u64 / TEXT_UNIT,
            ..Shape::SCALAR
        }
    }

    /// Whether every bound of `self` is at most the same bound of `other`.
    fn fits_in(self, other: Shape) -> bool {
        self.size <= other.size && self.len <= other.len && self.item <= other.item
    }

    fn max(self, other: Shape) -> Shape {
        Shape {
            size: self.size.max(other.size),
            len: self.len.max(other.len),
            item: self.item.max(other.item),
        }
    }

    /// A concatenation (`+` on lists or text; on numbers both sides are one
    /// unit and so is the result).
    fn concat(self, other: Shape) -> Shape {
        if self.size <= 1 && other.size <= 1 {
            return Shape::SCALAR;
        }
        Shape {
            size: self.size.saturating_add(other.size),
            len: self.len.saturating_add(other.len),
            item: self.item.max(other.item),
        }
    }
}

/// Measures a JSON value as the interpreter will hold it.
pub(crate) fn measure(value: &serde_json::Value) -> Shape {
    match value {
        serde_json::Value::String(s) => Shape::text(s.len()),
        serde_json::Value::Array(items) => {
            let mut shape = Shape {
                size: 1,
                len: items.len() as u64,
                item: 0,
            };
            for v in items {
                let s = measure(v).size;
                shape.size = shape.size.saturating_add(s);
                shape.item = shape.item.max(s);
            }
            shape
        }
        serde_json::Value::Object(map) => {
            let mut shape = Shape {
                size: 1,
                len: map.len() as u64,
                item: 0,
            };
            for (k, v) in map {
                let (k, v) = (Shape::text(k.len()).size, measure(v).size);
                shape.size = shape.size.saturating_add(k).saturating_add(v);
                shape.item = shape.item.max(k).max(v);
            }
            shape
        }
        _ => Shape::SCALAR,
    }
}

/// A map or list of short strings with `len` entries (`state`, `reached`).
pub(crate) fn names(len: usize, longest: usize, map: bool) -> Shape {
    let entry = Shape::text(longest).size;
    let per = if map { 2 * entry } else { entry };
    Shape {
        size: 1 + len as u64 * per,
        len: len as u64,
        item: entry,
    }
}

/// Computes the cost bound of evaluating `ast` with `inputs` (the shapes of
/// the free variables), plus `input_cost` for converting them; or says, in
/// words, why no bound could be computed.
pub(crate) fn bound(
    ast: &IdedExpr,
    inputs: &dyn Fn(&str) -> Option<Shape>,
    input_cost: u64,
) -> Result<u64, String> {
    let mut a = Analyzer {
        inputs,
        bound: Vec::new(),
        cost: input_cost,
        depth: 0,
    };
    a.shape(ast)?;
    Ok(a.cost)
}

struct Analyzer<'a> {
    inputs: &'a dyn Fn(&str) -> Option<Shape>,
    bound: Vec<(String, Shape)>,
    cost: u64,
    depth: usize,
}

impl Analyzer<'_> {
    fn add(&mut self, units: u64) {
        self.cost = self.cost.saturating_add(units);
    }

    fn shape(&mut self, e: &IdedExpr) -> Result<Shape, String> {
        self.add(1);
        Ok(match &e.expr {
            Expr::Literal(LiteralValue::String(s)) => Shape::text(s.inner().len()),
            Expr::Literal(LiteralValue::Bytes(b)) => Shape::text(b.len()),
            Expr::Literal(_) => Shape::SCALAR,
            Expr::Ident(name) => match self.bound.iter().rev().find(|(n, _)| n == name) {
                Some((_, s)) => *s,
                // An absent field ends the evaluation: nothing to bound.
                None => (self.inputs)(name).unwrap_or(Shape::SCALAR),
            },
            Expr::Select(select) => {
                let operand = self.shape(&select.operand)?;
                if select.test {
                    Shape::SCALAR
                } else {
                    let out = Shape::within(operand.item);
                    self.add(out.size);
                    out
                }
            }
            Expr::List(list) => {
                let mut out = Shape {
                    size: 1,
                    len: list.elements.len() as u64,
                    item: 0,
                };
                for element in &list.elements {
                    let s = self.shape(element)?;
                    out.size = out.size.saturating_add(s.size);
                    out.item = out.item.max(s.size);
                }
                self.add(out.size);
                out
            }
            Expr::Map(map) => {
                let mut out = Shape {
                    size: 1,
                    len: map.entries.len() as u64,
                    item: 0,
                };
                for entry in &map.entries {
                    let EntryExpr::MapEntry(entry) = &entry.expr else {
                        return Err("a struct field inside a map literal".into());
                    };
                    let (k, v) = (self.shape(&entry.key)?, self.shape(&entry.value)?);
                    out.size = out.size.saturating_add(k.size).saturating_add(v.size);
                    out.item = out.item.max(k.size).max(v.size);
                }
                self.add(out.size);
                out
            }
            Expr::Struct(s) => {
                let mut size = 1u64;
                for entry in &s.entries {
                    let value = match &entry.expr {
                        EntryExpr::StructField(f) => &f.value,
                        EntryExpr::MapEntry(m) => &m.value,
                    };
                    size = size.saturating_add(self.shape(value)?.size);
                }
                self.add(size);
                Shape::within(size)
            }
            Expr::Call(call) => {
                let target = match &call.target {
                    Some(t) => Some(self.shape(t)?),
                    None => None,
                };
                let args = call
                    .args
                    .iter()
                    .map(|a| self.shape(a))
                    .collect::<Result<Vec<_>, _>>()?;
                self.call(&call.func_name, target, &args)
            }
            Expr::Comprehension(c) => self.comprehension(c)?,
            Expr::Unspecified => return Err("an unspecified expression".into()),
        })
    }

    fn call(&mut self, func: &str, target: Option<Shape>, args: &[Shape]) -> Shape {
        let all = || target.iter().chain(args.iter()).copied();
        let scanned: u64 = all().fold(0u64, |n, s| n.saturating_add(s.size));
        match (func, args) {
            ("_&&_" | "_||_" | "!_" | "@not_strictly_false", _) => Shape::SCALAR,
            ("_==_" | "_!=_" | "_<_" | "_<=_" | "_>_" | "_>=_" | "@in", _)
            | ("contains" | "startsWith" | "endsWith" | "matches", _)
            | ("size" | "int" | "uint" | "double" | "bool" | "type", _)
            | ("hasValue" | "none", _) => {
                self.add(scanned);
                Shape::SCALAR
            }
            ("_+_", [a, b]) => {
                let out = a.concat(*b);
                self.add(out.size);
                out
            }
            ("_-_" | "_*_" | "_/_" | "_%_" | "-_", _) => {
                self.add(scanned);
                Shape::SCALAR
            }
            ("_[_]" | "_[?_]", [a, key]) => {
                let out = Shape::within(a.item);
                self.add(key.size.saturating_add(out.size));
                out
            }
            ("_?._", [a, _]) => {
                let out = Shape::within(a.item);
                self.add(out.size);
                out
            }
            ("_?_:_", [_, a, b]) => a.max(*b),
            ("string", _) => {
                // A number's text is a few units; text and bytes keep their size.
                let out = Shape {
                    size: scanned.saturating_add(2),
                    ..Shape::SCALAR
                };
                self.add(out.size);
                out
            }
            // Pass-throughs: `dyn(x)`, `bytes(s)`, the optional library's
            // wrappers and unwrappers, and any function the environment does
            // not have (its call fails at once).
            _ => {
                let out = all().fold(Shape::SCALAR, Shape::max);
                self.add(out.size);
                out
            }
        }
    }

    fn comprehension(&mut self, c: &cel::common::ast::ComprehensionExpr) -> Result<Shape, String> {
        if self.depth >= MAX_NESTING {
            return Err(format!(
                "comprehensions are nested more than {MAX_NESTING} deep"
            ));
        }
        let range = self.shape(&c.iter_range)?;
        let init = self.shape(&c.accu_init)?;
        let item = Shape::within(range.item);
        let n = range.len;
        let before = self.bound.len();
        self.bound.push((c.iter_var.clone(), item));
        if let Some(v2) = &c.iter_var2 {
            self.bound.push((v2.clone(), item));
        }
        self.depth += 1;
        let outcome = self.iterations(c, n, item, init);
        self.depth -= 1;
        self.bound.truncate(before);
        let accu = outcome?;
        self.bound.push((c.accu_var.clone(), accu));
        let result = self.shape(&c.result);
        self.bound.truncate(before);
        result
    }

    /// Adds `n` iterations' cost and returns the accumulator's bound after
    /// them (the iteration variables are bound by the caller).
    fn iterations(
        &mut self,
        c: &cel::common::ast::ComprehensionExpr,
        n: u64,
        item: Shape,
        init: Shape,
    ) -> Result<Shape, String> {
        let saved = self.cost;
        let step = |a: &mut Self, accu: Shape| -> Result<Shape, String> {
            a.bound.push((c.accu_var.clone(), accu));
            let out = a.shape(&c.loop_step);
            a.bound.pop();
            out
        };
        // The accumulator's bound: a fixpoint, or linear growth.
        let first = step(self, init)?;
        let accu = if first.fits_in(init) {
            init
        } else {
            const PROBE: u64 = 1 << 20;
            let larger = Shape {
                size: init.size + PROBE,
                len: init.len + PROBE,
                item: init.item,
            };
            let second = step(self, larger)?;
            let grows = |a: u64, b: u64| b.saturating_sub(a);
            let growth = (grows(init.size, first.size), grows(init.len, first.len));
            if (
                grows(larger.size, second.size),
                grows(larger.len, second.len),
            ) != growth
                || second.item > first.item.max(init.item)
            {
                return Err("its accumulator grows in a way the budget cannot bound".into());
            }
            Shape {
                size: init.size.saturating_add(n.saturating_mul(growth.0)),
                len: init.len.saturating_add(n.saturating_mul(growth.1)),
                item: first.item.max(init.item),
            }
        };
        // One iteration's cost, with the accumulator at its largest.
        self.cost = 0;
        self.add(item.size);
        self.bound.push((c.accu_var.clone(), accu));
        let appended = append_step(c);
        let measured = (|| {
            self.shape(&c.loop_cond)?;
            match appended {
                // The interpreter appends in place: the guard and the new
                // items are evaluated, the accumulator is not copied.
                Some((guard, items)) if is_empty_list(&c.accu_init) => {
                    if let Some(g) = guard {
                        self.shape(g)?;
                    }
                    self.shape(items)?;
                }
                _ => {
                    self.shape(&c.loop_step)?;
                }
            }
            Ok::<(), String>(())
        })();
        self.bound.pop();
        measured?;
        let per_iteration = self.cost;
        self.cost = saved.saturating_add(n.saturating_mul(per_iteration));
        Ok(accu)
    }
}

fn is_empty_list(e: &IdedExpr) -> bool {
    matches!(&e.expr, Expr::List(l) if l.elements.is_empty())
}

/// The `map` / `filter` loop step the interpreter runs in place (as
/// `cel`'s own `AppendStep` recognises it): `@result + [x]`, or
/// `guard ? @result + [x] : @result`, with a constant loop condition and
/// `@result` as the result. Returns the guard and the appended list.
fn append_step(c: &cel::common::ast::ComprehensionExpr) -> Option<(Option<&IdedExpr>, &IdedExpr)> {
    let accu = c.accu_var.as_str();
    let is_accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(n) if n == accu);
    let items_of = |e: &'_ IdedExpr| -> Option<()> {
        match &e.expr {
            Expr::Call(call) if call.func_name == "_+_" && call.target.is_none() => {
                match call.args.as_slice() {
                    [lhs, rhs] if is_accu(lhs) && matches!(rhs.expr, Expr::List(_)) => Some(()),
                    _ => None,
                }
            }
            _ => None,
        }
    };
    if !is_accu(&c.result) || !matches!(c.loop_cond.expr, Expr::Literal(_)) {
        return None;
    }
    let appended = |e: &IdedExpr| -> Option<()> { items_of(e) };
    match &c.loop_step.expr {
        Expr::Call(call) if call.func_name == "_?_:_" && call.target.is_none() => {
            match call.args.as_slice() {
                [guard, step, otherwise] if is_accu(otherwise) => {
                    appended(step)?;
                    let Expr::Call(add) = &step.expr else {
                        return None;
                    };
                    Some((Some(guard), &add.args[1]))
                }
                _ => None,
            }
        }
        Expr::Call(add) => {
            appended(&c.loop_step)?;
            Some((None, &add.args[1]))
        }
        _ => None,
    }
}

/// What the validator checks (see the module docs): returns one message per
/// problem. `field_len` gives the most items a field can hold when iterated
/// (a list field: [`crate::case::MAX_LIST_LEN`]); `longest` is the most items
/// any list can hold (assumed where a length is not known statically);
/// `items` and `milestones` are the plan's counts (`state`, `reached`).
pub(crate) fn check_bounds(
    ast: &IdedExpr,
    field_len: &dyn Fn(&str) -> u64,
    longest: u64,
    items: u64,
    milestones: u64,
) -> Vec<String> {
    let mut w = Worst {
        field_len,
        longest,
        items,
        milestones,
        bound: Vec::new(),
        depth: 0,
        deepest: 0,
    };
    let (_, iterations) = w.walk(ast);
    let mut out = Vec::new();
    if w.deepest > MAX_NESTING {
        out.push(format!(
            "comprehensions are nested {} deep; at most {MAX_NESTING} are allowed",
            w.deepest
        ));
    }
    if iterations > RULE_BUDGET {
        out.push(format!(
            "with every list at its longest this rule would iterate {} times, more than the \
             budget of {RULE_BUDGET} units a rule may cost; avoid nesting comprehensions \
             over long lists",
            fmt_count(iterations)
        ));
    }
    out
}

fn fmt_count(n: u64) -> String {
    if n == u64::MAX {
        "more than 10^19".into()
    } else {
        n.to_string()
    }
}

/// An iterable's worst case: its length and its items' length.
#[derive(Clone, Copy)]
struct Len {
    len: u64,
    item: u64,
}

struct Worst<'a> {
    field_len: &'a dyn Fn(&str) -> u64,
    longest: u64,
    items: u64,
    milestones: u64,
    bound: Vec<(String, Len)>,
    depth: usize,
    deepest: usize,
}

impl Worst<'_> {
    /// The worst-case length of `e`'s value and the iterations evaluating
    /// it takes.
    fn walk(&mut self, e: &IdedExpr) -> (Len, u64) {
        let unknown = Len {
            len: self.longest,
            item: self.longest,
        };
        let scalar = Len { len: 0, item: 0 };
        match &e.expr {
            Expr::Ident(name) => {
                let len = match self.bound.iter().rev().find(|(n, _)| n == name) {
                    Some((_, l)) => *l,
                    None => match name.as_str() {
                        "state" => Len {
                            len: self.items,
                            item: 0,
                        },
                        "reached" => Len {
                            len: self.milestones,
                            item: 0,
                        },
                        _ => Len {
                            len: (self.field_len)(name),
                            item: 2,
                        },
                    },
                };
                (len, 0)
            }
            Expr::Literal(_) => (scalar, 0),
            Expr::List(list) => {
                let mut item = 0;
                let mut iterations = 0u64;
                for el in &list.elements {
                    let (l, i) = self.walk(el);
                    item = item.max(l.len);
                    iterations = iterations.saturating_add(i);
                }
                let len = Len {
                    len: list.elements.len() as u64,
                    item,
                };
                (len, iterations)
            }
            Expr::Map(map) => {
                let mut iterations = 0u64;
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(m) = &entry.expr {
                        iterations = iterations
                            .saturating_add(self.walk(&m.key).1)
                            .saturating_add(self.walk(&m.value).1);
                    }
                }
                (
                    Len {
                        len: map.entries.len() as u64,
                        item: unknown.item,
                    },
                    iterations,
                )
            }
            Expr::Select(s) => {
                let (_, i) = self.walk(&s.operand);
                (if s.test { scalar } else { unknown }, i)
            }
            Expr::Call(call) => {
                let mut iterations = 0u64;
                let mut lens = Vec::new();
                if let Some(t) = &call.target {
                    let (l, i) = self.walk(t);
                    lens.push(l);
                    iterations = iterations.saturating_add(i);
                }
                for a in &call.args {
                    let (l, i) = self.walk(a);
                    lens.push(l);
                    iterations = iterations.saturating_add(i);
                }
                let len = match (call.func_name.as_str(), lens.as_slice()) {
                    ("_+_", [a, b]) => Len {
                        len: a.len.saturating_add(b.len),
                        item: a.item.max(b.item),
                    },
                    ("_?_:_", [_, a, b]) => Len {
                        len: a.len.max(b.len),
                        item: a.item.max(b.item),
                    },
                    ("dyn", [a]) => *a,
                    (
                        "_&&_" | "_||_" | "!_" | "_==_" | "_!=_" | "_<_" | "_<=_" | "_>_" | "_>=_"
                        | "@in" | "size" | "int" | "uint" | "double" | "bool" | "string"
                        | "contains" | "startsWith" | "endsWith",
                        _,
                    ) => scalar,
                    _ => unknown,
                };
                (len, iterations)
            }
            Expr::Comprehension(c) => {
                let (range, mut iterations) = self.walk(&c.iter_range);
                let (init, i) = self.walk(&c.accu_init);
                iterations = iterations.saturating_add(i);
                let before = self.bound.len();
                let item = Len {
                    len: range.item,
                    item: range.item,
                };
                self.bound.push((c.iter_var.clone(), item));
                if let Some(v2) = &c.iter_var2 {
                    self.bound.push((v2.clone(), item));
                }
                // `map` / `filter` yield at most one item per item of the range.
                let accu = Len {
                    len: init.len.saturating_add(range.len),
                    item: unknown.item,
                };
                self.bound.push((c.accu_var.clone(), accu));
                self.depth += 1;
                self.deepest = self.deepest.max(self.depth);
                let body = 1u64
                    .saturating_add(self.walk(&c.loop_cond).1)
                    .saturating_add(self.walk(&c.loop_step).1);
                self.depth -= 1;
                let (_, r) = self.walk(&c.result);
                self.bound.truncate(before);
                iterations = iterations
                    .saturating_add(range.len.saturating_mul(body))
                    .saturating_add(r);
                (accu, iterations)
            }
            Expr::Struct(_) | Expr::Unspecified => (unknown, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Condition, EvalError, Expression, Scope};
    use serde_json::json;

    fn long_list(n: usize) -> serde_json::Value {
        json!({ "tags": (0..n as i64).collect::<Vec<_>>(), "name": "x" })
    }

    #[test]
    fn ordinary_rules_pass() {
        let file = long_list(10_000);
        let scope = Scope::case_file(&file);
        let budget = Budget::new(COMMAND_BUDGET);
        for src in [
            "tags.exists(t, t == 9999)",
            "tags.all(t, t >= 0)",
            "tags.exists_one(t, t == 3)",
            "size(tags.filter(t, t % 2 == 0)) == 5000",
            "tags.map(t, t * 2).exists(t, t == 19998)",
            "name == 'x' && 5 in tags",
        ] {
            let c = Condition::compile(src).unwrap();
            assert_eq!(c.evaluate_within(&scope, &budget), Ok(true), "{src}");
        }
        assert!(budget.spent() > 0 && budget.spent() < COMMAND_BUDGET);
    }

    #[test]
    fn a_nested_comprehension_over_a_long_list_is_refused_before_it_runs() {
        let file = long_list(10_000);
        let scope = Scope::case_file(&file);
        let src = "tags.exists(a, tags.exists(b, a + b == -1))";
        let started = std::time::Instant::now();
        let err = Condition::compile(src)
            .unwrap()
            .evaluate(&scope)
            .unwrap_err();
        // Evaluating it takes tens of seconds; refusing it takes the time to
        // measure the list. Generous, so a slow machine does not fail it.
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        match &err {
            EvalError::BudgetExceeded {
                expression, cost, ..
            } => {
                assert_eq!(expression, src);
                assert!(cost.unwrap_or(u64::MAX) > 100_000_000, "{err}");
            }
            other => panic!("expected BudgetExceeded, got {other:?}"),
        }
        assert_eq!(err.kind(), crate::error::ErrorKind::ResourceExhausted);
        assert!(err.to_string().contains(src), "{err}");
    }

    #[test]
    fn a_list_of_copies_is_refused_before_it_allocates() {
        // 10,000 copies of a 10,000-item list: 10^8 values.
        let file = long_list(10_000);
        let e = Expression::compile("tags.map(t, tags)").unwrap();
        assert!(matches!(
            e.evaluate(&Scope::case_file(&file)),
            Err(EvalError::BudgetExceeded { .. })
        ));
        // The same over a short list runs.
        let file = long_list(10);
        assert_eq!(
            e.evaluate(&Scope::case_file(&file))
                .unwrap()
                .unwrap()
                .as_array()
                .map(Vec::len),
            Some(10)
        );
    }

    #[test]
    fn deep_nesting_is_refused_even_over_short_lists() {
        let file = long_list(2);
        let c = Condition::compile(
            "tags.exists(a, tags.exists(b, tags.exists(c, tags.exists(d, a == d))))",
        )
        .unwrap();
        assert!(matches!(
            c.evaluate(&Scope::case_file(&file)),
            Err(EvalError::BudgetExceeded { cost: None, .. })
        ));
    }

    #[test]
    fn a_command_budget_is_shared_by_its_evaluations() {
        let file = long_list(10_000);
        let scope = Scope::case_file(&file);
        let c = Condition::compile("tags.exists(t, t == -1)").unwrap();
        let budget = Budget::new(COMMAND_BUDGET);
        let mut runs = 0;
        while c.evaluate_within(&scope, &budget).is_ok() {
            runs += 1;
            assert!(runs < 1_000, "the budget never ran out");
        }
        assert!(runs >= 2, "{runs}");
        assert!(budget.remaining() < RULE_BUDGET);
    }

    #[test]
    fn the_bound_is_not_below_the_work_done() {
        // The fixpoint of `map`: the result's size is within the bound.
        let file = long_list(100);
        let shape = measure(&file["tags"]);
        assert_eq!(shape.len, 100);
        let prog = Expression::compile("tags.map(t, [t, t])").unwrap();
        let cost = bound(prog.ast().unwrap(), &|n| (n == "tags").then_some(shape), 0).unwrap();
        let out = prog.evaluate(&Scope::case_file(&file)).unwrap().unwrap();
        assert!(cost >= measure(&out).size, "{cost}");
    }

    #[test]
    fn the_documented_costs_hold() {
        // docs/definition-format.md quotes these two.
        let file = long_list(10_000);
        let shape = measure(&file["tags"]);
        let cost = |src: &str| {
            let c = Condition::compile(src).unwrap();
            bound(
                c.ast().unwrap(),
                &|n| (n == "tags").then_some(shape),
                shape.size,
            )
            .unwrap()
        };
        let once = cost("tags.exists(t, t == 5)");
        let nested = cost("tags.exists(a, tags.exists(b, a == b))");
        assert!((100_000..150_000).contains(&once), "{once}");
        assert!(nested > 1_000_000_000, "{nested}");
    }

    #[test]
    fn the_validator_check_refuses_what_cannot_fit() {
        let lens = |n: &str| if n == "tags" { 10_000 } else { 0 };
        let check = |src: &str| {
            check_bounds(
                Condition::compile(src).unwrap().ast().unwrap(),
                &lens,
                10_000,
                5,
                2,
            )
        };
        assert!(check("tags.exists(t, t == 1)").is_empty());
        assert!(check("[1, 2, 3].exists(x, tags.exists(t, t == x))").is_empty());
        let nested = check("tags.exists(a, tags.exists(b, a == b))");
        assert_eq!(nested.len(), 1);
        assert!(nested[0].contains("100010000"), "{nested:?}");
        let deep = check("[1].exists(a, [1].exists(b, [1].exists(c, [1].exists(d, a == d))))");
        assert_eq!(
            deep,
            ["comprehensions are nested 4 deep; at most 3 are allowed"]
        );
    }
}
