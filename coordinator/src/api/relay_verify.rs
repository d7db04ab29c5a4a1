//! `POST /api/v2/derp/verify-client`: whether a node key may use a relay,
//! asked by `derper --verify-clients` (`docs/protocols/relay.md`, "Client
//! verification").
//!
//! The route exists only when `coderd server --derp-verify-clients-psk-file`
//! configured a [`RelayVerifyKey`] (a request extension); otherwise, and to
//! anyone without that secret, it answers as an unknown route would, so
//! it tells anonymous callers nothing about which keys are connected. The
//! secret is checked before the body is read.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Extension;
use derp::server::{VerifyClientRequest, VerifyClientResponse};

use super::error::{ApiError, ApiResult, Json};
use super::AppState;
use crate::relay::{PeerKeys, RelayVerifyKey};

pub(super) async fn verify_client(
    State(state): State<AppState>,
    key: Option<Extension<RelayVerifyKey>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<VerifyClientResponse>> {
    let Some(Extension(key)) = key else {
        return Err(ApiError::not_found("Route"));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !key.matches(presented.as_bytes()) {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "The relay verification secret is missing or wrong.")
            .detail("Give derper --verify-clients-psk-file the file coderd's --derp-verify-clients-psk-file names."));
    }
    let request: VerifyClientRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("The body must be {\"node_key\": \"nodekey:<64 hex digits>\"}.")
            .detail(e.to_string())
    })?;
    let node_key: mesh::NodeKey = request.node_key.parse().map_err(|e: mesh::KeyParseError| {
        ApiError::bad_request("node_key is not a node key.").detail(e.to_string())
    })?;
    let allow = PeerKeys::new(state.db.clone(), state.pubsub.clone())
        .is_known(&node_key)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(VerifyClientResponse { allow }))
}
