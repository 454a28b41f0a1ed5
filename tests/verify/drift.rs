//! Drift injected straight into Postgres after a full sync: each mode reports what it can see,
//! with the right kind, table, `_id`, column and `idx`.

use bson::doc;
use serde_json::json;
use tributary::verify::{Kind, Mode, VerifyOptions};

use super::{collection, listed, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_mode_reports_every_kind_of_drift_with_table_id_column_and_idx() {
    let w = World::new().await;
    // 2,400 orders: the range readers split the collection (one range per 1,000 documents).
    w.seed(2400, 30).await;
    // Refused by the mapping (qty is an integer column): the full sync dead-letters it.
    w.orders()
        .insert_one(doc! {"_id": "o9999-bad", "qty": "many"})
        .await
        .unwrap();
    w.full_sync().await;

    let clean = w.verify(Mode::Full).await;
    let orders = collection(&clean, "shop.orders");
    assert_eq!(orders.dead_letter, 1, "{clean:#?}");
    let dl = listed(orders, Kind::DeadLetter, "orders");
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].id, json!("o9999-bad"));
    assert!(
        dl[0].error.as_deref().unwrap_or("").contains("qty"),
        "{dl:?}"
    );
    assert_eq!(
        (orders.missing, orders.extra, orders.different),
        (0, 0, 0),
        "{clean:#?}"
    );
    assert_eq!(
        (orders.documents, orders.rows, orders.checked),
        (2401, 2400, 2401)
    );
    assert_eq!(orders.children[0].elements, 7200);
    assert_eq!(orders.children[0].rows, 7200);
    assert!(orders.children[0].is_equal());
    assert!(collection(&clean, "shop.customers").is_equal());
    assert!(!clean.equal);

    w.sql(
        "UPDATE orders SET qty = 999 WHERE id = 'o0001';
         DELETE FROM orders WHERE id = 'o0002';
         INSERT INTO orders (id, qty) VALUES ('zz-extra', 1);
         UPDATE order_items SET sku = 'changed' WHERE order_id = 'o0003' AND idx = 1;
         DELETE FROM order_items WHERE order_id = 'o0004' AND idx = 2;
         UPDATE orders SET extra = '{\"note\": \"tampered\"}' WHERE id = 'o0005';
         UPDATE orders SET total = 19.90 WHERE id = 'o0006';
         UPDATE orders SET placed_at = placed_at + interval '1 second' WHERE id = 'o0007';
         INSERT INTO order_items (order_id, idx, sku, n) VALUES ('ghost', 0, 'g', 0);
         UPDATE customers SET name = 'Mallory' WHERE id = 'c007';",
    )
    .await;
    let r = w.verify(Mode::Full).await;
    assert!(!r.equal);
    let orders = collection(&r, "shop.orders");
    assert_eq!(
        (
            orders.missing,
            orders.extra,
            orders.different,
            orders.dead_letter
        ),
        (1, 1, 4, 1),
        "{r:#?}"
    );
    assert_eq!((orders.documents, orders.rows), (2401, 2400));
    let missing = listed(orders, Kind::Missing, "orders");
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].id, json!("o0002"));
    assert_eq!(missing[0].idx, None);
    let extra = listed(orders, Kind::Extra, "orders");
    assert_eq!(extra.len(), 1);
    assert_eq!(extra[0].id, json!("zz-extra"));

    let different = listed(orders, Kind::Different, "orders");
    let column = |id: &str| {
        different
            .iter()
            .find(|d| d.id == json!(id))
            .unwrap_or_else(|| panic!("{id} not listed as different: {different:#?}"))
    };
    let qty = column("o0001");
    assert_eq!(
        (qty.column.as_deref(), &qty.mongo, &qty.postgres),
        (Some("qty"), &Some(json!(1)), &Some(json!(999)))
    );
    let extra_props = column("o0005");
    assert_eq!(extra_props.column.as_deref(), Some("extra"));
    assert_eq!(extra_props.mongo, Some(json!({"note": "note 5"})));
    assert_eq!(extra_props.postgres, Some(json!({"note": "tampered"})));
    let total = column("o0006");
    assert_eq!(
        (total.column.as_deref(), &total.mongo, &total.postgres),
        (Some("total"), &Some(json!("6.25")), &Some(json!("19.90")))
    );
    let placed = column("o0007");
    assert_eq!(placed.column.as_deref(), Some("placed_at"));
    assert_eq!(placed.mongo, Some(json!("2023-11-14T22:13:27.123Z")));
    assert_eq!(placed.postgres, Some(json!("2023-11-14T22:13:28.123Z")));

    let items = &orders.children[0];
    assert_eq!(items.table, "order_items");
    assert_eq!(
        (items.missing, items.extra, items.different),
        (1, 1, 1),
        "{r:#?}"
    );
    assert_eq!((items.elements, items.rows), (7200, 7200));
    let changed = listed(orders, Kind::Different, "order_items");
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].id, json!("o0003"));
    assert_eq!(changed[0].idx, Some(1));
    assert_eq!(changed[0].column.as_deref(), Some("sku"));
    assert_eq!(changed[0].mongo, Some(json!("sku-3-1")));
    assert_eq!(changed[0].postgres, Some(json!("changed")));
    let gone = listed(orders, Kind::Missing, "order_items");
    assert_eq!(gone.len(), 1);
    assert_eq!((gone[0].id.clone(), gone[0].idx), (json!("o0004"), Some(2)));
    let orphan = listed(orders, Kind::Extra, "order_items");
    assert_eq!(orphan.len(), 1);
    assert_eq!(
        (orphan[0].id.clone(), orphan[0].idx),
        (json!("ghost"), Some(0))
    );

    let customers = collection(&r, "shop.customers");
    assert_eq!(
        (customers.missing, customers.extra, customers.different),
        (0, 0, 1)
    );
    let name = listed(customers, Kind::Different, "customers");
    assert_eq!(name[0].id, json!("c007"));
    assert_eq!(name[0].column.as_deref(), Some("name"));
    assert_eq!(
        (&name[0].mongo, &name[0].postgres),
        (&Some(json!("customer 7")), &Some(json!("Mallory")))
    );
    // No `sync` runs: every difference was read once more, at once, before being reported.
    assert!(orders.rechecked >= 6, "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_and_sample_find_what_they_can_see() {
    let w = World::new().await;
    w.seed(300, 10).await;
    w.full_sync().await;
    let r = w.verify(Mode::Counts).await;
    assert!(r.equal, "{r:#?}");
    let orders = collection(&r, "shop.orders");
    assert_eq!(
        (orders.documents, orders.rows, orders.checked),
        (300, 300, 0)
    );
    assert_eq!(
        (orders.children[0].elements, orders.children[0].rows),
        (900, 900)
    );
    let r = w.verify(Mode::Sample).await;
    assert!(r.equal, "{r:#?}");

    w.sql(
        "UPDATE orders SET qty = 999 WHERE id = 'o0001';
         DELETE FROM orders WHERE id = 'o0002';
         DELETE FROM order_items WHERE order_id = 'o0004' AND idx = 2;
         INSERT INTO customers (id, name) VALUES ('c-extra', 'nobody');",
    )
    .await;

    // Counts see the rows that are gone or too many, not the changed value.
    let r = w.verify(Mode::Counts).await;
    assert!(!r.equal);
    let orders = collection(&r, "shop.orders");
    assert_eq!(
        (
            orders.documents,
            orders.rows,
            orders.missing,
            orders.extra,
            orders.different
        ),
        (300, 299, 1, 0, 0),
        "{r:#?}"
    );
    // o0002's items stay, o0004's third is gone: one element without a row.
    let items = &orders.children[0];
    assert_eq!((items.elements, items.rows, items.missing), (900, 899, 1));
    assert!(orders.differences.is_empty());
    let customers = collection(&r, "shop.customers");
    assert_eq!(
        (customers.documents, customers.rows, customers.extra),
        (10, 11, 1)
    );

    // A sample as large as the collection sees every document, and random rows both ways.
    let r = w
        .verify_with(VerifyOptions {
            mode: Mode::Sample,
            sample_size: 1000,
            ..VerifyOptions::default()
        })
        .await;
    assert!(!r.equal);
    let orders = collection(&r, "shop.orders");
    assert_eq!(orders.checked, 300, "{r:#?}");
    assert_eq!((orders.missing, orders.different), (1, 1), "{r:#?}");
    assert_eq!(
        listed(orders, Kind::Missing, "orders")[0].id,
        json!("o0002")
    );
    let qty = &listed(orders, Kind::Different, "orders")[0];
    assert_eq!(
        (qty.id.clone(), qty.column.as_deref()),
        (json!("o0001"), Some("qty"))
    );
    let item = &listed(orders, Kind::Missing, "order_items");
    assert_eq!(item.len(), 1);
    assert_eq!((item[0].id.clone(), item[0].idx), (json!("o0004"), Some(2)));
    let customers = collection(&r, "shop.customers");
    assert_eq!(customers.extra, 1);
    assert_eq!(
        listed(customers, Kind::Extra, "customers")[0].id,
        json!("c-extra")
    );

    // A small sample checks only that many.
    let r = w
        .verify_with(VerifyOptions {
            mode: Mode::Sample,
            sample_size: 5,
            ..VerifyOptions::default()
        })
        .await;
    let orders = collection(&r, "shop.orders");
    assert!((1..=5).contains(&orders.checked), "{r:#?}");
}
