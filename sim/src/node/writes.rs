//! The write engine: insert, update, delete and find-and-modify of single
//! statements against a `Target`, which is either live storage (each change
//! logged to the oplog at once) or a transaction's private copy (changes
//! buffered until commit).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bson::{doc, oid::ObjectId, Bson, Document};

use crate::bson_order::OrderedBson;
use crate::codec::canonical::RawInsert;
use crate::diff::update_oplog_object;
use crate::error::CommandError;
use crate::node::history::{Change, History, Version};
use crate::node::oplog::{Images, Oplog, OplogEntry, OplogOp};
use crate::node::split;
use crate::node::store::{
    approx_size, check_collection_name, Catalog, Collection, DuplicateKey, StoredDoc,
};
use crate::node::validation;
use crate::node::write_block;
use crate::query::{sort_documents, Filter};
use crate::update::{self, UpdateSpec};

/// One failed statement, reported in `writeErrors` (or as a command error
/// for findAndModify).
#[derive(Debug, Clone)]
pub struct WriteError {
    pub code: i32,
    pub code_name: String,
    pub errmsg: String,
    /// Extra fields of the write error (keyPattern/keyValue for 11000);
    /// boxed to keep `Result<_, WriteError>` small.
    pub details: Option<Box<Document>>,
}

impl From<CommandError> for WriteError {
    fn from(e: CommandError) -> Self {
        Self {
            code: e.code,
            code_name: e.code_name,
            errmsg: e.message,
            details: None,
        }
    }
}

impl From<crate::query::QueryError> for WriteError {
    fn from(e: crate::query::QueryError) -> Self {
        CommandError::from(e).into()
    }
}

impl WriteError {
    pub fn duplicate(db: &str, coll: &str, dup: DuplicateKey) -> Self {
        Self {
            code: 11000,
            code_name: "DuplicateKey".into(),
            errmsg: dup.errmsg(db, coll),
            details: Some(Box::new(doc! {
                "keyPattern": dup.key_pattern,
                "keyValue": dup.key_value,
            })),
        }
    }

    /// The error as a command error (findAndModify's): a DuplicateKey keeps its
    /// `keyPattern`/`keyValue`, as mongod's reply does.
    pub fn to_command_error(&self) -> CommandError {
        let mut e = CommandError::new(self.code, &self.code_name, self.errmsg.clone());
        e.extra = self.details.clone();
        e
    }

    /// The `writeErrors` element for statement `index`.
    pub fn to_document(&self, index: usize) -> Document {
        let mut d = doc! {"index": index as i32, "code": self.code};
        for (k, v) in self.details.iter().flat_map(|b| b.iter()) {
            d.insert(k.clone(), v.clone());
        }
        d.insert("errmsg", self.errmsg.clone());
        d
    }
}

/// Where logged changes go.
pub trait OpSink {
    /// `post` is the full document after an update (needed to replay a
    /// buffered transaction); it never reaches the oplog itself.
    fn log(&mut self, op: OplogOp, post: Option<Document>);

    /// Logs an insert and returns what the collection stores for it: a
    /// copy here, the logged entry itself where the log is the live oplog.
    fn log_insert(&mut self, op: OplogOp) -> StoredDoc {
        let stored = StoredDoc::Own(op.o.clone());
        self.log(op, None);
        stored
    }

    /// `log_insert` of `raw`'s document into `ns` (`ui`); only the live
    /// oplog keeps the bytes without decoding them.
    fn log_raw_insert(
        &mut self,
        ns: String,
        ui: bson::Uuid,
        id: Bson,
        raw: RawInsert<'_>,
    ) -> StoredDoc {
        self.log_insert(insert_op(ns, ui, doc! {"_id": id}, raw.to_document()))
    }

    /// Claims a document for writing, right before the write (where mongod's
    /// op observers run); fails with 112 WriteConflict when another open
    /// transaction already wrote it, 371 when user writes are blocked.
    fn claim(&mut self, _ns: &str, _id: &Bson) -> Result<(), CommandError> {
        Ok(())
    }

