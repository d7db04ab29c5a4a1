//! A typed HTTP client for `/api/v2`. Every call returns the decoded body or
//! an [`SdkError`] that carries the server's `{message, detail}`.

use reqwest::{Method, StatusCode};
use serde::{de::DeserializeOwned, Serialize};
use url::Url;

use super::types::*;

/// Header that carries a session or API token.
pub const SESSION_TOKEN_HEADER: &str = "Coder-Session-Token";
/// Cookie that carries a session token (browsers).
pub const SESSION_TOKEN_COOKIE: &str = "coder_session_token";

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

/// A client for one deployment, optionally authenticated.
#[derive(Debug, Clone)]
pub struct Client {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: Url) -> Self {
        Client { base, token: None, http: reqwest::Client::new() }
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
        let mut req = self.http.request(method, url.clone());
        if let Some(token) = &self.token {
            req = req.header(SESSION_TOKEN_HEADER, token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp =
            req.send().await.map_err(|source| SdkError::Http { url: url.to_string(), source })?;
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

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
