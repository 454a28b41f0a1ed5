//! Raw wire behaviour the driver never exercises: legacy OP_QUERY hello,
//! malformed frames, and the demo seed.

use bson::{doc, Document};
use mongo_sim::SimOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{sim, sim_with};

fn op_query(request_id: i32, collection: &str, query: &Document) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&0i32.to_le_bytes());
    body.extend_from_slice(collection.as_bytes());
    body.push(0);
    body.extend_from_slice(&0i32.to_le_bytes());
    body.extend_from_slice(&(-1i32).to_le_bytes());
    query.to_writer(&mut body).unwrap();
    let mut msg = Vec::new();
    msg.extend_from_slice(&((body.len() + 16) as i32).to_le_bytes());
    msg.extend_from_slice(&request_id.to_le_bytes());
    msg.extend_from_slice(&0i32.to_le_bytes());
    msg.extend_from_slice(&2004i32.to_le_bytes());
    msg.extend_from_slice(&body);
    msg
}

async fn read_reply(sock: &mut TcpStream) -> (i32, i32, Document) {
    let mut header = [0u8; 16];
    sock.read_exact(&mut header).await.unwrap();
    let len = i32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
    let response_to = i32::from_le_bytes(header[8..12].try_into().unwrap());
    let op = i32::from_le_bytes(header[12..16].try_into().unwrap());
    let mut body = vec![0u8; len - 16];
    sock.read_exact(&mut body).await.unwrap();
    assert_eq!(op, 1, "legacy queries are answered with OP_REPLY");
    let doc = Document::from_reader(&body[20..]).unwrap();
    (response_to, op, doc)
}

/// An OP_MSG: `command`, then (when given) one document sequence.
fn op_msg(request_id: i32, command: &Document, sequence: Option<(&str, &[Document])>) -> Vec<u8> {
    let mut body = 0u32.to_le_bytes().to_vec();
    body.push(0);
    command.to_writer(&mut body).unwrap();
    if let Some((ident, docs)) = sequence {
        let mut seq = ident.as_bytes().to_vec();
        seq.push(0);
        for d in docs {
            d.to_writer(&mut seq).unwrap();
        }
        body.push(1);
        body.extend_from_slice(&((seq.len() + 4) as i32).to_le_bytes());
        body.extend_from_slice(&seq);
    }
    let mut msg = Vec::new();
    msg.extend_from_slice(&((body.len() + 16) as i32).to_le_bytes());
    msg.extend_from_slice(&request_id.to_le_bytes());
    msg.extend_from_slice(&0i32.to_le_bytes());
    msg.extend_from_slice(&2013i32.to_le_bytes());
    msg.extend_from_slice(&body);
    msg
}

/// An OP_MSG reply's bytes, without `$clusterTime` and `operationTime`
/// (which move on with every write).
async fn read_msg_reply(sock: &mut TcpStream) -> Vec<u8> {
    let mut header = [0u8; 16];
    sock.read_exact(&mut header).await.unwrap();
    let len = i32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len - 16];
    sock.read_exact(&mut body).await.unwrap();
    let mut doc = Document::from_reader(&body[5..]).unwrap();
    doc.remove("$clusterTime");
    doc.remove("operationTime");
    bson::to_vec(&doc).unwrap()
}

/// The documents of an insert in a sequence are kept as the bytes sent;
/// the reply, write errors included, is what the same documents in the
/// command body (decoded) get.
#[tokio::test]
async fn insert_sequences_and_document_arrays_get_the_same_replies() {
    let s = sim().await;
    let mut sock = TcpStream::connect(s.handle.addr()).await.unwrap();
    let docs = [
        doc! {"_id": 1, "email": "a"},
        doc! {"email": "b", "_id": 2},
        doc! {"_id": 1, "email": "c"},
        doc! {"_id": 3, "email": "a"},
        doc! {"_id": [5]},
        doc! {"_id": 6, "x": {"y": [1.5, null]}},
    ];
    let mut replies = Vec::new();
    for (coll, unique) in [("s", false), ("b", false), ("su", true), ("bu", true)] {
        if unique {
            let index = doc! {"key": {"email": 1}, "name": "email_1", "unique": true};
            let create = doc! {"createIndexes": coll, "indexes": [index], "$db": "d"};
            sock.write_all(&op_msg(1, &create, None)).await.unwrap();
            read_msg_reply(&mut sock).await;
        }
        for ordered in [false, true] {
            let name = format!("{coll}{ordered}");
            let mut cmd = doc! {"insert": name.as_str(), "ordered": ordered, "$db": "d"};
            let msg = if coll.starts_with('s') {
                op_msg(2, &cmd, Some(("documents", &docs)))
            } else {
                cmd.insert("documents", docs.to_vec());
                op_msg(2, &cmd, None)
            };
            sock.write_all(&msg).await.unwrap();
            let reply = read_msg_reply(&mut sock).await;
            replies.push(String::from_utf8_lossy(&reply).replace(&name, "C"));
        }
    }
    assert_eq!(replies[0], replies[2]);
    assert_eq!(replies[1], replies[3]);
    assert_eq!(replies[4], replies[6]);
    assert_eq!(replies[5], replies[7]);
    assert!(replies[4].contains("keyPattern"), "{}", replies[4]);
    assert!(replies[0].contains("InvalidIdField") || replies[0].contains("array"));
    s.stop().await;
}

