//! The demo's traffic: a steady trickle of realistic changes to the `shop` database (new orders,
//! status changes, tag pushes, quantity bumps, deletes, and a multi-document transaction now and
//! then), written through the official driver like any application would.
//!
//! `cargo run --release --example demo_writer -- MONGO_URI [CHANGES_PER_SECOND]`

use std::time::Duration;

use bson::{doc, oid::ObjectId, DateTime, Decimal128, Document};
use mongodb::{Client, Collection};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const STATUSES: [&str; 4] = ["placed", "paid", "shipped", "delivered"];
const TAGS: [&str; 6] = ["gift", "express", "fragile", "bulk", "promo", "repeat"];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let uri = args
        .next()
        .ok_or("usage: demo_writer MONGO_URI [CHANGES_PER_SECOND]")?;
    let rate: u64 = args.next().map(|r| r.parse()).transpose()?.unwrap_or(20);
    let client = Client::with_uri_str(&uri).await?;
    let orders: Collection<Document> = client.database("shop").collection("orders");
    let mut rng = StdRng::seed_from_u64(7);
    let mut recent: Vec<ObjectId> = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let mut written: u64 = 0;
    loop {
        ticker.tick().await;
        let roll = rng.gen_range(0..100);
        if roll < 35 || recent.is_empty() {
            let id = ObjectId::new();
            orders.insert_one(new_order(&mut rng, id)).await?;
            recent.push(id);
            if recent.len() > 500 {
                recent.remove(0);
            }
        } else {
            let id = recent[rng.gen_range(0..recent.len())];
            match roll {
                35..=64 => {
                    let status = STATUSES[rng.gen_range(0..STATUSES.len())];
                    orders
                        .update_one(doc! {"_id": id}, doc! {"$set": {"status": status}})
                        .await?;
                }
                65..=79 => {
                    let tag = TAGS[rng.gen_range(0..TAGS.len())];
                    orders
                        .update_one(doc! {"_id": id}, doc! {"$addToSet": {"tags": tag}})
                        .await?;
                }
                80..=89 => {
                    orders
                        .update_one(doc! {"_id": id}, doc! {"$inc": {"items.0.qty": 1}})
                        .await?;
                }
                90..=96 => {
                    orders.delete_one(doc! {"_id": id}).await?;
                    recent.retain(|r| *r != id);
                }
                _ => {
                    // Two orders placed atomically: Postgres must never show one without the other.
                    let mut session = client.start_session().await?;
                    session.start_transaction().await?;
                    let a = ObjectId::new();
                    let b = ObjectId::new();
                    orders
                        .insert_one(new_order(&mut rng, a))
                        .session(&mut session)
                        .await?;
                    orders
                        .insert_one(new_order(&mut rng, b))
                        .session(&mut session)
                        .await?;
                    session.commit_transaction().await?;
                    recent.extend([a, b]);
                }
            }
        }
        written += 1;
        if written.is_multiple_of(rate.max(1) * 10) {
            eprintln!("demo_writer: {written} changes written");
        }
    }
}

fn new_order(rng: &mut StdRng, id: ObjectId) -> Document {
    let lines = rng.gen_range(1..4);
    let mut cents_total: i64 = 0;
    let mut items = Vec::new();
    for _ in 0..lines {
        let qty: i32 = rng.gen_range(1..5);
        let cents: i64 = rng.gen_range(199..9999);
        cents_total += cents * i64::from(qty);
        items.push(doc! {
            "sku": format!("SKU-{:04}", rng.gen_range(0..200)),
            "qty": qty,
            "price": decimal(cents),
        });
    }
    let customer = rng.gen_range(0..1000);
    doc! {
        "_id": id,
        "customer": {"_id": format!("C{customer:06}"), "email": format!("customer{customer}@example.com")},
        "total": decimal(cents_total),
        "placedAt": DateTime::now(),
        "status": "placed",
        "tags": [TAGS[rng.gen_range(0..TAGS.len())]],
        "items": items,
        "channel": "web",
    }
}

fn decimal(cents: i64) -> Decimal128 {
    // Decimal128 parses exact decimal text; the format is always valid, so fall back to zero only
    // in the impossible case.
    format!("{}.{:02}", cents / 100, cents % 100)
        .parse()
        .unwrap_or_else(|_| Decimal128::from_bytes([0; 16]))
}
