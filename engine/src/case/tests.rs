//! Specifications of the case runtime: one test per rule of
//! `docs/case-semantics.md`, security, replay and property tests.

use serde_json::json;

use super::testing::{complete, open, start, update, who, Given, NOW};
use super::*;
use crate::definition::{FieldKey, ItemKey, RoleKey};
use crate::log::codec::DomainEvent;
use crate::log::{ActorId, Metadata, Source, TenantId};
use crate::rules::ItemState;
use crate::security::Classification;

pub(super) const HEADER: &str = r#"
key = "t"
name = "Test"
version = 1
[retention]
group = "group3"
[permissions]
open = ["w"]
update_case_file = ["w"]
add_discretionary = ["w"]
add_note = ["w"]
suspend = ["w"]
resume = ["w"]
close = ["w"]
reopen = ["w"]
link_entity = ["w"]
"#;

fn given(body: &str) -> Given {
    Given::definition(&format!("autocomplete = true\n{HEADER}\n{body}"), &["w"])
}

fn given_top(top: &str, body: &str) -> Given {
    Given::definition(
        &format!("autocomplete = true\n{top}\n{HEADER}\n{body}"),
        &["w"],
    )
}

fn given_no_autocomplete(body: &str) -> Given {
    Given::definition(&format!("{HEADER}\n{body}"), &["w"])
}

const FLAG: &str = r#"
[[fields]]
key = "flag"
type = "boolean"
[[fields]]
key = "note"
type = "text"
[[fields]]
key = "count"
type = "integer"
"#;

// ------------------------------------------------------------------ entry

#[test]
fn an_item_without_entry_criteria_is_entered_when_its_stage_is_active() {
    given(&format!(
        r#"{FLAG}
[[activities]]
key = "a"
name = "A"
kind = "human_task"
roles = ["w"]
"#
    ))
    .when(open(json!({})))
    .then(&["case opened", "created a#1", "activated a#1"]);
}

#[test]
fn an_item_with_entry_criteria_waits_in_available() {
    let g = given(&format!(
        r#"{FLAG}
[[activities]]
key = "a"
name = "A"
kind = "human_task"
roles = ["w"]
[[activities]]
key = "b"
name = "B"
kind = "human_task"
roles = ["w"]
entry = [{{ on = [{{ completed = "a" }}] }}]
"#
    ));
    g.when(open(json!({})))
        .then(&["case opened", "created a#1", "activated a#1", "created b#2"]);
    g.opened(json!({}))
        .when(complete("a", json!({})))
        .then(&["completed a#1", "activated b#2"]);
}

#[test]
fn children_of_an_inactive_stage_do_not_exist_and_cannot_be_acted_on() {
    let g = given(&format!(
        r#"{FLAG}
[[activities]]
key = "a"
name = "A"
kind = "human_task"
roles = ["w"]
[[stages]]
key = "s"
name = "S"
entry = [{{ on = [{{ completed = "a" }}] }}]
  [[stages.activities]]
  key = "x"
  name = "X"
  kind = "human_task"
  roles = ["w"]
"#
    ))
    .opened(json!({}));
    g.when(complete("x", json!({})))
        .then_error(CaseError::ItemNotInPlan { item: "x".into() });
    g.when(complete("a", json!({}))).then(&[
        "completed a#1",
        "activated s#2",
        "created x#3",
        "activated x#3",
    ]);
}

#[test]
fn manual_activation_enables_and_a_person_starts_it() {
    let g = given(&format!(
        r#"{FLAG}
[[activities]]
key = "m"
name = "M"
kind = "human_task"
roles = ["w"]
manual_activation = true
required = true
"#
    ))
    .opened(json!({}));
    assert_eq!(g.state().state_of("m"), Some(ItemState::Enabled));
    g.when(complete("m", json!({})))
        .then_error(CaseError::IllegalTransition {
            item: "m".into(),
            from: ItemState::Enabled,
            action: "complete".into(),
        });
    let g = g.when(start("m")).and();
    g.when(CaseCommand::Disable { item: "m".into() })
        .then_error(CaseError::IllegalTransition {
            item: "m".into(),
            from: ItemState::Active,
            action: "disable".into(),
        });
    g.when(complete("m", json!({})))
        .then(&["completed m#1", "case completed"]);
}

#[test]
fn a_disabled_item_counts_as_terminal() {
    given(&format!(
        r#"{FLAG}
[[activities]]
key = "m"
name = "M"
kind = "human_task"
roles = ["w"]
manual_activation = true
required = true
[[activities]]
key = "n"
name = "N"
kind = "human_task"
roles = ["w"]
"#
    ))
    .opened(json!({}))
    .command(complete("n", json!({})))
    .when(CaseCommand::Disable { item: "m".into() })
    .then(&["disabled m#1", "case completed"]);
}

// ------------------------------------------------------------------ sentries

fn latching() -> Given {
    given(&format!(
        r#"{FLAG}
[[activities]]
key = "a"
name = "A"
kind = "human_task"
roles = ["w"]
[[activities]]
key = "b"
name = "B"
kind = "human_task"
roles = ["w"]
required = true
entry = [{{ on = [{{ completed = "a" }}], if = "flag == true" }}]
"#
    ))
}

#[test]
fn on_parts_latch_and_the_if_part_is_re_evaluated_after_a_case_file_change() {
    // The flag is absent: the condition is false, not an error.
    let g = latching()
        .opened(json!({}))
        .when(complete("a", json!({})))
        .and();
    assert_eq!(g.state().state_of("b"), Some(ItemState::Available));
    g.when(update(json!({ "flag": false })))
        .then(&["updated flag"]);
    g.command(update(json!({ "flag": false })))
        .when(update(json!({ "flag": true })))
        .then(&["updated flag", "activated b#2"]);
}

#[test]
fn if_parts_never_latch() {
    // The condition was true once, before the on-part occurred; it is false
    // when the on-part occurs, so the sentry does not fire.
    let g = latching()
        .opened(json!({}))
        .command(update(json!({ "flag": true })))
        .command(update(json!({ "flag": false })));
    g.when(complete("a", json!({}))).then(&["completed a#1"]);
}

#[test]
fn on_parts_in_one_sentry_are_anded_and_criteria_are_ored() {
    let g = given(&format!(
        r#"{FLAG}
[[activities]]
key = "a"
name = "A"
kind = "human_task"
roles = ["w"]
[[activities]]
key = "b"
name = "B"
kind = "human_task"
roles = ["w"]
[[activities]]
key = "both"
name = "Both"
kind = "human_task"
roles = ["w"]
entry = [{{ on = [{{ completed = "a" }}, {{ completed = "b" }}] }}]
[[activities]]
key = "either"
name = "Either"
kind = "human_task"
roles = ["w"]
entry = [{{ on = [{{ completed = "a" }}] }}, {{ on = [{{ completed = "b" }}] }}]
"#
    ))
    .opened(json!({}));
    let g = g.when(complete("a", json!({}))).and();
    assert_eq!(g.state().state_of("both"), Some(ItemState::Available));
    assert_eq!(g.state().state_of("either"), Some(ItemState::Active));
    g.when(complete("b", json!({})))
        .then_includes(&["completed b#2", "activated both#3"]);
}

#[test]
fn an_if_only_sentry_is_evaluated_when_its_item_is_created() {
    let g = given(&format!(
        r#"{FLAG}
[[activities]]
key = "c"
name = "C"
kind = "human_task"
roles = ["w"]
required = true
entry = [{{ if = "flag == true" }}]
"#
    ));
    g.when(open(json!({ "flag": true })))
        .then(&["case opened", "created c#1", "activated c#1"]);
    g.when(open(json!({})))
        .then(&["case opened", "created c#1"]);
}

