//! `/api/v1/users`: the caller's profile and, for representatives, the queues they
//! serve and their availability (seed 004's paths). Every request records the caller
//! as seen (the [`Seen`] extractor).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::docs::Success;
use super::error::ErrorBody;
use super::extract::{JsonBody, Seen};
use super::{ApiResult, AppState, ok};
use crate::auth::check_name;
use crate::calls::model::Availability;
use crate::users::{MAX_QUEUES, Profile, ProfileChange};
use crate::wire::Failure;

/// `{ profile }`'s data: the caller's profile.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileData {
    profile: Profile,
}

fn profile_data(profile: Profile) -> ApiResult {
    ok(ProfileData { profile })
}

/// The caller's profile: display name, role, availability, queues.
#[utoipa::path(
    get,
    path = "/api/v1/users/profile",
    tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's profile", body = Success<ProfileData>),
        (status = 403, description = "`FORBIDDEN`: a service token, which is no user", body = ErrorBody),
        (status = 500, description = "`INTERNAL_ERROR`", body = ErrorBody),
    )
)]
pub async fn get_profile(State(state): State<AppState>, Seen(me): Seen) -> ApiResult {
    profile_data(state.users.profile(&me.id).await?)
}

/// At least one of the two.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileUpdate {
    /// Up to 128 characters; blank: none.
    display_name: Option<String>,
    /// The queues the caller serves, exactly these (representatives only; each must
    /// exist).
    #[schema(max_items = 100)]
    queues: Option<Vec<String>>,
}

/// Changes the caller's display name, or the queues a representative serves.
#[utoipa::path(
    put,
    path = "/api/v1/users/profile",
    tag = "users",
    security(("bearer" = [])),
    request_body = ProfileUpdate,
    responses(
        (status = 200, description = "The profile, changed", body = Success<ProfileData>),
        (status = 400, description = "`VALIDATION_ERROR`: neither field, a bad `displayName`, an unknown queue (`field: queues`)", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: `queues` from someone who is not a representative; a service token", body = ErrorBody),
        (status = 500, description = "`INTERNAL_ERROR`", body = ErrorBody),
    )
)]
pub async fn put_profile(
    State(state): State<AppState>,
    Seen(me): Seen,
    JsonBody(body): JsonBody<ProfileUpdate>,
) -> ApiResult {
    if body.display_name.is_none() && body.queues.is_none() {
        return Err(Failure::invalid("body", "give displayName or queues"));
    }
    if let Some(name) = &body.display_name {
        check_name(name).map_err(|rule| Failure::invalid("displayName", rule))?;
    }
    if body.queues.as_ref().is_some_and(|q| q.len() > MAX_QUEUES) {
        return Err(Failure::invalid(
            "queues",
            format!("at most {MAX_QUEUES} queues"),
        ));
    }
    let change = ProfileChange {
        display_name: body
            .display_name
            .map(|name| Some(name).filter(|n| !n.trim().is_empty())),
        queues: body.queues,
    };
    profile_data(state.users.update(&me, change).await?)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AvailabilityUpdate {
    status: Availability,
}

/// A representative says whether they take customers: `available`, `busy` or
/// `offline`.
#[utoipa::path(
    put,
    path = "/api/v1/users/availability",
    tag = "users",
    security(("bearer" = ["representative"])),
    request_body = AvailabilityUpdate,
    responses(
        (status = 200, description = "The profile, with its availability", body = Success<ProfileData>),
        (status = 400, description = "`VALIDATION_ERROR` (`field: status`)", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: not a representative", body = ErrorBody),
        (status = 500, description = "`INTERNAL_ERROR`", body = ErrorBody),
    )
)]
pub async fn put_availability(
    State(state): State<AppState>,
    Seen(me): Seen,
    JsonBody(body): JsonBody<AvailabilityUpdate>,
) -> ApiResult {
    profile_data(state.users.set_availability(&me, body.status).await?)
}
