//! `GET /api/v2/replicas`: the deployment's coderd replicas and their
//! health as the answering replica sees them (owners only). The registry
//! is a request extension `coderd server` adds; a router without one (an
//! in-process test server) reports the table with heartbeat health only.

use axum::extract::State;
use axum::Extension;

use super::auth::Session;
use super::error::{ApiResult, Json};
use super::AppState;
use crate::authz::{Action, Object};
use crate::replicas::{self, ReplicaConfig, ReplicaRegistry, Viewpoint};

pub(super) async fn list(
    session: Session,
    State(state): State<AppState>,
    registry: Option<Extension<ReplicaRegistry>>,
) -> ApiResult<Json<Vec<codersdk::Replica>>> {
    session.authorize(Action::Read, Object::Replicas)?;
    let all = match registry {
        Some(Extension(registry)) => registry.report(state.relay.as_ref()).await?,
        None => {
            let deadline = ReplicaConfig::default().heartbeat_deadline;
            replicas::report(&state.db, Viewpoint { deadline, ..Viewpoint::default() }).await?
        }
    };
    Ok(Json(all))
}
