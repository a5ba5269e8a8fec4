//! The queue filter typed after `/`: words that must all match, with `status:` and `env:`
//! terms (comma-separated alternatives, case-insensitive), plain words matching any field.

use tds_core::model::{DeploymentView, StatusKind};

use crate::text::contains_ci;

/// A parsed filter. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Any of these statuses (all when empty).
    statuses: Vec<StatusKind>,
    /// Environment names, lowercase, matched exactly (any of them).
    envs: Vec<String>,
    /// Lowercase words that must each appear in some field.
    words: Vec<String>,
    /// Terms that could not be understood, to show in the footer.
    pub problems: Vec<String>,
}

/// Status words people type that are not wire names.
fn status_alias(word: &str) -> Option<&'static [StatusKind]> {
    Some(match word {
        "live" | "active" => &[StatusKind::Queued, StatusKind::Running, StatusKind::RollingBack, StatusKind::RetryWait],
        "waiting" | "pending" => &[StatusKind::Queued, StatusKind::RetryWait],
        "retry" | "retrying" => &[StatusKind::RetryWait],
        "rollback" | "rollingback" => &[StatusKind::RollingBack],
        "done" | "finished" => &[StatusKind::Succeeded, StatusKind::Failed, StatusKind::Cancelled],
        "ok" | "success" => &[StatusKind::Succeeded],
        _ => return None,
    })
}

impl Filter {
    /// Parses the text of the filter prompt.
    pub fn parse(text: &str) -> Self {
        let mut filter = Self::default();
        for term in text.split_whitespace() {
            let lower = term.to_lowercase();
            if let Some(values) = lower.strip_prefix("status:").or_else(|| lower.strip_prefix("s:")) {
                for v in values.split(',').filter(|v| !v.is_empty()) {
                    if let Ok(kind) = v.parse::<StatusKind>() {
                        filter.statuses.push(kind);
                    } else if let Some(kinds) = status_alias(v) {
                        filter.statuses.extend_from_slice(kinds);
                    } else {
                        filter.problems.push(format!("unknown status '{v}'"));
                    }
                }
            } else if let Some(values) = lower.strip_prefix("env:").or_else(|| lower.strip_prefix("e:")) {
                filter.envs.extend(values.split(',').filter(|v| !v.is_empty()).map(str::to_owned));
            } else {
                filter.words.push(lower);
            }
        }
        filter
    }

    /// Whether nothing is filtered out.
    pub fn is_empty(&self) -> bool {
        self.statuses.is_empty() && self.envs.is_empty() && self.words.is_empty()
    }

    /// Whether the filter names statuses (then finished ones are shown even without `a`).
    pub fn names_statuses(&self) -> bool {
        !self.statuses.is_empty()
    }

    /// Whether a deployment passes.
    pub fn matches(&self, d: &DeploymentView) -> bool {
        if !self.statuses.is_empty() && !self.statuses.contains(&d.status) {
            return false;
        }
        if !self.envs.is_empty() && !self.envs.iter().any(|e| d.environment.eq_ignore_ascii_case(e)) {
            return false;
        }
        self.words.iter().all(|w| word_matches(d, w))
    }
}

fn word_matches(d: &DeploymentView, w: &str) -> bool {
    contains_ci(&d.id.to_string(), w)
        || contains_ci(&d.environment, w)
        || contains_ci(&d.version, w)
        || contains_ci(d.status.as_str(), w)
        || contains_ci(d.priority.as_str(), w)
        || contains_ci(&d.requested_by, w)
        || contains_ci(&d.artifact.name, w)
        || d.wait_reason.as_deref().is_some_and(|r| contains_ci(r, w))
        || d.error.as_deref().is_some_and(|r| contains_ci(r, w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::view;

    #[test]
    fn terms_combine_with_and_and_alternatives_with_commas() {
        let d = view(1, "staging", "1.4.2", StatusKind::Failed);
        assert!(Filter::parse("").matches(&d));
        assert!(Filter::parse("status:failed").matches(&d));
        assert!(Filter::parse("STATUS:queued,FAILED env:Staging").matches(&d));
        assert!(!Filter::parse("status:queued").matches(&d));
        assert!(!Filter::parse("env:dev").matches(&d));
        assert!(Filter::parse("1.4 stag").matches(&d));
        assert!(!Filter::parse("1.4 prod").matches(&d));
        assert!(Filter::parse("s:done").matches(&d));
        let bad = Filter::parse("status:bogus");
        assert_eq!(bad.problems, vec!["unknown status 'bogus'".to_owned()]);
    }
}