#[test]
fn an_on_part_on_a_field_change_fires_with_the_changed_value() {
    given(&format!(
        r#"{FLAG}
[[activities]]
key = "c"
name = "C"
kind = "human_task"
roles = ["w"]
required = true
entry = [{{ on = [{{ changed = "note" }}], if = "note == 'go'" }}]
"#
    ))
    .opened(json!({}))
    .when(update(json!({ "note": "go" })))
    .then(&["updated note", "activated c#1"]);
}

#[test]
fn an_occurrence_from_an_earlier_command_is_not_replayed_to_an_item_created_later() {
    // `late` is created when stage s activates, after `a` completed in an
    // earlier command; it never sees that completion.
    let g = given(&format!(
        r#"{FLAG}
[[activities]]
key = "a"
name = "A"
kind = "human_task"
roles = ["w"]
[[activities]]
key = "go"
name = "Go"
kind = "human_task"
roles = ["w"]
[[stages]]
key = "s"
name = "S"
entry = [{{ on = [{{ completed = "go" }}] }}]
  [[stages.activities]]
  key = "late"
  name = "Late"
  kind = "human_task"
  roles = ["w"]
  entry = [{{ on = [{{ completed = "a" }}] }}]
"#
    ))
    .opened(json!({}))
    .command(complete("a", json!({})));
    let then = g.when(complete("go", json!({})));
    then.then_includes(&["activated s#3", "created late#4"]);
    then.then_excludes(&["activated late#4"]);
}

#[test]
fn an_occurrence_earlier_in_the_same_command_is_seen_by_an_item_created_later() {
    // The stage activates because `found` completed; its milestone, created
    // in the same command, listens for that same completion and is reached.
    let g = given(&format!(
        r#"{FLAG}
[[activities]]
key = "found"
name = "Found"
kind = "human_task"
roles = ["w"]
[[stages]]
key = "closure"
name = "Closure"
entry = [{{ on = [{{ completed = "found" }}] }}]
  [[stages.activities]]
  key = "interview"
  name = "Interview"
  kind = "human_task"
  roles = ["w"]
  [[stages.milestones]]
  key = "found_milestone"
  name = "Found"
  entry = [{{ on = [{{ completed = "found" }}] }}]
"#
    ))
    .opened(json!({}));
    g.when(complete("found", json!({}))).then(&[
        "completed found#1",
        "activated closure#2",
        "created interview#3",
        "activated interview#3",
        "created found_milestone#4",
        "reached found_milestone#4",
    ]);
}

#[test]
fn a_person_reaches_a_waiting_milestone() {
    let g = given(&format!(
        r#"{FLAG}
[[activities]]
key = "a"
name = "A"
kind = "human_task"
roles = ["w"]
required = true
[[milestones]]
key = "m"
name = "M"
entry = [{{ if = "flag == true" }}]
"#
    ))
    .opened(json!({}));
    g.when(CaseCommand::ReachMilestone { item: "a".into() })
        .then_error(CaseError::WrongItemKind {
            item: "a".into(),
            kind: "activity".into(),
            action: "reach".into(),
        });
    let then = g.when(CaseCommand::ReachMilestone { item: "m".into() });
    then.then(&["reached m#2"]);
    assert!(then.state().reached.contains("m"));
    then.and()
        .when(CaseCommand::ReachMilestone { item: "m".into() })
        .then_error(CaseError::IllegalTransition {
            item: "m".into(),
            from: ItemState::Completed,
            action: "reach".into(),
        });
}

// ------------------------------------------------------------------ exit

#[test]
fn exit_terminates_the_item_and_its_descendants_and_ignores_terminal_items() {
    let g = given(&format!(
        r#"{FLAG}
[[activities]]
key = "a"
name = "A"
kind = "human_task"
roles = ["w"]
[[activities]]
key = "done"
name = "Done"
kind = "human_task"
roles = ["w"]
exit = [{{ on = [{{ completed = "a" }}] }}]
[[stages]]
key = "s"
name = "S"
exit = [{{ on = [{{ completed = "a" }}] }}]
  [[stages.activities]]
  key = "x"
  name = "X"
  kind = "human_task"
  roles = ["w"]
  [[stages.stages]]
  key = "inner"
  name = "Inner"
    [[stages.stages.activities]]
    key = "y"
    name = "Y"
    kind = "human_task"
    roles = ["w"]
"#
    ))
    .opened(json!({}))
    .command(complete("done", json!({})));
    g.when(complete("a", json!({}))).then(&[
        "completed a#1",
        "terminated y#6",
        "terminated inner#5",
        "terminated x#4",
        "terminated s#3",
        "case completed",
    ]);
}

#[test]
fn an_if_only_exit_fires_after_a_case_file_change() {
    given(&format!(
        r#"{FLAG}
[[activities]]
key = "a"
name = "A"
kind = "human_task"
roles = ["w"]
required = true
exit = [{{ if = "flag == true" }}]
"#
    ))
    .opened(json!({}))
    .when(update(json!({ "flag": true })))
    .then(&["updated flag", "terminated a#1", "case completed"]);
}

// ------------------------------------------------------------------ completion

fn stage_with(autocomplete: bool) -> String {
    format!(
        r#"{FLAG}
[[stages]]
key = "s"
name = "S"
autocomplete = {autocomplete}
  [[stages.activities]]
  key = "r"
  name = "Required"
  kind = "human_task"
  roles = ["w"]
  required = true
  [[stages.activities]]
  key = "opt"
  name = "Optional, waiting"
  kind = "human_task"
  roles = ["w"]
  entry = [{{ if = "flag == true" }}]
  [[stages.activities]]
  key = "en"
  name = "Optional, enabled"
  kind = "human_task"
  roles = ["w"]
  manual_activation = true
"#
    )
}

#[test]
fn autocomplete_on_completes_when_required_work_is_done_and_terminates_the_rest() {
    given_no_autocomplete(&stage_with(true))
        .opened(json!({}))
        .when(complete("r", json!({})))
        .then(&[
            "completed r#2",
            "terminated opt#3",
            "terminated en#4",
            "completed s#1",
            "case completed",
        ]);
}

#[test]
fn autocomplete_off_waits_for_every_child_or_a_person() {
    let g = given_no_autocomplete(&stage_with(false)).opened(json!({}));
    g.when(complete("s", json!({})))
        .then_error(CaseError::NotCompletable {
            item: "stage 's'".into(),
            reason: "'r' is active".into(),
        });
    let g = g.when(complete("r", json!({}))).and();
    assert_eq!(g.state().state_of("s"), Some(ItemState::Active));
    // The case (autocomplete off) completes by itself: every child is terminal.
    g.when(complete("s", json!({}))).then(&[
        "terminated opt#3",
        "terminated en#4",
        "completed s#1",
        "case completed",
    ]);
}

#[test]
fn autocomplete_off_completes_by_itself_when_every_child_is_terminal() {
    given_no_autocomplete(&stage_with(false))
        .opened(json!({}))
        .command(complete("r", json!({})))
        .command(CaseCommand::Disable { item: "en".into() })
        .when(CaseCommand::Terminate { item: "opt".into() })
        .then(&["terminated opt#3", "completed s#1", "case completed"]);
}

#[test]
fn a_case_completing_and_exiting_in_one_command_is_completed() {
    given_top(
        r#"exit = [{ on = [{ completed = "a" }] }]"#,
        &format!(
            r#"{FLAG}
[[activities]]
key = "a"
name = "A"
kind = "human_task"
roles = ["w"]
required = true
"#
        ),
    )
    .opened(json!({}))
    .when(complete("a", json!({})))
    .then(&["completed a#1", "case completed"]);
}