    /// Whether the command asked for `bypassDocumentValidation` (see `validation`).
    fn bypass_validation(&self) -> bool {
        false
    }

    /// Keeps what the change just logged to collection `uuid` replaced, for snapshot reads
    /// at an earlier time (`history`); only live writes have a time to keep it at.
    fn remember(&mut self, _uuid: bson::Uuid, _change: Change) {}
}

impl OpSink for Oplog {
    fn log(&mut self, op: OplogOp, _post: Option<Document>) {
        self.append(op, None);
    }
}

/// A transaction's private view: collections it touched (copied on first
/// touch) and the changes to replay at commit.
#[derive(Debug, Default)]
pub struct TxnWrites {
    pub colls: HashMap<(String, String), Collection>,
    pub log: TxnLog,
}

/// A document a transaction wrote: namespace and `_id`.
pub type DocRef = (String, OrderedBson);

#[derive(Debug, Default)]
pub struct TxnLog {
    pub ops: Vec<(OplogOp, Option<Document>)>,
    /// Documents this transaction wrote.
    pub touched: BTreeSet<DocRef>,
    /// Documents other open transactions wrote (refreshed before each command).
    pub others: BTreeSet<DocRef>,
    /// Whether user writes are blocked (refreshed before each command).
    pub writes_blocked: bool,
    /// The current command's `bypassDocumentValidation` (set before each command).
    pub bypass_validation: bool,
}

impl OpSink for TxnLog {
    fn log(&mut self, op: OplogOp, post: Option<Document>) {
        self.ops.push((op, post));
    }

    fn bypass_validation(&self) -> bool {
        self.bypass_validation
    }

    fn claim(&mut self, ns: &str, id: &Bson) -> Result<(), CommandError> {
        write_block::check(self.writes_blocked, write_block::db_of(ns))?;
        let key = (ns.to_string(), OrderedBson(id.clone()));
        if self.others.contains(&key) {
            return Err(write_conflict());
        }
        self.touched.insert(key);
        Ok(())
    }
}

pub fn write_conflict() -> CommandError {
    CommandError::new(
        112,
        "WriteConflict",
        "Caused by :: Write conflict during plan execution and yielding is disabled. :: \
         Please retry your operation or multi-document transaction.",
    )
}

/// Storage that statements read from and write to.
pub trait Target {
    fn read(&self, db: &str, coll: &str) -> Option<&Collection>;
    /// The collection (created implicitly when `create`) and where to log.
    fn write(
        &mut self,
        db: &str,
        coll: &str,
        create: bool,
    ) -> Result<Option<(&mut Collection, &mut dyn OpSink)>, CommandError>;
}

pub struct LiveTarget<'a> {
    pub catalog: &'a mut Catalog,
    pub sink: LiveSink<'a>,
}

/// Writes straight to the oplog; a retryable write (lsid + txnNumber outside
/// a transaction) stamps its entries with session info like mongod.
pub struct LiveSink<'a> {
    pub oplog: &'a mut Oplog,
    pub retry: Option<RetryInfo>,
    /// Whether user writes are blocked (see `write_block`), read once per command.
    pub writes_blocked: bool,
    /// The command's `bypassDocumentValidation`.
    pub bypass_validation: bool,
    pub history: &'a mut History,
    /// The time of the entry this sink appended last (what `remember` stamps).
    pub last_logged: Option<bson::Timestamp>,
}

#[derive(Debug, Clone)]
pub struct RetryInfo {
    /// The lsid as logged: `{id, uid}`.
    pub lsid: Document,
    pub txn_number: i64,
    pub next_stmt_id: i32,
    /// Timestamp of this write's previous entry (`prevOpTime` chain).
    pub prev_ts: Option<bson::Timestamp>,
}

