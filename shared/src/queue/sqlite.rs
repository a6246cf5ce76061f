//! The embedded [`Queue`] adapter: named queues in one SQLite file, for local runs and tests.
//!
//! It behaves like a standard SQS queue with a redrive policy: delayed sends, visibility timeouts,
//! a fresh receipt per receive, receipts that go stale when the message is received again, and
//! redrive to a dead-letter queue once a message has been received `max_receives` times, with
//! [`DeadLetterReason::TooManyReceives`] as its reason (where SQS's own redrive gives none). Every
//! state change is committed before it is reported, so a crash loses nothing that was
//! acknowledged.
//!
//! It is a fair queue, deterministically: among the visible messages it serves first the groups
//! (see [`Outgoing::group`]) with the fewest messages in flight (received, not yet visible again,
//! not deleted), counting each message of a receive as it is handed out, and within that the
//! message that became visible first. Messages without a group form one group of their own, so a
//! queue that never uses groups hands out its messages oldest first. SQS only acts once a group is
//! a noisy neighbour (roughly: over a tenth of the messages in flight, and at least 30), and counts
//! each message without a group as a tenant of its own; the strict rule here makes fairness
//! testable.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::{
    check_delay, DeadLetterReason, Outgoing, Queue, QueueError, Received, REASON_ATTRIBUTE,
};
use crate::events::now_millis;
use crate::sqlite::Database;

/// How often a waiting receiver looks again without being woken: covers messages sent by another
/// process or by a queue value that is not a clone of this one.
#[cfg(not(test))]
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// In unit tests a receiver never finds a message by polling: one that arrives before a test's
/// generous bound was woken up, which the tests can then assert without timing anything.
#[cfg(test)]
const POLL_INTERVAL: Duration = Duration::from_secs(3600);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queue_messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue         TEXT    NOT NULL,
    id            TEXT    NOT NULL UNIQUE,
    body          TEXT    NOT NULL,
    attributes    TEXT    NOT NULL,
    sent_at       INTEGER NOT NULL,
    visible_at    INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT UNIQUE,
    message_group TEXT    NOT NULL DEFAULT ''
);
";

/// Run once the table has every column (see [`migrate`]).
const INDEXES: &str = "
DROP INDEX IF EXISTS queue_messages_visible;
CREATE INDEX IF NOT EXISTS queue_messages_ready ON queue_messages (queue, visible_at, seq);
CREATE INDEX IF NOT EXISTS queue_messages_groups
    ON queue_messages (queue, message_group, visible_at);
-- Only received messages; with the receipt, so that counting them never reads the table.
CREATE INDEX IF NOT EXISTS queue_messages_in_flight
    ON queue_messages (queue, message_group, visible_at, receipt) WHERE receipt IS NOT NULL;
";

/// The groups of queue `?1` that have a visible message at `?2` (Unix ms), each with that oldest
/// visible message (`seq`, `visible_at`) and how many of its messages are in flight. The groups
/// are found by skipping through `queue_messages_groups` from one group to the next, so the cost
/// grows with the number of groups, not with the number of messages a group holds. No group is
/// stored as `''`.
const FAIR_HEADS: &str = "
WITH RECURSIVE groups(name) AS (
    SELECT (SELECT message_group FROM queue_messages WHERE queue = ?1
            ORDER BY message_group LIMIT 1)
    UNION ALL
    SELECT (SELECT message_group FROM queue_messages
            WHERE queue = ?1 AND message_group > groups.name
            ORDER BY message_group LIMIT 1)
    FROM groups WHERE groups.name IS NOT NULL
),
heads(name, seq) AS (
    SELECT groups.name,
           (SELECT seq FROM queue_messages
            WHERE queue = ?1 AND message_group = groups.name AND visible_at <= ?2
            ORDER BY visible_at, seq LIMIT 1)
    FROM groups WHERE groups.name IS NOT NULL
)
SELECT heads.name, head.seq, head.visible_at,
       (SELECT COUNT(*) FROM queue_messages INDEXED BY queue_messages_in_flight
        WHERE queue = ?1 AND message_group = heads.name AND receipt IS NOT NULL
          AND visible_at > ?2)
FROM heads JOIN queue_messages AS head ON head.seq = heads.seq
";

/// Where a queue's messages go after too many receives, like an SQS redrive policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    /// Name of the dead-letter queue, in the same database.
    pub dead_letter: String,
    /// A message received this many times moves to the dead-letter queue on its next receive.
    pub max_receives: u32,
}

/// One named queue in a SQLite database.
///
/// Clones share their wake-ups, so a send through one clone promptly wakes a receiver waiting on
/// another; build one value per queue and clone it. Separate values (or processes) on the same
/// file still see each other's messages, found by polling.
#[derive(Clone)]
pub struct SqliteQueue {
    db: Database,
    name: Arc<str>,
    redrive: Option<Arc<Redrive>>,
    notify: Arc<Notify>,
    deletions: Arc<Deletions>,
}

impl std::fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteQueue")
            .field("name", &self.name)
            .field("redrive", &self.redrive)
            .finish_non_exhaustive()
    }
}

impl SqliteQueue {
    /// Opens the queue `name` in `db`, creating the schema if needed. The queue has no
    /// dead-letter queue until [`SqliteQueue::with_redrive`] gives it one.
    pub async fn open(db: Database, name: impl Into<String>) -> Result<SqliteQueue, QueueError> {
        // A write, so that two processes opening one file do not both add the missing column.
        db.write(migrate).await.map_err(QueueError::backend)?;
        Ok(SqliteQueue {
            db,
            name: name.into().into(),
            redrive: None,
            notify: Arc::new(Notify::new()),
            deletions: Arc::default(),
        })
    }

