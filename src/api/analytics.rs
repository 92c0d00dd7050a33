//! `GET /api/v1/calls/analytics`: call analytics (see `calls::analytics`). The query's
//! fields are read as text and checked here, so that each bad one is a 400 naming it.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::extract::Auth;
use crate::calls::analytics::{self, FieldError, Kind, Period, Scope, Window};
use crate::wire::Failure;

#[derive(Debug, Deserialize)]
pub struct AnalyticsQuery {
    period: Option<String>,
    from: Option<String>,
    to: Option<String>,
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

/// `GET /api/v1/calls/analytics?period=day|week|month&from&to&kind=app|phone`: over
/// the caller's own calls, or everyone's with per-user rows for an admin. Phone calls
/// belong to no Huddle user, so `kind=phone` is for admins only.
pub async fn analytics(
    State(state): State<AppState>,
    Auth(me): Auth,
    query: Result<Query<AnalyticsQuery>, QueryRejection>,
) -> Result<Json<Value>, Failure> {
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
    let report = state.service.analytics(&query).await?;
    Ok(Json(json!({ "success": true, "data": report })))
}
