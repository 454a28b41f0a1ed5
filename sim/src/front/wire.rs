//! Wire framing: reading request frames off a socket, decoding OP_MSG and the
//! legacy OP_QUERY, and encoding OP_MSG / OP_REPLY replies into a buffer.
//!
//! Everything here is synchronous over byte slices except `read_frame`, so a
//! malformed frame becomes a `WireError` that closes only its own connection.
//!
//! Replies are encoded straight into the connection's reusable output buffer
//! by [`encode_document`] (the common BSON types; anything rarer falls back
//! to the `bson` crate for the whole reply, with identical bytes): `bson`'s
//! own `to_writer` first serialises into a fresh growing `Vec` and copies it,
//! which for 16 MiB cursor batches meant megabytes of page faults per reply.

use bson::{Bson, Document};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::codec::{
    decode_document, encode_document, encode_element, encode_list, finish_length, le_i32,
    MAX_DECODE_DEPTH,
};
use crate::node::cursor::BatchDoc;
use crate::node::oplog::OplogEntry;

use crate::codec::canonical::{self, RawInsert};

/// Largest message a client may send; larger frames are refused (and the
/// connection closed) so per-connection memory stays bounded.
pub const MAX_MESSAGE_SIZE_BYTES: usize = 48_000_000;

pub const OP_REPLY: i32 = 1;
pub const OP_UPDATE: i32 = 2001;
pub const OP_INSERT: i32 = 2002;
pub const OP_QUERY: i32 = 2004;
pub const OP_GET_MORE: i32 = 2005;
pub const OP_DELETE: i32 = 2006;
pub const OP_KILL_CURSORS: i32 = 2007;
pub const OP_COMPRESSED: i32 = 2012;
pub const OP_MSG: i32 = 2013;

const CHECKSUM_PRESENT: u32 = 1;
const MORE_TO_COME: u32 = 1 << 1;
/// Bits 0-15 are "required": an unknown one must be rejected (OP_MSG spec).
const KNOWN_REQUIRED_FLAGS: u32 = CHECKSUM_PRESENT | MORE_TO_COME;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("message length {0} is outside 16..={max}", max = MAX_MESSAGE_SIZE_BYTES)]
    BadLength(i64),
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// One request frame's header fields; the body is read into a buffer the
/// connection reuses, so large bulk inserts do not allocate fresh pages.
#[derive(Debug)]
pub struct Frame {
    pub request_id: i32,
    pub op_code: i32,
}

/// A decoded request; it borrows the frame's body.
#[derive(Debug)]
pub enum Request<'a> {
    /// OP_MSG: the kind-0 body with every kind-1 sequence folded in as an
    /// array, except an insert's `documents` sequence, which is `documents`.
    Msg {
        command: Document,
        documents: Option<Vec<InsertDoc<'a>>>,
        more_to_come: bool,
    },
    /// Legacy OP_QUERY; only hello/isMaster against `*.$cmd` is answered.
    Query { collection: String, query: Document },
}

/// One document of an insert's `documents` sequence.
#[derive(Debug)]
pub enum InsertDoc<'a> {
    /// Bytes the insert can store as they are (see [`canonical`]).
    Raw(RawInsert<'a>),
    /// Anything else, decoded.
    Decoded(Document),
}