    /// Moves messages to the queue `dead_letter` once they have been received `max_receives`
    /// times; [`Queue::dead_letter`] uses the same queue.
    pub fn with_redrive(
        mut self,
        dead_letter: impl Into<String>,
        max_receives: u32,
    ) -> SqliteQueue {
        self.redrive = Some(Arc::new(Redrive {
            dead_letter: dead_letter.into(),
            max_receives,
        }));
        self
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The dead-letter queue, to read it, when this queue has one.
    pub fn dead_letter_queue(&self) -> Option<SqliteQueue> {
        self.redrive.as_ref().map(|redrive| SqliteQueue {
            db: self.db.clone(),
            name: redrive.dead_letter.as_str().into(),
            redrive: None,
            notify: Arc::new(Notify::new()),
            deletions: Arc::default(),
        })
    }

    /// Up to `max` messages of the queue, oldest first, without receiving them (to inspect a
    /// dead-letter queue), and how many it holds in all.
    pub async fn peek(&self, max: usize) -> Result<(Vec<StoredMessage>, u64), QueueError> {
        let name = self.name.clone();
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.db
            .call(move |conn| {
                let total: i64 = conn.query_row(
                    "SELECT COUNT(*) FROM queue_messages WHERE queue = ?1",
                    params![name],
                    |row| row.get(0),
                )?;
                let mut select = conn.prepare_cached(
                    "SELECT id, body, attributes, sent_at, visible_at, receive_count, seq
                     FROM queue_messages WHERE queue = ?1 ORDER BY seq LIMIT ?2",
                )?;
                let messages = select
                    .query_map(params![name, max], |row| {
                        let attributes: String = row.get(2)?;
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, String>(1)?,
                            attributes,
                            row.get::<_, i64>(3)?,
                            row.get::<_, i64>(4)?,
                            row.get::<_, u32>(5)?,
                            row.get::<_, i64>(6)?,
                        ))
                    })?
                    .map(|row| {
                        let (id, body, attributes, sent_at, moved_at, receive_count, seq) = row?;
                        Ok(StoredMessage {
                            id,
                            body,
                            attributes: decode_attributes(&attributes)?,
                            sent_at,
                            moved_at,
                            receive_count,
                            seq,
                        })
                    })
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok((messages, u64::try_from(total).unwrap_or(0)))
            })
            .await
            .map_err(QueueError::backend)
    }

    /// Up to `max` messages of the queue, newest first (by when they became visible, which for a
    /// dead letter is when it was moved), strictly before `before` when given, without receiving
    /// them; and how many the queue holds in all. Each message's [`StoredMessage::position`]
    /// continues the listing after it.
    pub async fn peek_newest(
        &self,
        before: Option<PeekPosition>,
        max: usize,
    ) -> Result<(Vec<StoredMessage>, u64), QueueError> {
        let name = self.name.clone();
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        // Past every position: the first page.
        let before = before.unwrap_or(PeekPosition {
            moved_at: i64::MAX,
            seq: i64::MAX,
        });
        self.db
            .call(move |conn| {
                let total: i64 = conn.query_row(
                    "SELECT COUNT(*) FROM queue_messages WHERE queue = ?1",
                    params![name],
                    |row| row.get(0),
                )?;
                // `seq` is unique across the queues of a database, so (visible_at, seq) orders
                // the messages of several queues as one list.
                let mut select = conn.prepare_cached(
                    "SELECT id, body, attributes, sent_at, visible_at, receive_count, seq
                     FROM queue_messages
                     WHERE queue = ?1 AND (visible_at, seq) < (?2, ?3)
                     ORDER BY visible_at DESC, seq DESC LIMIT ?4",
                )?;
                let messages = select
                    .query_map(params![name, before.moved_at, before.seq, max], |row| {
                        let attributes: String = row.get(2)?;
                        Ok((
                            StoredMessage {
                                id: row.get(0)?,
                                body: row.get(1)?,
                                attributes: BTreeMap::new(),
                                sent_at: row.get(3)?,
                                moved_at: row.get(4)?,
                                receive_count: row.get(5)?,
                                seq: row.get(6)?,
                            },
                            attributes,
                        ))
                    })?
                    .map(|row| {
                        let (mut message, attributes) = row?;
                        message.attributes = decode_attributes(&attributes)?;
                        Ok(message)
                    })
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok((messages, u64::try_from(total).unwrap_or(0)))
            })
            .await
            .map_err(QueueError::backend)
    }

    /// Moves the message `id` (or, with `None`, every message) of this queue to the queue
    /// `target` in the same database, visible at once, with its receive count reset and its
    /// dead-letter reason dropped: a redrive. Returns how many moved.
    pub async fn move_to(&self, id: Option<String>, target: &str) -> Result<u64, QueueError> {
        let (name, target) = (self.name.clone(), target.to_owned());
        let moved = self
            .db
            .write(move |tx| {
                let now = now_millis();
                let mut select = tx.prepare_cached(
                    "SELECT seq, attributes FROM queue_messages
                     WHERE queue = ?1 AND (?2 IS NULL OR id = ?2)",
                )?;
                let rows = select
                    .query_map(params![name, id], |row| {
                        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let mut update = tx.prepare_cached(
                    "UPDATE queue_messages SET queue = ?1, receipt = NULL, visible_at = ?2,
                     receive_count = 0, attributes = ?3 WHERE seq = ?4",
                )?;
                for (seq, attributes) in &rows {
                    let mut attributes = decode_attributes(attributes)?;
                    attributes.remove(REASON_ATTRIBUTE);
                    update.execute(params![target, now, encode_attributes(&attributes)?, seq])?;
                }
                Ok(rows.len() as u64)
            })
            .await
            .map_err(QueueError::backend)?;
        Ok(moved)
    }

    /// One attempt at receiving, without waiting. Also returns when the next message becomes
    /// visible, so a waiting receiver can sleep exactly that long.
    async fn receive_now(
        &self,
        max: u32,
        visibility: Duration,
    ) -> Result<(Vec<Received>, Option<i64>), QueueError> {
        let name = self.name.clone();
        let redrive = self.redrive.clone();
        let visibility = millis(visibility);
        // Relaxed: if the machine dies before the next fsync, the message is just visible again.
        self.db
            .write_relaxed(move |tx| {
                let now = now_millis();
                let received = take_visible(tx, &name, redrive.as_deref(), max, now, visibility)?;
                let next_visible_at = if received.is_empty() {
                    next_visible_at(tx, &name)?
                } else {
                    None
                };
                Ok((received, next_visible_at))
            })
            .await
            .map_err(QueueError::backend)
    }
}

/// A message as [`SqliteQueue::peek`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: String,
    pub body: String,
    pub attributes: BTreeMap<String, String>,
    /// When it was first sent, Unix ms.
    pub sent_at: i64,
    /// When it becomes (or became) visible, Unix ms: for a dead letter, when it was moved.
    pub moved_at: i64,
    pub receive_count: u32,
    /// Its place in the database, unique across its queues.
    pub seq: i64,
}

