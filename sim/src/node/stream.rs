//! Change-stream cursors: where a stream starts (resumeAfter / startAfter /
//! startAtOperationTime / now), which oplog entries and events belong to its
//! scope, user stages after `$changeStream`, invalidation, and the
//! `postBatchResumeToken` high-water mark that advances while idle.
//! Without user stages or images, events are queued as encoded BSON
//! (`change_event::encoded_events_from_oplog_entry`) and spliced into the
//! reply as they are. Each event's size is checked as the server's
//! serialisation does (`split`): with `$changeStreamSplitLargeEvent` a large
//! one is queued as fragments, without it the batch that reaches it fails
//! with 10334 and the cursor dies.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bson::{Bson, Document, Timestamp};

use crate::aggregate::apply_event_stages;
use crate::bson_order::OrderedBson;
use crate::change_event::{
    encoded_events_from_oplog_entry, events_from_oplog_entry, invalidate_event, EventOptions,
};
use crate::error::CommandError;
use crate::node::cursor::BatchDoc;
use crate::node::oplog::{cmp_ts, ts_after, Images, Oplog, OplogEntry};
use crate::node::split;
use crate::node::state::Shared;
use crate::node::store::approx_size;
use crate::query::Fields;
use crate::token::{self, ResumeToken, TokenKind};

/// What a stream watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Collection { db: String, coll: String },
    Database { db: String },
    Cluster,
}

impl Scope {
    /// The cursor namespace reported in replies.
    pub fn cursor_ns(&self) -> String {
        match self {
            Scope::Collection { db, coll } => format!("{db}.{coll}"),
            Scope::Database { db } => format!("{db}.$cmd.aggregate"),
            Scope::Cluster => "admin.$cmd.aggregate".to_string(),
        }
    }

    /// Cheap pre-filter on the entry's `ns` before building events.
    fn entry_relevant(&self, ns: &str) -> bool {
        if ns.is_empty() {
            return false;
        }
        if ns == "admin.$cmd" {
            return true; // applyOps of a transaction: any namespace inside
        }
        let db = ns.split('.').next().unwrap_or("");
        match self {
            Scope::Cluster => !matches!(db, "admin" | "config" | "local"),
            Scope::Database { db: d } | Scope::Collection { db: d, .. } => db == d,
        }
    }

    fn event_in_scope(&self, event: &Document) -> bool {
        self.ns_in_scope(event.get_document("ns").ok())
    }

    /// Whether an event with this `ns` belongs to the stream.
    fn ns_in_scope(&self, ns: Option<&Document>) -> bool {
        let Some(ns) = ns else {
            return false;
        };
        self.names_in_scope(ns.get_str("db").unwrap_or(""), ns.get_str("coll").ok())
    }

    /// [`Scope::ns_in_scope`] of `{db, coll}`.
    fn names_in_scope(&self, db: &str, coll: Option<&str>) -> bool {
        if coll.is_some_and(|c| c.starts_with("system.")) {
            return false;
        }
        match self {
            Scope::Cluster => !matches!(db, "admin" | "config" | "local"),
            Scope::Database { db: d } => db == d,
            Scope::Collection { db: d, coll: c } => db == d && coll == Some(c.as_str()),
        }
    }

    /// Whether `event` ends this stream with an `invalidate`.
    fn invalidates(&self, event: &Document) -> bool {
        self.invalidated_by(event.get_str("operationType").unwrap_or(""))
    }

    fn invalidated_by(&self, op: &str) -> bool {
        match self {
            Scope::Collection { .. } => matches!(op, "drop" | "rename"),
            Scope::Database { .. } => op == "dropDatabase",
            Scope::Cluster => false,
        }
    }
}

