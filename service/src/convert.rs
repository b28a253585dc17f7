//! Protobuf <-> engine conversions, all in one place. Requests are checked
//! here: a value without a kind, an unknown enum number, a non-finite
//! number or a malformed id is INVALID_ARGUMENT naming the request field.

use std::collections::BTreeMap;
use std::time::Duration;

use casebook_engine::case::{
    CaseCommand, CaseFile, CaseStatus, CaseView, DeadlineDue, EntityRole, InstanceId, ItemRef,
    PoleKind, PoleRef,
};
use casebook_engine::definition::ItemKey;
use casebook_engine::engine::{CommandContext, CommandId};
use casebook_engine::log::{CorrelationId, RecordedEvent, Source, Timestamp};
use casebook_engine::projection::query::{
    CaseSummary, DeadlineEntry, FieldCondition, FieldFilter, PageRequest, ProjectedCase,
    SearchOrder, TimeRange, TimelineEntry, WorkItem,
};
use casebook_engine::projection::Consistency;
use casebook_engine::rules::ItemState;
use casebook_engine::security::Classification;
use casebook_engine::security::PositionToken;
use casebook_proto::v1 as pb;
use serde_json::Value as Json;
use tonic::Status;

use crate::status::invalid;

/// Longest a caller may ask a read to wait for its own writes.
pub const MAX_CONSISTENCY_WAIT: Duration = Duration::from_secs(30);

// ---- values -------------------------------------------------------------

/// A protobuf value as JSON (the engine's case-file representation).
///
/// Errors: INVALID_ARGUMENT at `path` for a value without a kind or a
/// non-finite number.
pub fn value_to_json(v: &pb::Value, path: &str) -> Result<Json, Status> {
    value_at_depth(v, path, 0)
}

