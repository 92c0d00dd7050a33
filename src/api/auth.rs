//! `/api/v1/auth`: accounts for deployments without an identity service of their
//! own (AUTH_ACCOUNTS): register, log in, refresh. Off, each answers 404
//! `ACCOUNTS_DISABLED` before reading its body. The rules are `users::accounts`'.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;

use super::docs::Success;
use super::error::ErrorBody;
use super::extract::JsonBody;
use super::{ApiResult, AppState, created, ok};
use crate::users::accounts::Session;
use crate::wire::Failure;

/// AUTH_ACCOUNTS is on (else 404 `ACCOUNTS_DISABLED`).
#[derive(Debug)]
pub struct AccountsOn;

impl FromRequestParts<AppState> for AccountsOn {
    type Rejection = Failure;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Self, Failure> {
        state.accounts.check_enabled().map(|()| AccountsOn)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    /// 3 to 64 of `A-Z a-z 0-9 . _ @ -`; stored (and matched) in lower case.
    #[schema(min_length = 3, max_length = 64, pattern = "^[A-Za-z0-9._@-]+$")]
    username: String,
    /// 8 to 256 characters.
    #[schema(min_length = 8, max_length = 256)]
    password: String,
    /// Up to 128 characters; default: the username.
    display_name: Option<String>,
}

/// Makes an account (a customer) and logs it in.
#[utoipa::path(
    post,
    path = "/api/v1/auth/register",
    tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "The new user, logged in", body = Success<Session>),
        (status = 400, description = "`VALIDATION_ERROR`: a bad `username`, `password` or `displayName`", body = ErrorBody),
        (status = 404, description = "`ACCOUNTS_DISABLED`: AUTH_ACCOUNTS is off", body = ErrorBody),
        (status = 409, description = "`USERNAME_TAKEN`", body = ErrorBody),
        (status = 500, description = "`INTERNAL_ERROR`", body = ErrorBody),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    _: AccountsOn,
    JsonBody(body): JsonBody<RegisterRequest>,
) -> Result<Response, Failure> {
    let session = state
        .accounts
        .register(&body.username, body.password, body.display_name)
        .await?;
    created(session)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    username: String,
    password: String,
}

/// Logs in with a username and password.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = Success<Session>),
        (status = 400, description = "`VALIDATION_ERROR`: a field missing or not a string", body = ErrorBody),
        (status = 401, description = "`INVALID_CREDENTIALS`: no such username, or the wrong password (alike)", body = ErrorBody),
        (status = 404, description = "`ACCOUNTS_DISABLED`: AUTH_ACCOUNTS is off", body = ErrorBody),
        (status = 429, description = "`TOO_MANY_ATTEMPTS`: 5 wrong passwords for this username within 15 minutes lock it for 15 minutes (`Retry-After`); `RATE_LIMITED`", body = ErrorBody),
        (status = 500, description = "`INTERNAL_ERROR`", body = ErrorBody),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    _: AccountsOn,
    JsonBody(body): JsonBody<LoginRequest>,
) -> ApiResult {
    ok(state.accounts.login(&body.username, body.password).await?)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshRequest {
    refresh_token: String,
}

/// A new access token and refresh token for a refresh token, which is used up.
#[utoipa::path(
    post,
    path = "/api/v1/auth/refresh",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new session; the refresh token given is used up", body = Success<Session>),
        (status = 400, description = "`VALIDATION_ERROR`: `refreshToken` missing or not a string", body = ErrorBody),
        (status = 401, description = "`INVALID_REFRESH_TOKEN`, `REFRESH_TOKEN_EXPIRED`; `REFRESH_TOKEN_REUSED`: used already, and every token of its family is revoked", body = ErrorBody),
        (status = 404, description = "`ACCOUNTS_DISABLED`: AUTH_ACCOUNTS is off", body = ErrorBody),
        (status = 500, description = "`INTERNAL_ERROR`", body = ErrorBody),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    _: AccountsOn,
    JsonBody(body): JsonBody<RefreshRequest>,
) -> ApiResult {
    ok(state.accounts.refresh(&body.refresh_token).await?)
}
