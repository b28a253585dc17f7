//! Query and result types of the built-in views.

use serde::{Deserialize, Serialize};

use crate::case::{CaseStatus, DeadlineDue, InstanceId};
use crate::definition::{DeadlineKey, ItemKey};
use crate::log::{StreamVersion, Timestamp};
use crate::rules::ItemState;
use crate::security::{Classification, PositionToken};

use super::error::QueryError;

/// The largest page any query returns.
pub const MAX_PAGE_SIZE: usize = 1000;
/// The furthest a query may page (narrow the query to go further).
pub const MAX_OFFSET: usize = 100_000;

/// Which slice of the results to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// Results to skip.
    pub offset: usize,
    /// Results to return: 1 to [`MAX_PAGE_SIZE`].
    pub limit: usize,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            offset: 0,
            limit: 50,
        }
    }
}

impl PageRequest {
    /// The first `limit` results.
    pub fn first(limit: usize) -> Self {
        PageRequest { offset: 0, limit }
    }

    /// Checks the bounds.
    ///
    /// Errors: [`QueryError::PageSize`], [`QueryError::Offset`].
    pub fn check(&self) -> Result<(), QueryError> {
        if self.limit == 0 || self.limit > MAX_PAGE_SIZE {
            return Err(QueryError::PageSize {
                requested: self.limit,
                max: MAX_PAGE_SIZE,
            });
        }
        if self.offset > MAX_OFFSET {
            return Err(QueryError::Offset {
                requested: self.offset,
                max: MAX_OFFSET,
            });
        }
        Ok(())
    }
}

/// A page of results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The results.
    pub items: Vec<T>,
    /// The offset of the next page, if there are more results.
    pub next_offset: Option<usize>,
    /// The number of matching results, where the query counts them all:
    /// search does when its conditions narrow the cases to a thousand or
    /// fewer; broader searches, and the queue and deadline scans, walk their
    /// order and stop at the page's end.
    pub total: Option<usize>,
}

impl<T> Page<T> {
    /// The slice `page` asks for of `all` (already in order). `counted`:
    /// whether `all` is every match, so that its length is the total.
    pub fn of(all: impl IntoIterator<Item = T>, page: &PageRequest, counted: bool) -> Self {
        let mut total = 0;
        let mut items = Vec::with_capacity(page.limit.min(MAX_PAGE_SIZE));
        for (i, item) in all.into_iter().enumerate() {
            total = i + 1;
            if i >= page.offset && items.len() < page.limit {
                items.push(item);
            }
        }
        let next = page.offset + items.len();
        Page {
            items,
            next_offset: (next < total).then_some(next),
            total: counted.then_some(total),
        }
    }
}

/// A case as search results show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseSummary {
    /// The case id.
    pub case_id: String,
    /// Its case type.
    pub case_type: String,
    /// The definition version it runs.
    pub definition_version: u32,
    /// Its status.
    pub status: CaseStatus,
    /// Its classification.
    pub classification: Classification,
    /// When it was opened.
    pub opened_at: Timestamp,
    /// When its last event was recorded.
    pub updated_at: Timestamp,
    /// Stages currently active.
    pub active_stages: Vec<String>,
    /// Its version (last event).
    pub version: StreamVersion,
}

/// A condition on a case-file field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldCondition {
    /// The field equals the value (for a list field: contains it).
    Equals(serde_json::Value),
    /// The field equals one of the values.
    OneOf(Vec<serde_json::Value>),
    /// The field holds every one of these words (only for a field its
    /// definition marks `search = "text"`).
    Words(String),
    /// The field lies in the inclusive range (numbers, dates, date-times,
    /// text); an open end is `None`.
    Between {
        /// Lower bound.
        from: Option<serde_json::Value>,
        /// Upper bound.
        to: Option<serde_json::Value>,
    },
}

/// A filter on one case-file field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldFilter {
    /// The field key.
    pub field: String,
    /// The condition.
    pub condition: FieldCondition,
}

impl FieldFilter {
    /// `field == value`.
    pub fn equals(field: impl Into<String>, value: serde_json::Value) -> Self {
        FieldFilter {
            field: field.into(),
            condition: FieldCondition::Equals(value),
        }
    }
}

/// An inclusive time range; an open end is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRange {
    /// From (inclusive).
    pub from: Option<Timestamp>,
    /// To (inclusive).
    pub to: Option<Timestamp>,
}

/// The order of search results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchOrder {
    /// Newest first.
    #[default]
    OpenedDescending,
    /// Oldest first.
    OpenedAscending,
    /// Most recently changed first.
    UpdatedDescending,
    /// Least recently changed first.
    UpdatedAscending,
    /// By case id.
    CaseId,
}

/// A case search. Every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchQuery {
    /// The case type (needed for field filters).
    pub case_type: Option<String>,
    /// Any of these statuses (empty: any).
    pub status: Vec<CaseStatus>,
    /// A stage (by key) that is active in the case.
    pub stage: Option<String>,
    /// Case-file field conditions.
    pub fields: Vec<FieldFilter>,
    /// When the case was opened.
    pub opened: Option<TimeRange>,
    /// When the case last changed.
    pub updated: Option<TimeRange>,
    /// Words that must all occur in the case's text-searchable fields (those
    /// its definition marks `search = "text"`; together, not each in one).
    pub text: Option<String>,
    /// The order.
    pub order: SearchOrder,
    /// The page.
    pub page: PageRequest,
}

