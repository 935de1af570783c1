//! Events: what applying a command did, in the words a user follows.
//!
//! Applying a command changes jobs, rollouts, allocations and nodes; the
//! code that makes each change also says what it was (a replica started,
//! a node went down, a rollout failed) into the state's [`Recorder`]. The
//! Raft state machine switches recording on, takes the events after each
//! entry and hands them to the event hub (`crate::events`), which numbers
//! them by log index. Every replica applies the same log, so every replica
//! records the same events, and any of them can serve a subscriber.
//!
//! Recording is off in every other copy of the state (a clone never
//! records), so planning on a copy or replaying in a test costs nothing.

/// Which part of the cluster an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    Job,
    Rollout,
    Alloc,
    Node,
    Cluster,
}

impl Topic {
    pub const ALL: [Topic; 5] = [
        Topic::Job,
        Topic::Rollout,
        Topic::Alloc,
        Topic::Node,
        Topic::Cluster,
    ];

    pub fn word(self) -> &'static str {
        match self {
            Topic::Job => "job",
            Topic::Rollout => "rollout",
            Topic::Alloc => "alloc",
            Topic::Node => "node",
            Topic::Cluster => "cluster",
        }
    }

    pub fn parse(word: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.word() == word)
    }
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    JobSubmitted,
    JobUpdated,
    JobScaled,
    JobStopped,
    JobStartedAgain,
    JobPurged,
    JobRestarted,
    JobRunStarted,
    JobPending,
    RolloutStarted,
    RolloutProgressed,
    RolloutWaitingPromotion,
    RolloutPromoted,
    RolloutPaused,
    RolloutResumed,
    RolloutSucceeded,
    RolloutFailed,
    RolloutRolledBack,
    AllocPlaced,
    AllocStarted,
    AllocHealthy,
    AllocUnhealthy,
    AllocRestarted,
    AllocOomKilled,
    AllocStopping,
    AllocStopped,
    AllocFailed,
    AllocEvicted,
    AllocLost,
    NodeRegistered,
    NodeReady,
    NodeDown,
    NodeCordoned,
    NodeUncordoned,
    NodeDraining,
    NodeLabelled,
    NodeNetworkDown,
    NodeNetworkUp,
    NodeRemoved,
    ClusterLeaderChanged,
    ClusterMemberAdded,
    ClusterMemberPromoted,
    ClusterMemberRemoved,
    ClusterRestored,
}

impl Kind {
    pub fn topic(self) -> Topic {
        use Kind::*;
        match self {
            JobSubmitted | JobUpdated | JobScaled | JobStopped | JobStartedAgain | JobPurged
            | JobRestarted | JobRunStarted | JobPending => Topic::Job,
            RolloutStarted
            | RolloutProgressed
            | RolloutWaitingPromotion
            | RolloutPromoted
            | RolloutPaused
            | RolloutResumed
            | RolloutSucceeded
            | RolloutFailed
            | RolloutRolledBack => Topic::Rollout,
            AllocPlaced | AllocStarted | AllocHealthy | AllocUnhealthy | AllocRestarted
            | AllocOomKilled | AllocStopping | AllocStopped | AllocFailed | AllocEvicted
            | AllocLost => Topic::Alloc,
            NodeRegistered | NodeReady | NodeDown | NodeCordoned | NodeUncordoned
            | NodeDraining | NodeLabelled | NodeNetworkDown | NodeNetworkUp | NodeRemoved => {
                Topic::Node
            }
            ClusterLeaderChanged
            | ClusterMemberAdded
            | ClusterMemberPromoted
            | ClusterMemberRemoved
            | ClusterRestored => Topic::Cluster,
        }
    }
}

/// One thing that happened. Which log entry made it is the hub's to say.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub kind: Kind,
    pub job: String,
    pub version: u64,
    pub alloc: String,
    pub node: String,
    pub message: String,
    /// The time of the command that made it (0: the command has none, and
    /// the state machine dates it when it applies it).
    pub at_ms: i64,
}

impl Event {
    pub fn new(kind: Kind, at_ms: i64, message: String) -> Event {
        Event {
            kind,
            job: String::new(),
            version: 0,
            alloc: String::new(),
            node: String::new(),
            message,
            at_ms,
        }
    }

    pub fn job(mut self, job: &str, version: u64) -> Event {
        self.job = job.to_string();
        self.version = version;
        self
    }

    pub fn alloc(mut self, alloc: &str) -> Event {
        self.alloc = alloc.to_string();
        self
    }

    pub fn node(mut self, node: &str) -> Event {
        self.node = node.to_string();
        self
    }
}

/// Where applying puts its events, when someone is listening.
///
/// Not part of the state: equal states record equally or not at all, and a
/// copy of the state does not record (planning on a copy says nothing).
#[derive(Debug, Default)]
pub struct Recorder(Option<Vec<Event>>);

impl Recorder {
    /// From now on, keep what is recorded until it is taken.
    pub fn start(&mut self) {
        self.0.get_or_insert_with(Vec::new);
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Records the event `make` builds, if recording (it is not built
    /// otherwise).
    pub fn push(&mut self, make: impl FnOnce() -> Event) {
        if let Some(events) = &mut self.0 {
            events.push(make());
        }
    }

    /// What was recorded since the last call.
    pub fn take(&mut self) -> Vec<Event> {
        self.0.as_mut().map(std::mem::take).unwrap_or_default()
    }
}

impl Clone for Recorder {
    fn clone(&self) -> Self {
        Recorder(None)
    }
}

impl PartialEq for Recorder {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorder_keeps_events_only_once_started_and_a_copy_never_records() {
        let mut r = Recorder::default();
        let mut built = false;
        r.push(|| {
            built = true;
            Event::new(Kind::NodeDown, 1, "down".into())
        });
        assert!(!built, "an event nobody records is not even built");
        assert!(r.take().is_empty());
        r.start();
        r.push(|| Event::new(Kind::NodeDown, 1, "down".into()));
        let mut copy = r.clone();
        copy.push(|| Event::new(Kind::NodeReady, 2, "ready".into()));
        assert!(!copy.is_on());
        let taken = r.take();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].kind, Kind::NodeDown);
        assert!(r.take().is_empty(), "taken events are gone");
    }

    #[test]
    fn every_topic_reads_back_from_its_word() {
        for t in Topic::ALL {
            assert_eq!(Topic::parse(t.word()), Some(t));
        }
        assert_eq!(Topic::parse("jobs"), None);
    }
}
