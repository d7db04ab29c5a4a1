//! Programs the topology tests run inside a host's namespace: the `coder`
//! CLI with a config directory of its own, and a workspace agent killed when
//! its handle drops.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::Host;

/// `coder` inside `host` with config in `cfg`, ignoring the environment's
/// coderd and proxies (the namespace reaches the topology's internet only).
pub fn coder(host: &Host, cfg: &Path) -> anyhow::Result<Command> {
    let mut c = host.command(crate::binary("coder")?);
    c.env("CODER_CONFIG_DIR", cfg).env_remove("CODER_URL").env_remove("CODER_SESSION_TOKEN");
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"] {
        c.env_remove(var).env_remove(var.to_lowercase());
    }
    Ok(c)
}

/// A `coder-agent` process; killed when the test ends, however it ends.
pub struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `coder-agent` in `host` against `url` with the token in
/// `token_file`, `home` as its home (log beside it, `home.log`).
pub fn start_agent(
    host: &Host,
    url: &str,
    token_file: &Path,
    home: &Path,
) -> anyhow::Result<AgentProcess> {
    let token = std::fs::read_to_string(token_file)?;
    std::fs::create_dir_all(home)?;
    let log = std::fs::File::create(home.with_extension("log"))?;
    let child = host
        .command(crate::binary("coder-agent")?)
        .env("CODER_AGENT_URL", url)
        .env("CODER_AGENT_TOKEN", token.trim())
        .env("HOME", home)
        .current_dir(home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    Ok(AgentProcess(child))
}
