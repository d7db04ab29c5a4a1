//! The environment of every process the agent starts for the workspace: SSH
//! commands, shells and subsystems, the web terminal's shells, the startup
//! script and metadata scripts.
//!
//! The agent itself is started by a provisioner (terraform's `local-exec`, a
//! container's entrypoint, …) whose environment holds things the workspace
//! must not see: the agent's own token (`CODER_AGENT_TOKEN`), terraform's
//! variables (`TF_*`, `CODER_PARAMETER_*`), the job directory (`OLDPWD`), and
//! whatever else that process had. So nothing is inherited by default:
//!
//! 1. `main` captures the process environment once, before any thread starts,
//!    and removes the agent's secrets from it ([`Inherited::capture`]);
//! 2. [`base`] builds the environment a workspace process starts with, as
//!    `sshd` would: `USER`, `LOGNAME`, `HOME`, `SHELL`, `PATH` (a default when
//!    the agent has none), the locale and `TZ` if set, then the template's
//!    `env` (the `coder_agent` block's, from the manifest), then the `CODER_*`
//!    variables Coder documents for workspaces;
//! 3. every spawn site clears the environment and sets exactly that, plus
//!    what belongs to one session (`SSH_CONNECTION`, `TERM`, variables the
//!    SSH client sent).
//!
//! A process running as the agent's user can still read the agent's memory;
//! this keeps the token out of environments that are inherited, logged and
//! shown (`env`, crash reports, `ps e`), which is where it leaked.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Variables of the agent's own that no workspace process may see, removed
/// from the agent's process environment at start.
pub const SECRET_VARS: &[&str] = &["CODER_AGENT_TOKEN"];

/// `PATH` when the agent started without one (OpenSSH's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Inherited variables that pass to workspace processes unchanged, when set.
fn passes_through(name: &str) -> bool {
    matches!(name, "LANG" | "LANGUAGE" | "TZ") || name.starts_with("LC_")
}

/// The agent's environment as the process received it, minus its secrets.
#[derive(Debug, Clone, Default)]
pub struct Inherited {
    vars: BTreeMap<String, String>,
}

impl Inherited {
    /// Reads the process environment and removes [`SECRET_VARS`] from it, so
    /// that nothing started later (by this crate or a library) inherits them.
    ///
    /// Call it first thing in `main`, after the command line (whose parser
    /// reads `CODER_AGENT_TOKEN`) and before any thread or runtime starts:
    /// changing the environment races with threads reading it.
    pub fn capture() -> Self {
        for name in SECRET_VARS {
            std::env::remove_var(name);
        }
        Self::read()
    }

    /// Reads the process environment without changing it (secrets are left
    /// out all the same). For embedders and tests; `main` uses [`Self::capture`].
    pub fn read() -> Self {
        Self::from_vars(std::env::vars_os().filter_map(|(k, v)| {
            // A variable that is not UTF-8 is none of the ones we pass on.
            Some((k.into_string().ok()?, v.into_string().ok()?))
        }))
    }

    /// An environment from explicit variables (secrets are left out).
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        let vars = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, _)| !SECRET_VARS.contains(&k.as_str()))
            .collect();
        Inherited { vars }
    }

    /// A variable's value; empty counts as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }
}

/// The user workspace processes run as: the agent's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name; `None` for a uid with no passwd entry and no `USER`.
    pub name: Option<String>,
    pub home: PathBuf,
    pub shell: PathBuf,
}

impl Account {
    /// The agent's effective user. `HOME` and `SHELL` the agent was started
    /// with win over the passwd entry: a template that points `HOME` at the
    /// workspace's directory (as `examples/templates/local` does) means it.
    pub fn current(inherited: &Inherited) -> Account {
        let entry = nix::unistd::User::from_uid(nix::unistd::geteuid()).ok().flatten();
        let name = entry
            .as_ref()
            .map(|u| u.name.clone())
            .or_else(|| inherited.get("USER").or_else(|| inherited.get("LOGNAME")).map(Into::into));
        let home = inherited
            .get("HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| entry.as_ref().map(|u| u.dir.clone()).filter(|p| p.is_absolute()))
            .unwrap_or_else(|| PathBuf::from("/"));
        let shell = inherited
            .get("SHELL")
            .map(PathBuf::from)
            .or_else(|| entry.as_ref().map(|u| u.shell.clone()))
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("/bin/sh"));
        Account { name, home, shell }
    }
}

/// What the manifest says about the workspace, for its processes' environment.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct WorkspaceVars {
    /// The `coder_agent` block's `env`.
    pub template_env: BTreeMap<String, String>,
    pub workspace_name: String,
    pub owner_name: String,
    pub agent_name: String,
    /// The deployment's URL the agent talks to (`CODER_AGENT_URL`).
    pub agent_url: String,
}

impl WorkspaceVars {
    pub fn from_manifest(manifest: &codersdk::AgentManifest, agent_url: &url::Url) -> Self {
        WorkspaceVars {
            template_env: manifest.environment_variables.clone(),
            workspace_name: manifest.workspace_name.clone(),
            owner_name: manifest.owner_name.clone(),
            agent_name: manifest.agent_name.clone(),
            agent_url: agent_url.to_string(),
        }
    }
}

