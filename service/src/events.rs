//! The `casebook.v1.Events` service: the tenant's log, for force systems
//! recording their own facts beside the cases. The engine's own categories
//! are never written here, and read raw only by a TOP SECRET auditor (a raw
//! case event carries every field); everything else is filtered by the
//! caller's clearance against each event's classification, and a stream the
//! caller may not read looks exactly like one that does not exist.

use casebook_engine::audit::ReadContext;
use casebook_engine::engine::{raw_visible, reads_engine_streams, Engine, ADMIN_ROLE};
use casebook_engine::log::{
    Direction, EventData, EventId, ExpectedVersion, RecordedEvent, StreamId, StreamVersion,
    SubscriptionStart,
};
use casebook_engine::security::Principal;
use casebook_engine::streams::is_engine_category;
use casebook_proto::v1 as pb;
use casebook_proto::v1::events_server::Events;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::access::{access, consulted, purpose};
use crate::auth::caller;
use crate::convert;
use crate::server::Stopping;
use crate::status::{invalid, status};

/// The roles of the engine's tenant-scoped log ([`Engine::tenant_log`]),
/// which enforces them too: `integration` appends (beside administrators);
/// `auditor`, with TOP SECRET clearance, reads the engine's own streams raw.
pub use casebook_engine::engine::{AUDITOR_ROLE, INTEGRATION_ROLE};

/// Default and largest page of a read.
const DEFAULT_READ: usize = 100;

/// The Events service over an engine's store.
#[derive(Clone)]
pub struct EventsService {
    engine: Engine,
    stopping: Stopping,
}

impl EventsService {
    /// The service for `engine`; its subscriptions end when `stopping` fires.
    pub fn new(engine: Engine, stopping: Stopping) -> Self {
        EventsService { engine, stopping }
    }

    /// Events for the wire, each at its position token for the caller's
    /// tenant, never its global position.
    fn recorded(
        &self,
        principal: &Principal,
        events: &[RecordedEvent],
    ) -> Result<Vec<pb::RecordedEvent>, Status> {
        events
            .iter()
            .map(|e| {
                let token = self
                    .engine
                    .event_token(principal, e)
                    .map_err(|err| status(&err))?;
                Ok(convert::recorded(e, token))
            })
            .collect()
    }
}

/// The read context of a request: the caller and the purpose they stated.
fn reader<'a>(p: &'a Principal, purpose: &str) -> ReadContext<'a> {
    ReadContext::new(p).purpose(purpose)
}

/// The stream `<category>/<id>` of the caller's tenant.
fn stream(p: &Principal, name: &str) -> Result<StreamId, Status> {
    let (category, id) = name
        .split_once('/')
        .ok_or_else(|| invalid("stream", "name a stream as <category>/<id>"))?;
    StreamId::new(p.tenant.clone(), category, id).map_err(|e| invalid("stream", e))
}

fn limit(n: u32, max: usize) -> usize {
    match n {
        0 => DEFAULT_READ.min(max),
        n => (n as usize).min(max),
    }
}

fn expected(e: Option<&pb::ExpectedVersion>) -> ExpectedVersion {
    use pb::expected_version::Expected;
    match e.and_then(|e| e.expected.as_ref()) {
        None | Some(Expected::Any(_)) => ExpectedVersion::Any,
        Some(Expected::NoStream(_)) => ExpectedVersion::NoStream,
        Some(Expected::StreamExists(_)) => ExpectedVersion::StreamExists,
        Some(Expected::Exact(v)) => ExpectedVersion::Exact(StreamVersion(*v)),
    }
}

