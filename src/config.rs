//! The TOML config file: its structs and defaults, `${VAR}` interpolation, relative-path
//! resolution, validation with `section.key` paths, and URI redaction.
//!
//! Secrets: the URIs carry passwords. No error built here ever contains the text of the file or
//! of a substituted variable unredacted, so `Display` of any [`ConfigError`] is safe to print.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where change events are read from (`mongo.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// One deployment-level change stream (`$changeStream`); needs MongoDB 4.0+.
    #[default]
    ChangeStream,
    /// Tail `local.oplog.rs` directly; needs read access to the `local` database.
    Oplog,
}

impl SourceKind {
    /// The name used in the config file and in the checkpoint row's `source` column.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::ChangeStream => "change_stream",
            SourceKind::Oplog => "oplog",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the sink's transactions commit (`postgres.synchronous_commit`): Postgres's own
/// `synchronous_commit` values, set with `SET LOCAL` in every batch and full-sync transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SynchronousCommit {
    /// `COMMIT` returns before the WAL reaches disk (the default, see `docs/operations.md`,
    /// "Durability"): a Postgres crash can take back the last ~0.6 s of batches, but only
    /// together with their checkpoint, so the stream replays them from MongoDB.
    #[default]
    Off,
    Local,
    RemoteWrite,
    On,
    RemoteApply,
}

impl SynchronousCommit {
    pub fn as_str(self) -> &'static str {
        match self {
            SynchronousCommit::Off => "off",
            SynchronousCommit::Local => "local",
            SynchronousCommit::RemoteWrite => "remote_write",
            SynchronousCommit::On => "on",
            SynchronousCommit::RemoteApply => "remote_apply",
        }
    }
}

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub mongo: MongoConfig,
    pub postgres: PostgresConfig,
    pub sync: SyncConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The file the config was read from (or the origin given to [`Config::from_str_at`]);
    /// error messages name it.
    #[serde(skip)]
    pub origin: PathBuf,
}

/// `[mongo]`: the source deployment.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoConfig {
    /// `mongodb://` or `mongodb+srv://` connection string. Required. Contains credentials:
    /// its `Debug` and `Display` redact them (see [`SecretUri`]).
    pub uri: SecretUri,
    /// `change_stream` (default) or `oplog`. The checkpoint records which one wrote it; switching
    /// an existing stream to the other kind needs a new `sync.name` (resume tokens and oplog
    /// timestamps are not interchangeable).
    #[serde(default)]
    pub source: SourceKind,
}

/// `[postgres]`: the destination database.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://`/`postgresql://` URI or a `key=value` conninfo string. Required. Contains
    /// credentials: its `Debug` and `Display` redact them (see [`SecretUri`]).
    pub uri: SecretUri,
    /// Schema holding the mapped tables and child tables. Default `public`. Created if missing.
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Maximum number of Postgres connections (count). Default 8. The writer uses one at a
    /// time per stream; the rest serve full-sync copies, verify and status.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// `synchronous_commit` for the sink's own transactions (batches with their checkpoint,
    /// full-sync copies). Default `off`; `on` makes every commit wait for its WAL flush.
    #[serde(default)]
    pub synchronous_commit: SynchronousCommit,
}

/// `[sync]`: the stream and its batching.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Stream name (default `default`): one checkpoint row and one advisory lock per name, so
    /// two daemons with the same name are primary and hot standby.
    #[serde(default = "default_stream_name")]
    pub name: String,
    /// A directory of `*.yml`/`*.yaml` mapping files or one file. Required. A relative path is
    /// resolved against the config file's folder.
    pub mappings: PathBuf,
    /// Most changes (rows, count) in one Postgres transaction. Default 5000. A batch is
    /// written when it reaches this size or when `batch_max_wait_ms` has passed since its
    /// first change, whichever comes first. One MongoDB transaction is never split, so a
    /// batch can exceed this to keep a transaction whole.
    #[serde(default = "default_batch_max_rows")]
    pub batch_max_rows: usize,
    /// Longest time (milliseconds) a change waits in a batch before the batch is written.
    /// Default 100. This is the latency bound added by batching. At least 1.
    #[serde(default = "default_batch_max_wait_ms")]
    pub batch_max_wait_ms: u64,
    /// Schema holding tributary's own tables (`checkpoints`, `collections`, `dead_letters`).
    /// Default `tributary`. Created if missing.
    #[serde(default = "default_state_schema")]
    pub state_schema: String,
    /// When the resume point has fallen off the oplog: `false` (default) exits with code 3;
    /// `true` re-runs the full sync of every mapped collection and continues.
    #[serde(default)]
    pub resync_on_history_lost: bool,
    /// Documents per chunk of an online re-copy (and keys per page of its sweep). Default
    /// 1000. A chunk is one snapshot read and one Postgres transaction between two batches.
    #[serde(default = "default_recopy_chunk_rows")]
    pub recopy_chunk_rows: usize,
    /// A pause (milliseconds) between the chunk reads of an online re-copy. Default 0. Slows a
    /// re-copy down on purpose (tests use it to change documents between chunks).
    #[serde(default)]
    pub recopy_pause_ms: u64,
}

