//! The deterministic demo dataset (`--seed-demo N`): a small e-commerce
//! database `shop` with `customers`, `products` and `orders`, generated from
//! a seeded RNG so that every run with the same `(n, seed)` yields the same
//! documents, byte for byte.
//!
//! Shapes are chosen to exercise a document-to-table mapper: `_id`s of two
//! types (string and ObjectId customers), nested sub-documents, arrays of
//! strings and of sub-documents, Decimal128 money with two decimals (an
//! order's `total` is exactly the sum of `qty × price` over its items),
//! dates, and fields no mapping is expected to cover (`notes`, `channel`).

use bson::{doc, oid::ObjectId, Bson, DateTime, Decimal128, Document};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Database of the demo dataset.
pub const DB: &str = "shop";
/// Number of products in the catalogue.
pub const PRODUCTS: usize = 200;

/// 2024-01-01T00:00:00Z: the start of the dataset's time range.
const EPOCH_MS: i64 = 1_704_067_200_000;
/// Two years of milliseconds: the span of `createdAt` and `placedAt`.
const SPAN_MS: i64 = 2 * 365 * 24 * 3600 * 1000;

const FIRST_NAMES: &[&str] = &[
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Barbara",
    "Ken",
    "Margaret",
    "Dennis",
    "Frances",
    "Edsger",
    "Radia",
    "Donald",
    "Hedy",
    "Tim",
    "Katherine",
    "Guido",
    "Sophie",
    "Bjarne",
    "Joan",
    "Niklaus",
];
const LAST_NAMES: &[&str] = &[
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Liskov",
    "Thompson",
    "Hamilton",
    "Ritchie",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Knuth",
    "Lamarr",
    "Berners-Lee",
    "Johnson",
    "van Rossum",
    "Wilson",
    "Stroustrup",
    "Clarke",
    "Wirth",
];
/// (city, zip prefix, country code)
const CITIES: &[(&str, &str, &str)] = &[
    ("Berlin", "10", "DE"),
    ("Hamburg", "20", "DE"),
    ("Paris", "75", "FR"),
    ("Lyon", "69", "FR"),
    ("Madrid", "28", "ES"),
    ("Lisbon", "11", "PT"),
    ("Amsterdam", "10", "NL"),
    ("Vienna", "10", "AT"),
    ("Zurich", "80", "CH"),
    ("Dublin", "D0", "IE"),
    ("Boston", "02", "US"),
    ("Austin", "78", "US"),
];
const STREETS: &[&str] = &[
    "Main Street",
    "Station Road",
    "Harbour Lane",
    "Mill Road",
    "Church Street",
    "Park Avenue",
    "Garden Way",
    "Market Square",
    "River Walk",
    "Hill Crescent",
];
const ADJECTIVES: &[&str] = &[
    "Classic",
    "Compact",
    "Deluxe",
    "Eco",
    "Ergonomic",
    "Heavy-Duty",
    "Portable",
    "Smart",
    "Vintage",
    "Wireless",
];
const NOUNS: &[&str] = &[
    "Kettle",
    "Lamp",
    "Backpack",
    "Keyboard",
    "Notebook",
    "Headphones",
    "Mug",
    "Chair",
    "Umbrella",
    "Speaker",
    "Bottle",
    "Blanket",
];
const PRODUCT_TAGS: &[&str] = &[
    "new",
    "sale",
    "bestseller",
    "eco",
    "gift",
    "limited",
    "bundle",
    "clearance",
];
const STATUSES: &[&str] = &[
    "pending",
    "paid",
    "shipped",
    "delivered",
    "cancelled",
    "refunded",
];
const ORDER_TAGS: &[&str] = &["gift", "express", "first-order", "vip", "promo", "fragile"];
const CHANNELS: &[&str] = &["web", "mobile", "store", "phone"];
const NOTES: &[&str] = &[
    "Leave at the door",
    "Call before delivery",
    "Gift wrap, please",
    "Ring twice",
    "Deliver after 6pm",
];

/// What an order needs to know about a customer.
struct CustomerRef {
    id: Bson,
    email: String,
}

