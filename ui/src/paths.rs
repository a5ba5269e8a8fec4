//! The artifact path of the form: is it a usable file, and what could `Tab` complete it to.
//! Reads the disk, so it runs in the loop (as an effect), never in `update`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::state::{PathCheck, PathStatus};

/// Most folder entries looked at for completion (a huge folder stays fast).
const SCAN: usize = 5000;
/// Most candidates kept.
const KEEP: usize = 50;

/// `~` and `~/…` become the home folder; relative paths are taken from `cwd`.
pub fn expand(input: &str, cwd: &Path, home: Option<&Path>) -> PathBuf {
    let trimmed = input.trim();
    let p = match (trimmed.strip_prefix('~'), home) {
        (Some(""), Some(h)) => h.to_path_buf(),
        (Some(rest), Some(h)) if rest.starts_with('/') => h.join(rest.trim_start_matches('/')),
        _ => PathBuf::from(trimmed),
    };
    if p.is_absolute() { p } else { cwd.join(p) }
}

/// The home folder, from `$HOME`.
pub fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

fn status(path: &Path) -> PathStatus {
    match fs::metadata(path) {
        Ok(m) if m.is_file() => PathStatus::File(m.len()),
        Ok(m) if m.is_dir() => PathStatus::Directory,
        Ok(_) => PathStatus::Unusable("not a regular file".into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => PathStatus::Missing,
        Err(e) => PathStatus::Unusable(e.to_string()),
    }
}

fn common_prefix(items: &[String]) -> String {
    let Some(first) = items.first() else { return String::new() };
    let mut len = first.len();
    for s in &items[1..] {
        let common = first
            .char_indices()
            .zip(s.chars())
            .take_while(|((_, a), b)| a == b)
            .last()
            .map_or(0, |((i, c), _)| i + c.len_utf8());
        len = len.min(common);
    }
    first[..len].to_owned()
}

/// Checks `input` and lists completions.
pub fn check(input: &str, cwd: &Path, home: Option<&Path>) -> PathCheck {
    let mut out = PathCheck { input: input.to_owned(), ..PathCheck::default() };
    if input.trim().is_empty() {
        return out;
    }
    let path = expand(input, cwd, home);
    out.status = status(&path);
    let typed_dir = input.ends_with('/');
    if out.status == PathStatus::Directory && !typed_dir {
        out.completion = Some("/".to_owned());
        return out;
    }
    if matches!(out.status, PathStatus::File(_)) {
        return out;
    }
    let (dir, prefix) = if typed_dir {
        (path.clone(), String::new())
    } else {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        (path.parent().map_or_else(|| cwd.to_path_buf(), Path::to_path_buf), name)
    };
    let Ok(entries) = fs::read_dir(&dir) else { return out };
    let mut names: Vec<String> = entries
        .take(SCAN)
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            if !name.starts_with(&prefix) || (name.starts_with('.') && !prefix.starts_with('.')) {
                return None;
            }
            let is_dir = e.file_type().ok().is_some_and(|t| t.is_dir())
                || (e.file_type().ok().is_some_and(|t| t.is_symlink()) && e.path().is_dir());
            Some(if is_dir { format!("{name}/") } else { name })
        })
        .collect();
    names.sort();
    names.truncate(KEEP);
    let common = common_prefix(&names);
    out.completion = common.strip_prefix(&prefix).map(str::to_owned).filter(|c| !c.is_empty());
    out.candidates = names;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_files_and_folders_and_reports_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir(root.join("builds")).expect("mkdir");
        fs::write(root.join("builds/site-1.4.2.tar.gz"), b"x").expect("write");
        fs::write(root.join("builds/site-1.4.3.tar.gz"), b"xy").expect("write");
        fs::write(root.join("builds/.hidden"), b"").expect("write");

        let c = check("bui", root, None);
        assert_eq!(c.status, PathStatus::Missing);
        assert_eq!(c.completion.as_deref(), Some("lds/"));
        let c = check("builds", root, None);
        assert_eq!(c.status, PathStatus::Directory);
        assert_eq!(c.completion.as_deref(), Some("/"));
        let c = check("builds/", root, None);
        assert_eq!(c.candidates, vec!["site-1.4.2.tar.gz".to_owned(), "site-1.4.3.tar.gz".to_owned()]);
        assert_eq!(c.completion.as_deref(), Some("site-1.4."));
        let c = check("builds/site-1.4.3.tar.gz", root, None);
        assert_eq!(c.status, PathStatus::File(2));
        let c = check("~/builds/site-1.4.2.tar.gz", Path::new("/nonexistent"), Some(root));
        assert_eq!(c.status, PathStatus::File(1));
        assert_eq!(check("nothing-here", root, None).completion, None);
    }
}
