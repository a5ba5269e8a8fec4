//! Artifacts: the content-addressed store, and safe unpacking into a release folder.
//!
//! Every entry of an archive is checked before anything is written: no absolute path, no `..`,
//! no backslash, no NUL, no link that resolves outside the release folder, no device or FIFO,
//! and caps on entry count and unpacked size (decompression bombs). Paths are checked as
//! *components*, never by string prefix, so `../1-evil/x` next to `releases/1` is refused
//! (case C11). On any failure the release folder is removed and the error names the entry.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::model::{ArtifactInfo, ArtifactKind};

/// Why an artifact cannot be stored or unpacked. Messages are written for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("empty artifact: {0}")]
    Empty(String),
    #[error("artifact is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("archive entry '{entry}' refused: {reason}")]
    UnsafeEntry { entry: String, reason: String },
    #[error("archive has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("archive unpacks to more than {limit} bytes")]
    UnpackedTooLarge { limit: u64 },
    #[error("truncated or corrupt archive: {0}")]
    Corrupt(String),
    #[error("invalid artifact name '{0}': use a plain file name (no '/', no leading '.', at most 255 bytes)")]
    BadName(String),
    #[error("artifact storage: {0}")]
    Io(#[from] io::Error),
}

impl ArtifactError {
    /// Whether retrying the same artifact could succeed (I/O trouble) or never (bad content).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ArtifactError::Io(_))
    }
}

/// Bounds on what an archive may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

/// What an unpack produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub bytes: u64,
}

/// A plain file name for the artifact: it becomes a path component of the plain-file release.
pub fn valid_artifact_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && !name.chars().any(char::is_control)
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The folder of stored artifacts, each under its sha256.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    dir: PathBuf,
}

impl ArtifactStore {
    /// Opens (creating) the store and removes upload leftovers of an earlier crash.
    pub fn open(dir: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&dir)?;
        for entry in fs::read_dir(&dir)?.flatten() {
            if entry.file_name().as_bytes().starts_with(b".upload-") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Self { dir })
    }

    /// Where the artifact with this hash lives.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    /// Starts a streamed upload, refused as soon as it passes `limit` bytes.
    pub fn writer(&self, limit: u64) -> io::Result<ArtifactWriter> {
        let tmp = self.dir.join(format!(".upload-{}", ulid::Ulid::generate()));
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        Ok(ArtifactWriter {
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            tmp,
            dir: self.dir.clone(),
            hasher: Sha256::new(),
            size: 0,
            limit,
        })
    }

    /// Stores bytes already in memory.
    pub fn store(&self, name: &str, bytes: &[u8], limit: u64) -> Result<ArtifactInfo, ArtifactError> {
        let mut writer = self.writer(limit)?;
        writer.write(bytes)?;
        writer.finish(name)
    }
}

/// An upload in progress: hashes while writing, becomes `<sha256>` on `finish` (durably:
/// fsynced and renamed), and is removed if dropped unfinished.
#[derive(Debug)]
pub struct ArtifactWriter {
    file: Option<BufWriter<File>>,
    tmp: PathBuf,
    dir: PathBuf,
    hasher: Sha256,
    size: u64,
    limit: u64,
}