#[tonic::async_trait]
impl Events for EventsService {
    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        if !principal.has_role(INTEGRATION_ROLE) && !principal.has_role(ADMIN_ROLE) {
            return Err(Status::permission_denied(format!(
                "appending events takes the role {INTEGRATION_ROLE} or {ADMIN_ROLE}"
            )));
        }
        let stream = stream(&principal, &r.stream)?;
        if is_engine_category(stream.category()) {
            return Err(Status::permission_denied(format!(
                "streams of category {} are written by the engine only: use the Cases service",
                stream.category()
            )));
        }
        if r.events.is_empty() {
            return Err(invalid("events", "append at least one event"));
        }
        let context = convert::context(r.context.as_ref(), &format!("grpc:{}", principal.subject))?;
        let mut events = Vec::with_capacity(r.events.len());
        for (i, e) in r.events.into_iter().enumerate() {
            let path = format!("events[{i}]");
            if e.event_type.is_empty() {
                return Err(invalid(
                    &format!("{path}.event_type"),
                    "the event type is required",
                ));
            }
            let classification =
                convert::classification_in(e.classification, &format!("{path}.classification"))?
                    .unwrap_or_default();
            if !principal.may_see(classification) {
                return Err(Status::permission_denied(format!(
                    "{path}.classification: cannot mark an event above your own clearance"
                )));
            }
            let metadata = context
                .metadata(&principal)
                .with_classification(classification);
            let mut data = EventData::new(e.event_type, e.payload, metadata);
            if !e.id.is_empty() {
                data.id =
                    EventId(uuid::Uuid::parse_str(&e.id).map_err(|err| {
                        invalid(&format!("{path}.id"), format!("not a UUID: {err}"))
                    })?);
            }
            events.push(data);
        }
        let done = self
            .engine
            .tenant_log(&principal)
            .await
            .map_err(|e| status(&e))?
            .append(&stream, expected(r.expected.as_ref()), events)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::AppendResponse {
            version: done.version.0,
            position: convert::wire(done.last_position),
        }))
    }

    async fn read_stream(
        &self,
        request: Request<pb::ReadStreamRequest>,
    ) -> Result<Response<pb::ReadStreamResponse>, Status> {
        let principal = caller(&request)?;
        let purpose = purpose(&request, "");
        let r = request.into_inner();
        let stream = stream(&principal, &r.stream)?;
        let max = self
            .engine
            .tenant_log(&principal)
            .await
            .map_err(|e| status(&e))?
            .limits()
            .max_read_limit;
        let direction = if r.backwards {
            Direction::Backward
        } else {
            Direction::Forward
        };
        let from = if r.backwards && r.from_version == 0 {
            StreamVersion::END
        } else {
            StreamVersion(r.from_version)
        };
        // The engine audits the read; the engine's own streams read as
        // empty (exactly like a stream that does not exist) but for a TOP
        // SECRET auditor.
        let result = self
            .engine
            .read_stream(
                reader(&principal, &purpose),
                &stream,
                direction,
                from,
                limit(r.limit, max),
            )
            .await;
        if is_engine_category(stream.category()) && !reads_engine_streams(&principal) {
            access(
                &principal,
                "raw_stream",
                &r.stream,
                &purpose,
                tonic::Code::PermissionDenied,
            );
            let _ = result.map_err(|e| status(&e))?;
            return Ok(Response::new(pb::ReadStreamResponse { events: Vec::new() }));
        }
        let events = consulted(&principal, "raw_stream", &r.stream, &purpose, result)?;
        Ok(Response::new(pb::ReadStreamResponse {
            events: self.recorded(&principal, &events)?,
        }))
    }

    async fn read_all(
        &self,
        request: Request<pb::ReadAllRequest>,
    ) -> Result<Response<pb::ReadAllResponse>, Status> {
        let principal = caller(&request)?;
        let purpose = purpose(&request, "");
        let r = request.into_inner();
        let max = self
            .engine
            .tenant_log(&principal)
            .await
            .map_err(|e| status(&e))?
            .limits()
            .max_read_limit;
        let result = self
            .engine
            .read_all(
                reader(&principal, &purpose),
                convert::position(r.from_position),
                limit(r.limit, max),
            )
            .await;
        let (events, next) = consulted(&principal, "raw_log", "", &purpose, result)?;
        Ok(Response::new(pb::ReadAllResponse {
            events: self.recorded(&principal, &events)?,
            next_position: convert::wire(next),
        }))
    }

    type SubscribeStream = ReceiverStream<Result<pb::RecordedEvent, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let principal = caller(&request)?;
        let purpose = purpose(&request, "");
        let r = request.into_inner();
        let start = if r.from_start {
            SubscriptionStart::Beginning
        } else if r.after_position > 0 {
            SubscriptionStart::After(convert::position(r.after_position))
        } else {
            SubscriptionStart::End
        };
        let result = self
            .engine
            .subscribe_all(reader(&principal, &purpose), start)
            .await;
        let mut subscription = consulted(&principal, "raw_log_subscription", "", &purpose, result)?;
        let (tx, rx) = mpsc::channel(256);
        let mut stopping = self.stopping.clone();
        let engine = self.engine.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    e = subscription.next() => e,
                    _ = tx.closed() => return,
                    _ = stopping.fired() => {
                        let _ = tx.send(Err(Stopping::status())).await;
                        return;
                    }
                };
                match event {
                    Ok(e) if raw_visible(&principal, &e) => {
                        let sent = match engine.event_token(&principal, &e) {
                            Ok(token) => Ok(convert::recorded(&e, token)),
                            Err(error) => Err(status(&error)),
                        };
                        if tx.send(sent).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(status(&e))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
