//! The published view: what clients read. Updated only by the persister after a commit, so that
//! a client never sees a state that a crash could take back.
//!
//! Holds every unfinished deployment and the most recent finished ones (older ones are read
//! from the store), the environments, and a ring of recent events for `Last-Event-ID` resume.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::broadcast;

use crate::clock::Clock;
use crate::event::{CoreEvent, EventEnvelope};
use crate::model::{DeploymentId, DeploymentView, EnvironmentView};

/// Finished deployments kept in memory for the dashboard and fast status reads.
pub const RECENT_FINISHED: usize = 1000;
/// Events kept for resuming an event stream.
pub const EVENT_RING: usize = 10_000;

/// A consistent copy of everything live.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Unfinished and recently finished deployments, oldest first.
    pub deployments: Vec<Arc<DeploymentView>>,
    /// In configuration order.
    pub environments: Vec<Arc<EnvironmentView>>,
    /// The id of the last event included; events after it are newer than this snapshot.
    pub last_event_id: u64,
}

#[derive(Debug, Default)]
struct State {
    deployments: HashMap<DeploymentId, Arc<DeploymentView>>,
    finished: VecDeque<DeploymentId>,
    environments: Vec<Arc<EnvironmentView>>,
    ring: VecDeque<EventEnvelope>,
    next_id: u64,
}

/// The read side shared by all clients.
#[derive(Debug)]
pub struct Published {
    state: RwLock<State>,
    events: broadcast::Sender<EventEnvelope>,
    clock: Arc<dyn Clock>,
}

impl Published {
    /// An empty view.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let (events, _) = broadcast::channel(4096);
        // Event ids keep growing across restarts (a resuming client's `Last-Event-ID` from an
        // earlier run is then older than every new event, and it gets a reset): they start at
        // the start time in milliseconds × 1000.
        let next_id = u64::try_from(clock.now().timestamp_millis()).unwrap_or(0).saturating_mul(1000).max(1);
        Self { state: RwLock::new(State { next_id, ..State::default() }), events, clock }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seeds the view at start-up without emitting events.
    pub fn seed(&self, deployments: impl IntoIterator<Item = DeploymentView>, environments: Vec<EnvironmentView>) {
        let mut state = self.write();
        let mut all: Vec<_> = deployments.into_iter().collect();
        all.sort_by_key(|d| d.id);
        for d in all {
            if d.is_terminal() {
                state.finished.push_back(d.id);
            }
            state.deployments.insert(d.id, Arc::new(d));
        }
        while state.finished.len() > RECENT_FINISHED {
            if let Some(old) = state.finished.pop_front() {
                state.deployments.remove(&old);
            }
        }
        state.environments = environments.into_iter().map(Arc::new).collect();
    }

    /// Applies committed changes and broadcasts them, in order.
    pub fn publish(&self, events: Vec<CoreEvent>) {
        if events.is_empty() {
            return;
        }
        let at = self.clock.now();
        let mut state = self.write();
        for event in events {
            match &event {
                CoreEvent::Deployment(view) => {
                    let previous = state.deployments.insert(view.id, Arc::clone(view));
                    let was_terminal = previous.is_some_and(|p| p.is_terminal());
                    if view.is_terminal() && !was_terminal {
                        state.finished.push_back(view.id);
                        if state.finished.len() > RECENT_FINISHED
                            && let Some(old) = state.finished.pop_front()
                        {
                            state.deployments.remove(&old);
                        }
                    } else if !view.is_terminal() && was_terminal {
                        // Manually retried: live again.
                        state.finished.retain(|id| *id != view.id);
                    }
                }
                CoreEvent::Environment(view) => match state.environments.iter_mut().find(|e| e.name == view.name) {
                    Some(slot) => *slot = Arc::clone(view),
                    None => state.environments.push(Arc::clone(view)),
                },
            }
            let envelope = EventEnvelope { id: state.next_id, at, event };
            state.next_id += 1;
            if state.ring.len() == EVENT_RING {
                state.ring.pop_front();
            }
            state.ring.push_back(envelope.clone());
            let _ = self.events.send(envelope);
        }
    }

    /// A deployment if it is live or recently finished.
    pub fn deployment(&self, id: DeploymentId) -> Option<Arc<DeploymentView>> {
        self.read().deployments.get(&id).cloned()
    }

    /// An environment by name.
    pub fn environment(&self, name: &str) -> Option<Arc<EnvironmentView>> {
        self.read().environments.iter().find(|e| e.name == name).cloned()
    }

    /// Everything live, consistently.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.read();
        let mut deployments: Vec<_> = state.deployments.values().cloned().collect();
        deployments.sort_by_key(|d| d.id);
        Snapshot { deployments, environments: state.environments.clone(), last_event_id: state.next_id - 1 }
    }

    /// Events after `last_id`, or `None` when some of them are no longer kept.
    pub fn events_since(&self, last_id: u64) -> Option<Vec<EventEnvelope>> {
        let state = self.read();
        let oldest = state.ring.front().map_or(state.next_id, |e| e.id);
        if last_id >= state.next_id {
            // An id this run never gave (a clock that went back between runs): start over.
            return None;
        }
        if last_id.saturating_add(1) < oldest {
            return None;
        }
        Some(state.ring.iter().filter(|e| e.id > last_id).cloned().collect())
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<EventEnvelope> {
        self.events.subscribe()
    }
}
