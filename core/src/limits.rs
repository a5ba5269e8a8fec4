//! Slot accounting: how many attempts hold a slot per environment and overall.
//!
//! A slot is reserved before an attempt's first process starts and released only after its last
//! process is gone (including rollback), so "running ≤ limit" holds at every instant (case C01).

use std::collections::HashMap;

/// Why a deployment cannot take a slot right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// The environment runs as many as its limit allows.
    EnvironmentFull { running: u32, limit: u32 },
    /// The global `max_running` cap is reached.
    GlobalFull { running: u32, limit: u32 },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct EnvSlots {
    limit: u32,
    running: u32,
}

/// The slot ledger. Limits can change at any time; lowering one below the running count stops
/// new starts until enough finish, and never stops running ones.
#[derive(Debug, Clone, Default)]
pub struct Slots {
    envs: HashMap<String, EnvSlots>,
    global_limit: Option<u32>,
    global_running: u32,
}

impl Slots {
    /// A ledger with an optional cap over all environments.
    pub fn new(global_limit: Option<u32>) -> Self {
        Self { global_limit, ..Self::default() }
    }

    /// Declares an environment or changes its limit.
    pub fn set_limit(&mut self, env: &str, limit: u32) {
        self.envs.entry(env.to_owned()).or_default().limit = limit;
    }

    /// The environment's limit (0 when unknown).
    pub fn limit(&self, env: &str) -> u32 {
        self.envs.get(env).map_or(0, |s| s.limit)
    }

    /// Slots held in the environment.
    pub fn running(&self, env: &str) -> u32 {
        self.envs.get(env).map_or(0, |s| s.running)
    }

    /// Slots held everywhere.
    pub fn total_running(&self) -> u32 {
        self.global_running
    }

    /// The global cap and how much of it is used, when a cap is set.
    pub fn global(&self) -> Option<(u32, u32)> {
        self.global_limit.map(|limit| (self.global_running, limit))
    }

    /// Free slots in the environment, ignoring the global cap.
    pub fn free(&self, env: &str) -> u32 {
        self.envs.get(env).map_or(0, |s| s.limit.saturating_sub(s.running))
    }

    /// Whether a new attempt may start in `env` now.
    pub fn check(&self, env: &str) -> Result<(), Blocked> {
        let slots = self.envs.get(env).copied().unwrap_or_default();
        if slots.running >= slots.limit {
            return Err(Blocked::EnvironmentFull { running: slots.running, limit: slots.limit });
        }
        match self.global_limit {
            Some(limit) if self.global_running >= limit => {
                Err(Blocked::GlobalFull { running: self.global_running, limit })
            }
            _ => Ok(()),
        }
    }

    /// Takes a slot, or says why not. Check and take are one step, so two starts can never both
    /// see the last free slot.
    pub fn reserve(&mut self, env: &str) -> Result<(), Blocked> {
        self.check(env)?;
        if let Some(slots) = self.envs.get_mut(env) {
            slots.running += 1;
            self.global_running += 1;
        }
        Ok(())
    }

    /// Takes a slot regardless of the limit: used only at start-up for attempts that must be
    /// cleaned up, which already held their slot before the restart.
    pub fn force_reserve(&mut self, env: &str) {
        self.envs.entry(env.to_owned()).or_default().running += 1;
        self.global_running += 1;
    }

    /// Gives a slot back.
    pub fn release(&mut self, env: &str) {
        if let Some(slots) = self.envs.get_mut(env)
            && slots.running > 0
        {
            slots.running -= 1;
            self.global_running = self.global_running.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn limit_and_global_cap() {
        let mut slots = Slots::new(Some(3));
        slots.set_limit("a", 2);
        slots.set_limit("b", 2);
        assert_eq!(slots.reserve("a"), Ok(()));
        assert_eq!(slots.reserve("a"), Ok(()));
        assert_eq!(slots.reserve("a"), Err(Blocked::EnvironmentFull { running: 2, limit: 2 }));
        assert_eq!(slots.reserve("b"), Ok(()));
        assert_eq!(slots.reserve("b"), Err(Blocked::GlobalFull { running: 3, limit: 3 }));
        slots.release("a");
        assert_eq!(slots.reserve("b"), Ok(()));
        assert_eq!(slots.reserve("unknown"), Err(Blocked::EnvironmentFull { running: 0, limit: 0 }));
    }

    #[test]
    fn lowering_a_limit_blocks_new_starts_only() {
        let mut slots = Slots::new(None);
        slots.set_limit("a", 3);
        for _ in 0..3 {
            slots.reserve("a").expect("free");
        }
        slots.set_limit("a", 1);
        assert_eq!(slots.running("a"), 3);
        slots.release("a");
        slots.release("a");
        assert!(slots.reserve("a").is_err());
        slots.release("a");
        assert!(slots.reserve("a").is_ok());
    }

    proptest! {
        /// Whatever the sequence of reserves, releases and limit changes, a reserve never
        /// succeeds while the environment is at its limit, and counts never go negative.
        #[test]
        fn running_never_exceeds_limit_on_reserve(ops in proptest::collection::vec((0u8..3, 0u8..2, 1u32..4), 0..200)) {
            let mut slots = Slots::new(Some(4));
            let envs = ["a", "b"];
            for e in envs { slots.set_limit(e, 2); }
            for (op, env, n) in ops {
                let env = envs[env as usize];
                match op {
                    0 => {
                        let before = slots.running(env);
                        let ok = slots.reserve(env).is_ok();
                        if ok {
                            prop_assert!(before < slots.limit(env));
                            prop_assert!(slots.total_running() <= 4);
                        } else {
                            prop_assert_eq!(slots.running(env), before);
                        }
                    }
                    1 => slots.release(env),
                    _ => slots.set_limit(env, n),
                }
                prop_assert_eq!(slots.total_running(), slots.running("a") + slots.running("b"));
            }
        }
    }
}