impl StoredMessage {
    /// Where a newest-first listing ([`SqliteQueue::peek_newest`]) goes on after this message.
    pub fn position(&self) -> PeekPosition {
        PeekPosition {
            moved_at: self.moved_at,
            seq: self.seq,
        }
    }
}

/// A place in a newest-first listing of messages: when the message became visible, and its
/// `seq`. Passed around as an opaque cursor ([`PeekPosition::encode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeekPosition {
    pub moved_at: i64,
    pub seq: i64,
}

impl PeekPosition {
    /// The cursor text: URL-safe base64 of `<moved_at>.<seq>`.
    pub fn encode(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}.{}", self.moved_at, self.seq))
    }

    /// Parses a cursor made by [`PeekPosition::encode`]; anything else is refused.
    pub fn decode(cursor: &str) -> Result<PeekPosition, CursorError> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| CursorError::BadBase64)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| CursorError::Malformed)?;
        let (moved_at, seq) = text.split_once('.').ok_or(CursorError::Malformed)?;
        let position = PeekPosition {
            moved_at: moved_at.parse().map_err(|_| CursorError::Malformed)?,
            seq: seq.parse().map_err(|_| CursorError::Malformed)?,
        };
        // Only the canonical spelling round-trips, so that a cursor names one position.
        if position.encode() != cursor {
            return Err(CursorError::Malformed);
        }
        Ok(position)
    }
}

/// Why a cursor is not one [`PeekPosition::encode`] made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("{}", self.reason())]
    BadBase64,
    #[error("{}", self.reason())]
    Malformed,
}

impl CursorError {
    /// The reason as the admin API words it, for [`crate::admin::ApiError::InvalidOffset`].
    pub fn reason(self) -> &'static str {
        match self {
            CursorError::BadBase64 => "bad base64 encoding",
            CursorError::Malformed => "malformed cursor",
        }
    }
}

/// Creates the table and its indexes, adding the columns that databases of earlier versions lack.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    let has_group: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('queue_messages')
                        WHERE name = 'message_group')",
        [],
        |row| row.get(0),
    )?;
    if !has_group {
        // Every message already queued joins the messages without a group.
        conn.execute_batch(
            "ALTER TABLE queue_messages ADD COLUMN message_group TEXT NOT NULL DEFAULT ''",
        )?;
    }
    conn.execute_batch(INDEXES)
}

/// A visible message as read for a receive.
struct Candidate {
    seq: i64,
    id: String,
    body: String,
    attributes: String,
    receive_count: u32,
    group: String,
    sent_at: i64,
}

/// The next message a group offers a receive, ordered as the receive serves them: groups with
/// fewer messages in flight first, then the message that became visible first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Offer {
    in_flight: i64,
    visible_at: i64,
    seq: i64,
    /// Index of the group in the receive's list of groups.
    group: usize,
}

/// Receives up to `max` visible messages of queue `name`, hiding them for `visibility` ms, in the
/// fair order of the module's rule. A message that reached the redrive's receive limit moves to
/// the dead-letter queue instead, and the batch is filled up from the messages behind it.
fn take_visible(
    tx: &Connection,
    name: &str,
    redrive: Option<&Redrive>,
    max: u32,
    now: i64,
    visibility: i64,
) -> rusqlite::Result<Vec<Received>> {
    let mut groups = Vec::new();
    let mut offers = BinaryHeap::new();
    let mut heads = tx.prepare_cached(FAIR_HEADS)?;
    let mut rows = heads.query(params![name, now])?;
    while let Some(row) = rows.next()? {
        groups.push(row.get::<_, String>(0)?);
        offers.push(Reverse(Offer {
            seq: row.get(1)?,
            visible_at: row.get(2)?,
            in_flight: row.get(3)?,
            group: groups.len() - 1,
        }));
    }
    drop(rows);

    // The group's visible messages after the one just offered; a message of this receive that
    // is visible again at once (a visibility of zero) may show up again, and is skipped.
    let mut next = tx.prepare_cached(
        "SELECT seq, visible_at FROM queue_messages
         WHERE queue = ?1 AND message_group = ?2 AND visible_at <= ?3
           AND (visible_at, seq) > (?4, ?5)
         ORDER BY visible_at, seq",
    )?;
    let mut read = tx.prepare_cached(
        "SELECT seq, id, body, attributes, receive_count, message_group, sent_at
         FROM queue_messages WHERE seq = ?1",
    )?;
    let mut taken = HashSet::new();
    let mut received = Vec::with_capacity(max as usize);
    while received.len() < max as usize {
        let Some(Reverse(mut offer)) = offers.pop() else {
            break;
        };
        let candidate = read.query_row(params![offer.seq], |row| {
            Ok(Candidate {
                seq: row.get(0)?,
                id: row.get(1)?,
                body: row.get(2)?,
                attributes: row.get(3)?,
                receive_count: row.get(4)?,
                group: row.get(5)?,
                sent_at: row.get(6)?,
            })
        })?;
        taken.insert(offer.seq);
        match redrive.filter(|r| candidate.receive_count >= r.max_receives) {
            Some(redrive) => dead_letter(tx, redrive, &candidate, now)?,
            None => {
                received.push(hide(tx, candidate, now + visibility)?);
                offer.in_flight += 1;
            }
        }
        let mut rest = next.query(params![
            name,
            groups[offer.group],
            now,
            offer.visible_at,
            offer.seq
        ])?;
        while let Some(row) = rest.next()? {
            let seq = row.get(0)?;
            if !taken.contains(&seq) {
                offers.push(Reverse(Offer {
                    seq,
                    visible_at: row.get(1)?,
                    ..offer
                }));
                break;
            }
        }
    }
    Ok(received)
}

