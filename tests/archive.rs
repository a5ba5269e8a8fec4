//! Archive safety (issue 6 item 6, cases C11 and C12): every unsafe or broken artifact is refused
//! at submission with the entry or the reason named, and refused again by `artifact::unpack`
//! (defence in depth) without writing anything outside the release folder and without leaving
//! the partial release folder behind. Fuzzer findings are replayed from `tests/data/fuzz/`.

#![allow(clippy::unwrap_used)] // a test module: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tds_core::artifact::{self, ArtifactError, UnpackLimits, UnpackStats};
use tds_core::model::{ArtifactInfo, Priority, StatusKind};
use tds_core::{ArtifactSource, Config, OrchestratorHandle, StartOptions, SubmitRequest};

use crate::common::{Harness, config_text, gzip, raw_tar_entry, site};

// ---------------------------------------------------------------------------------------------
// Builders

const REGULAR: u8 = b'0';
const HARD_LINK: u8 = b'1';
const SYMLINK: u8 = b'2';
const CHAR_DEVICE: u8 = b'3';
const BLOCK_DEVICE: u8 = b'4';
const DIRECTORY: u8 = b'5';
const FIFO: u8 = b'6';
const GNU_LONG_NAME: u8 = b'L';

/// One entry of a hand-built tar: path, type flag, link target, content.
#[derive(Debug, Clone)]
struct Entry {
    path: Vec<u8>,
    kind: u8,
    link: Vec<u8>,
    content: Vec<u8>,
}

fn file(path: impl AsRef<[u8]>, content: &[u8]) -> Entry {
    Entry { path: path.as_ref().to_vec(), kind: REGULAR, link: Vec::new(), content: content.to_vec() }
}

fn dir(path: impl AsRef<[u8]>) -> Entry {
    Entry { path: path.as_ref().to_vec(), kind: DIRECTORY, link: Vec::new(), content: Vec::new() }
}

fn link(kind: u8, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Entry {
    Entry { path: path.as_ref().to_vec(), kind, link: target.as_ref().to_vec(), content: Vec::new() }
}

/// A tar with raw headers (the `tar` crate refuses to build most of these), with end marker.
fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        raw_tar_entry(&mut out, &e.path, e.kind, &e.link, &e.content);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// A tar header whose size field says `size`, without the data (for bombs that are cut short).
fn tar_header(path: &[u8], kind: u8, size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    raw_tar_entry(&mut out, path, kind, b"", b"");
    let field = format!("{size:011o}\0");
    out[124..136].copy_from_slice(field.as_bytes());
    out[148..156].copy_from_slice(b"        ");
    let sum: u32 = out.iter().map(|&b| u32::from(b)).sum();
    out[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out
}

#[derive(Debug, Clone, Copy)]
enum ZipKind {
    File,
    Dir,
    Symlink,
    /// A file entry whose unix mode says FIFO.
    Fifo,
    /// A file entry whose unix mode says character device.
    CharDevice,
}

/// Name, kind, content (the target for a symlink).
type ZipEntry<'a> = (&'a [u8], ZipKind, &'a [u8]);

/// A zip whose names are written as given (`start_file` does not sanitize).
fn zip(entries: &[ZipEntry]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, kind, content) in entries {
        let name = String::from_utf8(name.to_vec()).expect("utf-8 zip name");
        match kind {
            ZipKind::File => {
                w.start_file(name, opts).unwrap();
                w.write_all(content).unwrap();
            }
            ZipKind::Dir => w.add_directory(name, opts).unwrap(),
            ZipKind::Symlink => w.add_symlink(name, String::from_utf8(content.to_vec()).unwrap(), opts).unwrap(),
            ZipKind::Fifo | ZipKind::CharDevice => {
                let mode: u32 = if matches!(kind, ZipKind::Fifo) { 0o010_644 } else { 0o020_644 };
                w.start_file(name, opts.external_attributes(mode << 16)).unwrap();
                w.write_all(content).unwrap();
            }
        }
    }
    w.finish().unwrap().into_inner()
}

/// Deflate `len` zeros as gzip without holding them in memory.
fn gzip_zeros(prefix: &[u8], len: u64) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(prefix).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        enc.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    enc.finish().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Unpacking directly (defence in depth)

const LIMITS: UnpackLimits = UnpackLimits { max_bytes: 1 << 20, max_entries: 100 };
/// The caps the fuzz targets run with (`fuzz/src/lib.rs`), for replaying their findings.
const FUZZ_LIMITS: UnpackLimits = UnpackLimits { max_bytes: 1 << 20, max_entries: 64 };

fn info(name: &str, bytes: &[u8]) -> ArtifactInfo {
    ArtifactInfo { name: name.into(), size: bytes.len() as u64, sha256: "test".into(), kind: None }
}

/// Everything under `root` except `skip`, with what each path is: the "before and after"
/// picture that proves nothing outside the release folder changed.
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.starts_with(skip) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_owned()
            } else {
                format!("file {:?}", std::fs::read(&path).unwrap())
            };
            out.insert(path, what);
        }
    }
    out
}

