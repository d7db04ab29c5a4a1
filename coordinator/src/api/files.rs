//! Files: template source archives, content-addressed by SHA-256.
//!
//! `POST /api/v2/files` takes a tar (gzip accepted) up to the configured
//! size and answers with the file's id; uploading the same bytes again
//! returns the same id. The archive is checked here only for its kind; the
//! worker extracts it with path-traversal and size checks.
//!
//! `GET /api/v2/files/{id}` answers the uploader and site owners only;
//! anyone else gets 404, as for a missing file. A template's source may hold
//! secrets, and Coder lets a non-uploader read a file only with the right to
//! *update* a template that uses it, which here only site owners have
//! (templates are owner-managed).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use codersdk::UploadResponse;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::auth::Session;
use super::error::{ApiError, ApiResult, Json, Path};
use super::AppState;
use crate::authz::{Action, Object};
use crate::database::files;

const ACCEPTED: [&str; 4] =
    ["application/x-tar", "application/tar", "application/gzip", "application/x-gzip"];

pub async fn upload(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<UploadResponse>)> {
    session.authorize(Action::Create, Object::File { created_by: session.user.id })?;
    let limit = state.config.max_file_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("File is too large (the limit is {} MiB).", limit >> 20),
        )
    };
    // Past the limit, keep reading (up to a bound) and discard, so the client
    // gets to read the 413 instead of a connection reset mid-upload.
    let drain_limit = limit.saturating_mul(4);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > drain_limit) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut data: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    let mut seen = 0usize;
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(|_| ApiError::bad_request("Could not read the upload."))?;
        seen = seen.saturating_add(chunk.len());
        if seen > drain_limit {
            break;
        }
        if seen <= limit {
            data.extend_from_slice(&chunk);
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    let body = Bytes::from(data);
    let mimetype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !ACCEPTED.contains(&mimetype.as_str()) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Upload a tar archive (Content-Type: application/x-tar or application/gzip).",
        ));
    }
    if body.is_empty() {
        return Err(ApiError::bad_request("The upload is empty."));
    }
    let hash = hex::encode(Sha256::digest(&body));
    let existing = files::by_hash(&state.db, &hash).await?;
    if let Some(id) = existing {
        return Ok((StatusCode::OK, Json(UploadResponse { hash: id })));
    }
    let id = files::insert(&state.db, &hash, &mimetype, &body, session.user.id).await?;
    Ok((StatusCode::CREATED, Json(UploadResponse { hash: id })))
}

pub async fn download(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Response> {
    let row = files::by_id(&state.db, id).await?;
    let (mimetype, data) = row
        .filter(|f| session.may(Action::Read, Object::File { created_by: f.created_by }))
        .map(|f| (f.mimetype, f.data))
        .ok_or_else(|| ApiError::not_found("File"))?;
    Ok(([(header::CONTENT_TYPE, mimetype)], data).into_response())
}
