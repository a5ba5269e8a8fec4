//! Artifacts: the content-addressed store, and safe unpacking into a release folder.
//!
//! Every entry of an archive is checked before it is written: no absolute path, no `..`, no
//! backslash, no NUL, no device or FIFO, and caps on entry count and unpacked size (decompression
//! bombs, checked while reading, so a bomb stops at the cap). Paths are checked as *components*,
//! never by string prefix, so `../1-evil/x` next to `releases/1` is refused (case C11).
//!
//! Links: the unpacker keeps a model of what the archive has made so far. A symlink's target is
//! resolved through the archive's own symlinks, the way the kernel would, and must stay inside
//! (re-checked at the end, since a later link can change where an earlier one leads); a hard link
//! must name a file the archive made. Nothing is ever written *through* a symlink: an entry whose
//! folder is a symlink, or a file over a symlink, is refused, and `unpack` checks the disk for
//! it too. `inspect` (at submission) and `unpack` (in the prepare phase) decide from the same
//! model, so what passes one passes the other. Broken input (an empty artifact, a truncated
//! stream, a tar without its end marker) is refused with a precise reason (case C12). On any
//! failure the release folder is removed and the error names the entry.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

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
    Unpacker::new(None, limits).run(artifact, info)
}

/// Unpacks an artifact into `dest`, which must not exist yet. On failure `dest` is removed.
///
/// This repeats every check of [`inspect`] (an artifact may have been stored by an older
/// version, or the check may have a gap) and adds physical ones: no write ever goes through a
/// symlink, and nothing is created except by `mkdir`, exclusive `open`, `symlink` and `link`
/// inside real folders of `dest`.
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
    let result = Unpacker::new(Some(dest), limits).run(artifact, info);
    if result.is_err() {
        let _ = fs::remove_dir_all(dest);
    }
    result
}

/// Size of a tar block; headers and data are padded to it.
const BLOCK: u64 = 512;
/// Most bytes of headers the tar reader may consume between two entries: long names, long link
/// names and pax records are read into memory whole by the `tar` crate, so a `L` header that
/// claims gigabytes of (highly compressible) name must be stopped from outside.
const MAX_ENTRY_HEADERS: u64 = 256 * 1024;
/// Most bytes accepted after the tar end-of-archive marker (record padding is at most a few KiB;
/// more is a second archive or a bomb hiding behind the first).
const MAX_TRAILING: u64 = 1 << 20;
/// Longest symlink target (Linux `PATH_MAX` less its NUL).
const MAX_LINK_TARGET: usize = 4095;
/// Longest name of one path component (Linux `NAME_MAX`): refused at inspection rather than
/// failing to be created at unpack.
const MAX_NAME: usize = 255;
/// Longest entry path, leaving room under `PATH_MAX` for the release folder's own path.
const MAX_PATH: usize = 2048;
/// Deepest entry path, in folders: bounds the work per entry.
const MAX_DEPTH: usize = 128;
/// Most path components followed while resolving all the symlinks of one archive: enough for
/// any real archive, and a bound for one built to make resolution slow.
const MAX_RESOLVE_STEPS: u64 = 1 << 20;
/// Most symlinks followed while resolving one target (Linux follows 40).
const MAX_LINK_HOPS: u32 = 40;

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
    if raw.len() > MAX_PATH {
        return Err("path longer than 2048 bytes");
    }
    let mut out = PathBuf::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("'..' in path would leave the release folder"),
            name if name.len() > MAX_NAME => return Err("a path component longer than 255 bytes"),
            name => out.push(OsStr::from_bytes(name)),
        }
    }
    if out.components().count() > MAX_DEPTH {
        return Err("path deeper than 128 folders");
    }
    Ok(if out.as_os_str().is_empty() { None } else { Some(out) })
}

/// Resolves a symlink target lexically from the link's folder; `None` when it escapes. The
/// unpacker uses [`Unpacker::resolve`], which also follows the archive's own links.
#[cfg(test)]
fn resolve_link(link: &Path, target: &[u8]) -> Option<PathBuf> {
    Unpacker::new(None, UnpackLimits { max_bytes: 0, max_entries: 0 }).resolve(link, target).ok()
}

