//! Release folders and the `current` symlink of each environment: atomic activation, rollback
//! to the last good release, pruning, and clean-up after a crash.
//!
//! `current` is always replaced by `rename(2)` of a freshly made symlink over it, so it never
//! disappears, even for a moment (case C10), and it only ever points at a release that is
//! complete (unpacked and through its steps). All changes to an environment's links and ledger
//! happen under that environment's lock.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::EnvironmentConfig;
use crate::model::{DeploymentId, ReleaseRef};
use crate::store::{PersistHandle, ReleaseRecord, Write};

/// How long a release that was live stays on disk after `current` moved away from it, so that
/// readers which resolved the old link can finish opening their files.
const LIVE_RELEASE_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// Prefix of the temporary link made during a switch; leftovers are removed at start.
const TMP_PREFIX: &str = ".current.tmp-";

/// The folder name of an attempt's release.
pub fn release_name(id: DeploymentId, attempt: u32) -> String {
    format!("{id}-{attempt}")
}

/// Picks where `current` should go back to when `failed` is undone: the newest successful
/// release, other than `failed`, whose folder still exists (case C09). `successful` is oldest
/// first.
pub fn choose_rollback_target<'a>(
    successful: &'a [ReleaseRecord],
    failed: &str,
    exists: impl Fn(&str) -> bool,
) -> Option<&'a ReleaseRecord> {
    successful.iter().rev().find(|r| r.name != failed && exists(&r.name))
}

/// Picks which successful releases to prune: all but the newest `keep`, never `current`, never
/// the newest successful one. Failed releases are never in the list, so they never count.
pub fn choose_prunable<'a>(
    successful: &'a [ReleaseRecord],
    keep: usize,
    current: Option<&str>,
) -> Vec<&'a ReleaseRecord> {
    let keep = keep.max(1);
    let n = successful.len();
    successful
        .iter()
        .enumerate()
        .filter(|(i, r)| n - i > keep && Some(r.name.as_str()) != current)
        .map(|(_, r)| r)
        .collect()
}

/// What a rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// `current` did not point at the failed release; it was left alone.
    Untouched,
    /// `current` now points at this earlier release.
    SwitchedTo(String),
    /// No earlier release exists: `current` was removed rather than left on a failed release.
    Removed,
}

#[derive(Debug, Default)]
struct EnvState {
    /// Successful releases whose folders were not removed by tds, oldest first.
    successful: Vec<ReleaseRecord>,
}

/// The release ledger of every environment.
#[derive(Debug)]
pub struct Releases {
    envs: HashMap<String, Mutex<EnvState>>,
    persist: PersistHandle,
}

