//! Installs the provider for Terraform without a registry.
//!
//! [`write_cli_config`] lays out a filesystem mirror in Terraform's *unpacked* layout,
//!
//! ```text
//! <dir>/providers/registry.terraform.io/coder/coder/<VERSION>/<os>_<arch>/terraform-provider-coder_v<VERSION>
//! ```
//!
//! and writes `<dir>/terraform.rc`, a CLI configuration whose `provider_installation`
//! takes `coder/coder` from that mirror and every other provider from its registry as
//! usual. Pointing `TF_CLI_CONFIG_FILE` at it makes `required_providers { coder = {
//! source = "coder/coder" } }` resolve offline with a normal `terraform init`, which also
//! records the provider's checksum in `.terraform.lock.hcl`. (`dev_overrides` would skip
//! `init` for the provider but print a warning on every command and ignore version
//! constraints, so the mirror is the one used.)

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Version of this provider, as Terraform sees it (`version = "~> 2.0"` resolves).
///
/// It follows the major version of Coder's provider whose schema it implements, so that
/// templates written for Coder v2 resolve; it is not the crate version.
pub const PROVIDER_VERSION: &str = "2.0.0";

/// Registry address of the provider; templates say `source = "coder/coder"`.
pub const PROVIDER_SOURCE: &str = "registry.terraform.io/coder/coder";

/// Name of the CLI configuration file [`write_cli_config`] writes.
pub const CLI_CONFIG_FILE_NAME: &str = "terraform.rc";

/// Why the mirror or CLI configuration could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliConfigError {
    #[error("provider binary {path} not found")]
    MissingBinary {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Terraform's name for the platform this process runs on, e.g. `linux_amd64`.
pub fn platform() -> String {
    let os = std::env::consts::OS;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        other => other,
    };
    format!("{os}_{arch}")
}

/// Quotes `s` as an HCL string literal.
fn hcl_quote(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace("${", "$${")
        .replace("%{", "%%{")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}

/// Lays out a filesystem mirror holding `provider_binary` under `dir` and writes a
/// Terraform CLI configuration that uses it; returns the configuration's path, to be
/// passed to terraform as `TF_CLI_CONFIG_FILE` (see [`terraform_env`]).
///
/// Safe to call again on the same `dir` (the binary is replaced, e.g. after a
/// rebuild). `dir` is made absolute; it is created if missing.
pub fn write_cli_config(
    dir: impl AsRef<Path>,
    provider_binary: impl AsRef<Path>,
) -> Result<PathBuf, CliConfigError> {
    let (dir, provider_binary) = (dir.as_ref(), provider_binary.as_ref());
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| CliConfigError::Write { path, source }
    };
    fs::create_dir_all(dir).map_err(write_err(dir))?;
    let dir = std::path::absolute(dir).map_err(write_err(dir))?;
    fs::metadata(provider_binary).map_err(|source| CliConfigError::MissingBinary {
        path: provider_binary.to_owned(),
        source,
    })?;

    let mirror = dir.join("providers");
    let package = mirror.join(PROVIDER_SOURCE).join(PROVIDER_VERSION).join(platform());
    fs::create_dir_all(&package).map_err(write_err(&package))?;
    let target = package.join(format!("terraform-provider-coder_v{PROVIDER_VERSION}"));
    match fs::remove_file(&target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(write_err(&target)(e)),
    }
    // A hard link costs nothing; across filesystems fall back to a copy.
    if fs::hard_link(provider_binary, &target).is_err() {
        fs::copy(provider_binary, &target).map_err(write_err(&target))?;
    }

    let mirror = mirror.to_string_lossy();
    let config = format!(
        "# Written by terraform-provider-coder: install {PROVIDER_SOURCE} from a local mirror.\n\
         provider_installation {{\n  \
           filesystem_mirror {{\n    \
             path    = {path}\n    \
             include = [{source}]\n  \
           }}\n  \
           direct {{\n    \
             exclude = [{source}]\n  \
           }}\n\
         }}\n",
        path = hcl_quote(&mirror),
        source = hcl_quote(PROVIDER_SOURCE),
    );
    let config_path = dir.join(CLI_CONFIG_FILE_NAME);
    fs::write(&config_path, config).map_err(write_err(&config_path))?;
    Ok(config_path)
}

/// Environment for running terraform with the CLI configuration at `cli_config`:
/// `TF_CLI_CONFIG_FILE`, plus `CHECKPOINT_DISABLE=1` (no version check over the
/// network) and `TF_IN_AUTOMATION=1` (no "run terraform apply next" hints in logs).
pub fn terraform_env(cli_config: &Path) -> Vec<(&'static str, OsString)> {
    vec![
        ("TF_CLI_CONFIG_FILE", cli_config.as_os_str().to_owned()),
        ("CHECKPOINT_DISABLE", "1".into()),
        ("TF_IN_AUTOMATION", "1".into()),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lays_out_mirror_and_config() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        fs::write(&bin, b"#!/bin/sh\n").unwrap();
        let dir = tmp.path().join("tf");
        let config = write_cli_config(&dir, &bin).unwrap();
        // Calling again replaces the binary.
        let config2 = write_cli_config(&dir, &bin).unwrap();
        assert_eq!(config, config2);
        let installed = dir
            .join("providers/registry.terraform.io/coder/coder")
            .join(PROVIDER_VERSION)
            .join(platform())
            .join(format!("terraform-provider-coder_v{PROVIDER_VERSION}"));
        assert!(installed.is_file());
        let text = fs::read_to_string(&config).unwrap();
        assert!(text.contains("filesystem_mirror"));
        assert!(text.contains(&format!("{}", dir.join("providers").display())));
        assert!(text.contains(r#"exclude = ["registry.terraform.io/coder/coder"]"#));
    }

    #[test]
    fn missing_binary_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = write_cli_config(tmp.path(), tmp.path().join("nope")).unwrap_err();
        assert!(matches!(err, CliConfigError::MissingBinary { .. }));
    }

    #[test]
    fn hcl_strings_are_escaped() {
        assert_eq!(hcl_quote(r#"a"b\c${x}"#), r#""a\"b\\c$${x}""#);
    }
}
