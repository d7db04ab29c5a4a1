//! The HTTP job backend: an external provisioner's view of coderd's
//! provisioner daemon API (`/api/v2/provisionerdaemons/…`, served by
//! `crate::api::provisionerd`), authenticated by a pre-shared key.
//!
//! ```text
//! worker ── POST acquire (long poll ≤ 25 s) ───────────▶ coderd ── PgBackend ──▶ Postgres
//!        ◀─ {job: AcquiredJob | null} ──────────────────
//!        ── POST jobs/{id}/heartbeat | agent-shutdown | logs | complete | fail (lease in body)
//! ```

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use url::Url;

use super::backend::{BackendError, JobBackend};
use super::job::{
    AcquiredJob, AgentShutdown, Heartbeat, JobFailure, JobLog, JobOutput, Lease, WorkerIdentity,
};
use super::queue::Tags;

/// The header that carries the pre-shared key.
pub const PROVISIONER_KEY_HEADER: &str = "Coder-Provisioner-Key";

/// The longest an acquire request is held open waiting for a job.
pub const MAX_ACQUIRE_WAIT: Duration = Duration::from_secs(25);

/// The pre-shared key external provisioners authenticate with. Debug output
/// never shows it.
#[derive(Clone)]
pub struct ProvisionerKey(Arc<str>);

impl std::fmt::Debug for ProvisionerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProvisionerKey(<redacted>)")
    }
}

/// Why a key was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("cannot read the provisioner key file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the provisioner key is too short ({0} characters; need at least 16): generate one with `openssl rand -hex 32`")]
    TooShort(usize),
}

impl ProvisionerKey {
    /// A key from its text; surrounding whitespace (a trailing newline) is ignored.
    pub fn new(key: &str) -> Result<Self, KeyError> {
        let key = key.trim();
        if key.chars().count() < 16 {
            return Err(KeyError::TooShort(key.chars().count()));
        }
        Ok(ProvisionerKey(Arc::from(key)))
    }

    /// Reads a key file (`--provisioner-psk-file`, `--psk-file`).
    pub fn from_file(path: &std::path::Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| KeyError::Read { path: path.to_owned(), source })?;
        Self::new(&text)
    }

    /// Compares in constant time (over digests, so not even the length leaks).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let ours = Sha256::digest(self.0.as_bytes());
        let theirs = Sha256::digest(presented);
        ours.ct_eq(&theirs).into()
    }

    fn as_str(&self) -> &str {
        &self.0
    }
}

/// Body of `POST /api/v2/provisionerdaemons/acquire`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcquireRequest {
    #[serde(flatten)]
    pub worker: WorkerIdentity,
    /// How long to hold the request open waiting for a job (capped at 25 s).
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// Answer to `acquire`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcquireResponse {
    pub job: Option<AcquiredJob>,
}

/// Body of `heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub worker_id: String,
}

/// Answer to `agent-shutdown` (its body is a [`HeartbeatRequest`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentShutdownResponse {
    pub agents: Vec<AgentShutdown>,
}

/// Answer to `heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub state: Heartbeat,
}

/// Body of `logs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogsRequest {
    pub worker_id: String,
    pub logs: Vec<JobLog>,
}

/// Body of `complete`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompleteRequest {
    pub worker_id: String,
    pub output: JobOutput,
}

/// Body of `fail`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailRequest {
    pub worker_id: String,
    #[serde(flatten)]
    pub failure: JobFailure,
}

/// coderd's provisioner daemon API as a [`JobBackend`].
#[derive(Debug, Clone)]
pub struct HttpBackend {
    http: reqwest::Client,
    base: Url,
    key: ProvisionerKey,
    /// How long each acquire asks coderd to wait for a job.
    pub acquire_wait: Duration,
}

impl HttpBackend {
    /// `url` is coderd's URL (`--url`), e.g. `https://coder.example.com`.
    pub fn new(url: Url, key: ProvisionerKey) -> Result<Self, BackendError> {
        // Never follow a redirect: the key is in a header of our own, which
        // a redirect would carry to wherever it points.
        // Trust what the CLI and agents trust: the system's roots, or the
        // CA certificates SSL_CERT_FILE names.
        let tls = derp::client::tls::client_config()
            .map_err(|e| BackendError::Status { status: 0, message: e.to_string() })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .use_preconfigured_tls(rustls::ClientConfig::clone(&tls))
            .build()?;
        let mut base = url;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(HttpBackend { http, base, key, acquire_wait: MAX_ACQUIRE_WAIT })
    }

    fn url(&self, path: &str) -> Result<Url, BackendError> {
        self.base.join(&format!("api/v2/provisionerdaemons/{path}")).map_err(|e| {
            BackendError::Status { status: 0, message: format!("bad coderd URL: {e}") }
        })
    }