impl OpSink for LiveSink<'_> {
    fn log(&mut self, op: OplogOp, _post: Option<Document>) {
        self.append(op);
    }

    fn log_insert(&mut self, op: OplogOp) -> StoredDoc {
        StoredDoc::Inserted(self.append(op))
    }

    fn claim(&mut self, ns: &str, _id: &Bson) -> Result<(), CommandError> {
        write_block::check(self.writes_blocked, write_block::db_of(ns))
    }

    fn bypass_validation(&self) -> bool {
        self.bypass_validation
    }

    fn remember(&mut self, uuid: bson::Uuid, change: Change) {
        if let Some(ts) = self.last_logged {
            self.history.record(uuid, ts, change);
        }
    }

    fn log_raw_insert(
        &mut self,
        ns: String,
        ui: bson::Uuid,
        id: Bson,
        raw: RawInsert<'_>,
    ) -> StoredDoc {
        StoredDoc::Inserted(
            self.append_with(|oplog, extra| oplog.append_raw_insert(ns, ui, id, raw, extra)),
        )
    }
}

impl LiveSink<'_> {
    fn append(&mut self, op: OplogOp) -> Arc<OplogEntry> {
        self.append_with(|oplog, extra| oplog.append(op, extra))
    }

    /// Runs `append` with the session fields of a retryable write, if any,
    /// and advances its statement id and `prevOpTime` chain.
    fn append_with(
        &mut self,
        append: impl FnOnce(&mut Oplog, Option<Document>) -> Arc<OplogEntry>,
    ) -> Arc<OplogEntry> {
        let Some(r) = &mut self.retry else {
            let entry = append(self.oplog, None);
            self.last_logged = Some(entry.ts);
            return entry;
        };
        let prev = r.prev_ts.unwrap_or(bson::Timestamp {
            time: 0,
            increment: 0,
        });
        let extra = doc! {
            "lsid": r.lsid.clone(),
            "txnNumber": r.txn_number,
            "stmtId": r.next_stmt_id,
            "prevOpTime": {"ts": prev, "t": if r.prev_ts.is_some() { crate::node::oplog::TERM } else { -1 }},
        };
        let entry = append(self.oplog, Some(extra));
        r.next_stmt_id += 1;
        r.prev_ts = Some(entry.ts);
        self.last_logged = Some(entry.ts);
        entry
    }
}

/// The `create` entry of `db.coll`, with its options and `_id` index.
pub(crate) fn create_op(db: &str, coll: &str, c: &Collection) -> OplogOp {
    let mut o = doc! {"create": coll};
    for (k, v) in &c.options {
        o.insert(k.clone(), v.clone());
    }
    o.insert("idIndex", doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"});
    OplogOp {
        op: "c",
        ns: format!("{db}.$cmd"),
        ui: Some(c.uuid),
        o,
        o2: None,
        images: None,
    }
}

fn check_writable(db: &str, coll: &str) -> Result<(), CommandError> {
    check_collection_name(db, coll)?;
    if db == "local" && coll == "oplog.rs" {
        return Err(CommandError::new(
            13,
            "Unauthorized",
            "cannot write to 'local.oplog.rs'",
        ));
    }
    if coll.starts_with("system.") {
        return Err(CommandError::invalid_namespace(format!(
            "cannot write to '{db}.{coll}'"
        )));
    }
    Ok(())
}

/// Creates `db.coll` in live storage, logging the `create` entry.
pub fn create_live(
    catalog: &mut Catalog,
    oplog: &mut Oplog,
    db: &str,
    coll: &str,
    options: Document,
) {
    let c = Collection::new(options);
    oplog.append(create_op(db, coll, &c), None);
    catalog
        .dbs
        .entry(db.to_string())
        .or_default()
        .insert(coll.to_string(), c);
}

impl Target for LiveTarget<'_> {
    fn read(&self, db: &str, coll: &str) -> Option<&Collection> {
        self.catalog.get(db, coll)
    }

    fn write(
        &mut self,
        db: &str,
        coll: &str,
        create: bool,
    ) -> Result<Option<(&mut Collection, &mut dyn OpSink)>, CommandError> {
        check_writable(db, coll)?;
        if self.catalog.get(db, coll).is_none() {
            if !create {
                return Ok(None);
            }
            write_block::check(self.sink.writes_blocked, db)?;
            create_live(self.catalog, self.sink.oplog, db, coll, Document::new());
        }
        match self.catalog.get_mut(db, coll) {
            Some(c) => Ok(Some((c, &mut self.sink as &mut dyn OpSink))),
            None => Ok(None),
        }
    }
}

