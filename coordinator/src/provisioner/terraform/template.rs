//! What an uploaded template may carry into a job directory. Extraction
//! ([`super::tar::extract`]) keeps the files inside the directory; this keeps the
//! worker's own files out of the upload: terraform's working data, state, plans, and
//! our provider's pinned checksum.

use std::io;
use std::path::Path;

/// terraform's local state, in the template directory.
pub(crate) const STATE_FILE: &str = "terraform.tfstate";
/// The plan the worker saves and applies.
pub(crate) const PLAN_FILE: &str = "coder.tfplan";
const LOCK_FILE: &str = ".terraform.lock.hcl";

/// Removes from an extracted template what the worker owns: terraform's working
/// directory, state files and plan (state comes from the previous build, never from the
/// upload), and our provider's entry in the dependency lock file. That entry holds the
/// checksum of whichever provider binary the author's `terraform init` saw; the worker
/// installs its own build, and every coderd upgrade changes it, so keeping the entry
/// would fail `init` of every older template version.
pub fn sanitize_template(dir: &Path) -> io::Result<()> {
    let ignore_missing = |r: io::Result<()>| match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    let dot_terraform = dir.join(".terraform");
    match std::fs::symlink_metadata(&dot_terraform) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&dot_terraform)?,
        Ok(_) => std::fs::remove_file(&dot_terraform)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for name in [STATE_FILE, "terraform.tfstate.backup", ".terraform.tfstate.lock.info", PLAN_FILE]
    {
        ignore_missing(std::fs::remove_file(dir.join(name)))?;
    }
    let lock = dir.join(LOCK_FILE);
    if std::fs::symlink_metadata(&lock).is_ok_and(|m| m.is_file()) {
        let text = std::fs::read_to_string(&lock)?;
        let stripped = strip_lock_entry(&text, provider::PROVIDER_SOURCE);
        if stripped != text {
            std::fs::write(&lock, stripped)?;
        }
    }
    Ok(())
}

/// `lock` (a `.terraform.lock.hcl`) without the `provider "<source>" { … }` block.
/// terraform writes these files itself: each block opens on a `provider` line and
/// closes with a `}` alone on a line.
fn strip_lock_entry(lock: &str, source: &str) -> String {
    let opening = format!("provider \"{source}\" {{");
    let mut out = String::with_capacity(lock.len());
    let mut skipping = false;
    let mut skip_blank = false;
    for line in lock.split_inclusive('\n') {
        let trimmed = line.trim();
        if skipping {
            if trimmed == "}" {
                skipping = false;
                skip_blank = true;
            }
            continue;
        }
        if trimmed == opening {
            skipping = true;
            continue;
        }
        if skip_blank && trimmed.is_empty() {
            skip_blank = false;
            continue;
        }
        skip_blank = false;
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lock_entry_of_our_provider_is_stripped() {
        let lock = "# This file is maintained automatically by \"terraform init\".\n\n\
            provider \"registry.terraform.io/coder/coder\" {\n  version = \"2.0.0\"\n  \
            hashes = [\n    \"h1:abc=\",\n  ]\n}\n\n\
            provider \"registry.terraform.io/hashicorp/null\" {\n  version = \"3.2.0\"\n}\n";
        let out = strip_lock_entry(lock, provider::PROVIDER_SOURCE);
        assert!(!out.contains("coder/coder") && !out.contains("h1:abc"), "{out}");
        assert!(out.starts_with("# This file"));
        assert!(out.contains("provider \"registry.terraform.io/hashicorp/null\" {\n  version"));
        assert_eq!(strip_lock_entry(&out, provider::PROVIDER_SOURCE), out);
    }

    #[test]
    fn sanitize_removes_state_and_working_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir_all(d.join(".terraform/providers")).unwrap();
        for f in ["terraform.tfstate", "terraform.tfstate.backup", "main.tf"] {
            std::fs::write(d.join(f), "x").unwrap();
        }
        sanitize_template(d).unwrap();
        let left: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["main.tf"]);
    }
}
