//! Status, phase and priority: the enums of the state machine in `PRODUCT.md`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::StepRef;

/// A value that is not one of an enum's names; carries the accepted ones so that errors can list
/// them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{value}' is not a valid {what} (expected one of: {})", expected.join(", "))]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static [&'static str],
}

/// Implements lowercase `Display`, case-insensitive `FromStr` and serde for a field-less enum, so
/// that every enum on the wire follows one policy: lowercase out, any case in.
macro_rules! wire_enum {
    ($ty:ident, $what:literal, [$($variant:ident => $name:literal),+ $(,)?]) => {
        impl $ty {
            /// Every accepted name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// The lowercase wire name.
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $(if s.eq_ignore_ascii_case($name) { return Ok(Self::$variant); })+
                Err(UnknownValue { what: $what, value: s.to_owned(), expected: Self::NAMES })
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// How urgent a deployment is. Ordered: `Low < Normal < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Critical,
}

wire_enum!(Priority, "priority", [Low => "low", Normal => "normal", High => "high", Critical => "critical"]);

impl Priority {
    /// All levels from lowest to highest.
    pub const ALL: [Priority; 4] = [Priority::Low, Priority::Normal, Priority::High, Priority::Critical];

    /// The level's rank, 0 (low) to 3 (critical); used for aging arithmetic.
    pub const fn rank(self) -> u8 {
        self as u8
    }

    /// The level of a rank, saturating at `Critical`.
    pub const fn from_rank(rank: u64) -> Self {
        match rank {
            0 => Priority::Low,
            1 => Priority::Normal,
            2 => Priority::High,
            _ => Priority::Critical,
        }
    }

    /// One level up (the `+` key), saturating.
    #[must_use]
    pub const fn raised(self) -> Self {
        Self::from_rank(self.rank() as u64 + 1)
    }

    /// One level down (the `-` key), saturating.
    #[must_use]
    pub const fn lowered(self) -> Self {
        match self {
            Priority::Low | Priority::Normal => Priority::Low,
            Priority::High => Priority::Normal,
            Priority::Critical => Priority::High,
        }
    }
}

/// The fixed phases of the plan, plus `rollback` which undoes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Prepare,
    Steps,
    Activate,
    Verify,
    Finalize,
    Rollback,
}

wire_enum!(Phase, "phase", [
    Prepare => "prepare", Steps => "steps", Activate => "activate",
    Verify => "verify", Finalize => "finalize", Rollback => "rollback",
]);

/// The status without its data: what filters, counters and the wire use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatusKind {
    Queued,
    Running,
    RollingBack,
    RetryWait,
    Succeeded,
    Failed,
    Cancelled,
}

wire_enum!(StatusKind, "status", [
    Queued => "queued", Running => "running", RollingBack => "rolling_back",
    RetryWait => "retry_wait", Succeeded => "succeeded", Failed => "failed", Cancelled => "cancelled",
]);

impl StatusKind {
    /// `succeeded`, `failed` and `cancelled` end a deployment; only a manual retry reopens it.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// Holding an environment slot (a process may be running or being cleaned up).
    pub const fn holds_slot(self) -> bool {
        matches!(self, Self::Running | Self::RollingBack)
    }
}

/// Where a deployment is in the state machine of `PRODUCT.md`; each variant carries only its own
/// data, so that e.g. a queued deployment cannot have a `finished_at`.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Waiting for a slot; `enqueued_at` drives aging.
    Queued {
        enqueued_at: DateTime<Utc>,
    },
    /// An attempt holds a slot and runs its plan.
    Running {
        attempt_started_at: DateTime<Utc>,
        phase: Phase,
        step: Option<StepRef>,
    },
    /// The attempt failed or was cancelled; its release is being undone.
    RollingBack {
        attempt_started_at: DateTime<Utc>,
    },
    /// Waiting out the backoff before the next automatic attempt.
    RetryWait {
        until: DateTime<Utc>,
    },
    Succeeded {
        finished_at: DateTime<Utc>,
    },
    Failed {
        finished_at: DateTime<Utc>,
        reason: String,
    },
    Cancelled {
        finished_at: DateTime<Utc>,
        reason: String,
    },
}

impl Status {
    /// The variant's name.
    pub const fn kind(&self) -> StatusKind {
        match self {
            Status::Queued { .. } => StatusKind::Queued,
            Status::Running { .. } => StatusKind::Running,
            Status::RollingBack { .. } => StatusKind::RollingBack,
            Status::RetryWait { .. } => StatusKind::RetryWait,
            Status::Succeeded { .. } => StatusKind::Succeeded,
            Status::Failed { .. } => StatusKind::Failed,
            Status::Cancelled { .. } => StatusKind::Cancelled,
        }
    }

    /// Set exactly for the terminal states.
    pub const fn finished_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Status::Succeeded { finished_at }
            | Status::Failed { finished_at, .. }
            | Status::Cancelled { finished_at, .. } => Some(*finished_at),
            _ => None,
        }
    }

    /// The phase of the running attempt (`rollback` while rolling back).
    pub const fn phase(&self) -> Option<Phase> {
        match self {
            Status::Running { phase, .. } => Some(*phase),
            Status::RollingBack { .. } => Some(Phase::Rollback),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_parse_in_any_case_and_print_lowercase() {
        for input in ["High", "HIGH", "high", "hIgH"] {
            assert_eq!(input.parse::<Priority>(), Ok(Priority::High));
        }
        assert_eq!(Priority::Critical.to_string(), "critical");
        assert_eq!("rolling_back".parse::<StatusKind>(), Ok(StatusKind::RollingBack));
        let err = "urgent".parse::<Priority>().unwrap_err();
        assert!(err.to_string().contains("low, normal, high, critical"), "{err}");
        let json: Priority = serde_json::from_str("\"LOW\"").unwrap();
        assert_eq!(json, Priority::Low);
        assert_eq!(serde_json::to_string(&StatusKind::RetryWait).unwrap(), "\"retry_wait\"");
    }

    #[test]
    fn priority_order_and_steps() {
        assert!(Priority::Critical > Priority::High && Priority::High > Priority::Normal);
        assert!(Priority::Normal > Priority::Low);
        assert_eq!(Priority::Critical.raised(), Priority::Critical);
        assert_eq!(Priority::Low.lowered(), Priority::Low);
        assert_eq!(Priority::Normal.raised(), Priority::High);
    }
}
