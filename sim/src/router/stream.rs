//! Change streams through mongos: one stream per shard, started at the same cluster time, and
//! their events merged in resume-token order (cluster time first: token bytes sort as the
//! server's KeyString does). An event is released only once every shard's stream has passed
//! its time (each shard's post-batch resume token is a lower bound on what it has yet to
//! deliver, because nodes draw times from one clock under their own lock), so a slower shard
//! never has an earlier event still to come, and the router's `postBatchResumeToken` (a
//! high-water mark at that bound) never lets a resume skip one. Resuming starts every shard at
//! the token's time and drops events at or before the token here.

use std::time::{Duration, Instant};

use bson::{doc, Bson, Document, Timestamp};

use super::Router;
use crate::error::CommandError;
use crate::front::commands::{as_i64, Conn};
use crate::node::oplog::{cmp_ts, ts_after};
use crate::token::{self, ResumeToken, TokenKind};

pub struct MergedStream {
    db: String,
    /// The collection each shard's getMore names (`$cmd.aggregate` for db/cluster streams).
    shard_coll: String,
    ns: String,
    shard_cursors: Vec<i64>,
    /// Events received, not yet returned: (token data, cluster time, event).
    buffer: Vec<(String, Timestamp, Document)>,
    /// Per shard: events before this time have all been received.
    watermarks: Vec<Timestamp>,
    /// Per shard: its stream ended (invalidated); it has nothing more to deliver.
    done: Vec<bool>,
    skip_through: Option<String>,
    /// The `postBatchResumeToken` of the latest batch.
    pbrt: Document,
    /// `fullDocument: "updateLookup"`: done here, through the router, since the document may
    /// have moved to another shard since the update.
    update_lookup: bool,
}

fn hw_token(ts: Timestamp) -> Document {
    token::encode(&ResumeToken {
        ts,
        txn_op_index: 0,
        kind: TokenKind::HighWater,
        from_invalidate: false,
        document_key: None,
        fragment: None,
    })
}

fn token_ts(t: &Document) -> Option<Timestamp> {
    token::decode(t).ok().map(|t| t.ts)
}

pub async fn open(
    router: &std::sync::Arc<Router>,
    conn: &mut Conn,
    db: &str,
    coll: Option<&str>,
    cmd: &Document,
) -> Result<Document, CommandError> {
    let pipeline = cmd.get_array("pipeline").cloned().unwrap_or_default();
    let mut spec = pipeline
        .first()
        .and_then(Bson::as_document)
        .and_then(|s| s.get_document("$changeStream").ok())
        .cloned()
        .unwrap_or_default();
    let resume = spec
        .get_document("resumeAfter")
        .or_else(|_| spec.get_document("startAfter"))
        .ok()
        .cloned();
    let (start, skip_through, pbrt) = match (&resume, spec.get_timestamp("startAtOperationTime")) {
        (Some(t), _) => {
            let ts = token_ts(t).ok_or_else(|| {
                CommandError::new(260, "InvalidResumeToken", "Failed to decode resume token")
            })?;
            (ts, t.get_str("_data").ok().map(str::to_string), t.clone())
        }
        (None, Ok(ts)) => (ts, None, hw_token(ts)),
        (None, Err(_)) => {
            let ts = ts_after(router.clock.now());
            (ts, None, hw_token(ts))
        }
    };
    for k in ["resumeAfter", "startAfter", "startAtOperationTime"] {
        spec.remove(k);
    }
    let update_lookup = spec.get_str("fullDocument") == Ok("updateLookup");
    if update_lookup {
        spec.remove("fullDocument");
    }
    spec.insert("startAtOperationTime", start);
    let mut stages = vec![Bson::Document(doc! {"$changeStream": spec})];
    stages.extend(pipeline.into_iter().skip(1));
    let target: Bson = match coll {
        Some(c) => Bson::String(c.to_string()),
        None => Bson::Int32(1),
    };
    let shard_coll = coll.unwrap_or("$cmd.aggregate").to_string();
    let mut shard_cursors = Vec::new();
    for s in 0..router.shards.len() {
        let c = doc! {"aggregate": target.clone(), "pipeline": stages.clone(), "cursor": {"batchSize": 0}, "$db": db};
        match router.run(conn, s, c).await {
            Ok(r) => shard_cursors.push(
                r.get_document("cursor")
                    .ok()
                    .and_then(|c| as_i64(c.get("id")))
                    .unwrap_or(0),
            ),
            Err(e) => {
                let mut opened = MergedStream::empty(db, &shard_coll);
                opened.shard_cursors = shard_cursors;
                opened.close(router, conn).await;
                return Err(e);
            }
        }
    }
    let ns = format!("{db}.{shard_coll}");
    let stream = MergedStream {
        db: db.to_string(),
        shard_coll,
        ns: ns.clone(),
        watermarks: vec![start; shard_cursors.len()],
        done: vec![false; shard_cursors.len()],
        shard_cursors,
        buffer: Vec::new(),
        skip_through,
        pbrt: pbrt.clone(),
        update_lookup,
    };
    let id = router.new_cursor(super::RouterCursor::Stream(Box::new(stream)));
    let mut reply = crate::node::cursor::cursor_reply(
        true,
        Vec::new(),
        id,
        &ns,
        Some(("postBatchResumeToken", Bson::Document(pbrt))),
    );
    if let Ok(c) = reply.get_document_mut("cursor") {
        c.insert("id", id);
    }
    Ok(reply)
}