fn display_name(raw: &[u8]) -> String {
    crate::sanitize::inert(&String::from_utf8_lossy(raw)).chars().take(200).collect()
}

fn unsafe_entry(raw: &[u8], reason: impl Into<String>) -> ArtifactError {
    ArtifactError::UnsafeEntry { entry: display_name(raw), reason: reason.into() }
}

/// A failed write inside the release folder: the entry's fault when the path cannot exist (a
/// name too long, a file where a folder should be), the disk's otherwise (retryable).
fn write_error(raw: &[u8], e: &io::Error) -> ArtifactError {
    use io::ErrorKind as K;
    match e.kind() {
        K::AlreadyExists | K::NotADirectory | K::IsADirectory | K::InvalidFilename | K::InvalidInput => {
            unsafe_entry(raw, format!("cannot be created: {e}"))
        }
        kind => ArtifactError::Io(io::Error::new(kind, format!("writing entry '{}': {e}", display_name(raw)))),
    }
}

/// The path of `parts` as a key of the archive model.
fn key(parts: &[&[u8]]) -> PathBuf {
    parts.iter().map(|p| OsStr::from_bytes(p)).collect()
}

/// What the archive has put at one path so far. `inspect` and `unpack` decide from this model,
/// so they always agree; `unpack` checks the disk against it as well.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File,
    Symlink { target: Vec<u8>, raw: Vec<u8> },
}

/// Counts what the tar reader consumes from the (decompressed) stream and refuses to read past
/// an allowance that the unpacker moves entry by entry. This is what bounds the work and memory
/// spent on things the `tar` crate reads on its own: headers, long names, pax records, the data
/// of entries it skips, and what follows the end marker.
#[derive(Debug, Default)]
struct Meter {
    read: Cell<u64>,
    limit: Cell<u64>,
    /// Why the current allowance exists, reported when it is exceeded.
    reason: Cell<&'static str>,
    tripped: Cell<Option<&'static str>>,
}

impl Meter {
    fn allow_until(&self, limit: u64, reason: &'static str) {
        self.limit.set(limit);
        self.reason.set(reason);
    }
}

struct Metered<R> {
    inner: R,
    meter: Rc<Meter>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let meter = &self.meter;
        let room = meter.limit.get().saturating_sub(meter.read.get());
        if room == 0 {
            // At the limit: fine if the stream ends here, refused if it goes on.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            meter.tripped.set(Some(meter.reason.get()));
            return Err(io::Error::other(meter.reason.get()));
        }
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        meter.read.set(meter.read.get() + n as u64);
        Ok(n)
    }
}

/// Where a copy failed: reading the archive (its fault) or writing the file (the disk's).
enum PumpError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies at most `limit + 1` bytes from `src` into `dst` (or nowhere), so that going over the
/// limit is noticed without reading further.
fn pump(src: &mut impl Read, mut dst: Option<&mut File>, limit: u64, buf: &mut [u8]) -> Result<u64, PumpError> {
    let mut total = 0u64;
    loop {
        let room = limit.saturating_add(1).saturating_sub(total);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(total);
        }
        let n = match src.read(&mut buf[..want]) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(PumpError::Read(e)),
        };
        if let Some(file) = dst.as_mut() {
            file.write_all(&buf[..n]).map_err(PumpError::Write)?;
        }
        total += n as u64;
    }
}

struct Unpacker<'a> {
    dest: Option<&'a Path>,
    limits: UnpackLimits,
    stats: UnpackStats,
    entries: u64,
    tree: HashMap<PathBuf, Node>,
    /// Symlinks in archive order, for the final check.
    links: Vec<PathBuf>,
    /// Path components followed so far by [`Unpacker::resolve`] (bounded).
    resolve_steps: Cell<u64>,
    meter: Rc<Meter>,
    buf: Vec<u8>,
}

