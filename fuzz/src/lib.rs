//! The oracle shared by the unpacker fuzz targets: unpack fuzzed bytes under a temp folder and
//! check the promises of `tds_core::artifact` beyond "does not panic".
//!
//! 1. `inspect` (submission) and `unpack` (prepare) agree: both accept with the same figures or
//!    both refuse. A disagreement means submission lets through what prepare then fails on, or
//!    the reverse.
//! 2. Nothing exists under the temp folder except the artifact and `releases/R/**`; after a
//!    refusal `releases/R` is gone.
//! 3. After a success every symlink in the release resolves inside it.

use std::fs;
use std::path::{Path, PathBuf};

use arbitrary::Unstructured;

use tds_core::artifact::{self, UnpackLimits};
use tds_core::model::ArtifactInfo;

/// Small caps so that bombs are found quickly and runs stay fast.
pub const LIMITS: UnpackLimits = UnpackLimits { max_bytes: 1 << 20, max_entries: 64 };

/// Runs the oracle on `bytes` stored as an artifact called `name`.
pub fn check_unpack(bytes: &[u8], name: &str) {
    check_unpack_with(|_| bytes.to_vec(), name);
}

/// Runs the oracle on the artifact `build` makes, given the temp folder (so that absolute
/// names can point into it, where the oracle looks).
pub fn check_unpack_with(build: impl FnOnce(&Path) -> Vec<u8>, name: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = build(dir.path());
    let bytes = bytes.as_slice();
    // Turning a finding of a structured target into a regression file: run the target on the
    // crash input with TDS_FUZZ_DUMP=<folder> and keep `<folder>/<name>`.
    if let Some(dump) = std::env::var_os("TDS_FUZZ_DUMP") {
        fs::write(Path::new(&dump).join(name), bytes).expect("dump the artifact");
    }
    let artifact = dir.path().join("artifact");
    fs::write(&artifact, bytes).expect("write artifact");
    let info = ArtifactInfo { name: name.to_owned(), size: bytes.len() as u64, sha256: "fuzz".into(), kind: None };
    let dest = dir.path().join("releases").join("R");

    let inspected = artifact::inspect(&artifact, &info, LIMITS);
    let unpacked = artifact::unpack(&artifact, &info, &dest, LIMITS);
    match (&inspected, &unpacked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "inspect and unpack count differently"),
        (Err(_), Err(_)) => {}
        _ => panic!("inspect {inspected:?} but unpack {unpacked:?}"),
    }

    let mut outside = Vec::new();
    walk(dir.path(), dir.path(), &dest, &mut outside);
    assert!(outside.is_empty(), "written outside the release folder: {outside:?}");
    match unpacked {
        Ok(_) => check_links(&dest),
        Err(e) => assert!(!dest.exists(), "release folder left behind after: {e}"),
    }
}

/// Collects every path under `root` that is neither the artifact nor inside `release`.
fn walk(root: &Path, dir: &Path, release: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.starts_with(release) {
            continue;
        }
        let expected = path == root.join("artifact") || path == root.join("releases");
        if !expected {
            out.push(path.clone());
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &path, release, out);
        }
    }
}

/// Every symlink in the release resolves (when it resolves at all) inside it.
fn check_links(release: &Path) {
    let real_release = release.canonicalize().expect("canonical release");
    let mut stack = vec![release.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = entry.path();
            let kind = entry.file_type().expect("file type");
            if kind.is_symlink() {
                if let Ok(real) = path.canonicalize() {
                    assert!(real.starts_with(&real_release), "{} resolves to {}", path.display(), real.display());
                }
            } else if kind.is_dir() {
                stack.push(path);
            }
        }
    }
}

/// Path segments that have broken extractors; `{abs}` becomes the temp folder.
const SEGMENTS: &[&str] = &["a", "b", "..", ".", "", "..\\c", "R", "releases", "{abs}", "x"];

/// One archive entry chosen by the fuzzer: kind, path, link target.
#[derive(Debug)]
pub struct FuzzEntry {
    pub kind: u8,
    pub path: String,
    pub link: String,
}

fn fuzz_path(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    let n = u.int_in_range(1..=5)?;
    let mut parts = Vec::with_capacity(n);
    for _ in 0..n {
        parts.push(*u.choose(SEGMENTS)?);
    }
    Ok(parts.join("/"))
}

/// Entries from fuzzer bytes: files, folders, symlinks, hard links, FIFOs, with paths and
/// targets made of [`SEGMENTS`].
pub fn fuzz_entries(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<FuzzEntry>> {
    let n = u.int_in_range(1..=10)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let kind = *u.choose(&[b'0', b'0', b'5', b'2', b'2', b'1', b'6'])?;
        let path = fuzz_path(u)?;
        let link = if matches!(kind, b'1' | b'2') { fuzz_path(u)? } else { String::new() };
        out.push(FuzzEntry { kind, path, link });
    }
    Ok(out)
}

/// A tar with raw headers (so that `..` and absolute names get in), with its end marker.
pub fn raw_tar(entries: &[FuzzEntry], abs: &Path) -> Vec<u8> {
    let abs = abs.display().to_string();
    let mut out = Vec::new();
    for e in entries {
        let path = e.path.replace("{abs}", &abs);
        let link = e.link.replace("{abs}", &abs);
        if path.len() > 100 || link.len() > 100 {
            continue;
        }
        let content: &[u8] = if e.kind == b'0' { b"data" } else { b"" };
        let mut header = [0u8; 512];
        header[..path.len()].copy_from_slice(path.as_bytes());
        header[100..108].copy_from_slice(b"0000644\0");
        header[108..116].copy_from_slice(b"0000000\0");
        header[116..124].copy_from_slice(b"0000000\0");
        header[124..136].copy_from_slice(format!("{:011o}\0", content.len()).as_bytes());
        header[136..148].copy_from_slice(b"00000000000\0");
        header[156] = e.kind;
        header[157..157 + link.len()].copy_from_slice(link.as_bytes());
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(content);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// The same entries as a zip (files, folders, symlinks; zip has no hard links, and a FIFO is a
/// file whose mode says so).
pub fn zip_of(entries: &[FuzzEntry], abs: &Path) -> Vec<u8> {
    use std::io::Write as _;
    use zip::write::SimpleFileOptions;
    let abs = abs.display().to_string();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default();
    for e in entries {
        let path = e.path.replace("{abs}", &abs);
        let link = e.link.replace("{abs}", &abs);
        let _ = match e.kind {
            b'0' => w.start_file(path, opts).and_then(|()| Ok(w.write_all(b"data")?)),
            b'5' => w.add_directory(path, opts),
            b'2' => w.add_symlink(path, link, opts),
            b'6' => w.start_file(path, opts.external_attributes(0o010_644 << 16)),
            _ => Ok(()),
        };
    }
    w.finish().map(std::io::Cursor::into_inner).unwrap_or_default()
}

/// Rewrites the checksum of every 512-byte block that carries a ustar or GNU magic, so that
/// mutations of header fields (sizes, types, names, pax and long-name records) reach the
/// unpacker instead of dying on a checksum mismatch.
pub fn fix_tar_checksums(bytes: &mut [u8]) {
    for block in bytes.chunks_exact_mut(512) {
        if &block[257..262] != b"ustar" {
            continue;
        }
        block[148..156].copy_from_slice(b"        ");
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }
}
