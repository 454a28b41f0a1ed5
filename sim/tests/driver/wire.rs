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