impl<'a> Unpacker<'a> {
    fn new(dest: Option<&'a Path>, limits: UnpackLimits) -> Self {
        Self {
            dest,
            limits,
            stats: UnpackStats::default(),
            entries: 0,
            tree: HashMap::new(),
            links: Vec::new(),
            resolve_steps: Cell::new(0),
            meter: Rc::new(Meter::default()),
            buf: Vec::new(),
        }
    }

    fn run(mut self, artifact: &Path, info: &ArtifactInfo) -> Result<UnpackStats, ArtifactError> {
        let file = File::open(artifact)?;
        if file.metadata()?.len() == 0 {
            return Err(ArtifactError::Empty("0 bytes".into()));
        }
        self.buf = vec![0u8; 64 * 1024];
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
        self.check_links()?;
        if self.stats.files == 0 {
            return Err(ArtifactError::Empty("the archive holds no files".into()));
        }
        Ok(self.stats)
    }

    fn count_entry(&mut self) -> Result<(), ArtifactError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ArtifactError::TooManyEntries { limit: self.limits.max_entries });
        }
        Ok(())
    }

    /// Counts bytes towards the unpacked size cap before anything reads them.
    fn charge(&mut self, bytes: u64) -> Result<(), ArtifactError> {
        let total = self.stats.bytes.saturating_add(bytes);
        if total > self.limits.max_bytes {
            return Err(ArtifactError::UnpackedTooLarge { limit: self.limits.max_bytes });
        }
        self.stats.bytes = total;
        Ok(())
    }

    /// An error while reading the archive: a bound of the meter, or a broken stream.
    fn stream_error(&self, e: &io::Error) -> ArtifactError {
        match self.meter.tripped.get() {
            Some(reason) => ArtifactError::Corrupt(reason.to_owned()),
            None => corrupt(e),
        }
    }

    /// Follows `target` from the folder of `link` through the archive's own symlinks, the way
    /// the kernel would in the unpacked tree (a `..` after a link applies to where the link
    /// points); the error says why it does not stay inside the release folder.
    fn resolve(&self, link: &Path, target: &[u8]) -> Result<PathBuf, &'static str> {
        let mut parts: Vec<&[u8]> = link
            .parent()
            .into_iter()
            .flat_map(Path::components)
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.as_bytes()),
                _ => None,
            })
            .collect();
        let mut hops = MAX_LINK_HOPS;
        self.walk(&mut parts, target, &mut hops)?;
        Ok(key(&parts))
    }

    fn walk<'t>(&'t self, parts: &mut Vec<&'t [u8]>, target: &'t [u8], hops: &mut u32) -> Result<(), &'static str> {
        if target.is_empty() || target.first() == Some(&b'/') || target.contains(&0) {
            return Err("resolves outside the release folder");
        }
        for part in target.split(|&b| b == b'/') {
            let steps = self.resolve_steps.get() + 1;
            if steps > MAX_RESOLVE_STEPS {
                return Err("needs too much work to resolve (too many or too deep symlinks)");
            }
            self.resolve_steps.set(steps);
            match part {
                b"" | b"." => {}
                b".." => {
                    parts.pop().ok_or("resolves outside the release folder")?;
                }
                name => {
                    parts.push(name);
                    // Only a path of the archive can be one of its links.
                    let known = !self.links.is_empty() && parts.len() <= MAX_DEPTH + 1;
                    if let Some(Node::Symlink { target: next, .. }) =
                        known.then(|| self.tree.get(&key(parts))).flatten()
                    {
                        *hops = hops.checked_sub(1).ok_or("is a loop of symlinks (more than 40 hops)")?;
                        parts.pop();
                        self.walk(parts, next, hops)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Re-checks every symlink once the whole archive is known, in archive order: a link made
    /// later can change where an earlier one leads (`x -> a/b/..` before `a/b -> ..`).
    fn check_links(&self) -> Result<(), ArtifactError> {
        for path in &self.links {
            if let Some(Node::Symlink { target, raw }) = self.tree.get(path)
                && let Err(why) = self.resolve(path, target)
            {
                return Err(unsafe_entry(
                    raw,
                    format!("symlink to '{}' {why} through other links of the archive", display_name(target)),
                ));
            }
        }
        Ok(())
    }

    /// Whether `path` is a real folder on disk (not a link to one).
    fn is_real_dir(path: &Path) -> bool {
        fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_dir())
    }

    /// Makes every folder above `rel` a real folder of this archive, creating missing ones; a
    /// file or a symlink on the way is refused, so nothing is ever written through a link.
    ///
    /// Folders made this way count as entries (a zip need not list its folders, and a million
    /// of them is a bomb too). The search goes up from the parent only to the nearest known
    /// folder: every ancestor of a known folder is a known folder, since a folder never becomes
    /// anything else. So the cost per entry is one lookup plus the folders it creates.
    fn ensure_parents(&mut self, rel: &Path, raw: &[u8]) -> Result<(), ArtifactError> {
        let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) else { return Ok(()) };
        let mut missing = Vec::new();
        for ancestor in parent.ancestors().filter(|a| !a.as_os_str().is_empty()) {
            match self.tree.get(ancestor) {
                Some(Node::Dir) => break,
                Some(Node::File) => {
                    return Err(unsafe_entry(raw, format!("its folder '{}' is a file", ancestor.display())));
                }
                Some(Node::Symlink { .. }) => {
                    return Err(unsafe_entry(
                        raw,
                        format!(
                            "its path goes through the symlink '{}' (writing through links is refused)",
                            ancestor.display()
                        ),
                    ));
                }
                None => missing.push(ancestor),
            }
        }
        for folder in missing.into_iter().rev() {
            self.count_entry()?;
            self.stats.dirs += 1;
            self.tree.insert(folder.to_path_buf(), Node::Dir);
            if let Some(dest) = self.dest {
                match fs::create_dir(dest.join(folder)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(write_error(raw, &e)),
                }
            }
        }
        // Defence in depth: whatever the model says, the folder we are about to write into is a
        // real folder, reached through real folders (the kernel checks the rest of the way as
        // `lstat` does not follow the last component and every earlier one was checked when its
        // own entries were written).
        if let Some(dest) = self.dest
            && !Self::is_real_dir(&dest.join(parent))
        {
            return Err(unsafe_entry(raw, format!("its folder '{}' is not a real folder", parent.display())));
        }
        Ok(())
    }

    /// Makes room for a file (or hard link) at `rel`: a later file replaces an earlier one (tar
    /// semantics), but never a folder or a symlink, which a naive extractor would write through.
    fn claim_file(&mut self, rel: &Path, raw: &[u8]) -> Result<Option<PathBuf>, ArtifactError> {
        self.ensure_parents(rel, raw)?;
        match self.tree.get(rel) {
            None => {}
            Some(Node::Dir) => return Err(unsafe_entry(raw, "a file over a folder of the archive")),
            Some(Node::Symlink { .. }) => {
                return Err(unsafe_entry(
                    raw,
                    "a file over a symlink of the archive (it would be written through the link)",
                ));
            }
            Some(Node::File) => {
                if let Some(dest) = self.dest {
                    fs::remove_file(dest.join(rel)).map_err(|e| write_error(raw, &e))?;
                }
            }
        }
        self.tree.insert(rel.to_path_buf(), Node::File);
        Ok(self.dest.map(|dest| dest.join(rel)))
    }

    /// Copies entry data into a new file (or nowhere when inspecting), within the size budget.
    fn write_file(&mut self, mut data: impl Read, rel: &Path, raw: &[u8], mode: u32) -> Result<(), ArtifactError> {
        self.count_entry()?;
        let path = self.claim_file(rel, raw)?;
        let budget = self.limits.max_bytes.saturating_sub(self.stats.bytes);
        let mut buf = std::mem::take(&mut self.buf);
        let result = match &path {
            None => pump(&mut data, None, budget, &mut buf),
            Some(path) => {
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| write_error(raw, &e))?;
                let copied = pump(&mut data, Some(&mut out), budget, &mut buf);
                out.set_permissions(fs::Permissions::from_mode((mode & 0o777) | 0o600))
                    .map_err(|e| write_error(raw, &e))?;
                copied
            }
        };
        self.buf = buf;
        let written = match result {
            Ok(n) => n,
            Err(PumpError::Read(e)) => return Err(self.stream_error(&e)),
            Err(PumpError::Write(e)) => return Err(write_error(raw, &e)),
        };
        if written > budget {
            return Err(ArtifactError::UnpackedTooLarge { limit: self.limits.max_bytes });
        }
        self.stats.bytes += written;
        self.stats.files += 1;
        Ok(())
    }

    /// A folder entry; `None` is the archive root (`./`), which exists already. Counted in the
    /// stats once, however often the archive lists it.
    fn make_dir(&mut self, rel: Option<&Path>, raw: &[u8]) -> Result<(), ArtifactError> {
        self.count_entry()?;
        let Some(rel) = rel else { return Ok(()) };
        self.ensure_parents(rel, raw)?;
        match self.tree.get(rel) {
            Some(Node::Dir) => return Ok(()),
            Some(_) => return Err(unsafe_entry(raw, "a folder over an existing file or link")),
            None => {}
        }
        self.tree.insert(rel.to_path_buf(), Node::Dir);
        self.stats.dirs += 1;
        if let Some(dest) = self.dest {
            fs::create_dir(dest.join(rel)).map_err(|e| write_error(raw, &e))?;
        }
        Ok(())
    }

    fn make_symlink(&mut self, rel: &Path, raw: &[u8], target: &[u8]) -> Result<(), ArtifactError> {
        self.count_entry()?;
        let shown = display_name(target);
        if target.is_empty() {
            return Err(unsafe_entry(raw, "symlink with an empty target"));
        }
        if target.len() > MAX_LINK_TARGET {
            return Err(unsafe_entry(raw, format!("symlink target longer than {MAX_LINK_TARGET} bytes")));
        }
        if target.contains(&0) {
            return Err(unsafe_entry(raw, "NUL byte in symlink target"));
        }
        if target.first() == Some(&b'/') {
            return Err(unsafe_entry(raw, format!("symlink to the absolute path '{shown}'")));
        }
        self.ensure_parents(rel, raw)?;
        if self.tree.contains_key(rel) {
            return Err(unsafe_entry(raw, "symlink over an existing entry"));
        }
        if let Err(why) = self.resolve(rel, target) {
            return Err(unsafe_entry(raw, format!("symlink to '{shown}' {why}")));
        }
        self.tree.insert(rel.to_path_buf(), Node::Symlink { target: target.to_vec(), raw: raw.to_vec() });
        self.links.push(rel.to_path_buf());
        self.stats.links += 1;
        if let Some(dest) = self.dest {
            std::os::unix::fs::symlink(OsStr::from_bytes(target), dest.join(rel)).map_err(|e| write_error(raw, &e))?;
        }
        Ok(())
    }

    fn make_hardlink(&mut self, rel: &Path, raw: &[u8], target: &[u8]) -> Result<(), ArtifactError> {
        self.count_entry()?;
        let shown = display_name(target);
        let Ok(Some(target_rel)) = safe_relative(target) else {
            return Err(unsafe_entry(raw, format!("hard link to '{shown}' points outside the release folder")));
        };
        if self.tree.get(&target_rel) != Some(&Node::File) {
            return Err(unsafe_entry(raw, format!("hard link to '{shown}', which is not a file of this archive")));
        }
        if target_rel == rel {
            return Err(unsafe_entry(raw, "hard link to itself"));
        }
        let path = self.claim_file(rel, raw)?;
        self.stats.links += 1;
        if let (Some(dest), Some(path)) = (self.dest, path) {
            let source = dest.join(&target_rel);
            let real_file = fs::symlink_metadata(&source).is_ok_and(|m| m.file_type().is_file());
            let real_parents = target_rel.parent().is_none_or(|p| {
                p.ancestors().filter(|a| !a.as_os_str().is_empty()).all(|a| Self::is_real_dir(&dest.join(a)))
            });
            if !real_file || !real_parents {
                return Err(unsafe_entry(raw, format!("hard link to '{shown}', which is not a real file on disk")));
            }
            fs::hard_link(&source, &path).map_err(|e| write_error(raw, &e))?;
        }
        Ok(())
    }

    fn tar(&mut self, reader: impl Read) -> Result<(), ArtifactError> {
        const HEADERS: &str = "tar headers of one entry (long names, pax records) exceed 256 KiB";
        let meter = Rc::clone(&self.meter);
        let mut archive = tar::Archive::new(Metered { inner: reader, meter: Rc::clone(&meter) });
        let mut entries = archive.entries().map_err(|e| corrupt(&e))?;
        // Stream offset where the data of the last entry (padded to a block) ends.
        let mut data_end = 0u64;
        let mut seen = false;
        loop {
            meter.allow_until(data_end.saturating_add(MAX_ENTRY_HEADERS), HEADERS);
            let Some(entry) = entries.next() else { break };
            let entry = entry.map_err(|e| self.stream_error(&e))?;
            seen = true;
            let kind = entry.header().entry_type();
            // What the entry occupies in the stream; a GNU sparse entry reports its expanded
            // size, but occupies its header's.
            let stored = if kind == tar::EntryType::GNUSparse {
                entry.header().entry_size().map_err(|e| corrupt(&e))?
            } else {
                entry.size()
            };
            data_end = meter.read.get().saturating_add(stored.div_ceil(BLOCK).saturating_mul(BLOCK));
            meter.allow_until(data_end, "tar entry data longer than its header says");
            if matches!(kind, tar::EntryType::XGlobalHeader | tar::EntryType::XHeader) {
                // Metadata for the reader (`git archive` puts the commit in one); never written,
                // so its name does not matter (GNU tar names them with an absolute path).
                self.count_entry()?;
                self.charge(stored)?;
                continue;
            }
            let raw = entry.path_bytes().into_owned();
            let rel = safe_relative(&raw).map_err(|reason| unsafe_entry(&raw, reason))?;
            match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                    let rel = rel.ok_or_else(|| unsafe_entry(&raw, "a file with no name"))?;
                    let mode = entry.header().mode().unwrap_or(0o644);
                    self.write_file(entry, &rel, &raw, mode)?;
                }
                tar::EntryType::Directory => {
                    self.charge(stored)?;
                    self.make_dir(rel.as_deref(), &raw)?;
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    self.charge(stored)?;
                    let rel = rel.ok_or_else(|| unsafe_entry(&raw, "a link with no name"))?;
                    let target = entry.link_name_bytes().map(std::borrow::Cow::into_owned).unwrap_or_default();
                    if kind == tar::EntryType::Symlink {
                        self.make_symlink(&rel, &raw, &target)?;
                    } else {
                        self.make_hardlink(&rel, &raw, &target)?;
                    }
                }
                other => {
                    return Err(unsafe_entry(&raw, format!("entry type {other:?} (devices, FIFOs) is not allowed")));
                }
            }
        }
        let read = meter.read.get();
        if !seen && read == 0 {
            return Err(ArtifactError::Empty("the archive holds no data".into()));
        }
        // The `tar` crate takes the end of the stream for the end of the archive; a tar cut at a
        // block boundary would pass as complete without this check of the end marker.
        if read < data_end.saturating_add(BLOCK) {
            return Err(ArtifactError::Corrupt("the tar ends without its end-of-archive marker (truncated)".into()));
        }
        // Read to the end so that a truncated or corrupt compressed stream (bad CRC, missing
        // trailer) is noticed even though the tar end marker came first; bounded.
        meter
            .allow_until(read.saturating_add(MAX_TRAILING), "more than 1 MiB of data after the end of the tar archive");
        let mut rest = archive.into_inner();
        let mut buf = std::mem::take(&mut self.buf);
        let drained = pump(&mut rest, None, u64::MAX - 1, &mut buf);
        self.buf = buf;
        match drained {
            Ok(_) => Ok(()),
            Err(PumpError::Read(e) | PumpError::Write(e)) => Err(self.stream_error(&e)),
        }
    }

    fn zip(&mut self, file: File) -> Result<(), ArtifactError> {
        let mut archive = zip::ZipArchive::new(io::BufReader::new(file))
            .map_err(|e| ArtifactError::Corrupt(format!("not a readable zip: {e}")))?;
        if archive.len() as u64 > self.limits.max_entries {
            return Err(ArtifactError::TooManyEntries { limit: self.limits.max_entries });
        }
        if archive.is_empty() {
            return Err(ArtifactError::Empty("the zip holds no entries".into()));
        }
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i).map_err(|e| ArtifactError::Corrupt(e.to_string()))?;
            let raw = entry.name_raw().to_vec();
            let rel = safe_relative(&raw).map_err(|reason| unsafe_entry(&raw, reason))?;
            let mode = entry.unix_mode().unwrap_or(0o644);
            let file_type = mode & 0o170_000;
            if entry.is_dir() {
                self.make_dir(rel.as_deref(), &raw)?;
            } else if entry.is_symlink() {
                let rel = rel.ok_or_else(|| unsafe_entry(&raw, "a link with no name"))?;
                let mut target = Vec::new();
                (&mut entry).take(MAX_LINK_TARGET as u64 + 1).read_to_end(&mut target).map_err(|e| corrupt(&e))?;
                self.make_symlink(&rel, &raw, &target)?;
            } else if file_type == 0 || file_type == 0o100_000 {
                let rel = rel.ok_or_else(|| unsafe_entry(&raw, "a file with no name"))?;
                self.write_file(&mut entry, &rel, &raw, mode)?;
            } else {
                return Err(unsafe_entry(&raw, "special file (device, FIFO) is not allowed"));
            }
        }
        Ok(())
    }

    fn plain(&mut self, file: File, name: &str) -> Result<(), ArtifactError> {
        if !valid_artifact_name(name) {
            return Err(ArtifactError::BadName(name.chars().take(80).collect()));
        }
        self.write_file(file, Path::new(name), name.as_bytes(), 0o644)
    }
}