/// A temp folder laid out like an environment: `releases/1` is where we unpack, with a sibling
/// `releases/1-evil`, a file next to the releases, and a secret outside.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let releases = dir.path().join("env/releases");
        std::fs::create_dir_all(releases.join("1-evil")).unwrap();
        std::fs::write(dir.path().join("env/keep.txt"), "keep").unwrap();
        std::fs::write(dir.path().join("secret"), "secret").unwrap();
        Self { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn release(&self) -> PathBuf {
        self.root().join("env/releases/1")
    }

    /// An absolute path inside the sandbox, so an absolute entry that got through would show.
    fn abs(&self, name: &str) -> String {
        self.root().join(name).display().to_string()
    }

    /// Unpacks and checks the refusal: the error (returned), nothing changed outside the release
    /// folder, and the release folder gone.
    fn refuse(&self, name: &str, bytes: &[u8], limits: UnpackLimits) -> ArtifactError {
        let before = snapshot(self.root(), &self.release());
        let path = self.root().join("artifact.bin");
        std::fs::write(&path, bytes).unwrap();
        let inspected = artifact::inspect(&path, &info(name, bytes), limits);
        let result = artifact::unpack(&path, &info(name, bytes), &self.release(), limits);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(snapshot(self.root(), &self.release()), before, "something changed outside the release folder");
        let err = result.expect_err("unpack must refuse");
        assert!(!self.release().exists(), "the partial release folder must be removed");
        assert!(inspected.is_err(), "inspect accepted what unpack refused: {err}");
        err
    }

    fn accept(&self, name: &str, bytes: &[u8]) -> UnpackStats {
        let path = self.root().join("artifact.bin");
        std::fs::write(&path, bytes).unwrap();
        let inspected = artifact::inspect(&path, &info(name, bytes), LIMITS).expect("inspect");
        let stats = artifact::unpack(&path, &info(name, bytes), &self.release(), LIMITS).expect("unpack");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(inspected, stats);
        stats
    }
}

fn assert_unsafe(err: &ArtifactError, entry: &str, reason_part: &str) {
    match err {
        ArtifactError::UnsafeEntry { entry: named, reason } => {
            assert_eq!(named, entry, "wrong entry named ({reason})");
            assert!(reason.contains(reason_part), "reason {reason:?} lacks {reason_part:?}");
        }
        other => panic!("expected entry '{entry}' refused, got: {other}"),
    }
    assert!(err.to_string().contains(entry), "message must name the entry: {err}");
}

// ---------------------------------------------------------------------------------------------
// Through the orchestrator

const WEB: &str = r#"
[[environments]]
name = "web"
root = "{dir}/envs/web"
max_concurrent = 1
steps = [{ name = "install", run = "cat VERSION" }]
"#;

/// Starts an orchestrator whose `[defaults]` also get `extra` (unpack caps).
async fn start_with(extra: &str, environments: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), environments).replacen("[defaults]\n", &format!("[defaults]\n{extra}\n"), 1);
    let config = Config::parse(&text, dir.path()).expect("test config");
    let handle = OrchestratorHandle::start(config, StartOptions::default()).await.expect("start");
    Harness { dir, handle }
}

fn request(name: &str, bytes: Vec<u8>) -> SubmitRequest {
    SubmitRequest {
        environment: "web".into(),
        artifact: ArtifactSource::Bytes { name: name.into(), bytes },
        version: "1.0.0".into(),
        priority: Priority::Normal,
        params: BTreeMap::new(),
        requested_by: "test".into(),
        idempotency_key: None,
    }
}

/// Submits and expects the artifact refused (what the API turns into a 400), with no
/// deployment recorded and nothing in `releases/`.
async fn refused_at_submission(h: &Harness, name: &str, bytes: Vec<u8>) -> ArtifactError {
    let err = h.handle.submit(request(name, bytes)).await.expect_err("submission must be refused");
    let tds_core::Error::Artifact(err) = err else { panic!("expected an artifact error, got: {err}") };
    let releases = h.root("web").join("releases");
    let left: Vec<_> =
        std::fs::read_dir(&releases).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "nothing may be left in releases/: {left:?}");
    let history = h.handle.history(tds_core::store::HistoryQuery::default()).await.unwrap();
    assert_eq!(history.total, 0, "a refused artifact must not become a deployment");
    err
}

// ---------------------------------------------------------------------------------------------
// C11: traversal

/// The entry names of case C11; `abs` is an absolute path inside the sandbox.
fn c11_names(abs: &str) -> Vec<(Vec<u8>, &'static str)> {
    vec![
        (b"../escaped.txt".to_vec(), "'..'"),
        (b"a/../../escaped2.txt".to_vec(), "'..'"),
        (abs.as_bytes().to_vec(), "absolute path"),
        (b"..\\win.txt".to_vec(), "backslash"),
        (b"../1-evil/x".to_vec(), "'..'"),
    ]
}

#[tokio::test]
async fn c11_traversal_in_tar_gz_is_refused_at_submission_naming_the_entry() {
    let h = Harness::start(WEB).await;
    let abs = h.dir.path().join("abs_escaped.txt").display().to_string();
    for (name, reason) in c11_names(&abs) {
        let bytes = gzip(&tar(&[file("ok/file", b"ok"), file(&name, b"evil")]));
        let err = refused_at_submission(&h, "site.tar.gz", bytes).await;
        assert_unsafe(&err, &String::from_utf8_lossy(&name), reason);
    }
    // All of them in one archive: the first bad one is named.
    let mut all = vec![file("ok/file", b"ok")];
    all.extend(c11_names(&abs).into_iter().map(|(n, _)| file(n, b"evil")));
    let err = refused_at_submission(&h, "site.tar.gz", gzip(&tar(&all))).await;
    assert_unsafe(&err, "../escaped.txt", "'..'");
    assert!(!h.dir.path().join("abs_escaped.txt").exists());
    assert!(!h.root("web").join("1-evil").exists() && !h.root("web").join("escaped.txt").exists());
}

