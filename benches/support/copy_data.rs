//! Binary COPY data prepared before a benchmark's clock starts: rows encoded into 256 KiB
//! chunks, so the timed section is the server's work plus sending, and freeing the chunks
//! (each its own allocation) gives their memory back.

use bytes::{BufMut, BytesMut};
use futures::SinkExt;
use postgres_types::{IsNull, ToSql, Type};
use tokio_postgres::Client as PgClient;
use tributary::mapping::value::Row;

/// One table's rows as binary COPY data, in 256 KiB chunks (a lean client: the server, not
/// message hand-offs, sets the pace).
pub struct CopyData {
    types: Vec<Type>,
    chunks: Vec<bytes::Bytes>,
    buf: BytesMut,
}

impl CopyData {
    const CHUNK: usize = 256 * 1024;

    pub fn new(types: Vec<Type>) -> CopyData {
        let mut buf = BytesMut::with_capacity(Self::CHUNK + 64 * 1024);
        buf.put_slice(b"PGCOPY\n\xff\r\n\0");
        buf.put_i32(0); // flags
        buf.put_i32(0); // header extension length
        CopyData {
            types,
            chunks: Vec::new(),
            buf,
        }
    }

    pub fn push(&mut self, row: &Row) {
        let width = i16::try_from(self.types.len()).expect("fewer than 32768 columns");
        self.buf.put_i16(width);
        for (value, ty) in row.iter().zip(&self.types) {
            let at = self.buf.len();
            self.buf.put_i32(0);
            match value
                .to_sql(ty, &mut self.buf)
                .expect("a converted value encodes")
            {
                IsNull::Yes => self.buf[at..at + 4].copy_from_slice(&(-1i32).to_be_bytes()),
                IsNull::No => {
                    let n = i32::try_from(self.buf.len() - at - 4).expect("value under 2 GiB");
                    self.buf[at..at + 4].copy_from_slice(&n.to_be_bytes());
                }
            }
        }
        if self.buf.len() >= Self::CHUNK {
            self.chunks.push(self.buf.split().freeze());
        }
    }

    /// Sends everything in one `COPY` on `pg`, in one transaction.
    pub async fn copy(mut self, pg: &PgClient, sql: &str) {
        self.buf.put_i16(-1); // trailer
        self.chunks.push(self.buf.split().freeze());
        pg.batch_execute("BEGIN").await.expect("BEGIN");
        let sink = pg
            .copy_in::<_, bytes::Bytes>(sql)
            .await
            .expect("COPY failed to start");
        let mut sink = std::pin::pin!(sink);
        for chunk in self.chunks {
            sink.send(chunk).await.expect("COPY send failed");
        }
        sink.as_mut().finish().await.expect("COPY failed");
        pg.batch_execute("COMMIT").await.expect("COMMIT");
    }
}
