//! Calls of an outside telephone system (issue 16), tracked from the events it posts,
//! next to Huddle's own calls: so an operator runs one service for both.
//!
//! - [`events`]: the two event shapes understood (seed 002's INITIATE / ANSWER /
//!   DISCONNECT, seed 000's start/end), checked and normalized before anything is
//!   stored; [`number`]: phone numbers to E.164 with libphonenumber's metadata.
//! - [`call`]: a call as a pure function of the set of its events, so that
//!   duplicates and any order of arrival give the same call.
//! - [`PhoneCalls`]: what the doors ask for (storing events, stale calls, the history
//!   of a number), with time from the [`Clock`]. The SQL is in `store::phone`.
//!
//! This module knows nothing of HTTP: `api::phone` serves it.

pub mod call;
pub mod events;
pub mod number;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::clock::Clock;
use crate::store::phone::{Ingested, PhoneHistoryRow};
use crate::store::{Store, StoreError};
use events::{Invalid, PhoneEvent};
use number::Numbers;

/// The settings of phone-call tracking.
#[derive(Debug, Clone, Copy)]
pub struct PhoneSettings {
    /// How numbers without a country code are read (PHONE_DEFAULT_REGION).
    pub numbers: Numbers,
    /// A call started this long ago and not ended is stale (PHONE_STALE_AFTER).
    pub stale_after: Duration,
}

/// A request about phone calls could not be carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneError {
    /// A field of the request is wrong (400).
    #[error("{}: {}", .0.field, .0.message)]
    Invalid(Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Invalid> for PhoneError {
    fn from(e: Invalid) -> Self {
        PhoneError::Invalid(e)
    }
}

/// A page of a number's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPage {
    pub limit: i64,
    pub offset: i64,
    /// Calls placed at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Calls placed before this time.
    pub to: Option<DateTime<Utc>>,
}

/// Phone-call tracking: events in, stale calls and histories out.
#[derive(Debug)]
pub struct PhoneCalls {
    store: Store,
    clock: Arc<dyn Clock>,
    settings: PhoneSettings,
}

impl PhoneCalls {
    pub fn new(store: Store, clock: Arc<dyn Clock>, settings: PhoneSettings) -> Self {
        Self {
            store,
            clock,
            settings,
        }
    }

    pub fn stale_after(&self) -> Duration {
        self.settings.stale_after
    }

    /// Checks a request body (one event or an array) and stores its events, all or
    /// none: a bad event anywhere stores nothing.
    pub async fn ingest(&self, body: &Value) -> Result<Ingested, PhoneError> {
        let events: Vec<PhoneEvent> = events::parse_body(body, &self.settings.numbers)?;
        Ok(self
            .store
            .ingest_phone_events(&events, self.clock.now())
            .await?)
    }

    /// Calls started more than PHONE_STALE_AFTER ago (by the clock) that have not ended.
    pub async fn stale_calls(&self) -> Result<i64, StoreError> {
        self.store
            .stale_phone_calls(self.clock.now() - self.settings.stale_after)
            .await
    }

    /// The ended calls of `number` (any common format, normalized first), newest
    /// first, and how many there are in all.
    pub async fn history(
        &self,
        number: &str,
        page: HistoryPage,
    ) -> Result<(Vec<PhoneHistoryRow>, i64), PhoneError> {
        let number = self.settings.numbers.normalize(number).map_err(|message| {
            PhoneError::Invalid(Invalid {
                field: "number".into(),
                message,
            })
        })?;
        Ok(self
            .store
            .phone_history(&number, page.from, page.to, page.limit, page.offset)
            .await?)
    }
}
