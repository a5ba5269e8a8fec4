//! The engine through `OrchestratorHandle`: deploy, fail and roll back, retry, cancel.

use std::time::Duration;

use tds_core::model::StatusKind;

use crate::common::{Harness, site};

const ENV: &str = r#"
[[environments]]
name = "web"
root = "{dir}/envs/web"
steps = [{ name = "install", run = "echo installing $TDS_VERSION; cat VERSION; echo to-stderr >&2" }]
verify = [{ name = "smoke", run = "test -f \"$TDS_RELEASE_DIR/index.html\"" }]
"#;

#[tokio::test]
async fn deploys_a_tar_gz_into_current() {
    let h = Harness::start(ENV).await;
    let d = h.submit("web", "site.tar.gz", site("1.0.0"), "1.0.0").await;
    assert_eq!(d.status, StatusKind::Queued);
    let done = h.wait_terminal(d.id, Duration::from_secs(20)).await;
    assert_eq!(done.status, StatusKind::Succeeded, "{done:?}");
    let current = h.root("web").join("current");
    assert_eq!(std::fs::read_to_string(current.join("VERSION")).unwrap(), "1.0.0");
    assert!(current.join("index.html").is_file());
    let log = h.log_text(d.id, 1).join("\n");
    assert!(log.contains("stdout install | installing 1.0.0"), "{log}");
    assert!(log.contains("stderr install | to-stderr"), "{log}");
    assert!(log.contains("== succeeded"), "{log}");
    assert!(done.duration_ms.is_some() && done.finished_at.is_some());
}
