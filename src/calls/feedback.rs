//! Feedback on a call (`call_feedback`): a rating of 1 to 5, a comment and
//! categories, given once by each participant who joined it, after it ended. Shown
//! in the call's details and averaged in its statistics.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::calls::lifecycle::CallError;
use crate::calls::model::{CallId, UserId};
use crate::calls::service::{CallService, ServiceError};
use crate::wire::Failure;

/// Longest comment, in characters.
pub const MAX_COMMENT: usize = 2000;
/// Most categories.
pub const MAX_CATEGORIES: usize = 10;
/// Longest category, in characters.
pub const MAX_CATEGORY: usize = 64;

/// One participant's feedback on a call.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Feedback {
    #[serde(skip)]
    pub call_id: CallId,
    pub user_id: String,
    /// 1 (worst) to 5 (best).
    pub rating: i64,
    pub comment: Option<String>,
    /// The client's own labels (`audio`, `video`, `representative`, ...).
    pub categories: Vec<String>,
    pub created_at: DateTime<Utc>,
}

impl Feedback {
    /// `user`'s feedback on `call` at `now`, checked: 400 naming the field at fault.
    pub fn new(
        call_id: CallId,
        user: &UserId,
        rating: i64,
        comment: Option<String>,
        categories: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<Self, Failure> {
        if !(1..=5).contains(&rating) {
            return Err(Failure::invalid("rating", "must be from 1 to 5"));
        }
        if comment
            .as_ref()
            .is_some_and(|c| c.chars().count() > MAX_COMMENT)
        {
            return Err(Failure::invalid(
                "comment",
                format!("must be at most {MAX_COMMENT} characters"),
            ));
        }
        if categories.len() > MAX_CATEGORIES {
            return Err(Failure::invalid(
                "categories",
                format!("at most {MAX_CATEGORIES} categories"),
            ));
        }
        for (i, category) in categories.iter().enumerate() {
            let len = category.chars().count();
            if len == 0 || len > MAX_CATEGORY || category.chars().any(char::is_control) {
                return Err(Failure::invalid(
                    format!("categories[{i}]"),
                    format!("must be 1 to {MAX_CATEGORY} characters, without control characters"),
                ));
            }
        }
        Ok(Feedback {
            call_id,
            user_id: user.0.clone(),
            rating,
            comment,
            categories,
            created_at: now,
        })
    }
}

/// Stores `feedback` from its user: they must have joined its call (403), the call
/// must have ended (409 `CALL_NOT_ENDED`), and they may give it once (409
/// `FEEDBACK_EXISTS`).
pub async fn give(service: &CallService, feedback: &Feedback) -> Result<(), Failure> {
    let user = UserId(feedback.user_id.clone());
    let call = service.get(&user, feedback.call_id).await?;
    if call.member(&user).is_none_or(|p| p.joined_at.is_none()) {
        return Err(ServiceError::from(CallError::NotMember).into());
    }
    if call.call.state.is_active() {
        return Err(Failure::new(
            StatusCode::CONFLICT,
            "CALL_NOT_ENDED",
            "feedback is given once the call has ended",
        ));
    }
    if !service.store().insert_feedback(feedback).await? {
        return Err(Failure::new(
            StatusCode::CONFLICT,
            "FEEDBACK_EXISTS",
            "you gave feedback on this call already",
        ));
    }
    Ok(())
}