#[test]
fn a_case_exit_criterion_terminates_the_case() {
    let g = given_top(
        r#"exit = [{ if = "flag == true" }]"#,
        &format!(
            r#"{FLAG}
[[activities]]
key = "a"
name = "A"
kind = "human_task"
roles = ["w"]
required = true
"#
        ),
    )
    .opened(json!({}));
    let then = g.when(update(json!({ "flag": true })));
    then.then(&["updated flag", "terminated a#1", "case terminated"]);
    assert_eq!(then.state().status, CaseStatus::Terminated);
}

// ------------------------------------------------------------------ repetition

#[test]
fn repetition_with_entry_criteria_creates_a_new_instance_each_time_it_fires() {
    let g = given(&format!(
        r#"{FLAG}
[[activities]]
key = "keep"
name = "Keep the case open"
kind = "human_task"
roles = ["w"]
required = true
[[activities]]
key = "rep"
name = "Rep"
kind = "human_task"
roles = ["w"]
repeatable = true
entry = [{{ on = [{{ changed = "note" }}] }}]
"#
    ))
    .opened(json!({}));
    let g = g.when(update(json!({ "note": "1" }))).and();
    // The new instance is made once what the firing caused has settled.
    g.when(update(json!({ "note": "2" }))).then(&[
        "updated note",
        "activated rep#3",
        "created rep#4",
    ]);
}

#[test]
fn repetition_without_entry_criteria_follows_completion_never_termination() {
    let g = given(&format!(
        r#"{FLAG}
[[activities]]
key = "keep"
name = "Keep the case open"
kind = "human_task"
roles = ["w"]
required = true
[[activities]]
key = "search"
name = "Search"
kind = "human_task"
roles = ["w"]
repeatable = true
manual_activation = true
"#
    ))
    .opened(json!({}))
    .command(start("search"));
    g.when(complete("search", json!({}))).then(&[
        "completed search#2",
        "created search#3",
        "enabled search#3",
    ]);
    g.when(CaseCommand::Terminate {
        item: "search".into(),
    })
    .then(&["terminated search#2"]);
}

#[test]
fn only_the_first_instance_of_a_required_repeatable_item_is_required() {
    given(&format!(
        r#"{FLAG}
[[activities]]
key = "rep"
name = "Rep"
kind = "human_task"
roles = ["w"]
repeatable = true
required = true
entry = [{{ on = [{{ changed = "note" }}] }}]
"#
    ))
    .opened(json!({}))
    .command(update(json!({ "note": "x" })))
    .when(complete("rep", json!({})))
    .then(&["completed rep#1", "terminated rep#2", "case completed"]);
}

#[test]
fn a_condition_only_repeatable_item_activates_once_per_occurrence() {
    let g = given(&format!(
        r#"{FLAG}
[[activities]]
key = "keep"
name = "Keep"
kind = "human_task"
roles = ["w"]
required = true
[[activities]]
key = "rep"
name = "Rep"
kind = "human_task"
roles = ["w"]
repeatable = true
entry = [{{ if = "flag == true" }}]
"#
    ))
    .opened(json!({}));
    let then = g.when(update(json!({ "flag": true })));
    then.then(&["updated flag", "activated rep#2", "created rep#3"]);
    // The next case-file change is a new occurrence.
    then.and().when(update(json!({ "note": "n" }))).then(&[
        "updated note",
        "activated rep#3",
        "created rep#4",
    ]);
}

#[test]
fn a_repetition_does_not_see_what_its_predecessor_caused_so_a_self_feeding_rule_fires_once() {
    // `bump` re-fires on every change of `count` and changes it itself.
    // Its next instance is made after the cascade has settled and listens
    // only for later changes: one activation per command, no loop.
    let g = given(&format!(
        r#"{FLAG}
[[activities]]
key = "keep"
name = "Keep"
kind = "human_task"
roles = ["w"]
required = true
[[activities]]
key = "bump"
name = "Bump"
kind = "automatic"
repeatable = true
set = {{ count = "count + 1" }}
entry = [{{ on = [{{ changed = "count" }}] }}]
"#
    ))
    .opened(json!({}));
    let then = g.when(update(json!({ "count": 0 })));
    then.then(&[
        "updated count",
        "activated bump#2",
        "completed bump#2",
        "created bump#3",
    ]);
    assert_eq!(then.state().case_file[&FieldKey::new("count")], json!(1));
}

#[test]
fn a_looping_cascade_fails_the_command_at_the_bound() {
    // Each completion of `spin` makes the next instance, which completes at
    // once, once its stage starts: the command fails with a clear error
    // (and no stack overflow). Opening is fine, so the definition deploys.
    let g = given(&format!(
        r#"{FLAG}
[[activities]]
key = "keep"
name = "Keep"
kind = "human_task"
roles = ["w"]
required = true
[[stages]]
key = "looping"
name = "Looping"
entry = [{{ if = "flag == true" }}]
[[stages.activities]]
key = "spin"
name = "Spin"
kind = "automatic"
repeatable = true
"#
    ))
    .opened(json!({}));
    let err = g.when(update(json!({ "flag": true }))).error();
    assert!(
        matches!(err, CaseError::CascadeLimit { limit: CASCADE_LIMIT, ref last } if last == "spin"),
        "{err}"
    );
}

#[test]
fn a_definition_whose_opening_can_only_loop_is_refused_at_deploy() {
    let source = format!(
        "autocomplete = true\n{HEADER}\n{FLAG}
[[activities]]
key = \"spin\"
name = \"Spin\"
kind = \"automatic\"
repeatable = true
"
    );
    let err = crate::definition::CaseDefinition::from_toml(&source).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("dry run") && text.contains("spin"), "{text}");
    // Read back from the log, a definition deployed before the dry run
    // existed still loads: the dry run judges deployments only.
    let deployed =
        crate::definition::CaseDefinition::parse_deployed(&source, crate::definition::Format::Toml);
    assert!(deployed.is_ok(), "{deployed:?}");
    // Bounded by a repetition rule, or by an instance limit, it deploys.
    for bound in ["repeat_while = \"repetition < 3\"", "max_instances = 3"] {
        let bounded = format!("{source}{bound}\n");
        let def = crate::definition::CaseDefinition::from_toml(&bounded)
            .unwrap_or_else(|e| panic!("{bound}: {e}"));
        let events = decide(
            &def,
            &CaseState::default(),
            &who(&["w"]),
            open(json!({})),
            NOW,
        )
        .expect("opens");
        let spins = events
            .iter()
            .filter(|e| matches!(e, CaseEvent::PlanItemCompleted { item, .. } if item.as_str() == "spin"))
            .count();
        assert_eq!(spins, 3, "{bound}");
    }
}

// ------------------------------------------------------------------ automatic, service

#[test]
fn an_automatic_step_completes_in_the_command_that_activates_it_applying_set() {
    let g = given(&format!(
        r#"{FLAG}
[[activities]]
key = "a"
name = "A"
kind = "human_task"
roles = ["w"]
form = [{{ field = "count", required = true }}]
[[activities]]
key = "auto"
name = "Auto"
kind = "automatic"
set = {{ note = "count > 3 ? 'big' : 'small'" }}
entry = [{{ on = [{{ completed = "a" }}] }}]
"#
    ))
    .opened(json!({}));
    let then = g.when(complete("a", json!({ "count": 5 })));
    then.then(&[
        "completed a#1",
        "activated auto#2",
        "completed auto#2",
        "case completed",
    ]);
    assert_eq!(then.state().case_file.get("note"), Some(&json!("big")));
}

const SERVICE: &str = r#"
[[fields]]
key = "ward"
type = "text"
[[services]]
name = "gis.locate"
[services.outputs]
ward = { type = "text" }
[[activities]]
key = "locate"
name = "Locate"
kind = "service_task"
service = "gis.locate"
output = { ward = "ward" }
"#;

