//! The deployment record the engine owns, and its identifiers.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Priority, Status};

/// A deployment's id: a ULID, so ids sort by creation time and page stably.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeploymentId(ulid::Ulid);

/// Text that is not a deployment id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a deployment id (26 characters of Crockford base32)")]
pub struct IdParseError(pub String);

impl DeploymentId {
    /// Wraps a generated ULID.
    pub const fn from_ulid(ulid: ulid::Ulid) -> Self {
        Self(ulid)
    }

    /// Milliseconds since the Unix epoch at which the id was made.
    pub const fn timestamp_ms(&self) -> u64 {
        self.0.timestamp_ms()
    }

    /// The last 8 characters: distinct among recent ids, short enough for a table column.
    pub fn short(&self) -> String {
        let s = self.0.to_string();
        s[s.len() - 8..].to_owned()
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; ulid::ULID_LEN];
        f.write_str(self.0.array_to_str(&mut buf))
    }
}

impl FromStr for DeploymentId {
    type Err = IdParseError;
    /// Only the canonical spelling (any case) names an id: the ulid crate drops the bits above
    /// 128 of a first character beyond `7`, and would otherwise read `81M9…` as `01M9…`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ulid::Ulid::from_string(s)
            .ok()
            .filter(|id| id.to_string().eq_ignore_ascii_case(s))
            .map(Self)
            .ok_or_else(|| IdParseError(s.chars().take(64).collect()))
    }
}

impl Serialize for DeploymentId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeploymentId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How an artifact is turned into a release folder; decided from its name at submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    Tar,
    TarGz,
    Zip,
    /// Copied as one file into the release folder under its own name.
    Plain,
}

impl ArtifactKind {
    /// Decides by file name: `.tar`, `.tar.gz`/`.tgz`, `.zip`, anything else is a plain file.
    #[allow(clippy::case_sensitive_file_extension_comparisons)] // `lower` is lowercased
    pub fn from_name(name: &str) -> Self {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
            Self::TarGz
        } else if lower.ends_with(".tar") {
            Self::Tar
        } else if lower.ends_with(".zip") {
            Self::Zip
        } else {
            Self::Plain
        }
    }

    /// The stable name stored in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tar => "tar",
            Self::TarGz => "tar_gz",
            Self::Zip => "zip",
            Self::Plain => "plain",
        }
    }

    /// Inverse of [`ArtifactKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Tar, Self::TarGz, Self::Zip, Self::Plain].into_iter().find(|k| k.as_str() == s)
    }
}

/// What was uploaded: name as given, size and content hash (the key in the artifact store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    #[serde(skip)]
    pub kind: Option<ArtifactKind>,
}

impl ArtifactInfo {
    /// The unpack method; derived from the name when not recorded.
    pub fn kind(&self) -> ArtifactKind {
        self.kind.unwrap_or_else(|| ArtifactKind::from_name(&self.name))
    }
}

/// Which configured step is running: 1-based index of `total`, with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRef {
    pub index: u32,
    pub total: u32,
    pub name: String,
}

/// One request to put one artifact on one environment, with everything the engine tracks about
/// it. The engine is its only writer; everyone else sees a `DeploymentView`.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub id: DeploymentId,
    pub environment: String,
    pub version: String,
    pub priority: Priority,
    pub params: BTreeMap<String, String>,
    pub artifact: ArtifactInfo,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    /// 1-based number of the current (or last) attempt, over the deployment's whole life.
    pub attempt: u32,
    /// Automatic retries used since the submission or the last manual retry.
    pub retry_count: u32,
    pub max_retries: u32,
    /// When the first attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// Measured on the monotonic clock once terminal (`PRODUCT.md`: durations never from wall
    /// time differences).
    pub duration_ms: Option<u64>,
    /// Time from submission (or manual retry) to the first start, on the monotonic clock.
    pub queue_wait_ms: Option<u64>,
    /// The most recent failure, kept while the deployment waits for its next attempt.
    pub last_error: Option<String>,
    pub status: Status,
    /// An operator cancelled the running attempt; it is being stopped and rolled back and will
    /// end `cancelled`, also if tds restarts before that.
    pub cancel_requested: bool,
    /// Why a queued deployment is not running yet; computed by the engine, never stored.
    pub wait_reason: Option<String>,
}
