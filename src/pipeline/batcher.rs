//! The batcher: turns the stream of event groups into batches. A batch closes when it holds
//! `batch_max_rows` changes or `batch_max_wait_ms` after its first event arrived (the latency
//! bound), whichever comes first. A group (one MongoDB transaction, or one lone event) is never
//! split, so a transaction always lands in one Postgres transaction; a batch may therefore end
//! a little above `batch_max_rows`.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use crate::event::{ChangeEvent, Op};

/// Events the batcher handles as one: a whole transaction, or a single event.
pub type EventGroup = Vec<ChangeEvent>;

/// What `Batcher::first_or` saw first.
pub enum First<T> {
    Group(EventGroup),
    Other(T),
    Closed,
}

/// Groups events from the source channel into batches.
pub struct Batcher {
    rx: mpsc::Receiver<EventGroup>,
    max_rows: usize,
    max_wait: Duration,
}

/// Rows a group counts for: every event but heartbeats. Coalescing happens in the sink; the
/// batcher bounds the work handed to it, so it counts before coalescing.
pub fn rows(group: &[ChangeEvent]) -> usize {
    group.iter().filter(|e| e.op != Op::Noop).count()
}

impl Batcher {
    pub fn new(rx: mpsc::Receiver<EventGroup>, max_rows: usize, max_wait: Duration) -> Self {
        Batcher {
            rx,
            max_rows: max_rows.max(1),
            max_wait,
        }
    }

    /// The next batch, handed to `take` group by group in source order as each arrives, so the
    /// caller converts every document as soon as it is read instead of holding a whole batch of
    /// them. Returns `false` (without calling `take`) once the channel is closed and drained;
    /// an error from `take` ends the batch there.
    pub async fn next_batch_with<E>(
        &mut self,
        take: impl FnMut(EventGroup) -> Result<(), E>,
    ) -> Result<bool, E> {
        let Some(first) = self.rx.recv().await else {
            return Ok(false);
        };
        self.batch_from(first, take).await?;
        Ok(true)
    }

    /// The first group of the next batch, or an item of `other` if one comes first (items of
    /// `other` win a tie: they wait for no batch); `Closed` once the source channel is
    /// closed and drained.
    pub async fn first_or<T>(&mut self, other: Option<&mut mpsc::Receiver<T>>) -> First<T> {
        match other {
            Some(o) => tokio::select! {
                biased;
                Some(item) = o.recv() => First::Other(item),
                g = self.rx.recv() => g.map_or(First::Closed, First::Group),
            },
            None => self.rx.recv().await.map_or(First::Closed, First::Group),
        }
    }

    /// The rest of the batch that `first` opened, handed to `take` as in `next_batch_with`.
    pub async fn batch_from<E>(
        &mut self,
        first: EventGroup,
        mut take: impl FnMut(EventGroup) -> Result<(), E>,
    ) -> Result<(), E> {
        let deadline = Instant::now() + self.max_wait;
        let mut count = rows(&first);
        take(first)?;
        while count < self.max_rows {
            tokio::select! {
                biased;
                group = self.rx.recv() => match group {
                    Some(group) => {
                        count += rows(&group);
                        take(group)?;
                    }
                    None => break,
                },
                () = sleep_until(deadline) => break,
            }
        }
        Ok(())
    }

    /// The next batch, in source order; `None` once the channel is closed and drained.
    #[cfg(test)]
    pub async fn next_batch(&mut self) -> Option<Vec<ChangeEvent>> {
        let mut events = Vec::new();
        let more = self
            .next_batch_with(|group| {
                events.extend(group);
                Ok::<(), std::convert::Infallible>(())
            })
            .await;
        matches!(more, Ok(true)).then_some(events)
    }

    /// Event groups waiting in the queue (for `tributary_queue_depth`).
    pub fn queued(&self) -> usize {
        self.rx.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Namespace, TxnId};
    use crate::position::Position;
    use bson::{doc, Timestamp};

