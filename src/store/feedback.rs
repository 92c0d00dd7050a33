//! Call feedback (`call_feedback`): one row per participant and call, kept so by a
//! unique index whichever node stores it; categories are JSON text.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Pool, Store, StoreError};
use crate::calls::feedback::Feedback;
use crate::calls::model::CallId;

#[derive(Debug, sqlx::FromRow)]
struct FeedbackRow {
    call_id: String,
    user_id: String,
    rating: i64,
    comment: Option<String>,
    categories: Option<String>,
    created_at: DateTime<Utc>,
}

impl TryFrom<FeedbackRow> for Feedback {
    type Error = StoreError;

    fn try_from(row: FeedbackRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!(
                "call_feedback {}/{}: {what}: {e}",
                row.call_id, row.user_id
            ))
        };
        let categories = match &row.categories {
            Some(text) => serde_json::from_str(text).map_err(|e| corrupt("categories", &e))?,
            None => Vec::new(),
        };
        Ok(Feedback {
            call_id: row.call_id.parse().map_err(|e| corrupt("call_id", &e))?,
            user_id: row.user_id,
            rating: row.rating,
            comment: row.comment,
            categories,
            created_at: row.created_at,
        })
    }
}

impl Store {
    /// Stores `feedback`; `false`, storing nothing, when its user gave some on its
    /// call already.
    pub async fn insert_feedback(&self, feedback: &Feedback) -> Result<bool, StoreError> {
        let categories = serde_json::to_string(&feedback.categories)
            .map_err(|e| StoreError::Corrupt(format!("feedback categories: {e}")))?;
        let inserted = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO call_feedback (id, call_id, user_id, rating, comment, categories, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(Uuid::new_v4().to_string())
            .bind(feedback.call_id.to_string())
            .bind(&feedback.user_id)
            .bind(feedback.rating)
            .bind(feedback.comment.as_deref())
            .bind(categories)
            .bind(feedback.created_at)
            .execute(pool)
            .await
            .map(drop)
        });
        match inserted {
            Ok(()) => Ok(true),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The feedback on `call`, oldest first.
    pub async fn feedback_of(&self, call: CallId) -> Result<Vec<Feedback>, StoreError> {
        let rows: Vec<FeedbackRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT call_id, user_id, CAST(rating AS BIGINT) AS rating, comment, categories, \
                 created_at FROM call_feedback WHERE call_id = $1 ORDER BY created_at, user_id",
            )
            .bind(call.to_string())
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(Feedback::try_from).collect()
    }
}
