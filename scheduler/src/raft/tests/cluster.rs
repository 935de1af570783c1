//! Real Raft peers over real gRPC sockets on loopback.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use openraft::ServerState;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use crate::raft::{self, Error, Node, NodeId, RaftHandle, RaftOptions};
use crate::state::Command;

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

/// A peer serving its Raft service on a loopback socket.
struct Peer {
    handle: RaftHandle,
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl Peer {
    /// Start peer `id` on `listener`'s socket with storage under `dir`.
    async fn start(id: NodeId, dir: &Path, listener: TcpListener, options: RaftOptions) -> Self {
        let addr = listener.local_addr().unwrap().to_string();
        let handle = raft::open(id, dir, options).await.expect("open raft");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let service = handle.service();
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stop_rx.await;
                })
                .await
                .expect("raft server");
        });
        Self {
            handle,
            addr,
            stop: Some(stop_tx),
            server: Some(server),
        }
    }

    /// Stop serving and stop the Raft node, releasing its storage.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
        self.handle.shutdown().await.unwrap();
    }

    fn counter(&self) -> u64 {
        self.handle.state.read().unwrap().nodes.len() as u64
    }

    async fn wait_applied(&self, index: u64) {
        let mut rx = self.handle.applied.clone();
        tokio::time::timeout(WAIT.unwrap(), rx.wait_for(|&i| i >= index))
            .await
            .expect("applied index in time")
            .expect("applied watch open");
    }
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

fn options(snapshot_every: u64) -> RaftOptions {
    RaftOptions {
        snapshot_every,
        keep_after_snapshot: 2,
        ..RaftOptions::default()
    }
}

