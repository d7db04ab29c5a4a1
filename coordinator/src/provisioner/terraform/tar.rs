//! Template archives: [`extract`] unpacks an uploaded tar (plain or gzip) into a job
//! directory. (`coder templates push` builds them with `codersdk::archive::pack_dir`,
//! which refuses the links this refuses.)
//!
//! Archives come from users, so extraction works in two passes over the in-memory bytes.
//! The first pass reads every header and checks it against the rules below without
//! touching the disk; only an archive that passes them all is unpacked in the second.
//! A rejected archive therefore writes nothing at all, and an accepted one writes only
//! under `dest`:
//!
//! - paths are relative and have no `..` component;
//! - symlink targets are relative, climb (`..`) only at their start, and stay inside
//!   `dest` from the link's directory, even through other links of the archive; hard
//!   links name an earlier regular file of the archive;
//! - only regular files, directories and links; no devices, fifos or sparse files;
//! - [`ExtractLimits`] bound each file, the total and the number of entries, and the
//!   decompressed stream itself is capped, so a gzip bomb stops early;
//! - nothing is ever written through a symlink (each parent is checked with
//!   `symlink_metadata`), so links planted by the archive cannot redirect later entries.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;

/// Bounds on what [`extract`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExtractLimits {
    /// Largest single file, in bytes.
    pub max_file_bytes: u64,
    /// Largest sum of all file sizes, in bytes.
    pub max_total_bytes: u64,
    /// Most entries (files, directories, links).
    pub max_entries: usize,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        Self { max_file_bytes: 10 << 20, max_total_bytes: 50 << 20, max_entries: 10_000 }
    }
}

impl ExtractLimits {
    /// Limits with the given values.
    pub fn new(max_file_bytes: u64, max_total_bytes: u64, max_entries: usize) -> Self {
        Self { max_file_bytes, max_total_bytes, max_entries }
    }
}

/// What [`extract`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExtractSummary {
    pub files: usize,
    pub dirs: usize,
    pub links: usize,
    /// Sum of the sizes of the regular files.
    pub bytes: u64,
}

/// Why an archive was rejected or could not be unpacked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    #[error("the archive is not a valid tar file: {0}")]
    Malformed(#[source] io::Error),
    #[error("{path:?}: absolute paths are not allowed in the archive")]
    AbsolutePath { path: PathBuf },
    #[error("{path:?}: `..` components are not allowed in the archive")]
    ParentComponent { path: PathBuf },
    #[error("{path:?}: link target {target:?} points outside the template directory")]
    LinkEscapes { path: PathBuf, target: PathBuf },
    #[error("{path:?}: hard link target {target:?} is not an earlier file of the archive")]
    DanglingHardLink { path: PathBuf, target: PathBuf },
    #[error("{path:?}: {kind} entries are not allowed in the archive")]
    UnsupportedEntry { path: PathBuf, kind: &'static str },
    #[error("{path:?}: {size} bytes is over the {limit}-byte limit for a file")]
    FileTooLarge { path: PathBuf, size: u64, limit: u64 },
    #[error("the archive holds more than the {limit}-byte limit")]
    TotalTooLarge { limit: u64 },
    #[error("the archive has more than {limit} entries")]
    TooManyEntries { limit: usize },
    #[error("{path:?} conflicts with an earlier entry")]
    Conflict { path: PathBuf },
    #[error("cannot write {path:?}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One checked entry of the first pass.
#[derive(Debug)]
enum Planned {
    Dir(PathBuf),
    File { path: PathBuf, executable: bool },
    Symlink { path: PathBuf, target: PathBuf },
    HardLink { path: PathBuf, target: PathBuf },
}

/// A reader that fails once more than `remaining` bytes were read: the decompressed
/// size of the archive is bounded no matter what the headers claim.
struct Capped<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, "decompressed size cap"));
        }
        let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn is_gzip(archive: &[u8]) -> bool {
    archive.starts_with(&[0x1f, 0x8b])
}