/// The environment every workspace process starts with (before what belongs
/// to one session). Later entries override earlier ones; secrets never pass,
/// whoever sets them.
pub fn base(
    inherited: &Inherited,
    account: &Account,
    workspace: Option<&WorkspaceVars>,
) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    if let Some(name) = &account.name {
        env.insert("USER".into(), name.clone());
        env.insert("LOGNAME".into(), name.clone());
    }
    env.insert("HOME".into(), account.home.to_string_lossy().into_owned());
    env.insert("SHELL".into(), account.shell.to_string_lossy().into_owned());
    env.insert("PATH".into(), inherited.get("PATH").unwrap_or(DEFAULT_PATH).to_owned());
    for (k, v) in &inherited.vars {
        if passes_through(k) {
            env.insert(k.clone(), v.clone());
        }
    }
    if let Some(ws) = workspace {
        env.extend(ws.template_env.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (k, v) in [
            ("CODER", "true"),
            ("CODER_WORKSPACE_NAME", ws.workspace_name.as_str()),
            ("CODER_WORKSPACE_OWNER_NAME", ws.owner_name.as_str()),
            ("CODER_WORKSPACE_AGENT_NAME", ws.agent_name.as_str()),
            ("CODER_AGENT_URL", ws.agent_url.as_str()),
        ] {
            env.insert(k.into(), v.into());
        }
    }
    for secret in SECRET_VARS {
        env.remove(*secret);
    }
    env.into_iter().collect()
}

/// [`base`] for the running process with no workspace: what a server built
/// without a manifest (tests, embedders) gives its commands.
pub fn for_current_process() -> Vec<(String, String)> {
    let inherited = Inherited::read();
    base(&inherited, &Account::current(&inherited), None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn poisoned() -> Inherited {
        Inherited::from_vars([
            ("CODER_AGENT_TOKEN", "secret-token-value"),
            ("CODER_AGENT_URL", "http://provisioner-view.invalid"),
            ("TF_LOG", "trace"),
            ("TF_CLI_CONFIG_FILE", "/jobs/1/cli/config.tfrc"),
            ("CODER_PARAMETER_X", "parameter"),
            ("CODER_WORKSPACE_TRANSITION", "start"),
            ("OLDPWD", "/var/lib/coder/jobs/1/template"),
            ("INIT_SCRIPT", "#!/bin/sh"),
            ("PATH", "/opt/bin:/usr/bin"),
            ("HOME", "/home/ws"),
            ("SHELL", "/bin/bash"),
            ("LANG", "C.UTF-8"),
            ("LC_TIME", "en_GB.UTF-8"),
            ("TZ", "Europe/Paris"),
        ])
    }

    fn workspace() -> WorkspaceVars {
        WorkspaceVars {
            template_env: BTreeMap::from([
                ("GIT_AUTHOR_NAME".to_owned(), "Alice".to_owned()),
                ("CODER_AGENT_TOKEN".to_owned(), "from-the-template".to_owned()),
            ]),
            workspace_name: "ws".into(),
            owner_name: "alice".into(),
            agent_name: "main".into(),
            agent_url: "http://coder.test/".into(),
        }
    }

    #[test]
    fn provisioner_variables_and_the_token_do_not_pass() {
        let inherited = poisoned();
        let account = Account::current(&inherited);
        let env: BTreeMap<_, _> =
            base(&inherited, &account, Some(&workspace())).into_iter().collect();
        for leaked in [
            "CODER_AGENT_TOKEN",
            "TF_LOG",
            "TF_CLI_CONFIG_FILE",
            "CODER_PARAMETER_X",
            "CODER_WORKSPACE_TRANSITION",
            "OLDPWD",
            "INIT_SCRIPT",
        ] {
            assert!(!env.contains_key(leaked), "{leaked} passed: {env:?}");
        }
        assert!(!env
            .values()
            .any(|v| v.contains("secret-token-value") || v == "from-the-template"));
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("PATH"), Some("/opt/bin:/usr/bin"));
        assert_eq!(get("HOME"), Some("/home/ws"));
        assert_eq!(get("SHELL"), Some("/bin/bash"));
        assert_eq!(get("LANG"), Some("C.UTF-8"));
        assert_eq!(get("LC_TIME"), Some("en_GB.UTF-8"));
        assert_eq!(get("TZ"), Some("Europe/Paris"));
        assert_eq!(get("GIT_AUTHOR_NAME"), Some("Alice"));
        assert_eq!(get("CODER"), Some("true"));
        assert_eq!(get("CODER_WORKSPACE_NAME"), Some("ws"));
        assert_eq!(get("CODER_WORKSPACE_OWNER_NAME"), Some("alice"));
        assert_eq!(get("CODER_WORKSPACE_AGENT_NAME"), Some("main"));
        // The manifest's view of the deployment, not the provisioner's.
        assert_eq!(get("CODER_AGENT_URL"), Some("http://coder.test/"));
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid()).unwrap().unwrap();
        assert_eq!(get("USER"), Some(user.name.as_str()));
        assert_eq!(get("LOGNAME"), Some(user.name.as_str()));
    }

    #[test]
    fn a_bare_environment_gets_sane_defaults() {
        let inherited = Inherited::from_vars(Vec::<(String, String)>::new());
        let account = Account::current(&inherited);
        let env: BTreeMap<_, _> = base(&inherited, &account, None).into_iter().collect();
        assert_eq!(env.get("PATH").map(String::as_str), Some(DEFAULT_PATH));
        assert!(env.get("HOME").is_some_and(|h| h.starts_with('/')), "{env:?}");
        assert!(env.get("SHELL").is_some_and(|s| !s.is_empty()), "{env:?}");
        assert!(!env.contains_key("CODER"), "no manifest, no workspace variables");
    }

    #[test]
    fn secrets_are_dropped_when_read() {
        let inherited = Inherited::from_vars([("CODER_AGENT_TOKEN", "t"), ("PATH", "/bin")]);
        assert_eq!(inherited.get("CODER_AGENT_TOKEN"), None);
        assert_eq!(inherited.get("PATH"), Some("/bin"));
    }
}
