//! Tests of config parsing, defaults, interpolation, validation and redaction.

use super::*;

const MINIMAL: &str = r#"
[mongo]
uri = "mongodb://localhost:27017/?replicaSet=rs0"

[postgres]
uri = "postgres://tributary@localhost/db"

[sync]
mappings = "mappings/shop"
"#;

fn origin() -> PathBuf {
    PathBuf::from("/etc/tributary/config.toml")
}

#[test]
fn defaults_match_the_spec() {
    let c = Config::from_str_at(MINIMAL, &origin()).unwrap();
    assert_eq!(c.mongo.source, SourceKind::ChangeStream);
    assert_eq!(c.postgres.schema, "public");
    assert_eq!(c.postgres.pool_size, 8);
    assert_eq!(c.postgres.synchronous_commit, SynchronousCommit::Off);
    assert_eq!(c.sync.name, "default");
    assert_eq!(c.sync.batch_max_rows, 5000);
    assert_eq!(c.sync.batch_max_wait_ms, 100);
    assert_eq!(c.sync.state_schema, "tributary");
    assert!(!c.sync.resync_on_history_lost);
    assert_eq!(c.metrics.listen, "127.0.0.1:9187");
    assert_eq!(c.metrics.ready_max_lag_secs, 30);
    assert_eq!(c.origin, origin());
}

#[test]
fn relative_mappings_resolve_against_the_config_folder() {
    let c = Config::from_str_at(MINIMAL, &origin()).unwrap();
    assert_eq!(
        c.sync.mappings,
        PathBuf::from("/etc/tributary/mappings/shop")
    );
    let abs = MINIMAL.replace("mappings/shop", "/srv/maps");
    let c = Config::from_str_at(&abs, &origin()).unwrap();
    assert_eq!(c.sync.mappings, PathBuf::from("/srv/maps"));
}

#[test]
fn full_example_parses() {
    let text = r#"
[mongo]
uri = "mongodb://h/?replicaSet=rs0"
source = "oplog"
[postgres]
uri = "host=db user=t password=x"
schema = "mirror"
pool_size = 2
[sync]
name = "s1"
mappings = "m.yml"
batch_max_rows = 10
batch_max_wait_ms = 5
state_schema = "trib"
resync_on_history_lost = true
[metrics]
listen = ""
ready_max_lag_secs = 7
"#;
    let c = Config::from_str_at(text, Path::new("c.toml")).unwrap();
    assert_eq!(c.mongo.source, SourceKind::Oplog);
    assert_eq!(c.postgres.schema, "mirror");
    assert_eq!(c.postgres.pool_size, 2);
    assert_eq!(c.sync.name, "s1");
    assert_eq!(c.sync.mappings, PathBuf::from("m.yml"));
    assert_eq!(c.sync.batch_max_rows, 10);
    assert_eq!(c.sync.batch_max_wait_ms, 5);
    assert_eq!(c.sync.state_schema, "trib");
    assert!(c.sync.resync_on_history_lost);
    assert_eq!(c.metrics.listen, "");
    assert_eq!(c.metrics.ready_max_lag_secs, 7);
}

#[test]
fn unknown_key_is_named_with_its_position() {
    let text = MINIMAL.replace("[sync]\n", "[sync]\nbatch_size = 3\n");
    let err = Config::from_str_at(&text, Path::new("cfg.toml")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("cfg.toml:9:1: "), "{msg}");
    assert!(msg.contains("batch_size"), "{msg}");
}

#[test]
fn synchronous_commit_takes_postgres_values_only() {
    let on = MINIMAL.replace(
        "[sync]\n",
        "synchronous_commit = \"remote_apply\"\n[sync]\n",
    );
    let c = Config::from_str_at(&on, Path::new("c.toml")).unwrap();
    assert_eq!(
        c.postgres.synchronous_commit,
        SynchronousCommit::RemoteApply
    );
    assert_eq!(c.postgres.synchronous_commit.as_str(), "remote_apply");
    let bad = MINIMAL.replace("[sync]\n", "synchronous_commit = \"sometimes\"\n[sync]\n");
    let msg = Config::from_str_at(&bad, Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("c.toml:8:"), "{msg}");
    assert!(
        msg.contains("sometimes") && msg.contains("remote_write"),
        "{msg}"
    );
}

