//! Tests of the mapping loader and its rules, against the example mappings in `mappings/` and
//! the bad fixtures in `tests/fixtures/mappings/bad/` (one file per rule).

use std::path::{Path, PathBuf};

use super::load::{load, load_str, MappingError};
use super::model::{FieldPath, OnError, PgType, TableDef};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bad(name: &str) -> PathBuf {
    root().join("tests/fixtures/mappings/bad").join(name)
}

/// Loads a bad fixture that must yield exactly one error, and returns it.
fn single_error(name: &str) -> MappingError {
    let errors = load(&bad(name)).expect_err(name).0;
    assert_eq!(errors.len(), 1, "{name}: {errors:#?}");
    let e = errors.into_iter().next().unwrap();
    assert_eq!(e.file, bad(name));
    e
}

fn assert_error(name: &str, line: usize, column: usize, message_part: &str) {
    let e = single_error(name);
    assert_eq!((e.line, e.column), (line, column), "{name}: {e}");
    assert!(e.message.contains(message_part), "{name}: {e}");
    assert!(!e.hint.is_empty(), "{name}: no hint");
}

#[test]
fn shop_example_loads_as_the_spec_describes() {
    let set = load(&root().join("mappings/shop")).unwrap();
    assert_eq!(set.collections.len(), 1);
    let m = &set.collections[0];
    assert_eq!(m.namespace(), "shop.orders");
    assert_eq!(m.table, "orders");
    assert_eq!(m.columns.len(), 6);
    assert_eq!(m.key_column().name, "id");
    assert_eq!(m.columns[1].source, FieldPath::parse("customer._id"));
    assert_eq!(m.columns[3].pg_type, PgType::Numeric(Some((12, Some(2)))));
    assert_eq!(m.columns[5].pg_type, PgType::Array(Box::new(PgType::Text)));
    assert_eq!(m.extra_props.as_deref(), Some("extra"));
    assert_eq!(m.on_error, OnError::DeadLetter);
    assert_eq!(m.children.len(), 1);
    assert_eq!(m.children[0].parent_key, "order_id");
    assert_eq!(m.children[0].source, FieldPath::parse("items"));
}

#[test]
fn demo_mappings_load_in_file_order() {
    let set = load(&root().join("mappings/demo")).unwrap();
    let names: Vec<String> = set.collections.iter().map(|c| c.namespace()).collect();
    assert_eq!(names, ["shop.customers", "shop.orders", "shop.products"]);
    let tables: Vec<String> = set.tables().into_iter().map(|t| t.name).collect();
    assert_eq!(tables, ["customers", "orders", "order_items", "products"]);
}

#[test]
fn tables_put_extra_props_last_and_child_keys_first() {
    let set = load(&root().join("mappings/shop/orders.yml")).unwrap();
    let tables = set.collections[0].tables();
    let parent = &tables[0];
    assert_eq!(parent.primary_key, vec![0]);
    assert_eq!(
        parent.columns.last(),
        Some(&("extra".to_owned(), PgType::Jsonb))
    );
    assert_eq!(
        tables[1],
        TableDef {
            name: "order_items".to_owned(),
            columns: vec![
                ("order_id".to_owned(), PgType::Text),
                ("idx".to_owned(), PgType::Integer),
                ("sku".to_owned(), PgType::Text),
                ("qty".to_owned(), PgType::Integer),
            ],
            primary_key: vec![0, 1],
        }
    );
}

#[test]
fn defaults_and_scalar_children() {
    let text = "database: db\ncollections:\n  events:\n    on_error: null\n    columns:\n      \
                - { name: k, source: _id, type: bigint }\n    children:\n      \
                - { table: tags, source: meta.tags, parent_key: event, columns: [ { name: tag, source: ., type: text } ] }\n";
    let set = load_str(text, Path::new("x.yml")).unwrap();
    let m = &set.collections[0];
    assert_eq!(m.table, "events");
    assert_eq!(m.on_error, OnError::Null);
    assert_eq!(m.extra_props, None);
    assert_eq!(m.children[0].columns[0].source, FieldPath(vec![]));
    assert_eq!(
        m.tables()[1].columns[0],
        ("event".to_owned(), PgType::BigInt)
    );
}