/// Reads one frame, its body into `body`. `Ok(None)` means the peer closed
/// the connection cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    body: &mut Vec<u8>,
) -> Result<Option<Frame>, WireError> {
    let mut header = [0u8; 16];
    match reader.read_exact(&mut header[..4]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let length = i32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    if length < 16 || length as usize > MAX_MESSAGE_SIZE_BYTES {
        return Err(WireError::BadLength(length as i64));
    }
    reader.read_exact(&mut header[4..]).await?;
    let request_id = le_i32(&header[4..8]);
    let op_code = le_i32(&header[12..16]);
    let len = length as usize - 16;
    body.clear();
    // Reserved, not zero-filled: pages are only touched as bytes arrive, so
    // a peer announcing 48 MB and sending a few bytes costs a few bytes
    // (filling them cost a 48 MB memset per lie), while an honest large
    // message still lands in one allocation, or none when the reused
    // buffer is big enough already.
    body.reserve(len);
    let read = AsyncReadExt::take(&mut *reader, len as u64)
        .read_to_end(body)
        .await?;
    if read < len {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    Ok(Some(Frame {
        request_id,
        op_code,
    }))
}

fn malformed(what: impl Into<String>) -> WireError {
    WireError::Malformed(what.into())
}

/// Decodes an OP_MSG body (everything after the 16-byte header).
pub fn decode_op_msg(body: &[u8]) -> Result<Request<'_>, WireError> {
    if body.len() < 5 {
        return Err(malformed("OP_MSG shorter than flags plus one section"));
    }
    let flags = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
    let unknown_required = flags & 0xFFFF & !KNOWN_REQUIRED_FLAGS;
    if unknown_required != 0 {
        return Err(malformed(format!(
            "unknown required OP_MSG flag bits {unknown_required:#x}"
        )));
    }
    let mut end = body.len();
    if flags & CHECKSUM_PRESENT != 0 {
        // The checksum is accepted but not verified, like the official drivers do.
        end = end
            .checked_sub(4)
            .ok_or_else(|| malformed("checksum flag set but no room for it"))?;
    }
    let mut pos = 4;
    let mut command: Option<Document> = None;
    // Documents stay slices until the command is known: only an insert
    // keeps them as bytes.
    let mut sequences: Vec<(&str, Vec<&[u8]>)> = Vec::new();
    while pos < end {
        let kind = body[pos];
        pos += 1;
        match kind {
            0 => {
                let (doc, used) = read_document(&body[pos..end])?;
                if command.is_some() {
                    return Err(malformed("more than one kind-0 section"));
                }
                command = Some(doc);
                pos += used;
            }
            1 => {
                if end - pos < 4 {
                    return Err(malformed("truncated document sequence"));
                }
                let size = le_i32(&body[pos..pos + 4]);
                if size < 5 || pos + size as usize > end {
                    return Err(malformed("document sequence size out of range"));
                }
                let seq_end = pos + size as usize;
                let mut p = pos + 4;
                let nul = body[p..seq_end]
                    .iter()
                    .position(|b| *b == 0)
                    .ok_or_else(|| malformed("document sequence identifier not terminated"))?;
                let ident = std::str::from_utf8(&body[p..p + nul])
                    .map_err(|_| malformed("document sequence identifier is not UTF-8"))?;
                p += nul + 1;
                let mut docs = Vec::new();
                while p < seq_end {
                    let bytes = document_bytes(&body[p..seq_end])?;
                    docs.push(bytes);
                    p += bytes.len();
                }
                sequences.push((ident, docs));
                pos = seq_end;
            }
            other => {
                return Err(malformed(format!(
                    "unsupported OP_MSG section kind {other}"
                )))
            }
        }
    }
    let mut command = command.ok_or_else(|| malformed("OP_MSG without a kind-0 section"))?;
    let keeps_raw = command.keys().next().map(String::as_str) == Some("insert")
        && !command.contains_key("documents");
    let mut documents = None;
    for (ident, docs) in sequences {
        if keeps_raw && ident == "documents" {
            let docs = docs
                .into_iter()
                .map(|bytes| match canonical::raw_insert(bytes) {
                    Some(raw) => Ok(InsertDoc::Raw(raw)),
                    None => Ok(InsertDoc::Decoded(decode_whole(bytes)?)),
                });
            // A later sequence of the same name replaces an earlier one,
            // as when folding.
            documents = Some(docs.collect::<Result<Vec<_>, WireError>>()?);
            continue;
        }
        let docs = docs
            .into_iter()
            .map(|bytes| decode_whole(bytes).map(Bson::Document))
            .collect::<Result<Vec<_>, WireError>>()?;
        command.insert(ident, docs);
    }
    Ok(Request::Msg {
        command,
        documents,
        more_to_come: flags & MORE_TO_COME != 0,
    })
}

/// Decodes an OP_QUERY body: flags, collection cstring, skip, limit, query.
pub fn decode_op_query(body: &[u8]) -> Result<Request<'_>, WireError> {
    if body.len() < 4 {
        return Err(malformed("OP_QUERY too short"));
    }
    let rest = &body[4..];
    let nul = rest
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| malformed("OP_QUERY collection name not terminated"))?;
    let collection = std::str::from_utf8(&rest[..nul])
        .map_err(|_| malformed("OP_QUERY collection name is not UTF-8"))?
        .to_string();
    let after = nul + 1 + 8;
    if rest.len() < after {
        return Err(malformed("OP_QUERY too short"));
    }
    let (query, _) = read_document(&rest[after..])?;
    Ok(Request::Query { collection, query })
}