    async fn post<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Option<Resp>, BackendError> {
        let resp = self
            .http
            .post(self.url(path)?)
            .header(PROVISIONER_KEY_HEADER, self.key.as_str())
            .timeout(timeout)
            .json(body)
            .send()
            .await?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(BackendError::Unauthorized);
        }
        if status == reqwest::StatusCode::CONFLICT {
            return Ok(None); // the lease is gone
        }
        if !status.is_success() {
            let message = match resp.json::<codersdk::ApiErrorBody>().await {
                Ok(b) if b.detail.is_empty() => b.message,
                Ok(b) => format!("{} {}", b.message, b.detail),
                Err(_) => String::new(),
            };
            return Err(BackendError::Status { status: status.as_u16(), message });
        }
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(Some(
                serde_json::from_value(serde_json::Value::Null)
                    .map_err(|e| BackendError::Status { status: 204, message: e.to_string() })?,
            ));
        }
        Ok(Some(resp.json().await?))
    }

    /// Checks the key with coderd, so a misconfigured daemon fails at start.
    pub async fn check(&self) -> Result<(), BackendError> {
        let resp = self
            .http
            .get(self.url("check")?)
            .header(PROVISIONER_KEY_HEADER, self.key.as_str())
            .timeout(Duration::from_secs(30))
            .send()
            .await?;
        let location = resp.headers().get(reqwest::header::LOCATION).cloned();
        match resp.status() {
            s if s.is_success() => Ok(()),
            s if s.is_redirection() => Err(BackendError::Status {
                status: s.as_u16(),
                message: format!(
                    "coderd redirects to {}: pass that URL (redirects are not followed, so the key never leaves the configured URL)",
                    location.as_ref().and_then(|l| l.to_str().ok()).unwrap_or("another URL")
                ),
            }),
            reqwest::StatusCode::UNAUTHORIZED => Err(BackendError::Unauthorized),
            s => Err(BackendError::Status {
                status: s.as_u16(),
                message: "coderd does not accept external provisioners (is it started with --provisioner-psk-file?)".into(),
            }),
        }
    }
}

const CALL_TIMEOUT: Duration = Duration::from_secs(60);

impl JobBackend for HttpBackend {
    async fn acquire(
        &self,
        worker_id: &str,
        tags: &Tags,
    ) -> Result<Option<AcquiredJob>, BackendError> {
        let wait = self.acquire_wait.min(MAX_ACQUIRE_WAIT);
        let req = AcquireRequest {
            worker: WorkerIdentity { worker_id: worker_id.to_owned(), tags: tags.clone() },
            wait_ms: Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
        };
        // Archives can be large: allow for the transfer beyond the wait.
        let resp: Option<AcquireResponse> = self.post("acquire", &req, wait + CALL_TIMEOUT).await?;
        Ok(resp.and_then(|r| r.job))
    }

    async fn heartbeat(&self, lease: &Lease) -> Result<Heartbeat, BackendError> {
        let req = HeartbeatRequest { worker_id: lease.worker_id.clone() };
        let path = format!("jobs/{}/heartbeat", lease.job_id);
        let resp: Option<HeartbeatResponse> = self.post(&path, &req, CALL_TIMEOUT).await?;
        Ok(resp.map_or(Heartbeat::Lost, |r| r.state))
    }

    async fn shutdown_agents(
        &self,
        lease: &Lease,
    ) -> Result<Option<Vec<AgentShutdown>>, BackendError> {
        let req = HeartbeatRequest { worker_id: lease.worker_id.clone() };
        let path = format!("jobs/{}/agent-shutdown", lease.job_id);
        let resp: Option<AgentShutdownResponse> = self.post(&path, &req, CALL_TIMEOUT).await?;
        Ok(resp.map(|r| r.agents))
    }

    async fn append_logs(&self, lease: &Lease, logs: &[JobLog]) -> Result<bool, BackendError> {
        if logs.is_empty() {
            return Ok(true);
        }
        let req = LogsRequest { worker_id: lease.worker_id.clone(), logs: logs.to_vec() };
        let path = format!("jobs/{}/logs", lease.job_id);
        Ok(self.post::<_, ()>(&path, &req, CALL_TIMEOUT).await?.is_some())
    }

    async fn complete(&self, lease: &Lease, output: &JobOutput) -> Result<bool, BackendError> {
        let req = CompleteRequest { worker_id: lease.worker_id.clone(), output: output.clone() };
        let path = format!("jobs/{}/complete", lease.job_id);
        Ok(self.post::<_, ()>(&path, &req, CALL_TIMEOUT).await?.is_some())
    }

    async fn fail(&self, lease: &Lease, failure: &JobFailure) -> Result<bool, BackendError> {
        let req = FailRequest { worker_id: lease.worker_id.clone(), failure: failure.clone() };
        let path = format!("jobs/{}/fail", lease.job_id);
        Ok(self.post::<_, ()>(&path, &req, CALL_TIMEOUT).await?.is_some())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn keys_compare_by_content_and_refuse_short_ones() {
        let k = ProvisionerKey::new("0123456789abcdef\n").unwrap();
        assert!(k.matches(b"0123456789abcdef"));
        assert!(!k.matches(b"0123456789abcdeF"));
        assert!(!k.matches(b""));
        assert!(matches!(ProvisionerKey::new("short"), Err(KeyError::TooShort(5))));
        assert!(!format!("{k:?}").contains("0123"));
    }
}
