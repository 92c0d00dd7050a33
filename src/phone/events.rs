//! The events a telephone system posts, checked and normalized before anything is
//! stored. Two shapes are understood, one object or an array of up to
//! [`MAX_BATCH`] of either:
//!
//! - seed 002: `{ event_id, call_id, event: INITIATE | ANSWER | DISCONNECT,
//!   calling_number, called_number, created_at }`, one event each;
//! - seed 000: `{ call_id, from, to, started, ended? }`, a call's start and, when
//!   `ended` is given, its end: a `START` and an `END` event, whose ids are derived
//!   from the call and those fields, so that posting the same object again is a
//!   duplicate.
//!
//! Numbers are normalized to E.164 ([`Numbers`]); times are RFC 3339, kept to the
//! millisecond. Fields other than these are ignored.

use chrono::{DateTime, DurationRound, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::number::Numbers;
use crate::auth::check_id;

/// Most events in one request.
pub const MAX_BATCH: usize = 1000;

/// What happened to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// Seed 002: the call was placed.
    Initiate,
    /// Seed 002: the called party picked up.
    Answer,
    /// Seed 002: the call was hung up (answered or not).
    Disconnect,
    /// Seed 000: the call started.
    Start,
    /// Seed 000: the call ended.
    End,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::Initiate,
        EventKind::Answer,
        EventKind::Disconnect,
        EventKind::Start,
        EventKind::End,
    ];

    /// As stored in `phone_call_events.event`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Initiate => "INITIATE",
            EventKind::Answer => "ANSWER",
            EventKind::Disconnect => "DISCONNECT",
            EventKind::Start => "START",
            EventKind::End => "END",
        }
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown phone event `{s}`"))
    }
}

/// One checked event, numbers in E.164.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneEvent {
    /// The idempotency key: the sender's `event_id`, or derived (seed 000).
    pub event_id: String,
    /// The telephone system's `call_id`.
    pub call_id: String,
    pub kind: EventKind,
    pub calling_number: Option<String>,
    pub called_number: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// A field of the request is wrong: `field` is its path (`called_number`, or
/// `[3].called_number` in an array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The events of a request body (one object or an array), all checked: the first
/// problem found is reported and no event is returned.
pub fn parse_body(body: &Value, numbers: &Numbers) -> Result<Vec<PhoneEvent>, Invalid> {
    match body {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(invalid("body", "an empty array holds no event"));
            }
            if items.len() > MAX_BATCH {
                return Err(invalid(
                    "body",
                    format!(
                        "a batch holds at most {MAX_BATCH} events (got {})",
                        items.len()
                    ),
                ));
            }
            let mut events = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                events.extend(parse_one(item, &format!("[{i}]."), numbers)?);
            }
            Ok(events)
        }
        item => parse_one(item, "", numbers),
    }
}

/// The event(s) of one object; `at` prefixes field names (`[3].`).
fn parse_one(item: &Value, at: &str, numbers: &Numbers) -> Result<Vec<PhoneEvent>, Invalid> {
    let Value::Object(fields) = item else {
        let field = if at.is_empty() {
            "body".to_owned()
        } else {
            at.trim_end_matches('.').to_owned()
        };
        return Err(invalid(field, "must be an event object"));
    };
    let f = Fields { fields, at };
    if fields.contains_key("event") || fields.contains_key("event_id") {
        seed_002(&f, numbers).map(|e| vec![e])
    } else if ["from", "to", "started"]
        .iter()
        .any(|k| fields.contains_key(*k))
    {
        seed_000(&f, numbers)
    } else {
        Err(invalid(
            f.name("event"),
            "is required (an event has event_id, call_id, event, calling_number, \
             called_number, created_at; or call_id, from, to, started, ended?)",
        ))
    }
}

