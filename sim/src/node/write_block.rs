//! User write blocking (`setUserWriteBlockMode`, MongoDB 6.0+), kept the way
//! a replica-set primary keeps it.
//!
//! mongod records the block as a document in
//! `config.user_writes_critical_sections` (`{_id: "", blockNewUserShardedDDL:
//! false, blockUserWrites: true}`; `_id` is the namespace, empty = global)
//! and an op observer turns writes of that document into the in-memory
//! state. Here the state is read straight from that document, so every
//! connection sees it at once and it comes with the oplog entries mongod
//! writes for it.
//!
//! While blocked, a write that would change something in a database other
//! than `admin`, `local` and `config` fails with 371 UserWritesBlocked: the
//! check sits where mongod's op observer runs (a document about to be
//! written, a collection about to be created, dropped, renamed, indexed), so
//! an update or delete that matches nothing, or a drop of a missing
//! collection, still succeeds, as on mongod. Reads and change streams are
//! untouched.
//!
//! Not reproduced: mongod makes `setUserWriteBlockMode` wait (global X lock)
//! until open transactions finish; here a transaction open across the switch
//! instead fails at its next write or at `commitTransaction` with 371.

use bson::{doc, Bson};

use crate::bson_order::OrderedBson;
use crate::error::CommandError;
use crate::node::history::History;
use crate::node::oplog::Oplog;
use crate::node::store::Catalog;
use crate::node::writes::{self, LiveSink, LiveTarget};

pub const CRITICAL_SECTIONS_DB: &str = "config";
pub const CRITICAL_SECTIONS_COLL: &str = "user_writes_critical_sections";

/// 371: what every blocked write reports.
pub fn error() -> CommandError {
    CommandError::new(371, "UserWritesBlocked", "User writes blocked")
}

/// `admin`, `local` and `config` (`NamespaceString::isOnInternalDb`): never blocked.
pub fn is_internal_db(db: &str) -> bool {
    matches!(db, "admin" | "local" | "config")
}

/// The database of `db.coll` or `db.$cmd`.
pub fn db_of(ns: &str) -> &str {
    ns.split_once('.').map_or(ns, |(db, _)| db)
}

/// Whether user writes are blocked: the global critical-section document
/// exists with `blockUserWrites: true`.
pub fn blocked(catalog: &Catalog) -> bool {
    catalog
        .get(CRITICAL_SECTIONS_DB, CRITICAL_SECTIONS_COLL)
        .and_then(|c| c.docs.get(&OrderedBson(Bson::String(String::new()))))
        .is_some_and(|d| d.doc().get_bool("blockUserWrites") == Ok(true))
}

/// Fails with 371 when `blocked` and `db` holds user data.
pub fn check(blocked: bool, db: &str) -> Result<(), CommandError> {
    if blocked && !is_internal_db(db) {
        return Err(error());
    }
    Ok(())
}

/// [`check`] against the current state of `catalog`.
pub fn check_catalog(catalog: &Catalog, db: &str) -> Result<(), CommandError> {
    check(blocked(catalog), db)
}

/// Turns blocking on (`global: true`) or off, writing or removing the
/// critical-section document like mongod, oplog entries included. Turning
/// it on twice, or off when it is off, changes nothing.
pub fn set(
    catalog: &mut Catalog,
    oplog: &mut Oplog,
    history: &mut History,
    global: bool,
) -> Result<(), CommandError> {
    let id = Bson::String(String::new());
    let existing = catalog
        .get(CRITICAL_SECTIONS_DB, CRITICAL_SECTIONS_COLL)
        .and_then(|c| c.docs.get(&OrderedBson(id.clone())))
        .map(|d| d.doc().into_owned());
    let mut target = LiveTarget {
        catalog,
        sink: LiveSink {
            oplog,
            retry: None,
            writes_blocked: false,
            bypass_validation: false,
            history,
            last_logged: None,
        },
    };
    let failed = |e: writes::WriteError| e.to_command_error();
    match (global, existing) {
        (true, Some(doc)) => {
            if doc.get_bool("blockUserWrites") != Ok(true) {
                // Someone wrote the document by hand; mongod refuses to
                // change its options rather than overwrite it.
                return Err(CommandError::illegal_operation(format!(
                    "Cannot acquire user writes critical section with different options than \
                     the already existing one. blockUserWrites: true, current: {}",
                    doc.get_bool("blockNewUserShardedDDL").unwrap_or(false)
                )));
            }
            Ok(())
        }
        (true, None) => writes::insert_one(
            &mut target,
            CRITICAL_SECTIONS_DB,
            CRITICAL_SECTIONS_COLL,
            doc! {"_id": id, "blockNewUserShardedDDL": false, "blockUserWrites": true},
        )
        .map_err(failed),
        (false, Some(_)) => writes::delete(
            &mut target,
            CRITICAL_SECTIONS_DB,
            CRITICAL_SECTIONS_COLL,
            &doc! {"_id": id},
            true,
            None,
        )
        .map(|_| ())
        .map_err(failed),
        (false, None) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_the_state() {
        let mut catalog = Catalog::default();
        let mut oplog = Oplog::new(100);
        let mut history = History::default();
        assert!(!blocked(&catalog));
        set(&mut catalog, &mut oplog, &mut history, true).unwrap();
        assert!(blocked(&catalog));
        assert_eq!(check(true, "shop").unwrap_err().code, 371);
        for db in ["admin", "local", "config"] {
            check(true, db).unwrap();
        }
        check(false, "shop").unwrap();
        // Twice on is still on, and logs nothing more.
        let logged = oplog.next_seq();
        set(&mut catalog, &mut oplog, &mut history, true).unwrap();
        assert_eq!(oplog.next_seq(), logged);
        set(&mut catalog, &mut oplog, &mut history, false).unwrap();
        assert!(!blocked(&catalog));
        set(&mut catalog, &mut oplog, &mut history, false).unwrap();
        assert!(!blocked(&catalog));
        assert_eq!(db_of("shop.orders"), "shop");
        assert_eq!(db_of("admin.$cmd"), "admin");
    }
}