fn outcome_ok(invocation: u32, attempt: u32, out: serde_json::Value) -> CaseCommand {
    CaseCommand::RecordServiceOutcome {
        invocation: InvocationId(invocation),
        attempt,
        outcome: ServiceOutcome::Completed {
            output: serde_json::from_value(out).unwrap(),
            disclosures: Vec::new(),
            alerts: Vec::new(),
        },
    }
}

fn outcome_failed(invocation: u32, attempt: u32, retry: bool) -> CaseCommand {
    CaseCommand::RecordServiceOutcome {
        invocation: InvocationId(invocation),
        attempt,
        outcome: ServiceOutcome::Failed {
            error: "gazetteer unavailable".into(),
            retry_at: retry.then_some(crate::log::Timestamp(NOW.0 + 1_000_000)),
        },
    }
}

#[test]
fn a_service_task_asks_for_its_invocation_and_its_outcome_completes_it() {
    let g = given(SERVICE);
    g.when(open(json!({}))).then(&[
        "case opened",
        "created locate#1",
        "activated locate#1",
        "requested gis.locate inv-1",
    ]);
    let g = g.opened(json!({}));
    assert_eq!(g.state().state_of("locate"), Some(ItemState::Active));
    let pending = &g.state().invocations[0];
    assert_eq!((pending.attempt, pending.request.max_attempts), (1, 5));
    let system = who(&[SYSTEM_ROLE]);
    // Only the orchestration layer records outcomes.
    g.when(outcome_ok(1, 1, json!({ "ward": "Bishopsgate" })))
        .then_error(CaseError::Forbidden {
            action: "record a service outcome".into(),
            needed: vec![RoleKey::new(SYSTEM_ROLE)],
        });
    let then = g.when_as(&system, outcome_ok(1, 1, json!({ "ward": "Bishopsgate" })));
    then.then(&["inv-1 completed", "completed locate#1", "case completed"]);
    assert_eq!(
        then.state().case_file.get("ward"),
        Some(&json!("Bishopsgate"))
    );
    assert!(then.state().invocations.is_empty());
    // A stale or repeated report is refused.
    g.when_as(&system, outcome_ok(1, 2, json!({})))
        .then_error(CaseError::StaleAttempt {
            invocation: InvocationId(1),
            attempt: 2,
            current: 1,
        });
    then.and()
        .when_as(&system, outcome_ok(1, 1, json!({})))
        .then_error(CaseError::CaseClosed {
            status: CaseStatus::Completed,
        });
}

#[test]
fn retries_then_the_last_attempt_fails_the_task_with_an_incident_that_a_retry_resolves() {
    let toml = SERVICE.replace(
        "output = { ward = \"ward\" }",
        "output = { ward = \"ward\" }\nretry = { max_attempts = 2, backoff = \"PT1S\" }",
    );
    let g = given(&toml).opened(json!({}));
    let system = who(&[SYSTEM_ROLE]);
    let then = g.when_as(&system, outcome_failed(1, 1, true));
    then.then(&["attempt 1 of inv-1 failed"]);
    let g = then.and();
    assert_eq!(g.state().invocations[0].attempt, 2);
    let then = g.when_as(&system, outcome_failed(1, 2, true));
    then.then(&["inv-1 failed", "failed locate#1", "case completed"]);
    // (The case autocompletes: nothing required is left; a required task
    // keeps it open — see the engine tests.)
    assert_eq!(then.state().incidents.len(), 1);
    assert_eq!(then.state().incidents[0].attempts, 2);
}

#[test]
fn a_failed_service_task_is_retried_by_its_roles_or_an_administrator() {
    // A human task keeps the case open while the service task is failed.
    let toml = format!(
        "{SERVICE}\n[[activities]]\nkey = \"review\"\nname = \"Review\"\nkind = \"human_task\"\nroles = [\"w\"]\n"
    );
    let g = given(&toml).opened(json!({}));
    let system = who(&[SYSTEM_ROLE]);
    let g = g.when_as(&system, outcome_failed(1, 1, false)).and();
    assert_eq!(g.state().state_of("locate"), Some(ItemState::Failed));
    assert_eq!(g.state().incidents[0].error, "gazetteer unavailable");
    let retry = CaseCommand::RetryIncident {
        invocation: InvocationId(1),
    };
    g.when(retry.clone()).then_error(CaseError::Forbidden {
        action: "retry locate".into(),
        needed: vec![RoleKey::new(SYSTEM_ROLE), RoleKey::new(ADMIN_ROLE)],
    });
    let admin = who(&[ADMIN_ROLE]);
    let then = g.when_as(&admin, retry.clone());
    then.then(&[
        "inv-1 retried",
        "activated locate#1",
        "requested gis.locate inv-2",
    ]);
    assert!(then.state().incidents.is_empty());
    then.and()
        .when_as(&admin, retry)
        .then_error(CaseError::NoIncident {
            invocation: InvocationId(1),
        });
}

#[test]
fn malformed_output_and_missing_input_fail_the_invocation_with_the_reason_on_the_case() {
    let g = given(SERVICE).opened(json!({}));
    let system = who(&[SYSTEM_ROLE]);
    let then = g.when_as(&system, outcome_ok(1, 1, json!({ "ward": 42 })));
    then.then(&["inv-1 failed", "failed locate#1", "case completed"]);
    let error = &then.state().incidents[0].error;
    assert!(
        error.starts_with("malformed output: output 'ward'"),
        "{error}"
    );
    let then = g.when_as(&system, outcome_ok(1, 1, json!({ "beat": "x" })));
    assert!(then.state().incidents[0]
        .error
        .contains("'beat' is not an output of service 'gis.locate'"));

    let with_input = r#"
[[fields]]
key = "point"
type = "geo_point"
[[fields]]
key = "ward"
type = "text"
[[services]]
name = "gis.locate"
[services.inputs]
point = { type = "geo_point", required = true }
[services.outputs]
ward = { type = "text" }
[[activities]]
key = "locate"
name = "Locate"
kind = "service_task"
service = "gis.locate"
input = { point = "point" }
output = { ward = "ward" }
"#;
    let g = given(with_input);
    let then = g.when(open(json!({})));
    then.then(&[
        "case opened",
        "created locate#1",
        "activated locate#1",
        "requested gis.locate inv-1",
        "inv-1 failed",
        "failed locate#1",
        "case completed",
    ]);
    let incident = &then.state().incidents[0];
    assert_eq!(incident.attempts, 0);
    assert!(
        incident
            .error
            .contains("required input 'point' has no value"),
        "{}",
        incident.error
    );
    let then = g.when(open(json!({ "point": { "lat": 51.2, "lon": 1.1 } })));
    then.then(&[
        "case opened",
        "created locate#1",
        "activated locate#1",
        "requested gis.locate inv-1",
    ]);
    assert_eq!(
        then.state().invocations[0].request.input.get("point"),
        Some(&json!({ "lat": 51.2, "lon": 1.1 }))
    );
}

#[test]
fn only_an_administrator_completes_a_service_task_by_hand_which_cancels_its_invocation() {
    let g = given(SERVICE).opened(json!({}));
    let system = who(&[SYSTEM_ROLE]);
    g.when_as(
        &system,
        complete("locate", json!({ "ward": "Bishopsgate" })),
    )
    .then_error(CaseError::Forbidden {
        action: "complete service task locate by hand".into(),
        needed: vec![RoleKey::new(ADMIN_ROLE)],
    });
    let admin = who(&[ADMIN_ROLE]);
    let then = g.when_as(&admin, complete("locate", json!({ "ward": "Bishopsgate" })));
    then.then(&["completed locate#1", "inv-1 cancelled", "case completed"]);
    assert!(then.state().invocations.is_empty());
    g.when_as(&admin, complete("locate", json!({ "beat": "x" })))
        .then_error(CaseError::InvalidField {
            field: "beat".into(),
            reason: "not a result 'locate' maps into the case file".into(),
        });
    g.when_as(
        &system,
        CaseCommand::Fail {
            item: "locate".into(),
            reason: "timeout".into(),
        },
    )
    .then(&["failed locate#1", "inv-1 cancelled", "case completed"]);
}