#[test]
fn any_identifier_postgres_accepts_is_fine() {
    let text =
        "database: db\ncollections:\n  c:\n    table: \"Order Lines; DROP\"\n    columns:\n      \
                - { name: \"select\", source: _id, type: text }\n      \
                - { name: \"é\\\"x\", source: a.b, type: text }\n";
    let set = load_str(text, Path::new("x.yml")).unwrap();
    assert_eq!(set.collections[0].table, "Order Lines; DROP");
    assert_eq!(set.collections[0].columns[1].name, "é\"x");
}

#[test]
fn rule_two_columns_with_one_name() {
    assert_error("duplicate_column.yml", 7, 17, "two columns named `total`");
}

#[test]
fn rule_unknown_type() {
    assert_error("unknown_type.yml", 6, 45, "unknown type `money`");
}

#[test]
fn rule_table_mapped_twice() {
    assert_error("table_twice.yml", 7, 12, "table `orders` is mapped twice");
}

#[test]
fn rule_collection_without_id() {
    assert_error("no_id.yml", 3, 3, "has no column with `source: _id`");
}

#[test]
fn rule_extra_props_naming_a_mapped_column() {
    assert_error(
        "extra_props_mapped.yml",
        7,
        18,
        "names the mapped column `notes`",
    );
}

#[test]
fn rule_child_source_equal_to_a_column_source() {
    assert_error(
        "child_source_is_column.yml",
        9,
        17,
        "already reads as a value",
    );
}

#[test]
fn rule_child_source_under_a_column_source() {
    assert_error(
        "child_source_under_column.yml",
        9,
        17,
        "which column `customer` already reads",
    );
}

#[test]
fn rule_child_source_dot() {
    assert_error("child_source_dot.yml", 8, 17, "not the document itself");
}

#[test]
fn rule_child_source_id() {
    assert_error("child_source_id.yml", 8, 17, "cannot be `_id`");
}

#[test]
fn rule_unknown_key() {
    assert_error("unknown_key.yml", 5, 46, "unknown key `nullable`");
}

#[test]
fn rule_missing_required_key() {
    assert_error("missing_key.yml", 6, 9, "missing the required key `source`");
}

#[test]
fn rule_bad_on_error() {
    assert_error(
        "bad_on_error.yml",
        6,
        15,
        "`skip` is not an on_error policy",
    );
}

#[test]
fn rule_child_column_named_like_parent_key() {
    assert_error(
        "child_parent_key_collision.yml",
        11,
        21,
        "collides with its parent_key column `order_id`",
    );
}

#[test]
fn rule_child_column_named_idx() {
    assert_error(
        "child_idx_collision.yml",
        11,
        21,
        "collides with the `idx` column",
    );
}

#[test]
fn rule_identifier_too_long() {
    assert_error("long_identifier.yml", 6, 17, "64 bytes long");
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    let e = single_error("yaml_syntax.yml");
    assert!(e.message.starts_with("YAML syntax error"), "{e}");
    assert!(e.line >= 5, "{e}");
}

