//! The states the API reports, as enums with their wire names: parsed once
//! where they enter (JSON, a database column), compared as values
//! everywhere else. A name this version does not know is an error
//! ([`UnknownValue`]), never a silent default.

use serde::{Deserialize, Serialize};

/// A state name this version does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
#[non_exhaustive]
pub struct UnknownValue {
    /// What was being parsed ("workspace status", …).
    pub kind: &'static str,
    /// The text that did not parse.
    pub value: String,
}

/// An enum of wire names: `as_str`, `Display`, `FromStr` and
/// `TryFrom<String>` (for `#[sqlx(try_from = "String")]` columns) that
/// agree with serde.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($kind:literal) {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue { kind: $kind, value: s.to_owned() }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownValue;

            fn try_from(s: String) -> Result<Self, UnknownValue> {
                s.parse()
            }
        }
    };
}

wire_enum! {
    /// A role a user holds across the deployment.
    pub enum Role ("role") {
        /// Everything.
        Owner = "owner",
        /// Templates and their versions, and every workspace's builds.
        TemplateAdmin = "template-admin",
        /// Users and their roles, except the owner role.
        UserAdmin = "user-admin",
        /// Reads the audit log and every resource; changes nothing.
        Auditor = "auditor",
        /// Their own workspaces and tokens.
        Member = "member",
    }
}

wire_enum! {
    /// What a workspace build does. The default is `Start` (a template import
    /// plans a start).
    #[derive(Default)]
    pub enum Transition ("transition") {
        #[default]
        Start = "start",
        Stop = "stop",
        Delete = "delete",
    }
}

wire_enum! {
    /// Where a provisioner job is.
    pub enum ProvisionerJobStatus ("job status") {
        Pending = "pending",
        Running = "running",
        Canceling = "canceling",
        Canceled = "canceled",
        Succeeded = "succeeded",
        Failed = "failed",
    }
}

impl ProvisionerJobStatus {
    /// The job will not change again.
    pub fn is_done(self) -> bool {
        matches!(self, Self::Canceled | Self::Succeeded | Self::Failed)
    }
}

wire_enum! {
    /// How bad a log line is (job and agent logs), on the wire and in the
    /// database.
    #[derive(Default)]
    pub enum LogLevel ("log level") {
        Trace = "trace",
        Debug = "debug",
        #[default]
        Info = "info",
        Warn = "warn",
        Error = "error",
    }
}

wire_enum! {
    /// How an API key was issued (Coder's `LoginType`, plus the short-lived
    /// keys of subdomain apps).
    pub enum LoginType ("login type") {
        /// A session from `POST /users/login`.
        Password = "password",
        /// A personal token (`coder tokens create`).
        Token = "token",
        /// A key that only opens subdomain apps.
        AppConnect = "app_connect",
        /// A session from an OpenID Connect login; as a user's login type,
        /// an account that has no password.
        Oidc = "oidc",
    }
}

wire_enum! {
    /// A user account's state (Coder's `UserStatus`).
    pub enum UserStatus ("user status") {
        /// May log in.
        Active = "active",
        /// Locked out by an administrator.
        Suspended = "suspended",
    }
}

wire_enum! {
    /// What an audited request did (Coder's `AuditAction`).
    pub enum AuditAction ("audit action") {
        Create = "create",
        /// A change to an existing resource: roles, status, password,
        /// a template's active version.
        Write = "write",
        Delete = "delete",
        /// A start build (also `coder update`, with the version in the diff).
        Start = "start",
        Stop = "stop",
        /// A password login, successful or not (the status code says).
        Login = "login",
        Logout = "logout",
        /// A build or version import canceled.
        Cancel = "cancel",
    }
}

wire_enum! {
    /// What kind of resource an audit row is about (Coder's `ResourceType`).
    pub enum ResourceType ("resource type") {
        User = "user",
        ApiKey = "api_key",
        Template = "template",
        TemplateVersion = "template_version",
        Workspace = "workspace",
        WorkspaceBuild = "workspace_build",
    }
}

wire_enum! {
    /// The state a workspace's latest build leaves it in (Coder's
    /// `WorkspaceStatus`), from the build's transition and its job's status.
    pub enum WorkspaceStatus ("workspace status") {
        Pending = "pending",
        Starting = "starting",
        Running = "running",
        Stopping = "stopping",
        Stopped = "stopped",
        Failed = "failed",
        Canceling = "canceling",
        Canceled = "canceled",
        Deleting = "deleting",
        Deleted = "deleted",
    }
}

impl WorkspaceStatus {
    /// A build is under way: nothing new may start until it settles.
    pub fn is_transitioning(self) -> bool {
        matches!(
            self,
            Self::Pending | Self::Starting | Self::Stopping | Self::Deleting | Self::Canceling
        )
    }

    /// The workspace is not running and a start build would bring it up.
    pub fn is_startable(self) -> bool {
        matches!(self, Self::Stopped | Self::Failed | Self::Canceled)
    }
}

wire_enum! {
    /// Whether a workspace agent is connected to coderd (Coder's
    /// `WorkspaceAgentStatus`).
    pub enum WorkspaceAgentStatus ("agent status") {
        /// Not connected yet, within its connection timeout.
        Connecting = "connecting",
        Connected = "connected",
        /// Connected once, silent since.
        Disconnected = "disconnected",
        /// Never connected within its connection timeout.
        Timeout = "timeout",
    }
}

wire_enum! {
    /// Agent lifecycle states, as Coder names them.
    pub enum LifecycleState ("lifecycle state") {
        Created = "created",
        Starting = "starting",
        StartTimeout = "start_timeout",
        StartError = "start_error",
        Ready = "ready",
        ShuttingDown = "shutting_down",
        ShutdownTimeout = "shutdown_timeout",
        ShutdownError = "shutdown_error",
        Off = "off",
    }
}

impl LifecycleState {
    /// The startup script has finished, well or not: a session may begin.
    pub fn startup_done(self) -> bool {
        matches!(self, Self::Ready | Self::StartError | Self::StartTimeout)
    }

    /// The startup script has not finished yet.
    pub fn is_starting(self) -> bool {
        matches!(self, Self::Created | Self::Starting)
    }
}

wire_enum! {
    /// Coder's `WorkspaceAppHealth`.
    #[derive(Default)]
    pub enum AppHealth ("app health") {
        #[default]
        Disabled = "disabled",
        Initializing = "initializing",
        Healthy = "healthy",
        Unhealthy = "unhealthy",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_agree_with_serde_and_unknown_names_are_errors() {
        for s in WorkspaceStatus::ALL {
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(s.as_str().parse::<WorkspaceStatus>().unwrap(), *s);
        }
        for s in LifecycleState::ALL {
            assert_eq!(serde_json::from_str::<LifecycleState>(&format!("\"{s}\"")).unwrap(), *s);
        }
        let err = "sleeping".parse::<WorkspaceAgentStatus>().unwrap_err();
        assert_eq!(err.to_string(), "unknown agent status \"sleeping\"");
        assert!(serde_json::from_str::<UserStatus>("\"dormant\"").is_err());
        assert!(UserStatus::try_from("Active".to_owned()).is_err(), "names are case-sensitive");
        assert_eq!(AppHealth::default(), AppHealth::Disabled);
    }
}
