//! `AppState`: everything the dashboard shows, owned by the loop, changed only by
//! [`crate::update::update`], read by the pure `view` functions.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, Utc};
use ratatui::layout::Rect;
use tds_core::DeploymentDetail;
use tds_core::model::{DeploymentId, DeploymentView, EnvironmentView, Priority, StatusKind};
use tui_input::Input;

use crate::filter::Filter;
use crate::logtail::LogLine;
use crate::trends::{CoreTrends, DepthSamples, TrendSeries, TrendWindow};

/// The four panes, in `Tab` order; `1`–`4` focus them directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pane {
    #[default]
    Queue,
    Environments,
    Logs,
    Trends,
}

impl Pane {
    /// Every pane in focus order.
    pub const ALL: [Pane; 4] = [Pane::Queue, Pane::Environments, Pane::Logs, Pane::Trends];

    /// The pane's title (with its number key).
    pub fn title(self) -> &'static str {
        match self {
            Pane::Queue => "1 Queue",
            Pane::Environments => "2 Environments",
            Pane::Logs => "3 Logs",
            Pane::Trends => "4 Trends",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }

    /// The pane after this one (`Tab`).
    #[must_use]
    pub fn next(self) -> Self {
        Self::ALL[(self.index() + 1) % Self::ALL.len()]
    }

    /// The pane before this one (`Shift-Tab`).
    #[must_use]
    pub fn prev(self) -> Self {
        Self::ALL[(self.index() + Self::ALL.len() - 1) % Self::ALL.len()]
    }
}

/// The queue pane: which deployments are listed, in which order, and the selection.
#[derive(Debug, Clone, Default)]
pub struct QueueState {
    /// What is listed, in display order (derived; rebuilt on `Settle` when `dirty`).
    pub rows: Vec<Arc<DeploymentView>>,
    /// Index into `rows`.
    pub selected: usize,
    /// The selected deployment; the selection follows it when rows move.
    pub selected_id: Option<DeploymentId>,
    /// The first row shown.
    pub offset: usize,
    /// The selection stays on the first row (what runs now) instead of following one
    /// deployment down the list; true until the user first picks a row (by key, click or a
    /// submission), which the selection then follows wherever it moves.
    pub follow_top: bool,
    /// Include every finished deployment, paging older ones in from the store (`a`); without
    /// it, finished ones stay listed for [`RECENT_MINUTES`] so that a result does not vanish
    /// under the cursor.
    pub show_finished: bool,
    /// The filter text as typed, and parsed.
    pub filter_text: String,
    pub filter: Filter,
    /// Rows must be rebuilt.
    pub dirty: bool,
    /// Deployments that are not finished (for the title and the quit question).
    pub live: usize,
    pub running: usize,
}

/// Finished deployments stay in the default queue view this long.
pub const RECENT_MINUTES: i64 = 5;

/// The environments pane: the selection (the target of `p` and `L`).
#[derive(Debug, Clone, Default)]
pub struct EnvState {
    pub selected: usize,
    pub offset: usize,
}

/// Which log file is shown: a deployment and one of its attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LogTarget {
    pub id: DeploymentId,
    pub attempt: u32,
}

/// Upper bound of log lines kept for display; older ones fall off the front.
pub const LOG_RING: usize = 5000;

/// The logs pane: a bounded ring of the target's most recent lines, and how they are viewed.
#[derive(Debug, Clone)]
pub struct LogState {
    pub target: Option<LogTarget>,
    /// An attempt chosen with `[`/`]`; `None` follows the deployment's current attempt.
    pub pinned: Option<u32>,
    pub lines: VecDeque<LogLine>,
    /// Absolute number of `lines[0]` (lines dropped from the ring or never loaded count).
    pub first: u64,
    /// Absolute number of the first line shown when not following.
    pub top: u64,
    /// Show the end as it grows (`f`); scrolling up turns it off.
    pub follow: bool,
    /// Wrap long lines (`w`); otherwise they are cut.
    pub wrap: bool,
    /// The active search (`/` in the pane), matched case-insensitively.
    pub search: Option<String>,
    /// Bytes at the start of a large file that were not loaded.
    pub skipped_bytes: u64,
    /// The log could not be read (shown in the pane).
    pub error: Option<String>,
    /// The file has been read at least once.
    pub loaded: bool,
}

impl Default for LogState {
    fn default() -> Self {
        Self {
            target: None,
            pinned: None,
            lines: VecDeque::new(),
            first: 0,
            top: 0,
            follow: true,
            wrap: false,
            search: None,
            skipped_bytes: 0,
            error: None,
            loaded: false,
        }
    }
}

impl LogState {
    /// Absolute number one past the last line.
    pub fn end(&self) -> u64 {
        self.first + self.lines.len() as u64
    }

    /// The line with absolute number `n`, if still in the ring.
    pub fn line(&self, n: u64) -> Option<&LogLine> {
        n.checked_sub(self.first).and_then(|i| self.lines.get(usize::try_from(i).ok()?))
    }
}