#[test]
fn unknown_section_is_an_error() {
    let text = format!("{MINIMAL}\n[extra]\nx = 1\n");
    let msg = Config::from_str_at(&text, Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("extra"), "{msg}");
    assert!(msg.starts_with("c.toml:"), "{msg}");
}

#[test]
fn bad_source_names_the_choices() {
    let text = MINIMAL.replace("rs0\"\n", "rs0\"\nsource = \"tail\"\n");
    let msg = Config::from_str_at(&text, Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("c.toml:4:10:"), "{msg}");
    assert!(
        msg.contains("change_stream") && msg.contains("oplog"),
        "{msg}"
    );
}

#[test]
fn validate_reports_every_bad_value_with_its_path() {
    let text = r#"
[mongo]
uri = "http://u:pw@h"
[postgres]
uri = ""
pool_size = 0
schema = ""
[sync]
mappings = "m"
batch_max_rows = 0
batch_max_wait_ms = 0
[metrics]
listen = "nowhere"
ready_max_lag_secs = 0
"#;
    let err = Config::from_str_at(text, Path::new("c.toml")).unwrap_err();
    let ConfigError::Invalid { errors, .. } = &err else {
        panic!("{err}")
    };
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "mongo.uri",
            "postgres.uri",
            "postgres.schema",
            "postgres.pool_size",
            "sync.batch_max_rows",
            "sync.batch_max_wait_ms",
            "metrics.listen",
            "metrics.ready_max_lag_secs"
        ]
    );
    let msg = err.to_string();
    assert!(!msg.contains("pw@"), "{msg}");
    assert!(
        msg.contains("sync.batch_max_rows: must be at least 1"),
        "{msg}"
    );
}

#[test]
fn env_variables_are_substituted_after_parsing() {
    let text = MINIMAL.replace(
        "postgres://tributary@localhost/db",
        "postgres://u:${TRIB_TEST_PW_1}@h/db",
    );
    std::env::set_var("TRIB_TEST_PW_1", "a\"b\\c");
    let c = Config::from_str_at(&text, Path::new("c.toml")).unwrap();
    assert_eq!(c.postgres.uri, "postgres://u:a\"b\\c@h/db");
}

#[test]
fn missing_variable_is_named_with_field_and_position() {
    let text = MINIMAL.replace(
        "mongodb://localhost:27017/?replicaSet=rs0",
        "${TRIB_TEST_SURELY_UNSET}",
    );
    let msg = Config::from_str_at(&text, Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("c.toml:3:8: mongo.uri:"), "{msg}");
    assert!(msg.contains("TRIB_TEST_SURELY_UNSET"), "{msg}");
}

#[test]
fn interpolation_leaves_plain_dollars_alone() {
    let got = interpolate_env("a$b${X}c${", |n| (n == "X").then(|| "1".to_owned()));
    assert_eq!(got.unwrap(), "a$b1c${");
    assert_eq!(interpolate_env("${Y}", |_| None), Err("Y".to_owned()));
}