async fn wait_leader(peer: &Peer) {
    peer.handle
        .raft
        .wait(WAIT)
        .state(ServerState::Leader, "becomes leader")
        .await
        .expect("leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_replica_survives_restart_and_compacts() {
    let dir = TempDir::new().unwrap();
    let mut r = Peer::start(1, dir.path(), listener().await, options(20)).await;
    raft::bootstrap_single(&r.handle.raft, 1, &r.addr)
        .await
        .unwrap();
    // Initializing twice is harmless.
    raft::bootstrap_single(&r.handle.raft, 1, &r.addr)
        .await
        .unwrap();
    wait_leader(&r).await;

    let mut last = 0;
    for _ in 0..5 {
        let (index, result) = raft::propose(&r.handle.raft, counted()).await.unwrap();
        assert!(index > last, "index {index} after {last}");
        assert!(result.ok);
        last = index;
    }
    assert_eq!(r.counter(), 5);
    assert_eq!(*r.handle.applied.borrow(), last);
    assert_eq!(
        raft::ensure_linearizable(&r.handle.raft).await.unwrap(),
        last
    );
    r.stop().await;

    // Restart from the same directory: the commands are applied again.
    let mut r = Peer::start(1, dir.path(), listener().await, options(20)).await;
    r.wait_applied(last).await;
    assert_eq!(r.counter(), 5);
    wait_leader(&r).await;

    // Enough writes to trigger a snapshot and purge the log behind it.
    for _ in 0..45 {
        last = raft::propose(&r.handle.raft, counted()).await.unwrap().0;
    }
    assert_eq!(r.counter(), 50);
    let metrics = r
        .handle
        .raft
        .wait(WAIT)
        .metrics(
            |m| m.snapshot.is_some() && m.purged.is_some(),
            "snapshot and purge",
        )
        .await
        .expect("snapshot taken and log purged");
    let snapshot = metrics.snapshot.unwrap().index;
    assert!(dir.path().join("snapshots/current.json").exists());
    r.stop().await;

    // Restart again: the state machine starts from the snapshot and replays
    // only the tail of the log.
    let r = Peer::start(1, dir.path(), listener().await, options(20)).await;
    let applied_at_open = *r.handle.applied.borrow();
    assert!(
        applied_at_open >= snapshot,
        "resumed at {applied_at_open}, snapshot at {snapshot}"
    );
    r.wait_applied(last).await;
    assert_eq!(r.counter(), 50);
}

/// Index of the peer that currently leads, as seen by all live peers.
async fn find_leader(peers: &[Peer], live: &[usize]) -> usize {
    let deadline = tokio::time::Instant::now() + WAIT.unwrap();
    loop {
        for &i in live {
            let m = peers[i].handle.raft.metrics().borrow().clone();
            if m.state == ServerState::Leader {
                return i;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three peers, each with a data dir and an address, made one cluster.
async fn three_peers(options: RaftOptions) -> (Vec<TempDir>, Vec<String>, Vec<Peer>) {
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(listener().await);
    }
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    let mut peers = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        peers.push(Peer::start(i as NodeId + 1, dirs[i].path(), l, options.clone()).await);
    }
    let members: BTreeMap<NodeId, Node> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (i as NodeId + 1, Node::new(a.clone())))
        .collect();
    raft::initialize(&peers[0].handle.raft, members)
        .await
        .unwrap();
    (dirs, addrs, peers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_elect_replicate_and_fail_over() {
    let (dirs, addrs, mut peers) = three_peers(options(10)).await;

    let all = [0, 1, 2];
    let leader = find_leader(&peers, &all).await;
    let mut last = 0;
    for _ in 0..8 {
        last = raft::propose(&peers[leader].handle.raft, counted())
            .await
            .unwrap()
            .0;
    }
    for r in &peers {
        r.wait_applied(last).await;
        assert_eq!(r.counter(), 8);
    }

    // A follower refuses writes and names the leader.
    let follower = (leader + 1) % 3;
    match raft::propose(&peers[follower].handle.raft, counted()).await {
        Err(Error::NotLeader {
            leader_id,
            leader_addr,
        }) => {
            assert_eq!(leader_id, Some(leader as NodeId + 1));
            assert_eq!(leader_addr.as_deref(), Some(addrs[leader].as_str()));
        }
        other => panic!("follower accepted a write: {other:?}"),
    }

    // Kill the leader; the other two elect a new one and keep going.
    let killed_at = last;
    peers[leader].stop().await;
    let live: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let new_leader = find_leader(&peers, &live).await;
    assert_ne!(new_leader, leader);
    for _ in 0..30 {
        last = raft::propose(&peers[new_leader].handle.raft, counted())
            .await
            .unwrap()
            .0;
    }
    for &i in &live {
        peers[i].wait_applied(last).await;
        assert_eq!(peers[i].counter(), 38);
    }

    // The old leader comes back on its address. The survivors have purged
    // the log it missed, so it catches up by installing a snapshot.
    peers[new_leader]
        .handle
        .raft
        .wait(WAIT)
        .metrics(
            |m| m.purged.is_some_and(|p| p.index > killed_at),
            "leader purged log",
        )
        .await
        .expect("leader purged its log");
    let l = TcpListener::bind(&addrs[leader]).await.unwrap();
    peers[leader] = Peer::start(leader as NodeId + 1, dirs[leader].path(), l, options(10)).await;
    peers[leader].wait_applied(last).await;
    assert_eq!(peers[leader].counter(), 38);
    let installed = peers[leader].handle.raft.metrics().borrow().snapshot;
    assert!(
        installed.is_some_and(|s| s.index > killed_at),
        "caught up without a snapshot: {installed:?}"
    );

    for r in &mut peers {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_grows_from_one_replica_and_shrinks() {
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let mut peers = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        peers.push(Peer::start(i as NodeId + 1, dir.path(), listener().await, options(1000)).await);
    }
    raft::bootstrap_single(&peers[0].handle.raft, 1, &peers[0].addr)
        .await
        .unwrap();
    wait_leader(&peers[0]).await;
    for _ in 0..3 {
        raft::propose(&peers[0].handle.raft, counted())
            .await
            .unwrap();
    }

    for i in 1..3 {
        raft::add_voter(&peers[0].handle.raft, i as NodeId + 1, &peers[i].addr)
            .await
            .unwrap();
    }
    let last = raft::propose(&peers[0].handle.raft, counted())
        .await
        .unwrap()
        .0;
    for r in &peers {
        r.wait_applied(last).await;
        assert_eq!(r.counter(), 4);
        let voters: Vec<NodeId> = r
            .handle
            .raft
            .metrics()
            .borrow()
            .membership_config
            .voter_ids()
            .collect();
        assert_eq!(voters, vec![1, 2, 3]);
    }

    raft::remove_voter(&peers[0].handle.raft, 3).await.unwrap();
    let voters: Vec<NodeId> = peers[0]
        .handle
        .raft
        .metrics()
        .borrow()
        .membership_config
        .voter_ids()
        .collect();
    assert_eq!(voters, vec![1, 2]);
    // Writes still commit with the two remaining voters.
    let last = raft::propose(&peers[0].handle.raft, counted())
        .await
        .unwrap()
        .0;
    peers[1].wait_applied(last).await;
    assert_eq!(peers[1].counter(), 5);

    for r in &mut peers {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_far_behind_catches_up_on_large_entries_a_budget_at_a_time() {
    let (dirs, addrs, mut peers) = three_peers(options(1000)).await;
    let leader = find_leader(&peers, &[0, 1, 2]).await;
    let behind = (leader + 1) % 3;
    peers[behind].stop().await;

    // 9 entries of 520KiB: 4.7MB that one append (openraft sends up to
    // 300 entries) could not carry within the heartbeat interval; it would
    // be sent again and again and the follower would never catch up. One
    // at a time (two are over the budget) they can, even in a debug build.
    let mut last = 0;
    for i in 0..9 {
        let big = Command::SetPendingReason {
            job: format!("j{i}"),
            reason: Some("x".repeat(520 << 10)),
            at_ms: 0,
        };
        last = raft::propose(&peers[leader].handle.raft, big)
            .await
            .unwrap()
            .0;
    }
    let l = TcpListener::bind(&addrs[behind]).await.unwrap();
    peers[behind] = Peer::start(behind as NodeId + 1, dirs[behind].path(), l, options(1000)).await;
    peers[behind].wait_applied(last).await;

    for r in &mut peers {
        r.stop().await;
    }
}

/// A command that adds one to what `counter` reads: it registers a new node.
fn counted() -> Command {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Command::RegisterNode {
        name: format!("n{n}"),
        address: String::new(),
        cpu_millis: 1000,
        memory_bytes: 1 << 30,
        at_ms: 0,
        cluster_cidr: String::new(),
        volumes: Default::default(),
        disk_bytes: 0,
        labels: Default::default(),
        facts: Default::default(),
    }
}