#[tokio::test]
async fn c11_traversal_in_zip_is_refused_at_submission_naming_the_entry() {
    let h = Harness::start(WEB).await;
    let abs = h.dir.path().join("abs_escaped.txt").display().to_string();
    for (name, reason) in c11_names(&abs) {
        let bytes = zip(&[(b"ok/file", ZipKind::File, b"ok"), (&name, ZipKind::File, b"evil")]);
        let err = refused_at_submission(&h, "site.zip", bytes).await;
        assert_unsafe(&err, &String::from_utf8_lossy(&name), reason);
    }
}

/// The same archives handed straight to `unpack` next to a sibling `releases/1-evil`: refused,
/// naming the entry, after `ok/file` was already written, which must be gone with the folder.
#[test]
fn c11_traversal_is_refused_by_unpack_writing_nothing_outside() {
    let sb = Sandbox::new();
    let abs = sb.abs("abs_escaped.txt");
    for (name, reason) in c11_names(&abs) {
        let shown = String::from_utf8_lossy(&name).into_owned();
        let tgz = gzip(&tar(&[file("ok/file", b"ok"), file(&name, b"evil")]));
        assert_unsafe(&sb.refuse("site.tar.gz", &tgz, LIMITS), &shown, reason);
        let plain_tar = tar(&[file("ok/file", b"ok"), dir(&name)]);
        assert_unsafe(&sb.refuse("site.tar", &plain_tar, LIMITS), &shown, reason);
        let z = zip(&[(b"ok/file", ZipKind::File, b"ok"), (&name, ZipKind::File, b"evil")]);
        assert_unsafe(&sb.refuse("site.zip", &z, LIMITS), &shown, reason);
    }
    assert!(std::fs::read_dir(sb.root().join("env/releases/1-evil")).unwrap().next().is_none());
}

/// A tar.gz that passed submission is swapped in the artifact store before it runs (as if an
/// older tds had accepted it): the prepare phase refuses it, the attempt fails naming the entry
/// without retrying, the partial release is removed and `current` stays on the good release.
#[tokio::test]
async fn c11_prepare_refuses_an_archive_that_slipped_past_submission() {
    let evil = gzip(&tar(&[file("ok/file", b"ok"), file("../1-evil/x", b"evil")]));
    let failed = slipped_past_submission(evil).await;
    assert!(failed.contains("archive entry '../1-evil/x' refused"), "{failed}");
}

/// The same for a C12 artifact: an empty tar never becomes an empty `succeeded` release.
#[tokio::test]
async fn c12_prepare_refuses_an_empty_archive_that_slipped_past_submission() {
    let failed = slipped_past_submission(gzip(&[0u8; 10240])).await;
    assert!(failed.contains("empty artifact"), "{failed}");
}

/// Deploys a good release, then submits `site("2")`, swaps its stored bytes for `evil` while it
/// waits behind a blocker, and returns the failure reason after checking the aftermath.
async fn slipped_past_submission(evil: Vec<u8>) -> String {
    let env = r#"
[[environments]]
name = "web"
root = "{dir}/envs/web"
max_concurrent = 1
retry = { max_retries = 2, initial_delay = "100ms" }
steps = [{ name = "install", run = "while [ -n \"$TDS_PARAM_HOLD\" ] && [ ! -f {dir}/go ]; do sleep 0.05; done" }]
"#;
    let h = Harness::start(env).await;
    let good = h.submit("web", "site.tar.gz", site("1"), "1").await;
    assert_eq!(h.wait_terminal(good.id, Duration::from_secs(20)).await.status, StatusKind::Succeeded);
    let hold = BTreeMap::from([("HOLD".to_owned(), "1".to_owned())]);
    let blocker = h.submit_with("web", "site.tar.gz", site("b"), "b", Priority::Normal, hold).await;
    h.wait_status(blocker.id, StatusKind::Running, Duration::from_secs(20)).await;
    let victim = h.submit("web", "site.tar.gz", site("2"), "2").await;
    let stored = h.dir.path().join("data/artifacts").join(&victim.artifact.sha256);
    assert!(stored.is_file(), "artifact store layout changed: {}", stored.display());
    std::fs::write(&stored, &evil).unwrap();
    let before_outside = snapshot(h.dir.path(), &h.root("web").join("releases"));
    std::fs::write(h.dir.path().join("go"), "").unwrap();

    let done = h.wait_terminal(victim.id, Duration::from_secs(30)).await;
    assert_eq!(done.status, StatusKind::Failed, "{done:?}");
    assert_eq!(done.attempt, 1, "a bad archive is not retried");
    let current = std::fs::read_link(h.root("web").join("current")).unwrap();
    assert_eq!(current, Path::new("releases").join(format!("{}-1", blocker.id)));
    let releases: Vec<String> = std::fs::read_dir(h.root("web").join("releases"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!releases.iter().any(|r| r.starts_with(&victim.id.to_string())), "partial release left: {releases:?}");
    assert!(!h.root("web").join("1-evil").exists() && !h.root("web").join("releases/1-evil").exists());
    let mut after_outside = snapshot(h.dir.path(), &h.root("web").join("releases"));
    // Only tds's own bookkeeping may change meanwhile: the store, logs, `current`, `go`.
    let own = |p: &PathBuf| {
        p.starts_with(h.dir.path().join("data")) || p.starts_with(h.root("web").join("current")) || p.ends_with("go")
    };
    after_outside.retain(|p, _| !own(p));
    let mut expected = before_outside;
    expected.retain(|p, _| !own(p));
    assert_eq!(after_outside, expected);
    let log = h.log_text(victim.id, 1).join("\n");
    let reason = done.error.unwrap_or_default();
    assert!(log.contains(&reason), "the log must hold the reason {reason:?}: {log}");
    reason
}

/// What the operator sees: the API answers 400 in its envelope, with the entry named in the
/// message and the kind of refusal in `details.reason` (raw upload; the JSON body path shares
/// the same submit).
#[tokio::test]
async fn c11_c12_api_answers_400_naming_the_entry() {
    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode, header};
    use tower::ServiceExt as _;

    let h = Harness::start(WEB).await;
    let app = tds::api::router(h.handle.clone());
    let half = site("1");
    let cases = [
        (
            "site.tar.gz",
            gzip(&tar(&[file("ok/file", b"ok"), file("../1-evil/x", b"evil")])),
            "unsafe_entry",
            "../1-evil/x",
        ),
        (
            "site.zip",
            zip(&[(b"ok/file", ZipKind::File, b"ok"), (b"/tmp/abs_escaped.txt", ZipKind::File, b"e")]),
            "unsafe_entry",
            "/tmp/abs_escaped.txt",
        ),
        ("site.tar.gz", gzip(&[0u8; 10240]), "empty", "empty artifact"),
        ("site.tar.gz", half[..half.len() / 2].to_vec(), "corrupt", "truncated or corrupt archive"),
    ];
    for (name, bytes, reason, text) in cases {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("/api/v1/deployments?environment=web&name={name}&version=1"))
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Body::from(bytes))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "invalid_artifact", "{body}");
        assert_eq!(body["error"]["details"]["reason"], reason, "{body}");
        assert!(body["error"]["message"].as_str().unwrap_or("").contains(text), "{body}");
    }
    assert!(
        !h.root("web").join("releases").exists()
            || std::fs::read_dir(h.root("web").join("releases")).unwrap().next().is_none()
    );
}