// ------------------------------------------------------------------ discretionary

const DISCRETIONARY: &str = r#"
[[fields]]
key = "dwelling"
type = "boolean"
[[activities]]
key = "go"
name = "Go"
kind = "human_task"
roles = ["w"]
[[activities]]
key = "keep"
name = "Keep"
kind = "human_task"
roles = ["w"]
required = true
[[stages]]
key = "inv"
name = "Investigation"
entry = [{ on = [{ completed = "go" }] }]
  [[stages.activities]]
  key = "main"
  name = "Main"
  kind = "human_task"
  roles = ["w"]
  required = true
  [[stages.activities]]
  key = "h2h"
  name = "House to house"
  kind = "human_task"
  roles = ["w"]
  discretionary = true
  planners = ["w"]
  applicability = "dwelling == true"
"#;

#[test]
fn a_discretionary_item_planned_into_an_inactive_stage_materialises_when_it_activates() {
    let g = given(DISCRETIONARY).opened(json!({ "dwelling": true }));
    let g = g
        .when(CaseCommand::AddDiscretionary {
            item: "h2h".into(),
            stage: Some("inv".into()),
        })
        .and();
    assert_eq!(g.state().planned.len(), 1);
    g.when(CaseCommand::AddDiscretionary {
        item: "h2h".into(),
        stage: None,
    })
    .then_error(CaseError::AlreadyPlanned { item: "h2h".into() });
    let then = g.when(complete("go", json!({})));
    then.then_includes(&[
        "activated inv#3",
        "created main#4",
        "created h2h#5",
        "activated h2h#5",
    ]);
    assert!(then.state().planned.is_empty());
}

#[test]
fn a_discretionary_item_needs_its_applicability_rule_and_a_planner_role() {
    let g = given(DISCRETIONARY).opened(json!({ "dwelling": false }));
    g.when(CaseCommand::AddDiscretionary {
        item: "h2h".into(),
        stage: None,
    })
    .then_error(CaseError::NotApplicable {
        item: "h2h".into(),
        condition: "dwelling == true".into(),
    });
    g.when_as(
        &who(&["other"]),
        CaseCommand::AddDiscretionary {
            item: "h2h".into(),
            stage: None,
        },
    )
    .then_error(CaseError::Forbidden {
        action: "plan h2h".into(),
        needed: vec![RoleKey::new("w")],
    });
    g.when(CaseCommand::AddDiscretionary {
        item: "main".into(),
        stage: None,
    })
    .then_error(CaseError::NotDiscretionary {
        item: "main".into(),
    });
}

#[test]
fn a_discretionary_item_planned_into_an_active_stage_starts_at_once() {
    given(DISCRETIONARY)
        .opened(json!({ "dwelling": true }))
        .command(complete("go", json!({})))
        .when(CaseCommand::AddDiscretionary {
            item: "h2h".into(),
            stage: None,
        })
        .then(&["planned h2h", "created h2h#5", "activated h2h#5"]);
}

// ------------------------------------------------------------------ suspension

#[test]
fn suspending_and_resuming_the_case_restores_every_previous_state() {
    let g = latching().opened(json!({}));
    let g = g.when(CaseCommand::Suspend).and();
    assert_eq!(g.state().status, CaseStatus::Suspended);
    g.when(complete("a", json!({})))
        .then_error(CaseError::CaseSuspended);
    g.when(CaseCommand::Resume).then(&[
        "case resumed",
        "resumed a#1 to active",
        "resumed b#2 to available",
    ]);
}

#[test]
fn a_sentry_that_targets_a_suspended_item_takes_effect_on_resume() {
    let g = given(&format!(
        r#"{FLAG}
[[activities]]
key = "a"
name = "A"
kind = "human_task"
roles = ["w"]
[[stages]]
key = "s"
name = "S"
  [[stages.activities]]
  key = "x"
  name = "X"
  kind = "human_task"
  roles = ["w"]
  entry = [{{ on = [{{ completed = "a" }}] }}]
  [[stages.activities]]
  key = "y"
  name = "Y"
  kind = "human_task"
  roles = ["w"]
"#
    ))
    .opened(json!({}));
    let g = g.when(CaseCommand::SuspendItem { item: "s".into() }).and();
    g.when(CaseCommand::ResumeItem { item: "x".into() }).error();
    // `a` completes while x waits suspended: the on-part latches.
    let g = g.when(complete("a", json!({}))).and();
    assert_eq!(g.state().state_of("x"), Some(ItemState::Suspended));
    g.when(CaseCommand::ResumeItem { item: "s".into() }).then(&[
        "resumed s#2 to active",
        "resumed x#3 to available",
        "resumed y#4 to active",
        "activated x#3",
    ]);
}

// ------------------------------------------------------------------ close, reopen

#[test]
fn closing_terminates_every_non_terminal_item_and_reopen_allows_work_again() {
    let g = latching().opened(json!({})).command(CaseCommand::Suspend);
    let then = g.when(CaseCommand::Close { reason: None });
    then.then(&["terminated a#1", "terminated b#2", "case closed"]);
    let g = then.and();
    g.when(update(json!({ "flag": true })))
        .then_error(CaseError::CaseClosed {
            status: CaseStatus::Closed,
        });
    g.when(CaseCommand::Close { reason: None })
        .then_error(CaseError::IllegalCaseTransition {
            from: CaseStatus::Closed,
            action: "close".into(),
        });
    let g = g
        .when(CaseCommand::Reopen {
            reason: Some("new evidence".into()),
        })
        .and();
    // A reopened case does not autocomplete: it waits for a person.
    g.when(update(json!({ "note": "evidence" })))
        .then(&["updated note"]);
    g.when(CaseCommand::CompleteCase).then(&["case completed"]);
}

// ------------------------------------------------------------------ deadlines

#[test]
fn deadlines_start_from_activation_and_are_met_on_completion() {
    let g = given(&format!(
        r#"{FLAG}
[[deadlines]]
key = "case_wd"
working_days = 5
escalate = [{{ notify = ["w"] }}]
[[activities]]
key = "a"
name = "A"
kind = "human_task"
roles = ["w"]
required = true
  [[activities.deadlines]]
  key = "a_1h"
  within = "PT1H"
  escalate = [{{ notify = ["w"] }}]
  [[activities.deadlines]]
  key = "a_if"
  within = "PT1H"
  if = "flag == true"
  escalate = [{{ notify = ["w"] }}]
"#
    ));
    let then = g.when(open(json!({})));
    then.then(&[
        "case opened",
        "deadline set case_wd",
        "created a#1",
        "activated a#1",
        "deadline set a_1h",
    ]);
    let state = then.state();
    let due: Vec<DeadlineDue> = state.deadlines.iter().map(|d| d.due).collect();
    assert_eq!(
        due,
        [
            DeadlineDue::WorkingDays { days: 5, from: NOW },
            DeadlineDue::At {
                due: crate::log::Timestamp(NOW.0 + 3_600_000_000)
            }
        ]
    );
    then.and().when(complete("a", json!({}))).then(&[
        "completed a#1",
        "deadline met a_1h",
        "case completed",
        "deadline met case_wd",
    ]);
}

#[test]
fn an_item_deadline_is_cancelled_when_its_item_is_terminated() {
    given(&format!(
        r#"{FLAG}
[[activities]]
key = "a"
name = "A"
kind = "human_task"
roles = ["w"]
required = true
  [[activities.deadlines]]
  key = "a_1h"
  within = "PT1H"
  escalate = [{{ notify = ["w"] }}]
"#
    ))
    .opened(json!({}))
    .when(CaseCommand::Terminate { item: "a".into() })
    .then(&[
        "terminated a#1",
        "deadline cancelled a_1h",
        "case completed",
    ]);
}

