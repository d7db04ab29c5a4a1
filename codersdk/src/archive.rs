//! Template archives as `coder templates push` uploads them: [`pack_dir`] turns a
//! template directory into a deterministic tar, so the same tree always gives the
//! same bytes (uploads are content-addressed).
//!
//! What goes in:
//!
//! - directories and regular files, sorted by name, with zeroed owners and times and
//!   modes normalized to `0755` (executable by anyone) or `0644`;
//! - symlinks, as symlink entries, when their target stays inside the directory by
//!   the rule coderd's extractor enforces: relative, `..` only at its start, and no
//!   more of them than the link has parent directories. A link that points elsewhere
//!   (absolute, `../../etc/passwd`, `a/../..`) is an error naming it: the template
//!   would not work on the provisioner, and silently leaving it out would hide that;
//! - not `.terraform/`, `.git/` or `*.tfstate*` (terraform's working files and
//!   version control), nor sockets, fifos and devices, which are not template content.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

/// Why [`pack_dir`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot add {} to the archive", path.display())]
    Append {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{}: symlink to {} points outside the template directory; \
         replace it with the file it points to, or a relative link within the directory",
        path.display(),
        target.display()
    )]
    LinkOutside { path: PathBuf, target: PathBuf },
}

/// Packs `dir` into a tar for upload (see the module docs for what goes in).
pub fn pack_dir(dir: &Path) -> Result<Vec<u8>, PackError> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    pack_into(&mut builder, dir, Path::new(""))?;
    builder.into_inner().map_err(|source| PackError::Append { path: dir.to_owned(), source })
}

/// Whether `pack_dir` leaves out `name`: terraform's working files and VCS metadata.
fn skipped(name: &str, is_dir: bool) -> bool {
    if is_dir {
        name == ".terraform" || name == ".git"
    } else {
        name.contains(".tfstate")
    }
}