pub struct TxnTarget<'a> {
    pub catalog: &'a Catalog,
    pub txn: &'a mut TxnWrites,
}

impl Target for TxnTarget<'_> {
    fn read(&self, db: &str, coll: &str) -> Option<&Collection> {
        self.txn
            .colls
            .get(&(db.to_string(), coll.to_string()))
            .or_else(|| self.catalog.get(db, coll))
    }

    fn write(
        &mut self,
        db: &str,
        coll: &str,
        create: bool,
    ) -> Result<Option<(&mut Collection, &mut dyn OpSink)>, CommandError> {
        check_writable(db, coll)?;
        let key = (db.to_string(), coll.to_string());
        if self.read(db, coll).is_some_and(|c| c.cap.is_some()) {
            return Err(CommandError::new(
                263,
                "OperationNotSupportedInTransaction",
                format!(
                    "Collection '{db}.{coll}' is a capped collection. Writes in transactions \
                     are not allowed on capped collections."
                ),
            ));
        }
        if !self.txn.colls.contains_key(&key) {
            match self.catalog.get(db, coll) {
                Some(c) => {
                    self.txn.colls.insert(key.clone(), c.clone());
                }
                None if create => {
                    write_block::check(self.txn.log.writes_blocked, db)?;
                    let c = Collection::new(Document::new());
                    self.txn.log.ops.push((create_op(db, coll, &c), None));
                    self.txn.colls.insert(key.clone(), c);
                }
                None => return Ok(None),
            }
        }
        let TxnWrites { colls, log } = &mut *self.txn;
        match colls.get_mut(&key) {
            Some(c) => Ok(Some((c, log as &mut dyn OpSink))),
            None => Ok(None),
        }
    }
}

/// Puts `_id` first, generating an ObjectId when absent (as mongod does).
pub fn with_id_first(doc: Document) -> Document {
    match doc.get("_id") {
        Some(_) if doc.keys().next().map(String::as_str) == Some("_id") => doc,
        Some(id) => {
            let mut d = doc! {"_id": id.clone()};
            for (k, v) in doc {
                if k != "_id" {
                    d.insert(k, v);
                }
            }
            d
        }
        None => {
            let mut d = doc! {"_id": ObjectId::new()};
            d.extend(doc);
            d
        }
    }
}

pub fn insert_one(
    t: &mut dyn Target,
    db: &str,
    coll: &str,
    doc: Document,
) -> Result<(), WriteError> {
    let doc = with_id_first(doc);
    if let Some(Bson::Array(_)) = doc.get("_id") {
        return Err(CommandError::new(
            53,
            "InvalidIdField",
            "The '_id' value cannot be of type array",
        )
        .into());
    }
    let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
    insert_new(t, db, coll, id, NewDoc::Decoded(doc))
}

/// `insert_one` of a document kept as the bytes the client sent (`_id`
/// first and not an array, see `codec::canonical::RawInsert`): the same checks, oplog
/// entry and stored document, without decoding it.
pub fn insert_raw(
    t: &mut dyn Target,
    db: &str,
    coll: &str,
    raw: RawInsert<'_>,
) -> Result<(), WriteError> {
    // Unique secondary indexes are checked against the decoded document.
    if t.read(db, coll)
        .is_some_and(|c| c.has_unique_secondary() || c.shard_key.is_some())
    {
        return insert_one(t, db, coll, raw.to_document());
    }
    insert_new(t, db, coll, raw.id(), NewDoc::Raw(raw))
}