#[tokio::test]
async fn legacy_op_query_is_master_gets_an_op_reply() {
    let s = sim().await;
    let mut sock = TcpStream::connect(s.handle.addr()).await.unwrap();
    sock.write_all(&op_query(42, "admin.$cmd", &doc! {"isMaster": 1}))
        .await
        .unwrap();
    let (response_to, _, reply) = read_reply(&mut sock).await;
    assert_eq!(response_to, 42);
    assert_eq!(reply.get_bool("ismaster"), Ok(true));
    assert_eq!(reply.get_str("setName"), Ok("rs0"));
    assert_eq!(reply.get_i32("maxWireVersion"), Ok(21));
    // Other legacy queries are refused, and the connection stays usable.
    sock.write_all(&op_query(43, "d.c", &doc! {"find": "c"}))
        .await
        .unwrap();
    let (_, _, refused) = read_reply(&mut sock).await;
    assert_eq!(refused.get_i32("code"), Ok(352));
    s.stop().await;
}

#[tokio::test]
async fn malformed_frame_closes_only_that_connection() {
    let s = sim().await;
    let mut bad = TcpStream::connect(s.handle.addr()).await.unwrap();
    let mut garbage = Vec::new();
    garbage.extend_from_slice(&24i32.to_le_bytes());
    garbage.extend_from_slice(&[0u8; 8]);
    garbage.extend_from_slice(&2013i32.to_le_bytes());
    garbage.extend_from_slice(&[0, 0, 0, 0, 7, 1, 2, 3]);
    bad.write_all(&garbage).await.unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(
        bad.read(&mut buf).await.unwrap(),
        0,
        "server closed the bad connection"
    );
    let ok = s
        .client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap();
    assert_eq!(ok.get_f64("ok"), Ok(1.0));
    s.stop().await;
}

#[tokio::test]
async fn oversized_frame_is_refused() {
    let s = sim().await;
    let mut sock = TcpStream::connect(s.handle.addr()).await.unwrap();
    sock.write_all(&(60_000_000i32).to_le_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(sock.read(&mut buf).await.unwrap(), 0);
    s.stop().await;
}

#[tokio::test]
async fn seed_demo_loads_the_shop_database_through_the_oplog() {
    let s = sim_with(SimOptions {
        seed_demo: 20,
        ..SimOptions::default()
    })
    .await;
    let shop = s.client.database("shop");
    let orders = shop
        .collection::<Document>("orders")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(orders, 20);
    let logged = s
        .client
        .database("local")
        .collection::<Document>("oplog.rs")
        .count_documents(doc! {"ns": "shop.orders", "op": "i"})
        .await
        .unwrap();
    assert_eq!(logged, 20);
    s.stop().await;
}

#[tokio::test]
async fn block_connection_fail_point_delays_then_runs_the_command() {
    let s = sim().await;
    s.client
        .database("admin")
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["ping"], "blockConnection": true, "blockTimeMS": 50},
        })
        .await
        .unwrap();
    let reply = s
        .client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap();
    assert_eq!(reply.get_f64("ok"), Ok(1.0));
    s.stop().await;
}

/// Error replies as the bytes say them: `$merge`'s DuplicateKey names `keyPattern` and
/// `keyValue`, and an update statement field mongod 7.0 does not know (`sort`) fails the whole
/// command (`ok: 0`, its IDL parser reads the statements first), not one statement.
#[tokio::test]
async fn merge_duplicate_key_and_unknown_update_fields_fail_the_command() {
    let s = sim().await;
    let mut sock = TcpStream::connect(s.handle.addr()).await.unwrap();
    let insert = doc! {"insert": "c", "documents": [{"_id": 2}], "$db": "d"};
    sock.write_all(&op_msg(1, &insert, None)).await.unwrap();
    read_msg_reply(&mut sock).await;

    let merge = doc! {
        "aggregate": 1,
        "pipeline": [
            {"$documents": [{"_id": 2, "x": 1}]},
            {"$merge": {"into": "c", "whenMatched": "fail"}},
        ],
        "cursor": {},
        "$db": "d",
    };
    sock.write_all(&op_msg(2, &merge, None)).await.unwrap();
    let reply = Document::from_reader(&read_msg_reply(&mut sock).await[..]).unwrap();
    assert_eq!(reply.get_f64("ok"), Ok(0.0), "{reply}");
    assert_eq!(reply.get_i32("code"), Ok(11000));
    assert_eq!(reply.get_document("keyPattern"), Ok(&doc! {"_id": 1}));
    assert_eq!(reply.get_document("keyValue"), Ok(&doc! {"_id": 2}));

    let update = doc! {
        "update": "c",
        "updates": [{"q": {"_id": {"$gt": 1}}, "u": {"$inc": {"x": 1}}, "sort": {"_id": -1}}],
        "$db": "d",
    };
    sock.write_all(&op_msg(3, &update, None)).await.unwrap();
    let reply = Document::from_reader(&read_msg_reply(&mut sock).await[..]).unwrap();
    assert_eq!(reply.get_f64("ok"), Ok(0.0), "{reply}");
    assert_eq!(reply.get_i32("code"), Ok(40415));
    assert_eq!(
        reply.get_str("errmsg"),
        Ok("BSON field 'update.updates.sort' is an unknown field.")
    );
    s.stop().await;
}
