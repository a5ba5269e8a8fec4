//! The configuration file: parsing, defaults, and `check-config`'s list of mistakes.
//!
//! Parsing happens in two passes so that every mistake is reported at once, each with its line:
//! serde fills a loose `Raw*` tree (unknown keys are collected, not fatal), then `resolve` turns
//! it into a `Config` with typed durations and sizes, checking every value.

use std::collections::{BTreeSet, HashSet};
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::retry::RetryPolicy;

/// The configuration that the binary falls back to when no file is found (kept in `assets/`).
pub const DEFAULT_CONFIG: &str = include_str!("../../assets/default.toml");

/// What a token may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads: status, logs, history, metrics, events.
    Viewer,
    /// + submit, cancel, retry, rollback, priority.
    Operator,
    /// + environments: pause, resume, limits.
    Admin,
}

impl Role {
    /// The lowercase name used in the config file.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// An API token as configured: only the sha256 of the secret is ever stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    pub name: String,
    /// Lowercase hex sha256 of the token.
    pub sha256: String,
    pub role: Role,
}

/// One configured command (`steps`, `verify`, `on_rollback`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepConfig {
    pub name: String,
    /// Run with `sh -c` in the release folder; request data arrives only as `TDS_*` variables.
    pub run: String,
    pub timeout: Duration,
}

/// A deployment target, with every default resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvironmentConfig {
    pub name: String,
    /// Holds `releases/` and the `current` symlink.
    pub root: PathBuf,
    pub max_concurrent: u32,
    pub keep_releases: u32,
    pub steps: Vec<StepConfig>,
    pub verify: Vec<StepConfig>,
    /// How long `verify` keeps re-running failing checks before the attempt fails.
    pub verify_timeout: Duration,
    pub on_rollback: Vec<StepConfig>,
    /// A command whose exit status says whether the environment is reachable.
    pub probe: Option<String>,
    pub probe_interval: Duration,
    pub probe_failures: u32,
    pub retry: RetryPolicy,
}

impl EnvironmentConfig {
    /// `root/releases`.
    pub fn releases_dir(&self) -> PathBuf {
        self.root.join("releases")
    }

    /// `root/current`.
    pub fn current_link(&self) -> PathBuf {
        self.root.join("current")
    }
}

/// Values that apply to every environment unless it sets its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    pub max_concurrent: u32,
    pub keep_releases: u32,
    pub step_timeout: Duration,
    /// A waiting deployment rises one priority level per interval (no starvation).
    pub aging: Duration,
    pub probe_interval: Duration,
    pub probe_failures: u32,
    /// Largest accepted artifact, in bytes, checked before decoding.
    pub max_artifact_size: u64,
    /// Largest total size an archive may unpack to (decompression bombs).
    pub max_unpacked_size: u64,
    /// Most entries an archive may hold.
    pub max_archive_entries: u64,
    pub retry: RetryPolicy,
    /// Time between SIGTERM and SIGKILL when a step is cancelled or times out.
    pub kill_grace: Duration,
    pub verify_timeout: Duration,
    /// Optional cap on running deployments over all environments together.
    pub max_running: Option<u32>,
}

/// The API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// On SIGTERM, how long running deployments may finish before they are interrupted.
    pub drain_timeout: Duration,
}

/// A whole, checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub data_dir: PathBuf,
    /// Stored artifacts that no unfinished deployment needs are removed once no deployment
    /// created within this period used them (manual retries of older ones then fail clearly).
    pub artifact_retention: Duration,
    pub defaults: Defaults,
    pub tokens: Vec<TokenConfig>,
    pub environments: Vec<Arc<EnvironmentConfig>>,
}

impl Config {
    /// The environment with this exact name.
    pub fn environment(&self, name: &str) -> Option<&Arc<EnvironmentConfig>> {
        self.environments.iter().find(|e| e.name == name)
    }

