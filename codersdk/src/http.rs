//! A typed HTTP client for `/api/v2`. Every call returns the decoded body or
//! an [`SdkError`] that carries the server's `{message, detail}`.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde::{de::DeserializeOwned, Serialize};
use url::Url;
use uuid::Uuid;

use super::types::*;

/// Header that carries a session or API token.
pub const SESSION_TOKEN_HEADER: &str = "Coder-Session-Token";
/// Cookie that carries a session token (browsers) on a plain-HTTP deployment.
pub const SESSION_TOKEN_COOKIE: &str = "coder_session_token";
/// The session cookie of an HTTPS deployment: a `__Host-` cookie is only
/// accepted by browsers with `Secure`, `Path=/` and no `Domain`, so no other
/// host (a workspace app on a sibling subdomain) can set or shadow it.
pub const SECURE_SESSION_TOKEN_COOKIE: &str = "__Host-coder_session_token";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    /// The server answered with an error status.
    #[error("{}{}", body.message, if body.detail.is_empty() { String::new() } else { format!(": {}", body.detail) })]
    Api { status: StatusCode, body: ApiErrorBody },
    #[error("request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("invalid URL: {0}")]
    Url(#[from] url::ParseError),
    /// The trusted CA certificates could not be loaded (`SSL_CERT_FILE`).
    #[error("{0}")]
    Tls(String),
}

