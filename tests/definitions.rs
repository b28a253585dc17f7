//! Case definitions end to end: the bundled definitions, every validation
//! error class with its exact path and message, malformed documents, and CEL
//! evaluation semantics.

use std::path::PathBuf;

use casebook_engine::definition::{CaseDefinition, DefinitionError, PlanItem, ProblemKind};

fn definitions_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/definitions")
}

fn load(name: &str) -> CaseDefinition {
    let path = definitions_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    CaseDefinition::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn burglary_validates() {
    let def = load("burglary.toml");
    assert_eq!(def.key.as_str(), "burglary");
}

#[allow(dead_code)]
fn problems(err: &DefinitionError) -> Vec<(String, ProblemKind, String)> {
    err.problems
        .iter()
        .map(|p| (p.path.clone(), p.kind, p.message.clone()))
        .collect()
}

#[test]
fn missing_person_validates() {
    load("missing-person.toml");
}

#[test]
fn domestic_abuse_validates() {
    load("domestic-abuse.toml");
}

#[test]
fn foi_request_validates() {
    load("foi-request.toml");
}

// ------------------------------------------------------------------ helpers

/// A small valid definition; tests append to its last stage.
const BASE: &str = r#"
key = "test_case"
name = "Test case"
version = 1
retention = { group = "group3" }
roles = ["officer", "supervisor"]

[[fields]]
key = "risk"
type = "enumeration"
values = ["low", "high"]

[[fields]]
key = "age"
type = "integer"

[[fields]]
key = "ward"
type = "text"

[[services]]
name = "gis.locate"
[services.inputs]
point = { type = "text", required = true }
[services.outputs]
ward = { type = "text" }
count = { type = "integer" }

[[stages]]
key = "main"
name = "Main"
autocomplete = true

  [[stages.activities]]
  key = "assess"
  name = "Assess"
  kind = "human_task"
  roles = ["officer"]
  form = [{ field = "risk" }, { field = "age" }]
"#;

fn with(extra: &str) -> String {
    format!("{BASE}\n{extra}")
}

fn expect_err(source: &str) -> DefinitionError {
    match CaseDefinition::from_toml(source) {
        Ok(_) => panic!("expected the definition to be rejected"),
        Err(e) => e,
    }
}

fn only_problem(source: &str) -> (String, ProblemKind, String) {
    let err = expect_err(source);
    let mut all = problems(&err);
    assert_eq!(all.len(), 1, "expected exactly one problem, got:\n{err}");
    all.remove(0)
}

fn p(path: &str, kind: ProblemKind, message: &str) -> (String, ProblemKind, String) {
    (path.to_string(), kind, message.to_string())
}

#[test]
fn base_definition_is_valid() {
    let def = CaseDefinition::from_toml(BASE).expect("valid");
    assert_eq!(def.plan_items().len(), 2);
}

// ------------------------------------------------------------------ malformed documents

#[test]
fn malformed_toml_reports_line_and_column() {
    let err = expect_err("key = \"x\"\nname = \n");
    assert_eq!(err.problems.len(), 1);
    let problem = &err.problems[0];
    assert_eq!(problem.kind, ProblemKind::Syntax);
    assert_eq!(problem.path, "");
    assert_eq!(problem.location.map(|l| l.0), Some(2));
    assert!(err.to_string().contains("line 2, column"), "{err}");
}

#[test]
fn unknown_toml_key_is_a_syntax_problem_with_its_position() {
    let err = expect_err(&BASE.replacen("version = 1", "version = 1\ncolour = \"red\"", 1));
    let problem = &err.problems[0];
    assert_eq!(problem.kind, ProblemKind::Syntax);
    assert!(
        problem.message.starts_with("unknown field `colour`"),
        "{}",
        problem.message
    );
    assert_eq!(problem.location, Some((5, 1)));
}

#[test]
fn malformed_json_reports_line_and_column() {
    let err = CaseDefinition::from_json("{\n  \"key\": \"x\",\n}").unwrap_err();
    let problem = &err.problems[0];
    assert_eq!(problem.kind, ProblemKind::Syntax);
    assert_eq!(problem.location, Some((3, 1)));
    assert_eq!(problem.message, "trailing comma");
}

#[test]
fn json_with_a_missing_field_is_a_syntax_problem() {
    let err = CaseDefinition::from_json(r#"{"key": "x", "name": "X", "version": 1}"#).unwrap_err();
    assert_eq!(err.problems[0].message, "missing field `retention`");
}

// ------------------------------------------------------------------ one test per error class

#[test]
fn unknown_item_reference() {
    let src = with(
        r#"
  [[stages.activities]]
  key = "review"
  name = "Review"
  kind = "human_task"
  roles = ["supervisor"]
  entry = [{ on = [{ completed = "asess" }] }]
"#,
    );
    assert_eq!(
        only_problem(&src),
        p(
            "stages[0].activities[1].entry[0].on[0].completed",
            ProblemKind::UnknownReference,
            "unknown plan item 'asess'"
        )
    );
}

#[test]
fn milestone_referenced_as_completed() {
    let src = with(
        r#"
  [[stages.milestones]]
  key = "assessed"
  name = "Assessed"
  entry = [{ on = [{ completed = "assess" }] }]

  [[stages.milestones]]
  key = "done"
  name = "Done"
  entry = [{ on = [{ completed = "assessed" }] }]
"#,
    );
    assert_eq!(
        only_problem(&src),
        p(
            "stages[0].milestones[1].entry[0].on[0].completed",
            ProblemKind::UnknownReference,
            "'assessed' is a milestone, which is reached, not completed: use reached"
        )
    );
}

#[test]
fn unknown_role_reference() {
    let src = with(
        r#"
  [[stages.activities]]
  key = "review"
  name = "Review"
  kind = "human_task"
  roles = ["inspector"]
"#,
    );
    assert_eq!(
        only_problem(&src),
        p(
            "stages[0].activities[1].roles[0]",
            ProblemKind::UnknownReference,
            "unknown role 'inspector'"
        )
    );
}

#[test]
fn unknown_form_field() {
    let src = with(
        r#"
  [[stages.activities]]
  key = "review"
  name = "Review"
  kind = "human_task"
  roles = ["supervisor"]
  form = [{ field = "outcome" }]
"#,
    );
    assert_eq!(
        only_problem(&src),
        p(
            "stages[0].activities[1].form[0].field",
            ProblemKind::UnknownField,
            "unknown field 'outcome'"
        )
    );
}

#[test]
fn duplicate_keys_across_the_plan() {
    let src = with(
        r#"
  [[stages.milestones]]
  key = "assess"
  name = "Assessed"
"#,
    );
    assert_eq!(
        only_problem(&src),
        p(
            "stages[0].milestones[0].key",
            ProblemKind::Duplicate,
            "duplicate key 'assess' (already used at stages[0].activities[0])"
        )
    );
}

#[test]
fn duplicate_field() {
    let src = BASE.replacen("key = \"age\"", "key = \"risk\"", 1);
    let err = expect_err(&src);
    assert!(
        err.has(
            "fields[1].key",
            "duplicate field 'risk' (first declared at fields[0])"
        ),
        "{err}"
    );
}

#[test]
fn cel_that_does_not_compile() {
    let src = with(
        r#"
  [[stages.activities]]
  key = "review"
  name = "Review"
  kind = "human_task"
  roles = ["supervisor"]
  entry = [{ if = "age >" }]
"#,
    );
    let (path, kind, message) = only_problem(&src);
    assert_eq!(path, "stages[0].activities[1].entry[0].if");
    assert_eq!(kind, ProblemKind::InvalidCel);
    assert!(
        message.starts_with("invalid CEL at column 6: Syntax error"),
        "{message}"
    );
}

#[test]
fn cel_that_reads_an_unknown_field() {
    let src = with(
        r#"
  [[stages.activities]]
  key = "review"
  name = "Review"
  kind = "human_task"
  roles = ["supervisor"]
  entry = [{ if = "risky == 'high'" }]
"#,
    );
    assert_eq!(
        only_problem(&src),
        p(
            "stages[0].activities[1].entry[0].if",
            ProblemKind::UnknownField,
            "unknown field 'risky'"
        )
    );
}

#[test]
fn comparing_an_integer_field_with_a_string() {
    let src = with(
        r#"
  [[stages.activities]]
  key = "review"
  name = "Review"
  kind = "human_task"
  roles = ["supervisor"]
  entry = [{ on = [{ completed = "assess" }], if = "age > '17'" }]
"#,
    );
    assert_eq!(
        only_problem(&src),
        p(
            "stages[0].activities[1].entry[0].if",
            ProblemKind::TypeMismatch,
            "type mismatch: cannot compare integer field 'age' with a string"
        )
    );
}

#[test]
fn enumeration_value_not_allowed() {
    let src = with(
        r#"
  [[stages.activities]]
  key = "review"
  name = "Review"
  kind = "human_task"
  roles = ["supervisor"]
  entry = [{ if = "risk == 'medium'" }]
"#,
    );
    assert_eq!(
        only_problem(&src),
        p(
            "stages[0].activities[1].entry[0].if",
            ProblemKind::TypeMismatch,
            "'medium' is not a value of enumeration field 'risk' (allowed: low, high)"
        )
    );
}

#[test]
fn output_mapping_into_a_field_of_another_type() {
    let src = with(
        r#"
  [[stages.activities]]
  key = "locate"
  name = "Locate"
  kind = "service_task"
  service = "gis.locate"
  input = { point = "ward" }
  output = { count = "ward" }
"#,
    );
    assert_eq!(
        only_problem(&src),
        p(
            "stages[0].activities[1].output.count",
            ProblemKind::TypeMismatch,
            "type mismatch: output 'count' of service 'gis.locate' is integer but field 'ward' is text"
        )
    );
}

#[test]
fn input_mapping_of_the_wrong_type_and_missing_required_input() {
    let src = with(
        r#"
  [[stages.activities]]
  key = "locate"
  name = "Locate"
  kind = "service_task"
  service = "gis.locate"
  input = { pointt = "age" }
"#,
    );
    let err = expect_err(&src);
    assert_eq!(
        problems(&err),
        vec![
            p(
                "stages[0].activities[1].input.pointt",
                ProblemKind::UnknownReference,
                "service 'gis.locate' has no input 'pointt'"
            ),
            p(
                "stages[0].activities[1].input",
                ProblemKind::Invalid,
                "required input 'point' of service 'gis.locate' is not mapped"
            ),
        ]
    );
    let src = with(
        r#"
  [[stages.activities]]
  key = "locate"
  name = "Locate"
  kind = "service_task"
  service = "gis.locate"
  input = { point = "age" }
"#,
    );
    assert_eq!(
        only_problem(&src),
        p(
            "stages[0].activities[1].input.point",
            ProblemKind::TypeMismatch,
            "type mismatch: the expression yields integer field 'age' but input 'point' of service 'gis.locate' is a text"
        )
    );
}

#[test]
fn invalid_identifiers() {
    let src = with(
        r#"
  [[stages.activities]]
  key = "Review-Case"
  name = "Review"
  kind = "human_task"
  roles = ["supervisor"]
"#,
    );
    assert_eq!(
        only_problem(&src),
        p(
            "stages[0].activities[1].key",
            ProblemKind::InvalidIdentifier,
            "'Review-Case' is not a valid identifier: use a lower-case letter followed by lower-case letters, digits or '_' (at most 64)"
        )
    );
    let src = BASE.replacen("key = \"ward\"", "key = \"state\"", 1);
    let err = expect_err(&src);
    assert!(
        err.has(
            "fields[2].key",
            "'state' is reserved in conditions; choose another name"
        ),
        "{err}"
    );
}

#[test]
fn sentry_on_its_own_item() {
    let src = with(
        r#"
  [[stages.activities]]
  key = "review"
  name = "Review"
  kind = "human_task"
  roles = ["supervisor"]
  exit = [{ on = [{ completed = "review" }] }]
"#,
    );
    assert_eq!(
        only_problem(&src),
        p(
            "stages[0].activities[1].exit[0].on[0].completed",
            ProblemKind::SelfReference,
            "a sentry cannot listen to its own item 'review'"
        )
    );
}

#[test]
fn discretionary_item_with_entry_criteria_is_valid() {
    // A planned discretionary item waits for its sentry like any item.
    let src = with(
        r#"
  [[stages.activities]]
  key = "forensics"
  name = "Forensics"
  kind = "human_task"
  roles = ["officer"]
  discretionary = true
  planners = ["supervisor"]
  entry = [{ on = [{ completed = "assess" }] }]
"#,
    );
    CaseDefinition::from_toml(&src).expect("valid");
}

#[test]
fn repetition_rules_need_a_repeatable_item_and_sound_limits() {
    let src = with(
        r#"
  [[stages.activities]]
  key = "recontact"
  name = "Re-attempt contact"
  kind = "human_task"
  roles = ["officer"]
  repeat_while = "repetition < 5"
  max_instances = 5
"#,
    );
    let err = expect_err(&src);
    let all = problems(&err);
    assert_eq!(
        all,
        vec![
            p(
                "stages[0].activities[1].repeat_while",
                ProblemKind::Invalid,
                "only a repeatable item (repeatable = true) has a repetition rule"
            ),
            p(
                "stages[0].activities[1].max_instances",
                ProblemKind::Invalid,
                "only a repeatable item (repeatable = true) has max_instances"
            ),
        ],
        "{err}"
    );
    let src = with(
        r#"
  [[stages.activities]]
  key = "recontact"
  name = "Re-attempt contact"
  kind = "human_task"
  roles = ["officer"]
  repeatable = true
  repeat_while = "repetition < 'five'"
  max_concurrent = 0
  entry = [{ on = [{ completed = "assess" }] }]
"#,
    );
    let err = expect_err(&src);
    let all = problems(&err);
    assert_eq!(all.len(), 2, "{err}");
    assert_eq!(all[0].0, "stages[0].activities[1].repeat_while", "{err}");
    assert_eq!(
        all[1],
        p(
            "stages[0].activities[1].max_concurrent",
            ProblemKind::Invalid,
            "max_concurrent must be at least 1"
        )
    );
    // The count is an integer the rule may compare with the case file.
    let src = with(
        r#"
  [[stages.activities]]
  key = "recontact"
  name = "Re-attempt contact"
  kind = "human_task"
  roles = ["officer"]
  repeatable = true
  repeat_while = "repetition < age"
"#,
    );
    CaseDefinition::from_toml(&src).expect("valid");
}

#[test]
fn a_required_or_manual_rule_replaces_the_flag_and_is_checked() {
    let src = with(
        r#"
  [[stages.activities]]
  key = "marac"
  name = "MARAC referral"
  kind = "human_task"
  roles = ["officer"]
  required = true
  required_if = "risk == 'high'"
  manual_activation_if = "no_such_field > 1"
"#,
    );
    let err = expect_err(&src);
    let all = problems(&err);
    assert_eq!(all.len(), 2, "{err}");
    assert_eq!(
        all[0],
        p(
            "stages[0].activities[1].required_if",
            ProblemKind::Invalid,
            "set either required = true or required_if, not both"
        )
    );
    assert_eq!(
        all[1].0, "stages[0].activities[1].manual_activation_if",
        "{err}"
    );
}

#[test]
fn applicability_on_a_non_discretionary_item() {
    let src = with(
        r#"
  [[stages.activities]]
  key = "forensics"
  name = "Forensics"
  kind = "human_task"
  roles = ["officer"]
  applicability = "risk == 'high'"
"#,
    );
    assert_eq!(
        only_problem(&src),
        p(
            "stages[0].activities[1].applicability",
            ProblemKind::Invalid,
            "only a discretionary item has an applicability rule"
        )
    );
}

#[test]
fn entry_on_the_enclosing_stage_completing_can_never_fire() {
    let src = with(
        r#"
  [[stages.activities]]
  key = "wrap_up"
  name = "Wrap up"
  kind = "automatic"
  entry = [{ on = [{ completed = "main" }] }]
"#,
    );
    assert_eq!(
        only_problem(&src),
        p(
            "stages[0].activities[1].entry[0].on[0].completed",
            ProblemKind::Invalid,
            "'main' encloses this item, so its completion can never start it"
        )
    );
}

#[test]
fn deadline_problems() {
    let src = with(
        r#"
    [[stages.activities.deadlines]]
    key = "both"
    within = "PT1H"
    working_days = 2
    escalate = [{ notify = ["supervisor"] }]

    [[stages.activities.deadlines]]
    key = "monthly"
    within = "P1M"
    escalate = [{ start = "assess" }]

    [[stages.activities.deadlines]]
    key = "bad"
    within = "an hour"
    escalate = []
"#,
    );
    let err = expect_err(&src);
    assert_eq!(
        problems(&err),
        vec![
            p(
                "stages[0].activities[0].deadlines[0]",
                ProblemKind::Invalid,
                "give either 'within' or 'working_days', not both"
            ),
            p(
                "stages[0].activities[0].deadlines[1].within",
                ProblemKind::Invalid,
                "'P1M' has years or months, whose length varies: use days or working_days"
            ),
            p(
                "stages[0].activities[0].deadlines[1].escalate[0].start",
                ProblemKind::SelfReference,
                "a deadline cannot start its own item 'assess'"
            ),
            p(
                "stages[0].activities[0].deadlines[2].within",
                ProblemKind::Invalid,
                "'an hour' is not a period: use ISO 8601 (e.g. 'PT1H', 'P5D', 'P6Y') or a number with s, m, h, d or w (e.g. '48h')"
            ),
            p(
                "stages[0].activities[0].deadlines[2].escalate",
                ProblemKind::Invalid,
                "a deadline needs at least one escalation"
            ),
        ]
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let src = with(
        r#"
  [[stages.activities]]
  key = "review"
  name = ""
  kind = "human_task"
  entry = [{ if = "risky" }, { on = [{ reached = "nowhere" }] }]
  exit = [{}]
"#,
    );
    let err = expect_err(&src);
    assert_eq!(
        problems(&err),
        vec![
            p(
                "stages[0].activities[1].name",
                ProblemKind::Invalid,
                "must not be empty"
            ),
            p(
                "stages[0].activities[1].roles",
                ProblemKind::Invalid,
                "a human task needs at least one candidate role"
            ),
            p(
                "stages[0].activities[1].entry[0].if",
                ProblemKind::UnknownField,
                "unknown field 'risky'"
            ),
            p(
                "stages[0].activities[1].entry[1].on[0].reached",
                ProblemKind::UnknownReference,
                "unknown plan item 'nowhere'"
            ),
            p(
                "stages[0].activities[1].exit[0]",
                ProblemKind::Invalid,
                "a sentry needs at least one 'on' part or an 'if' condition"
            ),
        ]
    );
    let text = err.to_string();
    assert!(
        text.starts_with("invalid case definition (5 problems):"),
        "{text}"
    );
    assert!(
        text.contains("\n  - stages[0].activities[1].entry[0].if: unknown field 'risky'"),
        "{text}"
    );
}

#[test]
fn field_classification_below_the_case_default() {
    let src = BASE
        .replacen(
            "retention = ",
            "default_classification = \"OFFICIAL-SENSITIVE\"\nretention = ",
            1,
        )
        .replacen(
            "type = \"integer\"",
            "type = \"integer\"\nclassification = \"OFFICIAL\"",
            1,
        );
    assert_eq!(
        only_problem(&src),
        p(
            "fields[1].classification",
            ProblemKind::Invalid,
            "OFFICIAL is below the case's default classification OFFICIAL-SENSITIVE; a field can only raise it"
        )
    );
}

// ------------------------------------------------------------------ model properties

fn bundled() -> Vec<(String, CaseDefinition)> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(definitions_dir()).expect("examples/definitions exists");
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((name.clone(), load(&name)));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_bundled_definition_validates() {
    let names: Vec<String> = bundled().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "burglary.toml",
            "domestic-abuse.toml",
            "foi-request.toml",
            "missing-person.toml"
        ]
    );
}

#[test]
fn bundled_definitions_round_trip_through_message_pack_and_json() {
    for (name, def) in bundled() {
        let bytes = def.to_msgpack().expect("encode");
        let back = CaseDefinition::from_msgpack(&bytes).expect("decode");
        assert_eq!(back, def, "{name}");
        assert_eq!(back.fingerprint(), def.fingerprint(), "{name}");
        let json = def.canonical_json();
        let from_json =
            CaseDefinition::from_json(&json).expect("canonical JSON is a valid definition");
        assert_eq!(from_json, def, "{name}");
    }
}

#[test]
fn fingerprint_ignores_layout_but_not_content() {
    let a = CaseDefinition::from_toml(BASE).expect("valid");
    let reformatted = format!(
        "# a comment\n{}",
        BASE.replace("autocomplete = true", "autocomplete   =   true # same")
    );
    let b = CaseDefinition::from_toml(&reformatted).expect("valid");
    assert_eq!(a.fingerprint(), b.fingerprint());
    let changed =
        CaseDefinition::from_toml(&BASE.replacen("version = 1", "version = 2", 1)).expect("valid");
    assert_ne!(a.fingerprint(), changed.fingerprint());
    assert_eq!(a.fingerprint().to_string().len(), 64);
}

#[test]
fn plan_navigation_finds_items_and_parents() {
    let def = load("burglary.toml");
    let entry = def.item("forensic_examination").expect("declared");
    assert_eq!(entry.parent.map(|k| k.as_str()), Some("investigation"));
    assert!(entry.item.discretionary());
    assert_eq!(entry.path, "stages[2].activities[2]");
    let top: Vec<&str> = def
        .children(None)
        .iter()
        .map(|e| e.item.key().as_str())
        .collect();
    assert_eq!(
        top,
        ["report", "attendance", "investigation", "victim_updates"]
    );
}

// ------------------------------------------------------------------ CEL semantics

use casebook_engine::rules::serde_json::json;
use casebook_engine::rules::{Condition, EvalError, ItemState, PlanState, Scope};

#[test]
fn condition_over_an_absent_field_is_false() {
    let cond = Condition::compile("grade == 'immediate'").expect("compiles");
    assert_eq!(cond.evaluate(&Scope::case_file(&json!({}))), Ok(false));
    assert_eq!(
        cond.evaluate(&Scope::case_file(&json!({"grade": null}))),
        Ok(false)
    );
    assert_eq!(
        cond.evaluate(&Scope::case_file(&json!({"grade": "immediate"}))),
        Ok(true)
    );
    let negated = Condition::compile("grade != 'immediate'").expect("compiles");
    assert_eq!(negated.evaluate(&Scope::case_file(&json!({}))), Ok(false));
}

#[test]
fn runtime_type_errors_are_typed() {
    let cond = Condition::compile("age > 17").expect("compiles");
    let err = cond
        .evaluate(&Scope::case_file(&json!({"age": "seventeen"})))
        .unwrap_err();
    assert_eq!(
        err,
        EvalError::TypeMismatch {
            expression: "age > 17".into(),
            function: "_>_".into(),
            argument_types: vec!["string".into(), "int".into()],
        }
    );
    let not_bool = Condition::compile("age + 1").expect("compiles");
    assert!(matches!(
        not_bool.evaluate(&Scope::case_file(&json!({"age": 1}))),
        Err(EvalError::NotABoolean { got, .. }) if got == "int"
    ));
}

#[test]
fn bundled_conditions_evaluate_against_a_case_file_and_plan() {
    let def = load("missing-person.toml");
    let stage = def.item("high_risk_response").expect("declared");
    let by_age = stage.item.entry()[1]
        .condition
        .as_ref()
        .expect("an if-part");
    let file = json!({"age": 15, "vulnerabilities": ["child_exploitation"]});
    assert_eq!(by_age.evaluate(&Scope::case_file(&file)), Ok(true));
    let file = json!({"age": 15});
    assert_eq!(by_age.evaluate(&Scope::case_file(&file)), Ok(false));

    let plan_cond =
        Condition::compile("state.record_report == 'completed' && 'risk_assessed' in reached")
            .expect("compiles");
    let mut plan = PlanState::default();
    plan.states
        .insert("record_report".into(), ItemState::Completed);
    let file = json!({});
    assert_eq!(
        plan_cond.evaluate(&Scope::case_file(&file).with_plan(&plan)),
        Ok(false)
    );
    plan.reached.insert("risk_assessed".into());
    assert_eq!(
        plan_cond.evaluate(&Scope::case_file(&file).with_plan(&plan)),
        Ok(true)
    );
}

#[test]
fn automatic_step_expression_computes_a_value() {
    let def = load("domestic-abuse.toml");
    let entry = def.item("grade_risk").expect("declared");
    let casebook_engine::definition::PlanItem::Activity(activity) = entry.item else {
        panic!("grade_risk is an activity");
    };
    let expr = activity.set.values().next().expect("one assignment");
    let high = json!({"dash_score": 15});
    assert_eq!(
        expr.evaluate(&Scope::case_file(&high)),
        Ok(Some(json!("high")))
    );
    let medium = json!({"dash_score": 11, "professional_judgement_high": false});
    assert_eq!(
        expr.evaluate(&Scope::case_file(&medium)),
        Ok(Some(json!("medium")))
    );
    let judged = json!({"dash_score": 3, "professional_judgement_high": true});
    assert_eq!(
        expr.evaluate(&Scope::case_file(&judged)),
        Ok(Some(json!("high")))
    );
}

// ------------------------------------------------------------------ teams

#[test]
fn human_tasks_go_to_their_own_team_else_the_definitions() {
    let def = load("burglary.toml");
    let team = |key: &str| {
        let Some(PlanItem::Activity(a)) = def.item(key).map(|e| e.item) else {
            panic!("{key} is an activity");
        };
        def.team_of(a).map(|t| t.as_str().to_string())
    };
    assert_eq!(def.team.as_ref().map(|t| t.as_str()), Some("cid"));
    assert_eq!(team("investigate").as_deref(), Some("cid"));
    assert_eq!(team("record_report").as_deref(), Some("control_room"));
    assert_eq!(team("victim_update").as_deref(), Some("victim_care"));
    let mp = load("missing-person.toml");
    assert_eq!(
        mp.team.as_ref().map(|t| t.as_str()),
        Some("missing_persons")
    );

    let plain = CaseDefinition::from_toml(BASE).expect("valid");
    let Some(PlanItem::Activity(assess)) = plain.item("assess").map(|e| e.item) else {
        panic!("assess is an activity");
    };
    assert_eq!(plain.team_of(assess), None);
}

#[test]
fn teams_are_identifiers_and_only_on_human_tasks() {
    let bad_top = BASE.replacen("version = 1", "version = 1\nteam = \"Major Crime\"", 1);
    let (path, kind, message) = only_problem(&bad_top);
    assert_eq!(path, "team");
    assert_eq!(kind, ProblemKind::InvalidIdentifier);
    assert!(message.contains("'Major Crime'"), "{message}");

    let bad_task = BASE.replacen(
        "roles = [\"officer\"]\n",
        "roles = [\"officer\"]\n  team = \"cid-1\"\n",
        1,
    );
    assert_eq!(
        only_problem(&bad_task).0,
        "stages[0].activities[0].team".to_string()
    );

    let on_service = with(
        r#"
  [[stages.activities]]
  key = "locate"
  name = "Locate"
  kind = "service_task"
  service = "gis.locate"
  input = { point = "ward" }
  team = "cid"
"#,
    );
    assert_eq!(
        only_problem(&on_service),
        p(
            "stages[0].activities[1].team",
            ProblemKind::Invalid,
            "only a human task goes to a team's work queue"
        )
    );
}

#[test]
fn teams_leave_older_definitions_fingerprints_alone_and_round_trip() {
    let plain = CaseDefinition::from_toml(BASE).expect("valid");
    assert!(!plain.canonical_json().contains("team"));
    let with_team =
        CaseDefinition::from_toml(&BASE.replacen("version = 1", "version = 1\nteam = \"cid\"", 1))
            .expect("valid");
    assert_ne!(plain.fingerprint(), with_team.fingerprint());
    for def in [&plain, &with_team] {
        let named = def.to_msgpack().expect("encodes");
        assert_eq!(&CaseDefinition::from_msgpack(&named).expect("decodes"), def);
    }
}

// ------------------------------------------------------------------ text search

#[test]
fn text_search_is_for_fields_with_words() {
    let marked = |field: &str| {
        BASE.replacen(
            &format!("key = \"{field}\"\n"),
            &format!("key = \"{field}\"\nsearch = \"text\"\n"),
            1,
        )
    };
    let def = CaseDefinition::from_toml(&marked("ward")).expect("a text field may be searchable");
    let searchable: Vec<&str> = def
        .fields
        .iter()
        .filter(|f| f.text_searchable())
        .map(|f| f.key.as_str())
        .collect();
    assert_eq!(searchable, ["ward"]);
    assert!(
        CaseDefinition::from_toml(&marked("risk")).is_ok(),
        "enumerations have words"
    );
    assert_eq!(
        only_problem(&marked("age")),
        p(
            "fields[1].search",
            ProblemKind::Invalid,
            "text search needs words: use it on a text or enumeration field (or a list of them), not integer"
        )
    );
    let list = |element: &str| {
        with(&format!(
            "[[fields]]\nkey = \"aliases\"\ntype = \"list\"\nelement = \"{element}\"\nsearch = \"text\"\n"
        ))
    };
    let aliases = CaseDefinition::from_toml(&list("text")).expect("a list of text has words");
    assert!(aliases
        .field("aliases")
        .expect("declared")
        .text_searchable());
    assert_eq!(only_problem(&list("integer")).0, "fields[3].search");
    let (_, kind, _) = only_problem(&BASE.replacen(
        "key = \"ward\"\n",
        "key = \"ward\"\nsearch = \"fuzzy\"\n",
        1,
    ));
    assert_eq!(kind, ProblemKind::Syntax);
    // Absent, it is not part of the canonical form (older fingerprints hold).
    let plain = CaseDefinition::from_toml(BASE).expect("valid");
    assert!(!plain.canonical_json().contains("search"));
    assert_ne!(plain.fingerprint(), def.fingerprint());
    assert_eq!(
        CaseDefinition::from_msgpack(&def.to_msgpack().expect("encodes")).expect("decodes"),
        def
    );
}

// ------------------------------------------------------------------ subjects (issue 22)

const SUBJECT_FIELDS: &str = r#"
[[fields]]
key = "suspect_ref"
type = "person"

[[fields]]
key = "suspect_dob"
type = "date"

[[fields]]
key = "suspect_name"
type = "text"
"#;

#[test]
fn subjects_and_retention_classes_leave_older_fingerprints_alone_and_round_trip() {
    let plain = CaseDefinition::from_toml(BASE).expect("valid");
    let json = plain.canonical_json();
    assert!(
        !json.contains("subjects") && !json.contains("\"class\""),
        "{json}"
    );
    for (name, source) in [
        (
            "burglary",
            include_str!("../examples/definitions/burglary.toml"),
        ),
        (
            "missing-person",
            include_str!("../examples/definitions/missing-person.toml"),
        ),
    ] {
        let def = CaseDefinition::from_toml(source).expect("bundled definitions stay valid");
        let json = def.canonical_json();
        assert!(
            !json.contains("subjects") && !json.contains("\"class\""),
            "{name}"
        );
    }
    let marked = CaseDefinition::from_toml(&with(&format!(
        "{SUBJECT_FIELDS}\n[[subjects]]\nkey = \"suspect\"\nid = \"suspect_ref\"\n\
         date_of_birth = \"suspect_dob\"\nfields = [\"suspect_name\"]\ncontact = true\n"
    )))
    .expect("valid");
    assert_eq!(marked.subjects.len(), 1);
    assert_eq!(
        marked.subject_of("suspect_name").map(|s| s.key.as_str()),
        Some("suspect")
    );
    assert!(marked.subject_of("ward").is_none());
    assert_eq!(marked.retention.class_key(), "mopi_group_3");
    let classed = CaseDefinition::from_toml(&BASE.replacen(
        "retention = { group = \"group3\" }",
        "retention = { group = \"group3\", class = \"undetected\" }",
        1,
    ))
    .expect("valid");
    assert_eq!(classed.retention.class_key(), "undetected");
    assert_ne!(plain.fingerprint(), classed.fingerprint());
    for def in [&plain, &marked, &classed] {
        let stored = def.to_msgpack().expect("encodes");
        assert_eq!(
            &CaseDefinition::from_msgpack(&stored).expect("decodes"),
            def
        );
    }
}

#[test]
fn subjects_name_fields_of_the_right_types_each_owned_once() {
    let base = with(SUBJECT_FIELDS);
    let subject = |body: &str| format!("{base}\n[[subjects]]\nkey = \"suspect\"\n{body}\n");
    assert_eq!(
        only_problem(&subject("id = \"nobody\"")),
        p(
            "subjects[0].id",
            ProblemKind::UnknownField,
            "unknown field 'nobody'"
        )
    );
    assert_eq!(
        only_problem(&subject("id = \"age\"")),
        p(
            "subjects[0].id",
            ProblemKind::TypeMismatch,
            "'age' is a integer field; use a person or text field"
        )
    );
    assert_eq!(
        only_problem(&subject(
            "id = \"suspect_ref\"\ndate_of_birth = \"suspect_name\""
        ))
        .0,
        "subjects[0].date_of_birth"
    );
    assert_eq!(
        only_problem(&subject("id = \"suspect_ref\"\nfields = [\"suspect_ref\"]")),
        p(
            "subjects[0].fields[0]",
            ProblemKind::Duplicate,
            "field 'suspect_ref' already holds personal data of subjects[0]; a field belongs to one subject"
        )
    );
    let two = format!(
        "{}\n[[subjects]]\nkey = \"suspect\"\nid = \"suspect_name\"\n",
        subject("id = \"suspect_ref\"")
    );
    let all = problems(&expect_err(&two));
    let paths: Vec<&str> = all.iter().map(|(path, _, _)| path.as_str()).collect();
    assert_eq!(paths, ["subjects[1].key"], "{all:?}");
    assert_eq!(
        only_problem(&BASE.replacen(
            "retention = { group = \"group3\" }",
            "retention = { group = \"group3\", class = \"Not A Key\" }",
            1,
        ))
        .0,
        "retention.class"
    );
}

#[test]
fn a_wait_step_needs_one_sensible_period_and_a_bad_one_names_the_step() {
    let step = |wait: &str| {
        with(&format!(
            r#"
  [[stages.activities]]
  key = "cooling_off"
  name = "Cooling off"
  kind = "wait"
  {wait}
"#
        ))
    };
    assert!(CaseDefinition::from_toml(&step("wait = { working_days = 5 }")).is_ok());
    assert!(CaseDefinition::from_toml(&step("wait = { within = \"PT48H\" }")).is_ok());
    let path = "stages[0].activities[1].wait";
    for (wait, at, message) in [
        (
            "wait = { working_days = 0 }",
            format!("{path}.working_days"),
            "wait step 'cooling_off': working_days must be from 1 to 2610 (about ten years), not 0",
        ),
        (
            "wait = { working_days = 4000000000 }",
            format!("{path}.working_days"),
            "wait step 'cooling_off': working_days must be from 1 to 2610 (about ten years), not 4000000000",
        ),
        (
            "wait = { within = \"PT0S\" }",
            format!("{path}.within"),
            "'PT0S' is an empty period",
        ),
        (
            "wait = { within = \"P40000D\" }",
            format!("{path}.within"),
            "wait step 'cooling_off': 'P40000D' must be longer than nothing and at most 3660 days",
        ),
        (
            "",
            path.to_string(),
            "wait step 'cooling_off' needs a wait, e.g. wait = { working_days = 5 }",
        ),
        (
            "wait = {}",
            path.to_string(),
            "wait step 'cooling_off' needs 'within' or 'working_days'",
        ),
    ] {
        assert_eq!(
            only_problem(&step(wait)),
            p(&at, ProblemKind::Invalid, message),
            "{wait}"
        );
    }
    // Only a wait step waits.
    let (at, _, message) = only_problem(&with(
        r#"
  [[stages.activities]]
  key = "check"
  name = "Check"
  kind = "human_task"
  roles = ["officer"]
  wait = { working_days = 1 }
"#,
    ));
    assert_eq!(at, "stages[0].activities[1].wait");
    assert_eq!(message, "only a wait step (kind = \"wait\") waits");
}
