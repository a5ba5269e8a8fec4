//! The persister: one thread that owns all writes, commits them in groups, and only then
//! publishes the matching events ("every transition is persisted before it is reported").
//!
//! Whatever queued up while the previous transaction was committing goes into the next one, so
//! under load one fsync covers many submissions and transitions (group commit), while an idle
//! system commits each write at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{Store, Write, WriteOutcome};
use crate::error::StoreError;
use crate::event::CoreEvent;
use crate::published::Published;

/// Most messages folded into one transaction.
const MAX_BATCH: usize = 1024;

/// Runs after a message's writes are committed and its events published.
type After = Box<dyn FnOnce() + Send>;

struct PersistMsg {
    writes: Vec<Write>,
    events: Vec<CoreEvent>,
    reply: Option<oneshot::Sender<Result<Vec<WriteOutcome>, StoreError>>>,
    after: Option<After>,
}

/// Sends work to the persister thread; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct PersistHandle {
    tx: mpsc::UnboundedSender<PersistMsg>,
}

impl std::fmt::Debug for PersistMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistMsg").field("writes", &self.writes.len()).finish_non_exhaustive()
    }
}

impl PersistHandle {
    /// Queues writes and the events to publish once they are committed; does not wait. Writes
    /// from one sender are committed in the order they were sent.
    pub fn send(&self, writes: Vec<Write>, events: Vec<CoreEvent>) {
        if self.tx.send(PersistMsg { writes, events, reply: None, after: None }).is_err() {
            tracing::error!("store writer stopped; a change was not persisted");
        }
    }

    /// Runs `f` once everything sent before it is committed and published: how the engine
    /// answers a command only after its effect is durable and visible to every reader.
    pub fn after(&self, f: impl FnOnce() + Send + 'static) {
        let msg = PersistMsg { writes: Vec::new(), events: Vec::new(), reply: None, after: Some(Box::new(f)) };
        if let Err(mpsc::error::SendError(msg)) = self.tx.send(msg)
            && let Some(f) = msg.after
        {
            f();
        }
    }

    /// Queues writes and waits until they are committed (and their events published).
    pub async fn commit(&self, writes: Vec<Write>, events: Vec<CoreEvent>) -> Result<Vec<WriteOutcome>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(PersistMsg { writes, events, reply: Some(reply), after: None }).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// The writer thread.
#[derive(Debug)]
pub(crate) struct Persister;

impl Persister {
    /// Starts the writer; it stops when every handle is dropped, after committing what was sent.
    pub fn spawn(store: Arc<dyn Store>, published: Arc<Published>) -> (PersistHandle, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("tds-persister".into())
            .spawn(move || run(&*store, &published, rx))
            .unwrap_or_else(|e| panic!("cannot start the store writer thread: {e}"));
        (PersistHandle { tx }, thread)
    }
}

fn run(store: &dyn Store, published: &Published, mut rx: mpsc::UnboundedReceiver<PersistMsg>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(msg) => batch.push(msg),
                Err(_) => break,
            }
        }
        commit_batch(store, published, &mut batch);
    }
}

fn commit_batch(store: &dyn Store, published: &Published, batch: &mut Vec<PersistMsg>) {
    let groups: Vec<&[Write]> = batch.iter().map(|m| m.writes.as_slice()).collect();
    let result = store.apply(&groups).or_else(|first| {
        // A transient failure (disk busy) gets one more chance before messages are tried alone.
        tracing::warn!(error = %first, "store commit failed; retrying");
        std::thread::sleep(Duration::from_millis(100));
        store.apply(&groups)
    });
    match result {
        Ok(outcomes) => {
            for (msg, outcome) in batch.drain(..).zip(outcomes) {
                finish(published, msg, Ok(outcome));
            }
        }
        Err(_) => {
            // Isolate the failing message so that one bad write does not sink the others.
            for msg in batch.drain(..) {
                let result = store.apply(&[msg.writes.as_slice()]).map(|mut v| v.pop().unwrap_or_default());
                if let Err(e) = &result {
                    tracing::error!(error = %e, writes = msg.writes.len(), "store write failed");
                }
                finish(published, msg, result);
            }
        }
    }
}

#[allow(clippy::match_same_arms)] // the arms differ in their reasons, kept apart for clarity
fn finish(published: &Published, msg: PersistMsg, result: Result<Vec<WriteOutcome>, StoreError>) {
    match &result {
        Ok(outcomes) if outcomes.iter().all(|o| *o == WriteOutcome::Done) => published.publish(msg.events),
        // An idempotent replay changed nothing: nothing to announce.
        Ok(_) => {}
        // Engine changes happened in memory even if the disk refused them; clients should see the
        // truth, and the error is in the diagnostics log. Waiting callers get the error instead.
        Err(_) if msg.reply.is_none() => published.publish(msg.events),
        Err(_) => {}
    }
    if let Some(reply) = msg.reply {
        let _ = reply.send(result);
    }
    if let Some(after) = msg.after {
        after();
    }
}