impl SdkError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            SdkError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Follows redirects only within the origin (scheme, host and port) they come
/// from: the session or agent token travels in a header of our own, which
/// reqwest would otherwise carry to wherever a redirect points.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same =
            attempt.previous().last().is_some_and(|prev| prev.origin() == attempt.url().origin());
        if attempt.previous().len() > 5 {
            attempt.error("too many redirects")
        } else if same {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// What the SDK's requests say they are (the audit log records it).
const USER_AGENT: &str = concat!("coder/", env!("CARGO_PKG_VERSION"));

/// The client of last resort when TLS could not be set up: it only ever
/// speaks plain HTTP ([`Client::http_for`] refuses HTTPS URLs).
fn plain_http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(same_origin_redirects())
        .user_agent(USER_AGENT)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// A client for one deployment, optionally authenticated.
#[derive(Debug, Clone)]
pub struct Client {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
    /// Why HTTPS is unavailable (unreadable `SSL_CERT_FILE`): every HTTPS
    /// request fails with it rather than trusting some other set of roots.
    tls_error: Option<String>,
}

impl Client {
    /// A client that verifies HTTPS servers against the system's roots, or
    /// the CA certificates `SSL_CERT_FILE` names ([`derp::client::tls`]).
    pub fn new(base: Url) -> Self {
        match derp::client::tls::client_config() {
            Ok(tls) => Self::with_tls_config(base, &tls),
            // Plain HTTP still works; HTTPS requests fail with this error.
            Err(e) => {
                Client { base, token: None, http: plain_http(), tls_error: Some(e.to_string()) }
            }
        }
    }

    /// A client that trusts the roots of `tls` (say, a test's own CA).
    pub fn with_tls_config(base: Url, tls: &Arc<rustls::ClientConfig>) -> Self {
        let built = reqwest::Client::builder()
            .redirect(same_origin_redirects())
            .user_agent(USER_AGENT)
            .use_preconfigured_tls(rustls::ClientConfig::clone(tls))
            .build();
        match built {
            Ok(http) => Client { base, token: None, http, tls_error: None },
            Err(e) => Client {
                base,
                token: None,
                http: plain_http(),
                tls_error: Some(format!("cannot set up the HTTP client: {e}")),
            },
        }
    }

    /// The HTTP client for `url`, unless TLS setup failed and `url` needs it.
    fn http_for(&self, url: &Url) -> Result<&reqwest::Client, SdkError> {
        match &self.tls_error {
            Some(e) if url.scheme() != "http" => Err(SdkError::Tls(e.clone())),
            _ => Ok(&self.http),
        }
    }

    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn url(&self) -> &Url {
        &self.base
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Sends a request and decodes a JSON answer.
    pub async fn request<B: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<R, SdkError> {
        let resp = self.send(method, path, body).await?;
        let url = resp.url().to_string();
        resp.json::<R>().await.map_err(|source| SdkError::Http { url, source })
    }

    /// Sends a request and checks its status, returning the raw response.
    pub async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<reqwest::Response, SdkError> {
        let url = self.base.join(path)?;
        let mut req = self.http_for(&url)?.request(method, url.clone());
        if let Some(token) = &self.token {
            req = req.header(SESSION_TOKEN_HEADER, token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp =
            req.send().await.map_err(|source| SdkError::Http { url: url.to_string(), source })?;
        Self::check(resp).await
    }

    pub async fn build_info(&self) -> Result<BuildInfo, SdkError> {
        self.request::<(), _>(Method::GET, "/api/v2/buildinfo", None).await
    }

    /// Whether the deployment already has its first user.
    pub async fn has_first_user(&self) -> Result<bool, SdkError> {
        match self.send::<()>(Method::GET, "/api/v2/users/first", None).await {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The login methods the deployment offers.
    pub async fn auth_methods(&self) -> Result<crate::AuthMethods, SdkError> {
        self.request::<(), _>(Method::GET, "/api/v2/users/authmethods", None).await
    }

    pub async fn create_first_user(
        &self,
        req: &CreateFirstUserRequest,
    ) -> Result<CreateFirstUserResponse, SdkError> {
        self.request(Method::POST, "/api/v2/users/first", Some(req)).await
    }

    pub async fn login_with_password(
        &self,
        req: &LoginWithPasswordRequest,
    ) -> Result<LoginWithPasswordResponse, SdkError> {
        self.request(Method::POST, "/api/v2/users/login", Some(req)).await
    }

    pub async fn logout(&self) -> Result<(), SdkError> {
        self.send::<()>(Method::POST, "/api/v2/users/logout", None).await?;
        Ok(())
    }

    pub async fn me(&self) -> Result<User, SdkError> {
        self.request::<(), _>(Method::GET, "/api/v2/users/me", None).await
    }

    pub async fn users(&self) -> Result<Vec<User>, SdkError> {
        self.request::<(), _>(Method::GET, "/api/v2/users", None).await
    }

    pub async fn create_user(&self, req: &CreateUserRequest) -> Result<User, SdkError> {
        self.request(Method::POST, "/api/v2/users", Some(req)).await
    }

    pub async fn create_token(
        &self,
        req: &CreateTokenRequest,
    ) -> Result<GenerateApiKeyResponse, SdkError> {
        self.request(Method::POST, "/api/v2/users/me/keys/tokens", Some(req)).await
    }

    pub async fn tokens(&self) -> Result<Vec<ApiKey>, SdkError> {
        self.request::<(), _>(Method::GET, "/api/v2/users/me/keys/tokens", None).await
    }

    /// Deletes one of the caller's tokens, by id or by name.
    pub async fn delete_token(&self, id_or_name: &str) -> Result<(), SdkError> {
        let path = format!("/api/v2/users/me/keys/{}", urlencode(id_or_name));
        self.send::<()>(Method::DELETE, &path, None).await?;
        Ok(())
    }
}

impl Client {
    /// Uploads a tar archive; returns its file id.
    pub async fn upload(&self, content_type: &str, data: Vec<u8>) -> Result<Uuid, SdkError> {
        let url = self.base.join("/api/v2/files")?;
        let mut req = self
            .http_for(&url)?
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(data);
        if let Some(token) = &self.token {
            req = req.header(SESSION_TOKEN_HEADER, token);
        }
        let resp =
            req.send().await.map_err(|source| SdkError::Http { url: url.to_string(), source })?;
        let resp = Self::check(resp).await?;
        let body: UploadResponse =
            resp.json().await.map_err(|source| SdkError::Http { url: url.to_string(), source })?;
        Ok(body.hash)
    }

    pub async fn create_template_version(
        &self,
        req: &CreateTemplateVersionRequest,
    ) -> Result<TemplateVersion, SdkError> {
        self.request(Method::POST, "/api/v2/templateversions", Some(req)).await
    }

    pub async fn template_version(&self, id: Uuid) -> Result<TemplateVersion, SdkError> {
        self.request::<(), _>(Method::GET, &format!("/api/v2/templateversions/{id}"), None).await
    }

    pub async fn template_version_parameters(
        &self,
        id: Uuid,
    ) -> Result<Vec<TemplateVersionParameter>, SdkError> {
        self.request::<(), _>(
            Method::GET,
            &format!("/api/v2/templateversions/{id}/parameters"),
            None,
        )
        .await
    }

    pub async fn template_version_resources(
        &self,
        id: Uuid,
    ) -> Result<Vec<WorkspaceResource>, SdkError> {
        self.request::<(), _>(
            Method::GET,
            &format!("/api/v2/templateversions/{id}/resources"),
            None,
        )
        .await
    }

    pub async fn create_template(&self, req: &CreateTemplateRequest) -> Result<Template, SdkError> {
        self.request(Method::POST, "/api/v2/templates", Some(req)).await
    }

    pub async fn templates(&self) -> Result<Vec<Template>, SdkError> {
        self.request::<(), _>(Method::GET, "/api/v2/templates", None).await
    }

    /// A template by name or id.
    pub async fn template(&self, name_or_id: &str) -> Result<Template, SdkError> {
        self.request::<(), _>(
            Method::GET,
            &format!("/api/v2/templates/{}", urlencode(name_or_id)),
            None,
        )
        .await
    }

    pub async fn template_versions(
        &self,
        template: Uuid,
    ) -> Result<Vec<TemplateVersion>, SdkError> {
        self.request::<(), _>(Method::GET, &format!("/api/v2/templates/{template}/versions"), None)
            .await
    }

    pub async fn set_active_version(
        &self,
        template: Uuid,
        version: Uuid,
    ) -> Result<Template, SdkError> {
        self.request(
            Method::PATCH,
            &format!("/api/v2/templates/{template}/versions"),
            Some(&UpdateActiveVersionRequest { id: version }),
        )
        .await
    }

    pub async fn create_workspace(
        &self,
        user: &str,
        req: &CreateWorkspaceRequest,
    ) -> Result<Workspace, SdkError> {
        self.request(
            Method::POST,
            &format!("/api/v2/users/{}/workspaces", urlencode(user)),
            Some(req),
        )
        .await
    }

    pub async fn workspaces(&self, all: bool) -> Result<Vec<Workspace>, SdkError> {
        let path = if all { "/api/v2/workspaces?owner=all" } else { "/api/v2/workspaces" };
        self.request::<(), _>(Method::GET, path, None).await
    }

    pub async fn workspace(&self, id: Uuid) -> Result<Workspace, SdkError> {
        self.request::<(), _>(Method::GET, &format!("/api/v2/workspaces/{id}"), None).await
    }

    pub async fn workspace_by_owner_and_name(
        &self,
        owner: &str,
        name: &str,
    ) -> Result<Workspace, SdkError> {
        let path = format!("/api/v2/users/{}/workspace/{}", urlencode(owner), urlencode(name));
        self.request::<(), _>(Method::GET, &path, None).await
    }

    pub async fn create_workspace_build(
        &self,
        workspace: Uuid,
        req: &CreateWorkspaceBuildRequest,
    ) -> Result<WorkspaceBuild, SdkError> {
        self.request(Method::POST, &format!("/api/v2/workspaces/{workspace}/builds"), Some(req))
            .await
    }

    pub async fn workspace_builds(&self, workspace: Uuid) -> Result<Vec<WorkspaceBuild>, SdkError> {
        self.request::<(), _>(Method::GET, &format!("/api/v2/workspaces/{workspace}/builds"), None)
            .await
    }

    pub async fn workspace_build(&self, id: Uuid) -> Result<WorkspaceBuild, SdkError> {
        self.request::<(), _>(Method::GET, &format!("/api/v2/workspacebuilds/{id}"), None).await
    }

    /// The parameter values a build ran with.
    pub async fn workspace_build_parameters(
        &self,
        build: Uuid,
    ) -> Result<Vec<WorkspaceBuildParameter>, SdkError> {
        self.request::<(), _>(
            Method::GET,
            &format!("/api/v2/workspacebuilds/{build}/parameters"),
            None,
        )
        .await
    }

    pub async fn workspace_build_resources(
        &self,
        id: Uuid,
    ) -> Result<Vec<WorkspaceResource>, SdkError> {
        self.request::<(), _>(Method::GET, &format!("/api/v2/workspacebuilds/{id}/resources"), None)
            .await
    }

    pub async fn cancel_workspace_build(&self, id: Uuid) -> Result<(), SdkError> {
        self.send::<()>(Method::PATCH, &format!("/api/v2/workspacebuilds/{id}/cancel"), None)
            .await?;
        Ok(())
    }

    /// Logs of a job (by its build or version path) after `after`.
    pub async fn job_logs(
        &self,
        logs_path: &str,
        after: i64,
    ) -> Result<Vec<ProvisionerJobLog>, SdkError> {
        self.request::<(), _>(Method::GET, &format!("{logs_path}?after={after}"), None).await
    }

    /// Follows a job's logs live: calls `on_log` for each line (in order,
    /// each once, resuming after reconnects) and returns the finished job.
    pub async fn follow_job_logs(
        &self,
        logs_path: &str,
        mut on_log: impl FnMut(&ProvisionerJobLog),
    ) -> Result<ProvisionerJob, SdkError> {
        use futures::StreamExt;
        let mut cursor = 0i64;
        let mut attempts = 0u32;
        loop {
            let path = format!("{logs_path}?follow=true&after={cursor}");
            let resp = match self.send::<()>(Method::GET, &path, None).await {
                Ok(r) => r,
                Err(e @ SdkError::Api { .. }) => return Err(e),
                Err(e) if attempts >= 5 => return Err(e),
                Err(_) => {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(200 << attempts)).await;
                    continue;
                }
            };
            let mut stream = resp.bytes_stream();
            let mut buf: Vec<u8> = Vec::new();
            let mut event = String::new();
            let mut data = String::new();
            while let Some(chunk) = stream.next().await {
                let Ok(chunk) = chunk else { break };
                buf.extend_from_slice(&chunk);
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let line =
                        String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_owned();
                    if line.is_empty() {
                        match event.as_str() {
                            "log" => {
                                if let Ok(log) = serde_json::from_str::<ProvisionerJobLog>(&data) {
                                    if log.id > cursor {
                                        cursor = log.id;
                                        on_log(&log);
                                    }
                                }
                            }
                            "end" => {
                                if let Ok(job) = serde_json::from_str::<ProvisionerJob>(&data) {
                                    return Ok(job);
                                }
                            }
                            _ => {}
                        }
                        event.clear();
                        data.clear();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
            }
            // The stream broke before the end event: resume from the cursor.
            attempts += 1;
            if attempts > 20 {
                return Err(SdkError::Api {
                    status: StatusCode::BAD_GATEWAY,
                    body: ApiErrorBody {
                        message: "The log stream kept breaking.".into(),
                        detail: String::new(),
                    },
                });
            }
        }
    }

    async fn check(resp: reqwest::Response) -> Result<reqwest::Response, SdkError> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str::<ApiErrorBody>(&text).unwrap_or(ApiErrorBody {
            message: format!("unexpected status {status}"),
            detail: text.chars().take(512).collect(),
        });
        Err(SdkError::Api { status, body })
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The agent's side of the API, authenticated by the agent token.
impl Client {
    pub async fn agent_manifest(&self) -> Result<AgentManifest, SdkError> {
        self.request::<(), _>(Method::GET, "/api/v2/workspaceagents/me/manifest", None).await
    }

    pub async fn post_lifecycle(&self, req: &PostLifecycleRequest) -> Result<(), SdkError> {
        self.send(Method::POST, "/api/v2/workspaceagents/me/lifecycle", Some(req)).await?;
        Ok(())
    }

    pub async fn patch_agent_logs(&self, req: &PatchAgentLogsRequest) -> Result<(), SdkError> {
        self.send(Method::PATCH, "/api/v2/workspaceagents/me/logs", Some(req)).await?;
        Ok(())
    }

    pub async fn post_agent_stats(&self, stats: &AgentStats) -> Result<(), SdkError> {
        self.send(Method::POST, "/api/v2/workspaceagents/me/stats", Some(stats)).await?;
        Ok(())
    }

    pub async fn agent_logs(&self, agent: Uuid) -> Result<Vec<WorkspaceAgentLog>, SdkError> {
        self.request::<(), _>(Method::GET, &format!("/api/v2/workspaceagents/{agent}/logs"), None)
            .await
    }

    /// The agent's log sources (one per script), by creation.
    pub async fn agent_log_sources(&self, agent: Uuid) -> Result<Vec<AgentLogSource>, SdkError> {
        let path = format!("/api/v2/workspaceagents/{agent}/log-sources");
        self.request::<(), _>(Method::GET, &path, None).await
    }

    /// Long poll (as an agent): answers when coderd asks the agent to shut
    /// down, or after a while with `shutdown_requested: false`.
    pub async fn agent_graceful_shutdown(&self) -> Result<GracefulShutdown, SdkError> {
        self.request::<(), _>(Method::GET, "/api/v2/workspaceagents/me/graceful-shutdown", None)
            .await
    }

    pub async fn relay_map(&self) -> Result<RelayMap, SdkError> {
        self.request::<(), _>(Method::GET, "/api/v2/derp-map", None).await
    }
}

impl Client {
    pub async fn post_agent_metadata(
        &self,
        results: &[AgentMetadataResult],
    ) -> Result<(), SdkError> {
        self.send(Method::POST, "/api/v2/workspaceagents/me/metadata", Some(results)).await?;
        Ok(())
    }

    /// Reports app health changes (agent token).
    pub async fn patch_agent_app_health(
        &self,
        req: &PatchAppHealthRequest,
    ) -> Result<(), SdkError> {
        self.send(Method::PATCH, "/api/v2/workspaceagents/me/app-health", Some(req)).await?;
        Ok(())
    }

    pub async fn agent_metadata(&self, agent: Uuid) -> Result<Vec<AgentMetadataResult>, SdkError> {
        self.request::<(), _>(
            Method::GET,
            &format!("/api/v2/workspaceagents/{agent}/metadata"),
            None,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An HTTP/1.1 server answering every request with `response(path)`;
    /// counts the requests and remembers whether any carried the token header.
    async fn server(
        response: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> (Url, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let (requests, with_token) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (r, t) = (requests.clone(), with_token.clone());
        let response = Arc::new(response);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                r.fetch_add(1, Ordering::SeqCst);
                if head.contains(&SESSION_TOKEN_HEADER.to_ascii_lowercase()) {
                    t.fetch_add(1, Ordering::SeqCst);
                }
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let _ = conn.write_all(response(&path).as_bytes()).await;
            }
        });
        (url, requests, with_token)
    }

    fn redirect(to: &str) -> String {
        format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    }

    #[tokio::test]
    async fn the_token_never_follows_a_redirect_to_another_origin() {
        let (elsewhere, requests, _) = server(|_| redirect("/")).await;
        let target = elsewhere.join("steal").unwrap().to_string();
        let (base, _, _) = server(move |_| redirect(&target)).await;
        let client = Client::new(base.clone()).with_token("secret-token");
        let resp = client
            .http
            .get(base.join("api/v2/users/me").unwrap())
            .header(SESSION_TOKEN_HEADER, "secret-token")
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            reqwest::StatusCode::FOUND,
            "the redirect is returned, not followed"
        );
        assert_eq!(requests.load(Ordering::SeqCst), 0, "the other origin was contacted");
    }

    #[tokio::test]
    async fn redirects_within_the_deployment_are_followed() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
        let (base, requests, with_token) =
            server(move |path| if path == "/old" { redirect("/new") } else { ok.to_owned() }).await;
        let resp = Client::new(base.clone())
            .http
            .get(base.join("old").unwrap())
            .header(SESSION_TOKEN_HEADER, "secret-token")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::OK);
        assert_eq!(requests.load(Ordering::SeqCst), 2);
        assert_eq!(with_token.load(Ordering::SeqCst), 2);
    }
}