/// The first `$`-prefixed field name inside an `_id` value (mongod's `storageValidEmbedded`
/// refuses them at any depth; top-level `$` names elsewhere are allowed since 5.0).
fn dollar_field_in(v: &Bson) -> Option<&str> {
    match v {
        Bson::Document(d) => d.iter().find_map(|(k, v)| {
            // A DBRef's own fields are valid (`{$ref, $id, $db}`, in that order).
            let dbref = d.keys().next().is_some_and(|f| f == "$ref");
            if k.starts_with('$') && !(dbref && matches!(k.as_str(), "$ref" | "$id" | "$db")) {
                Some(k.as_str())
            } else {
                dollar_field_in(v)
            }
        }),
        Bson::Array(items) => items.iter().find_map(dollar_field_in),
        _ => None,
    }
}

/// A document to insert, `_id` first.
enum NewDoc<'a> {
    Decoded(Document),
    Raw(RawInsert<'a>),
}

fn insert_new(
    t: &mut dyn Target,
    db: &str,
    coll: &str,
    id: Bson,
    doc: NewDoc<'_>,
) -> Result<(), WriteError> {
    // mongod checks the size before anything else (`fixDocumentForInsert`).
    let size = match &doc {
        NewDoc::Decoded(d) => split::size_if_large(d, approx_size(d)),
        NewDoc::Raw(raw) => raw.bytes.len(),
    };
    if size > split::MAX_USER_SIZE {
        return Err(split::insert_too_large(size).into());
    }
    if let Some(field) = dollar_field_in(&id) {
        return Err(CommandError::new(
            52,
            "DollarPrefixedFieldName",
            format!(
                "_id fields may not contain '$'-prefixed fields: {field} is not valid for storage."
            ),
        )
        .into());
    }
    let Some((c, sink)) = t.write(db, coll, true)? else {
        return Err(CommandError::namespace_not_found("collection vanished").into());
    };
    if c.cap.is_some_and(|cap| size > cap.size) {
        return Err(CommandError::bad_value("object to insert exceeds cappedMaxSize").into());
    }
    let key = OrderedBson(id.clone());
    if c.docs.contains_key(&key) {
        return Err(WriteError::duplicate(db, coll, DuplicateKey::on_id(&id)));
    }
    if c.options.contains_key("validator") {
        let bypass = sink.bypass_validation();
        match &doc {
            NewDoc::Decoded(d) => validation::check(c, validation::Write::Insert(d), bypass)?,
            NewDoc::Raw(raw) => {
                let d = raw.to_document();
                validation::check(c, validation::Write::Insert(&d), bypass)?
            }
        }
    }
    if let NewDoc::Decoded(doc) = &doc {
        if let Some(dup) = c.unique_violation(doc, None) {
            return Err(WriteError::duplicate(db, coll, dup));
        }
    }
    let ns = format!("{db}.{coll}");
    sink.claim(&ns, &id)?;
    let stored = match doc {
        NewDoc::Decoded(doc) => {
            let key = c.document_key(&doc, id);
            sink.log_insert(insert_op(ns, c.uuid, key, doc))
        }
        NewDoc::Raw(raw) => sink.log_raw_insert(ns, c.uuid, id, raw),
    };
    c.put_new(key.clone(), stored);
    sink.remember(c.uuid, Change::inserted(key));
    // A capped collection over its limits deletes its oldest documents, each with its own
    // `d` entry (replicated capped deletes, MongoDB 5.0+).
    for old in c.over_cap() {
        let rid = c.record_id(&old).unwrap_or_default();
        if let Some(gone) = c.remove(&old) {
            let id = gone.doc().get("_id").cloned().unwrap_or(old.0.clone());
            sink.log(
                OplogOp {
                    op: "d",
                    ns: format!("{db}.{coll}"),
                    ui: Some(c.uuid),
                    o: doc! {"_id": id},
                    o2: None,
                    images: None,
                },
                None,
            );
            let before = Version {
                key: old,
                doc: gone,
                rid,
            };
            sink.remember(c.uuid, Change::deleted(before));
        }
    }
    Ok(())
}

fn insert_op(ns: String, ui: bson::Uuid, key: Document, doc: Document) -> OplogOp {
    OplogOp {
        op: "i",
        ns,
        ui: Some(ui),
        o: doc,
        o2: Some(key),
        images: None,
    }
}