/// Reads one BSON document from the front of `bytes`, returning it and its length.
fn read_document(bytes: &[u8]) -> Result<(Document, usize), WireError> {
    let bytes = document_bytes(bytes)?;
    Ok((decode_whole(bytes)?, bytes.len()))
}

/// The BSON document at the front of `bytes`, by its length prefix.
fn document_bytes(bytes: &[u8]) -> Result<&[u8], WireError> {
    if bytes.len() < 5 {
        return Err(malformed("truncated BSON document"));
    }
    let len = le_i32(&bytes[..4]);
    if len < 5 || len as usize > bytes.len() {
        return Err(malformed("BSON document length out of range"));
    }
    Ok(&bytes[..len as usize])
}

/// Decodes `bytes`, exactly one document.
fn decode_whole(bytes: &[u8]) -> Result<Document, WireError> {
    match decode_document(bytes, 0) {
        Some(doc) => Ok(doc),
        None => {
            // Decoders recurse once per level, and a nesting bomb (a few
            // hundred KB of `{"a": {"a": ...}}`) would overflow the stack and
            // abort the whole process: refuse what mongod refuses first.
            let raw = bson::RawDocument::from_bytes(bytes).ok();
            if raw.is_some_and(|d| deeper_than(d, MAX_BSON_DEPTH, 0)) {
                return Err(malformed(format!(
                    "BSONObj exceeded maximum nested object depth: {MAX_BSON_DEPTH}"
                )));
            }
            // `bson`'s serde decoder takes ~18 KB of stack per level in a
            // debug build (2 MB lasts ~115 levels); its raw conversion about
            // a third of that, so deep documents go that way.
            if let Some(deep) = raw.filter(|d| deeper_than(d, MAX_DECODE_DEPTH, 0)) {
                return Document::try_from(deep)
                    .map_err(|e| malformed(format!("invalid BSON: {e}")));
            }
            bson::from_slice::<Document>(bytes).map_err(|e| malformed(format!("invalid BSON: {e}")))
        }
    }
}

/// mongod's `maxBSONDepth`: documents and arrays nested below this many
/// levels (the top-level document is level 0) are refused.
const MAX_BSON_DEPTH: usize = 200;

/// Whether `doc` (at nesting level `depth`) has documents or arrays nested
/// below level `limit`; the recursion stops there, so this cannot overflow.
/// Malformed elements count as not deep (decoding reports them).
fn deeper_than(doc: &bson::RawDocument, limit: usize, depth: usize) -> bool {
    use bson::RawBsonRef;
    if depth > limit {
        return true;
    }
    doc.iter().any(|element| {
        let child = match element {
            Ok((_, RawBsonRef::Document(d))) => d,
            Ok((_, RawBsonRef::Array(a))) => match bson::RawDocument::from_bytes(a.as_bytes()) {
                Ok(d) => d,
                Err(_) => return false,
            },
            Ok((_, RawBsonRef::JavaScriptCodeWithScope(c))) => c.scope,
            _ => return false,
        };
        deeper_than(child, limit, depth + 1)
    })
}

/// Appends an OP_MSG reply (one kind-0 section) answering `response_to`;
/// `batch`, when given, is written as the reply's (empty) `cursor.firstBatch`
/// or `cursor.nextBatch` array.
pub fn write_op_msg(
    out: &mut Vec<u8>,
    request_id: i32,
    response_to: i32,
    reply: &Document,
    batch: Option<&[BatchDoc]>,
) -> Result<(), bson::ser::Error> {
    let start = out.len();
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.push(0);
    match batch {
        None => write_document(out, reply)?,
        Some(batch) => write_with_batch(out, reply, batch)?,
    }
    finish_header(out, start, request_id, response_to, OP_MSG);
    Ok(())
}