/// The trends pane: the window and the computed series.
#[derive(Debug, Clone, Default)]
pub struct TrendState {
    pub window: TrendWindow,
    pub series: TrendSeries,
    pub depth: DepthSamples,
    /// When the series were last computed (they are recomputed every few seconds).
    pub computed_at: Option<DateTime<Utc>>,
    pub dirty: bool,
    /// The core's trends for the current window, once they arrived.
    pub core: Option<Box<CoreTrends>>,
    /// A request for the core's trends is in flight.
    pub loading: bool,
    pub requested_at: Option<DateTime<Utc>>,
    /// Something finished or the window changed: ask the core again soon.
    pub stale: bool,
}

/// Older finished deployments paged in from the store (`a`, then scrolling past the end).
#[derive(Debug, Clone, Default)]
pub struct HistoryState {
    pub older: Vec<Arc<DeploymentView>>,
    /// A page is being read.
    pub loading: bool,
    /// The store has nothing older.
    pub exhausted: bool,
}

/// Most older deployments held at once (history is paged, never held whole).
pub const HISTORY_CAP: usize = 5_000;

/// The fields of the new-deployment form, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FormField {
    #[default]
    Environment,
    Artifact,
    Version,
    Priority,
    Params,
}

impl FormField {
    /// Every field in order.
    pub const ALL: [FormField; 5] =
        [FormField::Environment, FormField::Artifact, FormField::Version, FormField::Priority, FormField::Params];

    /// The label shown before the field.
    pub fn label(self) -> &'static str {
        match self {
            FormField::Environment => "Environment",
            FormField::Artifact => "Artifact",
            FormField::Version => "Version",
            FormField::Priority => "Priority",
            FormField::Params => "Params",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|f| *f == self).unwrap_or(0)
    }

    /// The next field, wrapping.
    #[must_use]
    pub fn next(self) -> Self {
        Self::ALL[(self.index() + 1) % Self::ALL.len()]
    }

    /// The previous field, wrapping.
    #[must_use]
    pub fn prev(self) -> Self {
        Self::ALL[(self.index() + Self::ALL.len() - 1) % Self::ALL.len()]
    }
}

/// What the artifact path points at, as last checked on disk.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PathStatus {
    /// Not checked yet (or empty).
    #[default]
    Unknown,
    /// A regular file of this size.
    File(u64),
    Directory,
    Missing,
    /// Exists but cannot be used (unreadable, special file).
    Unusable(String),
}

/// The result of checking the artifact path: its status and completion candidates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathCheck {
    /// The text that was checked (stale results are ignored).
    pub input: String,
    pub status: PathStatus,
    /// Entries of the parent folder that start with the typed name (directories end in `/`).
    pub candidates: Vec<String>,
    /// The longest common extension of the typed text over all candidates (what `Tab` adds).
    pub completion: Option<String>,
}

/// The new-deployment form (`n`).
#[derive(Debug, Clone, Default)]
pub struct FormState {
    pub field: FormField,
    /// Index into the environments list.
    pub env: usize,
    pub artifact: Input,
    pub version: Input,
    pub priority: Priority,
    pub params: Input,
    pub check: PathCheck,
    /// Shown under the fields: a validation message or the core's refusal.
    pub error: Option<String>,
    /// The submission is in flight.
    pub submitting: bool,
    /// `Tab` cycling through ambiguous completions: folder part, choices, current one.
    pub cycle: Option<(String, Vec<String>, usize)>,
    /// `Tab` came before the check of the typed path: it completes (or moves on) when that
    /// check arrives, and the form keys typed meanwhile wait in `typed_ahead` and are replayed
    /// after it, so that keys typed quickly act as if typed slowly.
    pub tab_pending: bool,
    pub typed_ahead: Vec<crate::action::Action>,
}

/// The detail view (`Enter`): one deployment with attempts and timeline.
#[derive(Debug, Clone)]
pub struct DetailState {
    pub id: DeploymentId,
    pub detail: Option<Box<DeploymentDetail>>,
    pub error: Option<String>,
    pub scroll: u16,
    pub loading: bool,
    /// A change arrived while loading: load again when the answer comes.
    pub stale: bool,
}

/// The metrics view (`m`): live figures and the last 24 hours, from the core's analytics.
#[derive(Debug, Clone, Default)]
pub struct MetricsState {
    pub metrics: Option<Box<tds_core::metrics::Metrics>>,
    pub performance: Option<Box<tds_core::metrics::Performance>>,
    pub error: Option<String>,
    pub scroll: u16,
    pub loading: bool,
    /// When the figures were last asked for (they refresh every few seconds while shown).
    pub requested_at: Option<DateTime<Utc>>,
}

/// What a one-line prompt edits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptKind {
    /// The queue filter (`/`), applied as typed.
    Filter,
    /// Search in the log (`/` in the Logs pane).
    LogSearch,
    /// A new concurrency limit for an environment (`L`).
    Limit { environment: String },
}

/// A one-line text prompt.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub kind: PromptKind,
    pub input: Input,
}