    fn event(i: u32, txn: Option<i64>) -> ChangeEvent {
        let ts = Timestamp {
            time: 100,
            increment: if txn.is_some() { 1 } else { i },
        };
        ChangeEvent {
            op: Op::Insert,
            namespace: Namespace::new("db", "c"),
            key: Some(bson::Bson::Int32(i as i32)),
            document: Some(bson::rawdoc! {"_id": i as i32}),
            updated_paths: None,
            txn: txn.map(|n| TxnId {
                lsid: doc! {"id": 1},
                txn_number: n,
            }),
            cluster_time: ts,
            position: Position::Oplog {
                ts: Timestamp {
                    time: 100,
                    increment: i,
                },
            },
        }
    }

    fn keys(events: &[ChangeEvent]) -> Vec<i32> {
        events
            .iter()
            .map(|e| e.key.as_ref().and_then(bson::Bson::as_i32).unwrap_or(-1))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn closes_on_max_rows_without_waiting() {
        let (tx, rx) = mpsc::channel(16);
        let mut b = Batcher::new(rx, 3, Duration::from_secs(3600));
        for i in 0..5 {
            tx.send(vec![event(i, None)]).await.unwrap();
        }
        let start = Instant::now();
        assert_eq!(keys(&b.next_batch().await.unwrap()), vec![0, 1, 2]);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn closes_on_max_wait_after_first_event() {
        let (tx, rx) = mpsc::channel(16);
        let mut b = Batcher::new(rx, 100, Duration::from_millis(100));
        tx.send(vec![event(0, None)]).await.unwrap();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let batch = b.next_batch().await.unwrap();
            (batch, start.elapsed())
        });
        tokio::time::advance(Duration::from_millis(60)).await;
        tx.send(vec![event(1, None)]).await.unwrap();
        tokio::time::advance(Duration::from_millis(60)).await;
        let (batch, elapsed) = task.await.unwrap();
        assert_eq!(keys(&batch), vec![0, 1]);
        assert_eq!(elapsed, Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn waits_without_deadline_for_the_first_event() {
        let (tx, rx) = mpsc::channel(16);
        let mut b = Batcher::new(rx, 100, Duration::from_millis(100));
        let task = tokio::spawn(async move { b.next_batch().await });
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!task.is_finished());
        tx.send(vec![event(7, None)]).await.unwrap();
        drop(tx);
        assert_eq!(keys(&task.await.unwrap().unwrap()), vec![7]);
    }

    #[tokio::test(start_paused = true)]
    async fn never_splits_a_transaction() {
        let (tx, rx) = mpsc::channel(16);
        let mut b = Batcher::new(rx, 2, Duration::from_secs(1));
        tx.send(vec![event(0, None)]).await.unwrap();
        tx.send(vec![
            event(1, Some(9)),
            event(2, Some(9)),
            event(3, Some(9)),
        ])
        .await
        .unwrap();
        tx.send(vec![event(4, None)]).await.unwrap();
        drop(tx);
        let first = b.next_batch().await.unwrap();
        assert_eq!(keys(&first), vec![0, 1, 2, 3]);
        assert!(first[1..].iter().all(|e| e.same_transaction(&first[1])));
        assert_eq!(keys(&b.next_batch().await.unwrap()), vec![4]);
        assert!(b.next_batch().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_do_not_count_as_rows() {
        let (tx, rx) = mpsc::channel(16);
        let mut b = Batcher::new(rx, 1, Duration::from_millis(50));
        let ts = Timestamp {
            time: 1,
            increment: 1,
        };
        tx.send(vec![ChangeEvent::noop(Position::Oplog { ts }, ts)])
            .await
            .unwrap();
        tx.send(vec![event(1, None)]).await.unwrap();
        tx.send(vec![event(2, None)]).await.unwrap();
        let batch = b.next_batch().await.unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].op, Op::Noop);
        assert_eq!(rows(&batch), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_channel_flushes_what_is_pending() {
        let (tx, rx) = mpsc::channel(16);
        let mut b = Batcher::new(rx, 100, Duration::from_secs(3600));
        tx.send(vec![event(0, None)]).await.unwrap();
        tx.send(vec![event(1, None)]).await.unwrap();
        drop(tx);
        let start = Instant::now();
        assert_eq!(keys(&b.next_batch().await.unwrap()), vec![0, 1]);
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(b.next_batch().await.is_none());
    }
}
