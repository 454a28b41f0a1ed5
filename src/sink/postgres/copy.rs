//! Binary `COPY … FROM STDIN` of `PgValue` rows, sent in large chunks.
//!
//! tokio-postgres' `BinaryCopyInWriter` hands the connection a message every 4 KiB through a
//! channel of capacity one, so a 2 MB batch costs hundreds of task hand-offs. Encoding into
//! 256 KiB chunks keeps the server fed with a handful of them.

use bytes::{BufMut, BytesMut};
use futures::SinkExt;
use postgres_types::{IsNull, ToSql, Type};
use tokio_postgres::CopyInSink;

use crate::mapping::value::Row;

const CHUNK: usize = 256 * 1024;
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Why a COPY failed: the connection, or a value that does not fit its column.
#[derive(Debug)]
pub enum CopyError {
    Postgres(tokio_postgres::Error),
    /// Row index (in the rows given), column index, reason.
    Encode(usize, usize, String),
}

/// Streams `rows` (each exactly `types.len()` wide) into an open COPY and finishes it.
pub async fn copy_rows(
    mut sink: std::pin::Pin<&mut CopyInSink<bytes::Bytes>>,
    types: &[Type],
    rows: &[&Row],
) -> Result<u64, CopyError> {
    let mut buf = BytesMut::with_capacity(CHUNK + 64 * 1024);
    buf.put_slice(HEADER);
    buf.put_i32(0); // flags
    buf.put_i32(0); // header extension length
    let width = i16::try_from(types.len())
        .map_err(|_| CopyError::Encode(0, 0, "more than 32767 columns".into()))?;
    for (r, row) in rows.iter().enumerate() {
        buf.put_i16(width);
        for (c, (value, ty)) in row.iter().zip(types).enumerate() {
            let at = buf.len();
            buf.put_i32(0);
            match value.to_sql(ty, &mut buf) {
                Ok(IsNull::Yes) => buf[at..at + 4].copy_from_slice(&(-1i32).to_be_bytes()),
                Ok(IsNull::No) => {
                    let n = i32::try_from(buf.len() - at - 4)
                        .map_err(|_| CopyError::Encode(r, c, "value larger than 2 GiB".into()))?;
                    buf[at..at + 4].copy_from_slice(&n.to_be_bytes());
                }
                Err(e) => return Err(CopyError::Encode(r, c, e.to_string())),
            }
        }
        if buf.len() >= CHUNK {
            sink.send(buf.split().freeze())
                .await
                .map_err(CopyError::Postgres)?;
        }
    }
    buf.put_i16(-1);
    sink.send(buf.split().freeze())
        .await
        .map_err(CopyError::Postgres)?;
    sink.as_mut().finish().await.map_err(CopyError::Postgres)
}
