//! `deploy/`: the Grafana dashboard and the Prometheus alert rules reference only metrics a
//! running `sync` serves, and the rules pass `promtool check rules` (also run by `make test`
//! through scripts/check-deploy.sh, which installs promtool when missing).

use std::collections::BTreeSet;
use std::path::Path;

use mongo_sim::SimOptions;
use tributary::config::SourceKind;

use super::{wait_until, Running};
use crate::stream::World;

const NULLING: &str = r#"
database: shop
collections:
  orders:
    on_error: "null"
    columns:
      - { name: id,   source: _id,  type: text }
      - { name: qty,  source: qty,  type: integer }
      - { name: name, source: name, type: text }
"#;

/// Every `tributary_*` name in `text`, histogram series (`_bucket`, `_sum`, `_count`) by the
/// histogram's name when `served` has it under that name.
fn referenced(text: &str, served: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("tributary_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| served.contains(*b)))
            .unwrap_or(name);
        out.insert(base.to_owned());
        rest = &tail[end..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alert_rules_use_is_served() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let dashboard = std::fs::read_to_string(deploy.join("grafana/tributary.json")).unwrap();
    let rules = std::fs::read_to_string(deploy.join("prometheus/alerts.yml")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    assert!(!parsed["panels"].as_array().unwrap().is_empty());

    // `tributary_nulled_values_total` has series for the columns of collections that say
    // `on_error: null` (the only known label values), so this mapping says it.
    let w = World::with_mapping(
        SourceKind::ChangeStream,
        100,
        SimOptions::default(),
        "",
        NULLING,
    )
    .await;
    let run = Running::start(&w.config, w.mappings.clone(), 30).await;
    w.sync_point("served").await;
    wait_until(30, "streaming", || async { run.metrics.is_ready() }).await;
    let text = run.get("/metrics").await.1;
    let served: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    for (file, body) in [("dashboard", &dashboard), ("alert rules", &rules)] {
        let names = referenced(body, &served);
        assert!(names.len() >= 5, "{file} references {names:?}");
        let missing: Vec<&String> = names.iter().filter(|n| !served.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "the {file} reference metrics /metrics does not serve: {missing:?}\nserved: {served:?}"
        );
    }
    run.stop().await;

    // promtool, when this machine has it (`make test` installs it first).
    match std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(deploy.join("prometheus/alerts.yml"))
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check rules: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("promtool not run ({e}); scripts/check-deploy.sh runs it"),
    }
}