/// As SQS does when a receive reaches the limit: the message moves to the dead-letter queue,
/// keeping its id and receive count; unlike SQS it says why, in the one dead-letter format.
fn dead_letter(
    tx: &Connection,
    redrive: &Redrive,
    candidate: &Candidate,
    now: i64,
) -> rusqlite::Result<()> {
    let mut attributes = decode_attributes(&candidate.attributes)?;
    let reason = DeadLetterReason::TooManyReceives {
        limit: redrive.max_receives,
    };
    attributes.insert(REASON_ATTRIBUTE.to_owned(), reason.to_string());
    tx.prepare_cached(
        "UPDATE queue_messages
         SET queue = ?1, receipt = NULL, visible_at = ?2, attributes = ?3
         WHERE seq = ?4",
    )?
    .execute(params![
        redrive.dead_letter,
        now,
        encode_attributes(&attributes)?,
        candidate.seq
    ])?;
    Ok(())
}

/// Receives one message: a new receipt, one more receive, hidden until `visible_at`.
fn hide(tx: &Connection, candidate: Candidate, visible_at: i64) -> rusqlite::Result<Received> {
    let receipt = ordered_id();
    tx.prepare_cached(
        "UPDATE queue_messages
         SET receive_count = receive_count + 1, receipt = ?1, visible_at = ?2
         WHERE seq = ?3",
    )?
    .execute(params![receipt, visible_at, candidate.seq])?;
    Ok(Received {
        id: candidate.id,
        receipt,
        body: candidate.body,
        receive_count: candidate.receive_count + 1,
        sent_at: candidate.sent_at,
        attributes: decode_attributes(&candidate.attributes)?,
        group: (!candidate.group.is_empty()).then_some(candidate.group),
    })
}

