//! Loading mapping files: a directory of `*.yml`/`*.yaml` (sorted by name) or one file, into
//! a validated [`MappingSet`]. Every error of every file is collected and reported in one run,
//! each with `file:line:column`, what is wrong and how to fix it.
//!
//! This file turns YAML into the model (shape, keys, scalars, types); `validate.rs` checks
//! the rules that span columns, children, collections and files.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::model::{
    ChildMapping, CollectionMapping, ColumnMapping, FieldPath, IdType, MappingSet, OnError, OnNul,
};
use super::types::{parse_type, TYPE_HINT};
use super::validate;
use super::yaml::{self, Kind, Node, Pos};

/// Hint for a type split by an unquoted comma inside a `{ ... }` column.
const QUOTE_TYPE_HINT: &str =
    "quote the type, e.g. type: \"numeric(12,2)\"; inside { } a comma ends the value";

/// One problem in a mapping file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole (unreadable, missing).
    pub line: usize,
    /// 1-based, in characters; 0 with `line`.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": {}", self.message)?;
        if !self.hint.is_empty() {
            write!(f, " ({})", self.hint)?;
        }
        Ok(())
    }
}

/// Every problem found in one load, in file order. Never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingErrors(pub Vec<MappingError>);

impl fmt::Display for MappingErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for MappingErrors {}

/// Loads and validates the mappings at `path` (a directory or a file).
pub fn load(path: &Path) -> Result<MappingSet, MappingErrors> {
    load_placed(path).map(|(set, _)| set)
}

/// `load`, and where each column's type was written, for errors found later against the live
/// tables (a reload refusing a changed column type names the line to change back).
pub fn load_placed(path: &Path) -> Result<(MappingSet, Places), MappingErrors> {
    let mut loader = Loader::default();
    for file in loader.files(path) {
        match std::fs::read_to_string(&file) {
            Ok(text) => loader.file(&file, &text),
            Err(e) => loader.whole_file(
                &file,
                format!("cannot read the mapping file: {e}"),
                "check the path and its permissions",
            ),
        }
    }
    let places = Places {
        collections: loader.collections.iter().map(|(_, p)| p.clone()).collect(),
    };
    loader.finish().map(|set| (set, places))
}

/// Where the parts of each collection of a `MappingSet` were written (`load_placed`).
#[derive(Debug, Clone, Default)]
pub struct Places {
    /// Parallel to `MappingSet::collections`.
    collections: Vec<CollectionPos>,
}

impl Places {
    /// An error at the place that gives column `column` of table `table` of collection
    /// `collection` its type: its `type:`, the parent's key column for a child's parent key,
    /// `extra_props`, or the collection's name for what the mapping does not spell out (`idx`).
    pub fn column_error(
        &self,
        set: &MappingSet,
        collection: usize,
        table: &str,
        column: &str,
        message: String,
        hint: String,
    ) -> MappingError {
        let (file, pos) = match (
            set.collections.get(collection),
            self.collections.get(collection),
        ) {
            (Some(c), Some(p)) => (p.file.clone(), type_pos(c, p, table, column)),
            _ => (PathBuf::new(), Pos::default()),
        };
        MappingError {
            file,
            line: pos.line,
            column: pos.column,
            message,
            hint,
        }
    }
}

fn type_pos(c: &CollectionMapping, p: &CollectionPos, table: &str, column: &str) -> Pos {
    let key_ty = p.columns.get(c.key_index()).map_or(p.name, |k| k.ty);
    if table == c.table {
        if let Some(i) = c.columns.iter().position(|m| m.name == column) {
            return p.columns.get(i).map_or(p.name, |x| x.ty);
        }
        if c.extra_props.as_deref() == Some(column) {
            return p.extra_props;
        }
        return p.name;
    }
    for (child, cp) in c.children.iter().zip(&p.children) {
        if child.table != table {
            continue;
        }
        if child.parent_key == column {
            return key_ty;
        }
        if let Some(i) = child.columns.iter().position(|m| m.name == column) {
            return cp.columns.get(i).map_or(cp.table, |x| x.ty);
        }
        return cp.table;
    }
    p.name
}