/// Which open human tasks to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkQueueQuery {
    /// Tasks this role may do (none given, and no assignee or team: the
    /// caller's roles).
    pub role: Option<String>,
    /// Tasks claimed by or assigned to this principal id.
    pub assignee: Option<String>,
    /// Tasks in this team's queue (the definition's team, or the team a
    /// task was routed to).
    pub team: Option<String>,
    /// Only tasks of this case type.
    pub case_type: Option<String>,
    /// Only tasks nobody has claimed.
    pub unassigned_only: bool,
    /// The page (ordered by due date, undated last).
    pub page: PageRequest,
    /// Active tasks (the work, the default), tasks waiting for someone to
    /// start them (manual activation), or both.
    #[serde(default)]
    pub tasks: TaskStates,
}

/// Which of a work queue's tasks to list. A task waiting for a manual start
/// is not work until someone starts it (as in the CMMN engines), so a
/// queue lists active tasks unless asked for the startable ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStates {
    /// Active tasks: the work.
    #[default]
    Active,
    /// Enabled tasks, waiting for a person to start them.
    Startable,
    /// Both.
    Both,
}

impl TaskStates {
    /// Whether a task in `state` is listed.
    pub fn lists(self, state: ItemState) -> bool {
        match self {
            TaskStates::Active => state == ItemState::Active,
            TaskStates::Startable => state == ItemState::Enabled,
            TaskStates::Both => matches!(state, ItemState::Active | ItemState::Enabled),
        }
    }
}

/// An alert in a work queue (see [`WorkItem::alert`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertItem {
    /// The alert, to acknowledge it (`CaseCommand::AcknowledgeAlert`).
    pub alert: crate::case::AlertId,
    /// Its message.
    pub message: String,
    /// How urgent it is.
    pub priority: crate::definition::Priority,
}

/// An open human task, or an alert raised to a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkItem {
    /// The case.
    pub case_id: String,
    /// Its case type.
    pub case_type: String,
    /// The task's instance.
    pub instance: InstanceId,
    /// The task's key.
    pub item: ItemKey,
    /// The task's name.
    pub name: String,
    /// Enabled (waiting to be started) or active.
    pub state: ItemState,
    /// Roles that may do it.
    pub roles: Vec<String>,
    /// The team whose queue it is in, if any.
    #[serde(default)]
    pub team: Option<String>,
    /// Who claimed or was assigned it.
    pub assignee: Option<String>,
    /// Its earliest running deadline, if any.
    pub due: Option<Timestamp>,
    /// The case's classification.
    pub classification: Classification,
    /// For an alert (raised by `alert.raise`): the alert; `instance` and
    /// `item` are then the service task that raised it, `name` is its
    /// message and `roles` those who may acknowledge it.
    #[serde(default)]
    pub alert: Option<AlertItem>,
}

/// Which deadlines to list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadlineQuery {
    /// Deadlines due at or before this instant.
    pub due_before: Timestamp,
    /// "Now", to mark deadlines overdue.
    pub now: Timestamp,
    /// Only deadlines of this case type.
    pub case_type: Option<String>,
    /// The page (ordered by due time).
    pub page: PageRequest,
}

/// A running deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadlineEntry {
    /// The case.
    pub case_id: String,
    /// Its case type.
    pub case_type: String,
    /// The deadline.
    pub deadline: DeadlineKey,
    /// Its name, if the definition gives one.
    pub name: Option<String>,
    /// Its owning item.
    pub item: Option<ItemKey>,
    /// Its owning instance.
    pub instance: Option<InstanceId>,
    /// When it falls due, as the case runtime set it.
    pub due: DeadlineDue,
    /// The due instant: exact for fixed periods; for working days, counted
    /// with the tenant's working-day calendar (weekends, England and Wales
    /// bank holidays and the tenant's own non-working days; see
    /// [`crate::calendar`]).
    pub due_at: Timestamp,
    /// Whether `due_at` is before the query's `now`.
    pub overdue: bool,
    /// The case's classification.
    pub classification: Classification,
}

/// One entry of a case's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// The event's position, as the reader's tenant's token.
    pub position: PositionToken,
    /// Its version in the case stream.
    pub version: StreamVersion,
    /// When it was recorded.
    pub at: Timestamp,
    /// Who caused it.
    pub actor: String,
    /// The event type, e.g. `PlanItemCompleted`.
    pub event_type: String,
    /// What happened, in words.
    pub summary: String,
    /// Case-file fields it changed (only those the reader may see).
    pub fields: Vec<String>,
    /// The originating system.
    pub source: String,
    /// The originating system's reference.
    pub source_reference: Option<String>,
    /// Why, where given.
    pub reason: Option<String>,
    /// The correlation id tying it to a wider request.
    pub correlation_id: String,
    /// Its classification.
    pub classification: Classification,
}

/// A case as the case view projection holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectedCase {
    /// What the reader may see.
    pub view: crate::case::CaseView,
    /// The case's version (its last event).
    pub version: StreamVersion,
    /// Where its last event is, as the reader's tenant's position token.
    pub position: PositionToken,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_of_a_list_says_where_the_next_starts_and_counts_when_asked() {
        let page = PageRequest {
            offset: 2,
            limit: 3,
        };
        let p = Page::of(0..10, &page, true);
        assert_eq!(p.items, vec![2, 3, 4]);
        assert_eq!(p.next_offset, Some(5));
        assert_eq!(p.total, Some(10));
        let last = Page::of(0..5, &page, false);
        assert_eq!(last.items, vec![2, 3, 4]);
        assert_eq!(last.next_offset, None);
        assert_eq!(last.total, None);
        let past = Page::of(0..1, &page, true);
        assert!(past.items.is_empty());
        assert_eq!(past.next_offset, None);
        assert_eq!(past.total, Some(1));
    }
}