// ---------------------------------------------------------------------------------------------
// C11: links

/// Each archive with the entry it must be refused on and a word of the reason. `outside` is a
/// folder outside the release holding a file `secret`.
fn c11_link_cases(outside: &str) -> Vec<(&'static str, Vec<Entry>, &'static str, &'static str)> {
    let abs_secret = &format!("{outside}/secret");
    vec![
        ("symlink to an absolute path", vec![file("f", b"x"), link(SYMLINK, "pw", abs_secret)], "pw", "absolute"),
        ("symlink up a .. chain", vec![file("f", b"x"), link(SYMLINK, "a/b/up", "../../../..")], "a/b/up", "outside"),
        ("symlink to the sibling release", vec![file("f", b"x"), link(SYMLINK, "s", "../1-evil")], "s", "outside"),
        (
            // `x -> a/b/..` looks like `a` until `a/b -> ..` exists; then `x` is `releases/`.
            // Writing `x/fresh/pwned` would make `releases/fresh/` next to the release.
            "a file written through a link to a folder",
            vec![link(SYMLINK, "x", "a/b/.."), dir("a"), link(SYMLINK, "a/b", ".."), file("x/fresh/pwned", b"evil")],
            "x/fresh/pwned",
            "symlink 'x'",
        ),
        (
            "a file through an inside link to a folder",
            vec![dir("sub"), link(SYMLINK, "d", "sub"), file("d/f", b"x")],
            "d/f",
            "symlink 'd'",
        ),
        (
            // `y` looks like `a/sibling.txt`, is `releases/sibling.txt` once `a/b -> ..` exists; a
            // naive extractor opens `y` for writing and follows it.
            "a symlink then a regular file over it",
            vec![link(SYMLINK, "y", "a/b/../sibling.txt"), dir("a"), link(SYMLINK, "a/b", ".."), file("y", b"evil")],
            "y",
            "over a symlink",
        ),
        (
            // Resolved at the end: `y` escapes only once `a/b` exists.
            "a symlink that escapes through a later link",
            vec![file("f", b"x"), link(SYMLINK, "y", "a/b/../sibling.txt"), dir("a"), link(SYMLINK, "a/b", "..")],
            "y",
            "through other links",
        ),
        ("hard link to an absolute path", vec![file("f", b"x"), link(HARD_LINK, "h", abs_secret)], "h", "outside"),
        ("hard link up a .. chain", vec![file("f", b"x"), link(HARD_LINK, "h", "../../../secret")], "h", "outside"),
        (
            "hard link through an escaping symlink",
            vec![dir("a"), link(SYMLINK, "a/b", ".."), file("f", b"x"), link(HARD_LINK, "h", "a/b/../../../secret")],
            "h",
            "outside",
        ),
        (
            "hard link to a file the archive did not make",
            vec![file("f", b"x"), link(HARD_LINK, "h", "env/keep.txt")],
            "h",
            "not a file of this archive",
        ),
        ("a folder over a symlink", vec![file("f", b"x"), link(SYMLINK, "d", "f"), dir("d")], "d", "folder over"),
        ("a symlink over a file", vec![file("f", b"x"), link(SYMLINK, "f", "f")], "f", "symlink over"),
        ("a symlink loop", vec![file("f", b"x"), link(SYMLINK, "l1", "l2"), link(SYMLINK, "l2", "l1/x")], "l1", "loop"),
    ]
}

#[test]
fn c11_links_resolving_outside_are_refused_by_unpack() {
    // Every case runs (in its own sandbox) and the failures are reported together.
    let mut failures = Vec::new();
    for (what, entries, entry, reason) in c11_link_cases("{abs}") {
        let outcome = std::panic::catch_unwind(|| {
            let sb = Sandbox::new();
            let root = sb.root().display().to_string();
            let entries: Vec<Entry> =
                entries.iter().map(|e| Entry { link: with_abs(&e.link, &root), ..e.clone() }).collect();
            let err = sb.refuse("site.tar", &tar(&entries), LIMITS);
            assert_unsafe(&err, entry, reason);
            let err = sb.refuse("site.tar.gz", &gzip(&tar(&entries)), LIMITS);
            assert!(matches!(err, ArtifactError::UnsafeEntry { .. }), "{what}: {err}");
            assert_eq!(std::fs::read_to_string(sb.root().join("secret")).unwrap(), "secret");
        });
        if outcome.is_err() {
            failures.push(what);
        }
    }
    assert!(failures.is_empty(), "not refused as expected: {failures:?}");
}