/// Loads mappings from text, as if read from `file` (which errors name). Used by tests and by
/// callers that hold the text already.
pub fn load_str(text: &str, file: &Path) -> Result<MappingSet, MappingErrors> {
    let mut loader = Loader::default();
    loader.file(file, text);
    loader.finish()
}

/// Where each part of a collection's mapping was written, for errors found after parsing.
#[derive(Debug, Clone, Default)]
pub(crate) struct CollectionPos {
    pub file: PathBuf,
    pub name: Pos,
    pub table: Pos,
    pub extra_props: Pos,
    /// Parallel to `CollectionMapping::columns`.
    pub columns: Vec<ColumnPos>,
    /// Parallel to `CollectionMapping::children`.
    pub children: Vec<ChildPos>,
    /// Some columns were left out because of their own errors.
    pub incomplete: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ColumnPos {
    pub name: Pos,
    pub source: Pos,
    pub ty: Pos,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ChildPos {
    pub table: Pos,
    pub source: Pos,
    pub parent_key: Pos,
    pub columns: Vec<ColumnPos>,
}

#[derive(Default)]
struct Loader {
    errors: Vec<MappingError>,
    collections: Vec<(CollectionMapping, CollectionPos)>,
    file: PathBuf,
}

impl Loader {
    fn finish(mut self) -> Result<MappingSet, MappingErrors> {
        validate::check_set(&self.collections, &mut self.errors);
        if self.errors.is_empty() {
            Ok(MappingSet {
                collections: self.collections.into_iter().map(|(c, _)| c).collect(),
            })
        } else {
            Err(MappingErrors(self.errors))
        }
    }

    /// The mapping files at `path`: itself, or its `*.yml`/`*.yaml` entries sorted by name.
    fn files(&mut self, path: &Path) -> Vec<PathBuf> {
        if !path.is_dir() {
            if !path.exists() {
                self.whole_file(
                    path,
                    "no such mapping file or directory".to_owned(),
                    "check sync.mappings in the config (relative paths start at the config file's folder)",
                );
                return Vec::new();
            }
            return vec![path.to_owned()];
        }
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) => {
                self.whole_file(
                    path,
                    format!("cannot list the mapping directory: {e}"),
                    "check its permissions",
                );
                return Vec::new();
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml"))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            self.whole_file(
                path,
                "the mapping directory has no *.yml or *.yaml files".to_owned(),
                "add a mapping file or point sync.mappings at one",
            );
        }
        files
    }

    fn whole_file(&mut self, file: &Path, message: String, hint: &str) {
        self.errors.push(MappingError {
            file: file.to_owned(),
            line: 0,
            column: 0,
            message,
            hint: hint.to_owned(),
        });
    }

    fn err(&mut self, pos: Pos, message: impl Into<String>, hint: impl Into<String>) {
        self.errors.push(MappingError {
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
            hint: hint.into(),
        });
    }

    fn file(&mut self, file: &Path, text: &str) {
        self.file = file.to_owned();
        let docs = match yaml::parse(text) {
            Ok(docs) => docs,
            Err(e) => {
                self.err(
                    e.pos,
                    format!("YAML syntax error: {}", e.message),
                    "fix the YAML syntax; quote values containing `,` `:` `#` `[` `]`, e.g. type: \"text[]\"",
                );
                return;
            }
        };
        let docs: Vec<Node> = docs.into_iter().filter(|d| !d.is_null()).collect();
        if docs.is_empty() {
            self.err(
                Pos { line: 1, column: 1 },
                "the mapping file is empty",
                "write `database:` and `collections:`, or remove the file",
            );
        }
        for doc in &docs {
            self.document(doc);
        }
    }

