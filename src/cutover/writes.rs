//! MongoDB's side of a cutover: its current cluster time, and `setUserWriteBlockMode`
//! (MongoDB 6.0+; the user needs the `setUserWriteBlockMode` action on the cluster).

use bson::{doc, Timestamp};
use mongodb::Client;

use super::CutoverError;

/// The cluster time of the last write MongoDB has applied: the `operationTime` of a command
/// run in a session. (The gossiped `$clusterTime` can run ahead of the oplog; an operation
/// time is always a position a change stream reaches.)
pub async fn current_time(client: &Client) -> Result<Timestamp, CutoverError> {
    let doing = "reading the current cluster time";
    let mut session = client
        .start_session()
        .await
        .map_err(CutoverError::mongo(doing))?;
    client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .session(&mut session)
        .await
        .map_err(CutoverError::mongo(doing))?;
    session.operation_time().ok_or_else(|| CutoverError::Mongo {
        doing: doing.to_owned(),
        error: mongodb::error::Error::custom(
            "the server reported no operation time (is it a replica set or mongos?)",
        ),
    })
}

/// From now on MongoDB refuses user writes (code 371 `UserWritesBlocked`).
pub async fn block(client: &Client) -> Result<(), CutoverError> {
    set(client, true).await
}

/// MongoDB accepts user writes again (`tributary cutover --unblock-writes`, a rollback).
pub async fn unblock_writes(client: &Client) -> Result<(), CutoverError> {
    set(client, false).await
}

async fn set(client: &Client, global: bool) -> Result<(), CutoverError> {
    let doing = if global {
        "blocking user writes (setUserWriteBlockMode; needs MongoDB 6.0+ and that privilege)"
    } else {
        "unblocking user writes (setUserWriteBlockMode)"
    };
    client
        .database("admin")
        .run_command(doc! {"setUserWriteBlockMode": 1, "global": global})
        .await
        .map(drop)
        .map_err(CutoverError::mongo(doing))
}