/// `{ event_id, call_id, event, calling_number, called_number, created_at }`
fn seed_002(f: &Fields<'_>, numbers: &Numbers) -> Result<PhoneEvent, Invalid> {
    let event_id = f.id("event_id")?;
    let call_id = f.id("call_id")?;
    let kind = f
        .text("event")?
        .parse::<EventKind>()
        .ok()
        .filter(|k| {
            matches!(
                k,
                EventKind::Initiate | EventKind::Answer | EventKind::Disconnect
            )
        })
        .ok_or_else(|| invalid(f.name("event"), "must be INITIATE, ANSWER or DISCONNECT"))?;
    Ok(PhoneEvent {
        event_id,
        call_id,
        kind,
        calling_number: Some(f.number("calling_number", numbers)?),
        called_number: Some(f.number("called_number", numbers)?),
        occurred_at: f.time("created_at")?,
    })
}

/// `{ call_id, from, to, started, ended? }`: a START event, and an END one if ended.
fn seed_000(f: &Fields<'_>, numbers: &Numbers) -> Result<Vec<PhoneEvent>, Invalid> {
    let call_id = f.id("call_id")?;
    let from = f.number("from", numbers)?;
    let to = f.number("to", numbers)?;
    let started = f.time("started")?;
    let ended = match f.fields.get("ended") {
        None | Some(Value::Null) => None,
        Some(_) => Some(f.time("ended")?),
    };
    if ended.is_some_and(|ended| ended < started) {
        return Err(invalid(f.name("ended"), "must not be before started"));
    }
    let event = |kind: EventKind, at: DateTime<Utc>| PhoneEvent {
        event_id: derived_id(kind, &call_id, &from, &to, at),
        call_id: call_id.clone(),
        kind,
        calling_number: Some(from.clone()),
        called_number: Some(to.clone()),
        occurred_at: at,
    };
    let mut events = vec![event(EventKind::Start, started)];
    events.extend(ended.map(|at| event(EventKind::End, at)));
    Ok(events)
}

/// The id of a seed 000 event: the same call and fields give the same id (so a
/// repeated post is a duplicate); the prefix keeps it apart from senders' own ids.
fn derived_id(kind: EventKind, call_id: &str, from: &str, to: &str, at: DateTime<Utc>) -> String {
    let mut hash = Sha256::new();
    for part in [
        kind.as_str(),
        call_id,
        from,
        to,
        &at.timestamp_millis().to_string(),
    ] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("seed000:{}:{hex}", kind.as_str().to_ascii_lowercase())
}

/// The fields of one event object, and where it sits in the request.
struct Fields<'a> {
    fields: &'a Map<String, Value>,
    at: &'a str,
}

impl Fields<'_> {
    fn name(&self, field: &str) -> String {
        format!("{}{field}", self.at)
    }

    fn text(&self, field: &str) -> Result<&str, Invalid> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Err(invalid(self.name(field), "is required")),
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(invalid(self.name(field), "must be a string")),
        }
    }

    /// An id (event_id, call_id) by the rule every id in Huddle follows.
    fn id(&self, field: &str) -> Result<String, Invalid> {
        let text = self.text(field)?;
        check_id(text).map_err(|rule| invalid(self.name(field), rule))?;
        Ok(text.to_owned())
    }

    fn number(&self, field: &str, numbers: &Numbers) -> Result<String, Invalid> {
        numbers
            .normalize(self.text(field)?)
            .map_err(|message| invalid(self.name(field), message))
    }

    fn time(&self, field: &str) -> Result<DateTime<Utc>, Invalid> {
        rfc3339(self.text(field)?).map_err(|message| invalid(self.name(field), message))
    }
}