// ------------------------------------------------------------------ validation

const TYPED: &str = r#"
[[fields]]
key = "grade"
type = "enumeration"
values = ["immediate", "priority"]
required = true
[[fields]]
key = "age"
type = "integer"
[[fields]]
key = "secret_note"
type = "text"
classification = "SECRET"
[[fields]]
key = "shown"
type = "text"
[[activities]]
key = "a"
name = "A"
kind = "human_task"
roles = ["w"]
required = true
form = [{ field = "age", required = true }, { field = "grade", read_only = true }]
"#;

#[test]
fn commands_are_validated_against_the_definition() {
    let g = given(TYPED);
    g.when(open(json!({}))).then_error(CaseError::InvalidField {
        field: "grade".into(),
        reason: "required when the case is opened".into(),
    });
    g.when(open(json!({ "grade": "urgent" })))
        .then_error(CaseError::InvalidField {
            field: "grade".into(),
            reason: "expected one of [immediate, priority], got a text of 6 characters".into(),
        });
    let g = g.opened(json!({ "grade": "immediate" }));
    g.when(update(json!({ "colour": "red" })))
        .then_error(CaseError::InvalidField {
            field: "colour".into(),
            reason: "unknown field".into(),
        });
    g.when(update(json!({ "age": "ten" })))
        .then_error(CaseError::InvalidField {
            field: "age".into(),
            reason: "expected an integer, got a text of 3 characters".into(),
        });
    g.when(update(json!({ "grade": null })))
        .then_error(CaseError::InvalidField {
            field: "grade".into(),
            reason: "the field is required and cannot be cleared".into(),
        });
    g.when(complete("a", json!({})))
        .then_error(CaseError::InvalidField {
            field: "age".into(),
            reason: "required by the form of 'a'".into(),
        });
    g.when(complete("a", json!({ "age": 3, "grade": "priority" })))
        .then_error(CaseError::InvalidField {
            field: "grade".into(),
            reason: "read-only on the form of 'a'".into(),
        });
    g.when(complete("a", json!({ "age": 3, "shown": "x" })))
        .then_error(CaseError::InvalidField {
            field: "shown".into(),
            reason: "not on the form of 'a'".into(),
        });
    g.when(complete("nope", json!({})))
        .then_error(CaseError::UnknownItem {
            item: "nope".into(),
        });
    g.when(open(json!({ "grade": "immediate" })))
        .then_error(CaseError::AlreadyOpened);
    g.when(update(json!({ "age": 3 }))).then(&["updated age"]);
    // An update that changes nothing records nothing.
    g.command(update(json!({ "age": 3 })))
        .when(update(json!({ "age": 3 })))
        .then(&[]);
}

#[test]
fn a_command_before_open_is_rejected() {
    given(TYPED)
        .when(update(json!({ "age": 1 })))
        .then_error(CaseError::NotOpened);
}

#[test]
fn ambiguous_and_unknown_instances_are_typed_errors() {
    let g = given(&format!(
        r#"{FLAG}
[[activities]]
key = "keep"
name = "Keep"
kind = "human_task"
roles = ["w"]
required = true
[[activities]]
key = "rep"
name = "Rep"
kind = "human_task"
roles = ["w"]
repeatable = true
entry = [{{ on = [{{ changed = "note" }}] }}]
"#
    ))
    .opened(json!({}))
    .command(update(json!({ "note": "1" })))
    .command(update(json!({ "note": "2" })));
    g.when(complete("rep", json!({})))
        .then_error(CaseError::AmbiguousItem {
            item: "rep".into(),
            instances: vec![InstanceId(2), InstanceId(3)],
        });
    g.when(CaseCommand::Complete {
        item: ItemRef::instance("rep", InstanceId(9)),
        outputs: Default::default(),
    })
    .then_error(CaseError::UnknownInstance {
        item: "rep".into(),
        instance: InstanceId(9),
    });
    g.when(CaseCommand::Complete {
        item: ItemRef::instance("rep", InstanceId(3)),
        outputs: Default::default(),
    })
    .then(&["completed rep#3"]);
}

#[test]
fn claims_are_exclusive() {
    let g = given(TYPED)
        .opened(json!({ "grade": "immediate" }))
        .command(CaseCommand::Claim { item: "a".into() });
    let other = Principal::new(TenantId::new("kent").unwrap(), "pc-2")
        .with_roles(["w"])
        .with_clearance(Classification::Secret);
    g.when_as(&other, complete("a", json!({ "age": 1 })))
        .then_error(CaseError::ClaimedByAnother {
            item: "a".into(),
            claimed_by: "pc-1".into(),
        });
    g.when(CaseCommand::Claim { item: "a".into() }).then(&[]);
    g.when(CaseCommand::Assign {
        item: "a".into(),
        assignee: "pc-2".into(),
    })
    .then(&["assigned a#1 to pc-2"]);
}

/// `TYPED` with a `supervisor` role that supervises claimed tasks.
fn supervised() -> Given {
    // The body continues the header's `[permissions]` table.
    given(&format!("supervise = [\"supervisor\"]\n{TYPED}"))
}

fn kent_principal(subject: &str, roles: &[&str]) -> Principal {
    Principal::new(TenantId::new("kent").unwrap(), subject)
        .with_roles(roles.iter().copied())
        .with_clearance(Classification::Secret)
}

#[test]
fn only_the_assignee_or_a_supervisor_may_act_on_a_claimed_task() {
    // Given an active task pc-1 has claimed,
    let g = supervised()
        .opened(json!({ "grade": "immediate" }))
        .command(CaseCommand::Claim { item: "a".into() });
    let colleague = kent_principal("pc-2", &["w"]);
    let claimed = || CaseError::ClaimedByAnother {
        item: "a".into(),
        claimed_by: "pc-1".into(),
    };
    // when a colleague holding the task's role (and every case permission)
    // completes, fails, terminates, reassigns, routes or claims it: refused.
    g.when_as(&colleague, complete("a", json!({ "age": 1 })))
        .then_error(claimed());
    g.when_as(
        &colleague,
        CaseCommand::Fail {
            item: "a".into(),
            reason: "no".into(),
        },
    )
    .then_error(claimed());
    g.when_as(&colleague, CaseCommand::Terminate { item: "a".into() })
        .then_error(claimed());
    g.when_as(
        &colleague,
        CaseCommand::Assign {
            item: "a".into(),
            assignee: "pc-2".into(),
        },
    )
    .then_error(claimed());
    g.when_as(
        &colleague,
        CaseCommand::AssignTeam {
            item: "a".into(),
            team: "cid".into(),
        },
    )
    .then_error(claimed());
    g.when_as(&colleague, CaseCommand::Claim { item: "a".into() })
        .then_error(claimed());
    // The assignee may hand it over; a supervising role may reassign,
    // fail, terminate or complete it.
    g.when(CaseCommand::Assign {
        item: "a".into(),
        assignee: "pc-2".into(),
    })
    .then(&["assigned a#1 to pc-2"]);
    let sergeant = kent_principal("ps-9", &["w", "supervisor"]);
    g.when_as(
        &sergeant,
        CaseCommand::Assign {
            item: "a".into(),
            assignee: "pc-3".into(),
        },
    )
    .then(&["assigned a#1 to pc-3"]);
    // (The required task ending lets the case autocomplete.)
    g.when_as(
        &sergeant,
        CaseCommand::Fail {
            item: "a".into(),
            reason: "officer off sick".into(),
        },
    )
    .then(&["failed a#1", "case completed"]);
    g.when_as(&sergeant, CaseCommand::Terminate { item: "a".into() })
        .then(&["terminated a#1", "case completed"]);
    assert!(g
        .when_as(&sergeant, complete("a", json!({ "age": 1 })))
        .result
        .is_ok());
    // A supervising role does not replace the task's own role.
    let outsider = kent_principal("ps-8", &["supervisor"]);
    assert!(matches!(
        g.when_as(&outsider, complete("a", json!({ "age": 1 })))
            .result,
        Err(CaseError::Forbidden { .. })
    ));
    // Once reassigned, the new assignee may complete it and pc-1 may not.
    let handed = g
        .when(CaseCommand::Assign {
            item: "a".into(),
            assignee: "pc-2".into(),
        })
        .and();
    assert!(handed
        .when_as(&colleague, complete("a", json!({ "age": 1 })))
        .result
        .is_ok());
    handed
        .when(complete("a", json!({ "age": 1 })))
        .then_error(CaseError::ClaimedByAnother {
            item: "a".into(),
            claimed_by: "pc-2".into(),
        });
}