/// [`value_to_json`] of a value `depth` lists inside a field: deeper than
/// the engine's `MAX_VALUE_DEPTH` is refused before recursing further.
fn value_at_depth(v: &pb::Value, path: &str, depth: usize) -> Result<Json, Status> {
    use pb::value::Kind;
    if depth > casebook_engine::case::MAX_VALUE_DEPTH {
        return Err(invalid(
            path,
            format!(
                "a value nested deeper than {} levels",
                casebook_engine::case::MAX_VALUE_DEPTH
            ),
        ));
    }
    Ok(match &v.kind {
        None => return Err(invalid(path, "a value must set one of its kinds")),
        Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::Boolean(b)) => Json::Bool(*b),
        Some(Kind::Integer(i)) => Json::from(*i),
        Some(Kind::Decimal(d)) => serde_json::Number::from_f64(*d)
            .map(Json::Number)
            .ok_or_else(|| invalid(path, "a decimal must be a finite number"))?,
        Some(Kind::Text(s)) => Json::String(s.clone()),
        Some(Kind::GeoPoint(g)) => {
            let num = |x: f64, what: &str| {
                serde_json::Number::from_f64(x)
                    .map(Json::Number)
                    .ok_or_else(|| invalid(&format!("{path}.{what}"), "must be a finite number"))
            };
            let mut o = serde_json::Map::new();
            o.insert("lat".into(), num(g.lat, "lat")?);
            o.insert("lon".into(), num(g.lon, "lon")?);
            Json::Object(o)
        }
        Some(Kind::List(l)) => Json::Array(
            l.values
                .iter()
                .enumerate()
                .map(|(i, v)| value_at_depth(v, &format!("{path}[{i}]"), depth + 1))
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// A JSON case-file value as a protobuf value.
pub fn json_to_value(v: &Json) -> pb::Value {
    use pb::value::Kind;
    let kind = match v {
        Json::Null => Kind::NullValue(pb::NullValue::NullValue as i32),
        Json::Bool(b) => Kind::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Kind::Integer(i),
            None => Kind::Decimal(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Kind::Text(s.clone()),
        Json::Array(items) => Kind::List(pb::ValueList {
            values: items.iter().map(json_to_value).collect(),
        }),
        Json::Object(o) => match (
            o.get("lat").and_then(Json::as_f64),
            o.get("lon").and_then(Json::as_f64),
        ) {
            (Some(lat), Some(lon)) if o.len() == 2 => Kind::GeoPoint(pb::GeoPoint { lat, lon }),
            _ => Kind::Text(v.to_string()),
        },
    };
    pb::Value { kind: Some(kind) }
}

/// A protobuf case file as the engine's.
///
/// Errors: INVALID_ARGUMENT at `path.<field>`.
pub fn case_file(file: Option<&pb::CaseFile>, path: &str) -> Result<CaseFile, Status> {
    let mut fields = BTreeMap::new();
    if let Some(file) = file {
        for (k, v) in &file.fields {
            fields.insert(k.clone(), value_to_json(v, &format!("{path}.{k}"))?);
        }
    }
    Ok(CaseFile::from(fields))
}

/// Case-file (or service) values as a protobuf case file.
pub fn case_file_out<'a>(fields: impl Iterator<Item = (&'a str, &'a Json)>) -> pb::CaseFile {
    pb::CaseFile {
        fields: fields
            .map(|(k, v)| (k.to_string(), json_to_value(v)))
            .collect(),
    }
}

// ---- scalars ------------------------------------------------------------

/// An engine timestamp as a protobuf one.
pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    let micros = t.as_micros();
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// A protobuf timestamp as an engine one.
///
/// Errors: INVALID_ARGUMENT at `path` outside the representable range.
pub fn timestamp_in(t: &prost_types::Timestamp, path: &str) -> Result<Timestamp, Status> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(invalid(path, "nanos must be 0..999999999"));
    }
    t.seconds
        .checked_mul(1_000_000)
        .and_then(|s| s.checked_add(i64::from(t.nanos / 1000)))
        .map(Timestamp::from_micros)
        .ok_or_else(|| invalid(path, "out of range"))
}

/// An engine classification as the protobuf enum.
pub fn classification(c: Classification) -> pb::Classification {
    match c {
        Classification::Official => pb::Classification::Official,
        Classification::OfficialSensitive => pb::Classification::OfficialSensitive,
        Classification::Secret => pb::Classification::Secret,
        Classification::TopSecret => pb::Classification::TopSecret,
    }
}

/// A protobuf classification (0: not given).
///
/// Errors: INVALID_ARGUMENT at `path` for an unknown number.
pub fn classification_in(n: i32, path: &str) -> Result<Option<Classification>, Status> {
    match pb::Classification::try_from(n) {
        Ok(pb::Classification::Unspecified) => Ok(None),
        Ok(pb::Classification::Official) => Ok(Some(Classification::Official)),
        Ok(pb::Classification::OfficialSensitive) => Ok(Some(Classification::OfficialSensitive)),
        Ok(pb::Classification::Secret) => Ok(Some(Classification::Secret)),
        Ok(pb::Classification::TopSecret) => Ok(Some(Classification::TopSecret)),
        Err(_) => Err(invalid(path, format!("unknown classification {n}"))),
    }
}

/// The protobuf case status.
pub fn case_status(s: CaseStatus) -> pb::CaseStatus {
    match s {
        CaseStatus::Active => pb::CaseStatus::Active,
        CaseStatus::Suspended => pb::CaseStatus::Suspended,
        CaseStatus::Completed => pb::CaseStatus::Completed,
        CaseStatus::Terminated => pb::CaseStatus::Terminated,
        CaseStatus::Closed => pb::CaseStatus::Closed,
        _ => pb::CaseStatus::Unspecified,
    }
}

fn case_status_in(n: i32, path: &str) -> Result<CaseStatus, Status> {
    match pb::CaseStatus::try_from(n) {
        Ok(pb::CaseStatus::Active) => Ok(CaseStatus::Active),
        Ok(pb::CaseStatus::Suspended) => Ok(CaseStatus::Suspended),
        Ok(pb::CaseStatus::Completed) => Ok(CaseStatus::Completed),
        Ok(pb::CaseStatus::Terminated) => Ok(CaseStatus::Terminated),
        Ok(pb::CaseStatus::Closed) => Ok(CaseStatus::Closed),
        _ => Err(invalid(path, format!("not a case status: {n}"))),
    }
}

/// The protobuf item state.
pub fn item_state(s: ItemState) -> pb::ItemState {
    match s {
        ItemState::Available => pb::ItemState::Available,
        ItemState::Enabled => pb::ItemState::Enabled,
        ItemState::Disabled => pb::ItemState::Disabled,
        ItemState::Active => pb::ItemState::ActiveItem,
        ItemState::Suspended => pb::ItemState::SuspendedItem,
        ItemState::Completed => pb::ItemState::CompletedItem,
        ItemState::Terminated => pb::ItemState::TerminatedItem,
        ItemState::Failed => pb::ItemState::Failed,
    }
}

/// Paging (defaults: offset 0, limit 50); the engine checks the bounds.
pub fn page(p: Option<&pb::PageRequest>) -> PageRequest {
    match p {
        None => PageRequest::default(),
        Some(p) => PageRequest {
            offset: p.offset as usize,
            limit: if p.limit == 0 { 50 } else { p.limit as usize },
        },
    }
}

/// Read-your-writes from the request (none: eventual).
///
/// Errors: INVALID_ARGUMENT for a wait over [`MAX_CONSISTENCY_WAIT`].
pub fn consistency(c: Option<&pb::Consistency>) -> Result<Consistency, Status> {
    let Some(c) = c.filter(|c| c.min_position > 0) else {
        return Ok(Consistency::Eventual);
    };
    let timeout = match c.timeout_ms {
        0 => Duration::from_secs(5),
        ms => Duration::from_millis(u64::from(ms)),
    };
    if timeout > MAX_CONSISTENCY_WAIT {
        return Err(invalid(
            "consistency.timeout_ms",
            format!("at most {} ms", MAX_CONSISTENCY_WAIT.as_millis()),
        ));
    }
    Ok(Consistency::AtLeast {
        position: position(c.min_position),
        timeout,
    })
}

/// The engine's command context from the request's.
///
/// Errors: INVALID_ARGUMENT for a malformed command or correlation id.
pub fn context(
    c: Option<&pb::CommandContext>,
    caller_system: &str,
) -> Result<CommandContext, Status> {
    let mut context = CommandContext::default();
    let Some(c) = c else {
        context.source = Some(Source::system(caller_system));
        return Ok(context);
    };
    if !c.reason.is_empty() {
        context.reason = Some(c.reason.clone());
    }
    if !c.command_id.is_empty() {
        context.command_id =
            Some(CommandId::new(&c.command_id).map_err(|e| invalid("context.command_id", e))?);
    }
    let system = if c.source_system.is_empty() {
        caller_system
    } else {
        &c.source_system
    };
    context.source = Some(if c.source_reference.is_empty() {
        Source::system(system)
    } else {
        Source::with_reference(system, c.source_reference.clone())
    });
    if !c.correlation_id.is_empty() {
        let id = uuid::Uuid::parse_str(&c.correlation_id)
            .map_err(|e| invalid("context.correlation_id", format!("not a UUID: {e}")))?;
        context.correlation_id = Some(CorrelationId(id));
    }
    Ok(context)
}

// ---- commands -----------------------------------------------------------

fn item_ref(r: Option<&pb::ItemRef>, path: &str) -> Result<ItemRef, Status> {
    let r = r.ok_or_else(|| invalid(path, "the plan item is required"))?;
    if r.key.is_empty() {
        return Err(invalid(
            &format!("{path}.key"),
            "the plan item key is required",
        ));
    }
    Ok(ItemRef {
        key: ItemKey::new(r.key.clone()),
        instance: (r.instance > 0).then_some(InstanceId(r.instance)),
    })
}

fn pole_kind(n: i32, path: &str) -> Result<PoleKind, Status> {
    match pb::PoleKind::try_from(n) {
        Ok(pb::PoleKind::Person) => Ok(PoleKind::Person),
        Ok(pb::PoleKind::Object) => Ok(PoleKind::Object),
        Ok(pb::PoleKind::Location) => Ok(PoleKind::Location),
        Ok(pb::PoleKind::Event) => Ok(PoleKind::Event),
        _ => Err(invalid(path, "one of PERSON, OBJECT, LOCATION, EVENT")),
    }
}

fn pole_kind_out(k: PoleKind) -> pb::PoleKind {
    match k {
        PoleKind::Person => pb::PoleKind::Person,
        PoleKind::Object => pb::PoleKind::Object,
        PoleKind::Location => pb::PoleKind::Location,
        PoleKind::Event => pb::PoleKind::Event,
    }
}

/// An entity role from its word (any other word is recorded as `other`).
pub fn entity_role(s: &str) -> EntityRole {
    match s {
        "victim" => EntityRole::Victim,
        "witness" => EntityRole::Witness,
        "suspect" => EntityRole::Suspect,
        "reporting_person" => EntityRole::ReportingPerson,
        "officer_in_case" => EntityRole::OfficerInCase,
        "missing_person" => EntityRole::MissingPerson,
        "scene" => EntityRole::Scene,
        "property" => EntityRole::Property,
        other => EntityRole::Other(other.to_string()),
    }
}

fn entity_role_out(r: &EntityRole) -> String {
    match r {
        EntityRole::Victim => "victim".into(),
        EntityRole::Witness => "witness".into(),
        EntityRole::Suspect => "suspect".into(),
        EntityRole::ReportingPerson => "reporting_person".into(),
        EntityRole::OfficerInCase => "officer_in_case".into(),
        EntityRole::MissingPerson => "missing_person".into(),
        EntityRole::Scene => "scene".into(),
        EntityRole::Property => "property".into(),
        EntityRole::Other(s) => s.clone(),
    }
}

/// The engine command an `Execute` request names.
///
/// Errors: INVALID_ARGUMENT naming the missing or malformed field.
pub fn command(c: Option<&pb::execute_request::Command>) -> Result<CaseCommand, Status> {
    use pb::execute_request::Command as C;
    let c = c.ok_or_else(|| invalid("command", "set one command"))?;
    Ok(match c {
        C::UpdateCaseFile(u) => CaseCommand::UpdateCaseFile {
            changes: case_file(u.changes.as_ref(), "update_case_file.changes")?,
        },
        C::Start(r) => CaseCommand::Start {
            item: item_ref(Some(r), "start")?,
        },
        C::Claim(r) => CaseCommand::Claim {
            item: item_ref(Some(r), "claim")?,
        },
        C::Assign(a) => CaseCommand::Assign {
            item: item_ref(a.item.as_ref(), "assign.item")?,
            assignee: a.assignee.clone(),
        },
        C::AssignTeam(a) => CaseCommand::AssignTeam {
            item: item_ref(a.item.as_ref(), "assign_team.item")?,
            team: a.team.clone(),
        },
        C::Complete(c) => CaseCommand::Complete {
            item: item_ref(c.item.as_ref(), "complete.item")?,
            outputs: case_file(c.outputs.as_ref(), "complete.outputs")?,
        },
        C::Fail(f) => CaseCommand::Fail {
            item: item_ref(f.item.as_ref(), "fail.item")?,
            reason: f.reason.clone(),
        },
        C::Terminate(r) => CaseCommand::Terminate {
            item: item_ref(Some(r), "terminate")?,
        },
        C::Disable(r) => CaseCommand::Disable {
            item: item_ref(Some(r), "disable")?,
        },
        C::Reenable(r) => CaseCommand::Reenable {
            item: item_ref(Some(r), "reenable")?,
        },
        C::AcknowledgeAlert(a) => CaseCommand::AcknowledgeAlert {
            alert: casebook_engine::case::AlertId(a.id),
        },
        C::SuspendItem(r) => CaseCommand::SuspendItem {
            item: item_ref(Some(r), "suspend_item")?,
        },
        C::ResumeItem(r) => CaseCommand::ResumeItem {
            item: item_ref(Some(r), "resume_item")?,
        },
        C::AddDiscretionary(a) => discretionary(&a.item, &a.stage, "add_discretionary")?,
        C::ReachMilestone(r) => CaseCommand::ReachMilestone {
            item: item_ref(Some(r), "reach_milestone")?,
        },
        C::LinkEntity(l) => {
            let entity = l
                .entity
                .as_ref()
                .ok_or_else(|| invalid("link_entity.entity", "the entity is required"))?;
            CaseCommand::LinkEntity {
                entity: PoleRef {
                    kind: pole_kind(entity.kind, "link_entity.entity.kind")?,
                    id: entity.id.clone(),
                },
                role: entity_role(&l.role),
            }
        }
        C::AddNote(n) => CaseCommand::AddNote {
            text: n.text.clone(),
        },
        C::Suspend(_) => CaseCommand::Suspend,
        C::Resume(_) => CaseCommand::Resume,
        C::CompleteCase(_) => CaseCommand::CompleteCase,
        C::Close(r) => CaseCommand::Close {
            reason: (!r.reason.is_empty()).then(|| r.reason.clone()),
        },
        C::Reopen(r) => CaseCommand::Reopen {
            reason: (!r.reason.is_empty()).then(|| r.reason.clone()),
        },
        C::RetryIncident(r) => CaseCommand::RetryIncident {
            invocation: casebook_engine::case::InvocationId(r.invocation),
        },
    })
}

/// The command planning a discretionary item.
///
/// Errors: INVALID_ARGUMENT at `path.item` when no item is named.
pub fn discretionary(item: &str, stage: &str, path: &str) -> Result<CaseCommand, Status> {
    if item.is_empty() {
        return Err(invalid(
            &format!("{path}.item"),
            "the discretionary item is required",
        ));
    }
    Ok(CaseCommand::AddDiscretionary {
        item: ItemKey::new(item.to_string()),
        stage: (!stage.is_empty()).then(|| ItemKey::new(stage.to_string())),
    })
}

/// The task a task request names.
///
/// Errors: INVALID_ARGUMENT at `item`.
pub fn task(item: Option<&pb::ItemRef>) -> Result<ItemRef, Status> {
    item_ref(item, "item")
}

// ---- views --------------------------------------------------------------

/// The protobuf case view of a case read from the views (`GetCase`,
/// `GetCaseEvidential`).
pub fn projected_case(case_id: &str, found: &ProjectedCase) -> pb::CaseView {
    case_view(case_id, &found.view, found.version.0, wire(found.position))
}

/// The protobuf case view.
pub fn case_view(case_id: &str, view: &CaseView, version: u64, position: u64) -> pb::CaseView {
    let (case_type, definition_version) = view
        .definition
        .as_ref()
        .map(|d| (d.key.as_str().to_string(), d.version))
        .unwrap_or_default();
    pb::CaseView {
        case_id: case_id.to_string(),
        case_type,
        definition_version,
        status: case_status(view.status) as i32,
        classification: classification(view.classification) as i32,
        opened_at: view.opened_at.map(timestamp),
        case_file: Some(case_file_out(
            view.case_file.iter().map(|(k, v)| (k.as_str(), v)),
        )),
        items: view
            .items
            .iter()
            .map(|i| pb::ItemView {
                instance: i.instance.0,
                item: i.item.as_str().to_string(),
                parent: i.parent.map_or(0, |p| p.0),
                state: item_state(i.state) as i32,
                discretionary: i.discretionary,
                claimed_by: i.claimed_by.clone().unwrap_or_default(),
                team: i.team.clone().unwrap_or_default(),
            })
            .collect(),
        reached_milestones: view
            .reached
            .iter()
            .map(|k| k.as_str().to_string())
            .collect(),
        planned: view
            .planned
            .iter()
            .map(|p| pb::PlannedItem {
                item: p.item.as_str().to_string(),
                stage: p
                    .stage
                    .as_ref()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
            })
            .collect(),
        entities: view
            .entities
            .iter()
            .map(|e| pb::EntityLinkView {
                entity: Some(pb::PoleRef {
                    kind: pole_kind_out(e.entity.kind) as i32,
                    id: e.entity.id.clone(),
                }),
                role: entity_role_out(&e.role),
                by: e.by.clone(),
            })
            .collect(),
        notes: view
            .notes
            .iter()
            .map(|n| pb::NoteView {
                text: n.text.clone(),
                by: n.by.clone(),
                at: Some(timestamp(n.at)),
            })
            .collect(),
        deadlines: view
            .deadlines
            .iter()
            .map(|d| {
                let (due, working_days, from) = match d.due {
                    DeadlineDue::At { due } => (Some(timestamp(due)), 0, None),
                    DeadlineDue::WorkingDays { days, from } => (None, days, Some(timestamp(from))),
                };
                pb::RunningDeadline {
                    deadline: d.deadline.as_str().to_string(),
                    item: d
                        .item
                        .as_ref()
                        .map(|i| i.as_str().to_string())
                        .unwrap_or_default(),
                    instance: d.instance.map_or(0, |i| i.0),
                    due,
                    working_days,
                    from,
                }
            })
            .collect(),
        version,
        position,
        incidents: view
            .incidents
            .iter()
            .map(|i| pb::Incident {
                case_id: case_id.to_string(),
                invocation: i.invocation.0,
                instance: i.instance.0,
                item: i.item.as_str().to_string(),
                service: i.service.as_str().to_string(),
                attempts: i.attempts,
                error: i.error.clone(),
                at: None,
                classification: classification(view.classification) as i32,
            })
            .collect(),
    }
}

/// A protobuf incident from the tenant-wide list.
pub fn incident(i: &casebook_engine::orchestration::pending::IncidentEntry) -> pb::Incident {
    pb::Incident {
        case_id: i.case_id.clone(),
        invocation: i.invocation.0,
        instance: 0,
        item: i.item.as_str().to_string(),
        service: i.service.clone(),
        attempts: i.attempts,
        error: i.error.clone(),
        at: Some(timestamp(i.at)),
        classification: classification(i.classification) as i32,
    }
}

/// A protobuf search hit.
pub fn summary(s: &CaseSummary) -> pb::CaseSummary {
    pb::CaseSummary {
        case_id: s.case_id.clone(),
        case_type: s.case_type.clone(),
        definition_version: s.definition_version,
        status: case_status(s.status) as i32,
        classification: classification(s.classification) as i32,
        opened_at: Some(timestamp(s.opened_at)),
        updated_at: Some(timestamp(s.updated_at)),
        active_stages: s.active_stages.clone(),
        version: s.version.0,
    }
}

fn time_range(r: Option<&pb::TimeRange>, path: &str) -> Result<Option<TimeRange>, Status> {
    let Some(r) = r else { return Ok(None) };
    Ok(Some(TimeRange {
        from: r
            .from
            .as_ref()
            .map(|t| timestamp_in(t, &format!("{path}.from")))
            .transpose()?,
        to: r
            .to
            .as_ref()
            .map(|t| timestamp_in(t, &format!("{path}.to")))
            .transpose()?,
    }))
}

/// The engine's search query.
///
/// Errors: INVALID_ARGUMENT naming the malformed field.
pub fn search(
    r: &pb::SearchCasesRequest,
) -> Result<casebook_engine::projection::query::SearchQuery, Status> {
    use pb::field_filter::Condition;
    let mut fields = Vec::with_capacity(r.fields.len());
    for (i, f) in r.fields.iter().enumerate() {
        let path = format!("fields[{i}]");
        let condition = match &f.condition {
            None => return Err(invalid(&path, "set one condition")),
            Some(Condition::Equals(v)) => {
                FieldCondition::Equals(value_to_json(v, &format!("{path}.equals"))?)
            }
            Some(Condition::OneOf(l)) => FieldCondition::OneOf(
                l.values
                    .iter()
                    .enumerate()
                    .map(|(j, v)| value_to_json(v, &format!("{path}.one_of[{j}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Some(Condition::Words(w)) => FieldCondition::Words(w.clone()),
            Some(Condition::Between(b)) => FieldCondition::Between {
                from: b
                    .from
                    .as_ref()
                    .map(|v| value_to_json(v, &format!("{path}.between.from")))
                    .transpose()?,
                to: b
                    .to
                    .as_ref()
                    .map(|v| value_to_json(v, &format!("{path}.between.to")))
                    .transpose()?,
            },
        };
        fields.push(FieldFilter {
            field: f.field.clone(),
            condition,
        });
    }
    let order = match pb::SearchOrder::try_from(r.order) {
        Ok(pb::SearchOrder::OpenedDescending) => SearchOrder::OpenedDescending,
        Ok(pb::SearchOrder::OpenedAscending) => SearchOrder::OpenedAscending,
        Ok(pb::SearchOrder::UpdatedDescending) => SearchOrder::UpdatedDescending,
        Ok(pb::SearchOrder::UpdatedAscending) => SearchOrder::UpdatedAscending,
        Ok(pb::SearchOrder::CaseId) => SearchOrder::CaseId,
        Err(_) => return Err(invalid("order", format!("unknown order {}", r.order))),
    };
    Ok(casebook_engine::projection::query::SearchQuery {
        case_type: (!r.case_type.is_empty()).then(|| r.case_type.clone()),
        status: r
            .status
            .iter()
            .enumerate()
            .map(|(i, s)| case_status_in(*s, &format!("status[{i}]")))
            .collect::<Result<_, _>>()?,
        stage: (!r.stage.is_empty()).then(|| r.stage.clone()),
        fields,
        opened: time_range(r.opened.as_ref(), "opened")?,
        updated: time_range(r.updated.as_ref(), "updated")?,
        text: (!r.text.is_empty()).then(|| r.text.clone()),
        order,
        page: page(r.page.as_ref()),
    })
}

/// A position token from the wire. Every position the API carries is the
/// caller's tenant's token ([`PositionToken`]), never the log's global
/// position: the engine makes and checks them, and these two helpers are
/// the only place the service turns them into numbers and back.
pub fn position(wire: u64) -> PositionToken {
    PositionToken::from_u64(wire)
}

/// A position token for the wire (see [`position`]).
pub fn wire(token: PositionToken) -> u64 {
    token.get()
}

/// A protobuf timeline entry.
pub fn timeline_entry(e: &TimelineEntry) -> pb::TimelineEntry {
    pb::TimelineEntry {
        position: wire(e.position),
        version: e.version.0,
        at: Some(timestamp(e.at)),
        actor: e.actor.clone(),
        event_type: e.event_type.clone(),
        summary: e.summary.clone(),
        fields: e.fields.clone(),
        source: e.source.clone(),
        source_reference: e.source_reference.clone().unwrap_or_default(),
        reason: e.reason.clone().unwrap_or_default(),
        correlation_id: e.correlation_id.clone(),
        classification: classification(e.classification) as i32,
    }
}

/// A protobuf work item.
pub fn work_item(w: &WorkItem) -> pb::WorkItem {
    pb::WorkItem {
        case_id: w.case_id.clone(),
        case_type: w.case_type.clone(),
        instance: w.instance.0,
        item: w.item.as_str().to_string(),
        name: w.name.clone(),
        state: item_state(w.state) as i32,
        roles: w.roles.clone(),
        team: w.team.clone().unwrap_or_default(),
        assignee: w.assignee.clone().unwrap_or_default(),
        due: w.due.map(timestamp),
        classification: classification(w.classification) as i32,
        alert: w.alert.as_ref().map(|a| pb::QueueAlert {
            id: a.alert.0,
            message: a.message.clone(),
            priority: priority(a.priority).into(),
        }),
    }
}

/// A priority's name.
fn priority(p: casebook_engine::definition::Priority) -> &'static str {
    use casebook_engine::definition::Priority as P;
    match p {
        P::Low => "low",
        P::Normal => "normal",
        P::High => "high",
        P::Urgent => "urgent",
    }
}

/// A protobuf deadline entry.
pub fn deadline(d: &DeadlineEntry) -> pb::DeadlineEntry {
    pb::DeadlineEntry {
        case_id: d.case_id.clone(),
        case_type: d.case_type.clone(),
        deadline: d.deadline.as_str().to_string(),
        name: d.name.clone().unwrap_or_default(),
        item: d
            .item
            .as_ref()
            .map(|i| i.as_str().to_string())
            .unwrap_or_default(),
        instance: d.instance.map_or(0, |i| i.0),
        due_at: Some(timestamp(d.due_at)),
        overdue: d.overdue,
        classification: classification(d.classification) as i32,
    }
}

/// A protobuf recorded event (stream named `<category>/<id>`: the tenant is
/// the caller's) at its position token (`Engine::event_token`).
pub fn recorded(e: &RecordedEvent, position: PositionToken) -> pb::RecordedEvent {
    let m = &e.metadata;
    pb::RecordedEvent {
        stream: format!("{}/{}", e.stream.category(), e.stream.id()),
        version: e.version.0,
        position: wire(position),
        recorded: Some(timestamp(e.recorded)),
        id: e.id.to_string(),
        event_type: e.event_type.to_string(),
        payload: e.payload.to_vec(),
        actor: m.actor.to_string(),
        correlation_id: m.correlation_id.0.to_string(),
        causation_id: m.causation_id.map(|c| c.0.to_string()).unwrap_or_default(),
        source_system: m.source.system.clone(),
        source_reference: m.source.reference.clone().unwrap_or_default(),
        reason: m.reason.clone().unwrap_or_default(),
        classification: classification(m.classification) as i32,
    }
}

/// A disclosure a worker reports with its answer (its fields are checked
/// by the engine, which names the blank one).
pub fn disclosure(d: pb::JobDisclosure) -> casebook_engine::case::DisclosureRecord {
    casebook_engine::case::DisclosureRecord {
        recipient: d.recipient,
        what: d.what,
        why: d.why,
        channel: d.channel,
    }
}

/// A resource kind from the wire.
///
/// Errors: INVALID_ARGUMENT at `kind` for an unspecified or unknown kind.
pub fn resource_kind(kind: i32) -> Result<casebook_engine::resources::ResourceKind, Status> {
    use casebook_engine::resources::ResourceKind;
    match pb::ResourceKind::try_from(kind) {
        Ok(pb::ResourceKind::Boundaries) => Ok(ResourceKind::Boundaries),
        Ok(pb::ResourceKind::DecisionTable) => Ok(ResourceKind::DecisionTable),
        Ok(pb::ResourceKind::ReferenceData) => Ok(ResourceKind::ReferenceData),
        Ok(pb::ResourceKind::Contacts) => Ok(ResourceKind::Contacts),
        Ok(pb::ResourceKind::Unspecified) | Err(_) => Err(crate::status::invalid(
            "kind",
            "give the resource's kind: boundaries, decision table, reference data or contacts",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_bad_ones_name_their_path() {
        let json = serde_json::json!({
            "n": 3, "d": 2.5, "s": "x", "b": true, "z": null,
            "g": {"lat": 51.5, "lon": -0.1}, "l": [1, 2]
        });
        for (k, v) in json.as_object().unwrap() {
            assert_eq!(&value_to_json(&json_to_value(v), k).unwrap(), v, "{k}");
        }
        let err = value_to_json(&pb::Value { kind: None }, "case_file.x").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("case_file.x"));
        let nan = pb::Value {
            kind: Some(pb::value::Kind::Decimal(f64::NAN)),
        };
        assert!(value_to_json(&nan, "d").is_err());
    }

    #[test]
    fn values_nested_deeper_than_the_engine_allows_are_refused_by_path() {
        let nested = |depth: usize| {
            let mut v = pb::Value {
                kind: Some(pb::value::Kind::Integer(1)),
            };
            for _ in 0..depth {
                v = pb::Value {
                    kind: Some(pb::value::Kind::List(pb::ValueList { values: vec![v] })),
                };
            }
            v
        };
        let max = casebook_engine::case::MAX_VALUE_DEPTH;
        assert!(value_to_json(&nested(max), "case_file.f").is_ok());
        let err = value_to_json(&nested(max + 1), "case_file.f").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().starts_with("case_file.f[0]") && err.message().contains("nested deeper"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn timestamps_round_trip_before_and_after_the_epoch() {
        for micros in [0, 1, -1, 1_700_000_000_123_456, -86_400_000_001] {
            let t = Timestamp::from_micros(micros);
            assert_eq!(timestamp_in(&timestamp(t), "t").unwrap(), t);
        }
    }

    #[test]
    fn commands_need_their_fields() {
        assert!(command(None).is_err());
        let c = pb::execute_request::Command::Complete(pb::Complete {
            item: None,
            outputs: None,
        });
        let err = command(Some(&c)).unwrap_err();
        assert!(err.message().contains("complete.item"), "{}", err.message());
        assert!(classification_in(99, "c").is_err());
        assert_eq!(entity_role("victim"), EntityRole::Victim);
        assert_eq!(
            entity_role("neighbour"),
            EntityRole::Other("neighbour".into())
        );
    }
}
