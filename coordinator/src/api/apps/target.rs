//! What a `/@OWNER/WORKSPACE[.AGENT]/…` path names, parsed without I/O.
//!
//! - `/@alice/dev` — the workspace's dashboard page;
//! - `/@alice/dev.main/terminal` — the web terminal of agent `main`;
//! - `/@alice/dev.main/apps/files/some/path?q` — app `files`, request path
//!   `/some/path`;
//! - `/@alice/dev/apps/8080/` — port 8080 of the only agent (a dev URL).

/// A workspace, and optionally one of its agents, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceRef {
    pub owner: String,
    pub workspace: String,
    pub agent: Option<String>,
}

/// Which app: a `coder_app` by slug, or a port on the agent's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppRef {
    Slug(String),
    Port(u16),
}

/// A parsed path under `/@`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Workspace(WorkspaceRef),
    Terminal(WorkspaceRef),
    /// `rest` is the path below the app's prefix: `""` (no trailing slash
    /// yet; answered with a redirect) or starting with `/`.
    App {
        ws: WorkspaceRef,
        app: AppRef,
        rest: String,
    },
}

/// Names are Coder's: letters, digits, `-` and `_`.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
}

fn workspace_ref(owner: &str, ws: &str) -> Option<WorkspaceRef> {
    let (workspace, agent) = match ws.split_once('.') {
        Some((w, a)) => (w, Some(a)),
        None => (ws, None),
    };
    if !is_name(owner) || !is_name(workspace) || agent.is_some_and(|a| !is_name(a)) {
        return None;
    }
    Some(WorkspaceRef {
        owner: owner.to_owned(),
        workspace: workspace.to_owned(),
        agent: agent.map(str::to_owned),
    })
}

/// Parses a request path (without the query); `None` if it is not ours.
pub fn parse(path: &str) -> Option<Target> {
    let rest = path.strip_prefix("/@")?;
    let mut parts = rest.splitn(4, '/');
    let owner = parts.next()?;
    let ws = workspace_ref(owner, parts.next()?)?;
    match (parts.next(), parts.next()) {
        (None | Some(""), None) => Some(Target::Workspace(ws)),
        (Some("terminal"), None) => Some(Target::Terminal(ws)),
        (Some("apps"), Some(app_and_rest)) => {
            let (slug, rest) = match app_and_rest.find('/') {
                Some(i) => (&app_and_rest[..i], &app_and_rest[i..]),
                None => (app_and_rest, ""),
            };
            // All digits is a port (1-65535), never a slug.
            let app = if !slug.is_empty() && slug.bytes().all(|b| b.is_ascii_digit()) {
                match slug.parse::<u16>() {
                    Ok(port) if port > 0 => AppRef::Port(port),
                    _ => return None,
                }
            } else if is_name(slug) {
                AppRef::Slug(slug.to_ascii_lowercase())
            } else {
                return None;
            };
            Some(Target::App { ws, app, rest: rest.to_owned() })
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ws(owner: &str, w: &str, agent: Option<&str>) -> WorkspaceRef {
        WorkspaceRef { owner: owner.into(), workspace: w.into(), agent: agent.map(Into::into) }
    }

    #[test]
    fn paths() {
        assert_eq!(parse("/@alice/dev"), Some(Target::Workspace(ws("alice", "dev", None))));
        assert_eq!(parse("/@alice/dev/"), Some(Target::Workspace(ws("alice", "dev", None))));
        assert_eq!(
            parse("/@alice/dev.main/terminal"),
            Some(Target::Terminal(ws("alice", "dev", Some("main"))))
        );
        assert_eq!(
            parse("/@alice/dev.main/apps/files/a/b.txt"),
            Some(Target::App {
                ws: ws("alice", "dev", Some("main")),
                app: AppRef::Slug("files".into()),
                rest: "/a/b.txt".into()
            })
        );
        assert_eq!(
            parse("/@alice/dev/apps/8080"),
            Some(Target::App {
                ws: ws("alice", "dev", None),
                app: AppRef::Port(8080),
                rest: "".into()
            })
        );
    }

    #[test]
    fn refuses_what_is_not_ours() {
        for p in [
            "/alice/dev",
            "/@/dev",
            "/@alice",
            "/@alice/dev/apps",
            "/@alice/dev/apps/0/",
            "/@alice/dev/apps/70000/",
            "/@alice/dev/apps/x%2e/",
            "/@alice/dev/other",
            "/@al ice/dev",
            "/@alice/dev../apps/x/",
            "/@alice/.main/terminal",
            "/@alice/dev.main.x/terminal",
        ] {
            assert_eq!(parse(p), None, "{p}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = parse(&s);
            let _ = parse(&format!("/@{s}"));
        }
    }
}
