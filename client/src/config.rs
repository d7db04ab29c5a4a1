//! The CLI's stored login: `url` and `session` files in `CODER_CONFIG_DIR`
//! (default `~/.config/coder`), written with mode 0600. `CODER_URL` and
//! `CODER_SESSION_TOKEN` override them.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct ConfigDir {
    dir: PathBuf,
}

impl ConfigDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ConfigDir { dir: dir.into() }
    }

    /// `~/.config/coder`, or the current directory's `.coder` when there is no home.
    pub fn default_path() -> PathBuf {
        dirs::config_dir().unwrap_or_else(|| PathBuf::from(".")).join("coder")
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn read(&self, name: &str) -> std::io::Result<Option<String>> {
        match std::fs::read_to_string(self.dir.join(name)) {
            Ok(s) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write(&self, name: &str, value: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(value.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(tmp, path)
    }

    fn remove(&self, name: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub fn url(&self) -> std::io::Result<Option<String>> {
        self.read("url")
    }

    pub fn session(&self) -> std::io::Result<Option<String>> {
        self.read("session")
    }

    pub fn save_login(&self, url: &str, session: &str) -> std::io::Result<()> {
        self.write("url", url)?;
        self.write("session", session)
    }

    pub fn clear_session(&self) -> std::io::Result<()> {
        self.remove("session")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn saved_login_is_private_and_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = ConfigDir::new(tmp.path().join("coder"));
        assert_eq!(cfg.session().unwrap(), None);
        cfg.save_login("http://x", "abc-def").unwrap();
        assert_eq!(cfg.url().unwrap().as_deref(), Some("http://x"));
        assert_eq!(cfg.session().unwrap().as_deref(), Some("abc-def"));
        let mode =
            std::fs::metadata(tmp.path().join("coder/session")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        cfg.clear_session().unwrap();
        assert_eq!(cfg.session().unwrap(), None);
    }
}