/// A question that needs `y` before anything happens.
#[derive(Debug, Clone)]
pub enum Confirm {
    /// Cancel a deployment (its label says which); asked over the detail view when `over` holds
    /// it, which comes back after the answer.
    Cancel { id: DeploymentId, label: String, over: Option<Box<DetailState>> },
    /// Quit while deployments run (quitting stops the embedded orchestrator); the dialog counts
    /// them live.
    Quit,
}

/// What has the keyboard.
#[derive(Debug, Clone, Default)]
pub enum Mode {
    #[default]
    Normal,
    Help {
        scroll: u16,
    },
    Detail(Box<DetailState>),
    Metrics(Box<MetricsState>),
    Form(Box<FormState>),
    Prompt(Prompt),
    Confirm(Confirm),
}

impl Mode {
    /// The detail view, shown or under a cancel question asked over it (it keeps loading and
    /// refreshing there, and keys act on its deployment).
    pub fn detail(&self) -> Option<&DetailState> {
        match self {
            Mode::Detail(d) | Mode::Confirm(Confirm::Cancel { over: Some(d), .. }) => Some(d),
            _ => None,
        }
    }

    /// [`Mode::detail`], to change.
    pub fn detail_mut(&mut self) -> Option<&mut DetailState> {
        match self {
            Mode::Detail(d) | Mode::Confirm(Confirm::Cancel { over: Some(d), .. }) => Some(d),
            _ => None,
        }
    }
}

/// A short message in the footer: the answer to an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub text: String,
    pub error: bool,
    pub until: DateTime<Utc>,
}

/// Everything the dashboard draws from. Rendering reads it; only `update` writes it.
#[derive(Debug, Clone)]
pub struct AppState {
    pub title: String,
    /// API address for the header, `None` shows "API off".
    pub api: Option<String>,
    /// The global cap on running deployments (`defaults.max_running`), shown in the header.
    pub max_running: Option<u32>,
    /// The data folder goes away on quit (`--demo`), so running work is not resumed.
    pub ephemeral: bool,
    /// Local time offset for clocks (fixed at start; tests use UTC).
    pub offset: FixedOffset,
    /// Wall time of the last tick: the only clock the view knows.
    pub now: DateTime<Utc>,
    /// The terminal size.
    pub area: Rect,

    /// Live and recently finished deployments (from the snapshot and events).
    pub deployments: HashMap<DeploymentId, Arc<DeploymentView>>,
    pub environments: Vec<Arc<EnvironmentView>>,
    pub history: HistoryState,

    pub focus: Pane,
    pub queue: QueueState,
    pub envs: EnvState,
    pub logs: LogState,
    pub trends: TrendState,
    pub mode: Mode,
    pub flash: Option<Flash>,
    /// The loop ends after this frame.
    pub quit: bool,
}

impl AppState {
    /// An empty dashboard; the loop feeds it a snapshot next.
    pub fn new(title: impl Into<String>, api: Option<String>, offset: FixedOffset, now: DateTime<Utc>) -> Self {
        Self {
            title: title.into(),
            api,
            max_running: None,
            ephemeral: false,
            offset,
            now,
            area: Rect::default(),
            deployments: HashMap::new(),
            environments: Vec::new(),
            history: HistoryState::default(),
            focus: Pane::Queue,
            queue: QueueState { dirty: true, follow_top: true, ..QueueState::default() },
            envs: EnvState::default(),
            logs: LogState::default(),
            trends: TrendState { dirty: true, ..TrendState::default() },
            mode: Mode::Normal,
            flash: None,
            quit: false,
        }
    }

    /// The deployment the queue's selection points at.
    pub fn selected(&self) -> Option<&Arc<DeploymentView>> {
        self.queue.rows.get(self.queue.selected)
    }

    /// A deployment by id, from the live set or the paged-in history.
    pub fn find(&self, id: DeploymentId) -> Option<&Arc<DeploymentView>> {
        self.deployments.get(&id).or_else(|| self.history.older.iter().find(|d| d.id == id))
    }

    /// The environment selected in the Environments pane.
    pub fn selected_env(&self) -> Option<&Arc<EnvironmentView>> {
        self.environments.get(self.envs.selected)
    }

    /// The environment that `p` and `L` act on: the Environments pane's selection when that
    /// pane has focus, otherwise the environment of the selected deployment.
    pub fn target_env(&self) -> Option<&Arc<EnvironmentView>> {
        if self.focus == Pane::Environments {
            return self.selected_env();
        }
        match self.selected() {
            Some(d) => self.environments.iter().find(|e| e.name == d.environment),
            None => self.selected_env(),
        }
    }

    /// Deployments holding a slot (running or rolling back).
    pub fn running(&self) -> usize {
        self.deployments.values().filter(|d| d.status.holds_slot()).count()
    }

    /// Deployments waiting (queued or in retry backoff): the queue depth of the trends.
    pub fn waiting(&self) -> usize {
        self.deployments.values().filter(|d| matches!(d.status, StatusKind::Queued | StatusKind::RetryWait)).count()
    }

    /// Local wall time for display.
    pub fn local(&self, t: DateTime<Utc>) -> DateTime<FixedOffset> {
        t.with_timezone(&self.offset)
    }
}