/// The demo documents for `n` orders: about `n / 10` customers (at least
/// one), then [`PRODUCTS`] products, then the `n` orders, each item
/// tagged with its database and collection.
pub fn demo_documents(
    n: usize,
    seed: u64,
) -> impl Iterator<Item = (&'static str, &'static str, Document)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n_customers = (n / 10).max(1);
    let mut customers = Vec::with_capacity(n_customers);
    let mut refs = Vec::with_capacity(n_customers);
    for i in 0..n_customers {
        let c = customer(&mut rng, i);
        refs.push(CustomerRef {
            id: c.get("_id").cloned().unwrap_or(Bson::Null),
            email: c.get_str("email").unwrap_or_default().to_string(),
        });
        customers.push((DB, "customers", c));
    }
    let mut products = Vec::with_capacity(PRODUCTS);
    let mut prices = Vec::with_capacity(PRODUCTS);
    for i in 0..PRODUCTS {
        let (p, cents) = product(&mut rng, i);
        prices.push((p.get_str("_id").unwrap_or_default().to_string(), cents));
        products.push((DB, "products", p));
    }
    let orders = (0..n).map(move |i| (DB, "orders", order(&mut rng, i, &refs, &prices)));
    customers.into_iter().chain(products).chain(orders)
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len())]
}

/// A deterministic ObjectId whose timestamp part lies in the dataset's range.
fn object_id(rng: &mut StdRng) -> ObjectId {
    let secs = u32::try_from((EPOCH_MS + rng.gen_range(0..SPAN_MS)) / 1000).unwrap_or(0);
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&secs.to_be_bytes());
    rng.fill(&mut bytes[4..]);
    ObjectId::from_bytes(bytes)
}

fn date(rng: &mut StdRng) -> DateTime {
    DateTime::from_millis(EPOCH_MS + rng.gen_range(0..SPAN_MS))
}

/// Money with exactly two decimals, from an amount in cents.
fn money(cents: i64) -> Bson {
    let text = format!("{}.{:02}", cents / 100, cents % 100);
    // A plain decimal string with two decimals always parses.
    Bson::Decimal128(
        text.parse::<Decimal128>()
            .unwrap_or_else(|_| Decimal128::from_bytes([0; 16])),
    )
}

fn customer(rng: &mut StdRng, i: usize) -> Document {
    // Every seventh customer has an ObjectId `_id`, the rest a string one.
    let id = if i % 7 == 3 {
        Bson::ObjectId(object_id(rng))
    } else {
        Bson::String(format!("cust-{:06}", i + 1))
    };
    let first = *pick(rng, FIRST_NAMES);
    let last = *pick(rng, LAST_NAMES);
    let (city, zip_prefix, country) = *pick(rng, CITIES);
    let email = format!(
        "{}.{}{}@example.com",
        first.to_lowercase(),
        last.to_lowercase().replace([' ', '-'], ""),
        i + 1
    );
    doc! {
        "_id": id,
        "name": format!("{first} {last}"),
        "email": email,
        "address": {
            "street": format!("{} {}", rng.gen_range(1..200), pick(rng, STREETS)),
            "city": city,
            "zip": format!("{zip_prefix}{:03}", rng.gen_range(0..1000)),
            "country": country,
        },
        "createdAt": date(rng),
    }
}