    /// Checks that `node` is a mapping with only `allowed` keys, each at most once, and all
    /// `required` ones; returns its values by key. `what` names the node in messages.
    fn fields<'a>(
        &mut self,
        node: &'a Node,
        what: &str,
        allowed: &[&str],
        required: &[&str],
    ) -> Option<HashMap<&'a str, &'a Node>> {
        let Kind::Map(entries) = &node.kind else {
            self.err(
                node.pos,
                format!("{what} must be a mapping, found {}", node.describe()),
                format!(
                    "write it as `key: value` lines; keys: {}",
                    allowed.join(", ")
                ),
            );
            return None;
        };
        let mut out: HashMap<&str, &Node> = HashMap::new();
        for (k, v) in entries {
            let Some(key) = k.as_str() else {
                self.err(
                    k.pos,
                    format!("{what} has a non-scalar key"),
                    "keys are plain words",
                );
                continue;
            };
            if !allowed.contains(&key) {
                // `type: numeric(12,2)` unquoted inside `{ }` splits at the comma into a
                // key `2)`: say so rather than only listing the allowed keys.
                let hint = if key.ends_with(')') {
                    QUOTE_TYPE_HINT.to_owned()
                } else {
                    format!("allowed keys: {}", allowed.join(", "))
                };
                self.err(k.pos, format!("unknown key `{key}` in {what}"), hint);
            } else if out.insert(key, v).is_some() {
                self.err(
                    k.pos,
                    format!("key `{key}` appears twice in {what}"),
                    "keep one of them",
                );
            }
        }
        for key in required {
            if !out.contains_key(key) {
                self.err(
                    node.pos,
                    format!("{what} is missing the required key `{key}`"),
                    format!("add `{key}: ...`"),
                );
            }
        }
        Some(out)
    }

    /// A scalar's text; `None` (with an error) for lists and mappings.
    fn scalar(&mut self, node: &Node, what: &str) -> Option<String> {
        match node.as_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                self.err(
                    node.pos,
                    format!("{what} must be a single value, found {}", node.describe()),
                    "write a plain or quoted string",
                );
                None
            }
        }
    }

    /// A table, column or key name Postgres accepts (quoted): non-empty, at most 63 bytes,
    /// no NUL.
    fn ident(&mut self, node: &Node, what: &str) -> Option<String> {
        let name = self.scalar(node, what)?;
        if node.is_null() {
            self.err(node.pos, format!("{what} is empty"), "write a name");
            return None;
        }
        match crate::config::check_identifier(&name) {
            Ok(()) => Some(name),
            Err(why) => {
                self.err(
                    node.pos,
                    format!("{what} {why}"),
                    "Postgres names are 1 to 63 bytes without NUL",
                );
                None
            }
        }
    }

    /// A dotted source path. `.` (the element itself) only where `allow_dot`.
    fn source(&mut self, node: &Node, allow_dot: bool) -> Option<FieldPath> {
        let text = self.scalar(node, "`source`")?;
        if text == "." {
            if allow_dot {
                return Some(FieldPath::parse("."));
            }
            self.err(
                node.pos,
                "`source: .` only addresses a scalar array element in a child table's columns",
                "name a field of the document, e.g. `source: total`",
            );
            return None;
        }
        if node.is_null() || text.split('.').any(str::is_empty) {
            self.err(
                node.pos,
                format!("`{text}` is not a field path"),
                "write dotted field names without empty parts, e.g. `customer.email`",
            );
            return None;
        }
        Some(FieldPath::parse(&text))
    }

    fn document(&mut self, doc: &Node) {
        let Some(f) = self.fields(
            doc,
            "the mapping file",
            &["database", "collections"],
            &["database", "collections"],
        ) else {
            return;
        };
        let database = f.get("database").and_then(|n| {
            let db = self.scalar(n, "`database`")?;
            if db.is_empty() || n.is_null() || db.contains(['.', '\0', '/', '\\', ' ', '"', '$']) {
                self.err(
                    n.pos,
                    format!("`{db}` is not a MongoDB database name"),
                    "database names are non-empty and contain none of . / \\ space \" $",
                );
                return None;
            }
            Some(db)
        });
        let Some(colls) = f.get("collections") else {
            return;
        };
        let Kind::Map(entries) = &colls.kind else {
            self.err(
                colls.pos,
                format!(
                    "`collections` must be a mapping, found {}",
                    colls.describe()
                ),
                "write `collections:` then one `name:` block per collection",
            );
            return;
        };
        if entries.is_empty() {
            self.err(
                colls.pos,
                "`collections` is empty",
                "map at least one collection",
            );
        }
        for (name, spec) in entries {
            let Some(coll) = self.scalar(name, "a collection name") else {
                continue;
            };
            if coll.is_empty() || coll.contains('\0') || coll.starts_with('$') {
                self.err(
                    name.pos,
                    format!("`{coll}` is not a MongoDB collection name"),
                    "collection names are non-empty, without NUL, not starting with $",
                );
                continue;
            }
            if let Some((m, p)) = self.collection(database.as_deref(), &coll, name.pos, spec) {
                validate::check_collection(&m, &p, &mut self.errors);
                self.collections.push((m, p));
            }
        }
    }

    fn collection(
        &mut self,
        database: Option<&str>,
        name: &str,
        name_pos: Pos,
        spec: &Node,
    ) -> Option<(CollectionMapping, CollectionPos)> {
        let what = format!("collection `{name}`");
        let f = self.fields(
            spec,
            &what,
            &[
                "table",
                "columns",
                "extra_props",
                "on_error",
                "on_nul",
                "id_type",
                "children",
            ],
            &["columns"],
        )?;
        let mut pos = CollectionPos {
            file: self.file.clone(),
            name: name_pos,
            table: name_pos,
            ..CollectionPos::default()
        };
        let table = match f.get("table") {
            Some(n) if !n.is_null() => {
                pos.table = n.pos;
                self.ident(n, "`table`")
            }
            _ => match crate::config::check_identifier(name) {
                Ok(()) => Some(name.to_owned()),
                Err(why) => {
                    self.err(
                        name_pos,
                        format!("the collection name as a table name {why}"),
                        "set `table:` to a shorter name",
                    );
                    None
                }
            },
        };
        let extra_props = match f.get("extra_props") {
            Some(n) if !n.is_null() => {
                pos.extra_props = n.pos;
                Some(self.ident(n, "`extra_props`"))
            }
            _ => None,
        };
        let on_error = match f.get("on_error") {
            None => Some(OnError::default()),
            Some(n) => match self.scalar(n, "`on_error`")?.as_str() {
                "dead_letter" => Some(OnError::DeadLetter),
                "null" => Some(OnError::Null),
                "fail" => Some(OnError::Fail),
                other => {
                    self.err(
                        n.pos,
                        format!("`{other}` is not an on_error policy"),
                        "use dead_letter (the default), null or fail",
                    );
                    None
                }
            },
        };
        let on_nul = match f.get("on_nul") {
            None => Some(OnNul::default()),
            Some(n) => match self.scalar(n, "`on_nul`")?.as_str() {
                "refuse" => Some(OnNul::Refuse),
                "strip" => Some(OnNul::Strip),
                "replace" => Some(OnNul::Replace),
                other => {
                    self.err(
                        n.pos,
                        format!("`{other}` is not an on_nul policy"),
                        "use refuse (the default), strip or replace",
                    );
                    None
                }
            },
        };
        let id_type = match f.get("id_type") {
            None => Some(IdType::default()),
            Some(n) => {
                let word = self.scalar(n, "`id_type`")?;
                let found = [
                    IdType::Auto,
                    IdType::String,
                    IdType::ObjectId,
                    IdType::Number,
                    IdType::Binary,
                ]
                .into_iter()
                .find(|t| t.as_str() == word);
                if found.is_none() {
                    self.err(
                        n.pos,
                        format!("`{word}` is not an id_type"),
                        "use auto (the default), string, objectId, number or binary",
                    );
                }
                found
            }
        };
        let columns = f.get("columns").map(|n| {
            let columns = self.columns(n, &what, false, &mut pos.columns);
            // A column left out for an error of its own may be the `_id` one: do not also
            // report the key as missing.
            pos.incomplete = !matches!(&n.kind, Kind::Seq(items) if items.len() == columns.len());
            columns
        });
        let mut children = Vec::new();
        if let Some(list) = f.get("children").filter(|n| !n.is_null()) {
            match &list.kind {
                Kind::Seq(items) => {
                    for item in items {
                        if let Some((child, child_pos)) = self.child(item, name) {
                            children.push(child);
                            pos.children.push(child_pos);
                        }
                    }
                }
                _ => self.err(
                    list.pos,
                    format!("`children` must be a list, found {}", list.describe()),
                    "write one `- table: ...` entry per child table",
                ),
            }
        }
        Some((
            CollectionMapping {
                database: database?.to_owned(),
                collection: name.to_owned(),
                table: table?,
                columns: columns?,
                extra_props: extra_props.flatten(),
                on_error: on_error?,
                on_nul: on_nul?,
                id_type: id_type?,
                children,
            },
            pos,
        ))
    }

    /// A `columns:` list. Columns with errors are reported and left out, so `positions` stays
    /// parallel to the returned list.
    fn columns(
        &mut self,
        node: &Node,
        owner: &str,
        in_child: bool,
        positions: &mut Vec<ColumnPos>,
    ) -> Vec<ColumnMapping> {
        let Kind::Seq(items) = &node.kind else {
            self.err(
                node.pos,
                format!(
                    "`columns` of {owner} must be a list, found {}",
                    node.describe()
                ),
                "write one `- { name: ..., source: ..., type: ... }` per column",
            );
            return Vec::new();
        };
        if items.is_empty() {
            self.err(
                node.pos,
                format!("`columns` of {owner} is empty"),
                "map at least one column",
            );
        }
        let mut out = Vec::new();
        for item in items {
            let Some(f) = self.fields(
                item,
                &format!("a column of {owner}"),
                &["name", "source", "type"],
                &["name", "source", "type"],
            ) else {
                continue;
            };
            let (Some(name_n), Some(source_n), Some(type_n)) =
                (f.get("name"), f.get("source"), f.get("type"))
            else {
                continue;
            };
            let name = self.ident(name_n, "the column name");
            let source = self.source(source_n, in_child);
            let pg_type = self.scalar(type_n, "`type`").and_then(|t| {
                parse_type(&t)
                    .map_err(|why| {
                        let hint = if t.contains('(') && !t.contains(')') {
                            QUOTE_TYPE_HINT
                        } else {
                            TYPE_HINT
                        };
                        self.err(type_n.pos, why, hint)
                    })
                    .ok()
            });
            if let (Some(name), Some(source), Some(pg_type)) = (name, source, pg_type) {
                out.push(ColumnMapping {
                    name,
                    source,
                    pg_type,
                });
                positions.push(ColumnPos {
                    name: name_n.pos,
                    source: source_n.pos,
                    ty: type_n.pos,
                });
            }
        }
        out
    }

    fn child(&mut self, node: &Node, parent: &str) -> Option<(ChildMapping, ChildPos)> {
        let what = format!("a child table of `{parent}`");
        let f = self.fields(
            node,
            &what,
            &["table", "source", "parent_key", "columns"],
            &["table", "source", "parent_key", "columns"],
        )?;
        let table_n = f.get("table")?;
        let source_n = f.get("source")?;
        let key_n = f.get("parent_key")?;
        let table = self.ident(table_n, "`table`");
        let owner = format!("child table `{}`", table.as_deref().unwrap_or("?"));
        let source = match self.scalar(source_n, "`source`")?.as_str() {
            "." | "" => {
                self.err(
                    source_n.pos,
                    "a child's `source` must be an array field of the parent, not the document itself",
                    "name the array field, e.g. `source: items`",
                );
                None
            }
            "_id" => {
                self.err(
                    source_n.pos,
                    "a child's `source` cannot be `_id`: it is the primary key, not an array",
                    "name the array field, e.g. `source: items`",
                );
                None
            }
            _ => self.source(source_n, false),
        };
        let parent_key = self.ident(key_n, "`parent_key`");
        let mut pos = ChildPos {
            table: table_n.pos,
            source: source_n.pos,
            parent_key: key_n.pos,
            columns: Vec::new(),
        };
        let columns = f
            .get("columns")
            .map(|n| self.columns(n, &owner, true, &mut pos.columns))?;
        Some((
            ChildMapping {
                table: table?,
                source: source?,
                parent_key: parent_key?,
                columns,
            },
            pos,
        ))
    }
}