/// A tar reader over `archive`, decompressing gzip, capped at `cap` bytes.
fn open(archive: &[u8], cap: u64) -> tar::Archive<Capped<Box<dyn Read + '_>>> {
    let inner: Box<dyn Read + '_> =
        if is_gzip(archive) { Box::new(GzDecoder::new(archive)) } else { Box::new(archive) };
    tar::Archive::new(Capped { inner, remaining: cap })
}

/// Headers, padding and extension entries on top of the file data.
fn stream_cap(limits: &ExtractLimits) -> u64 {
    let per_entry = 16 * 1024u64;
    limits
        .max_total_bytes
        .saturating_add(per_entry.saturating_mul(limits.max_entries as u64 + 2))
        .saturating_add(1 << 20)
}

/// Maps a cap overrun to [`ExtractError::TotalTooLarge`], other errors to `Malformed`.
fn read_error(e: io::Error, limits: &ExtractLimits) -> ExtractError {
    if e.kind() == io::ErrorKind::FileTooLarge {
        ExtractError::TotalTooLarge { limit: limits.max_total_bytes }
    } else {
        ExtractError::Malformed(e)
    }
}

/// `path` as normal components only; rejects absolute paths and `..`.
fn clean_path(path: &Path) -> Result<PathBuf, ExtractError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(ExtractError::AbsolutePath { path: path.to_owned() })
            }
            Component::ParentDir => {
                return Err(ExtractError::ParentComponent { path: path.to_owned() })
            }
        }
    }
    Ok(out)
}