#[tokio::test]
async fn c11_links_resolving_outside_are_refused_at_submission() {
    let h = Harness::start(WEB).await;
    let secret = h.dir.path().join("secret");
    std::fs::write(&secret, "secret").unwrap();
    for (what, entries, entry, reason) in c11_link_cases(&h.dir.path().display().to_string()) {
        let err = refused_at_submission(&h, "site.tar.gz", gzip(&tar(&entries))).await;
        assert!(err.to_string().contains(entry), "{what}: {err}");
        assert_unsafe(&err, entry, reason);
    }
}

#[test]
fn c11_zip_symlinks_outside_are_refused() {
    let sb = Sandbox::new();
    let secret = sb.abs("secret");
    let cases: Vec<(Vec<ZipEntry>, &str)> = vec![
        (vec![(b"f", ZipKind::File, b"x"), (b"pw", ZipKind::Symlink, secret.as_bytes())], "pw"),
        (vec![(b"f", ZipKind::File, b"x"), (b"up", ZipKind::Symlink, b"../1-evil")], "up"),
        (vec![(b"d/", ZipKind::Dir, b""), (b"l", ZipKind::Symlink, b"d"), (b"l/f", ZipKind::File, b"x")], "l/f"),
        (vec![(b"l", ZipKind::Symlink, b"../1-evil"), (b"l/x", ZipKind::File, b"evil")], "l"),
    ];
    for (entries, entry) in cases {
        let err = sb.refuse("site.zip", &zip(&entries), LIMITS);
        assert!(matches!(&err, ArtifactError::UnsafeEntry { entry: e, .. } if e == entry), "{entry}: {err}");
    }
}

/// Links that stay inside are kept, so the rules above are not just "no links".
#[test]
fn c11_links_that_stay_inside_are_unpacked() {
    let sb = Sandbox::new();
    let entries = [
        dir("assets"),
        file("assets/app.js", b"js"),
        link(SYMLINK, "app.js", "assets/app.js"),
        link(SYMLINK, "assets/self", "../assets"),
        link(HARD_LINK, "copy.js", "assets/app.js"),
        file("readme", b"r"),
    ];
    let stats = sb.accept("site.tar.gz", &gzip(&tar(&entries)));
    assert_eq!((stats.files, stats.dirs, stats.links), (2, 1, 3));
    let release = sb.release();
    assert_eq!(std::fs::read_to_string(release.join("app.js")).unwrap(), "js");
    assert_eq!(std::fs::read_to_string(release.join("copy.js")).unwrap(), "js");
    assert_eq!(std::fs::read_link(release.join("assets/self")).unwrap(), Path::new("../assets"));
}

// ---------------------------------------------------------------------------------------------
// C11: devices and FIFOs

#[test]
fn c11_device_and_fifo_entries_are_refused() {
    let sb = Sandbox::new();
    for (kind, name) in [(CHAR_DEVICE, "dev/null2"), (BLOCK_DEVICE, "dev/sda9"), (FIFO, "pipe")] {
        let bytes = tar(&[file("f", b"x"), Entry { path: name.into(), kind, link: Vec::new(), content: Vec::new() }]);
        assert_unsafe(&sb.refuse("site.tar", &bytes, LIMITS), name, "not allowed");
    }
    for kind in [ZipKind::Fifo, ZipKind::CharDevice] {
        let bytes = zip(&[(b"f", ZipKind::File, b"x"), (b"special", kind, b"")]);
        assert_unsafe(&sb.refuse("site.zip", &bytes, LIMITS), "special", "not allowed");
    }
}

#[tokio::test]
async fn c11_device_entries_are_refused_at_submission() {
    let h = Harness::start(WEB).await;
    let bytes =
        gzip(&tar(&[file("f", b"x"), Entry { path: b"fifo".to_vec(), kind: FIFO, link: vec![], content: vec![] }]));
    assert_unsafe(&refused_at_submission(&h, "site.tar.gz", bytes).await, "fifo", "not allowed");
}

// ---------------------------------------------------------------------------------------------
// C11: bombs

/// A 64 MiB file of zeros in a small gzip, with a 1 MiB cap: refused, and early. The proof of
/// "early" is that the stream is cut after 8 MiB: an unpacker that read everything would
/// report a truncated archive, not the cap.
#[test]
fn c11_gzip_bomb_stops_at_max_unpacked_size() {
    let sb = Sandbox::new();
    let mut bomb = tar_header(b"zeros.bin", REGULAR, 64 << 20);
    bomb.extend(std::iter::repeat_n(0u8, 8 << 20));
    let compressed = gzip_zeros(&bomb, 0);
    assert!(compressed.len() < 64 << 10, "the bomb should be small: {}", compressed.len());
    let err = sb.refuse("bomb.tar.gz", &compressed, LIMITS);
    assert!(matches!(err, ArtifactError::UnpackedTooLarge { limit } if limit == 1 << 20), "{err}");

    let whole = {
        let mut t = tar_header(b"zeros.bin", REGULAR, 64 << 20);
        t.extend(std::iter::repeat_n(0u8, 64 << 20));
        t.extend_from_slice(&[0u8; 1024]);
        gzip_zeros(&t, 0)
    };
    let started = std::time::Instant::now();
    assert!(matches!(sb.refuse("bomb.tar.gz", &whole, LIMITS), ArtifactError::UnpackedTooLarge { .. }));
    assert!(started.elapsed() < Duration::from_secs(20));
    // Many small files add up the same way, and a zip bomb too.
    let content = vec![b'z'; 40_000];
    let many: Vec<Entry> = (0..40).map(|i| file(format!("f{i}"), &content)).collect();
    assert!(matches!(sb.refuse("many.tar.gz", &gzip(&tar(&many)), LIMITS), ArtifactError::UnpackedTooLarge { .. }));
    let big = vec![0u8; 4 << 20];
    let z = zip(&[(b"zeros.bin", ZipKind::File, &big)]);
    assert!(z.len() < 64 << 10);
    assert!(matches!(sb.refuse("bomb.zip", &z, LIMITS), ArtifactError::UnpackedTooLarge { .. }));
}