#[test]
fn redacts_passwords_in_every_uri_form() {
    let cases = [
        (
            "mongodb://u:secret@h1,h2/?rs=x",
            "mongodb://u:****@h1,h2/?rs=x",
        ),
        (
            "mongodb+srv://u:s%40c@cl.example.net/db",
            "mongodb+srv://u:****@cl.example.net/db",
        ),
        ("postgres://u:p@ss@h:5432/db", "postgres://u:****@h:5432/db"),
        (
            "postgresql://u:p@h/db?password=q&x=1",
            "postgresql://u:****@h/db?password=****&x=1",
        ),
        ("postgres://u@h/db", "postgres://u@h/db"),
        ("mongodb://h:27017", "mongodb://h:27017"),
        (
            "host=h password=secret user=u",
            "host=h password=**** user=u",
        ),
        (
            "host=h password='se cr\\'et' user=u",
            "host=h password=**** user=u",
        ),
        ("host=h PASSWORD=x", "host=h PASSWORD=****"),
        (
            "postgres://h/db?sslmode=require&sslpassword=k3y&sslkey=/k",
            "postgres://h/db?sslmode=require&sslpassword=****&sslkey=/k",
        ),
        (
            "mongodb://h/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:t0k&tls=true",
            "mongodb://h/?authMechanism=MONGODB-AWS&authMechanismProperties=****&tls=true",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(redact_uri(input), want, "{input}");
    }
}

/// A password must never appear in the `Display` of any error, whatever went wrong.
#[test]
fn secrets_never_appear_in_errors() {
    const PW: &str = "Sup3rS3cretPW";
    std::env::set_var("TRIB_TEST_PW_2", PW);
    let base = format!(
            "[mongo]\nuri = \"mongodb://u:{PW}@h/?replicaSet=rs0\"\n[postgres]\nuri = \"postgres://u:{PW}@h/db\"\n[sync]\nmappings = \"m\"\n"
        );
    let broken = [
        // syntax error on the secret's line: TOML would echo the line
        base.replace("@h/db\"", "@h/db\" junk"),
        base.replace("uri = \"postgres", "uri = postgres"),
        // unknown key next to the secret
        base.replace("[postgres]\n", "[postgres]\nbogus = 1\n"),
        // wrong type for the secret
        base.replace(
            &format!("\"postgres://u:{PW}@h/db\""),
            &format!("[\"postgres://u:{PW}@h/db\"]"),
        ),
        // validation of the URI itself
        base.replace("mongodb://", "mongo://"),
        base.replace("mongodb://", "mongodb:"),
        format!("{base}[metrics]\nlisten = \"x\"\n"),
        base.replace(&format!("u:{PW}@h/db"), "u:${TRIB_TEST_PW_2}@h/db")
            .replace("mappings = \"m\"", "mappings = \"m\"\nbatch_max_rows = 0"),
        base.replace(&format!("u:{PW}@h/db"), "u:${TRIB_TEST_PW_2}@h/db")
            .replace("mappings = \"m\"", "mappings = \"${TRIB_TEST_UNSET_3}\""),
        base.replace(
            &format!("postgres://u:{PW}@h/db"),
            &format!("host=h password={PW}\" x"),
        ),
    ];
    for text in &broken {
        let err = Config::from_str_at(text, Path::new("c.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains(PW), "secret leaked: {msg}");
        assert!(!format!("{err:?}").contains(PW), "secret leaked: {err:?}");
    }
}

#[test]
fn missing_and_mistyped_keys_are_positioned() {
    let no_uri = "[mongo]\nsource = \"oplog\"\n[postgres]\nuri = \"x\"\n[sync]\nmappings = \"m\"\n";
    let msg = Config::from_str_at(no_uri, Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("c.toml:1:1: ") && msg.contains("missing field `uri`"),
        "{msg}"
    );
    let no_sync = "[mongo]\nuri = \"mongodb://h\"\n[postgres]\nuri = \"x\"\n";
    let msg = Config::from_str_at(no_sync, Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing field `sync`"), "{msg}");
    let typed = "[mongo]\nuri = \"mongodb://h\"\n[postgres]\nuri = \"x\"\npool_size = \"8\"\n[sync]\nmappings = \"m\"\n";
    let msg = Config::from_str_at(typed, Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("c.toml:5:13: "), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn unvalidated_load_keeps_bad_values_for_a_later_validate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        MINIMAL.replace("[sync]\n", "[sync]\nbatch_max_rows = 0\n"),
    )
    .unwrap();
    assert!(matches!(
        Config::load(&path),
        Err(ConfigError::Invalid { .. })
    ));
    let c = Config::load_unvalidated(&path).unwrap();
    assert_eq!(c.sync.mappings, dir.path().join("mappings/shop"));
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("sync.batch_max_rows"), "{err}");
}

#[test]
fn the_config_debug_never_shows_a_password() {
    let text = "[mongo]\nuri = \"mongodb://u:m0ngo-pw@h/?replicaSet=rs0\"\n\
                [postgres]\nuri = \"postgres://u:pg-pw@h/db?sslpassword=ssl-pw\"\n\
                [sync]\nmappings = \"m\"\n";
    let c = Config::from_str_at(text, Path::new("c.toml")).unwrap();
    let shown = format!("{c:?} {c:#?} {} {}", c.mongo.uri, c.postgres.uri);
    for secret in ["m0ngo-pw", "pg-pw", "ssl-pw"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    // The driver still gets the real text.
    assert_eq!(
        c.postgres.uri.expose(),
        "postgres://u:pg-pw@h/db?sslpassword=ssl-pw"
    );
}