#[test]
fn five_mistakes_across_two_files_are_all_reported() {
    let dir = bad("five_mistakes");
    let errors = load(&dir).unwrap_err().0;
    let got: Vec<(String, usize, usize)> = errors
        .iter()
        .map(|e| {
            let file = e.file.file_name().unwrap().to_string_lossy().into_owned();
            (file, e.line, e.column)
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a_orders.yml".to_owned(), 6, 47),
            ("a_orders.yml".to_owned(), 8, 17),
            ("a_orders.yml".to_owned(), 9, 18),
            ("b_archive.yml".to_owned(), 3, 3),
            ("b_archive.yml".to_owned(), 8, 12),
        ],
        "{errors:#?}"
    );
    let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
    assert!(messages[0].contains("unknown type `numerc(12,2)`"));
    assert!(messages[1].contains("two columns named `status`"));
    assert!(messages[2].contains("extra_props `id`"));
    assert!(messages[3].contains("`orders` has no column with `source: _id`"));
    assert!(messages[4].contains("table `orders` is mapped twice (also by shop.orders)"));
    let shown = errors[4].to_string();
    assert!(
        shown.starts_with(&format!(
            "{}:8:12: table `orders`",
            dir.join("b_archive.yml").display()
        )),
        "{shown}"
    );
    assert!(shown.ends_with(')'), "{shown}");
}

#[test]
fn missing_path_and_empty_directory_are_errors() {
    let errors = load(&bad("does_not_exist")).unwrap_err().0;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, 0);
    assert!(errors[0].message.contains("no such mapping file"));
    let empty = tempfile::tempdir().unwrap();
    let errors = load(empty.path()).unwrap_err().0;
    assert!(errors[0].message.contains("no *.yml or *.yaml"));
}

#[test]
fn collection_mapped_twice_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let one = "database: shop\ncollections:\n  orders:\n    columns:\n      - { name: id, source: _id, type: text }\n";
    std::fs::write(dir.path().join("a.yml"), one).unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        one.replace("orders:\n", "orders:\n    table: o2\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let errors = load(dir.path()).unwrap_err().0;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].file.ends_with("b.yaml"));
    assert!(errors[0].message.contains("`shop.orders` is mapped twice"));
}

#[test]
fn parent_columns_cannot_use_dot_or_read_inside_child_arrays() {
    let text = "database: d\ncollections:\n  c:\n    columns:\n      \
                - { name: id, source: _id, type: text }\n      \
                - { name: x, source: ., type: text }\n      \
                - { name: s, source: items.sku, type: text }\n      \
                - { name: t, source: a..b, type: text }\n    \
                children:\n      - { table: i, source: items, parent_key: p, columns: [{ name: sku, source: sku, type: text }] }\n";
    let errors = load_str(text, Path::new("x.yml")).unwrap_err().0;
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [6, 8, 7], "{errors:#?}");
    assert!(errors[2].message.contains("inside the array `items`"));
}

#[test]
fn children_cannot_nest_inside_other_children() {
    let text = "database: d\ncollections:\n  c:\n    columns:\n      \
                - { name: id, source: _id, type: text }\n    children:\n      \
                - { table: a, source: items, parent_key: p, columns: [{ name: x, source: x, type: text }] }\n      \
                - { table: b, source: items.parts, parent_key: p, columns: [{ name: y, source: y, type: text }] }\n";
    let errors = load_str(text, Path::new("x.yml")).unwrap_err().0;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!((errors[0].line, errors[0].column), (8, 29));
    assert!(errors[0]
        .message
        .contains("inside the array `items` of child `a`"));
}

#[test]
fn a_bad_key_column_is_not_also_reported_as_missing() {
    let text = "database: d\ncollections:\n  c:\n    columns:\n      - { name: id, source: _id, type: objectid }\n";
    let errors = load_str(text, Path::new("x.yml")).unwrap_err().0;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].message.contains("unknown type `objectid`"));
}

#[test]
fn an_unquoted_type_with_a_comma_gets_a_quoting_hint() {
    let text = "database: d\ncollections:\n  c:\n    columns:\n      - { name: id, source: _id, type: text }\n      - { name: t, source: t, type: numeric(12,2) }\n";
    let errors = load_str(text, Path::new("x.yml")).unwrap_err().0;
    assert!(!errors.is_empty());
    assert!(
        errors.iter().all(|e| e.hint.contains("quote the type")),
        "{errors:#?}"
    );
}