/// More entries than `max_archive_entries`: refused at entry 11 of a cap of 10. The archive
/// goes on with a corrupt header after entry 11: reading on would report corruption instead.
#[test]
fn c11_entry_count_bomb_stops_at_max_archive_entries() {
    let sb = Sandbox::new();
    let limits = UnpackLimits { max_bytes: 1 << 20, max_entries: 10 };
    let mut bytes = Vec::new();
    for i in 0..11 {
        raw_tar_entry(&mut bytes, format!("f{i}").as_bytes(), REGULAR, b"", b"x");
    }
    bytes.extend_from_slice(&[0xAB; 512]);
    let err = sb.refuse("many.tar.gz", &gzip(&bytes), limits);
    assert!(matches!(err, ArtifactError::TooManyEntries { limit: 10 }), "{err}");
    let dirs: Vec<Entry> = (0..11).map(|i| dir(format!("d{i}"))).chain([file("f", b"x")]).collect();
    assert!(matches!(sb.refuse("dirs.tar", &tar(&dirs), limits), ArtifactError::TooManyEntries { .. }));
    let names: Vec<String> = (0..11).map(|i| format!("f{i}")).collect();
    let entries: Vec<ZipEntry> = names.iter().map(|n| (n.as_bytes(), ZipKind::File, &b"x"[..])).collect();
    assert!(matches!(sb.refuse("many.zip", &zip(&entries), limits), ArtifactError::TooManyEntries { .. }));
}

/// A GNU long-name header claiming 64 MiB of name: the `tar` crate would read it into memory
/// whole; it is stopped after 256 KiB (and the stream is cut at 8 MiB to prove it).
#[test]
fn c11_long_name_bomb_is_stopped_before_it_is_read() {
    let sb = Sandbox::new();
    let mut header = tar_header(b"././@LongLink", GNU_LONG_NAME, 64 << 20);
    // `raw_tar_entry` writes ustar magic; the tar crate only honours `L` in GNU headers.
    header[257..265].copy_from_slice(b"ustar  \0");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let bomb = gzip_zeros(&header, 8 << 20);
    let err = sb.refuse("bomb.tar.gz", &bomb, UnpackLimits { max_bytes: 1 << 30, max_entries: 100 });
    assert!(err.to_string().contains("exceed 256 KiB"), "{err}");
}

/// Data after the end-of-archive marker is read (to check the gzip trailer) but bounded.
#[test]
fn c11_data_after_the_end_marker_is_bounded() {
    let sb = Sandbox::new();
    let mut t = tar(&[file("f", b"x")]);
    t.extend(std::iter::repeat_n(0u8, 4 << 20));
    let err = sb.refuse("trail.tar.gz", &gzip(&t), UnpackLimits { max_bytes: 1 << 30, max_entries: 100 });
    assert!(err.to_string().contains("after the end of the tar archive"), "{err}");
    // Ordinary record padding (GNU tar pads to 10 KiB) is fine.
    let mut padded = tar(&[file("f", b"x")]);
    padded.resize(10240, 0);
    sb.accept("padded.tar.gz", &gzip(&padded));
}

#[tokio::test]
async fn c11_bombs_are_refused_at_submission() {
    let h = start_with("max_unpacked_size = \"1MiB\"\nmax_archive_entries = 10", WEB).await;
    let mut t = tar_header(b"zeros.bin", REGULAR, 64 << 20);
    t.extend(std::iter::repeat_n(0u8, 64 << 20));
    t.extend_from_slice(&[0u8; 1024]);
    let err = refused_at_submission(&h, "bomb.tar.gz", gzip_zeros(&t, 0)).await;
    assert!(matches!(err, ArtifactError::UnpackedTooLarge { limit } if limit == 1 << 20), "{err}");
    let many: Vec<Entry> = (0..11).map(|i| file(format!("f{i}"), b"x")).collect();
    let err = refused_at_submission(&h, "many.tar.gz", gzip(&tar(&many))).await;
    assert!(matches!(err, ArtifactError::TooManyEntries { limit: 10 }), "{err}");
}

// ---------------------------------------------------------------------------------------------
// C12: empty and broken artifacts