fn corrupt(e: &io::Error) -> ArtifactError {
    ArtifactError::Corrupt(e.to_string())
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
    fn links_resolve_through_the_archives_own_links() {
        let mut u = Unpacker::new(None, UnpackLimits { max_bytes: 1 << 20, max_entries: 100 });
        u.tree.insert(PathBuf::from("a"), Node::Dir);
        u.tree.insert(PathBuf::from("a/b"), Node::Symlink { target: b"..".to_vec(), raw: b"a/b".to_vec() });
        u.links.push(PathBuf::from("a/b"));
        // Lexically `a`, but `a/b` is the release root, so `a/b/..` is its parent.
        assert_eq!(u.resolve(Path::new("x"), b"a/b/..").map_err(|_| ()), Err(()));
        assert_eq!(u.resolve(Path::new("x"), b"a/b/a"), Ok(PathBuf::from("a")));
        u.tree.insert(PathBuf::from("l1"), Node::Symlink { target: b"l2".to_vec(), raw: b"l1".to_vec() });
        u.tree.insert(PathBuf::from("l2"), Node::Symlink { target: b"l1".to_vec(), raw: b"l2".to_vec() });
        assert!(u.resolve(Path::new("x"), b"l1").is_err_and(|why| why.contains("loop")));
    }

    #[test]
    fn the_meter_stops_reading_past_its_allowance() {
        let meter = Rc::new(Meter::default());
        meter.allow_until(10, "too much");
        let mut r = Metered { inner: &[7u8; 20][..], meter: Rc::clone(&meter) };
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).expect_err("must trip");
        assert_eq!((out.len(), err.to_string().as_str(), meter.tripped.get()), (10, "too much", Some("too much")));
        // Exactly at the allowance and at the end of the stream is fine.
        let meter = Rc::new(Meter::default());
        meter.allow_until(20, "too much");
        let mut r = Metered { inner: &[7u8; 20][..], meter: Rc::clone(&meter) };
        assert_eq!(r.read_to_end(&mut Vec::new()).ok(), Some(20));
    }

    #[test]
    fn names_of_plain_artifacts() {
        assert!(valid_artifact_name("site-1.2.tar.gz"));
        for bad in ["", ".hidden", "a/b", "..", "x\u{1b}", "a\\b"] {
            assert!(!valid_artifact_name(bad), "{bad:?}");
        }
    }
}