fn default_recopy_chunk_rows() -> usize {
    1000
}

/// `[metrics]`: the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` to listen on. Default `127.0.0.1:9187`; `""` disables the endpoint. The
    /// `--metrics-addr` flag of `sync` overrides it.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// `/readyz` answers 200 only while streaming with lag (seconds) at most this. Default 30.
    #[serde(default = "default_ready_max_lag_secs")]
    pub ready_max_lag_secs: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_listen(),
            ready_max_lag_secs: default_ready_max_lag_secs(),
        }
    }
}

fn default_schema() -> String {
    "public".to_owned()
}
fn default_pool_size() -> usize {
    8
}
fn default_stream_name() -> String {
    "default".to_owned()
}
fn default_batch_max_rows() -> usize {
    5000
}
fn default_batch_max_wait_ms() -> u64 {
    100
}
fn default_state_schema() -> String {
    "tributary".to_owned()
}
fn default_listen() -> String {
    "127.0.0.1:9187".to_owned()
}
fn default_ready_max_lag_secs() -> u64 {
    30
}

/// One bad value found by [`Config::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `section.key`, e.g. `sync.batch_max_rows`.
    pub path: String,
    /// What is wrong and what to do; never contains a secret.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Everything that can go wrong loading a config. Every variant names the file; `Display`
/// never prints a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the config file: {source} (check the --config path)", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, a missing key or a value of the wrong type.
    #[error("{}:{line}:{column}: {message}", .file.display())]
    Parse {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "{}:{line}:{column}: {field}: environment variable {var} is not set \
         (export it, or write the value in the file)",
        .file.display()
    )]
    MissingVar {
        file: PathBuf,
        line: usize,
        column: usize,
        field: String,
        var: String,
    },
    #[error("{}: invalid config:{}", .file.display(), list(.errors))]
    Invalid {
        file: PathBuf,
        errors: Vec<FieldError>,
    },
}

fn list(errors: &[FieldError]) -> String {
    errors.iter().map(|e| format!("\n  {e}")).collect()
}