impl MergedStream {
    fn empty(db: &str, shard_coll: &str) -> Self {
        MergedStream {
            db: db.to_string(),
            shard_coll: shard_coll.to_string(),
            ns: String::new(),
            shard_cursors: Vec::new(),
            buffer: Vec::new(),
            watermarks: Vec::new(),
            done: Vec::new(),
            skip_through: None,
            pbrt: Document::new(),
            update_lookup: false,
        }
    }

    /// One non-waiting getMore on every shard.
    async fn pull(&mut self, router: &Router, conn: &mut Conn) -> Result<(), CommandError> {
        for (s, id) in self.shard_cursors.clone().into_iter().enumerate() {
            if self.done[s] {
                continue;
            }
            let c = doc! {"getMore": id, "collection": self.shard_coll.clone(), "maxTimeMS": 1i64, "$db": self.db.clone()};
            let mut r = router.run(conn, s, c).await?;
            let mut cur = match r.remove("cursor") {
                Some(Bson::Document(d)) => d,
                _ => Document::new(),
            };
            let batch = match cur.remove("nextBatch") {
                Some(Bson::Array(a)) => a,
                _ => Vec::new(),
            };
            for ev in batch {
                let Bson::Document(ev) = ev else { continue };
                let Some(id) = ev.get_document("_id").ok() else {
                    continue;
                };
                let data = id.get_str("_data").unwrap_or_default().to_string();
                let ts = ev
                    .get_timestamp("clusterTime")
                    .ok()
                    .or_else(|| token_ts(id))
                    .unwrap_or(Timestamp {
                        time: 0,
                        increment: 0,
                    });
                if self.skip_through.as_ref().is_some_and(|t| data <= *t) {
                    continue;
                }
                self.buffer.push((data, ts, ev));
            }
            if as_i64(cur.get("id")) == Some(0) {
                self.done[s] = true;
                self.watermarks[s] = Timestamp {
                    time: u32::MAX,
                    increment: u32::MAX,
                };
                continue;
            }
            if let Some(w) = cur
                .get_document("postBatchResumeToken")
                .ok()
                .and_then(token_ts)
            {
                if cmp_ts(w, self.watermarks[s]).is_gt() {
                    self.watermarks[s] = w;
                }
            }
        }
        Ok(())
    }

    pub async fn get_more(
        &mut self,
        router: &Router,
        conn: &mut Conn,
        cmd: &Document,
    ) -> Result<Document, CommandError> {
        let want = as_i64(cmd.get("batchSize"))
            .filter(|n| *n > 0)
            .map(|n| n as usize)
            .unwrap_or(usize::MAX);
        let wait = Duration::from_millis(
            as_i64(cmd.get("maxTimeMS"))
                .filter(|n| *n > 0)
                .unwrap_or(1000) as u64,
        );
        let deadline = Instant::now() + wait;
        loop {
            // Enough released events already buffered: no need to ask the shards again.
            if self.ready() < want.min(self.buffer.len()).max(1) {
                self.pull(router, conn).await?;
            }
            let frontier = self.frontier();
            // The high-water mark never runs past the clock (ended shards count as infinite).
            let mark = if cmp_ts(frontier, router.clock.now()).is_gt() {
                ts_after(router.clock.now())
            } else {
                frontier
            };
            self.buffer.sort_by(|a, b| a.0.cmp(&b.0));
            let ready = self
                .buffer
                .iter()
                .take_while(|(_, ts, _)| cmp_ts(*ts, frontier).is_lt())
                .count();
            if ready > 0 || Instant::now() >= deadline {
                let n = ready.min(want);
                let mut batch: Vec<Document> =
                    self.buffer.drain(..n).map(|(_, _, ev)| ev).collect();
                if self.update_lookup {
                    for ev in batch.iter_mut() {
                        if ev.get_str("operationType") == Ok("update") {
                            let found = router.lookup(ev).await;
                            ev.insert(
                                "fullDocument",
                                found.map(Bson::Document).unwrap_or(Bson::Null),
                            );
                        }
                    }
                }
                self.pbrt = if n < ready {
                    batch
                        .last()
                        .and_then(|e| e.get_document("_id").ok().cloned())
                        .unwrap_or_else(|| self.pbrt.clone())
                } else if !batch.is_empty()
                    || token_ts(&self.pbrt).is_some_and(|t| cmp_ts(mark, t).is_gt())
                {
                    // Everything before the frontier was returned: the frontier is the mark.
                    hw_token(mark)
                } else {
                    self.pbrt.clone()
                };
                return Ok(crate::node::cursor::cursor_reply(
                    false,
                    batch,
                    0,
                    &self.ns,
                    Some(("postBatchResumeToken", Bson::Document(self.pbrt.clone()))),
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// How many buffered events are before every shard's watermark (releasable now).
    fn ready(&self) -> usize {
        let frontier = self.frontier();
        self.buffer
            .iter()
            .filter(|(_, ts, _)| cmp_ts(*ts, frontier).is_lt())
            .count()
    }

    fn frontier(&self) -> Timestamp {
        self.watermarks
            .iter()
            .copied()
            .min_by(|a, b| cmp_ts(*a, *b))
            .unwrap_or(Timestamp {
                time: 0,
                increment: 0,
            })
    }

    /// Kills the shards' cursors.
    pub async fn close(&self, router: &Router, conn: &mut Conn) {
        for (s, id) in self.shard_cursors.iter().enumerate() {
            let c = doc! {"killCursors": self.shard_coll.clone(), "cursors": [*id], "$db": self.db.clone()};
            let _ = router.run(conn, s, c).await;
        }
    }
}