impl ArtifactWriter {
    /// Appends a chunk; fails once the total passes the limit.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), ArtifactError> {
        self.size += chunk.len() as u64;
        if self.size > self.limit {
            return Err(ArtifactError::TooLarge { limit: self.limit });
        }
        self.hasher.update(chunk);
        if let Some(file) = self.file.as_mut() {
            file.write_all(chunk)?;
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Completes the upload.
    pub fn finish(mut self, name: &str) -> Result<ArtifactInfo, ArtifactError> {
        if !valid_artifact_name(name) {
            return Err(ArtifactError::BadName(name.chars().take(80).collect()));
        }
        if self.size == 0 {
            return Err(ArtifactError::Empty("0 bytes received".into()));
        }
        let file = self.file.take().ok_or_else(|| io::Error::other("writer already finished"))?;
        let file = file.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        let sha256 = hex(&std::mem::take(&mut self.hasher).finalize());
        let target = self.dir.join(&sha256);
        if target.exists() {
            let _ = fs::remove_file(&self.tmp);
        } else {
            fs::rename(&self.tmp, &target)?;
            if let Ok(dir) = File::open(&self.dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(ArtifactInfo { name: name.to_owned(), size: self.size, sha256, kind: Some(ArtifactKind::from_name(name)) })
    }
}

impl Drop for ArtifactWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Checks an artifact without writing anything: the same rules as [`unpack`], so a bad archive
/// is refused at submission with the entry named (cases C11, C12).
pub fn inspect(artifact: &Path, info: &ArtifactInfo, limits: UnpackLimits) -> Result<UnpackStats, ArtifactError> {
    Unpacker { dest: None, limits, stats: UnpackStats::default(), saw_symlink: false }.run(artifact, info)
}

/// Unpacks an artifact into `dest`, which must not exist yet. On failure `dest` is removed.
pub fn unpack(
    artifact: &Path,
    info: &ArtifactInfo,
    dest: &Path,
    limits: UnpackLimits,
) -> Result<UnpackStats, ArtifactError> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::create_dir(dest)?;
    let result =
        Unpacker { dest: Some(dest), limits, stats: UnpackStats::default(), saw_symlink: false }.run(artifact, info);
    if result.is_err() {
        let _ = fs::remove_dir_all(dest);
    }
    result
}

/// Turns an archive path into safe relative components, or says why it is unsafe.
/// `Ok(None)` is the archive root itself (`./`).
fn safe_relative(raw: &[u8]) -> Result<Option<PathBuf>, &'static str> {
    if raw.is_empty() {
        return Err("empty path");
    }
    if raw.contains(&0) {
        return Err("NUL byte in path");
    }
    if raw.contains(&b'\\') {
        return Err("backslash in path (Windows separators are not accepted)");
    }
    if raw.first() == Some(&b'/') {
        return Err("absolute path");
    }
    let mut out = PathBuf::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("'..' in path would leave the release folder"),
            name => out.push(OsStr::from_bytes(name)),
        }
    }
    Ok(if out.as_os_str().is_empty() { None } else { Some(out) })
}

/// Resolves a symlink target lexically from the link's folder; `None` when it escapes.
fn resolve_link(link: &Path, target: &[u8]) -> Option<PathBuf> {
    if target.is_empty() || target.first() == Some(&b'/') || target.contains(&0) {
        return None;
    }
    let mut parts: Vec<&OsStr> = link
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    for part in target.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop()?;
            }
            name => parts.push(OsStr::from_bytes(name)),
        }
    }
    Some(parts.iter().collect())
}

fn display_name(raw: &[u8]) -> String {
    crate::sanitize::inert(&String::from_utf8_lossy(raw)).chars().take(200).collect()
}

struct Unpacker<'a> {
    dest: Option<&'a Path>,
    limits: UnpackLimits,
    stats: UnpackStats,
    saw_symlink: bool,
}

fn corrupt(e: &io::Error) -> ArtifactError {
    ArtifactError::Corrupt(e.to_string())
}

