//! `GET /api/v1/calls/analytics`: call analytics (see `calls::analytics`). The query's
//! fields are read as text and checked here, so that each bad one is a 400 naming it.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use utoipa::IntoParams;

use super::docs::Success;
use super::error::ErrorBody;
use super::extract::Auth;
use super::{ApiResult, AppState, ok};
use crate::calls::analytics::{self, FieldError, Kind, Period, Report, Scope, Window};
use crate::wire::Failure;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AnalyticsQuery {
    /// The window's length when `from` or `to` is missing (default `week`).
    #[param(value_type = Option<Period>)]
    period: Option<String>,
    /// The window's start (inclusive): an RFC 3339 instant or a UTC date
    /// (`2024-03-01`); default one period before `to`.
    from: Option<String>,
    /// The window's end (exclusive; a date includes that day); default now.
    to: Option<String>,
    /// `app` (default) or `phone` (admins only).
    #[param(value_type = Option<Kind>)]
    kind: Option<String>,
}

impl From<FieldError> for Failure {
    fn from(e: FieldError) -> Self {
        Failure::invalid(e.field, e.message)
    }
}

fn field<T: std::str::FromStr<Err = &'static str>>(
    name: &'static str,
    value: Option<&str>,
    default: T,
) -> Result<T, Failure> {
    value.map_or(Ok(default), |v| {
        v.parse().map_err(|rule| Failure::invalid(name, rule))
    })
}

/// Call analytics over a window (`period`, `from`, `to`), of Huddle's calls or (`kind`)
/// phone calls: over the caller's own calls, or everyone's with per-user rows for an admin. Phone calls
/// belong to no Huddle user, so `kind=phone` is for admins only.
#[utoipa::path(
    get,
    path = "/api/v1/calls/analytics",
    tag = "analytics",
    security(("bearer" = []), ("bearer" = ["admin"])),
    params(AnalyticsQuery),
    responses(
        (status = 200, description = "The report: the caller's calls, or everyone's with a row per user or number for an admin", body = Success<Report>),
        (status = 400, description = "`VALIDATION_ERROR` (with `field`): a bad `kind`, `period`, `from` or `to`, a backwards window or one over 366 days, a field given twice", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: `kind=phone` without an admin token", body = ErrorBody),
        (status = 500, description = "`INTERNAL_ERROR`", body = ErrorBody),
    )
)]
pub async fn analytics(
    State(state): State<AppState>,
    Auth(me): Auth,
    query: Result<Query<AnalyticsQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = query.map_err(|e| Failure::invalid("query", e.body_text()))?;
    let period = field("period", q.period.as_deref(), Period::Week)?;
    let kind = field("kind", q.kind.as_deref(), Kind::App)?;
    let window = Window::of(
        period,
        q.from.as_deref(),
        q.to.as_deref(),
        state.service.now(),
    )?;
    let scope = if me.admin {
        Scope::All
    } else if kind == Kind::Phone {
        return Err(Failure::forbidden(
            "phone call analytics need an admin token: phone calls belong to no Huddle user",
        ));
    } else {
        Scope::Member(me.id)
    };
    let query = analytics::Query {
        kind,
        period,
        window,
        scope,
    };
    ok(state.service.analytics(&query).await?)
}