#[test]
fn without_supervise_roles_only_the_assignee_acts_on_a_claimed_task() {
    // Given a definition naming no supervising role, where the colleague
    // holds every case permission (close included),
    let g = given(TYPED)
        .opened(json!({ "grade": "immediate" }))
        .command(CaseCommand::Claim { item: "a".into() });
    let colleague = kent_principal("pc-2", &["w"]);
    // when they terminate or reassign pc-1's task: refused.
    for command in [
        CaseCommand::Terminate { item: "a".into() },
        CaseCommand::Assign {
            item: "a".into(),
            assignee: "pc-2".into(),
        },
    ] {
        g.when_as(&colleague, command)
            .then_error(CaseError::ClaimedByAnother {
                item: "a".into(),
                claimed_by: "pc-1".into(),
            });
    }
    // and the fingerprint of a definition without `supervise` is unchanged
    // by the new (empty, omitted) field.
    assert!(!g.def.canonical_json().contains("supervise"));
}

#[test]
fn routing_a_task_to_a_team_releases_its_claim() {
    let g = given(TYPED)
        .opened(json!({ "grade": "immediate" }))
        .command(CaseCommand::Claim { item: "a".into() });
    let route = || CaseCommand::AssignTeam {
        item: "a".into(),
        team: "cid".into(),
    };
    g.when(route()).then(&["routed a#1 to team cid"]);
    let routed = g.when(route()).and();
    assert_eq!(routed.state().items[0].team.as_deref(), Some("cid"));
    assert_eq!(routed.state().items[0].claimed_by, None);
    // Routed again to the same team while unclaimed: nothing to record.
    routed.when(route()).then(&[]);
    // The claim was released: someone else may now claim it.
    let other = Principal::new(TenantId::new("kent").unwrap(), "pc-2")
        .with_roles(["w"])
        .with_clearance(Classification::Secret);
    routed
        .when_as(&other, CaseCommand::Claim { item: "a".into() })
        .then(&["claimed a#1 by pc-2"]);
    g.when(CaseCommand::AssignTeam {
        item: "a".into(),
        team: "Not a team".into(),
    })
    .error();
}

#[test]
fn entities_and_notes_are_recorded_and_checked() {
    let g = given(TYPED).opened(json!({ "grade": "immediate" }));
    let victim = PoleRef {
        kind: PoleKind::Person,
        id: "P-1".into(),
    };
    let then = g.when(CaseCommand::LinkEntity {
        entity: victim.clone(),
        role: EntityRole::Victim,
    });
    then.then(&["linked P-1 as Victim"]);
    then.and()
        .when(CaseCommand::LinkEntity {
            entity: victim.clone(),
            role: EntityRole::Victim,
        })
        .then(&[]);
    g.when(CaseCommand::LinkEntity {
        entity: victim,
        role: EntityRole::Scene,
    })
    .error();
    g.when(CaseCommand::AddNote { text: "  ".into() }).error();
    let then = g.when(CaseCommand::AddNote {
        text: "Victim called back".into(),
    });
    then.then(&["note added"]);
    assert_eq!(then.state().notes[0].at, NOW);
}

// ------------------------------------------------------------------ security

use crate::security::Principal;

#[test]
fn roles_clearance_and_tenant_are_enforced() {
    let g = given(TYPED).opened(json!({ "grade": "immediate" }));
    g.when_as(&who(&["visitor"]), update(json!({ "age": 1 })))
        .then_error(CaseError::Forbidden {
            action: "update the case file".into(),
            needed: vec![RoleKey::new("w")],
        });
    let low = who(&["w"]).with_clearance(Classification::Official);
    g.when_as(&low, update(json!({ "secret_note": "x" })))
        .then_error(CaseError::InsufficientClearance {
            subject: ClearanceSubject::Field(FieldKey::new("secret_note")),
            needed: Classification::Secret,
            held: Classification::Official,
        });
    let elsewhere = Principal::new(TenantId::new("essex").unwrap(), "pc-9")
        .with_roles(["w"])
        .with_clearance(Classification::TopSecret);
    g.when_as(&elsewhere, update(json!({ "age": 1 })))
        .then_error(CaseError::WrongTenant {
            tenant: TenantId::new("essex").unwrap(),
        });
    assert!(matches!(
        g.state().view_for(&g.def, &elsewhere),
        Err(CaseError::WrongTenant { .. })
    ));
}

#[test]
fn a_case_above_the_principals_clearance_cannot_be_acted_on_or_read() {
    let g = given(TYPED).command(CaseCommand::Open {
        case_file: super::testing::fields(json!({ "grade": "immediate" })),
        classification: Some(Classification::OfficialSensitive),
    });
    let low = who(&["w"]).with_clearance(Classification::Official);
    let expected = CaseError::InsufficientClearance {
        subject: ClearanceSubject::Case,
        needed: Classification::OfficialSensitive,
        held: Classification::Official,
    };
    g.when_as(&low, CaseCommand::AddNote { text: "x".into() })
        .then_error(expected.clone());
    assert_eq!(g.state().view_for(&g.def, &low), Err(expected));
    g.when_as(&low, open(json!({ "grade": "immediate" })))
        .then_error(CaseError::AlreadyOpened);
    given(TYPED)
        .when_as(
            &low,
            CaseCommand::Open {
                case_file: super::testing::fields(json!({ "grade": "immediate" })),
                classification: Some(Classification::Secret),
            },
        )
        .then_error(CaseError::InsufficientClearance {
            subject: ClearanceSubject::NewCase,
            needed: Classification::Secret,
            held: Classification::Official,
        });
}

#[test]
fn a_view_withholds_fields_above_the_readers_clearance() {
    let g = given(TYPED)
        .opened(json!({ "grade": "immediate", "secret_note": "informant", "shown": "yes" }));
    let low = who(&["w"]).with_clearance(Classification::Official);
    let view = g.state().view_for(&g.def, &low).unwrap();
    assert_eq!(view.case_file.get("shown"), Some(&json!("yes")));
    assert!(!view.case_file.contains_key("secret_note"));
    assert!(!format!("{view:?}").contains("informant"));
    let high = who(&["w"]);
    let view = g.state().view_for(&g.def, &high).unwrap();
    assert_eq!(view.case_file.get("secret_note"), Some(&json!("informant")));
}

// ------------------------------------------------------------------ storage