/// Keys of documents matching `filter`, in `_id` order, up to `limit` (0 = all): the
/// filter's `_id` conditions pick the candidates from the `_id` index (`query::IdKeys`).
pub fn matching_keys(c: &Collection, filter: &Filter, limit: usize) -> Vec<OrderedBson> {
    let it = c
        .candidates(filter.id_keys())
        .filter(|(_, d)| filter.matches(d.doc().as_ref()))
        .map(|(k, _)| k.clone());
    if limit == 0 {
        it.collect()
    } else {
        it.take(limit).collect()
    }
}

/// Documents matching `filter`, in `_id` order.
pub fn matching_docs(c: &Collection, filter: &Filter) -> Vec<Document> {
    matching_keys(c, filter, 0)
        .into_iter()
        .filter_map(|k| c.docs.get(&k).map(|d| d.doc().into_owned()))
        .collect()
}

#[derive(Debug, Default)]
pub struct UpdateOutcome {
    pub matched: i64,
    pub modified: i64,
    pub upserted: Option<Bson>,
    /// Documents before and after the last change (for findAndModify).
    pub pre: Option<Document>,
    pub post: Option<Document>,
}

pub struct UpdateStatement<'a> {
    pub filter: &'a Document,
    pub spec: &'a UpdateSpec,
    pub multi: bool,
    pub upsert: bool,
    pub sort: Option<&'a Document>,
    pub array_filters: &'a update::ArrayFilters,
}

pub fn update(
    t: &mut dyn Target,
    db: &str,
    coll: &str,
    st: &UpdateStatement<'_>,
) -> Result<UpdateOutcome, WriteError> {
    let filter = Filter::parse(st.filter)?;
    let keys = match t.read(db, coll) {
        Some(c) => select_keys(c, &filter, st.multi, st.sort)?,
        None => Vec::new(),
    };
    let mut out = UpdateOutcome::default();
    if keys.is_empty() {
        if st.upsert {
            upsert(t, db, coll, st, &filter, &mut out)?;
        }
        return Ok(out);
    }
    let Some((c, sink)) = t.write(db, coll, false)? else {
        return Ok(out);
    };
    let ns = format!("{db}.{coll}");
    for key in keys {
        let Some(pre) = c.docs.get(&key) else {
            continue;
        };
        let pre = pre.doc();
        out.matched += 1;
        let post = update::apply_with_array_filters(st.spec, &pre, st.array_filters)?;
        if split::size_if_large(&post, approx_size(&post)) > split::MAX_USER_SIZE {
            return Err(split::update_too_large().into());
        }
        let o = update_oplog_object(st.spec, &pre, &post);
        out.pre = Some(pre.clone().into_owned());
        out.post = Some(post.clone());
        let Some(o) = o else {
            continue;
        };
        validation::check(
            c,
            validation::Write::Update {
                post: &post,
                pre: &pre,
            },
            sink.bypass_validation(),
        )?;
        if let Some(dup) = c.unique_violation(&post, Some(&key.0)) {
            return Err(WriteError::duplicate(db, coll, dup));
        }
        sink.claim(&ns, &key.0)?;
        out.modified += 1;
        // The oplog names the document by the `_id` it had (`o2`).
        let id = pre.get("_id").cloned().unwrap_or_else(|| key.0.clone());
        let rid = c.record_id(&key).unwrap_or_default();
        // A replacement may store an equal `_id` of another numeric type (1 -> 1.0), as
        // mongod does; the key follows the document.
        let now = match post.get("_id") {
            Some(new_id) if *new_id != key.0 => OrderedBson(new_id.clone()),
            _ => key.clone(),
        };
        let replaced = c.replace(&key, now.clone(), StoredDoc::Own(post.clone()));
        sink.log(
            OplogOp {
                op: "u",
                ns: ns.clone(),
                ui: Some(c.uuid),
                o,
                o2: Some(c.document_key(&post, id)),
                images: c.images_enabled().then(|| {
                    Box::new(Images {
                        pre: out.pre.clone(),
                        post: Some(post.clone()),
                    })
                }),
            },
            Some(post),
        );
        if let Some(doc) = replaced {
            sink.remember(c.uuid, Change::updated(now, Version { key, doc, rid }));
        }
    }
    Ok(out)
}

