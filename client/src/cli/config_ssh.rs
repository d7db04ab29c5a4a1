//! `coder config-ssh`: a managed block in `~/.ssh/config` with a
//! `Host coder.<workspace>` entry per workspace whose `ProxyCommand` is
//! `coder ssh --stdio`, so plain `ssh coder.ws`, `scp`, `sftp`, `rsync` and
//! VS Code Remote-SSH reach workspaces over the mesh.
//!
//! Everything outside the markers is kept byte for byte; rerunning replaces
//! the block in place; `--remove` deletes only the block.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::confirm::confirm;
use super::output::outln;
use super::Context_;

pub const START_MARKER: &str = "# ------------START-CODER-----------";
pub const END_MARKER: &str = "# ------------END-CODER------------";
pub const HOST_PREFIX: &str = "coder.";

#[derive(clap::Args, Debug)]
pub struct ConfigSshArgs {
    /// The OpenSSH config file to manage.
    #[arg(long, env = "CODER_SSH_CONFIG_FILE", default_value = "~/.ssh/config")]
    pub ssh_config_file: String,
    /// Don't ask before writing.
    #[arg(short, long)]
    pub yes: bool,
    /// Print what would be written, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove the managed block.
    #[arg(long)]
    pub remove: bool,
}

fn expand_home(p: &str) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => dirs::home_dir().unwrap_or_else(|| PathBuf::from("/")).join(rest),
        None => PathBuf::from(p),
    }
}

fn quote(s: &str) -> String {
    if s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-:=@+".contains(&b)) {
        s.to_owned()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// The managed block for these workspace names.
pub fn render_block(coder: &Path, config_dir: &Path, workspaces: &[String]) -> String {
    let mut b = String::new();
    b.push_str(START_MARKER);
    b.push('\n');
    b.push_str("# This section is managed by coder. DO NOT EDIT.\n#\n");
    b.push_str("# Changes are lost on the next `coder config-ssh`; remove it with `coder config-ssh --remove`.\n");
    for ws in workspaces {
        let host = format!("{HOST_PREFIX}{}", ws.replace('/', "--"));
        b.push_str(&format!("Host {host}\n"));
        b.push_str(&format!("\tHostName {host}\n"));
        b.push_str("\tConnectTimeout 0\n");
        b.push_str("\tStrictHostKeyChecking no\n");
        b.push_str("\tUserKnownHostsFile /dev/null\n");
        b.push_str("\tLogLevel ERROR\n");
        b.push_str(&format!(
            "\tProxyCommand {} --global-config {} ssh --stdio {}\n",
            quote(&coder.to_string_lossy()),
            quote(&config_dir.to_string_lossy()),
            quote(ws)
        ));
    }
    b.push_str(END_MARKER);
    b.push('\n');
    b
}

/// Replaces (or appends, or with `None` removes) the managed block, keeping
/// every other byte of `existing`.
pub fn update_config(existing: &str, block: Option<&str>) -> Result<String, String> {
    let start = existing.find(START_MARKER);
    let end = existing.find(END_MARKER);
    match (start, end) {
        (Some(s), Some(e)) if e > s => {
            let mut after = e + END_MARKER.len();
            if existing[after..].starts_with('\n') {
                after += 1;
            }
            let mut out = String::with_capacity(existing.len());
            out.push_str(&existing[..s]);
            if let Some(b) = block {
                out.push_str(b);
            }
            out.push_str(&existing[after..]);
            Ok(out)
        }
        (None, None) => {
            let Some(b) = block else { return Ok(existing.to_owned()) };
            let mut out = existing.to_owned();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(b);
            Ok(out)
        }
        _ => Err(format!(
            "the file has an unbalanced coder section (only one of {START_MARKER:?} / {END_MARKER:?}); fix it by hand"
        )),
    }
}

pub async fn run(ctx: &Context_, args: ConfigSshArgs) -> anyhow::Result<()> {
    let path = expand_home(&args.ssh_config_file);
    let existing = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let block = if args.remove {
        None
    } else {
        let client = ctx.client()?;
        let mut names: Vec<String> =
            client.workspaces(false).await?.into_iter().map(|w| w.name).collect();
        names.sort();
        let coder = std::env::current_exe().context("locate the coder binary")?;
        let config_dir = std::fs::canonicalize(ctx.config.path())
            .unwrap_or_else(|_| ctx.config.path().to_path_buf());
        Some(render_block(&coder, &config_dir, &names))
    };
    let updated = update_config(&existing, block.as_deref())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if updated == existing {
        outln!("{} is up to date.", path.display())?;
        return Ok(());
    }
    if args.dry_run {
        outln!("Would write {}:\n{updated}", path.display())?;
        return Ok(());
    }
    // Without a terminal (a script, `coder open`) it writes without asking.
    if std::io::stdin().is_terminal() {
        confirm(&format!("update {}", path.display()), args.yes)?;
    }
    write_atomically(&path, &updated)?;
    if args.remove {
        outln!("Removed the coder section from {}.", path.display())?;
    } else {
        outln!("Updated {}. Connect with: ssh {HOST_PREFIX}<workspace>", path.display())?;
    }
    Ok(())
}

fn write_atomically(path: &Path, content: &str) -> anyhow::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0o600);
    let tmp = dir.join(format!(
        ".{}.coder-tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("config")
    ));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn block(names: &[&str]) -> String {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        render_block(Path::new("/usr/bin/coder"), Path::new("/home/u/.config/coder"), &names)
    }

    #[test]
    fn keeps_everything_else_byte_for_byte_and_is_idempotent() {
        let original = "Host a\n  User x\r\n\n# comment without newline at end";
        let once = update_config(original, Some(&block(&["ws1"]))).unwrap();
        assert!(once.starts_with(original));
        let twice = update_config(&once, Some(&block(&["ws1"]))).unwrap();
        assert_eq!(once, twice);
        let changed = update_config(&once, Some(&block(&["ws1", "ws2"]))).unwrap();
        assert!(changed.contains("Host coder.ws2"));
        assert!(changed.starts_with(original));
        let removed = update_config(&changed, None).unwrap();
        assert_eq!(removed.trim_end(), original.trim_end());
        assert!(removed.starts_with(original));
    }

    #[test]
    fn block_in_the_middle_is_replaced_in_place() {
        let before = "Host a\n";
        let after = "Host z\n  Port 2\n";
        let text = format!("{before}{}{after}", block(&["old"]));
        let new = update_config(&text, Some(&block(&["new"]))).unwrap();
        assert_eq!(new, format!("{before}{}{after}", block(&["new"])));
        assert_eq!(update_config(&new, None).unwrap(), format!("{before}{after}"));
    }

    #[test]
    fn unbalanced_markers_are_refused() {
        assert!(update_config(&format!("x\n{START_MARKER}\n"), None).is_err());
        assert_eq!(update_config("", None).unwrap(), "");
    }

    #[test]
    fn proxy_command_quotes_odd_paths() {
        let b =
            render_block(Path::new("/opt/my tools/coder"), Path::new("/cfg"), &["w".to_owned()]);
        assert!(
            b.contains("ProxyCommand \"/opt/my tools/coder\" --global-config /cfg ssh --stdio w"),
            "{b}"
        );
    }
}