    /// Parses and checks a configuration text. Relative paths are resolved against `base`
    /// (the working directory, so that paths in commands and in the file agree).
    pub fn parse(text: &str, base: &Path) -> Result<Self, ConfigErrors> {
        let locator = Locator::new(text);
        // Syntax first: without a document there is nothing more to report.
        let mut table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(err) => {
                let err: toml::de::Error = err;
                let line = err.span().map(|s| locator.line_at(s.start));
                return Err(ConfigErrors(vec![ConfigError {
                    line,
                    key: String::new(),
                    message: err.message().trim().to_owned(),
                }]));
            }
        };
        // Then types: a value of the wrong type is reported and taken out, and the rest is
        // read again, so that one mistake never hides the others.
        let mut errors = Vec::new();
        let mut unknown = Vec::new();
        let raw: RawConfig = loop {
            unknown.clear();
            let value = toml::Value::Table(table.clone());
            let mut note_unknown = |path: serde_ignored::Path<'_>| unknown.push(path_segments(&path));
            let ignored = serde_ignored::Deserializer::new(value, &mut note_unknown);
            match serde_path_to_error::deserialize::<_, RawConfig>(ignored) {
                Ok(raw) => break raw,
                Err(err) => {
                    let segments = error_segments(err.path());
                    errors.push(ConfigError {
                        line: locator.line_of(&segments),
                        key: display_path(&segments),
                        message: err.inner().message().trim().to_owned(),
                    });
                    if segments.is_empty() || !remove_at(&mut table, &segments) || errors.len() > 100 {
                        return Err(ConfigErrors(errors));
                    }
                }
            }
        };
        for segments in unknown {
            errors.push(ConfigError {
                line: locator.line_of(&segments),
                key: display_path(&segments),
                message: "unknown key".to_owned(),
            });
        }
        let config = Resolver { locator: &locator, errors: &mut errors, base }.resolve(raw);
        if errors.is_empty() {
            Ok(config)
        } else {
            errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            Err(ConfigErrors(errors))
        }
    }

    /// Reads and parses a file.
    pub fn load(path: &Path, base: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                line: None,
                key: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }])
        })?;
        Self::parse(&text, base)
    }
}

/// One mistake in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line, when the mistake is tied to one.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `environments[1].steps[0].timeout`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Every mistake found, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Parses `30s`, `5m`, `1h30m`, `250ms` (humantime), and bare integers as seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t).map_err(|_| format!("'{text}' is not a duration (e.g. 500ms, 30s, 5m, 1h)"))
}

/// Parses `256MiB`, `10MB`, `4096`, `1.5GiB` into bytes (binary and decimal units).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let err = || format!("'{text}' is not a size (e.g. 4096, 512KiB, 256MiB, 1GB)");
    let value: f64 = number.parse().map_err(|_| err())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return Err(err()),
    };
    let bytes = value * factor as f64;
    if bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64 { Ok(bytes as u64) } else { Err(err()) }
}

