//! The event hub: every event this peer applied, kept for a while and fanned
//! out to subscribers.
//!
//! The state machine publishes each log entry's events (see
//! `crate::state::events`) as it applies them. The hub numbers them
//! `(index, seq)`, the entry's log index and the event's place among that
//! entry's events, encodes each once into its wire bytes, and keeps the last
//! [`KEPT`] in a ring. A subscriber is a cursor into the ring: it wakes when
//! the head moves, copies the bytes of the events it wants into one batch,
//! and sends it. Publishing never waits for a subscriber, and the cost of an
//! event is one encoding however many follow it.
//!
//! A subscriber can resume exactly where it left off by asking from the
//! cursor after its last event. The hub refuses a start it cannot serve
//! without a gap: events older than the ring, or from before this peer
//! started from (or installed) a snapshot, are not here any more; the
//! refusal names the oldest index it has, and so is a start by time when
//! events after it were dropped. A subscriber the dropping of old events
//! gains on between two of its reads, once fewer than a quarter of the
//! ring's events are between them, is too slow: it is ended, naming where
//! to resume while that is still kept. Every batch carries the cursor to
//! resume from, so a subscriber whose filter lets nothing through still
//! knows where it is (it is told at least every [`TELL_CURSOR_EVERY`]).

use crate::raft::stats::Labels;
use crate::state::events::{Event, Kind, Topic};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prost::Message;
use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// How many events a peer keeps by default.
pub const KEPT: usize = 50_000;
/// The most a batch sent to a subscriber holds, in bytes of events.
const BATCH_BYTES: usize = 256 * 1024;
/// How often a subscriber whose filter skips what is published is told
/// where it is.
pub const TELL_CURSOR_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Start {
    /// At the first event at or after this cursor (index, seq).
    At(u64, u32),
    /// At the first event at or after this time (ms since the epoch).
    Since(i64),
    /// At the oldest event kept.
    Oldest,
    /// At the next event published.
    Next,
    /// At the last this many events kept (before the filter: a page's
    /// recent history, however old the ring is).
    Last(usize),
}

/// Which events a subscriber wants.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only these topics (empty: all).
    pub topics: Vec<Topic>,
    /// Only this job's events.
    pub job: Option<String>,
    /// Only events of jobs named so (an ACL token fenced to some jobs);
    /// events of no job (nodes, the cluster) then not at all.
    pub job_prefix: Option<String>,
}

impl Filter {
    fn wants(&self, e: &Stored) -> bool {
        (self.topics.is_empty() || self.topics.contains(&e.topic))
            && self.job.as_ref().is_none_or(|j| *j == e.job)
            && self
                .job_prefix
                .as_ref()
                .is_none_or(|p| !e.job.is_empty() && e.job.starts_with(p.as_str()))
    }
}

/// Why a subscription cannot go on (or start).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Gone {
    #[error(
        "events from index {from} on are no longer kept by this peer (it keeps the last {kept} events, and none from before it last started from a snapshot): the oldest it has is index {oldest}; resume from there, or ask another peer"
    )]
    NotKept { from: u64, oldest: u64, kept: usize },
    #[error(
        "too slow: this stream fell {behind} events behind while older events were being dropped; resume from {}", resume_words(*.resume)
    )]
    TooSlow { behind: u64, resume: (u64, u32) },
}

/// Where to resume, as `drover events --since` takes it.
fn resume_words((index, seq): (u64, u32)) -> String {
    if seq == 0 {
        format!("index {index}")
    } else {
        format!("{index}.{seq} (index {index}, its events from the {seq}th)")
    }
}

/// An event as kept: its cursor, what filters look at, and its encoding as
/// field 1 of an `EventBatch`.
#[derive(Debug)]
pub struct Stored {
    pub index: u64,
    pub seq: u32,
    pub at_ms: i64,
    pub topic: Topic,
    pub job: String,
    pub record: Vec<u8>,
}

impl Stored {
    fn cursor(&self) -> (u64, u32) {
        (self.index, self.seq)
    }
}

#[derive(Debug)]
struct Ring {
    events: VecDeque<Arc<Stored>>,
    /// The position (count of events ever published here) of `events[0]`.
    first: u64,
    /// Every event at or after this cursor is kept (or yet to come).
    complete_from: (u64, u32),
    /// Whether events have been dropped for room since the hub started.
    dropping: bool,
    /// The time of the newest event dropped for room.
    dropped_at_ms: Option<i64>,
}