pub struct StreamCursor {
    pub scope: Scope,
    next_seq: u64,
    opts: EventOptions,
    stages: Vec<Document>,
    /// Events at or before this token are skipped (a resumed stream).
    skip_through: Option<String>,
    /// Events built but not yet returned, with their approximate sizes
    /// (`store::approx_size` of the event document) and resume tokens.
    pending: VecDeque<(BatchDoc, usize, Token)>,
    /// The resume token of the last event the latest batch returned.
    last_returned: Option<Document>,
    /// Sum of the sizes in `pending`: generation stops near one full reply.
    pending_bytes: usize,
    /// High-water timestamp: every event before it has been examined.
    hw_ts: Timestamp,
    invalidated: bool,
    /// `$changeStreamSplitLargeEvent` ends the pipeline.
    split: bool,
    /// Resuming from this fragment (from 0) of the event `skip_through`
    /// names: the fragments up to it are skipped, the rest returned.
    resume_fragment: Option<u32>,
    /// The error of an event too large to return (10334): generation stops
    /// there and the batch that reaches it fails.
    doomed: Option<CommandError>,
}

/// What a resumed stream does with an event, by its token.
enum Skip {
    /// At or before the resume point.
    Drop,
    /// Return it, without its first `n` fragments.
    Pass(usize),
}

/// Where and how a stream starts, parsed from the `$changeStream` stage.
pub struct StreamSpec {
    pub opts: EventOptions,
    pub resume_after: Option<Document>,
    pub start_after: Option<Document>,
    pub start_at: Option<Timestamp>,
    pub all_changes_for_cluster: bool,
    /// `$changeStreamSplitLargeEvent` was the pipeline's last stage
    /// (set by the caller, see `split::take_stage`).
    pub split: bool,
}

impl StreamSpec {
    pub fn parse(stage: &Document) -> Result<Self, CommandError> {
        let mut opts = EventOptions::default();
        let mut spec = StreamSpec {
            opts: EventOptions::default(),
            resume_after: None,
            start_after: None,
            start_at: None,
            all_changes_for_cluster: false,
            split: false,
        };
        for (k, v) in stage {
            match (k.as_str(), v) {
                ("fullDocument", Bson::String(s)) => {
                    if !matches!(
                        s.as_str(),
                        "default" | "updateLookup" | "whenAvailable" | "required"
                    ) {
                        return Err(CommandError::bad_value(format!(
                            "unknown fullDocument mode '{s}'"
                        )));
                    }
                    opts.full_document = s.clone();
                }
                ("fullDocumentBeforeChange", Bson::String(s)) => {
                    opts.full_document_before_change = s.clone();
                }
                ("showExpandedEvents", Bson::Boolean(b)) => opts.show_expanded_events = *b,
                ("resumeAfter", Bson::Document(d)) => spec.resume_after = Some(d.clone()),
                ("startAfter", Bson::Document(d)) => spec.start_after = Some(d.clone()),
                ("startAtOperationTime", Bson::Timestamp(ts)) => spec.start_at = Some(*ts),
                ("allChangesForCluster", Bson::Boolean(b)) => spec.all_changes_for_cluster = *b,
                // The Rust driver puts `comment` inside the stage; servers accept it.
                ("comment", _) | ("allowToRunOnConfigDB", _) | ("allowToRunOnSystemNS", _) => {}
                ("showMigrationEvents", Bson::Boolean(true)) => {
                    return Err(CommandError::bad_value(
                        "showMigrationEvents is not supported by mongo-sim (chunk migration writes \
                         are never shown in change streams)",
                    ))
                }
                ("showSystemEvents", _) | ("showMigrationEvents", _) => {}
                (other, _) => {
                    return Err(CommandError::new(
                        40415,
                        "Location40415",
                        format!("BSON field '$changeStream.{other}' is an unknown field."),
                    ))
                }
            }
        }
        let starts = [
            spec.resume_after.is_some(),
            spec.start_after.is_some(),
            spec.start_at.is_some(),
        ];
        if starts.iter().filter(|b| **b).count() > 1 {
            return Err(CommandError::new(
                40674,
                "Location40674",
                "Only one type of resume option is allowed, but multiple were found.",
            ));
        }
        spec.opts = opts;
        Ok(spec)
    }
}