/// An RFC 3339 time (`2024-04-01T12:00:00Z`, any offset), in UTC to the millisecond.
pub fn rfc3339(text: &str) -> Result<DateTime<Utc>, String> {
    let time = DateTime::parse_from_rfc3339(text.trim())
        .map_err(|_| "must be an RFC 3339 time, e.g. 2024-04-01T12:00:00Z".to_owned())?
        .with_timezone(&Utc);
    Ok(time
        .duration_trunc(chrono::Duration::milliseconds(1))
        .unwrap_or(time))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(body: Value) -> Result<Vec<PhoneEvent>, Invalid> {
        parse_body(&body, &Numbers::default())
    }

    fn field_of(body: Value) -> String {
        parse(body).unwrap_err().field
    }

    fn seed_002_event() -> Value {
        json!({
            "event_id": "e1", "call_id": "c1", "event": "INITIATE",
            "calling_number": "+1 415 555 2671", "called_number": "+442071838750",
            "created_at": "2024-04-01T12:00:00+02:00", "duration": "-"
        })
    }

    #[test]
    fn a_seed_002_event_is_normalized() {
        let events = parse(seed_002_event()).unwrap();
        assert_eq!(
            events,
            [PhoneEvent {
                event_id: "e1".into(),
                call_id: "c1".into(),
                kind: EventKind::Initiate,
                calling_number: Some("+14155552671".into()),
                called_number: Some("+442071838750".into()),
                occurred_at: "2024-04-01T10:00:00Z".parse().unwrap(),
            }]
        );
    }

    #[test]
    fn a_seed_000_event_is_a_start_and_maybe_an_end_with_stable_ids() {
        let start = json!({ "call_id": "c9", "from": "+14155552671", "to": "+14155550100",
                            "started": "2024-04-01T12:00:00Z" });
        let once = parse(start.clone()).unwrap();
        assert_eq!(once.len(), 1);
        assert_eq!(once[0].kind, EventKind::Start);
        assert_eq!(parse(start.clone()).unwrap(), once, "same fields, same id");
        let mut both = start.clone();
        both["ended"] = json!("2024-04-01T12:02:00Z");
        let events = parse(both).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0], once[0], "the start is the same event as before");
        assert_eq!(events[1].kind, EventKind::End);
        let mut other = start;
        other["started"] = json!("2024-04-01T12:00:01Z");
        assert_ne!(parse(other).unwrap()[0].event_id, once[0].event_id);
    }

    #[test]
    fn every_problem_names_its_field() {
        let with = |key: &str, value: Value| {
            let mut e = seed_002_event();
            e[key] = value;
            e
        };
        let without = |key: &str| {
            let mut e = seed_002_event();
            e.as_object_mut().unwrap().remove(key);
            e
        };
        assert_eq!(
            field_of(with("calling_number", json!("12"))),
            "calling_number"
        );
        assert_eq!(
            field_of(with("called_number", json!(4155552671u64))),
            "called_number"
        );
        assert_eq!(
            field_of(with("created_at", json!("yesterday"))),
            "created_at"
        );
        assert_eq!(
            field_of(with("created_at", json!("2024-04-01 12:00"))),
            "created_at"
        );
        assert_eq!(field_of(with("event", json!("RING"))), "event");
        assert_eq!(field_of(with("event", json!("START"))), "event");
        assert_eq!(field_of(with("call_id", json!(""))), "call_id");
        assert_eq!(field_of(without("created_at")), "created_at");
        assert_eq!(field_of(without("event_id")), "event_id");
        assert_eq!(field_of(json!({})), "event");
        assert_eq!(field_of(json!("INITIATE")), "body");
        assert_eq!(field_of(json!([])), "body");
        assert_eq!(field_of(json!([seed_002_event(), 5])), "[1]");
        assert_eq!(
            field_of(json!([seed_002_event(), with("called_number", json!("x"))])),
            "[1].called_number"
        );
        assert_eq!(
            field_of(
                json!({ "call_id": "c", "from": "+14155552671", "to": "+14155550100",
                             "started": "2024-04-01T12:00:00Z", "ended": "2024-04-01T11:00:00Z" })
            ),
            "ended"
        );
        assert_eq!(
            field_of(
                json!({ "call_id": "c", "from": "+14155552671", "started": "2024-04-01T12:00:00Z" })
            ),
            "to"
        );
    }

    #[test]
    fn a_batch_holds_at_most_the_limit() {
        assert_eq!(
            parse(json!(vec![seed_002_event(); MAX_BATCH]))
                .unwrap()
                .len(),
            MAX_BATCH
        );
        let err = parse(json!(vec![seed_002_event(); MAX_BATCH + 1])).unwrap_err();
        assert_eq!(err.field, "body");
        assert!(err.message.contains("1000"), "{}", err.message);
    }

    #[test]
    fn event_names_are_read_in_any_case() {
        assert_eq!("disconnect".parse::<EventKind>(), Ok(EventKind::Disconnect));
        assert!("HANGUP".parse::<EventKind>().is_err());
    }
}