impl Ring {
    fn head(&self) -> u64 {
        self.first + self.events.len() as u64
    }

    /// The oldest index a subscriber can start from.
    fn oldest(&self) -> u64 {
        self.events
            .front()
            .map_or(self.complete_from.0, |e| e.index)
    }

    /// The position of the first event at or after `cursor`.
    fn position_of(&self, cursor: (u64, u32)) -> u64 {
        self.first + self.events.partition_point(|e| e.cursor() < cursor) as u64
    }
}

/// The events this peer applied, for its subscribers.
#[derive(Debug)]
pub struct EventHub {
    ring: RwLock<Ring>,
    /// The ring's head position; moves with every publish.
    head: watch::Sender<u64>,
    capacity: usize,
    /// Events published, by type (see `crate::raft::stats`).
    counted: Family<Labels, Counter>,
    /// The counter of each type, found once.
    counters: std::sync::Mutex<std::collections::HashMap<Kind, Counter>>,
    /// Subscriptions open now.
    subscribers: Arc<std::sync::atomic::AtomicI64>,
}

impl EventHub {
    /// A hub that keeps the last `capacity` events.
    pub fn new(capacity: usize) -> Arc<EventHub> {
        Arc::new(EventHub {
            ring: RwLock::new(Ring {
                events: VecDeque::new(),
                first: 0,
                complete_from: (0, 0),
                dropping: false,
                dropped_at_ms: None,
            }),
            head: watch::channel(0).0,
            capacity: capacity.max(2),
            counted: Family::default(),
            counters: Default::default(),
            subscribers: Arc::default(),
        })
    }

    /// Counts what is published into `family`, by type. Before it is
    /// shared.
    pub fn counting(mut self: Arc<Self>, family: Family<Labels, Counter>) -> Arc<Self> {
        if let Some(hub) = Arc::get_mut(&mut self) {
            hub.counted = family;
        }
        self
    }

    /// How many subscriptions are open.
    pub fn subscribers(&self) -> i64 {
        self.subscribers.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self, kind: Kind) {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters
            .entry(kind)
            .or_insert_with(|| {
                let word = crate::server::convert::event_word(kind);
                self.counted
                    .get_or_create(&vec![("type".to_string(), word)])
                    .clone()
            })
            .inc();
    }

    // A panic while holding it left at worst a half-trimmed ring.
    fn ring(&self) -> std::sync::RwLockReadGuard<'_, Ring> {
        self.ring.read().unwrap_or_else(|p| p.into_inner())
    }

    fn ring_mut(&self) -> std::sync::RwLockWriteGuard<'_, Ring> {
        self.ring.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps and announces the events log entry `index` made. Events with
    /// no time of their own are dated `now_ms`.
    pub fn publish(&self, index: u64, events: Vec<Event>, now_ms: i64) {
        if events.is_empty() {
            return;
        }
        let stored: Vec<Arc<Stored>> = events
            .into_iter()
            .enumerate()
            .map(|(seq, mut e)| {
                if e.at_ms == 0 {
                    e.at_ms = now_ms;
                }
                self.count(e.kind);
                let (at_ms, topic, job) = (e.at_ms, e.kind.topic(), e.job.clone());
                let wire = crate::server::convert::event(index, seq as u32, e);
                let mut record = Vec::with_capacity(wire.encoded_len() + 4);
                prost::encoding::message::encode(1, &wire, &mut record);
                Arc::new(Stored {
                    index,
                    seq: seq as u32,
                    at_ms,
                    topic,
                    job,
                    record,
                })
            })
            .collect();
        let head = {
            let mut ring = self.ring_mut();
            ring.events.extend(stored);
            while ring.events.len() > self.capacity {
                if let Some(old) = ring.events.pop_front() {
                    ring.first += 1;
                    ring.complete_from = (old.index, old.seq + 1);
                    ring.dropping = true;
                    ring.dropped_at_ms = Some(old.at_ms);
                }
            }
            ring.head()
        };
        self.head.send_replace(head);
    }

    /// This peer did not see the events of entries before `index` (it
    /// started from, or installed, a snapshot that holds them): nothing
    /// older is served, and subscribers still reading older ones end.
    pub fn starts_at(&self, index: u64) {
        let head = {
            let mut ring = self.ring_mut();
            let first = ring.head();
            ring.events.clear();
            ring.first = first;
            ring.complete_from = ring.complete_from.max((index, 0));
            // What is dropped from now on is dropped for room.
            ring.dropping = false;
            first
        };
        self.head.send_replace(head);
    }

    /// A subscription from `start` to the events `filter` lets through.
    pub fn subscribe(self: &Arc<Self>, start: Start, filter: Filter) -> Result<Subscription, Gone> {
        let ring = self.ring();
        let (pos, next) = match start {
            Start::At(index, seq) => {
                if (index, seq) < ring.complete_from {
                    return Err(Gone::NotKept {
                        from: index,
                        oldest: ring.oldest(),
                        kept: self.capacity,
                    });
                }
                (ring.position_of((index, seq)), (index, seq))
            }
            Start::Since(ms) => {
                // Events after that time were dropped: not all are here.
                if ring.dropped_at_ms.is_some_and(|t| t >= ms) {
                    return Err(Gone::NotKept {
                        from: ring.complete_from.0,
                        oldest: ring.oldest(),
                        kept: self.capacity,
                    });
                }
                let offset = ring
                    .events
                    .iter()
                    .position(|e| e.at_ms >= ms)
                    .unwrap_or(ring.events.len());
                let pos = ring.first + offset as u64;
                let next = ring
                    .events
                    .get(offset)
                    .map_or(ring.complete_from, |e| e.cursor());
                (pos, next)
            }
            Start::Oldest => (
                ring.first,
                ring.events
                    .front()
                    .map_or(ring.complete_from, |e| e.cursor()),
            ),
            Start::Last(n) => {
                let offset = ring.events.len().saturating_sub(n);
                let next = match (ring.events.get(offset), ring.events.back()) {
                    (Some(e), _) => e.cursor(),
                    // None of them: from the next one, as `Next`.
                    (None, Some(last)) => (last.index, last.seq + 1),
                    (None, None) => ring.complete_from,
                };
                (ring.first + offset as u64, next)
            }
            Start::Next => (
                ring.head(),
                ring.events
                    .back()
                    .map_or(ring.complete_from, |e| (e.index, e.seq + 1)),
            ),
        };
        let gap = pos.saturating_sub(ring.first);
        drop(ring);
        self.subscribers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Subscription {
            hub: self.clone(),
            head: self.head.subscribe(),
            pos,
            next,
            from: next,
            filter,
            gap,
            told: None,
        })
    }
}

