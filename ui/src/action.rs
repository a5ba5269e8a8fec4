//! `Action`: every reason the state may change (keys, mouse, ticks, core events, answers to
//! effects); `Effect`: every call into the orchestrator or the disk that `update` asks the loop
//! to make. Keeping both as plain data keeps `update` pure and testable.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use tds_core::metrics::{Metrics, Performance};
use tds_core::model::{DeploymentId, DeploymentView, Priority};
use tds_core::store::Page;
use tds_core::{CoreEvent, DeploymentDetail, Snapshot};
use tui_input::InputRequest;

use crate::logtail::LogChunk;
use crate::state::{Pane, PathCheck};
use crate::trends::{CoreTrends, TrendWindow};

/// One change request to the state, handled by [`crate::update::update`].
#[derive(Debug, Clone)]
pub enum Action {
    // --- from the loop
    /// Wall time moved on (slow tick).
    Tick(DateTime<Utc>),
    /// The terminal has this size now.
    Resize {
        width: u16,
        height: u16,
    },
    /// Everything live, at start or after the event stream lagged.
    Snapshot(Box<Snapshot>),
    /// One committed change from the core.
    Core(CoreEvent),
    /// Rebuild derived data (rows, trends) before a frame.
    Settle,
    /// New lines of the followed log.
    Log(Box<LogChunk>),

    // --- keys and mouse
    Quit,
    /// Quit at once, without asking (Ctrl-C).
    ForceQuit,
    Help,
    /// `Esc`: close what is open, clear the filter.
    Back,
    FocusNext,
    FocusPrev,
    Focus(Pane),
    Up,
    Down,
    Left,
    Right,
    Top,
    Bottom,
    PageUp,
    PageDown,
    /// `Enter` in the dashboard: details (Queue, Logs) or filter by environment.
    Open,
    Cancel,
    Retry,
    PriorityUp,
    PriorityDown,
    New,
    /// `/`: filter the queue, or search the log when the Logs pane has focus.
    Search,
    NextMatch,
    PrevMatch,
    TogglePause,
    EditLimit,
    ToggleFollow,
    ToggleWrap,
    ToggleFinished,
    PrevAttempt,
    NextAttempt,
    /// `t`: next trend window.
    TrendWindow,
    /// `m`: the metrics view.
    Metrics,
    /// `y`/`n` to a confirmation.
    Answer(bool),
    /// Text editing in a prompt or a form field.
    Input(InputRequest),
    /// Bracketed paste into the text field with focus.
    Paste(String),
    /// `Enter` in a prompt or the form.
    Submit,
    /// `Tab` in the form: complete the path, or go to the next field.
    FormTab,
    FormNext,
    FormPrev,
    /// The mouse wheel over a cell (`delta` < 0: up).
    Scroll {
        column: u16,
        row: u16,
        delta: i16,
    },
    Click {
        column: u16,
        row: u16,
    },

    // --- answers to effects
    /// An effect worked: say so in the footer.
    Done(String),
    /// An effect failed: say why in the footer.
    Failed(String),
    Submitted(Result<Box<DeploymentView>, String>),
    DetailLoaded(DeploymentId, Result<Box<DeploymentDetail>, String>),
    HistoryPage(Result<Box<Page<DeploymentView>>, String>),
    PathChecked(PathCheck),
    TrendsLoaded(Result<Box<CoreTrends>, String>),
    MetricsLoaded(Result<Box<(Metrics, Performance)>, String>),
}

/// A new deployment from the form, validated except for the file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub environment: String,
    pub path: PathBuf,
    pub version: String,
    pub priority: Priority,
    pub params: BTreeMap<String, String>,
}

/// A side effect for the loop to carry out; its outcome comes back as an [`Action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Cancel(DeploymentId),
    Retry(DeploymentId),
    SetPriority(DeploymentId, Priority),
    SetPaused {
        environment: String,
        paused: bool,
    },
    SetLimit {
        environment: String,
        limit: u32,
    },
    Submit(Box<Submission>),
    LoadDetail(DeploymentId),
    /// A page of finished deployments created before `before`.
    LoadHistory {
        before: Option<DateTime<Utc>>,
    },
    /// Check the artifact path and list completions.
    CheckPath(String),
    /// The core's trends for a window, ending now.
    LoadTrends(TrendWindow),
    /// Live metrics and the last 24 hours' performance.
    LoadMetrics,
}