impl Config {
    /// Reads, interpolates, resolves and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_str_at(&text, path)
    }

    /// Like [`Config::load`] without [`Config::validate`]: for `check`, which reports the
    /// invalid values and the mapping errors together (the mapping path is known once the
    /// file parses).
    pub fn load_unvalidated(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse_at(&text, path)
    }

    /// Like [`Config::load`] for text already read; `origin` is the file it came from (errors
    /// name it; relative paths resolve against its folder).
    pub fn from_str_at(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config = Config::parse_at(text, origin)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses, interpolates and resolves paths; does not validate.
    fn parse_at(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError::Parse {
                file: origin.to_owned(),
                line,
                column,
                message: parse_message(e.message()),
            }
        })?;
        config.origin = origin.to_owned();
        config.interpolate(text)?;
        if config.sync.mappings.is_relative() {
            if let Some(dir) = origin.parent() {
                config.sync.mappings = dir.join(&config.sync.mappings);
            }
        }
        Ok(config)
    }

    /// Replaces `${VAR}` in every string value. Done after parsing, so a substituted value
    /// (a password with `"` or `\`) can never break the TOML syntax or show up in a parse error.
    fn interpolate(&mut self, text: &str) -> Result<(), ConfigError> {
        let origin = self.origin.clone();
        let mut mappings = self.sync.mappings.to_string_lossy().into_owned();
        let fields: [(&str, &mut String); 7] = [
            ("mongo.uri", &mut self.mongo.uri.0),
            ("postgres.uri", &mut self.postgres.uri.0),
            ("postgres.schema", &mut self.postgres.schema),
            ("sync.name", &mut self.sync.name),
            ("sync.mappings", &mut mappings),
            ("sync.state_schema", &mut self.sync.state_schema),
            ("metrics.listen", &mut self.metrics.listen),
        ];
        for (field, value) in fields {
            *value = interpolate_env(value, |name| std::env::var(name).ok()).map_err(|var| {
                let (line, column) = text
                    .find(&format!("${{{var}}}"))
                    .map(|at| line_col(text, at))
                    .unwrap_or((1, 1));
                ConfigError::MissingVar {
                    file: origin.clone(),
                    line,
                    column,
                    field: field.to_owned(),
                    var,
                }
            })?;
        }
        self.sync.mappings = PathBuf::from(mappings);
        Ok(())
    }

    /// Checks every value that parses but cannot work, reporting all of them at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        let mut bad = |path: &str, message: String| {
            errors.push(FieldError {
                path: path.to_owned(),
                message,
            })
        };
        let mongo = self.mongo.uri.trim();
        if mongo.is_empty() {
            bad(
                "mongo.uri",
                "must not be empty (e.g. mongodb://host:27017/?replicaSet=rs0)".into(),
            );
        } else if !(mongo.starts_with("mongodb://") || mongo.starts_with("mongodb+srv://")) {
            // The value is not echoed: a mistyped scheme would defeat the redaction.
            bad(
                "mongo.uri",
                "is not a MongoDB URI: it must start with mongodb:// or mongodb+srv://".into(),
            );
        }
        if self.postgres.uri.trim().is_empty() {
            bad(
                "postgres.uri",
                "must not be empty (e.g. postgres://user@host:5432/db)".into(),
            );
        }
        for (path, name) in [
            ("postgres.schema", &self.postgres.schema),
            ("sync.state_schema", &self.sync.state_schema),
        ] {
            if let Err(why) = check_identifier(name) {
                bad(path, format!("{why} (a Postgres schema name)"));
            }
        }
        if self.postgres.pool_size == 0 {
            bad("postgres.pool_size", "must be at least 1 (got 0)".into());
        }
        if self.sync.name.trim().is_empty() {
            bad("sync.name", "must not be empty (e.g. \"default\")".into());
        }
        if self.sync.mappings.as_os_str().is_empty() {
            bad(
                "sync.mappings",
                "must name a mapping file or directory".into(),
            );
        }
        if self.sync.batch_max_rows == 0 {
            bad("sync.batch_max_rows", "must be at least 1 (got 0)".into());
        }
        if self.sync.batch_max_wait_ms == 0 {
            bad(
                "sync.batch_max_wait_ms",
                "must be at least 1 (got 0)".into(),
            );
        }
        if let Err(why) = check_listen(&self.metrics.listen) {
            bad("metrics.listen", why);
        }
        if self.metrics.ready_max_lag_secs == 0 {
            bad(
                "metrics.ready_max_lag_secs",
                "must be at least 1 (got 0): lag is measured in whole seconds".into(),
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                file: self.origin.clone(),
                errors,
            })
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

/// The first line of a TOML error message (the rest repeats the source line), redacted.
fn parse_message(message: &str) -> String {
    let first = message.lines().next().unwrap_or("invalid TOML").trim();
    let mut out = redact_uri(first);
    if out.starts_with("unknown field") {
        out.push_str(" (remove it or fix its spelling)");
    }
    out
}