/// One subscriber's place in the hub.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<EventHub>,
    head: watch::Receiver<u64>,
    /// The position of the next event to look at.
    pos: u64,
    /// The cursor to resume from if this subscription ends now.
    next: (u64, u32),
    /// Where it asked to start: events before it are skipped (a cursor
    /// ahead of what this peer applied yet).
    from: (u64, u32),
    filter: Filter,
    /// When the subscriber was last told where it is (`None`: never).
    told: Option<std::time::Instant>,
    /// How many kept events were older than its position when it last
    /// looked: the room left before dropping reaches it.
    gap: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub
            .subscribers
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Events for one send: how many, and their bytes as an `EventBatch`
/// (the events, then the cursor to resume from).
#[derive(Debug, Default)]
pub struct Batch {
    pub count: usize,
    pub bytes: Vec<u8>,
    /// Resume from here: after everything this batch looked at.
    pub next: (u64, u32),
}

impl Subscription {
    /// The events available now from where this subscription is (up to a
    /// batch's worth). `None` when there is nothing to send: nothing new,
    /// or nothing it wants and it was told where it is lately. A batch may
    /// hold no event, only the cursor (always the first one).
    pub fn poll(&mut self) -> Result<Option<Batch>, Gone> {
        let ring = self.hub.ring();
        // Behind what this peer holds: dropped for room, or skipped when
        // it installed a snapshot.
        if self.pos < ring.first || self.next < ring.complete_from {
            return Err(Gone::NotKept {
                from: self.next.0,
                oldest: ring.oldest(),
                kept: self.hub.capacity,
            });
        }
        // Losing ground: fewer kept events older than its position than at
        // its last read, and few of them left.
        let gap = self.pos - ring.first;
        if ring.dropping && gap < (self.hub.capacity / 4) as u64 && gap < self.gap {
            return Err(Gone::TooSlow {
                behind: ring.head() - self.pos,
                resume: self.next,
            });
        }
        self.gap = gap;
        let mut batch = Batch::default();
        let mut looked = false;
        let start = (self.pos - ring.first) as usize;
        for e in ring.events.range(start..) {
            if batch.bytes.len() >= BATCH_BYTES {
                break;
            }
            self.pos += 1;
            looked = true;
            if e.cursor() < self.from {
                continue;
            }
            self.next = (e.index, e.seq + 1);
            if self.filter.wants(e) {
                batch.bytes.extend_from_slice(&e.record);
                batch.count += 1;
            }
        }
        drop(ring);
        let tell = match self.told {
            None => true,
            Some(t) => looked && t.elapsed() >= TELL_CURSOR_EVERY,
        };
        if batch.count == 0 && !tell {
            return Ok(None);
        }
        self.told = Some(std::time::Instant::now());
        batch.next = self.next;
        prost::encoding::uint64::encode(2, &self.next.0, &mut batch.bytes);
        prost::encoding::uint32::encode(3, &self.next.1, &mut batch.bytes);
        Ok(Some(batch))
    }