fn history_lost() -> CommandError {
    CommandError::new(
        286,
        "ChangeStreamHistoryLost",
        "Resume of change stream was not possible, as the resume point may no longer be in the oplog.",
    )
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

fn token_data(event: &Document) -> Option<&str> {
    event.get_document("_id").ok()?.get_str("_data").ok()
}

impl StreamCursor {
    pub fn open(
        oplog: &Oplog,
        scope: Scope,
        spec: StreamSpec,
        stages: Vec<Document>,
    ) -> Result<Self, CommandError> {
        let mut cursor = StreamCursor {
            scope,
            next_seq: oplog.next_seq(),
            opts: spec.opts,
            stages,
            skip_through: None,
            pending: VecDeque::new(),
            last_returned: None,
            pending_bytes: 0,
            hw_ts: ts_after(oplog.last_ts()),
            invalidated: false,
            split: spec.split,
            resume_fragment: None,
            doomed: None,
        };
        let resume = match (&spec.resume_after, &spec.start_after) {
            (Some(t), _) => Some((t, false)),
            (_, Some(t)) => Some((t, true)),
            _ => None,
        };
        if let Some((raw, is_start_after)) = resume {
            let tok = token::decode(raw).map_err(CommandError::from)?;
            if tok.from_invalidate && !is_start_after {
                return Err(CommandError::new(
                    260,
                    "InvalidResumeToken",
                    "Attempting to resume a change stream using 'resumeAfter' is not allowed \
                     from an invalidate notification.",
                ));
            }
            if cmp_ts(tok.ts, oplog.oldest_ts()).is_lt() {
                return Err(history_lost());
            }
            if tok.kind == TokenKind::Event && !oplog.contains_ts(tok.ts) {
                return Err(CommandError::new(
                    280,
                    "ChangeStreamFatalError",
                    "cannot resume stream; the resume token was not found.",
                ));
            }
            cursor.next_seq = oplog.seq_at_or_after(tok.ts);
            cursor.hw_ts = tok.ts;
            let data = match tok.fragment {
                Some(n) => {
                    if !cursor.split {
                        return Err(CommandError::new(
                            280,
                            "ChangeStreamFatalError",
                            "Attempted to resume from a split event fragment, but the pipeline \
                             does not end with $changeStreamSplitLargeEvent. Ensure that the \
                             pipeline used to resume is the same as the original",
                        ));
                    }
                    // Fragments are found through the token of the event they split.
                    cursor.resume_fragment = Some(n);
                    token::encode(&ResumeToken {
                        fragment: None,
                        ..tok
                    })
                    .get_str("_data")
                    .unwrap_or_default()
                    .to_string()
                }
                None => raw.get_str("_data").unwrap_or_default().to_string(),
            };
            cursor.skip_through = Some(data);
        } else if let Some(ts) = spec.start_at {
            if cmp_ts(ts, oplog.oldest_ts()).is_lt() {
                return Err(history_lost());
            }
            cursor.next_seq = oplog.seq_at_or_after(ts);
            cursor.hw_ts = ts;
        }
        Ok(cursor)
    }

    pub fn is_invalidated(&self) -> bool {
        self.invalidated && self.pending.is_empty()
    }

    /// The resume token clients cache after the latest batch.
    pub fn post_batch_token(&self) -> Document {
        match (self.pending.is_empty(), &self.last_returned) {
            (false, Some(id)) => id.clone(),
            _ => {
                if let Some(id) = self.last_returned.as_ref().filter(|_| self.invalidated) {
                    return id.clone();
                }
                hw_token(self.hw_ts)
            }
        }
    }

    /// Whether events can be encoded straight to BSON: no user stages to run
    /// on them and no images to add.
    fn encodes_directly(&self) -> bool {
        let wants = |mode: &str| matches!(mode, "whenAvailable" | "required");
        self.stages.is_empty()
            && !wants(&self.opts.full_document)
            && !wants(&self.opts.full_document_before_change)
    }

    /// Turns entries into events until `want` events are pending or the end
    /// of the oplog is reached.
    fn fill(&mut self, shared: &Shared, want: usize) -> Result<(), CommandError> {
        let scope = self.scope.clone();
        let lookup = |ns: &str, id: &Bson| -> Option<Document> {
            let (db, coll) = ns.split_once('.')?;
            // An event the stream drops anyway costs the server no lookup (its `$match` on
            // the namespace runs before the lookup stage).
            if !scope.names_in_scope(db, Some(coll)) {
                return None;
            }
            shared.update_lookups.record(ns);
            let st = shared.state();
            st.catalog
                .get(db, coll)?
                .docs
                .get(&OrderedBson(id.clone()))
                .map(|d| d.doc().into_owned())
        };
        while !self.invalidated
            && self.doomed.is_none()
            && self.pending.len() < want
            && self.pending_bytes < crate::node::cursor::MAX_BATCH_BYTES
        {
            let (chunk, last_ts): (Vec<Arc<OplogEntry>>, Timestamp) = {
                let st = shared.state();
                if self.next_seq < st.oplog.first_seq() {
                    return Err(history_lost());
                }
                (
                    st.oplog.entries_from(self.next_seq, want.clamp(16, 1024)),
                    st.oplog.last_ts(),
                )
            };
            if chunk.is_empty() {
                if cmp_ts(ts_after(last_ts), self.hw_ts).is_gt() {
                    self.hw_ts = ts_after(last_ts);
                }
                return Ok(());
            }
            for entry in &chunk {
                self.next_seq = entry.seq + 1;
                self.hw_ts = ts_after(entry.ts);
                if !self.scope.entry_relevant(&entry.ns) {
                    continue;
                }
                let whole;
                let (doc, images) = match reassemble_transaction(shared, entry)? {
                    Assembled::Partial => continue,
                    Assembled::Whole(doc, images) => {
                        whole = (doc, images);
                        (&whole.0 as &dyn Fields, whole.1.as_slice())
                    }
                    Assembled::Single => (entry.as_ref() as &dyn Fields, entry.images.as_slice()),
                };
                if self.encodes_directly() {
                    if let Some(events) = encoded_events_from_oplog_entry(doc, &lookup, &self.opts)
                    {
                        for ev in events {
                            if !self.scope.ns_in_scope(ev.ns.as_ref()) {
                                continue;
                            }
                            let Skip::Pass(fragments) = self.skip(&ev.token) else {
                                continue;
                            };
                            let token = Token::Data(ev.token);
                            let inval = self
                                .scope
                                .invalidated_by(ev.operation_type)
                                .then(|| self.invalidate_for(&token.to_id(), entry));
                            self.admit(BatchDoc::Raw(ev.bytes), ev.approx_size, token, fragments)?;
                            if self.doomed.is_some() {
                                return Ok(());
                            }
                            if let Some(inval) = inval {
                                if self.end_with(inval?)? {
                                    return Ok(());
                                }
                            }
                        }
                        continue;
                    }
                }
                let events = events_from_oplog_entry(doc, &lookup, &self.opts);
                for event in events {
                    if !self.scope.event_in_scope(&event) {
                        continue;
                    }
                    let event = self.with_images(event, images)?;
                    let fragments = match token_data(&event).map(str::to_string) {
                        Some(data) => match self.skip(&data) {
                            Skip::Drop => continue,
                            Skip::Pass(n) => n,
                        },
                        None => 0,
                    };
                    let invalidates = self.scope.invalidates(&event);
                    let inval = invalidates.then(|| {
                        let id = event.get_document("_id").cloned().unwrap_or_default();
                        self.invalidate_for(&id, entry)
                    });
                    self.push_event(event, fragments)?;
                    if self.doomed.is_some() {
                        return Ok(());
                    }
                    if let Some(inval) = inval {
                        if self.end_with(inval?)? {
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Fills `fullDocument` (whenAvailable/required) and
    /// `fullDocumentBeforeChange` from the images stored with the entry.
    fn with_images(
        &self,
        mut event: Document,
        entry_images: &[Option<Box<Images>>],
    ) -> Result<Document, CommandError> {
        let fd = self.opts.full_document.as_str();
        let fdbc = self.opts.full_document_before_change.as_str();
        let wants_post = matches!(fd, "whenAvailable" | "required");
        let wants_pre = matches!(fdbc, "whenAvailable" | "required");
        if !wants_post && !wants_pre {
            return Ok(event);
        }
        let op = event.get_str("operationType").unwrap_or("").to_string();
        let index = event
            .get_document("_id")
            .ok()
            .and_then(|t| token::decode(t).ok())
            .map(|t| t.txn_op_index as usize)
            .unwrap_or(0);
        let images = entry_images.get(index).and_then(|i| i.as_deref());
        let event_id = event.get("_id").cloned().unwrap_or(Bson::Null);
        let missing = |which: &str| {
            CommandError::new(
                47,
                "NoMatchingDocument",
                format!(
                    "Change stream was configured to require a {which}-image for all update, \
                     delete and replace events, but the {which}-image was not found for event: {}",
                    event_id
                ),
            )
        };
        if wants_post && op == "update" {
            match images.and_then(|i| i.post.clone()) {
                Some(post) => {
                    event.insert("fullDocument", post);
                }
                None if fd == "required" => return Err(missing("post")),
                None => {
                    event.insert("fullDocument", Bson::Null);
                }
            }
        }
        if wants_pre && matches!(op.as_str(), "update" | "replace" | "delete") {
            match images.and_then(|i| i.pre.clone()) {
                Some(pre) => {
                    event.insert("fullDocumentBeforeChange", pre);
                }
                None if fdbc == "required" => return Err(missing("pre")),
                None => {
                    event.insert("fullDocumentBeforeChange", Bson::Null);
                }
            }
        }
        Ok(event)
    }

    /// Queues the `invalidate` event that ends the stream, unless a resume
    /// token skips it; whether it was queued.
    fn end_with(&mut self, inval: Document) -> Result<bool, CommandError> {
        let passes = match &self.skip_through {
            Some(skip) => token_data(&inval).is_some_and(|d| d > skip.as_str()),
            None => true,
        };
        if passes {
            self.enqueue(inval, 0)?;
            self.invalidated = true;
        }
        Ok(passes)
    }

    /// The `invalidate` event after the event whose `_id` is `id`.
    fn invalidate_for(&self, id: &Document, entry: &OplogEntry) -> Result<Document, CommandError> {
        let after = token::decode(id).map_err(CommandError::from)?;
        let wall = entry.date_field("wall").unwrap_or_else(bson::DateTime::now);
        Ok(invalidate_event(&after, entry.ts, wall))
    }

    fn push_event(&mut self, event: Document, fragments: usize) -> Result<(), CommandError> {
        if self.stages.is_empty() {
            return self.enqueue(event, fragments);
        }
        let id = event.get("_id").cloned();
        let Some(out) = apply_event_stages(event, &self.stages)? else {
            return Ok(());
        };
        if out.get("_id") != id.as_ref() {
            return Err(CommandError::new(
                280,
                "ChangeStreamFatalError",
                "Encountered an event whose _id field, which contains the resume token, was \
                 modified by the pipeline. Modifying the _id field of an event makes it \
                 impossible to resume the stream from that point. Only transformations that \
                 retain the unmodified _id field are allowed.",
            ));
        }
        self.enqueue(out, fragments)
    }

    fn enqueue(&mut self, event: Document, fragments: usize) -> Result<(), CommandError> {
        let size = approx_size(&event);
        self.admit(BatchDoc::Owned(event), size, Token::InEvent, fragments)
    }

    /// Whether a resumed stream returns the event with token `data`, and
    /// how many of its fragments it skips.
    fn skip(&mut self, data: &str) -> Skip {
        let Some(skip) = &self.skip_through else {
            return Skip::Pass(0);
        };
        match data.cmp(skip.as_str()) {
            std::cmp::Ordering::Less => Skip::Drop,
            std::cmp::Ordering::Equal => {
                self.skip_through = None;
                match self.resume_fragment.take() {
                    // The fragment resumed from was returned already.
                    Some(n) => Skip::Pass(n as usize + 1),
                    None => Skip::Drop,
                }
            }
            std::cmp::Ordering::Greater => {
                self.skip_through = None;
                self.resume_fragment = None;
                Skip::Pass(0)
            }
        }
    }

    /// Queues an event as the server's serialisation would let it through:
    /// whole, as fragments (split stage), or not at all (too large).
    fn admit(
        &mut self,
        event: BatchDoc,
        approx: usize,
        token: Token,
        skip_fragments: usize,
    ) -> Result<(), CommandError> {
        let size = match &event {
            BatchDoc::Raw(bytes) => bytes.len(),
            BatchDoc::Owned(doc) => split::size_if_large(doc, approx),
            BatchDoc::Entry(_) => approx,
        };
        if self.split && size > split::MAX_CHANGE_EVENT_SIZE {
            let doc = match event {
                BatchDoc::Raw(bytes) => bson::from_slice::<Document>(&bytes).map_err(|e| {
                    CommandError::new(1, "InternalError", format!("event decoding: {e}"))
                })?,
                BatchDoc::Owned(doc) => doc,
                BatchDoc::Entry(_) => return Ok(()),
            };
            let fragments = split::split(&doc, 0)?;
            // Resuming from the last fragment leaves nothing of this event;
            // resuming from one it does not have means another split.
            if fragments.len() < skip_fragments {
                return Err(CommandError::new(
                    280,
                    "ChangeStreamFatalError",
                    "Attempted to resume from a split event, but the resumed stream produced a \
                     different split. Ensure that the pipeline used to resume is the same as \
                     the original",
                ));
            }
            for fragment in fragments.into_iter().skip(skip_fragments) {
                let size = approx_size(&fragment);
                self.pending_bytes += size;
                self.pending
                    .push_back((BatchDoc::Owned(fragment), size, Token::InEvent));
            }
            return Ok(());
        }
        if skip_fragments > 0 {
            return Err(CommandError::new(
                280,
                "ChangeStreamFatalError",
                "Attempted to resume from a split event fragment, but the event in the resumed \
                 stream was not large enough to be split",
            ));
        }
        if size > split::MAX_INTERNAL_SIZE {
            let data = match (&token, &event) {
                (Token::Data(d), _) => d.clone(),
                (Token::InEvent, BatchDoc::Owned(doc)) => {
                    token_data(doc).unwrap_or_default().to_string()
                }
                _ => String::new(),
            };
            self.doomed = Some(split::event_too_large(size, &data));
            return Ok(());
        }
        self.pending_bytes += approx;
        self.pending.push_back((event, approx, token));
        Ok(())
    }

    /// The 10334 of an event too large, once the batch being built reaches
    /// it: `batch` is what came before it in this batch (lost, as on the
    /// server, whose whole command fails).
    fn reached_doomed(
        &self,
        batch: &[BatchDoc],
        want: usize,
        prefix: &str,
    ) -> Option<CommandError> {
        let e = self.doomed.as_ref()?;
        (self.pending.is_empty() && batch.len() < want).then(|| {
            CommandError::new(
                e.code,
                &e.code_name,
                format!("{prefix} :: caused by :: {}", e.message),
            )
        })
    }

    fn take(&mut self, batch_size: usize) -> Vec<BatchDoc> {
        let mut out = Vec::with_capacity(self.pending.len().min(batch_size));
        let mut bytes = 0;
        let mut last = None;
        while let Some((_, size, _)) = self.pending.front() {
            let size = *size;
            if out.len() >= batch_size {
                break;
            }
            if !out.is_empty() && bytes + size > crate::node::cursor::MAX_BATCH_BYTES {
                break;
            }
            bytes += size;
            if let Some((ev, _, token)) = self.pending.pop_front() {
                self.pending_bytes -= size;
                out.push(ev);
                last = Some(token);
            }
        }
        self.last_returned = match (last, out.last()) {
            (Some(Token::Data(data)), _) => Some(Token::Data(data).to_id()),
            (Some(Token::InEvent), Some(BatchDoc::Owned(ev))) => {
                Some(ev.get_document("_id").cloned().unwrap_or_default())
            }
            _ => None,
        };
        out
    }

    /// The first batch of the `aggregate`: never waits.
    pub fn first_batch(
        &mut self,
        shared: &Shared,
        batch_size: usize,
    ) -> Result<Vec<BatchDoc>, CommandError> {
        if batch_size > 0 {
            self.fill(shared, batch_size)?;
        }
        let batch = self.take(batch_size);
        match self.reached_doomed(&batch, batch_size, "PlanExecutor error during aggregation") {
            Some(e) => Err(e),
            None => Ok(batch),
        }
    }

    /// A getMore: returns pending events, or waits up to `max_wait` for some.
    pub async fn get_more(
        &mut self,
        shared: &Shared,
        batch_size: usize,
        max_wait: Duration,
    ) -> Result<Vec<BatchDoc>, CommandError> {
        let want = if batch_size == 0 {
            usize::MAX
        } else {
            batch_size
        };
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut rx = shared.subscribe();
        loop {
            rx.borrow_and_update();
            self.fill(shared, want.min(100_000))?;
            if !self.pending.is_empty() || self.invalidated || self.doomed.is_some() {
                let batch = self.take(want);
                return match self.reached_doomed(&batch, want, "Executor error during getMore") {
                    Some(e) => Err(e),
                    None => Ok(batch),
                };
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    self.last_returned = None;
                    return Ok(Vec::new());
                }
            }
        }
    }
}

/// Where a pending event's resume token is.
enum Token {
    /// `_data` of an event encoded straight to BSON.
    Data(String),
    /// The `_id` of the pending `Document` itself.
    InEvent,
}

impl Token {
    /// `{_data: ...}`, the event's `_id` (only for `Data`).
    fn to_id(&self) -> Document {
        let mut id = Document::new();
        if let Token::Data(data) = self {
            id.insert("_data", data.clone());
        }
        id
    }
}

enum Assembled {
    /// Not the last entry of a split transaction: its events come with the last.
    Partial,
    /// The last entry of a split transaction, with every entry's operations.
    Whole(Document, Vec<Option<Box<Images>>>),
    /// Anything else: use the entry as it is.
    Single,
}

fn is_zero_ts(ts: Timestamp) -> bool {
    ts.time == 0 && ts.increment == 0
}

/// A transaction over 16 MB is logged as several applyOps entries chained by
/// `prevOpTime`; the server emits all its events at the last entry, so the
/// chain is walked back and its operations joined in order.
fn reassemble_transaction(shared: &Shared, entry: &OplogEntry) -> Result<Assembled, CommandError> {
    let Some(o) = entry.doc_field("o") else {
        return Ok(Assembled::Single);
    };
    if !o.contains_key("applyOps") {
        return Ok(Assembled::Single);
    }
    if o.get_bool("partialTxn").unwrap_or(false) {
        return Ok(Assembled::Partial);
    }
    let prev_ts = |e: &OplogEntry| {
        e.doc_field("prevOpTime")
            .and_then(|p| p.get_timestamp("ts").ok())
            .filter(|ts| !is_zero_ts(*ts))
    };
    let Some(mut prev) = prev_ts(entry) else {
        return Ok(Assembled::Single);
    };
    let mut parts: Vec<Arc<OplogEntry>> = Vec::new();
    {
        let st = shared.state();
        loop {
            let seq = st.oplog.seq_at_or_after(prev);
            let Some(e) = st.oplog.entries_from(seq, 1).pop().filter(|e| e.ts == prev) else {
                return Err(history_lost());
            };
            let next = prev_ts(&e);
            parts.push(e);
            match next {
                Some(ts) => prev = ts,
                None => break,
            }
        }
    }
    let mut ops: Vec<Bson> = Vec::new();
    let mut images = Vec::new();
    for e in parts
        .iter()
        .rev()
        .map(|a| a.as_ref())
        .chain(std::iter::once(entry))
    {
        if let Some(Ok(arr)) = e.doc_field("o").map(|o| o.get_array("applyOps")) {
            ops.extend(arr.iter().cloned());
        }
        images.extend(e.images.iter().cloned());
    }
    let mut doc = entry.to_document().into_owned();
    doc.insert("o", bson::doc! {"applyOps": ops});
    Ok(Assembled::Whole(doc, images))
}

/// `$changeStream` is accepted only as the first stage.
pub fn misplaced_stage() -> CommandError {
    CommandError::new(
        40602,
        "Location40602",
        "$changeStream is only valid as the first stage in a pipeline.",
    )
}