impl Releases {
    /// Builds the ledger from stored records.
    pub(crate) fn new(envs: &[Arc<EnvironmentConfig>], records: Vec<ReleaseRecord>, persist: PersistHandle) -> Self {
        let mut map: HashMap<String, Mutex<EnvState>> =
            envs.iter().map(|e| (e.name.clone(), Mutex::new(EnvState::default()))).collect();
        for r in records {
            if let Some(state) = map.get_mut(&r.environment) {
                state.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).successful.push(r);
            }
        }
        Self { envs: map, persist }
    }

    fn lock(&self, env: &str) -> Option<MutexGuard<'_, EnvState>> {
        self.envs.get(env).map(|m| m.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The release `current` points at, if it is one tds made.
    pub fn current(&self, env: &EnvironmentConfig) -> Option<ReleaseRef> {
        let name = current_target(env)?;
        let state = self.lock(&env.name)?;
        if let Some(r) = state.successful.iter().rev().find(|r| r.name == name) {
            return Some(ReleaseRef { name, deployment_id: r.deployment_id, version: r.version.clone() });
        }
        let (id, _) = name.rsplit_once('-')?;
        Some(ReleaseRef { deployment_id: id.parse().ok()?, name, version: String::new() })
    }

    /// Points `current` at `releases/<name>` atomically; returns the previous target.
    pub fn activate(&self, env: &EnvironmentConfig, name: &str) -> io::Result<Option<String>> {
        let _guard = self.lock(&env.name);
        let previous = current_target(env);
        switch_current(env, name)?;
        Ok(previous)
    }

    /// Records a verified release as a rollback candidate.
    pub fn record_success(&self, env: &EnvironmentConfig, record: ReleaseRecord) {
        if let Some(mut state) = self.lock(&env.name) {
            state.successful.retain(|r| r.name != record.name);
            state.successful.push(record.clone());
        }
        self.persist.send(vec![Write::Release(record)], Vec::new());
    }

    /// Undoes a failed or cancelled attempt's release: moves `current` back if it points at
    /// it, then removes the folder. Returns what happened to `current`.
    pub fn roll_back(&self, env: &EnvironmentConfig, failed: &str) -> io::Result<Restored> {
        let Some(mut state) = self.lock(&env.name) else { return Ok(Restored::Untouched) };
        let restored = if current_target(env).as_deref() == Some(failed) {
            self.restore_previous(env, &mut state, failed)?
        } else {
            Restored::Untouched
        };
        drop(state);
        if restored != Restored::Untouched {
            // A reader that resolved `current` an instant before the switch may still be
            // walking into the failed release: give it a moment before the folder goes (C10).
            std::thread::sleep(LIVE_RELEASE_GRACE);
        }
        remove_release_dir(env, failed)?;
        Ok(restored)
    }

    /// Manual rollback of a succeeded release: drops it from the candidates and, if it is
    /// live, re-activates the previous good one. Fails without touching anything when there is
    /// no earlier release to go back to.
    pub fn roll_back_release(&self, env: &EnvironmentConfig, name: &str) -> Result<Restored, String> {
        let Some(mut state) = self.lock(&env.name) else { return Err("unknown environment".into()) };
        let is_current = current_target(env).as_deref() == Some(name);
        let restored = if is_current {
            let dir = env.releases_dir();
            let Some(target) = choose_rollback_target(&state.successful, name, |n| dir.join(n).is_dir()) else {
                return Err(format!("no earlier successful release of {} exists", env.name));
            };
            let target = target.name.clone();
            switch_current(env, &target).map_err(|e| format!("cannot switch current: {e}"))?;
            Restored::SwitchedTo(target)
        } else {
            Restored::Untouched
        };
        state.successful.retain(|r| r.name != name);
        self.persist
            .send(vec![Write::ReleaseGone { environment: env.name.clone(), name: name.to_owned() }], Vec::new());
        Ok(restored)
    }

    fn restore_previous(&self, env: &EnvironmentConfig, state: &mut EnvState, failed: &str) -> io::Result<Restored> {
        let dir = env.releases_dir();
        // Forget candidates whose folders were deleted by hand, so they are never chosen later.
        let (present, gone): (Vec<_>, Vec<_>) =
            std::mem::take(&mut state.successful).into_iter().partition(|r| dir.join(&r.name).is_dir());
        state.successful = present;
        if !gone.is_empty() {
            let writes =
                gone.into_iter().map(|r| Write::ReleaseGone { environment: r.environment, name: r.name }).collect();
            self.persist.send(writes, Vec::new());
        }
        if let Some(target) = choose_rollback_target(&state.successful, failed, |n| dir.join(n).is_dir()) {
            let name = target.name.clone();
            switch_current(env, &name)?;
            Ok(Restored::SwitchedTo(name))
        } else {
            match fs::remove_file(env.current_link()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            Ok(Restored::Removed)
        }
    }

    /// Removes successful releases beyond `keep_releases`; returns the removed names.
    pub fn prune(&self, env: &EnvironmentConfig) -> io::Result<Vec<String>> {
        let Some(mut state) = self.lock(&env.name) else { return Ok(Vec::new()) };
        let current = current_target(env);
        let doomed: Vec<String> = choose_prunable(&state.successful, env.keep_releases as usize, current.as_deref())
            .into_iter()
            .map(|r| r.name.clone())
            .collect();
        state.successful.retain(|r| !doomed.contains(&r.name));
        drop(state);
        for name in &doomed {
            remove_release_dir(env, name)?;
        }
        if !doomed.is_empty() {
            let writes =
                doomed.iter().map(|n| Write::ReleaseGone { environment: env.name.clone(), name: n.clone() }).collect();
            self.persist.send(writes, Vec::new());
        }
        Ok(doomed)
    }

    /// Start-up clean-up, run before any attempt starts: removes temporary links left by a
    /// crash mid-switch and release folders that are neither successful nor `current` (the
    /// remains of attempts whose rollback was interrupted). Returns what it removed.
    pub fn clean_at_start(&self, env: &EnvironmentConfig, in_use: &[String]) -> io::Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        fs::create_dir_all(env.releases_dir())?;
        for entry in fs::read_dir(&env.root)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                fs::remove_file(entry.path())?;
                removed.push(entry.path());
            }
        }
        let current = current_target(env);
        if current.as_ref().is_some_and(|c| !env.releases_dir().join(c).is_dir() && !in_use.contains(c)) {
            // A dangling `current`: fall back to the newest existing good release.
            if let Some(mut state) = self.lock(&env.name) {
                self.restore_previous(env, &mut state, "")?;
            }
        }
        let current = current_target(env);
        let keep: Vec<String> =
            self.lock(&env.name).map(|s| s.successful.iter().map(|r| r.name.clone()).collect()).unwrap_or_default();
        for entry in fs::read_dir(env.releases_dir())?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name)
                && !in_use.contains(&name)
                && current.as_deref() != Some(name.as_str())
                && looks_like_release(&name)
            {
                remove_release_dir(env, &name)?;
                removed.push(entry.path());
            }
        }
        Ok(removed)
    }
}