impl Unpacker<'_> {
    fn run(mut self, artifact: &Path, info: &ArtifactInfo) -> Result<UnpackStats, ArtifactError> {
        let file = File::open(artifact)?;
        if file.metadata()?.len() == 0 {
            return Err(ArtifactError::Empty("0 bytes".into()));
        }
        match info.kind() {
            ArtifactKind::Tar => self.tar(io::BufReader::new(file))?,
            ArtifactKind::TarGz => {
                let mut reader = io::BufReader::new(file);
                let mut magic = [0u8; 2];
                reader.read_exact(&mut magic).map_err(|e| corrupt(&e))?;
                if magic != [0x1f, 0x8b] {
                    return Err(ArtifactError::Corrupt("not a gzip stream (wrong magic bytes)".into()));
                }
                let chained = io::Cursor::new(magic).chain(reader);
                self.tar(flate2::read::GzDecoder::new(chained))?;
            }
            ArtifactKind::Zip => self.zip(file)?,
            ArtifactKind::Plain => self.plain(file, &info.name)?,
        }
        if self.stats.files == 0 {
            return Err(ArtifactError::Empty("the archive holds no files".into()));
        }
        Ok(self.stats)
    }

    fn count_entry(&mut self) -> Result<(), ArtifactError> {
        let entries = self.stats.files + self.stats.dirs + self.stats.links + 1;
        if entries > self.limits.max_entries {
            return Err(ArtifactError::TooManyEntries { limit: self.limits.max_entries });
        }
        Ok(())
    }

    fn unsafe_entry(raw: &[u8], reason: impl Into<String>) -> ArtifactError {
        ArtifactError::UnsafeEntry { entry: display_name(raw), reason: reason.into() }
    }

    /// Copies entry data into the file (or nowhere when inspecting), within the size budget.
    fn copy_data(&mut self, mut data: impl Read, rel: &Path, raw: &[u8], mode: u32) -> Result<(), ArtifactError> {
        let budget = self.limits.max_bytes.saturating_sub(self.stats.bytes);
        let mut limited = (&mut data).take(budget.saturating_add(1));
        let written = match self.dest {
            None => io::copy(&mut limited, &mut io::sink()).map_err(|e| corrupt(&e))?,
            Some(dest) => {
                let path = dest.join(rel);
                self.prepare_parent(&path, raw)?;
                if fs::symlink_metadata(&path).is_ok() {
                    fs::remove_file(&path).map_err(|_| Self::unsafe_entry(raw, "duplicate entry over a folder"))?;
                }
                let mut out = OpenOptions::new().write(true).create_new(true).open(&path)?;
                let n = io::copy(&mut limited, &mut out).map_err(|e| corrupt(&e))?;
                fs::set_permissions(&path, fs::Permissions::from_mode((mode & 0o777) | 0o600))?;
                n
            }
        };
        if written > budget {
            return Err(ArtifactError::UnpackedTooLarge { limit: self.limits.max_bytes });
        }
        self.stats.bytes += written;
        self.stats.files += 1;
        Ok(())
    }

    /// Creates the parent folders of `path`; once the archive has made a symlink, also checks
    /// that the real parent is still inside the release folder.
    fn prepare_parent(&self, path: &Path, raw: &[u8]) -> Result<(), ArtifactError> {
        let (Some(dest), Some(parent)) = (self.dest, path.parent()) else { return Ok(()) };
        fs::create_dir_all(parent).map_err(|e| Self::unsafe_entry(raw, format!("cannot create its folder: {e}")))?;
        if self.saw_symlink {
            let real = parent.canonicalize()?;
            if !real.starts_with(dest.canonicalize()?) {
                return Err(Self::unsafe_entry(raw, "its folder resolves outside the release folder"));
            }
        }
        Ok(())
    }

    fn make_dir(&mut self, rel: Option<&Path>, raw: &[u8]) -> Result<(), ArtifactError> {
        self.count_entry()?;
        self.stats.dirs += 1;
        if let (Some(dest), Some(rel)) = (self.dest, rel) {
            let path = dest.join(rel);
            self.prepare_parent(&path, raw)?;
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(Self::unsafe_entry(raw, "a folder over an existing file or link")),
                Err(_) => fs::create_dir(&path)?,
            }
        }
        Ok(())
    }

    fn make_symlink(&mut self, rel: &Path, raw: &[u8], target: &[u8]) -> Result<(), ArtifactError> {
        self.count_entry()?;
        if resolve_link(rel, target).is_none() {
            return Err(Self::unsafe_entry(
                raw,
                format!("symlink to '{}' resolves outside the release folder", display_name(target)),
            ));
        }
        self.saw_symlink = true;
        self.stats.links += 1;
        if let Some(dest) = self.dest {
            let path = dest.join(rel);
            self.prepare_parent(&path, raw)?;
            if fs::symlink_metadata(&path).is_ok() {
                return Err(Self::unsafe_entry(raw, "symlink over an existing entry"));
            }
            std::os::unix::fs::symlink(OsStr::from_bytes(target), &path)?;
        }
        Ok(())
    }

    fn make_hardlink(&mut self, rel: &Path, raw: &[u8], target: &[u8]) -> Result<(), ArtifactError> {
        self.count_entry()?;
        let Ok(Some(target_rel)) = safe_relative(target) else {
            return Err(Self::unsafe_entry(
                raw,
                format!("hard link to '{}' points outside the release folder", display_name(target)),
            ));
        };
        self.stats.links += 1;
        if let Some(dest) = self.dest {
            let source = dest.join(&target_rel);
            match fs::symlink_metadata(&source) {
                Ok(m) if m.is_file() => {}
                _ => return Err(Self::unsafe_entry(raw, "hard link to something that is not a file of this archive")),
            }
            if self.saw_symlink {
                let real = source.canonicalize()?;
                if !real.starts_with(dest.canonicalize()?) {
                    return Err(Self::unsafe_entry(raw, "hard link resolves outside the release folder"));
                }
            }
            let path = dest.join(rel);
            self.prepare_parent(&path, raw)?;
            if fs::symlink_metadata(&path).is_ok() {
                fs::remove_file(&path).map_err(|_| Self::unsafe_entry(raw, "hard link over a folder"))?;
            }
            fs::hard_link(&source, &path)?;
        }
        Ok(())
    }

    fn tar(&mut self, reader: impl Read) -> Result<(), ArtifactError> {
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(|e| corrupt(&e))? {
            let entry = entry.map_err(|e| corrupt(&e))?;
            let raw = entry.path_bytes().into_owned();
            let kind = entry.header().entry_type();
            let rel = safe_relative(&raw).map_err(|reason| Self::unsafe_entry(&raw, reason))?;
            match kind {
                tar::EntryType::Directory => self.make_dir(rel.as_deref(), &raw)?,
                tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                    let rel = rel.ok_or_else(|| Self::unsafe_entry(&raw, "a file with no name"))?;
                    self.count_entry()?;
                    let mode = entry.header().mode().unwrap_or(0o644);
                    self.copy_data(entry, &rel, &raw, mode)?;
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let rel = rel.ok_or_else(|| Self::unsafe_entry(&raw, "a link with no name"))?;
                    let target = entry.link_name_bytes().map(std::borrow::Cow::into_owned).unwrap_or_default();
                    if kind == tar::EntryType::Symlink {
                        self.make_symlink(&rel, &raw, &target)?;
                    } else {
                        self.make_hardlink(&rel, &raw, &target)?;
                    }
                }
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
                other => {
                    return Err(Self::unsafe_entry(
                        &raw,
                        format!("entry type {other:?} (devices, FIFOs) is not allowed"),
                    ));
                }
            }
        }
        // Read to the end so that a truncated or corrupt compressed stream (bad CRC, missing
        // trailer) is noticed even when the tar end marker came first.
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(|e| corrupt(&e))?;
        Ok(())
    }

    fn zip(&mut self, file: File) -> Result<(), ArtifactError> {
        let mut archive = zip::ZipArchive::new(io::BufReader::new(file))
            .map_err(|e| ArtifactError::Corrupt(format!("not a readable zip: {e}")))?;
        if archive.len() as u64 > self.limits.max_entries {
            return Err(ArtifactError::TooManyEntries { limit: self.limits.max_entries });
        }
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i).map_err(|e| ArtifactError::Corrupt(e.to_string()))?;
            let raw = entry.name_raw().to_vec();
            let rel = safe_relative(&raw).map_err(|reason| Self::unsafe_entry(&raw, reason))?;
            let mode = entry.unix_mode().unwrap_or(0o644);
            let file_type = mode & 0o170_000;
            if entry.is_dir() {
                self.make_dir(rel.as_deref(), &raw)?;
            } else if entry.is_symlink() {
                let rel = rel.ok_or_else(|| Self::unsafe_entry(&raw, "a link with no name"))?;
                let mut target = Vec::new();
                (&mut entry).take(4096).read_to_end(&mut target).map_err(|e| corrupt(&e))?;
                self.make_symlink(&rel, &raw, &target)?;
            } else if file_type == 0 || file_type == 0o100_000 {
                let rel = rel.ok_or_else(|| Self::unsafe_entry(&raw, "a file with no name"))?;
                self.count_entry()?;
                self.copy_data(&mut entry, &rel, &raw, mode)?;
            } else {
                return Err(Self::unsafe_entry(&raw, "special file (device, FIFO) is not allowed"));
            }
        }
        Ok(())
    }

    fn plain(&mut self, file: File, name: &str) -> Result<(), ArtifactError> {
        if !valid_artifact_name(name) {
            return Err(ArtifactError::BadName(name.chars().take(80).collect()));
        }
        self.count_entry()?;
        self.copy_data(file, Path::new(name), name.as_bytes(), 0o644)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked_by_component() {
        assert_eq!(safe_relative(b"ok/file"), Ok(Some(PathBuf::from("ok/file"))));
        assert_eq!(safe_relative(b"./a/./b/"), Ok(Some(PathBuf::from("a/b"))));
        assert_eq!(safe_relative(b"./"), Ok(None));
        for bad in
            [&b"../escaped.txt"[..], b"a/../../escaped2.txt", b"/tmp/abs", b"..\\win.txt", b"../1-evil/x", b"a\0b", b""]
        {
            assert!(safe_relative(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn symlink_targets_resolve_lexically() {
        assert_eq!(resolve_link(Path::new("a/b/link"), b"../c"), Some(PathBuf::from("a/c")));
        assert_eq!(resolve_link(Path::new("link"), b"."), Some(PathBuf::new()));
        assert_eq!(resolve_link(Path::new("a/link"), b"../.."), None);
        assert_eq!(resolve_link(Path::new("link"), b"/etc/passwd"), None);
        assert_eq!(resolve_link(Path::new("a/link"), b"../../releases/1-evil"), None);
    }

    #[test]
    fn names_of_plain_artifacts() {
        assert!(valid_artifact_name("site-1.2.tar.gz"));
        for bad in ["", ".hidden", "a/b", "..", "x\u{1b}", "a\\b"] {
            assert!(!valid_artifact_name(bad), "{bad:?}");
        }
    }
}
