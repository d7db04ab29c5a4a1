//! Feeds arbitrary archives to template extraction (`extract`), which unpacks
//! what users upload. Nothing may panic, and whatever it accepts must stay
//! inside the destination: nothing appears beside it, and every symlink it
//! made resolves (following other links, as the kernel would) inside it.
//!
//! The target compiles `coordinator/src/provisioner/terraform/tar.rs` itself rather
//! than depending on the `coordinator` crate: that file needs only `tar` and
//! `flate2`, while the crate would pull Postgres, HTTP and terraform support
//! through the instrumented build and multiply its time.
#![no_main]

use std::ffi::OsString;
use std::fs;
use std::path::{Component, Path, PathBuf};

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/provisioner/terraform/tar.rs"]
mod template_tar;

use template_tar::{extract, ExtractError, ExtractLimits};

enum Step {
    Root,
    Up,
    Down(OsString),
}

fn steps(path: &Path) -> impl DoubleEndedIterator<Item = Step> + '_ {
    path.components().filter_map(|c| match c {
        Component::RootDir => Some(Step::Root),
        Component::ParentDir => Some(Step::Up),
        Component::Normal(p) => Some(Step::Down(p.to_owned())),
        Component::CurDir | Component::Prefix(_) => None,
    })
}

/// Where absolute `path` really leads: resolved one component at a time,
/// following symlinks as the kernel does; `None` for a link loop.
fn resolve(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::from("/");
    let mut todo: Vec<Step> = steps(path).rev().collect();
    let mut links = 0;
    while let Some(step) = todo.pop() {
        match step {
            Step::Root => out = PathBuf::from("/"),
            Step::Up => {
                out.pop();
            }
            Step::Down(part) => {
                out.push(part);
                if let Ok(target) = fs::read_link(&out) {
                    links += 1;
                    if links > 40 {
                        return None;
                    }
                    out.pop();
                    todo.extend(steps(&target).rev());
                }
            }
        }
    }
    Some(out)
}

/// Every symlink under `dir`.
fn symlinks(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_symlink() => found.push(path),
            Ok(t) if t.is_dir() => symlinks(&path, found),
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(root) = tempfile::tempdir() else { return };
    let Ok(root_path) = root.path().canonicalize() else { return };
    let dest = root_path.join("dest");
    // Small limits, so that size checks are reachable and runs stay fast.
    let limits = ExtractLimits::new(64 * 1024, 256 * 1024, 64);
    let result = extract(data, &dest, &limits);
    // An archive the first pass rejects writes nothing at all (conflicts
    // and write errors only show in the second).
    if let Err(e) = &result {
        let second_pass = matches!(
            e,
            ExtractError::Conflict { .. } | ExtractError::Write { .. } | ExtractError::Malformed(_)
        );
        assert!(second_pass || !dest.exists(), "rejected ({e}) but left {dest:?} behind");
    }
    let beside: Vec<_> = fs::read_dir(&root_path)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(beside.iter().all(|n| n == "dest"), "extraction wrote beside dest: {beside:?}");
    let mut links = Vec::new();
    symlinks(&dest, &mut links);
    for link in links {
        if let Some(real) = resolve(&link) {
            assert!(real.starts_with(&dest), "{link:?} leads to {real:?}, outside {dest:?}");
        }
    }
});