/// A product and its price in cents.
fn product(rng: &mut StdRng, i: usize) -> (Document, i64) {
    let cents = rng.gen_range(199..25_000);
    let n_tags = rng.gen_range(0..=3);
    let mut tags: Vec<Bson> = Vec::with_capacity(n_tags);
    for _ in 0..n_tags {
        let t = Bson::String((*pick(rng, PRODUCT_TAGS)).to_string());
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    let p = doc! {
        "_id": format!("SKU-{:05}", i + 1),
        "name": format!("{} {}", pick(rng, ADJECTIVES), pick(rng, NOUNS)),
        "price": money(cents),
        "tags": tags,
    };
    (p, cents)
}

fn order(
    rng: &mut StdRng,
    _i: usize,
    customers: &[CustomerRef],
    prices: &[(String, i64)],
) -> Document {
    let id = object_id(rng);
    let customer = pick(rng, customers);
    let n_items = rng.gen_range(1..=5);
    let mut items = Vec::with_capacity(n_items);
    let mut total_cents = 0i64;
    for _ in 0..n_items {
        let (sku, cents) = pick(rng, prices);
        let qty = rng.gen_range(1..=4);
        total_cents += cents * i64::from(qty);
        items.push(Bson::Document(
            doc! {"sku": sku.as_str(), "qty": qty, "price": money(*cents)},
        ));
    }
    let n_tags = rng.gen_range(0..=2);
    let mut tags: Vec<Bson> = Vec::with_capacity(n_tags);
    for _ in 0..n_tags {
        let t = Bson::String((*pick(rng, ORDER_TAGS)).to_string());
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    let mut d = doc! {
        "_id": id,
        "customer": {"_id": customer.id.clone(), "email": customer.email.as_str()},
        "total": money(total_cents),
        "placedAt": date(rng),
        "status": *pick(rng, STATUSES),
        "tags": tags,
        "items": items,
        "channel": *pick(rng, CHANNELS),
    };
    // Notes are optional, as free-text fields usually are.
    if rng.gen_bool(0.3) {
        d.insert("notes", *pick(rng, NOTES));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bson_order::Dec;

    fn cents(v: &Bson) -> i64 {
        match v {
            Bson::Decimal128(d) => match Dec::from_decimal(d) {
                Dec::Finite { neg, coef, exp } => {
                    assert_eq!(exp, -2, "money has two decimals");
                    let c = i64::try_from(coef).unwrap();
                    if neg {
                        -c
                    } else {
                        c
                    }
                }
                other => panic!("not a finite decimal: {other:?}"),
            },
            other => panic!("not a decimal: {other:?}"),
        }
    }

    #[test]
    fn counts_and_collection_order() {
        let all: Vec<_> = demo_documents(100, 7).collect();
        let colls: Vec<&str> = all.iter().map(|(_, c, _)| *c).collect();
        assert_eq!(colls.iter().filter(|c| **c == "customers").count(), 10);
        assert_eq!(colls.iter().filter(|c| **c == "products").count(), PRODUCTS);
        assert_eq!(colls.iter().filter(|c| **c == "orders").count(), 100);
        assert!(all.iter().all(|(db, _, _)| *db == "shop"));
        let first_order = colls.iter().position(|c| *c == "orders").unwrap();
        assert!(colls[..first_order].iter().all(|c| *c != "orders"));
        let last_customer = colls.iter().rposition(|c| *c == "customers").unwrap();
        let first_product = colls.iter().position(|c| *c == "products").unwrap();
        assert!(last_customer < first_product);
        assert_eq!(
            demo_documents(0, 1)
                .filter(|(_, c, _)| *c == "customers")
                .count(),
            1
        );
    }

    #[test]
    fn deterministic_per_seed() {
        let a: Vec<_> = demo_documents(30, 42)
            .map(|(_, _, d)| bson::to_vec(&d).unwrap())
            .collect();
        let b: Vec<_> = demo_documents(30, 42)
            .map(|(_, _, d)| bson::to_vec(&d).unwrap())
            .collect();
        let c: Vec<_> = demo_documents(30, 43)
            .map(|(_, _, d)| bson::to_vec(&d).unwrap())
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn orders_are_consistent() {
        let all: Vec<_> = demo_documents(200, 3).collect();
        let customers: Vec<&Document> = all
            .iter()
            .filter(|(_, c, _)| *c == "customers")
            .map(|(_, _, d)| d)
            .collect();
        assert!(customers
            .iter()
            .any(|c| matches!(c.get("_id"), Some(Bson::ObjectId(_)))));
        assert!(customers
            .iter()
            .any(|c| matches!(c.get("_id"), Some(Bson::String(_)))));
        for (_, coll, d) in &all {
            match *coll {
                "customers" => {
                    let addr = d.get_document("address").unwrap();
                    for f in ["street", "city", "zip", "country"] {
                        assert!(addr.get_str(f).is_ok(), "address.{f}");
                    }
                    assert!(d.get_datetime("createdAt").is_ok());
                    assert!(d.get_str("email").unwrap().contains('@'));
                }
                "products" => {
                    assert!(d.get_str("_id").unwrap().starts_with("SKU-"));
                    assert!(cents(d.get("price").unwrap()) > 0);
                    assert!(d.get_array("tags").is_ok());
                }
                _ => {
                    assert!(matches!(d.get("_id"), Some(Bson::ObjectId(_))));
                    let items = d.get_array("items").unwrap();
                    assert!(!items.is_empty());
                    let sum: i64 = items
                        .iter()
                        .map(|i| {
                            let i = i.as_document().unwrap();
                            cents(i.get("price").unwrap()) * i64::from(i.get_i32("qty").unwrap())
                        })
                        .sum();
                    assert_eq!(cents(d.get("total").unwrap()), sum);
                    let cust = d.get_document("customer").unwrap();
                    let known = customers
                        .iter()
                        .find(|c| c.get("_id") == cust.get("_id"))
                        .unwrap();
                    assert_eq!(known.get("email"), cust.get("email"));
                    assert!(d.get_datetime("placedAt").is_ok());
                    assert!(STATUSES.contains(&d.get_str("status").unwrap()));
                    assert!(d.get_str("channel").is_ok());
                }
            }
        }
    }

    #[test]
    fn customer_ids_are_unique() {
        let ids: Vec<Bson> = demo_documents(500, 9)
            .filter(|(_, c, _)| *c == "customers")
            .map(|(_, _, d)| d.get("_id").cloned().unwrap())
            .collect();
        let mut sorted = ids.clone();
        sorted.sort_by(crate::bson_order::compare);
        sorted.dedup_by(|a, b| crate::bson_order::compare(a, b).is_eq());
        assert_eq!(sorted.len(), ids.len());
    }
}