/// Whether the symlink at `link` (relative to the template root) with target `target`
/// resolves inside the root without passing through another name first: relative,
/// its `..` components all leading, and at most as many as `link` has parents.
///
/// A `..` after a name is refused even when it would resolve inside lexically: the
/// kernel resolves it physically, so through a link that name could lead anywhere.
pub fn link_stays_inside(link: &Path, target: &Path) -> bool {
    let parents = link.components().count().saturating_sub(1);
    let mut parts = target.components().filter(|c| *c != Component::CurDir).peekable();
    let mut climbed = 0;
    while parts.next_if_eq(&Component::ParentDir).is_some() {
        climbed += 1;
    }
    climbed <= parents && parts.all(|c| matches!(c, Component::Normal(_)))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn pack_into(
    builder: &mut tar::Builder<Vec<u8>>,
    root: &Path,
    rel: &Path,
) -> Result<(), PackError> {
    let dir = root.join(rel);
    let read_err = |path: &Path| {
        let path = path.to_owned();
        move |source| PackError::Read { path, source }
    };
    let mut children = fs::read_dir(&dir)
        .map_err(read_err(&dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err(&dir))?;
    children.sort();
    for name in children {
        let path = dir.join(&name);
        let rel_path = rel.join(&name);
        let meta = fs::symlink_metadata(&path).map_err(read_err(&path))?;
        if skipped(&name.to_string_lossy(), meta.is_dir()) {
            continue;
        }
        let append_err = |source| PackError::Append { path: path.clone(), source };
        if meta.is_dir() {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            builder.append_data(&mut h, &rel_path, io::empty()).map_err(append_err)?;
            pack_into(builder, root, &rel_path)?;
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(read_err(&path))?;
            if !link_stays_inside(&rel_path, &target) {
                return Err(PackError::LinkOutside { path, target });
            }
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            builder.append_link(&mut h, &rel_path, &target).map_err(append_err)?;
        } else if meta.is_file() {
            let mode = if meta.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 };
            let file = fs::File::open(&path).map_err(read_err(&path))?;
            let mut h = header(tar::EntryType::Regular, mode, meta.len());
            builder.append_data(&mut h, &rel_path, file).map_err(append_err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::symlink;

    use super::*;

    /// `(path, kind, link target)` of each entry.
    fn entries(archive: &[u8]) -> Vec<(String, tar::EntryType, Option<String>)> {
        let mut a = tar::Archive::new(archive);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let target = e.link_name().unwrap().map(|t| t.to_string_lossy().into_owned());
                (e.path().unwrap().to_string_lossy().into_owned(), e.header().entry_type(), target)
            })
            .collect()
    }

    #[test]
    fn pack_is_deterministic_and_leaves_out_working_files() {
        let src = tempfile::tempdir().unwrap();
        let p = src.path();
        fs::write(p.join("main.tf"), "# hi\n").unwrap();
        fs::create_dir_all(p.join("sub/.terraform")).unwrap();
        fs::create_dir_all(p.join(".git")).unwrap();
        fs::write(p.join(".git/HEAD"), "x").unwrap();
        fs::write(p.join("sub/.terraform/junk"), "x").unwrap();
        fs::write(p.join("terraform.tfstate"), "{}").unwrap();
        fs::write(p.join("sub/run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(p.join("sub/run.sh"), fs::Permissions::from_mode(0o700)).unwrap();

        let a = pack_dir(p).unwrap();
        assert_eq!(a, pack_dir(p).unwrap());
        let names: Vec<_> = entries(&a).into_iter().map(|e| e.0).collect();
        assert_eq!(names, ["main.tf", "sub", "sub/run.sh"]);
        let mut archive = tar::Archive::new(a.as_slice());
        for e in archive.entries().unwrap() {
            let h = e.unwrap().header().clone();
            assert_eq!((h.mtime().unwrap(), h.uid().unwrap(), h.gid().unwrap()), (0, 0, 0));
            assert!([0o755, 0o644].contains(&h.mode().unwrap()), "{:o}", h.mode().unwrap());
        }
    }

    #[test]
    fn links_within_the_directory_are_stored_as_links() {
        let src = tempfile::tempdir().unwrap();
        let p = src.path();
        fs::create_dir_all(p.join("modules/vm")).unwrap();
        fs::write(p.join("modules/vm/main.tf"), "").unwrap();
        fs::write(p.join("shared.tf"), "").unwrap();
        symlink("../../shared.tf", p.join("modules/vm/shared.tf.link")).unwrap();
        symlink("modules/vm", p.join("vm")).unwrap();
        symlink("./missing", p.join("dangling")).unwrap();
        let got = entries(&pack_dir(p).unwrap());
        let links: Vec<_> = got
            .iter()
            .filter(|e| e.1 == tar::EntryType::Symlink)
            .map(|e| (e.0.as_str(), e.2.as_deref().unwrap()))
            .collect();
        assert_eq!(
            links,
            [
                ("dangling", "./missing"),
                ("modules/vm/shared.tf.link", "../../shared.tf"),
                ("vm", "modules/vm")
            ]
        );
    }

    #[test]
    fn links_out_of_the_directory_are_refused_by_name() {
        for (link, target) in [
            ("passwd", "../../etc/passwd"),
            ("sub/passwd", "../../etc/passwd"),
            ("abs", "/etc/passwd"),
            ("sub/climb", "x/../../.."),
        ] {
            let src = tempfile::tempdir().unwrap();
            let p = src.path();
            fs::create_dir(p.join("sub")).unwrap();
            fs::write(p.join("main.tf"), "").unwrap();
            symlink(target, p.join(link)).unwrap();
            let err = pack_dir(p).unwrap_err();
            assert!(matches!(&err, PackError::LinkOutside { .. }), "{link}: {err:?}");
            let msg = err.to_string();
            assert!(msg.contains(link) && msg.contains(target), "{msg}");
        }
    }

    #[test]
    fn the_link_rule() {
        assert!(link_stays_inside(Path::new("a/b"), Path::new("../c")));
        assert!(link_stays_inside(Path::new("a/b"), Path::new("./../c/d")));
        assert!(link_stays_inside(Path::new("a"), Path::new("b")));
        assert!(!link_stays_inside(Path::new("a"), Path::new("./b/../c")));
        assert!(!link_stays_inside(Path::new("a"), Path::new("../c")));
        assert!(!link_stays_inside(Path::new("a/b"), Path::new("../../c")));
        assert!(!link_stays_inside(Path::new("a"), Path::new("/etc/passwd")));
    }
}
