//! `GET /events`: server-sent events of every committed deployment and environment change,
//! resumable with `Last-Event-ID`.
//!
//! Each event has `id:` (the core's event sequence), `event:` (`deployment` or `environment`)
//! and `data:` (`{"id", "at", "type", "data"}` with the new state). A resume sends the kept
//! events after the given id; when they are no longer kept, or the client lagged behind, a
//! `reset` event carries a full snapshot instead (`{"last_event_id", "deployments",
//! "environments"}`) and the stream continues from it. The stream ends when tds shuts down.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tds_core::{CoreEvent, EventEnvelope, OrchestratorHandle};
use tokio::sync::broadcast;
use utoipa::IntoParams;

use super::auth::Viewer;
use super::error::{ApiError, ErrorEnvelope};
use super::{ApiQuery, AppState};

/// How often an idle stream checks whether tds is shutting down.
const SHUTDOWN_CHECK: Duration = Duration::from_millis(500);

/// Query of the event stream.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Resume after this event id (for clients that cannot send the `Last-Event-ID` header).
    #[param(value_type = Option<i64>, minimum = 0)]
    pub last_event_id: Option<String>,
}

/// One server-sent event as schemathesis and other clients parse it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ServerSentEvent)]
pub struct SseEventDoc {
    /// The event's sequence number (send it back as `Last-Event-ID`).
    pub id: String,
    /// `deployment`, `environment` or `reset`.
    pub event: String,
    /// JSON text: an Event (`deployment`, `environment`) or a snapshot (`reset`).
    pub data: String,
}

#[derive(Serialize)]
struct Reset<'a> {
    last_event_id: u64,
    deployments: Vec<&'a tds_core::model::DeploymentView>,
    environments: Vec<&'a tds_core::model::EnvironmentView>,
}

/// A live feed of changes as server-sent events.
#[utoipa::path(get, path = "/api/v1/events", tag = "meta",
    params(
        EventParams,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event id"),
    ),
    responses(
        (status = 200, description = "text/event-stream of `deployment`, `environment` and `reset` events", content_type = "text/event-stream", body = SseEventDoc),
        (status = 400, description = "Last-Event-ID is not a number", body = ErrorEnvelope),
        (status = 401, description = "No or wrong token", body = ErrorEnvelope),
    ))]
pub async fn stream(
    _: Viewer,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<EventParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Both forms are checked, so a bad value is never ignored; the header wins when both are set.
    let query = params.last_event_id.as_deref().map(|t| super::history::parse_count("last_event_id", t)).transpose()?;
    let header = match headers.get("last-event-id") {
        Some(v) => Some(super::history::parse_count("Last-Event-ID", v.to_str().unwrap_or("?"))?),
        None => None,
    };
    let last = header.or(query);
    let handle = state.handle().clone();
    // Subscribe first, then read the backlog: an event is in one or the other (or both, and
    // the duplicate is skipped by id), never in neither.
    let rx = handle.subscribe();
    let mut feed = Feed { handle, rx, backlog: VecDeque::new(), last_sent: 0, pending_reset: false };
    match last {
        Some(last) => match feed.handle.events_since(last) {
            Some(events) => {
                feed.last_sent = last;
                feed.backlog = events.into();
            }
            None => feed.pending_reset = true,
        },
        None => feed.last_sent = feed.handle.snapshot().last_event_id,
    }
    let stream =
        futures::stream::unfold(feed, |mut feed| async move { feed.next_event().await.map(|event| (Ok(event), feed)) });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

struct Feed {
    handle: OrchestratorHandle,
    rx: broadcast::Receiver<EventEnvelope>,
    backlog: VecDeque<EventEnvelope>,
    last_sent: u64,
    pending_reset: bool,
}

impl Feed {
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if self.pending_reset {
                self.pending_reset = false;
                return Some(self.reset());
            }
            if let Some(env) = self.backlog.pop_front() {
                if env.id > self.last_sent {
                    self.last_sent = env.id;
                    return Some(to_sse(&env));
                }
                continue;
            }
            if !self.handle.is_accepting() {
                return None;
            }
            match tokio::time::timeout(SHUTDOWN_CHECK, self.rx.recv()).await {
                Err(_) => {}
                Ok(Ok(env)) => self.backlog.push_back(env),
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => self.pending_reset = true,
                Ok(Err(broadcast::error::RecvError::Closed)) => return None,
            }
        }
    }

    /// A full snapshot for a client that cannot be resumed event by event.
    fn reset(&mut self) -> Event {
        // Events already queued in the receiver and older than the snapshot are skipped by id.
        let snapshot = self.handle.snapshot();
        self.backlog.clear();
        self.last_sent = snapshot.last_event_id;
        let body = Reset {
            last_event_id: snapshot.last_event_id,
            deployments: snapshot.deployments.iter().map(AsRef::as_ref).collect(),
            environments: snapshot.environments.iter().map(AsRef::as_ref).collect(),
        };
        Event::default()
            .id(snapshot.last_event_id.to_string())
            .event("reset")
            .json_data(&body)
            .unwrap_or_else(|_| Event::default().event("reset").data("{}"))
    }
}

fn to_sse(env: &EventEnvelope) -> Event {
    let kind = match env.event {
        CoreEvent::Deployment(_) => "deployment",
        CoreEvent::Environment(_) => "environment",
    };
    Event::default()
        .id(env.id.to_string())
        .event(kind)
        .json_data(env)
        .unwrap_or_else(|_| Event::default().event(kind).data("{}"))
}