/// A new message id or receipt: a UUID that sorts after the ones made before it (version 7), so
/// that the unique indexes on `id` and `receipt` grow at their end. Random ones (version 4) land
/// on a different page of each index for every message sent, received and deleted, and each of
/// those pages is written to the WAL again.
fn ordered_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// When the next message of queue `name` becomes visible, if it has any.
fn next_visible_at(tx: &Connection, name: &str) -> rusqlite::Result<Option<i64>> {
    tx.query_row(
        "SELECT MIN(visible_at) FROM queue_messages WHERE queue = ?1",
        params![name],
        |row| row.get::<_, Option<i64>>(0),
    )
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn send(&self, message: Outgoing) -> Result<String, QueueError> {
        let mut ids = self.send_batch(vec![message]).await?;
        Ok(ids.remove(0))
    }

    async fn send_batch(&self, messages: Vec<Outgoing>) -> Result<Vec<String>, QueueError> {
        for message in &messages {
            check_delay(message.delay)?;
        }
        let name = self.name.clone();
        let ids = self
            .db
            .write(move |tx| {
                let now = now_millis();
                let mut ids = Vec::with_capacity(messages.len());
                for message in messages {
                    let id = ordered_id();
                    insert(
                        tx,
                        &name,
                        &Row {
                            id: &id,
                            body: &message.body,
                            attributes: &encode_attributes(&message.attributes)?,
                            group: message.group.as_deref(),
                            sent_at: now,
                            visible_at: now + millis(message.delay),
                        },
                    )?;
                    ids.push(id);
                }
                Ok(ids)
            })
            .await
            .map_err(QueueError::backend)?;
        // Delayed messages too: a waiting receiver then sleeps until exactly their delay ends.
        self.notify.notify_waiters();
        Ok(ids)
    }

    async fn receive(
        &self,
        max: u32,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        if !(1..=10).contains(&max) {
            return Err(QueueError::backend(format!(
                "can receive 1 to 10 messages at a time, not {max}"
            )));
        }
        let deadline = Instant::now() + wait;
        loop {
            // Registered before looking, so a send between the look and the sleep still wakes us.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let (received, next_visible_at) = self.receive_now(max, visibility).await?;
            let now = Instant::now();
            if !received.is_empty() || now >= deadline {
                return Ok(received);
            }
            let mut nap = (deadline - now).min(POLL_INTERVAL);
            if let Some(at) = next_visible_at {
                let until_visible = u64::try_from(at - now_millis()).unwrap_or(0);
                nap = nap.min(Duration::from_millis(until_visible.max(1)));
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        let (reply, answer) = oneshot::channel();
        let first = {
            let mut pending = self.deletions.lock();
            pending.push((receipt.to_owned(), reply));
            pending.len() == 1
        };
        if first {
            // A task of its own, so that the deletions that joined are answered even if this
            // caller stops waiting.
            tokio::spawn(flush_deletions(
                self.db.clone(),
                self.name.clone(),
                self.deletions.clone(),
            ));
        }
        match answer.await {
            Ok(result) => result.map_err(QueueError::backend),
            // The op panicked, or its commit failed: the deletion may not have happened.
            Err(_) => Err(QueueError::backend("the deletion was not committed")),
        }
    }

    async fn dead_letter(
        &self,
        message: &Received,
        reason: &DeadLetterReason,
    ) -> Result<(), QueueError> {
        let redrive = self.redrive.clone().ok_or(QueueError::NoDeadLetterQueue)?;
        let name = self.name.clone();
        let mut attributes = message.attributes.clone();
        attributes.insert(REASON_ATTRIBUTE.to_owned(), reason.to_string());
        let attributes = serde_json::to_string(&attributes).map_err(QueueError::backend)?;
        let body = message.body.clone();
        let group = message.group.clone();
        let receipt = message.receipt.clone();
        self.db
            .write(move |tx| {
                let now = now_millis();
                // A new message, as the SQS adapter sends one; the copy is kept even if the
                // receipt went stale meanwhile, because losing the message is worse than a
                // duplicate dead letter.
                let id = ordered_id();
                // In its group still, so that a redrive back to the queue keeps it fair.
                let row = Row {
                    id: &id,
                    body: &body,
                    attributes: &attributes,
                    group: group.as_deref(),
                    sent_at: now,
                    visible_at: now,
                };
                insert(tx, &redrive.dead_letter, &row)?;
                tx.execute(
                    "DELETE FROM queue_messages WHERE queue = ?1 AND receipt = ?2",
                    params![&*name, receipt],
                )?;
                Ok(())
            })
            .await
            .map_err(QueueError::backend)
    }
}

/// A deletion's answer: `Err` with what went wrong.
type DeletionReply = oneshot::Sender<Result<(), String>>;

/// Deletions asked for and not yet handed to the writer, shared by clones: they go to it as one
/// op (see [`flush_deletions`]).
#[derive(Default)]
struct Deletions(Mutex<Vec<(String, DeletionReply)>>);

impl Deletions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, DeletionReply)>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Deletes, in one writer op, every deletion waiting when the op runs, and answers each once
/// committed. Started by the deletion that finds none waiting; the ones asked for until the op
/// runs join it. The writer runs each op in a savepoint of its own, which costs about as much as
/// deleting a message: every settled message has one, so they share it.
async fn flush_deletions(db: Database, name: Arc<str>, deletions: Arc<Deletions>) {
    let taken = deletions.clone();
    // Relaxed: a deletion lost with the machine means one more delivery, which at-least-once
    // allows and the delivery id lets receivers drop.
    let done = db
        .write_relaxed(move |conn| {
            let batch = std::mem::take(&mut *taken.lock());
            let mut delete = conn
                .prepare_cached("DELETE FROM queue_messages WHERE queue = ?1 AND receipt = ?2")?;
            // A receipt that is no longer current matches no row: ignored, as in SQS. A failed
            // statement undoes only itself; its caller is told.
            Ok(batch
                .into_iter()
                .map(|(receipt, reply)| {
                    let result = delete
                        .execute(params![&*name, receipt])
                        .map(|_| ())
                        .map_err(|err| err.to_string());
                    (reply, result)
                })
                .collect::<Vec<_>>())
        })
        .await;
    match done {
        Ok(done) => {
            for (reply, result) in done {
                let _ = reply.send(result);
            }
        }
        Err(err) => {
            // The op did not run (the writer stopped) or did not commit: the deletions still
            // waiting get the error; those it took learn it from their dropped reply.
            let waiting = std::mem::take(&mut *deletions.lock());
            for (_, reply) in waiting {
                let _ = reply.send(Err(err.to_string()));
            }
        }
    }
}

/// A new message's row; `attributes` already encoded.
struct Row<'a> {
    id: &'a str,
    body: &'a str,
    attributes: &'a str,
    group: Option<&'a str>,
    sent_at: i64,
    visible_at: i64,
}

fn insert(conn: &Connection, queue: &str, row: &Row<'_>) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO queue_messages
             (queue, id, body, attributes, message_group, sent_at, visible_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        queue,
        row.id,
        row.body,
        row.attributes,
        // No group is the group '' (see `FAIR_HEADS`).
        row.group.unwrap_or_default(),
        row.sent_at,
        row.visible_at
    ])?;
    Ok(())
}

fn decode_attributes(json: &str) -> rusqlite::Result<BTreeMap<String, String>> {
    serde_json::from_str(json).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(err))
    })
}

