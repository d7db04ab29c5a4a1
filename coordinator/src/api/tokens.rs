//! Personal API tokens: create, list, delete. A token is shown once, at
//! creation; afterwards only its id, name and times are listed.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Duration;
use codersdk::{ApiKey, CreateTokenRequest, GenerateApiKeyResponse};

use super::auth::{issue_token, Session};
use super::error::{ApiError, ApiResult, Json, Path};
use super::users::resolve_user;
use super::AppState;
use crate::authz::{Action, Object};
use crate::database::api_keys;

pub async fn create(
    State(state): State<AppState>,
    session: Session,
    Path(user): Path<String>,
    Json(req): Json<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<GenerateApiKeyResponse>)> {
    let user = resolve_user(&state, &session, &user).await?;
    session.authorize(Action::Create, Object::ApiKey { owner: user.id })?;
    let name = if req.token_name.is_empty() {
        format!("token-{}", crate::secrets::random_string(6).to_lowercase())
    } else {
        req.token_name.clone()
    };
    if name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(ApiError::bad_request("Invalid token name.")
            .detail("Use up to 64 letters, digits, '-', '_' or '.'."));
    }
    let max = state.config.max_token_lifetime;
    let lifetime = match req.lifetime {
        0 => state.config.default_token_lifetime,
        s if s < 0 => return Err(ApiError::bad_request("Token lifetime must be positive.")),
        s if s > max.num_seconds() => {
            return Err(ApiError::bad_request(format!(
                "Token lifetime must be at most {} days.",
                max.num_days()
            )))
        }
        s => Duration::seconds(s),
    };
    match issue_token(&state.db, user.id, "token", Some(&name), lifetime).await {
        Ok(key) => Ok((StatusCode::CREATED, Json(GenerateApiKeyResponse { key }))),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(ApiError::conflict(format!("A token named {name:?} already exists.")))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn list(
    State(state): State<AppState>,
    session: Session,
    Path(user): Path<String>,
) -> ApiResult<Json<Vec<ApiKey>>> {
    let user = resolve_user(&state, &session, &user).await?;
    session.authorize(Action::Read, Object::ApiKey { owner: user.id })?;
    let rows = api_keys::personal_tokens(&state.db, user.id).await?;
    Ok(Json(rows.into_iter().map(api_keys::TokenRow::into_api).collect()))
}

/// Deletes a key by id or token name. Owners may delete anyone's keys.
pub async fn delete(
    State(state): State<AppState>,
    session: Session,
    Path((user, key)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let user = resolve_user(&state, &session, &user).await?;
    session.authorize(Action::Delete, Object::ApiKey { owner: user.id })?;
    if !api_keys::delete_by_id_or_name(&state.db, user.id, &key).await? {
        return Err(ApiError::not_found("Token"));
    }
    Ok(StatusCode::NO_CONTENT)
}