// ---------------------------------------------------------------------------------------------
// Raw shapes: everything optional, strings for durations and sizes, so one pass finds all.

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawConfig {
    server: RawServer,
    storage: RawStorage,
    defaults: RawDefaults,
    tokens: Vec<RawToken>,
    environments: Vec<RawEnvironment>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawServer {
    listen: Option<String>,
    drain_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawStorage {
    data_dir: Option<String>,
    artifact_retention: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum RawSize {
    Int(u64),
    Text(String),
    #[default]
    Missing,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawRetry {
    max_retries: Option<u32>,
    initial_delay: Option<String>,
    multiplier: Option<f64>,
    max_delay: Option<String>,
    jitter: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawDefaults {
    max_concurrent: Option<u32>,
    keep_releases: Option<u32>,
    step_timeout: Option<String>,
    aging: Option<String>,
    probe_interval: Option<String>,
    probe_failures: Option<u32>,
    max_artifact_size: RawSize,
    max_unpacked_size: RawSize,
    max_archive_entries: Option<u64>,
    retry: Option<RawRetry>,
    kill_grace: Option<String>,
    verify_timeout: Option<String>,
    max_running: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawToken {
    name: Option<String>,
    sha256: Option<String>,
    role: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawStep {
    name: Option<String>,
    run: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawEnvironment {
    name: Option<String>,
    root: Option<String>,
    max_concurrent: Option<u32>,
    keep_releases: Option<u32>,
    steps: Vec<RawStep>,
    verify: Vec<RawStep>,
    verify_timeout: Option<String>,
    on_rollback: Vec<RawStep>,
    probe: Option<String>,
    probe_interval: Option<String>,
    probe_failures: Option<u32>,
    retry: Option<RawRetry>,
}

// ---------------------------------------------------------------------------------------------
// Locating keys in the text.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn path_segments(path: &serde_ignored::Path<'_>) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut cur = path;
    loop {
        match cur {
            serde_ignored::Path::Root => break,
            serde_ignored::Path::Seq { parent, index } => {
                out.push(Segment::Index(*index));
                cur = parent;
            }
            serde_ignored::Path::Map { parent, key } => {
                out.push(Segment::Key(key.clone()));
                cur = parent;
            }
            serde_ignored::Path::Some { parent }
            | serde_ignored::Path::NewtypeStruct { parent }
            | serde_ignored::Path::NewtypeVariant { parent } => cur = parent,
        }
    }
    out.reverse();
    out
}

/// The key path of a type error.
fn error_segments(path: &serde_path_to_error::Path) -> Vec<Segment> {
    path.iter()
        .filter_map(|seg| match seg {
            serde_path_to_error::Segment::Map { key } => Some(Segment::Key(key.clone())),
            serde_path_to_error::Segment::Seq { index } => Some(Segment::Index(*index)),
            serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => None,
        })
        .collect()
}

/// Takes the value at `segments` out of the document (an array element becomes an empty table,
/// so that the indices of the others stay as in the file). False when there was nothing there.
fn remove_at(table: &mut toml::Table, segments: &[Segment]) -> bool {
    let Some((last, parents)) = segments.split_last() else { return false };
    let mut current: &mut toml::Value = match parents.first() {
        None => {
            return match last {
                Segment::Key(k) => table.remove(k).is_some(),
                Segment::Index(_) => false,
            };
        }
        Some(Segment::Key(k)) => match table.get_mut(k) {
            Some(v) => v,
            None => return false,
        },
        Some(Segment::Index(_)) => return false,
    };
    for seg in &parents[1..] {
        current = match (seg, current) {
            (Segment::Key(k), toml::Value::Table(t)) => match t.get_mut(k) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Index(i), toml::Value::Array(a)) => match a.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, current) {
        (Segment::Key(k), toml::Value::Table(t)) => t.remove(k).is_some(),
        (Segment::Index(i), toml::Value::Array(a)) if *i < a.len() => {
            a[*i] = toml::Value::Table(toml::Table::new());
            true
        }
        _ => false,
    }
}

fn display_path(segments: &[Segment]) -> String {
    let mut s = String::new();
    for seg in segments {
        match seg {
            Segment::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Segment::Index(i) => {
                let _ = write!(s, "[{i}]");
            }
        }
    }
    s
}

/// Maps key paths and byte offsets to 1-based line numbers.
struct Locator<'a> {
    text: &'a str,
    table: Option<toml::Spanned<toml::de::DeTable<'a>>>,
}

impl<'a> Locator<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, table: toml::de::DeTable::parse(text).ok() }
    }

    fn line_at(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())].matches('\n').count() + 1
    }

    fn line_of(&self, segments: &[Segment]) -> Option<usize> {
        let table = self.table.as_ref()?;
        let mut span = table.span();
        let mut value: Option<&toml::de::DeValue<'a>> = None;
        let mut current_table = Some(table.get_ref());
        for seg in segments {
            match seg {
                Segment::Key(k) => {
                    let t = current_table?;
                    let (key, v) = t.iter().find(|(key, _)| key.get_ref() == k)?;
                    span = key.span();
                    value = Some(v.get_ref());
                }
                Segment::Index(i) => {
                    let arr = value?.as_array()?;
                    let v = arr.get(*i)?;
                    span = v.span();
                    value = Some(v.get_ref());
                }
            }
            current_table = value.and_then(|v| v.as_table());
        }
        Some(self.line_at(span.start))
    }
}

// ---------------------------------------------------------------------------------------------
// Resolution: typed values, defaults, and every semantic check.

struct Resolver<'a, 'b> {
    locator: &'a Locator<'a>,
    errors: &'b mut Vec<ConfigError>,
    base: &'a Path,
}

fn key(parts: &[&dyn fmt::Display]) -> Vec<Segment> {
    parts
        .iter()
        .map(|p| {
            let s = p.to_string();
            s.parse::<usize>().map_or(Segment::Key(s), Segment::Index)
        })
        .collect()
}

impl Resolver<'_, '_> {
    fn error(&mut self, segments: &[Segment], message: impl Into<String>) {
        self.errors.push(ConfigError {
            line: self.locator.line_of(segments),
            key: display_path(segments),
            message: message.into(),
        });
    }

    fn duration(&mut self, value: Option<&String>, segments: &[Segment], default: Duration) -> Duration {
        match value {
            None => default,
            Some(text) => match parse_duration(text) {
                Ok(d) => d,
                Err(msg) => {
                    self.error(segments, msg);
                    default
                }
            },
        }
    }

    fn size(&mut self, value: &RawSize, segments: &[Segment], default: u64) -> u64 {
        match value {
            RawSize::Missing => default,
            RawSize::Int(n) => *n,
            RawSize::Text(text) => match parse_size(text) {
                Ok(n) => n,
                Err(msg) => {
                    self.error(segments, msg);
                    default
                }
            },
        }
    }

    fn positive(&mut self, value: Option<u32>, segments: &[Segment], default: u32) -> u32 {
        match value {
            Some(0) => {
                self.error(segments, "must be at least 1");
                default
            }
            Some(n) => n,
            None => default,
        }
    }

    fn path(&self, text: &str) -> PathBuf {
        let p = Path::new(text);
        if p.is_absolute() { p.to_path_buf() } else { self.base.join(p) }
    }

    fn retry(&mut self, raw: Option<&RawRetry>, prefix: &[Segment], base: &RetryPolicy) -> RetryPolicy {
        let Some(raw) = raw else { return base.clone() };
        let at = |k: &str| {
            let mut v = prefix.to_vec();
            v.push(Segment::Key(k.to_owned()));
            v
        };
        let policy = RetryPolicy {
            max_retries: raw.max_retries.unwrap_or(base.max_retries),
            initial_delay: self.duration(raw.initial_delay.as_ref(), &at("initial_delay"), base.initial_delay),
            multiplier: raw.multiplier.unwrap_or(base.multiplier),
            max_delay: self.duration(raw.max_delay.as_ref(), &at("max_delay"), base.max_delay),
            jitter: raw.jitter.unwrap_or(base.jitter),
        };
        if !(policy.multiplier.is_finite() && policy.multiplier >= 1.0) {
            self.error(&at("multiplier"), "must be a number ≥ 1.0");
        }
        if !(0.0..=1.0).contains(&policy.jitter) {
            self.error(&at("jitter"), "must be between 0.0 and 1.0");
        }
        if policy.max_retries > 100 {
            self.error(&at("max_retries"), "must be at most 100");
        }
        policy
    }

    fn steps(&mut self, raw: &[RawStep], list: &str, env_index: usize, timeout: Duration) -> Vec<StepConfig> {
        let mut out = Vec::new();
        for (i, step) in raw.iter().enumerate() {
            let here = key(&[&"environments", &env_index, &list, &i]);
            let Some(run) = step.run.as_ref().filter(|r| !r.trim().is_empty()) else {
                if step.run.is_some() {
                    let mut at_run = here.clone();
                    at_run.push(Segment::Key("run".into()));
                    self.error(&at_run, "empty `run` (the command to execute)");
                } else {
                    self.error(&here, "missing `run` (the command to execute)");
                }
                continue;
            };
            let mut at_timeout = here.clone();
            at_timeout.push(Segment::Key("timeout".into()));
            let timeout = self.duration(step.timeout.as_ref(), &at_timeout, timeout);
            let name = step.name.clone().unwrap_or_else(|| format!("{list}-{}", i + 1));
            out.push(StepConfig { name, run: run.clone(), timeout });
        }
        out
    }

    #[allow(clippy::needless_pass_by_value)] // consumes the raw tree conceptually; fields are cloned where kept
    fn resolve(mut self, raw: RawConfig) -> Config {
        let listen_text = raw.server.listen.as_deref().unwrap_or("127.0.0.1:7878");
        let listen = listen_text.parse().unwrap_or_else(|_| {
            self.error(&key(&[&"server", &"listen"]), format!("'{listen_text}' is not an address like 127.0.0.1:7878"));
            SocketAddr::from(([127, 0, 0, 1], 7878))
        });
        let server = ServerConfig {
            listen,
            drain_timeout: self.duration(
                raw.server.drain_timeout.as_ref(),
                &key(&[&"server", &"drain_timeout"]),
                Duration::from_secs(30),
            ),
        };
        let data_dir = self.path(raw.storage.data_dir.as_deref().unwrap_or(".tds"));
        let artifact_retention = self.duration(
            raw.storage.artifact_retention.as_ref(),
            &key(&[&"storage", &"artifact_retention"]),
            Duration::from_secs(7 * 86_400),
        );

        let d = &raw.defaults;
        let dk = |k: &str| key(&[&"defaults", &k]);
        let defaults = Defaults {
            max_concurrent: self.positive(d.max_concurrent, &dk("max_concurrent"), 3),
            keep_releases: self.positive(d.keep_releases, &dk("keep_releases"), 5),
            step_timeout: self.duration(d.step_timeout.as_ref(), &dk("step_timeout"), Duration::from_secs(600)),
            aging: self.duration(d.aging.as_ref(), &dk("aging"), Duration::from_secs(600)),
            probe_interval: self.duration(d.probe_interval.as_ref(), &dk("probe_interval"), Duration::from_secs(15)),
            probe_failures: self.positive(d.probe_failures, &dk("probe_failures"), 3),
            max_artifact_size: self.size(&d.max_artifact_size, &dk("max_artifact_size"), 256 << 20),
            max_unpacked_size: self.size(&d.max_unpacked_size, &dk("max_unpacked_size"), 4 << 30),
            max_archive_entries: d.max_archive_entries.unwrap_or(100_000),
            retry: self.retry(d.retry.as_ref(), &dk("retry"), &RetryPolicy::default()),
            kill_grace: self.duration(d.kill_grace.as_ref(), &dk("kill_grace"), Duration::from_secs(5)),
            verify_timeout: self.duration(d.verify_timeout.as_ref(), &dk("verify_timeout"), Duration::from_secs(30)),
            max_running: d.max_running,
        };
        if defaults.max_running == Some(0) {
            self.error(&dk("max_running"), "must be at least 1 (leave it out for no global cap)");
        }

        let mut tokens = Vec::new();
        let mut token_names = HashSet::new();
        for (i, t) in raw.tokens.iter().enumerate() {
            let at = |k: &str| key(&[&"tokens", &i, &k]);
            let name = t.name.clone().unwrap_or_else(|| format!("token-{}", i + 1));
            if !token_names.insert(name.clone()) {
                self.error(&at("name"), format!("duplicate token name '{name}'"));
            }
            let sha = t.sha256.clone().unwrap_or_default().to_ascii_lowercase();
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.error(&at("sha256"), "must be the 64 hex digits printed by `tds token hash`");
            }
            let role = match t.role.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("viewer") => Role::Viewer,
                Some("operator") => Role::Operator,
                Some("admin") => Role::Admin,
                Some(other) => {
                    self.error(&at("role"), format!("role '{other}' is not one of viewer, operator, admin"));
                    Role::Viewer
                }
                None => {
                    self.error(&key(&[&"tokens", &i]), "missing `role` (viewer, operator or admin)");
                    Role::Viewer
                }
            };
            tokens.push(TokenConfig { name, sha256: sha, role });
        }

        if tokens.is_empty() && !server.listen.ip().is_loopback() {
            self.error(
                &key(&[&"server", &"listen"]),
                format!(
                    "{} is not a loopback address and no [[tokens]] are configured: anyone who can reach it could deploy \
                     (add tokens, see `tds token hash`, or listen on 127.0.0.1)",
                    server.listen
                ),
            );
        }

        if raw.environments.is_empty() {
            self.error(
                &key(&[&"environments"]),
                "no environment is configured: add at least one [[environments]] table with a `name` and a `root`",
            );
        }
        let mut environments = Vec::new();
        let mut names = BTreeSet::new();
        for (i, e) in raw.environments.iter().enumerate() {
            let at = |k: &str| key(&[&"environments", &i, &k]);
            let name = match e.name.as_deref() {
                None => {
                    self.error(&key(&[&"environments", &i]), "missing `name`");
                    format!("environment-{}", i + 1)
                }
                Some(n) if !valid_environment_name(n) => {
                    self.error(&at("name"), format!("'{n}' is not a valid name (letters, digits, '-', '_', '.', at most 64, not starting with '.')"));
                    n.to_owned()
                }
                Some(n) => n.to_owned(),
            };
            if !names.insert(name.clone()) {
                self.error(&at("name"), format!("duplicate environment name '{name}'"));
            }
            let root = match e.root.as_deref() {
                Some(r) if !r.trim().is_empty() => self.path(r),
                Some(_) => {
                    self.error(&at("root"), format!("environment '{name}' has an empty `root`"));
                    PathBuf::new()
                }
                None => {
                    self.error(
                        &key(&[&"environments", &i]),
                        format!("environment '{name}' is missing `root` (the folder holding releases/ and current)"),
                    );
                    PathBuf::new()
                }
            };
            let step_timeout = defaults.step_timeout;
            let steps = self.steps(&e.steps, "steps", i, step_timeout);
            let verify = self.steps(&e.verify, "verify", i, step_timeout);
            let on_rollback = self.steps(&e.on_rollback, "on_rollback", i, step_timeout);
            let env = EnvironmentConfig {
                max_concurrent: self.positive(e.max_concurrent, &at("max_concurrent"), defaults.max_concurrent),
                keep_releases: self.positive(e.keep_releases, &at("keep_releases"), defaults.keep_releases),
                verify_timeout: self.duration(
                    e.verify_timeout.as_ref(),
                    &at("verify_timeout"),
                    defaults.verify_timeout,
                ),
                probe: e.probe.clone().filter(|p| !p.trim().is_empty()),
                probe_interval: self.duration(
                    e.probe_interval.as_ref(),
                    &at("probe_interval"),
                    defaults.probe_interval,
                ),
                probe_failures: self.positive(e.probe_failures, &at("probe_failures"), defaults.probe_failures),
                retry: self.retry(e.retry.as_ref(), &at("retry"), &defaults.retry),
                name,
                root,
                steps,
                verify,
                on_rollback,
            };
            environments.push(Arc::new(env));
        }
        Config { server, data_dir, artifact_retention, defaults, tokens, environments }
    }
}