/// Replaces `${NAME}` using `lookup`; `Err(NAME)` for the first variable it cannot resolve.
/// `$$` is not special: a `$` not followed by `{` stays as is.
fn interpolate_env(value: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        match lookup(name) {
            Some(v) => out.push_str(&v),
            None => return Err(name.to_owned()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Postgres accepts any quoted identifier that is non-empty, at most 63 bytes and free of NUL.
pub fn check_identifier(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("must not be empty".to_owned())
    } else if name.len() > 63 {
        Err(format!(
            "`{name}` is {} bytes long; Postgres identifiers are at most 63 bytes",
            name.len()
        ))
    } else if name.contains('\0') {
        Err("must not contain a NUL character".to_owned())
    } else {
        Ok(())
    }
}

fn check_listen(listen: &str) -> Result<(), String> {
    if listen.is_empty() {
        return Ok(());
    }
    if listen.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    match listen.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!(
            "`{listen}` is not host:port (e.g. \"127.0.0.1:9187\"; \"\" disables the endpoint)"
        )),
    }
}

/// A connection string that holds credentials. It reads as a `&str` (`Deref`, `AsRef`) where
/// a driver needs the real value, but its `Debug` and `Display` go through [`redact_uri`], so a
/// derived `Debug` of the config, a `{}` in a log line or an error never shows the password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUri(String);

impl SecretUri {
    pub fn new(uri: impl Into<String>) -> SecretUri {
        SecretUri(uri.into())
    }

    /// The unredacted text, for handing to a driver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for SecretUri {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for SecretUri {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretUri {
    fn from(s: String) -> SecretUri {
        SecretUri(s)
    }
}

/// So `ClientOptions::parse(&config.mongo.uri)` takes the secret as it takes a `&String`.
impl TryFrom<&SecretUri> for mongodb::options::ConnectionString {
    type Error = mongodb::error::Error;
    fn try_from(uri: &SecretUri) -> Result<Self, Self::Error> {
        mongodb::options::ConnectionString::parse(uri.expose())
    }
}

impl PartialEq<&str> for SecretUri {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl std::fmt::Debug for SecretUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redact_uri(&self.0))
    }
}

impl std::fmt::Display for SecretUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_uri(&self.0))
    }
}

/// The text with every password masked as `****`: `scheme://user:password@host` (any
/// scheme, so mongodb://, mongodb+srv://, postgres:// and postgresql:// alike) and
/// `password=value` (conninfo strings and URI query parameters, quoted values included).
/// Safe on whole messages as well as single URIs.
pub fn redact_uri(uri: &str) -> String {
    redact_password_params(&redact_userinfo(uri))
}

/// Masks the password part of `user:password@` after each `://`.
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        out.push_str(&rest[..at + 3]);
        let after = &rest[at + 3..];
        // The URI ends at whitespace or a quote; its userinfo ends at the last `@` before that
        // (an unescaped `@` in a password still leaves the last one as the separator).
        let end = after
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '`')
            .unwrap_or(after.len());
        let token = &after[..end];
        let authority_end = token.rfind('@');
        match authority_end.and_then(|a| token[..a].find(':').map(|c| (c, a))) {
            Some((colon, a)) => {
                out.push_str(&token[..colon + 1]);
                out.push_str("****");
                out.push_str(&token[a..]);
            }
            None => out.push_str(token),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Masks the value of every `password=` key (case-insensitive; `sslpassword=` too) and of
/// MongoDB's `authMechanismProperties=` (it may carry an AWS session token).
fn redact_password_params(text: &str) -> String {
    redact_key(&redact_key(text, "password="), "authmechanismproperties=")
}

/// Masks the value of every `KEY` (lower case, matched case-insensitively).
fn redact_key(text: &str, key: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    while let Some(found) = lower[pos..].find(key) {
        let value_start = pos + found + key.len();
        out.push_str(&text[pos..value_start]);
        let value = &text[value_start..];
        let len = if let Some(quoted) = value.strip_prefix('\'') {
            // conninfo quoting: `'...'` with `\'` and `\\` escapes.
            let mut chars = quoted.char_indices();
            let mut close = quoted.len();
            while let Some((i, c)) = chars.next() {
                if c == '\\' {
                    chars.next();
                } else if c == '\'' {
                    close = i + 1;
                    break;
                }
            }
            1 + close
        } else {
            value
                .find(|c: char| c.is_whitespace() || c == '&' || c == '"' || c == '`')
                .unwrap_or(value.len())
        };
        out.push_str("****");
        pos = value_start + len;
    }
    out.push_str(&text[pos..]);
    out
}

#[cfg(test)]
mod tests;