fn select_keys(
    c: &Collection,
    filter: &Filter,
    multi: bool,
    sort: Option<&Document>,
) -> Result<Vec<OrderedBson>, WriteError> {
    match sort {
        Some(sort) if !sort.is_empty() && !multi => {
            let mut docs = matching_docs(c, filter);
            sort_documents(&mut docs, sort)?;
            Ok(docs
                .first()
                .and_then(|d| d.get("_id"))
                .map(|id| vec![OrderedBson(id.clone())])
                .unwrap_or_default())
        }
        _ => Ok(matching_keys(c, filter, if multi { 0 } else { 1 })),
    }
}

fn upsert(
    t: &mut dyn Target,
    db: &str,
    coll: &str,
    st: &UpdateStatement<'_>,
    filter: &Filter,
    out: &mut UpdateOutcome,
) -> Result<(), WriteError> {
    let new_doc = match st.spec {
        UpdateSpec::Replacement(r) => {
            let mut d = r.clone();
            if !d.contains_key("_id") {
                if let Some(id) = filter.id_equality() {
                    d.insert("_id", id.clone());
                }
            }
            d
        }
        _ => update::apply_for_upsert_insert(st.spec, &update::upsert_seed(st.filter))?,
    };
    let new_doc = with_id_first(new_doc);
    if split::size_if_large(&new_doc, approx_size(&new_doc)) > split::MAX_USER_SIZE {
        return Err(split::upsert_too_large().into());
    }
    let id = new_doc.get("_id").cloned().unwrap_or(Bson::Null);
    insert_one(t, db, coll, new_doc.clone())?;
    out.upserted = Some(id);
    out.post = Some(new_doc);
    Ok(())
}

#[derive(Debug, Default)]
pub struct DeleteOutcome {
    pub deleted: i64,
    pub last: Option<Document>,
}

pub fn delete(
    t: &mut dyn Target,
    db: &str,
    coll: &str,
    filter: &Document,
    limit_one: bool,
    sort: Option<&Document>,
) -> Result<DeleteOutcome, WriteError> {
    let filter = Filter::parse(filter)?;
    let keys = match t.read(db, coll) {
        Some(c) => select_keys(c, &filter, !limit_one, sort)?,
        None => return Ok(DeleteOutcome::default()),
    };
    let mut out = DeleteOutcome::default();
    if keys.is_empty() {
        return Ok(out);
    }
    let Some((c, sink)) = t.write(db, coll, false)? else {
        return Ok(out);
    };
    let ns = format!("{db}.{coll}");
    for key in keys {
        sink.claim(&ns, &key.0)?;
        let rid = c.record_id(&key).unwrap_or_default();
        if let Some(stored) = c.remove(&key) {
            let doc = stored.doc().into_owned();
            out.deleted += 1;
            let id = doc.get("_id").cloned().unwrap_or_else(|| key.0.clone());
            let o = c.document_key(&doc, id);
            let images = c.images_enabled().then(|| {
                Box::new(Images {
                    pre: Some(doc.clone()),
                    post: None,
                })
            });
            out.last = Some(doc);
            sink.log(
                OplogOp {
                    op: "d",
                    ns: ns.clone(),
                    ui: Some(c.uuid),
                    images,
                    o,
                    o2: None,
                },
                None,
            );
            let before = Version {
                key,
                doc: stored,
                rid,
            };
            sink.remember(c.uuid, Change::deleted(before));
        }
    }
    Ok(out)
}