fn encode_attributes(attributes: &BTreeMap<String, String>) -> rusqlite::Result<String> {
    serde_json::to_string(attributes)
        .map_err(|err| rusqlite::Error::ToSqlConversionFailure(Box::new(err)))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use rusqlite::OptionalExtension;

    use super::*;

    const NO_WAIT: Duration = Duration::ZERO;
    const SHORT: Duration = Duration::from_millis(100);
    /// Longer than any test may take: a receiver that waits this long was never woken.
    const FOREVER: Duration = Duration::from_secs(3600);
    /// How long a test waits for a receiver that should be woken before calling it stuck: only
    /// proves it stopped at all (without the wake-up it would wait an hour), so it may be generous.
    const STUCK: Duration = Duration::from_secs(10);

    /// Whether `receipt` is the current receipt of a message.
    async fn is_current(queue: &SqliteQueue, receipt: &str) -> bool {
        let receipt = receipt.to_owned();
        queue
            .db
            .call(move |conn| {
                conn.query_row(
                    "SELECT 1 FROM queue_messages WHERE receipt = ?1",
                    params![receipt],
                    |_| Ok(()),
                )
                .optional()
            })
            .await
            .unwrap()
            .is_some()
    }

    async fn queue() -> SqliteQueue {
        let db = Database::in_memory().unwrap();
        SqliteQueue::open(db, "events")
            .await
            .unwrap()
            .with_redrive("events-dlq", 2)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_deletions_all_land_and_each_is_answered() {
        // Given 41 received messages
        let queue = queue().await;
        let bodies = (0..41).map(|n| Outgoing::now(n.to_string())).collect();
        queue.send_batch(bodies).await.unwrap();
        let mut received = Vec::new();
        for _ in 0..5 {
            received.extend(queue.receive(10, FOREVER, NO_WAIT).await.unwrap());
        }
        let kept = received.pop().unwrap();
        assert_eq!(received.len(), 40);

        // When 40 of them are deleted at once, through clones, beside receipts that match nothing
        let receipts = received
            .iter()
            .map(|m| m.receipt.clone())
            .chain((0..5).map(|n| format!("no-such-receipt-{n}")));
        let deletions: Vec<_> = receipts
            .map(|receipt| {
                let queue = queue.clone();
                tokio::spawn(async move { queue.delete(&receipt).await })
            })
            .collect();

        // Then every deletion is answered Ok, and only the 41st message is left
        for deletion in deletions {
            deletion.await.unwrap().unwrap();
        }
        let (left, total) = queue.peek(10).await.unwrap();
        assert_eq!(total, 1);
        assert_eq!(left[0].id, kept.id);
        assert!(is_current(&queue, &kept.receipt).await);
    }

    #[tokio::test]
    async fn ids_and_receipts_sort_in_the_order_they_were_made() {
        // Given messages sent one by one, then received one by one
        let queue = queue().await;
        let mut ids = Vec::new();
        for n in 0..20 {
            ids.push(queue.send(Outgoing::now(n.to_string())).await.unwrap());
        }
        let mut receipts = Vec::new();
        for _ in 0..20 {
            receipts.push(
                queue.receive(1, FOREVER, NO_WAIT).await.unwrap()[0]
                    .receipt
                    .clone(),
            );
        }

        // Then each id and receipt sorts after the ones before it, so that their indexes grow
        // at their end rather than on a random page
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
        assert!(
            receipts.windows(2).all(|pair| pair[0] < pair[1]),
            "{receipts:?}"
        );
    }

    #[tokio::test]
    async fn a_message_whose_visibility_expires_comes_back_with_a_new_receipt() {
        // Given a message received with a short visibility timeout
        let queue = queue().await;
        let id = queue.send(Outgoing::now("a")).await.unwrap();
        let first = queue.receive(1, SHORT, NO_WAIT).await.unwrap().remove(0);
        assert!(queue.receive(1, SHORT, NO_WAIT).await.unwrap().is_empty());

        // When the timeout passes
        let again = queue
            .receive(1, SHORT, Duration::from_secs(2))
            .await
            .unwrap();

        // Then it is handed out again, counted, with a new receipt; the old one is stale
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].id, id);
        assert_eq!(again[0].receive_count, 2);
        assert_ne!(again[0].receipt, first.receipt);
        assert!(!is_current(&queue, &first.receipt).await);
        queue.delete(&first.receipt).await.unwrap();
        assert!(is_current(&queue, &again[0].receipt).await);
    }

    #[tokio::test]
    async fn a_message_received_max_receives_times_moves_to_the_dead_letter_queue() {
        // Given a message already received as often as the redrive policy allows
        let queue = queue().await;
        let id = queue.send(Outgoing::now("poison")).await.unwrap();
        for count in 1..=2 {
            let got = queue.receive(1, Duration::ZERO, NO_WAIT).await.unwrap();
            assert_eq!(got[0].receive_count, count);
        }

        // When it would be received once more
        let got = queue.receive(1, Duration::ZERO, NO_WAIT).await.unwrap();

        // Then it is not handed out but found in the dead-letter queue, same id, count going on
        assert!(got.is_empty());
        let dlq = queue.dead_letter_queue().unwrap();
        let dead = dlq.receive(10, SHORT, NO_WAIT).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].id.as_str(), dead[0].body.as_str()),
            (id.as_str(), "poison")
        );
        assert_eq!(dead[0].receive_count, 3);
        assert_eq!(
            dead[0].attributes.get(REASON_ATTRIBUTE).map(String::as_str),
            Some("received more than 2 times without being handled (the queue's limit)")
        );
    }

    #[tokio::test]
    async fn dead_letters_can_be_peeked_and_moved_back_one_or_all() {
        // Given two messages dead-lettered with their reason: one moved by the redrive policy
        // (its receive count kept), one by the consumer
        let queue = queue().await;
        let dlq = queue.dead_letter_queue().unwrap();
        queue.send(Outgoing::now("a")).await.unwrap();
        for _ in 0..3 {
            queue.receive(1, Duration::ZERO, NO_WAIT).await.unwrap();
        }
        let reason = DeadLetterReason::TooManyReceives { limit: 2 };
        queue.send(Outgoing::now("b")).await.unwrap();
        let got = queue.receive(1, SHORT, NO_WAIT).await.unwrap();
        queue
            .dead_letter(
                &got[0],
                &DeadLetterReason::Failed("target answered 410 Gone".into()),
            )
            .await
            .unwrap();

        // When the dead-letter queue is peeked, then both show, oldest first, with the reason,
        // and peeking received nothing
        let (peeked, total) = dlq.peek(1).await.unwrap();
        assert_eq!(total, 2);
        assert_eq!(peeked.len(), 1);
        assert_eq!(peeked[0].body, "a");
        assert_eq!(
            peeked[0]
                .attributes
                .get(REASON_ATTRIBUTE)
                .map(String::as_str),
            Some(reason.to_string().as_str())
        );
        assert_eq!(dlq.peek(10).await.unwrap().0.len(), 2);

        // When one is moved back by id, then it is on the queue again, fresh, without a reason
        assert_eq!(
            dlq.move_to(Some(peeked[0].id.clone()), queue.name())
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            dlq.move_to(Some("unknown".into()), queue.name())
                .await
                .unwrap(),
            0
        );
        let back = queue.receive(10, SHORT, NO_WAIT).await.unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].body.as_str(), back[0].receive_count), ("a", 1));
        assert!(!back[0].attributes.contains_key(REASON_ATTRIBUTE));

        // When the rest are moved back, then the dead-letter queue is empty
        assert_eq!(dlq.move_to(None, queue.name()).await.unwrap(), 1);
        assert_eq!(dlq.peek(10).await.unwrap(), (vec![], 0));
        assert_eq!(
            queue.receive(10, SHORT, NO_WAIT).await.unwrap()[0].body,
            "b"
        );
    }

    #[test]
    fn peek_cursors_round_trip_and_refuse_anything_else() {
        let position = PeekPosition {
            moved_at: 1_700_000_000_123,
            seq: 42,
        };
        assert_eq!(PeekPosition::decode(&position.encode()), Ok(position));
        assert_eq!(PeekPosition::decode("nope!"), Err(CursorError::BadBase64));
        // Base64 of "1.2.3" and of "a.1": decodable, but no position.
        assert_eq!(PeekPosition::decode("MS4yLjM"), Err(CursorError::Malformed));
        assert_eq!(PeekPosition::decode("YS4x"), Err(CursorError::Malformed));
    }

    #[tokio::test]
    async fn messages_are_handed_out_oldest_first() {
        // Given messages sent one by one and in a batch
        let queue = queue().await;
        queue.send(Outgoing::now("0")).await.unwrap();
        let bodies: Vec<_> = (1..12).map(|n| Outgoing::now(n.to_string())).collect();
        queue.send_batch(bodies).await.unwrap();

        // When they are received in two rounds
        let mut got = queue.receive(10, SHORT, NO_WAIT).await.unwrap();
        got.extend(queue.receive(10, SHORT, NO_WAIT).await.unwrap());

        // Then they come in sending order
        let got: Vec<_> = got.iter().map(|m| m.body.as_str()).collect();
        let expected: Vec<_> = (0..12).map(|n| n.to_string()).collect();
        assert_eq!(got, expected);
    }

    /// Sends `count` messages of `group`, named `<group>-<n>`.
    async fn send_group(queue: &SqliteQueue, group: &str, count: usize) {
        let messages = (0..count)
            .map(|n| Outgoing::now(format!("{group}-{n}")).in_group(group))
            .collect();
        queue.send_batch(messages).await.unwrap();
    }

    #[tokio::test]
    async fn a_receive_takes_turns_between_groups_with_nothing_in_flight() {
        // Given two groups with nothing in flight, the older holding several messages
        let queue = queue().await;
        send_group(&queue, "a", 5).await;
        send_group(&queue, "b", 5).await;

        // When one receive takes four
        let got = queue.receive(4, FOREVER, NO_WAIT).await.unwrap();

        // Then each message handed out counts as in flight at once: the groups take turns
        let bodies: Vec<_> = got.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["a-0", "b-0", "a-1", "b-1"]);
        assert_eq!(got[1].group.as_deref(), Some("b"));
    }

    #[tokio::test]
    async fn messages_that_came_back_no_longer_count_as_in_flight() {
        // Given a group whose received messages became visible again (their visibility ended),
        // and a group with one message in flight and one visible since before that
        let queue = queue().await;
        send_group(&queue, "timed-out", 3).await;
        queue.receive(3, SHORT, NO_WAIT).await.unwrap();
        send_group(&queue, "busy", 2).await;
        assert_eq!(
            queue.receive(1, FOREVER, NO_WAIT).await.unwrap()[0].body,
            "busy-0"
        );
        tokio::time::sleep(SHORT * 2).await;

        // When one message is received
        let got = queue.receive(1, FOREVER, NO_WAIT).await.unwrap();

        // Then it is the first group's, visible for a shorter time: it has none in flight
        assert_eq!(got[0].body, "timed-out-0");
        assert_eq!(got[0].receive_count, 2);
    }

    #[tokio::test]
    async fn a_dead_lettered_message_keeps_its_group() {
        // Given a received message of a group
        let queue = queue().await;
        send_group(&queue, "hook-1", 1).await;
        let got = queue.receive(1, FOREVER, NO_WAIT).await.unwrap();

        // When the consumer dead-letters it, and it is moved back
        let dlq = queue.dead_letter_queue().unwrap();
        queue
            .dead_letter(&got[0], &DeadLetterReason::HookDeleted)
            .await
            .unwrap();
        dlq.move_to(None, queue.name()).await.unwrap();

        // Then it is still in its group
        let back = queue.receive(1, FOREVER, NO_WAIT).await.unwrap();
        assert_eq!(back[0].group.as_deref(), Some("hook-1"));
    }

    #[tokio::test]
    async fn a_database_of_an_earlier_version_gains_groups() {
        // Given a queue table as earlier versions created it, without groups, holding a message
        let db = Database::in_memory().unwrap();
        db.call(|conn| {
            conn.execute_batch(
                "CREATE TABLE queue_messages (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL,
                    id TEXT NOT NULL UNIQUE, body TEXT NOT NULL, attributes TEXT NOT NULL,
                    sent_at INTEGER NOT NULL, visible_at INTEGER NOT NULL,
                    receive_count INTEGER NOT NULL DEFAULT 0, receipt TEXT UNIQUE);
                 CREATE INDEX queue_messages_ready ON queue_messages (queue, visible_at, seq);
                 INSERT INTO queue_messages (queue, id, body, attributes, sent_at, visible_at)
                 VALUES ('events', 'old', 'queued before', '{}', 0, 0);",
            )
        })
        .await
        .unwrap();

        // When it is opened, and a message of a group is sent
        let queue = SqliteQueue::open(db.clone(), "events").await.unwrap();
        SqliteQueue::open(db, "events").await.unwrap();
        queue
            .send(Outgoing::now("sent after").in_group("hook-1"))
            .await
            .unwrap();

        // Then the old message has no group, the new one has its own
        let got = queue.receive(10, FOREVER, NO_WAIT).await.unwrap();
        let got: Vec<_> = got
            .iter()
            .map(|m| (m.body.as_str(), m.group.as_deref()))
            .collect();
        assert_eq!(
            got,
            [("queued before", None), ("sent after", Some("hook-1"))]
        );
    }

    #[tokio::test]
    async fn a_fair_receive_reads_the_indexes_not_the_table() {
        // Given the receive's queries
        let db = Database::in_memory().unwrap();
        SqliteQueue::open(db.clone(), "events").await.unwrap();

        // When SQLite plans them
        let plan = db
            .call(|conn| {
                let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {FAIR_HEADS}"))?;
                let rows =
                    explain.query_map(params!["events", 0], |row| row.get::<_, String>(3))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await
            .unwrap();

        // Then no step scans the table or sorts: every step seeks in an index, and only the
        // head of each group is read from the table
        let plan = plan.join("\n");
        assert!(!plan.contains("SCAN queue_messages"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        assert!(
            plan.contains("COVERING INDEX queue_messages_groups"),
            "{plan}"
        );
        assert!(
            plan.contains("COVERING INDEX queue_messages_in_flight"),
            "{plan}"
        );
    }

    /// Times one receive in the case fairness is for: a group with a large backlog and many
    /// messages in flight, and a quiet group. Run it with
    /// `cargo test -p event-hooks --lib queue::sqlite -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore = "a measurement, not a check"]
    async fn time_a_receive_beside_a_large_backlog() {
        let path = std::env::temp_dir().join(format!("queue-{}.sqlite", uuid::Uuid::new_v4()));
        let queue = SqliteQueue::open(Database::open(&path).unwrap(), "deliveries")
            .await
            .unwrap();
        for _ in 0..11 {
            send_group(&queue, "noisy", 1000).await;
        }
        for _ in 0..100 {
            queue.receive(10, FOREVER, NO_WAIT).await.unwrap();
        }
        for (label, quiet) in [
            ("noisy only", 0),
            ("and 1 quiet", 1),
            ("and 1000 quiet", 1000),
        ] {
            for n in 0..quiet {
                let message = Outgoing::now("quiet").in_group(format!("quiet-{n}"));
                queue.send(message).await.unwrap();
            }
            // A visibility of zero leaves the queue as it was, so every round measures the same.
            let rounds = 200u32;
            let started = Instant::now();
            for _ in 0..rounds {
                queue.receive(1, Duration::ZERO, NO_WAIT).await.unwrap();
            }
            let each = started.elapsed() / rounds;
            println!("receive 1 of 10k visible + 1000 in flight of one group, {label}: {each:?}");
        }
        drop(queue);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    #[tokio::test]
    async fn a_send_wakes_a_receiver_waiting_on_a_clone() {
        // Given a receiver waiting on one clone of the queue
        let queue = queue().await;
        let sender = queue.clone();

        // When another clone sends a message while it waits
        let receive = tokio::time::timeout(STUCK, queue.receive(1, SHORT, FOREVER));
        let (got, _) = tokio::join!(receive, async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            sender.send(Outgoing::now("ping")).await.unwrap();
        });

        // Then the receiver gets it: woken, since polling would take an hour (POLL_INTERVAL)
        let got = got.expect("the receiver was not woken by the send");
        assert_eq!(got.unwrap()[0].body, "ping");
    }

    #[tokio::test]
    async fn a_delayed_message_is_received_as_soon_as_its_delay_ends() {
        // Given a message delayed by less than the poll interval
        let queue = queue().await;
        let delay = Duration::from_millis(50);
        let started = Instant::now();
        queue.send(Outgoing::delayed("later", delay)).await.unwrap();
        assert!(queue.receive(1, SHORT, NO_WAIT).await.unwrap().is_empty());

        // When a receiver waits for it
        let got = tokio::time::timeout(STUCK, queue.receive(1, SHORT, FOREVER))
            .await
            .expect("the receiver did not wake up when the delay ended")
            .unwrap();

        // Then it arrives once the delay has passed, not a poll interval (an hour) later
        assert_eq!(got[0].body, "later");
        assert!(started.elapsed() >= delay);
    }

    #[tokio::test]
    async fn messages_survive_reopening_the_file() {
        // Given a message sent to a queue in a file
        let path = std::env::temp_dir().join(format!("queue-{}.sqlite", uuid::Uuid::new_v4()));
        let db = Database::open(&path).unwrap();
        let queue = SqliteQueue::open(db, "events").await.unwrap();
        queue.send(Outgoing::now("kept")).await.unwrap();
        drop(queue);

        // When the file is opened again
        let reopened = SqliteQueue::open(Database::open(&path).unwrap(), "events")
            .await
            .unwrap();

        // Then the message is still there
        let got = reopened.receive(1, SHORT, NO_WAIT).await.unwrap();
        assert_eq!(got[0].body, "kept");
        drop(reopened);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    #[tokio::test]
    async fn queues_in_one_database_are_separate() {
        // Given two queues in one database
        let events = queue().await;
        let other = SqliteQueue::open(events.db.clone(), "other").await.unwrap();

        // When a message is sent to one
        events.send(Outgoing::now("mine")).await.unwrap();

        // Then the other does not see it
        assert!(other.receive(10, SHORT, NO_WAIT).await.unwrap().is_empty());
        assert_eq!(events.receive(10, SHORT, NO_WAIT).await.unwrap().len(), 1);
    }
}