fn c12_artifacts() -> Vec<(&'static str, &'static str, Vec<u8>, &'static str)> {
    let good = site("1.0.0");
    let half = good[..good.len() / 2].to_vec();
    let mut random = Vec::with_capacity(4096);
    let mut x: u32 = 0x9E37_79B9;
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        random.push(x as u8);
    }
    let good_zip = zip(&[(b"index.html", ZipKind::File, b"<h1>1</h1>"), (b"VERSION", ZipKind::File, b"1")]);
    let mut two = Vec::new();
    raw_tar_entry(&mut two, b"index.html", REGULAR, b"", b"<h1>1</h1>");
    raw_tar_entry(&mut two, b"VERSION", REGULAR, b"", &[b'1'; 600]);
    vec![
        ("a 0-byte tar.gz", "site.tar.gz", Vec::new(), "empty artifact"),
        ("a 0-byte plain file", "notes.txt", Vec::new(), "empty artifact"),
        ("a gzip of an empty tar", "site.tar.gz", gzip(&[0u8; 10240]), "empty artifact"),
        ("a gzip of nothing", "site.tar.gz", gzip(b""), "empty artifact"),
        ("an empty zip", "site.zip", zip(&[]), "empty artifact"),
        ("a tar.gz cut at 50 %", "site.tar.gz", half, "truncated or corrupt archive"),
        ("random bytes named .tar.gz", "site.tar.gz", random.clone(), "truncated or corrupt archive"),
        (
            "random bytes after a gzip magic",
            "site.tar.gz",
            [&[0x1f, 0x8b][..], &random].concat(),
            "truncated or corrupt",
        ),
        ("random bytes named .zip", "site.zip", random, "truncated or corrupt archive"),
        ("a truncated zip", "site.zip", good_zip[..good_zip.len() * 2 / 3].to_vec(), "truncated or corrupt archive"),
        ("a tar cut inside a file", "site.tar", two[..1536 + 100].to_vec(), "truncated or corrupt archive"),
        ("a tar cut at a block boundary", "site.tar", two[..1024].to_vec(), "end-of-archive marker"),
        ("a tar cut inside a header", "site.tar", two[..1024 + 200].to_vec(), "truncated or corrupt archive"),
    ]
}

#[tokio::test]
async fn c12_empty_and_broken_artifacts_are_refused_at_submission() {
    let h = Harness::start(WEB).await;
    for (what, name, bytes, reason) in c12_artifacts() {
        let err = refused_at_submission(&h, name, bytes).await;
        assert!(err.to_string().contains(reason), "{what}: {err}");
    }
}

#[test]
fn c12_empty_and_broken_artifacts_are_refused_by_unpack() {
    let sb = Sandbox::new();
    for (what, name, bytes, reason) in c12_artifacts() {
        if bytes.is_empty() {
            // The store never keeps an empty upload; unpack refuses one anyway.
            std::fs::write(sb.root().join("empty"), b"").unwrap();
            let err = artifact::unpack(&sb.root().join("empty"), &info(name, &bytes), &sb.release(), LIMITS)
                .expect_err("empty");
            assert!(err.to_string().contains(reason), "{what}: {err}");
            assert!(!sb.release().exists());
            std::fs::remove_file(sb.root().join("empty")).unwrap();
            continue;
        }
        let err = sb.refuse(name, &bytes, LIMITS);
        assert!(err.to_string().contains(reason), "{what}: {err}");
    }
}

/// The end marker check does not refuse well-formed archives: what `tar`, GNU-style padding
/// and the `tar` crate write is accepted.
#[test]
fn c12_complete_archives_are_accepted() {
    let sb = Sandbox::new();
    let stats = sb.accept("site.tar.gz", &site("1.0.0"));
    assert_eq!(stats.files, 2);
    std::fs::remove_dir_all(sb.release()).unwrap();
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&site("1.0.0")[..]).read_to_end(&mut plain).unwrap();
    sb.accept("site.tar", &plain);
    std::fs::remove_dir_all(sb.release()).unwrap();
    sb.accept("site.zip", &zip(&[(b"d/", ZipKind::Dir, b""), (b"d/index.html", ZipKind::File, b"x")]));
}

// ---------------------------------------------------------------------------------------------
// Property: nothing outside the release, whatever the entries

/// A path built from segments that have broken extractors: `..`, `.`, empty segments, a
/// backslash, an absolute prefix inside the sandbox, the sibling release's name.
fn arb_path() -> impl Strategy<Value = Vec<u8>> {
    let segment = prop_oneof![
        4 => Just("a".to_owned()),
        2 => Just("b".to_owned()),
        3 => Just("..".to_owned()),
        1 => Just(".".to_owned()),
        1 => Just(String::new()),
        1 => Just("..\\c".to_owned()),
        1 => Just("1-evil".to_owned()),
        1 => Just("{abs}".to_owned()),
    ];
    prop::collection::vec(segment, 1..5).prop_map(|parts| parts.join("/").into_bytes())
}

#[derive(Debug, Clone)]
enum ArbKind {
    File,
    Dir,
    Symlink(Vec<u8>),
    HardLink(Vec<u8>),
    Device,
}

fn arb_entry() -> impl Strategy<Value = (Vec<u8>, ArbKind)> {
    let kind = prop_oneof![
        4 => Just(ArbKind::File),
        2 => Just(ArbKind::Dir),
        4 => arb_path().prop_map(ArbKind::Symlink),
        2 => arb_path().prop_map(ArbKind::HardLink),
        1 => Just(ArbKind::Device),
    ];
    (arb_path(), kind)
}