    /// Waits until events after what this subscription has seen are
    /// published (or the hub is gone).
    pub async fn changed(&mut self) -> bool {
        loop {
            if *self.head.borrow_and_update() > self.pos {
                return true;
            }
            if self.head.changed().await.is_err() {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_proto::pb;

    fn ev(kind: Kind, job: &str) -> Event {
        Event::new(kind, 0, format!("{kind:?}")).job(job, 1)
    }

    fn read(batch: Batch) -> Vec<pb::Event> {
        let b = pb::EventBatch::decode(batch.bytes.as_slice()).unwrap();
        assert_eq!(b.events.len(), batch.count);
        assert_eq!((b.next_index, b.next_seq), batch.next);
        b.events
    }

    /// Every event available now (and no batch without events after the
    /// first, which says where the subscriber starts).
    fn drain(s: &mut Subscription) -> Vec<pb::Event> {
        let mut all = Vec::new();
        while let Some(b) = s.poll().unwrap() {
            let events = read(b);
            if events.is_empty() {
                continue;
            }
            all.extend(events);
        }
        all
    }

    #[test]
    fn a_subscriber_resumes_after_its_last_event_with_no_gap_and_no_repeat() {
        let hub = EventHub::new(100);
        hub.publish(
            5,
            vec![ev(Kind::JobSubmitted, "a"), ev(Kind::RolloutStarted, "a")],
            1000,
        );
        hub.publish(6, vec![ev(Kind::AllocPlaced, "a")], 1001);
        let mut s = hub.subscribe(Start::Oldest, Filter::default()).unwrap();
        let first = read(s.poll().unwrap().unwrap());
        let cursors: Vec<(u64, u32)> = first.iter().map(|e| (e.index, e.seq)).collect();
        assert_eq!(cursors, vec![(5, 0), (5, 1), (6, 0)]);
        assert_eq!(
            first[0].at_ms, 1000,
            "an event without a time is dated when applied"
        );
        assert_eq!(first[0].r#type(), pb::EventType::JobSubmitted);
        // Disconnected after (5, 0): resuming from (5, 1) gives the rest once.
        let mut again = hub.subscribe(Start::At(5, 1), Filter::default()).unwrap();
        let rest: Vec<(u64, u32)> = drain(&mut again).iter().map(|e| (e.index, e.seq)).collect();
        assert_eq!(rest, vec![(5, 1), (6, 0)]);
        // New events reach both, each once.
        hub.publish(9, vec![ev(Kind::AllocStarted, "a")], 1002);
        assert_eq!(drain(&mut s).len(), 1);
        assert_eq!(drain(&mut again).len(), 1);
        assert!(s.poll().unwrap().is_none());
    }

    #[test]
    fn last_n_starts_that_many_events_back_and_then_follows() {
        let hub = EventHub::new(100);
        for i in 1..=10 {
            hub.publish(i, vec![ev(Kind::AllocPlaced, "a")], i as i64);
        }
        let mut s = hub.subscribe(Start::Last(3), Filter::default()).unwrap();
        let got: Vec<u64> = drain(&mut s).iter().map(|e| e.index).collect();
        assert_eq!(got, vec![8, 9, 10]);
        hub.publish(11, vec![ev(Kind::AllocStarted, "a")], 11);
        assert_eq!(drain(&mut s).len(), 1);
        // More than are kept: all of them.
        let mut all = hub.subscribe(Start::Last(1000), Filter::default()).unwrap();
        assert_eq!(drain(&mut all).len(), 11);
        // None, on a full ring that drops one for the next: just that one.
        let full = EventHub::new(2);
        for i in 1..=3 {
            full.publish(i, vec![ev(Kind::AllocPlaced, "a")], i as i64);
        }
        let mut none = full.subscribe(Start::Last(0), Filter::default()).unwrap();
        assert!(drain(&mut none).is_empty());
        full.publish(4, vec![ev(Kind::AllocStarted, "a")], 4);
        let got: Vec<u64> = drain(&mut none).iter().map(|e| e.index).collect();
        assert_eq!(got, vec![4]);
    }

    #[test]
    fn filters_pick_topics_and_a_job() {
        let hub = EventHub::new(100);
        hub.publish(
            1,
            vec![
                ev(Kind::JobSubmitted, "a"),
                ev(Kind::AllocPlaced, "a"),
                ev(Kind::AllocPlaced, "b"),
                Event::new(Kind::NodeDown, 5, "down".into()).node("n1"),
            ],
            1,
        );
        let only = |topics: Vec<Topic>, job: Option<&str>| {
            let filter = Filter {
                topics,
                job: job.map(str::to_string),
                ..Filter::default()
            };
            let mut s = hub.subscribe(Start::Oldest, filter).unwrap();
            drain(&mut s)
                .into_iter()
                .map(|e| (e.r#type(), e.job))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            only(vec![Topic::Alloc], Some("b")),
            vec![(pb::EventType::AllocPlaced, "b".to_string())]
        );
        assert_eq!(only(vec![Topic::Node], None).len(), 1);
        assert_eq!(only(vec![], Some("a")).len(), 2);
        assert_eq!(only(vec![Topic::Job, Topic::Node], None).len(), 2);
    }

    #[test]
    fn a_start_older_than_what_is_kept_is_refused_naming_the_oldest() {
        let hub = EventHub::new(4);
        for i in 1..=6 {
            hub.publish(i, vec![ev(Kind::AllocStarted, "a")], 1);
        }
        // Indexes 3..=6 are kept.
        let e = hub
            .subscribe(Start::At(2, 0), Filter::default())
            .unwrap_err();
        assert_eq!(
            e,
            Gone::NotKept {
                from: 2,
                oldest: 3,
                kept: 4
            }
        );
        assert!(
            e.to_string().contains("the oldest it has is index 3"),
            "{e}"
        );
        let mut s = hub.subscribe(Start::At(3, 0), Filter::default()).unwrap();
        assert_eq!(drain(&mut s).len(), 4);
        // After a snapshot at 20 the hub has nothing before 21.
        hub.starts_at(21);
        let e = hub
            .subscribe(Start::At(7, 0), Filter::default())
            .unwrap_err();
        assert!(matches!(e, Gone::NotKept { oldest: 21, .. }), "{e:?}");
        let mut s = hub.subscribe(Start::At(21, 0), Filter::default()).unwrap();
        hub.publish(21, vec![ev(Kind::AllocStarted, "a")], 1);
        assert_eq!(drain(&mut s).len(), 1);
    }

    #[test]
    fn a_subscriber_the_dropping_gains_on_is_ended_with_where_to_resume() {
        let hub = EventHub::new(16);
        for i in 1..=16 {
            hub.publish(i, vec![ev(Kind::AllocStarted, "a")], 1);
        }
        let mut slow = hub.subscribe(Start::At(4, 0), Filter::default()).unwrap();
        let mut keeping_up = hub.subscribe(Start::Next, Filter::default()).unwrap();
        // It reads all there is (3 kept events older than it when it did).
        assert_eq!(drain(&mut slow).len(), 13);
        for i in 17..=30 {
            hub.publish(i, vec![ev(Kind::AllocStarted, "a")], 1);
            assert_eq!(drain(&mut keeping_up).len(), 1, "one that keeps up stays");
        }
        // Meanwhile dropping came within 2 events of it, nearer than before.
        let e = slow.poll().unwrap_err();
        assert_eq!(
            e,
            Gone::TooSlow {
                behind: 14,
                resume: (16, 1)
            }
        );
        assert!(e.to_string().contains("resume from 16.1"), "{e}");
        // Where it names is still kept, and resuming there misses nothing.
        let mut resumed = hub.subscribe(Start::At(16, 1), Filter::default()).unwrap();
        let got: Vec<u64> = drain(&mut resumed).iter().map(|e| e.index).collect();
        assert_eq!(got, (17..=30).collect::<Vec<_>>());
    }

    #[test]
    fn a_reader_catching_up_from_the_oldest_while_events_are_dropped_is_not_too_slow() {
        // Far more than one batch holds.
        let hub = EventHub::new(20_000);
        for i in 1..=20_000 {
            hub.publish(i, vec![ev(Kind::AllocStarted, "a")], 1);
        }
        let mut reader = hub.subscribe(Start::Oldest, Filter::default()).unwrap();
        let mut seen = Vec::new();
        let mut next = 20_001;
        // Between its reads, fewer events are published (and as many
        // dropped) than it reads at once: it gains ground.
        while let Some(b) = reader.poll().unwrap() {
            seen.extend(read(b).into_iter().map(|e| e.index));
            if next <= 30_000 {
                for _ in 0..2_000 {
                    hub.publish(next, vec![ev(Kind::AllocStarted, "a")], 1);
                    next += 1;
                }
            }
        }
        assert!(next > 30_000, "it caught up before the test published all");
        assert_eq!(seen, (1..next).collect::<Vec<_>>(), "no gap, no repeat");
    }

    #[test]
    fn a_cursor_ahead_of_this_peer_skips_until_it_and_a_snapshot_gap_ends_a_stream() {
        let hub = EventHub::new(100);
        hub.publish(1, vec![ev(Kind::AllocStarted, "a")], 1);
        // Resumed at a peer that has not applied index 3 yet.
        let mut ahead = hub.subscribe(Start::At(3, 1), Filter::default()).unwrap();
        let mut caught_up = hub.subscribe(Start::Next, Filter::default()).unwrap();
        assert!(drain(&mut caught_up).is_empty());
        hub.publish(2, vec![ev(Kind::AllocStarted, "a")], 1);
        hub.publish(
            3,
            vec![ev(Kind::AllocStarted, "a"), ev(Kind::AllocHealthy, "a")],
            1,
        );
        hub.publish(4, vec![ev(Kind::AllocStarted, "a")], 1);
        let got: Vec<(u64, u32)> = drain(&mut ahead).iter().map(|e| (e.index, e.seq)).collect();
        assert_eq!(got, vec![(3, 1), (4, 0)]);
        assert_eq!(drain(&mut caught_up).len(), 4);
        // This peer installs a snapshot at 20: 5..=20 were never seen here.
        hub.starts_at(21);
        let e = caught_up.poll().unwrap_err();
        assert!(
            matches!(
                e,
                Gone::NotKept {
                    from: 4,
                    oldest: 21,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn a_token_fenced_to_some_jobs_sees_only_their_events() {
        let hub = EventHub::new(100);
        hub.publish(
            1,
            vec![
                ev(Kind::AllocStarted, "team-a-web"),
                ev(Kind::AllocStarted, "team-b-web"),
                Event::new(Kind::NodeDown, 5, "down".into()).node("n1"),
            ],
            1,
        );
        let fenced = Filter {
            job_prefix: Some("team-a-".into()),
            ..Filter::default()
        };
        let mut s = hub.subscribe(Start::Oldest, fenced).unwrap();
        let jobs: Vec<String> = drain(&mut s).into_iter().map(|e| e.job).collect();
        assert_eq!(jobs, vec!["team-a-web".to_string()]);
    }

    #[test]
    fn a_start_by_time_after_dropped_events_is_refused() {
        let hub = EventHub::new(2);
        for (i, t) in [(1, 100), (2, 200), (3, 300)] {
            hub.publish(i, vec![Event::new(Kind::NodeReady, t, "r".into())], 0);
        }
        // The event at 100 was dropped: "since 50" cannot be served whole.
        assert!(hub.subscribe(Start::Since(50), Filter::default()).is_err());
        assert!(hub.subscribe(Start::Since(150), Filter::default()).is_ok());
    }

    #[test]
    fn since_a_time_and_next_start_where_they_say() {
        let hub = EventHub::new(100);
        for (i, t) in [(1, 100), (2, 200), (3, 300)] {
            hub.publish(i, vec![Event::new(Kind::NodeReady, t, "r".into())], 0);
        }
        let mut s = hub.subscribe(Start::Since(150), Filter::default()).unwrap();
        let got: Vec<u64> = drain(&mut s).iter().map(|e| e.index).collect();
        assert_eq!(got, vec![2, 3]);
        let mut s = hub.subscribe(Start::Next, Filter::default()).unwrap();
        // First it is told where it starts; then nothing until there is.
        let first = s.poll().unwrap().unwrap();
        assert_eq!((first.count, first.next), (0, (3, 1)));
        assert!(s.poll().unwrap().is_none());
        hub.publish(4, vec![Event::new(Kind::NodeReady, 400, "r".into())], 0);
        assert_eq!(drain(&mut s)[0].index, 4);
    }
}