#[test]
fn events_round_trip_through_the_codec_and_state_through_a_snapshot() {
    let g = given(DISCRETIONARY)
        .opened(json!({ "dwelling": true }))
        .command(CaseCommand::AddDiscretionary {
            item: "h2h".into(),
            stage: None,
        })
        .command(complete("go", json!({})))
        .command(CaseCommand::LinkEntity {
            entity: PoleRef {
                kind: PoleKind::Location,
                id: "L-1".into(),
            },
            role: EntityRole::Other("search_area".into()),
        });
    for e in &g.events {
        let meta = Metadata::new(ActorId::new("pc-1"), Source::system("test"));
        let data = e.to_event_data(meta).unwrap();
        assert_eq!(data.event_type, e.type_name());
        assert_eq!(
            &CaseEvent::decode_payload(&data.event_type, &data.payload).unwrap(),
            e
        );
    }
    // Given the same events, a fresh specification reaches the same state.
    let copy = given(DISCRETIONARY).events(g.events.clone());
    let state = g.state();
    assert_eq!(copy.state(), state);
    let bytes = rmp_serde::to_vec_named(&state).unwrap();
    let back: CaseState = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(back, state);
    let json = serde_json::to_string(&state).unwrap();
    let back: CaseState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
}

#[test]
fn replay_rejects_another_definition_and_inconsistent_histories() {
    let g = given(TYPED).opened(json!({ "grade": "immediate" }));
    let other = super::testing::definition(&format!("autocomplete = true\n{HEADER}\n{FLAG}\n[[activities]]\nkey = \"a\"\nname = \"A\"\nkind = \"human_task\"\nroles = [\"w\"]\n"));
    assert!(matches!(
        CaseState::replay(&other, &g.events),
        Err(CaseError::DefinitionMismatch { .. })
    ));
    let bogus = [CaseEvent::PlanItemActivated {
        instance: InstanceId(1),
        item: ItemKey::new("a"),
    }];
    assert!(matches!(
        CaseState::replay(&g.def, &bogus),
        Err(CaseError::InconsistentHistory { .. })
    ));
}

// ------------------------------------------------------------------ properties

mod properties {
    use proptest::prelude::*;
    use serde_json::json;

    use super::super::testing::{definition, fields, outputs, who, NOW};
    use super::super::*;
    use crate::definition::CaseDefinition;

    fn burglary() -> CaseDefinition {
        definition(include_str!("../../../examples/definitions/burglary.toml"))
    }

    const ITEMS: [&str; 12] = [
        "record_report",
        "locate",
        "grade_incident",
        "attend_scene",
        "record_crime",
        "investigate",
        "decide_outcome",
        "forensic_examination",
        "house_to_house",
        "agree_update_plan",
        "inform_victim_of_outcome",
        "victim_update",
    ];

    fn value() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            Just(json!(null)),
            Just(json!(true)),
            Just(json!(false)),
            Just(json!("immediate")),
            Just(json!("referred")),
            Just(json!("charged")),
            Just(json!("no_further_action")),
            Just(json!("phone")),
            Just(json!("dwelling")),
            Just(json!("CR/1")),
            Just(json!("2026-01-05T09:00:00Z")),
            Just(json!(3)),
            Just(json!(2.5)),
            Just(json!({ "lat": 51.5, "lon": -0.1 })),
            Just(json!(["O-1"])),
            Just(json!("forced_door")),
        ]
    }

    fn field() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just("grade"),
            Just("outcome"),
            Just("forensic_opportunity"),
            Just("victim_contact"),
            Just("attended_at"),
            Just("entry_method"),
            Just("crime_number"),
            Just("incident_point"),
            Just("stolen_items"),
            Just("premises_type"),
            Just("unknown_field"),
        ]
    }

    /// Outputs that complete each item in `ITEMS` validly.
    fn good_outputs(i: usize) -> serde_json::Value {
        match ITEMS[i] {
            "record_report" => json!({ "offenders_on_scene": false }),
            "locate" => json!({ "ward": "Westgate", "beat": "C3" }),
            "grade_incident" => json!({ "grade": "priority" }),
            "attend_scene" => json!({
                "attended_at": "2026-01-05T09:40:00Z",
                "entry_method": "forced_door",
                "forensic_opportunity": true,
            }),
            "record_crime" => json!({ "crime_number": "CR/1" }),
            "investigate" => json!({ "suspect": "P-9" }),
            "decide_outcome" => json!({ "outcome": "charged" }),
            "agree_update_plan" => json!({ "victim_contact": "phone" }),
            _ => json!({}),
        }
    }

    /// Service tasks are completed by the system principal (index 1).
    fn principal_for(i: usize) -> usize {
        usize::from(matches!(ITEMS[i], "locate" | "record_crime"))
    }

    fn command() -> impl Strategy<Value = (usize, CaseCommand)> {
        let item = (0..ITEMS.len()).prop_map(|i| ItemRef::key(ITEMS[i]));
        let outs = proptest::collection::btree_map(field().prop_map(String::from), value(), 0..4);
        prop_oneof![
            8 => (field(), value()).prop_map(|(f, v)| (0, CaseCommand::UpdateCaseFile { changes: fields(json!({ f: v })) })),
            8 => item.clone().prop_map(|i| (0, CaseCommand::Start { item: i })),
            3 => item.clone().prop_map(|i| (0, CaseCommand::Claim { item: i })),
            48 => (0..ITEMS.len()).prop_map(|i| (principal_for(i), CaseCommand::Complete { item: ItemRef::key(ITEMS[i]), outputs: outputs(good_outputs(i)) })),
            6 => (item.clone(), outs, 0..3usize).prop_map(|(i, o, who)| (who, CaseCommand::Complete { item: i, outputs: o.into() })),
            2 => item.clone().prop_map(|i| (1, CaseCommand::Fail { item: i, reason: "down".into() })),
            2 => item.clone().prop_map(|i| (0, CaseCommand::Terminate { item: i })),
            3 => item.clone().prop_map(|i| (0, CaseCommand::Disable { item: i })),
            2 => item.clone().prop_map(|i| (0, CaseCommand::SuspendItem { item: i })),
            4 => item.prop_map(|i| (0, CaseCommand::ResumeItem { item: i })),
            8 => prop_oneof![Just("forensic_examination"), Just("house_to_house"), Just("record_report")]
                .prop_map(|k| (0, CaseCommand::AddDiscretionary { item: k.into(), stage: None })),
            2 => Just((0, CaseCommand::ReachMilestone { item: "charged".into() })),
            1 => Just((0, CaseCommand::Suspend)),
            6 => Just((0, CaseCommand::Resume)),
            1 => Just((0, CaseCommand::Close { reason: None })),
            4 => Just((0, CaseCommand::Reopen { reason: None })),
            1 => Just((0, CaseCommand::CompleteCase)),
            2 => Just((0, CaseCommand::AddNote { text: "n".into() })),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn random_commands_never_panic_and_replay_matches(cmds in proptest::collection::vec(command(), 1..80)) {
            let def = burglary();
            let everyone = who(&["call_handler", "dispatcher", "response_officer", "investigator", "supervisor", "csi", "victim_care"]);
            let system = who(&[SYSTEM_ROLE]);
            let open = CaseCommand::Open {
                case_file: fields(json!({
                    "reported_at": "2026-01-05T08:55:00Z",
                    "incident_location": "L-1",
                    "premises_type": "dwelling",
                    "victim": "P-1",
                    "victim_vulnerable": false,
                })),
                classification: None,
            };
            let mut state = CaseState::default();
            let mut log = Vec::new();
            for e in decide(&def, &state, &everyone, open, NOW).unwrap() {
                state.apply(&def, &e).unwrap();
                log.push(e);
            }
            for (who_idx, cmd) in cmds {
                let principal = if who_idx == 1 { &system } else { &everyone };
                let before = state.clone();
                match decide(&def, &state, principal, cmd, NOW) {
                    Ok(events) => {
                        for e in &events {
                            state.apply(&def, e).unwrap();
                        }
                        log.extend(events);
                    }
                    Err(_) => prop_assert_eq!(&state, &before),
                }
            }
            let replayed = CaseState::replay(&def, &log).unwrap();
            prop_assert_eq!(replayed, state);
        }
    }
}