fn with_abs(bytes: &[u8], abs: &str) -> Vec<u8> {
    String::from_utf8_lossy(bytes).replace("{abs}", abs).into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/data/proptest-regressions/archive.txt",
        ))),
        ..ProptestConfig::default()
    })]

    /// Whatever the entries (names from dangerous segments, links to anywhere, in any order),
    /// unpacking into `<tmp>/env/releases/1` leaves every path outside that folder exactly as it
    /// was, removes the folder on refusal, and agrees with `inspect`.
    #[test]
    fn random_archives_never_create_anything_outside_the_release(
        entries in prop::collection::vec(arb_entry(), 1..8),
        format in 0u8..3,
    ) {
        let sb = Sandbox::new();
        let abs = sb.root().display().to_string();
        let mut bytes = Vec::new();
        for (path, kind) in &entries {
            let path = with_abs(path, &abs);
            let (kind, target) = match kind {
                ArbKind::File => (REGULAR, Vec::new()),
                ArbKind::Dir => (DIRECTORY, Vec::new()),
                ArbKind::Symlink(t) => (SYMLINK, with_abs(t, &abs)),
                ArbKind::HardLink(t) => (HARD_LINK, with_abs(t, &abs)),
                ArbKind::Device => (FIFO, Vec::new()),
            };
            if path.len() > 100 || target.len() > 100 {
                continue;
            }
            raw_tar_entry(&mut bytes, &path, kind, &target, if kind == REGULAR { b"data" } else { b"" });
        }
        bytes.extend_from_slice(&[0u8; 1024]);
        let (name, bytes) = match format {
            0 => ("p.tar", bytes),
            1 => ("p.tar.gz", gzip(&bytes)),
            _ => ("p.zip", zip_of_tar(&bytes)),
        };
        let before = snapshot(sb.root(), &sb.release());
        let path = sb.root().join("artifact.bin");
        std::fs::write(&path, &bytes).unwrap();
        let inspected = artifact::inspect(&path, &info(name, &bytes), LIMITS);
        let unpacked = artifact::unpack(&path, &info(name, &bytes), &sb.release(), LIMITS);
        std::fs::remove_file(&path).unwrap();
        prop_assert_eq!(snapshot(sb.root(), &sb.release()), before);
        match (&inspected, &unpacked) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(_), Err(_)) => prop_assert!(!sb.release().exists()),
            _ => prop_assert!(false, "inspect {:?} but unpack {:?}", inspected, unpacked),
        }
        if unpacked.is_ok() {
            assert_links_inside(&sb.release());
        }
    }
}

/// The same entries as a zip (files, folders, symlinks; zip has no hard links or devices).
fn zip_of_tar(tar_bytes: &[u8]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default();
    let mut archive = tar::Archive::new(tar_bytes);
    let mut seen = std::collections::HashSet::new();
    for entry in archive.entries().unwrap().flatten() {
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if !seen.insert(name.clone()) {
            continue;
        }
        let target = entry.link_name_bytes().map(|t| String::from_utf8_lossy(&t).into_owned()).unwrap_or_default();
        let _ = match entry.header().entry_type() {
            tar::EntryType::Regular => w.start_file(name, opts).and_then(|()| Ok(w.write_all(b"data")?)),
            tar::EntryType::Directory => w.add_directory(name, opts),
            tar::EntryType::Symlink => w.add_symlink(name, target, opts),
            _ => Ok(()),
        };
    }
    w.finish().unwrap().into_inner()
}

/// Every symlink in the release that resolves at all resolves inside it.
fn assert_links_inside(release: &Path) {
    let real = release.canonicalize().unwrap();
    let mut stack = vec![release.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let t = entry.file_type().unwrap();
            if t.is_symlink() {
                if let Ok(to) = entry.path().canonicalize() {
                    assert!(to.starts_with(&real), "{} -> {}", entry.path().display(), to.display());
                }
            } else if t.is_dir() {
                stack.push(entry.path());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzzer findings

/// Every input the fuzzer (`scripts/fuzz.sh`) ever crashed the unpacker with, replayed through
/// the same oracle: `tests/data/fuzz/<target>/<input>`, where the target names the kind. The
/// structured target `unpack_entries` builds archives; its findings are kept as the archive it
/// built (`TDS_FUZZ_DUMP`, see `fuzz/src/lib.rs`), under the kind's folder.
#[test]
fn fuzz_findings_stay_fixed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz");
    let mut replayed = 0;
    for (target, name) in [("unpack_tar", "a.tar"), ("unpack_targz", "a.tar.gz"), ("unpack_zip", "a.zip")] {
        let Ok(dir) = std::fs::read_dir(root.join(target)) else { continue };
        for input in dir.flatten() {
            let bytes = std::fs::read(input.path()).unwrap();
            let sb = Sandbox::new();
            let before = snapshot(sb.root(), &sb.release());
            let path = sb.root().join("artifact.bin");
            std::fs::write(&path, &bytes).unwrap();
            let inspected = artifact::inspect(&path, &info(name, &bytes), FUZZ_LIMITS);
            let unpacked = artifact::unpack(&path, &info(name, &bytes), &sb.release(), FUZZ_LIMITS);
            std::fs::remove_file(&path).unwrap();
            assert_eq!(snapshot(sb.root(), &sb.release()), before, "{}", input.path().display());
            assert_eq!(
                inspected.is_ok(),
                unpacked.is_ok(),
                "{}: {inspected:?} vs {unpacked:?}",
                input.path().display()
            );
            if unpacked.is_err() {
                assert!(!sb.release().exists());
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no fuzz findings found under {}", root.display());
}

/// Fuzz finding (`unpack_entries`, against the unpacker before this module): a zip with the
/// symlink `a/a/a -> a` then the file `a`. `inspect` accepted it, `unpack` refused it ("duplicate
/// entry over a folder"): submission let through what the prepare phase then failed on. Now
/// both refuse the file over the folder that the symlink's path made.
#[test]
fn fuzz_file_over_an_implicit_folder_is_refused_at_submission_too() {
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz/unpack_zip/file-over-implicit-folder.zip"),
    )
    .unwrap();
    let sb = Sandbox::new();
    assert_unsafe(&sb.refuse("site.zip", &bytes, LIMITS), "a", "a file over a folder");
}