/// Only folders named like tds releases are ever removed by the start-up clean-up.
fn looks_like_release(name: &str) -> bool {
    name.rsplit_once('-')
        .is_some_and(|(id, attempt)| id.parse::<DeploymentId>().is_ok() && attempt.parse::<u32>().is_ok())
}

/// The release name `current` points at (the last component of its target).
pub fn current_target(env: &EnvironmentConfig) -> Option<String> {
    let target = fs::read_link(env.current_link()).ok()?;
    target.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// Makes `current` point at `releases/<name>` by renaming a new symlink over it.
fn switch_current(env: &EnvironmentConfig, name: &str) -> io::Result<()> {
    let target = Path::new("releases").join(name);
    if !env.root.join(&target).is_dir() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("release folder {name} does not exist")));
    }
    let tmp = env.root.join(format!("{TMP_PREFIX}{}", ulid::Ulid::generate()));
    std::os::unix::fs::symlink(&target, &tmp)?;
    if let Err(e) = fs::rename(&tmp, env.current_link()) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

fn remove_release_dir(env: &EnvironmentConfig, name: &str) -> io::Result<()> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Ok(());
    }
    match fs::remove_dir_all(env.releases_dir().join(name)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use proptest::prelude::*;

    use super::*;

    fn rec(n: u32) -> ReleaseRecord {
        ReleaseRecord {
            environment: "e".into(),
            name: format!("r{n}"),
            deployment_id: DeploymentId::from_ulid(ulid::Ulid::from_parts(u64::from(n), 0)),
            attempt: 1,
            version: format!("v{n}"),
            succeeded_at: Utc::now(),
        }
    }

    #[test]
    fn rollback_target_skips_missing_and_failed() {
        let list = [rec(1), rec(2), rec(3)];
        assert_eq!(choose_rollback_target(&list, "r3", |_| true).map(|r| r.name.as_str()), Some("r2"));
        assert_eq!(choose_rollback_target(&list, "r9", |n| n != "r3").map(|r| r.name.as_str()), Some("r2"));
        assert_eq!(choose_rollback_target(&list, "r3", |n| n == "r1").map(|r| r.name.as_str()), Some("r1"));
        assert!(choose_rollback_target(&list, "r3", |_| false).is_none());
    }

    #[test]
    fn prune_keeps_newest_and_current() {
        let list: Vec<_> = (1..=6).map(rec).collect();
        let names = |v: Vec<&ReleaseRecord>| v.into_iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(choose_prunable(&list, 3, Some("r6"))), ["r1", "r2", "r3"]);
        assert_eq!(names(choose_prunable(&list, 3, Some("r2"))), ["r1", "r3"]);
        assert_eq!(names(choose_prunable(&list, 0, None)), ["r1", "r2", "r3", "r4", "r5"]);
    }

    proptest! {
        /// A rollback target is always a successful release that exists and is not the failed
        /// one; if any such release exists, one is chosen, and it is the newest of them.
        #[test]
        fn rollback_targets_only_existing_successful_releases(
            exists in proptest::collection::vec(any::<bool>(), 0..12), failed in 0u32..14
        ) {
            let list: Vec<_> = (0..exists.len() as u32).map(rec).collect();
            let failed = format!("r{failed}");
            let present = |n: &str| list.iter().position(|r| r.name == n).is_some_and(|i| exists[i]);
            let chosen = choose_rollback_target(&list, &failed, present);
            let best = list.iter().rev().find(|r| r.name != failed && present(&r.name));
            prop_assert_eq!(chosen, best);
        }
    }
}
