//! The priority queue of one environment: priority first, FIFO within a level, with aging.
//!
//! Pure data structure: every decision takes `now` from the caller, so order and aging are tested
//! without a runtime or a clock.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use crate::model::{DeploymentId, Priority};

/// A waiting deployment as the queue sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub id: DeploymentId,
    /// The priority as submitted (or as set by an operator).
    pub priority: Priority,
    /// When it started waiting (monotonic), for aging.
    pub enqueued: Instant,
    /// Arrival order; the FIFO tie-break.
    pub seq: u64,
}

/// The priority a waiting entry competes with: one level higher per full `aging` interval
/// waited, never above `critical`. `aging` of zero disables aging.
pub fn effective_priority(entry: &QueueEntry, now: Instant, aging: Duration) -> Priority {
    if aging.is_zero() {
        return entry.priority;
    }
    let waited = now.saturating_duration_since(entry.enqueued);
    let steps = (waited.as_millis() / aging.as_millis().max(1)) as u64;
    Priority::from_rank(u64::from(entry.priority.rank()).saturating_add(steps))
}

/// One environment's waiting deployments, bucketed by base priority and ordered by arrival.
#[derive(Debug, Default, Clone)]
pub struct Queue {
    levels: [BTreeMap<u64, QueueEntry>; 4],
    index: HashMap<DeploymentId, (Priority, u64)>,
}

impl Queue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of waiting entries.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether `id` is waiting here.
    pub fn contains(&self, id: DeploymentId) -> bool {
        self.index.contains_key(&id)
    }

    /// Adds an entry; an entry with the same id is replaced.
    pub fn push(&mut self, entry: QueueEntry) {
        self.remove(entry.id);
        self.index.insert(entry.id, (entry.priority, entry.seq));
        self.levels[entry.priority.rank() as usize].insert(entry.seq, entry);
    }

    /// Removes and returns an entry (cancel, start, reprioritize).
    pub fn remove(&mut self, id: DeploymentId) -> Option<QueueEntry> {
        let (priority, seq) = self.index.remove(&id)?;
        self.levels[priority.rank() as usize].remove(&seq)
    }

    /// Changes an entry's priority, keeping its place in time (its `seq` and wait so far).
    pub fn set_priority(&mut self, id: DeploymentId, priority: Priority) -> bool {
        match self.remove(id) {
            Some(entry) => {
                self.push(QueueEntry { priority, ..entry });
                true
            }
            None => false,
        }
    }

    /// The entry that runs next: highest effective priority, then earliest arrival. Looks only
    /// at the head of each level, since within a level the earliest also aged the most.
    pub fn peek(&self, now: Instant, aging: Duration) -> Option<&QueueEntry> {
        self.levels.iter().filter_map(|level| level.values().next()).max_by(|a, b| {
            effective_priority(a, now, aging).cmp(&effective_priority(b, now, aging)).then_with(|| b.seq.cmp(&a.seq))
        })
    }

    /// Removes and returns the entry that runs next.
    pub fn pop(&mut self, now: Instant, aging: Duration) -> Option<QueueEntry> {
        let id = self.peek(now, aging)?.id;
        self.remove(id)
    }

    /// Every entry in the order it would run, each with its effective priority.
    pub fn ordered(&self, now: Instant, aging: Duration) -> Vec<(&QueueEntry, Priority)> {
        let mut all: Vec<_> =
            self.levels.iter().flat_map(|l| l.values()).map(|e| (e, effective_priority(e, now, aging))).collect();
        all.sort_by(|(a, pa), (b, pb)| pb.cmp(pa).then_with(|| a.seq.cmp(&b.seq)));
        all
    }
}

/// What blocks a waiting deployment, for its wait reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate<'a> {
    pub environment: &'a str,
    pub paused: bool,
    /// Local time (`HH:MM`) since when the environment is unavailable, if it is.
    pub unavailable_since: Option<String>,
    pub running: u32,
    pub limit: u32,
    /// `(running, limit)` of the global cap, when one is set.
    pub global: Option<(u32, u32)>,
}