/// Replays a committed transaction's buffered changes onto live storage; returns what each
/// replaced, for `history` at the commit's time (known once the commit is logged).
pub fn replay(
    catalog: &mut Catalog,
    ops: &[(OplogOp, Option<Document>)],
    txn_colls: &TxnWrites,
) -> Vec<(bson::Uuid, Change)> {
    let mut changes = Vec::new();
    for (op, post) in ops {
        let Some((db, coll)) = op.ns.split_once('.') else {
            continue;
        };
        if op.op == "c" {
            if let Some(Bson::String(name)) = op.o.get("createIndexes") {
                // An index the transaction built on a collection it created (`txn_ddl`).
                if let Some(c) = catalog.get_mut(db, name) {
                    let mut spec = op.o.clone();
                    spec.remove("createIndexes");
                    let exists = c
                        .indexes
                        .iter()
                        .any(|i| i.get("name").is_some() && i.get("name") == spec.get("name"));
                    if !exists {
                        c.indexes.push(spec);
                    }
                }
                continue;
            }
            if let Some(Bson::String(name)) = op.o.get("create") {
                if catalog.get(db, name).is_none() {
                    let mut options = op.o.clone();
                    options.remove("create");
                    options.remove("idIndex");
                    let mut c = Collection::new(options);
                    if let Some(ui) = op.ui {
                        c.uuid = ui;
                    }
                    catalog
                        .dbs
                        .entry(db.to_string())
                        .or_default()
                        .insert(name.clone(), c);
                }
            }
            continue;
        }
        if catalog.get(db, coll).is_none() {
            let mut c = Collection::new(Document::new());
            if let Some(src) = txn_colls.colls.get(&(db.to_string(), coll.to_string())) {
                c.uuid = src.uuid;
            }
            catalog
                .dbs
                .entry(db.to_string())
                .or_default()
                .insert(coll.to_string(), c);
        }
        let Some(c) = catalog.get_mut(db, coll) else {
            continue;
        };
        let (key, doc) = match op.op {
            "i" => {
                let id = op.o.get("_id").cloned().unwrap_or(Bson::Null);
                (OrderedBson(id), Some(&op.o))
            }
            "u" => match (post, op.o2.as_ref().and_then(|o| o.get("_id"))) {
                // Keyed by the document's own `_id` (see `update`).
                (Some(post), Some(id)) => (
                    OrderedBson(post.get("_id").unwrap_or(id).clone()),
                    Some(post),
                ),
                _ => continue,
            },
            "d" => match op.o.get("_id") {
                Some(id) => (OrderedBson(id.clone()), None),
                None => continue,
            },
            _ => continue,
        };
        let rid = c.record_id(&key).unwrap_or_default();
        let before = match doc {
            Some(d) if c.docs.contains_key(&key) => {
                c.replace(&key, key.clone(), StoredDoc::Own(d.clone()))
            }
            Some(d) => {
                c.put_new(key.clone(), StoredDoc::Own(d.clone()));
                None
            }
            None => c.remove(&key),
        };
        let change = Change {
            now: doc.map(|_| key.clone()),
            before: before.map(|doc| Version { key, doc, rid }),
        };
        changes.push((c.uuid, change));
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Filter;

    #[test]
    fn id_in_lookup_returns_what_a_scan_returns() {
        let mut c = Collection::new(Document::new());
        let ids = [
            Bson::Int32(1),
            Bson::Int64(2),
            Bson::Double(3.5),
            Bson::String("a".into()),
            Bson::Document(doc! {"k": 1}),
        ];
        for id in ids {
            c.put_new(OrderedBson(id.clone()), doc! {"_id": id, "x": 1}.into());
        }
        let in_filter = doc! {"_id": {"$in": [2.0, "a", 1i64, 9, 1, 3.5, "b"]}};
        let fast = Filter::parse(&in_filter).unwrap();
        assert!(fast.id_in().is_some());
        // The same condition, but not of the exact fast-path shape: scanned.
        let scan = Filter::parse(&doc! {"$and": [in_filter.clone()]}).unwrap();
        assert!(scan.id_in().is_none());
        for limit in [0, 1, 2] {
            let got: Vec<Bson> = matching_keys(&c, &fast, limit)
                .into_iter()
                .map(|k| k.0)
                .collect();
            let want: Vec<Bson> = matching_keys(&c, &scan, limit)
                .into_iter()
                .map(|k| k.0)
                .collect();
            assert_eq!(got, want);
        }
        assert_eq!(matching_keys(&c, &fast, 0).len(), 4);
    }
}
