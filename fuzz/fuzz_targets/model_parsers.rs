//! Fuzzes the parsers that take request text: deployment ids, the wire enums (case-insensitive
//! in, lowercase out), sizes and durations, artifact and parameter names. Whatever parses must
//! print back to something that parses to the same value.
#![no_main]

use std::str::FromStr;

use tds_core::config::{parse_duration, parse_size};
use tds_core::metrics::{TrendMetric, TrendPeriod};
use tds_core::model::{ArtifactKind, DeploymentId, Phase, Priority, StatusKind};

fn round_trip<T>(text: &str)
where
    T: FromStr + ToString + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = text.parse::<T>() {
        let printed = value.to_string();
        assert_eq!(printed.parse::<T>().ok(), Some(value), "{text:?} printed as {printed:?}");
    }
}

fn json_agrees<T>(text: &str)
where
    T: FromStr + PartialEq + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let Ok(quoted) = serde_json::to_string(text) else { return };
    let from_json = serde_json::from_str::<T>(&quoted).ok();
    assert_eq!(from_json, text.parse::<T>().ok(), "JSON and text parsing disagree on {text:?}");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    round_trip::<DeploymentId>(text);
    round_trip::<Priority>(text);
    round_trip::<StatusKind>(text);
    round_trip::<Phase>(text);
    round_trip::<TrendMetric>(text);
    round_trip::<TrendPeriod>(text);
    json_agrees::<DeploymentId>(text);
    json_agrees::<Priority>(text);
    json_agrees::<StatusKind>(text);
    if let Ok(id) = text.parse::<DeploymentId>() {
        assert_eq!(id.short().len(), 8);
    }
    if let Some(kind) = ArtifactKind::parse(text) {
        assert_eq!(kind.as_str(), text);
    }
    let _ = ArtifactKind::from_name(text);
    let _ = parse_duration(text);
    let _ = parse_size(text);
    if tds_core::artifact::valid_artifact_name(text) {
        assert!(!text.contains('/') && !text.starts_with('.') && text.len() <= 255);
    }
    if tds_core::valid_param_key(text) {
        assert!(text.len() <= 64 && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    }
});