/// The wait reason in words (`PRODUCT.md`: "staging at capacity 3/3", "behind 2
/// higher-priority", "staging unavailable since 10:42", "staging paused"). `ahead` counts the
/// entries before this one in its queue, `higher_ahead` those of them with a higher effective
/// priority.
pub fn wait_reason(gate: &Gate<'_>, ahead: usize, higher_ahead: usize) -> String {
    let env = gate.environment;
    if gate.paused {
        return format!("{env} paused");
    }
    if let Some(since) = &gate.unavailable_since {
        return format!("{env} unavailable since {since}");
    }
    let mut parts = Vec::new();
    if gate.running >= gate.limit {
        parts.push(format!("{env} at capacity {}/{}", gate.running, gate.limit));
    } else if let Some((running, limit)) = gate.global.filter(|(r, l)| r >= l) {
        parts.push(format!("global limit {running}/{limit}"));
    }
    if higher_ahead > 0 {
        parts.push(format!("behind {higher_ahead} higher-priority"));
    } else if ahead > 0 {
        parts.push(format!("{ahead} ahead"));
    }
    if parts.is_empty() { "starting".to_owned() } else { parts.join(", ") }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    fn id(n: u64) -> DeploymentId {
        DeploymentId::from_ulid(ulid::Ulid::from_parts(n, u128::from(n)))
    }

    const NO_AGING: Duration = Duration::ZERO;

    #[test]
    fn priority_first_then_fifo() {
        let t0 = Instant::now();
        let mut q = Queue::new();
        let plan = [
            (1, Priority::Normal),
            (2, Priority::Low),
            (3, Priority::Critical),
            (4, Priority::Normal),
            (5, Priority::High),
        ];
        for (n, p) in plan {
            q.push(QueueEntry { id: id(n), priority: p, enqueued: t0, seq: n });
        }
        let order: Vec<_> = std::iter::from_fn(|| q.pop(t0, NO_AGING)).map(|e| e.seq).collect();
        assert_eq!(order, [3, 5, 1, 4, 2]);
    }

    #[test]
    fn aging_lifts_a_low_one_past_a_stream_of_high_ones() {
        let t0 = Instant::now();
        let aging = Duration::from_secs(600);
        let mut q = Queue::new();
        q.push(QueueEntry { id: id(1), priority: Priority::Low, enqueued: t0, seq: 1 });
        // 25 minutes later the low one has aged two levels: high, and it arrived first.
        let now = t0 + Duration::from_secs(1500);
        q.push(QueueEntry { id: id(2), priority: Priority::High, enqueued: now, seq: 2 });
        assert_eq!(effective_priority(q.peek(now, aging).expect("entry"), now, aging), Priority::High);
        assert_eq!(q.pop(now, aging).map(|e| e.seq), Some(1));
        // Without aging the high one would have gone first.
        q.push(QueueEntry { id: id(1), priority: Priority::Low, enqueued: t0, seq: 1 });
        assert_eq!(q.peek(now, NO_AGING).map(|e| e.seq), Some(2));
    }

    #[test]
    fn reprioritize_keeps_the_place_in_time() {
        let t0 = Instant::now();
        let mut q = Queue::new();
        q.push(QueueEntry { id: id(1), priority: Priority::Critical, enqueued: t0, seq: 10 });
        q.push(QueueEntry { id: id(2), priority: Priority::Low, enqueued: t0, seq: 5 });
        assert!(q.set_priority(id(2), Priority::Critical));
        assert_eq!(q.pop(t0, NO_AGING).map(|e| e.id), Some(id(2)));
        assert!(!q.set_priority(id(99), Priority::High));
    }

    #[test]
    fn wait_reasons_in_words() {
        let gate =
            Gate { environment: "staging", paused: false, unavailable_since: None, running: 3, limit: 3, global: None };
        assert_eq!(wait_reason(&gate, 0, 0), "staging at capacity 3/3");
        assert_eq!(wait_reason(&gate, 4, 2), "staging at capacity 3/3, behind 2 higher-priority");
        assert_eq!(wait_reason(&Gate { running: 1, ..gate.clone() }, 2, 0), "2 ahead");
        assert_eq!(wait_reason(&Gate { paused: true, ..gate.clone() }, 0, 0), "staging paused");
        let down = Gate { unavailable_since: Some("10:42".into()), ..gate.clone() };
        assert_eq!(wait_reason(&down, 0, 0), "staging unavailable since 10:42");
        let global = Gate { running: 0, global: Some((5, 5)), ..gate };
        assert_eq!(wait_reason(&global, 0, 0), "global limit 5/5");
    }

    proptest! {
        /// Popping yields every pushed entry exactly once, in non-increasing priority, FIFO within
        /// a priority; removals take exactly the removed ones out.
        #[test]
        fn pop_order_is_priority_then_fifo(
            items in proptest::collection::vec((0u8..4, any::<bool>()), 0..80)
        ) {
            let t0 = Instant::now();
            let mut q = Queue::new();
            let mut removed = HashSet::new();
            for (i, (p, _)) in items.iter().enumerate() {
                let n = i as u64 + 1;
                q.push(QueueEntry { id: id(n), priority: Priority::from_rank(u64::from(*p)), enqueued: t0, seq: n });
            }
            for (i, (_, remove)) in items.iter().enumerate() {
                if *remove && i % 3 == 0 {
                    let n = i as u64 + 1;
                    prop_assert!(q.remove(id(n)).is_some());
                    removed.insert(n);
                }
            }
            let ordered: Vec<u64> = q.ordered(t0, NO_AGING).iter().map(|(e, _)| e.seq).collect();
            let mut popped = Vec::new();
            while let Some(e) = q.pop(t0, NO_AGING) {
                popped.push((e.priority, e.seq));
            }
            prop_assert_eq!(popped.len(), items.len() - removed.len());
            prop_assert_eq!(ordered, popped.iter().map(|(_, s)| *s).collect::<Vec<_>>());
            for pair in popped.windows(2) {
                let ((pa, sa), (pb, sb)) = (pair[0], pair[1]);
                prop_assert!(pa > pb || (pa == pb && sa < sb), "{:?} before {:?}", pair[0], pair[1]);
            }
            prop_assert!(popped.iter().all(|(_, s)| !removed.contains(s)));
        }
    }
}