/// Appends an OP_REPLY carrying one document (the legacy hello answer).
pub fn write_op_reply(
    out: &mut Vec<u8>,
    request_id: i32,
    response_to: i32,
    reply: &Document,
    query_failure: bool,
) -> Result<(), bson::ser::Error> {
    let start = out.len();
    out.extend_from_slice(&[0u8; 16]);
    let flags: i32 = if query_failure { 2 } else { 0 };
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&0i64.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&1i32.to_le_bytes());
    write_document(out, reply)?;
    finish_header(out, start, request_id, response_to, OP_REPLY);
    Ok(())
}

/// Appends `doc`'s BSON to `out`, directly when [`encode_document`] can and
/// through the `bson` crate otherwise; the bytes are the same either way.
fn write_document(out: &mut Vec<u8>, doc: &Document) -> Result<(), bson::ser::Error> {
    let start = out.len();
    if encode_document(out, doc).is_none() {
        out.truncate(start);
        doc.to_writer(&mut *out)?;
    }
    Ok(())
}

/// Appends a cursor reply whose batch array is filled from `batch`; bytes as
/// if the batch's documents were in the array.
fn write_with_batch(
    out: &mut Vec<u8>,
    reply: &Document,
    batch: &[BatchDoc],
) -> Result<(), bson::ser::Error> {
    let start = out.len();
    if encode_with_batch(out, reply, batch).is_some() {
        return Ok(());
    }
    // A rare type somewhere: let `bson` write the whole, batch included.
    out.truncate(start);
    use serde::ser::Error as _;
    let mut whole = reply.clone();
    let docs = batch
        .iter()
        .map(|d| d.to_document().map(Bson::Document))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bson::ser::Error::custom(format!("undecodable batch document: {e}")))?;
    if let Ok(cursor) = whole.get_document_mut("cursor") {
        for key in ["firstBatch", "nextBatch"] {
            if cursor.contains_key(key) {
                cursor.insert(key, docs);
                break;
            }
        }
    }
    whole.to_writer(&mut *out)
}

fn encode_with_batch(out: &mut Vec<u8>, reply: &Document, batch: &[BatchDoc]) -> Option<()> {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    for (key, value) in reply {
        match value {
            Bson::Document(cursor) if key == "cursor" => {
                out.push(0x03);
                out.extend_from_slice(key.as_bytes());
                out.push(0);
                encode_cursor(out, cursor, batch)?;
            }
            _ => encode_element(out, key, value)?,
        }
    }
    finish_length(out, start)
}

fn encode_cursor(out: &mut Vec<u8>, cursor: &Document, batch: &[BatchDoc]) -> Option<()> {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    for (key, value) in cursor {
        if key == "firstBatch" || key == "nextBatch" {
            out.push(0x04);
            out.extend_from_slice(key.as_bytes());
            out.push(0);
            encode_batch(out, batch)?;
        } else {
            encode_element(out, key, value)?;
        }
    }
    finish_length(out, start)
}

fn encode_batch(out: &mut Vec<u8>, batch: &[BatchDoc]) -> Option<()> {
    encode_list(out, batch, |out, key, item| {
        out.push(0x03);
        out.extend_from_slice(key.as_bytes());
        out.push(0);
        match item {
            BatchDoc::Owned(d) => encode_document(out, d),
            BatchDoc::Entry(e) => encode_entry(out, e),
            BatchDoc::Raw(bytes) => {
                out.extend_from_slice(bytes);
                Some(())
            }
        }
    })
}

/// An oplog entry, its `o` spliced in from the entry's BSON when it has it.
fn encode_entry(out: &mut Vec<u8>, e: &OplogEntry) -> Option<()> {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    for (key, value) in e.fields() {
        match (key, e.raw_o()) {
            ("o", Some(raw)) => {
                out.extend_from_slice(b"\x03o\0");
                out.extend_from_slice(raw.as_bytes());
            }
            _ => encode_element(out, key, value)?,
        }
    }
    finish_length(out, start)
}