/// Environment names end up in paths, URLs and log lines: keep them plain.
pub fn valid_environment_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
#[allow(clippy::float_cmp)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(text, Path::new("/base"))
    }

    #[test]
    fn the_built_in_default_config_is_valid() {
        let config = parse(DEFAULT_CONFIG).expect("assets/default.toml parses");
        assert!(!config.environments.is_empty());
    }

    #[test]
    fn a_full_config_resolves_defaults_and_paths() {
        let config = parse(
            r#"
[server]
listen = "127.0.0.1:9000"
[storage]
data_dir = "state"
[defaults]
max_concurrent = 2
retry = { max_retries = 1, initial_delay = "1s" }
[[environments]]
name = "staging"
root = "envs/staging"
steps = [{ name = "install", run = "./install.sh", timeout = "5m" }]
[[environments]]
name = "qa"
root = "/srv/qa"
max_concurrent = 1
"#,
        )
        .expect("valid");
        assert_eq!(config.server.listen.port(), 9000);
        assert_eq!(config.data_dir, Path::new("/base/state"));
        let staging = config.environment("staging").expect("staging");
        assert_eq!(staging.root, Path::new("/base/envs/staging"));
        assert_eq!(staging.max_concurrent, 2);
        assert_eq!(staging.steps[0].timeout, Duration::from_secs(300));
        assert_eq!(staging.retry.max_retries, 1);
        assert_eq!(staging.retry.initial_delay, Duration::from_secs(1));
        assert_eq!(staging.retry.multiplier, 2.0);
        assert_eq!(config.environment("qa").expect("qa").max_concurrent, 1);
    }

    #[test]
    fn every_mistake_is_reported_with_its_line() {
        let text = r#"[defaults]
step_timeout = "ten minutes"
colour = "blue"

[[environments]]
name = "staging"
root = "a"
steps = [{ name = "x", run = "true", timout = "5m" }]

[[environments]]
name = "staging"

[[environments]]
name = "qa"
root = "b"
max_concurrent = 0
"#;
        let errors = parse(text).expect_err("invalid").0;
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let expect = [
            "line 2: defaults.step_timeout: 'ten minutes' is not a duration",
            "line 3: defaults.colour: unknown key",
            "line 8: environments[0].steps[0].timout: unknown key",
            "line 10: environments[1]: environment 'staging' is missing `root`",
            "line 11: environments[1].name: duplicate environment name 'staging'",
            "line 16: environments[2].max_concurrent: must be at least 1",
        ];
        for e in expect {
            assert!(shown.iter().any(|s| s.starts_with(e)), "missing {e:?} in {shown:#?}");
        }
        assert_eq!(shown.len(), expect.len(), "{shown:#?}");
    }

    #[test]
    fn a_config_without_environments_is_refused() {
        for text in ["", "[server]\nlisten = \"127.0.0.1:7878\"\n"] {
            let errors = parse(text).expect_err("no environments").0;
            let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
            assert_eq!(shown.len(), 1, "{shown:#?}");
            assert!(shown[0].contains("environments: no environment is configured"), "{shown:#?}");
        }
    }

    #[test]
    fn a_type_error_does_not_hide_the_other_mistakes() {
        let text = r#"[defaults]
max_concurrent = -1
step_timeout = "soon"
[server]
listen = "0.0.0.0:7878"
[[tokens]]
name = "ci"
sha256 = "nope"
role = "superuser"
[[environments]]
name = "x"
root = ""
keep_releases = "five"
steps = [{ name = "s", run = "" }]
"#;
        let shown: Vec<String> = parse(text).expect_err("invalid").0.iter().map(ToString::to_string).collect();
        let expect = [
            "line 2: defaults.max_concurrent: invalid value: integer `-1`, expected u32",
            "line 3: defaults.step_timeout: 'soon' is not a duration",
            "line 8: tokens[0].sha256: must be the 64 hex digits",
            "line 9: tokens[0].role: role 'superuser' is not one of viewer, operator, admin",
            "line 12: environments[0].root: environment 'x' has an empty `root`",
            "line 13: environments[0].keep_releases: invalid type: string \"five\", expected u32",
            "line 14: environments[0].steps[0].run: empty `run`",
        ];
        for e in expect {
            assert!(shown.iter().any(|s| s.starts_with(e)), "missing {e:?} in {shown:#?}");
        }
        assert_eq!(shown.len(), expect.len(), "{shown:#?}");
        // What `--serve` would refuse, check-config refuses too.
        let open = parse("[server]\nlisten = \"0.0.0.0:7878\"\n").expect_err("open bind").0;
        assert!(
            open[0].to_string().starts_with("line 2: server.listen: 0.0.0.0:7878 is not a loopback address"),
            "{open:?}"
        );
    }

    #[test]
    fn syntax_and_type_errors_name_the_line() {
        let errors = parse("[server]\nlisten = \n").expect_err("syntax").0;
        assert_eq!(errors[0].line, Some(2), "{errors:?}");
        let errors = parse("[defaults]\nmax_concurrent = \"three\"\n").expect_err("type").0;
        assert_eq!(errors[0].line, Some(2), "{errors:?}");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn environment_names_are_plain() {
        assert!(valid_environment_name("staging-2.eu_1"));
        for bad in ["", "../prod", "a/b", ".hidden", "stag ing", "x\u{1b}[2J"] {
            assert!(!valid_environment_name(bad), "{bad:?}");
        }
    }
}