/// Whether symlink `target`, relative to the directory of `link` (both relative to
/// `dest`), stays inside `dest`: relative, its `..` components all leading and no
/// more of them than `link` has parents.
///
/// A `..` after a name is refused even when it resolves inside lexically, because
/// the kernel resolves it physically: if that name is itself a link of the archive
/// (`s -> ../..` leads to `dest`), `s/../..` would climb out of `dest`. With only
/// leading `..`s the climb stays within the link's real parent directories (nothing
/// is ever written through a link), and every name after them is a real entry or a
/// link that obeys the same rule.
fn symlink_stays_inside(link: &Path, target: &Path) -> bool {
    let mut depth = link.components().count().saturating_sub(1);
    let mut descended = false;
    for c in target.components() {
        match c {
            Component::Normal(_) => descended = true,
            Component::CurDir => {}
            Component::ParentDir if descended => return false,
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// First pass: every header checked, nothing written.
fn plan(archive: &[u8], limits: &ExtractLimits) -> Result<Vec<Planned>, ExtractError> {
    let mut tar = open(archive, stream_cap(limits));
    let entries = tar.entries().map_err(|e| read_error(e, limits))?;
    let mut planned = Vec::new();
    let mut files = HashSet::new();
    let mut total = 0u64;
    let mut seen = 0usize;
    for entry in entries {
        let entry = entry.map_err(|e| read_error(e, limits))?;
        let header = entry.header();
        let kind = header.entry_type();
        // Counted before anything is skipped, so that no kind of entry is free.
        seen += 1;
        if seen > limits.max_entries {
            return Err(ExtractError::TooManyEntries { limit: limits.max_entries });
        }
        if kind == tar::EntryType::XGlobalHeader {
            continue; // e.g. `git archive`'s commit comment
        }
        let raw = entry.path().map_err(ExtractError::Malformed)?.into_owned();
        let path = clean_path(&raw)?;
        if path.as_os_str().is_empty() {
            continue; // `./` itself
        }
        let link = || -> Result<PathBuf, ExtractError> {
            match entry.link_name().map_err(ExtractError::Malformed)? {
                Some(target) => Ok(target.into_owned()),
                None => Err(ExtractError::Malformed(io::Error::other("link without a target"))),
            }
        };
        match kind {
            tar::EntryType::Directory => planned.push(Planned::Dir(path)),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                if size > limits.max_file_bytes {
                    return Err(ExtractError::FileTooLarge {
                        path,
                        size,
                        limit: limits.max_file_bytes,
                    });
                }
                total = total.saturating_add(size);
                if total > limits.max_total_bytes {
                    return Err(ExtractError::TotalTooLarge { limit: limits.max_total_bytes });
                }
                let executable = header.mode().map(|m| m & 0o111 != 0).unwrap_or(false);
                files.insert(path.clone());
                planned.push(Planned::File { path, executable });
            }
            tar::EntryType::Symlink => {
                let target = link()?;
                if !symlink_stays_inside(&path, &target) {
                    return Err(ExtractError::LinkEscapes { path, target });
                }
                files.remove(&path);
                planned.push(Planned::Symlink { path, target });
            }
            tar::EntryType::Link => {
                let raw_target = link()?;
                let target = clean_path(&raw_target).map_err(|_| ExtractError::LinkEscapes {
                    path: path.clone(),
                    target: raw_target.clone(),
                })?;
                if !files.contains(&target) {
                    return Err(ExtractError::DanglingHardLink { path, target: raw_target });
                }
                files.insert(path.clone());
                planned.push(Planned::HardLink { path, target });
            }
            other => {
                let kind = match other {
                    tar::EntryType::Char => "character device",
                    tar::EntryType::Block => "block device",
                    tar::EntryType::Fifo => "fifo",
                    tar::EntryType::GNUSparse => "sparse file",
                    _ => "unknown",
                };
                return Err(ExtractError::UnsupportedEntry { path, kind });
            }
        }
    }
    Ok(planned)
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> ExtractError + '_ {
    move |source| ExtractError::Write { path: path.to_owned(), source }
}

/// Creates the directories of `rel` under `dest`, refusing to pass through a symlink
/// or a file; returns the full path.
fn make_dirs(dest: &Path, rel: &Path) -> Result<PathBuf, ExtractError> {
    let mut at = dest.to_owned();
    for part in rel.components() {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(ExtractError::Conflict { path: rel.to_owned() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&at).map_err(write_err(&at))?;
            }
            Err(e) => return Err(write_err(&at)(e)),
        }
    }
    Ok(at)
}

/// Prepares `rel` for a new non-directory entry: parents created (never through a
/// symlink), an earlier file or link at the same path removed.
fn make_parent(dest: &Path, rel: &Path) -> Result<PathBuf, ExtractError> {
    let parent = rel.parent().unwrap_or(Path::new(""));
    let full = make_dirs(dest, parent)?.join(rel.file_name().unwrap_or_default());
    match fs::symlink_metadata(&full) {
        Ok(m) if m.is_dir() => Err(ExtractError::Conflict { path: rel.to_owned() }),
        Ok(_) => fs::remove_file(&full).map_err(write_err(&full)).map(|()| full),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(full),
        Err(e) => Err(write_err(&full)(e)),
    }
}

/// Unpacks `archive` (tar, or gzip-compressed tar) into `dest`, which is created if
/// missing. See the module docs for what is rejected.
pub fn extract(
    archive: &[u8],
    dest: &Path,
    limits: &ExtractLimits,
) -> Result<ExtractSummary, ExtractError> {
    let planned = plan(archive, limits)?;
    fs::create_dir_all(dest).map_err(write_err(dest))?;
    let mut summary = ExtractSummary::default();
    // Second pass: the same entries, in the same order, now with their data.
    let mut tar = open(archive, stream_cap(limits));
    let mut entries = tar.entries().map_err(|e| read_error(e, limits))?;
    for item in &planned {
        match item {
            Planned::Dir(path) => {
                make_dirs(dest, path)?;
                summary.dirs += 1;
            }
            Planned::File { path, executable } => {
                let mut entry = next_data_entry(&mut entries, path, limits)?;
                let full = make_parent(dest, path)?;
                let mut file = fs::File::create(&full).map_err(write_err(&full))?;
                summary.bytes += io::copy(&mut entry, &mut file).map_err(write_err(&full))?;
                let mode = if *executable { 0o755 } else { 0o644 };
                fs::set_permissions(&full, fs::Permissions::from_mode(mode))
                    .map_err(write_err(&full))?;
                summary.files += 1;
            }
            Planned::Symlink { path, target } => {
                let full = make_parent(dest, path)?;
                std::os::unix::fs::symlink(target, &full).map_err(write_err(&full))?;
                summary.links += 1;
            }
            Planned::HardLink { path, target } => {
                let full = make_parent(dest, path)?;
                let original = dest.join(target);
                match fs::symlink_metadata(&original) {
                    Ok(m) if m.is_file() => {}
                    _ => return Err(ExtractError::Conflict { path: path.clone() }),
                }
                fs::hard_link(&original, &full).map_err(write_err(&full))?;
                summary.links += 1;
            }
        }
    }
    Ok(summary)
}

/// Advances the second pass to the regular file `path`, the next one with data.
fn next_data_entry<'a, R: Read>(
    entries: &mut tar::Entries<'a, R>,
    path: &Path,
    limits: &ExtractLimits,
) -> Result<tar::Entry<'a, R>, ExtractError> {
    for entry in entries.by_ref() {
        let entry = entry.map_err(|e| read_error(e, limits))?;
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous) {
            let same = entry.path().ok().and_then(|p| clean_path(&p).ok());
            if same.as_deref() == Some(path) {
                return Ok(entry);
            }
        }
    }
    Err(ExtractError::Malformed(io::Error::other("archive changed between passes")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use codersdk::archive::pack_dir;

    use super::*;

    #[test]
    fn lexical_symlink_check() {
        assert!(symlink_stays_inside(Path::new("a/b"), Path::new("../c")));
        assert!(symlink_stays_inside(Path::new("a/b"), Path::new("./../c/d")));
        assert!(!symlink_stays_inside(Path::new("a"), Path::new("./b/../c")));
        assert!(!symlink_stays_inside(Path::new("a"), Path::new("../c")));
        assert!(!symlink_stays_inside(Path::new("a/b"), Path::new("../../c")));
        assert!(!symlink_stays_inside(Path::new("a"), Path::new("/etc/passwd")));
    }

    /// A link whose target climbs back out of a directory it entered could
    /// escape through another link of the archive: `m/n/s -> ../..` leads to
    /// `dest`, so `m/n/l -> s/../..` would lead to `dest/..` (the lexical check
    /// alone let it through; the `tar_extract` fuzz target's invariant catches it).
    #[test]
    fn link_climbing_out_through_another_link_is_refused() {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, target) in [
            ("m/", tar::EntryType::Directory, None),
            ("m/n/", tar::EntryType::Directory, None),
            ("m/n/s", tar::EntryType::Symlink, Some("../..")),
            ("m/n/l", tar::EntryType::Symlink, Some("s/../..")),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_size(0);
            h.set_mode(0o755);
            if let Some(t) = target {
                h.set_link_name(t).unwrap();
            }
            b.append_data(&mut h, path, io::empty()).unwrap();
        }
        let archive = b.into_inner().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let err = extract(&archive, &tmp.path().join("dest"), &ExtractLimits::default());
        assert!(matches!(err, Err(ExtractError::LinkEscapes { .. })), "{err:?}");
        assert!(!tmp.path().join("dest").exists());
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path(Path::new("./a/./b")).unwrap(), PathBuf::from("a/b"));
        assert!(matches!(clean_path(Path::new("/a")), Err(ExtractError::AbsolutePath { .. })));
        assert!(matches!(
            clean_path(Path::new("a/../b")),
            Err(ExtractError::ParentComponent { .. })
        ));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let dest = tempfile::tempdir().unwrap();
        let limits = ExtractLimits::default();
        for bytes in [&b"\x1f\x8bgarbage"[..], &[0xffu8; 700][..], &[1u8; 3][..]] {
            assert!(extract(bytes, dest.path(), &limits).is_err());
        }
        // An empty tar (two zero blocks) is a valid, empty template.
        let summary = extract(&[0u8; 1024], dest.path(), &limits).unwrap();
        assert_eq!(summary, ExtractSummary::default());
    }

    /// What the CLI packs, the extractor unpacks as it was: files, modes, links.
    #[test]
    fn packed_templates_round_trip() {
        let src = tempfile::tempdir().unwrap();
        let p = src.path();
        fs::write(p.join("main.tf"), "# hi\n").unwrap();
        fs::create_dir_all(p.join("sub/.terraform")).unwrap();
        fs::write(p.join("sub/.terraform/junk"), "x").unwrap();
        fs::write(p.join("terraform.tfstate"), "{}").unwrap();
        fs::write(p.join("sub/run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(p.join("sub/run.sh"), fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink("run.sh", p.join("sub/link")).unwrap();
        std::os::unix::fs::symlink("../main.tf", p.join("sub/main.tf")).unwrap();

        let dest = tempfile::tempdir().unwrap();
        let archive = pack_dir(p).unwrap();
        let summary = extract(&archive, dest.path(), &ExtractLimits::default()).unwrap();
        assert_eq!((summary.files, summary.dirs, summary.links), (2, 1, 2));
        let d = dest.path();
        assert_eq!(fs::read_to_string(d.join("main.tf")).unwrap(), "# hi\n");
        assert_eq!(fs::read_link(d.join("sub/link")).unwrap(), PathBuf::from("run.sh"));
        assert_eq!(fs::read_to_string(d.join("sub/main.tf")).unwrap(), "# hi\n");
        let mode = fs::metadata(d.join("sub/run.sh")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(!d.join("terraform.tfstate").exists());
        assert!(!d.join("sub/.terraform").exists());
    }

    /// An archive built by hand (the packer refuses to make one) with a link to
    /// `../../etc/passwd`, or one that writes through a link: refused, nothing written.
    #[test]
    fn links_out_of_the_template_are_refused() {
        let link = |path: &str, target: &str| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_link_name(target).unwrap();
            (h, path.to_owned(), Vec::new())
        };
        let file = |path: &str| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(4);
            h.set_mode(0o644);
            (h, path.to_owned(), b"root".to_vec())
        };
        let cases = [
            (vec![link("passwd", "../../etc/passwd")], "escape"),
            (vec![link("sub/passwd", "../../etc/passwd")], "escape"),
            (vec![link("passwd", "/etc/passwd")], "escape"),
            // An inside link, then a file written through it.
            (vec![link("d", "."), file("d/x")], "conflict"),
        ];
        for (entries, want) in cases {
            let mut b = tar::Builder::new(Vec::new());
            for (mut h, path, data) in entries {
                b.append_data(&mut h, &path, data.as_slice()).unwrap();
            }
            let archive = b.into_inner().unwrap();
            let tmp = tempfile::tempdir().unwrap();
            let dest = tmp.path().join("dest");
            let err = extract(&archive, &dest, &ExtractLimits::default()).unwrap_err();
            let ok = match want {
                "escape" => matches!(err, ExtractError::LinkEscapes { .. }),
                _ => matches!(err, ExtractError::Conflict { .. }),
            };
            assert!(ok, "{want}: {err:?}");
            assert!(!dest.join("x").exists() && !dest.join("passwd").exists());
        }
    }

    /// The packer's link rule and this one agree, so the CLI never packs a link
    /// coderd would refuse, nor refuses one it would take.
    #[test]
    fn packer_and_extractor_agree_on_links() {
        let parts = ["a", "..", ".", "b"];
        let mut paths = vec![String::from("x")];
        for _ in 0..4 {
            let more: Vec<String> =
                paths.iter().flat_map(|p| parts.iter().map(move |q| format!("{p}/{q}"))).collect();
            paths.extend(more);
        }
        for link in ["l", "a/l", "a/b/l"] {
            for target in &paths {
                let target = Path::new(target.strip_prefix("x/").unwrap_or("."));
                assert_eq!(
                    symlink_stays_inside(Path::new(link), target),
                    codersdk::archive::link_stays_inside(Path::new(link), target),
                    "{link} -> {target:?}"
                );
            }
        }
    }

    /// Seeded mutations of a valid archive (with links and a directory): never a panic,
    /// and whatever is accepted lands inside `dest`.
    #[test]
    fn mutated_archives_never_escape() {
        use rand::{rngs::StdRng, Rng as _, SeedableRng as _};
        let src = tempfile::tempdir().unwrap();
        fs::create_dir(src.path().join("d")).unwrap();
        fs::write(src.path().join("d/f"), "data").unwrap();
        std::os::unix::fs::symlink("d/f", src.path().join("l")).unwrap();
        let valid = pack_dir(src.path()).unwrap();
        let mut archive = tar::Archive::new(valid.as_slice());
        let headers: Vec<usize> =
            archive.entries().unwrap().map(|e| e.unwrap().raw_header_position() as usize).collect();
        let mut rng = StdRng::seed_from_u64(7);
        let limits = ExtractLimits::new(1 << 16, 1 << 20, 64);
        let mut accepted = 0;
        for _ in 0..400 {
            let mut bytes = valid.clone();
            for _ in 0..rng.gen_range(1..4) {
                // Mostly names, link targets and types, so the result often parses.
                let header = headers[rng.gen_range(0..headers.len())];
                let field = [0..100, 156..157, 157..257][rng.gen_range(0..3)].clone();
                let i = header + rng.gen_range(field);
                bytes[i] = match rng.gen_range(0..5) {
                    0 => b'.',
                    1 => b'/',
                    2 => b'0' + rng.gen_range(0..8),
                    3 => 0,
                    _ => rng.gen(),
                };
            }
            for &h in &headers {
                let mut header = tar::Header::from_byte_slice(&bytes[h..h + 512]).clone();
                header.set_cksum();
                bytes[h..h + 512].copy_from_slice(header.as_bytes());
            }
            let tmp = tempfile::tempdir().unwrap();
            let parent = tmp.path().join("x/y");
            fs::create_dir_all(&parent).unwrap();
            accepted += usize::from(extract(&bytes, &parent.join("dest"), &limits).is_ok());
            for (dir, only) in [(tmp.path(), "x"), (&tmp.path().join("x"), "y"), (&parent, "dest")]
            {
                for e in fs::read_dir(dir).unwrap() {
                    assert_eq!(e.unwrap().file_name(), only, "wrote beside dest");
                }
            }
        }
        assert!(accepted > 20, "only {accepted} mutants accepted: the test tests little");
    }

    /// A tiny gzip that inflates to a huge extension header stops at the stream cap.
    #[test]
    fn gzip_bomb_stops_at_the_cap() {
        use std::io::Write as _;
        let size = 8u64 << 20;
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(size);
        h.set_path("pax").unwrap();
        h.set_cksum();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(h.as_bytes()).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(size >> 20) {
            gz.write_all(&zeros).unwrap();
        }
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 64 << 10);
        let dest = tempfile::tempdir().unwrap();
        let err = extract(&bomb, dest.path(), &ExtractLimits::new(100, 100, 2)).unwrap_err();
        assert!(matches!(err, ExtractError::TotalTooLarge { .. }), "{err:?}");
    }

    #[test]
    fn gzip_is_detected() {
        use std::io::Write as _;
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("main.tf"), "x").unwrap();
        let tar = pack_dir(src.path()).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let dest = tempfile::tempdir().unwrap();
        extract(&gz, dest.path(), &ExtractLimits::default()).unwrap();
        assert_eq!(fs::read_to_string(dest.path().join("main.tf")).unwrap(), "x");
    }
}