fn finish_header(out: &mut [u8], start: usize, request_id: i32, response_to: i32, op: i32) {
    let len = (out.len() - start) as i32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&request_id.to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&response_to.to_le_bytes());
    out[start + 12..start + 16].copy_from_slice(&op.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;
    use bson::spec::BinarySubtype;

    fn msg_body(sections: &[u8]) -> Vec<u8> {
        let mut body = 0u32.to_le_bytes().to_vec();
        body.extend_from_slice(sections);
        body
    }

    /// An OP_MSG body: `command`, then one `ident` sequence of `docs`.
    fn with_sequence(command: &Document, ident: &str, docs: &[Document]) -> Vec<u8> {
        let mut sections = vec![0u8];
        command.to_writer(&mut sections).unwrap();
        let mut seq = Vec::new();
        seq.extend_from_slice(ident.as_bytes());
        seq.push(0);
        for d in docs {
            d.to_writer(&mut seq).unwrap();
        }
        sections.push(1);
        sections.extend_from_slice(&((seq.len() + 4) as i32).to_le_bytes());
        sections.extend_from_slice(&seq);
        msg_body(&sections)
    }

    #[test]
    fn kind1_sequences_fold_into_the_command() {
        let body = with_sequence(
            &doc! {"update": "c", "$db": "d"},
            "updates",
            &[doc! {"q": {}, "u": {}}, doc! {"q": {"_id": 2}, "u": {}}],
        );
        let Request::Msg {
            command, documents, ..
        } = decode_op_msg(&body).unwrap()
        else {
            panic!("expected OP_MSG");
        };
        assert_eq!(command.get_array("updates").unwrap().len(), 2);
        assert_eq!(command.get_str("update").unwrap(), "c");
        assert!(documents.is_none());
    }

    #[test]
    fn an_inserts_documents_stay_bytes_where_they_can() {
        let docs = [doc! {"_id": 1, "a": "x"}, doc! {"a": 1, "_id": 2}];
        let body = with_sequence(&doc! {"insert": "c", "$db": "d"}, "documents", &docs);
        let Request::Msg {
            command, documents, ..
        } = decode_op_msg(&body).unwrap()
        else {
            panic!("expected OP_MSG");
        };
        assert!(!command.contains_key("documents"));
        match &documents.unwrap()[..] {
            [InsertDoc::Raw(raw), InsertDoc::Decoded(d)] => {
                assert_eq!(raw.bytes, bson::to_vec(&docs[0]).unwrap());
                assert_eq!(d, &docs[1]);
            }
            other => panic!("unexpected {other:?}"),
        }
        // A sequence beside a `documents` field replaces it, as before.
        let body = with_sequence(
            &doc! {"insert": "c", "documents": [], "$db": "d"},
            "documents",
            &docs,
        );
        let Request::Msg {
            command, documents, ..
        } = decode_op_msg(&body).unwrap()
        else {
            panic!("expected OP_MSG");
        };
        assert_eq!(command.get_array("documents").unwrap().len(), 2);
        assert!(documents.is_none());
        // Bad BSON in the sequence still fails the whole message.
        let mut bad = with_sequence(&doc! {"insert": "c", "$db": "d"}, "documents", &docs);
        let last = bad.len() - 1;
        bad[last] = 0x55;
        assert!(decode_op_msg(&bad).is_err());
    }

    #[test]
    fn kind2_and_garbage_are_rejected() {
        assert!(decode_op_msg(&msg_body(&[2, 0, 0, 0, 0])).is_err());
        assert!(decode_op_msg(&msg_body(&[0, 9, 0, 0, 0])).is_err());
        assert!(decode_op_msg(&[0, 0]).is_err());
    }

    #[test]
    fn direct_encoding_matches_the_bson_crate() {
        use bson::{oid::ObjectId, Binary, DateTime, Timestamp};
        let doc = doc! {
            "d": 1.5, "s": "héllo", "e": "", "n": null, "t": true, "f": false,
            "i": -7i32, "l": 1i64 << 40, "ts": Timestamp { time: 5, increment: 9 },
            "dt": DateTime::from_millis(-3), "oid": ObjectId::new(),
            "uuid": bson::Uuid::new(),
            "bin": Binary { subtype: BinarySubtype::Generic, bytes: vec![1, 2, 3] },
            "min": Bson::MinKey, "max": Bson::MaxKey,
            "dec": Bson::Decimal128("-12.34".parse().unwrap()),
            "nested": {"a": [1, "x", {"b": []}, [[]]], "": {}},
        };
        let mut out = vec![9u8];
        encode_document(&mut out, &doc).unwrap();
        assert_eq!(out[1..], bson::to_vec(&doc).unwrap()[..]);
        for odd in [
            doc! {"r": bson::Regex { pattern: "a".into(), options: "i".into() }},
            doc! {"old": Binary { subtype: BinarySubtype::BinaryOld, bytes: vec![1] }},
            doc! {"a\0b": 1},
        ] {
            let mut direct = Vec::new();
            assert!(encode_document(&mut direct, &odd).is_none());
            let mut out = Vec::new();
            let written = write_document(&mut out, &odd);
            match bson::to_vec(&odd) {
                Ok(bytes) => assert_eq!(out, bytes),
                Err(_) => assert!(written.is_err()),
            }
        }
    }

    #[test]
    fn a_batch_beside_the_reply_encodes_like_the_batch_inside_it() {
        use crate::node::oplog::{Oplog, OplogOp};
        let mut oplog = Oplog::new(10);
        let entry = oplog.append(
            OplogOp {
                op: "i",
                ns: "d.c".into(),
                ui: Some(bson::Uuid::new()),
                o: doc! {"_id": 1, "s": "x"},
                o2: Some(doc! {"_id": 1}),
                images: None,
            },
            None,
        );
        let raw = bson::to_vec(&doc! {"ev": 2i64}).unwrap();
        let regex = doc! {"r": bson::Regex { pattern: "a".into(), options: "".into() }};
        for owned in [doc! {"plain": 1}, regex] {
            let mut items: Vec<BatchDoc> = (0..11).map(|_| BatchDoc::Raw(raw.clone())).collect();
            items.push(BatchDoc::Entry(entry.clone()));
            items.push(BatchDoc::Owned(owned));
            let docs: Vec<Bson> = items
                .iter()
                .map(|d| Bson::Document(d.to_document().unwrap()))
                .collect();
            for key in ["firstBatch", "nextBatch"] {
                let shell = doc! {"cursor": {key: [], "id": 5i64, "ns": "d.c"}, "ok": 1.0};
                let mut whole = shell.clone();
                whole
                    .get_document_mut("cursor")
                    .unwrap()
                    .insert(key, docs.clone());
                let mut out = Vec::new();
                write_with_batch(&mut out, &shell, &items).unwrap();
                assert_eq!(out, bson::to_vec(&whole).unwrap());
            }
        }
    }

    fn same_as_bson(bytes: &[u8]) {
        let ours = decode_document(bytes, 0);
        match bson::from_slice::<Document>(bytes) {
            Ok(theirs) => {
                if let Some(ours) = ours {
                    // Equal bytes: equal values and field order, and unlike
                    // `==` also for NaN.
                    assert_eq!(bson::to_vec(&ours).unwrap(), bson::to_vec(&theirs).unwrap());
                }
            }
            Err(_) => assert!(ours.is_none(), "decoded what bson refuses: {bytes:?}"),
        }
    }

    #[test]
    fn direct_decoding_matches_the_bson_crate() {
        use bson::{oid::ObjectId, Binary, DateTime, Timestamp};
        let doc = doc! {
            "d": 1.5, "nan": f64::NAN, "s": "héllo", "e": "", "n": null, "t": true, "f": false,
            "i": -7i32, "l": 1i64 << 40, "ts": Timestamp { time: 5, increment: 9 },
            "dt": DateTime::from_millis(-3), "oid": ObjectId::new(),
            "uuid": bson::Uuid::new(),
            "bin": Binary { subtype: BinarySubtype::Generic, bytes: vec![1, 2, 3] },
            "min": Bson::MinKey, "max": Bson::MaxKey,
            "nested": {"a": [1, "x", {"b": []}, [[]]], "": {}},
            "dup": 1, "r": bson::Regex { pattern: "a".into(), options: "i".into() },
        };
        let bytes = bson::to_vec(&doc).unwrap();
        // The regex is left to `bson`; without it everything is direct.
        assert!(decode_document(&bytes, 0).is_none());
        let mut plain = doc.clone();
        plain.remove("r");
        let plain_bytes = bson::to_vec(&plain).unwrap();
        assert!(decode_document(&plain_bytes, 0).is_some());
        same_as_bson(&plain_bytes);
        // Every truncation and every single-byte corruption.
        for cut in 0..plain_bytes.len() {
            same_as_bson(&plain_bytes[..cut]);
        }
        for at in 0..plain_bytes.len() {
            for byte in [0u8, 1, 0x7F, 0xFF] {
                let mut bad = plain_bytes.clone();
                bad[at] = byte;
                same_as_bson(&bad);
            }
        }
        let (_, used) = read_document(&plain_bytes).unwrap();
        assert_eq!(used, plain_bytes.len());
    }

    proptest::proptest! {
        #[test]
        fn direct_decoding_agrees_on_any_document(
            fields in proptest::collection::vec(("[a-c]{0,2}", crate::bson_order::tests::arb_bson()), 0..6)
        ) {
            let doc: Document = fields.into_iter().collect();
            same_as_bson(&bson::to_vec(&doc).unwrap());
        }
    }

    /// `{"a": {"a": ... {}}}` (or arrays), `depth` levels, built without recursion.
    fn nested(depth: usize, array: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(depth * 8 + 5);
        for level in 0..depth {
            let size = 5 + 8 * (depth - level);
            out.extend_from_slice(&(size as i32).to_le_bytes());
            out.push(if array { 0x04 } else { 0x03 });
            out.extend_from_slice(if array { b"0\0" } else { b"a\0" });
        }
        out.extend_from_slice(&[5, 0, 0, 0, 0]);
        out.extend(std::iter::repeat_n(0u8, depth));
        out
    }

    /// Regression: a 200,000-level document overflowed the stack inside
    /// `bson` and aborted the process. Nesting is now refused past mongod's
    /// 200 levels, and documents deeper than the direct decoder's 64 are
    /// decoded by `bson`'s raw conversion, which needs a third of the stack.
    /// (Test threads have the same 2 MB stack as tokio's workers.)
    #[test]
    fn nesting_bombs_are_refused_without_overflowing_the_stack() {
        for array in [false, true] {
            for depth in [64, 65, 150, 200] {
                let doc = decode_whole(&nested(depth, array)).unwrap();
                assert!(doc.contains_key(if array { "0" } else { "a" }));
            }
            for depth in [201, 5_000, 200_000] {
                let err = decode_whole(&nested(depth, array)).unwrap_err();
                assert!(err.to_string().contains("maximum nested object depth: 200"));
            }
        }
        // Deep, with a type only `bson` decodes at the bottom.
        let mut deep = bson::doc! {"d": Bson::Decimal128("1.5".parse().unwrap())};
        for _ in 0..150 {
            deep = bson::doc! {"a": deep};
        }
        let bytes = bson::to_vec(&deep).unwrap();
        assert_eq!(decode_whole(&bytes).unwrap(), deep);
        // The same bomb as an insert's document sequence, and as the command.
        let bomb = nested(100_000, false);
        let mut body = 0u32.to_le_bytes().to_vec();
        body.push(0);
        bson::doc! {"insert": "c", "$db": "d"}
            .to_writer(&mut body)
            .unwrap();
        body.push(1);
        body.extend_from_slice(&((bomb.len() + 4 + 10) as i32).to_le_bytes());
        body.extend_from_slice(b"documents\0");
        body.extend_from_slice(&bomb);
        assert!(decode_op_msg(&body).is_err());
        assert!(decode_op_msg(&msg_body(&[&[0u8][..], &bomb].concat())).is_err());
    }

    /// Headers and bodies from an in-memory peer: every lie about lengths
    /// ends in an error once the input runs out, never in a wait.
    #[tokio::test]
    async fn read_frame_refuses_lying_lengths_at_end_of_input() {
        let mut body = Vec::new();
        let frame_of = |len: i32, rest: &[u8]| {
            let mut f = len.to_le_bytes().to_vec();
            f.extend_from_slice(&[0u8; 8]);
            f.extend_from_slice(&OP_MSG.to_le_bytes());
            f.extend_from_slice(rest);
            f
        };
        for len in [i32::MIN, -1, 0, 15, 48_000_001, i32::MAX] {
            let f = frame_of(len, &[]);
            let r = read_frame(&mut &f[..], &mut body).await;
            assert!(matches!(r, Err(WireError::BadLength(_))), "{len}: {r:?}");
        }
        for (len, rest) in [
            (17, &[][..]),
            (100, &[1, 2, 3][..]),
            (48_000_000, &[7; 64][..]),
        ] {
            let f = frame_of(len, rest);
            let r = read_frame(&mut &f[..], &mut body).await;
            assert!(matches!(r, Err(WireError::Io(_))), "{len}: {r:?}");
            // What did arrive was read.
            assert_eq!(body, rest);
        }
        // A header cut short is an error too; no bytes at all is a clean close.
        for cut in 1..16 {
            let f = frame_of(16, &[]);
            let r = read_frame(&mut &f[..cut], &mut body).await;
            assert!(r.is_err() || cut < 4, "{cut}: {r:?}");
        }
        assert!(read_frame(&mut &[][..], &mut body).await.unwrap().is_none());
        // An honest frame, twice in a row from one stream.
        let two = [frame_of(19, &[1, 2, 3]), frame_of(16, &[])].concat();
        let mut input = &two[..];
        let f = read_frame(&mut input, &mut body).await.unwrap().unwrap();
        assert_eq!((f.op_code, &body[..]), (OP_MSG, &[1u8, 2, 3][..]));
        read_frame(&mut input, &mut body).await.unwrap().unwrap();
        assert!(body.is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes never panic the OP_MSG or OP_QUERY decoders.
        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)
        ) {
            let _ = decode_op_msg(&bytes);
            let _ = decode_op_query(&bytes);
        }

        /// Nor do corrupted versions of a valid message: a byte changed, the
        /// message cut short, or a length field anywhere replaced by a lie.
        #[test]
        fn decoders_never_panic_on_corrupted_messages(
            at in 0usize..400,
            byte in proptest::prelude::any::<u8>(),
            cut in 0usize..400,
            lie in proptest::prelude::any::<i32>(),
        ) {
            let body = with_sequence(
                &doc! {"insert": "c", "ordered": false, "$db": "d", "x": {"y": [1, "z"]}},
                "documents",
                &[doc! {"_id": 1, "a": [1.5, null]}, doc! {"b": {"c": true}}],
            );
            let mut changed = body.clone();
            let at = at % changed.len();
            changed[at] = byte;
            let _ = decode_op_msg(&changed);
            let _ = decode_op_msg(&body[..cut.min(body.len())]);
            let mut lying = body.clone();
            let at = at.min(lying.len() - 4);
            lying[at..at + 4].copy_from_slice(&lie.to_le_bytes());
            let _ = decode_op_msg(&lying);
            let mut query = 0i32.to_le_bytes().to_vec();
            query.extend_from_slice(b"admin.$cmd\0");
            query.extend_from_slice(&[0u8; 8]);
            doc! {"isMaster": 1}.to_writer(&mut query).unwrap();
            let at = at % query.len();
            query[at] = byte;
            let _ = decode_op_query(&query);
            let _ = decode_op_query(&query[..cut.min(query.len())]);
        }
    }

    #[test]
    fn reply_header_counts_the_whole_message() {
        let mut out = Vec::new();
        write_op_msg(&mut out, 7, 3, &doc! {"ok": 1.0}, None).unwrap();
        assert_eq!(le_i32(&out[0..4]) as usize, out.len());
        assert_eq!(le_i32(&out[8..12]), 3);
        assert_eq!(le_i32(&out[12..16]), OP_MSG);
    }
}
