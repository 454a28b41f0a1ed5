//! `Position`: where a source is in MongoDB's history — a change-stream resume token or an
//! oplog timestamp — and its round trip through the checkpoint row (`source` text +
//! `resume_token` jsonb). One type for both sources so the pipeline never cares which it runs.

use std::cmp::Ordering;

use bson::{Bson, Document, Timestamp};
use chrono::{DateTime, Utc};

use crate::sink::Checkpoint;

/// `checkpoints.source` for a change-stream position.
pub const SOURCE_CHANGE_STREAM: &str = "change_stream";
/// `checkpoints.source` for an oplog position.
pub const SOURCE_OPLOG: &str = "oplog";

/// A point in MongoDB's history. Every event carries the position *after* it: resuming there
/// replays nothing already applied and skips nothing not yet applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Position {
    /// A change-stream resume token (`{_data: "<hex>"}`), opaque to us except for its
    /// cluster-time prefix (see [`token_cluster_time`]).
    ChangeStream {
        token: Document,
        cluster_time: Option<Timestamp>,
    },
    /// The `ts` of the last oplog entry read.
    Oplog { ts: Timestamp },
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PositionError {
    #[error("checkpoint source {0:?} is neither \"change_stream\" nor \"oplog\"")]
    UnknownSource(String),
    #[error("checkpoint resume_token {0} is not a valid {1} position")]
    Malformed(String, &'static str),
}

impl Position {
    /// A change-stream position; the cluster time comes from the token when it can be decoded,
    /// else from `fallback` (the event's `clusterTime`).
    pub fn change_stream(token: Document, fallback: Option<Timestamp>) -> Position {
        let cluster_time = token_cluster_time(&token).or(fallback);
        Position::ChangeStream {
            token,
            cluster_time,
        }
    }

    /// The `checkpoints.source` value for this kind of position.
    pub fn source_name(&self) -> &'static str {
        match self {
            Position::ChangeStream { .. } => SOURCE_CHANGE_STREAM,
            Position::Oplog { .. } => SOURCE_OPLOG,
        }
    }

    /// The cluster time this position stands at, when known.
    pub fn cluster_time(&self) -> Option<Timestamp> {
        match self {
            Position::ChangeStream { cluster_time, .. } => *cluster_time,
            Position::Oplog { ts } => Some(*ts),
        }
    }

    /// The `resume_token` jsonb: the token as relaxed extended JSON (`{"_data": "82..."}`), or
    /// `{"ts": {"t": secs, "i": inc}}` for the oplog.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Position::ChangeStream { token, .. } => {
                Bson::Document(token.clone()).into_relaxed_extjson()
            }
            Position::Oplog { ts } => serde_json::json!({"ts": {"t": ts.time, "i": ts.increment}}),
        }
    }

    /// Reads a position back from a checkpoint row.
    pub fn from_json(source: &str, value: &serde_json::Value) -> Result<Position, PositionError> {
        match source {
            SOURCE_CHANGE_STREAM => match Bson::try_from(value.clone()) {
                Ok(Bson::Document(token)) if !token.is_empty() => {
                    Ok(Position::change_stream(token, None))
                }
                _ => Err(PositionError::Malformed(value.to_string(), "change-stream")),
            },
            SOURCE_OPLOG => {
                let ts = value.get("ts");
                let part = |k: &str| {
                    ts.and_then(|t| t.get(k))
                        .and_then(serde_json::Value::as_u64)
                        .and_then(|v| u32::try_from(v).ok())
                };
                match (part("t"), part("i")) {
                    (Some(time), Some(increment)) => Ok(Position::Oplog {
                        ts: Timestamp { time, increment },
                    }),
                    _ => Err(PositionError::Malformed(value.to_string(), "oplog")),
                }
            }
            other => Err(PositionError::UnknownSource(other.to_owned())),
        }
    }

    /// The checkpoint row that records this position for `stream`.
    pub fn to_checkpoint(&self, stream: &str) -> Checkpoint {
        Checkpoint {
            stream: stream.to_owned(),
            source: self.source_name().to_owned(),
            resume_token: self.to_json(),
            cluster_time: self.cluster_time().and_then(timestamp_to_utc),
        }
    }

    /// Reads a checkpoint row back (the inverse of [`Position::to_checkpoint`]).
    pub fn from_checkpoint(checkpoint: &Checkpoint) -> Result<Position, PositionError> {
        Position::from_json(&checkpoint.source, &checkpoint.resume_token)
    }

    /// Orders two positions of the same source. Oplog positions order by `ts`; resume tokens by
    /// their `_data` string, which real servers encode so that byte order is history order.
    /// `None` when the kinds differ or a token is not the usual hex string.
    pub fn compare(&self, other: &Position) -> Option<Ordering> {
        match (self, other) {
            (Position::Oplog { ts: a }, Position::Oplog { ts: b }) => Some(ts_cmp(*a, *b)),
            (Position::ChangeStream { token: a, .. }, Position::ChangeStream { token: b, .. }) => {
                match (a.get_str("_data"), b.get_str("_data")) {
                    (Ok(a), Ok(b)) => Some(a.cmp(b)),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// Orders timestamps by (seconds, increment), the oplog's order.
pub fn ts_cmp(a: Timestamp, b: Timestamp) -> Ordering {
    (a.time, a.increment).cmp(&(b.time, b.increment))
}

/// Decodes the cluster time at the front of a resume token.
///
/// Real servers (4.2+) encode `_data` as an upper-case hex KeyString whose first byte is `0x82`
/// (a Timestamp type tag) followed by the 8-byte big-endian timestamp (seconds, increment), so
/// the first 18 hex characters hold the cluster time. Drivers treat tokens as opaque; we only
/// read this to report lag and fill `checkpoints.cluster_time`, and fall back to the event's
/// `clusterTime` when the token does not look like that.
pub fn token_cluster_time(token: &Document) -> Option<Timestamp> {
    let data = token.get_str("_data").ok()?;
    let head = data.get(..18)?;
    if !head[..2].eq_ignore_ascii_case("82") {
        return None;
    }
    let time = u32::from_str_radix(&head[2..10], 16).ok()?;
    let increment = u32::from_str_radix(&head[10..18], 16).ok()?;
    Some(Timestamp { time, increment })
}

/// A cluster time as a wall-clock instant (seconds precision, as the timestamp has).
pub fn timestamp_to_utc(ts: Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(i64::from(ts.time), 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn decodes_cluster_time_from_real_token() {
        // High-water-mark token from debezium's resume_tokens.json (a real server's token).
        let token = doc! {"_data": "82612F653E000000022B0229296E04"};
        let ts = token_cluster_time(&token).unwrap();
        assert_eq!(
            ts,
            Timestamp {
                time: 0x612F653E,
                increment: 2
            }
        );
    }

    #[test]
    fn undecodable_token_falls_back_to_event_time() {
        let fallback = Timestamp {
            time: 7,
            increment: 1,
        };
        let p = Position::change_stream(doc! {"_data": "zz"}, Some(fallback));
        assert_eq!(p.cluster_time(), Some(fallback));
        let p = Position::change_stream(doc! {"_data": "82"}, None);
        assert_eq!(p.cluster_time(), None);
    }

    #[test]
    fn change_stream_position_round_trips_through_checkpoint() {
        let p = Position::change_stream(
            doc! {"_data": "8265000001000000032B042C0100296E5A1004"},
            None,
        );
        let cp = p.to_checkpoint("default");
        assert_eq!(cp.source, "change_stream");
        assert_eq!(
            cp.resume_token,
            serde_json::json!({"_data": "8265000001000000032B042C0100296E5A1004"})
        );
        assert_eq!(cp.cluster_time.unwrap().timestamp(), 0x65000001);
        assert_eq!(Position::from_checkpoint(&cp).unwrap(), p);
    }

    #[test]
    fn oplog_position_round_trips_through_checkpoint() {
        let p = Position::Oplog {
            ts: Timestamp {
                time: 1_700_000_000,
                increment: 42,
            },
        };
        let cp = p.to_checkpoint("s");
        assert_eq!(
            cp.resume_token,
            serde_json::json!({"ts": {"t": 1_700_000_000u32, "i": 42}})
        );
        assert_eq!(Position::from_checkpoint(&cp).unwrap(), p);
    }

    #[test]
    fn malformed_checkpoints_are_refused() {
        assert!(matches!(
            Position::from_json("kafka", &serde_json::json!({})),
            Err(PositionError::UnknownSource(_))
        ));
        assert!(Position::from_json("oplog", &serde_json::json!({"ts": 5})).is_err());
        assert!(Position::from_json("change_stream", &serde_json::json!({})).is_err());
    }

    #[test]
    fn positions_order_within_a_source() {
        let a = Position::Oplog {
            ts: Timestamp {
                time: 5,
                increment: 9,
            },
        };
        let b = Position::Oplog {
            ts: Timestamp {
                time: 6,
                increment: 1,
            },
        };
        assert_eq!(a.compare(&b), Some(Ordering::Less));
        let c = Position::change_stream(doc! {"_data": "8200000005000000092B"}, None);
        let d = Position::change_stream(doc! {"_data": "8200000006000000012B"}, None);
        assert_eq!(c.compare(&d), Some(Ordering::Less));
        assert_eq!(a.compare(&c), None);
    }
}
