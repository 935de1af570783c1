//! Claiming a node subnet against real links, each test in a fresh network
//! namespace of its own (so the host's network is never touched and the
//! tests can use any range): what a gone agent left is reclaimed, anything
//! else holding the gateway or routing the subnet is refused with an error
//! naming the interface and its owner.

use drover_agent::leftovers::{self, StateLock};
use drover_agent::network::{self, NetworkError, NodeNetwork};
use std::path::Path;
use std::process::Command;

const SUBNET: &str = "10.9.0.0/24";
const NO_EXTRAS: network::Access = network::Access {
    control_plane: false,
    egress: false,
};
const GATEWAY: &str = "10.9.0.1";

/// Runs `f` on a thread of its own in a new network namespace (the `ip`
/// processes it starts inherit it). Without root it says why and returns
/// (under `CI=true` that is a failure).
fn in_fresh_netns(test: &str, f: impl FnOnce() + Send + 'static) {
    if !nix::unistd::geteuid().is_root() {
        let why = format!("{test}: skipped: needs root for a network namespace");
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true and {why}"
        );
        eprintln!("{why}");
        return;
    }
    let t = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        f()
    });
    if let Err(panic) = t.join() {
        std::panic::resume_unwind(panic);
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bridge, up, with `addr` and the alias `alias` if given.
fn bridge(name: &str, addr: Option<&str>, alias: Option<&str>) {
    ip(&["link", "add", name, "type", "bridge"]);
    ip(&["link", "set", name, "up"]);
    if let Some(a) = addr {
        ip(&["addr", "add", a, "dev", name]);
    }
    if let Some(a) = alias {
        ip(&["link", "set", "dev", name, "alias", a]);
    }
}

fn exists(name: &str) -> bool {
    network::links().unwrap().iter().any(|l| l.name == name)
}

fn alias_of(name: &str) -> Option<String> {
    network::links()
        .unwrap()
        .into_iter()
        .find(|l| l.name == name)
        .and_then(|l| l.alias)
}

fn holders_of_gateway() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "to", GATEWAY])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
        .collect()
}

fn setup(state: &Path) -> Result<NodeNetwork, NetworkError> {
    NodeNetwork::setup(
        "node-1",
        SUBNET,
        state,
        &network::guard::ControlPlane::of(7401, &[]),
    )
}

#[test]
fn a_foreign_interface_holding_the_gateway_is_refused_with_its_name() {
    in_fresh_netns(
        "a_foreign_interface_holding_the_gateway_is_refused_with_its_name",
        || {
            let state = tempfile::tempdir().unwrap();
            bridge("foreign0", Some("10.9.0.1/24"), None);
            let err = setup(state.path()).unwrap_err();
            assert_eq!(
            err.to_string(),
            "gateway 10.9.0.1 of subnet 10.9.0.0/24 is already on interface foreign0, not made by drover"
        );
            assert_eq!(holders_of_gateway(), ["foreign0"]);
            assert!(
                !network::links()
                    .unwrap()
                    .iter()
                    .any(|l| l.name.starts_with("drv")),
                "no bridge made"
            );
        },
    );
}

#[test]
fn a_gone_agents_bridge_and_veths_are_reclaimed() {
    in_fresh_netns("a_gone_agents_bridge_and_veths_are_reclaimed", || {
        let state = tempfile::tempdir().unwrap();
        let gone = tempfile::tempdir().unwrap(); // no lock: its agent is gone
        let m = leftovers::marker(gone.path());
        bridge("drvold00001", Some("10.9.0.1/24"), Some(&m));
        ip(&[
            "link",
            "add",
            "dvhold0001",
            "type",
            "veth",
            "peer",
            "name",
            "dvcold0001",
        ]);
        ip(&["link", "set", "dvhold0001", "master", "drvold00001", "up"]);
        let net = setup(state.path()).unwrap();
        assert!(!exists("drvold00001"), "the stale bridge is deleted");
        assert!(!exists("dvhold0001"), "with its veths");
        assert_eq!(holders_of_gateway(), vec![net.bridge.clone()]);
        assert_eq!(alias_of(&net.bridge), Some(leftovers::marker(state.path())));
        // The subnet is routed through the new bridge alone.
        let out = Command::new("ip")
            .args(["route", "show", "root", SUBNET])
            .output()
            .unwrap();
        let routes = String::from_utf8_lossy(&out.stdout);
        assert_eq!(routes.lines().count(), 1, "{routes}");
        assert!(routes.contains(&net.bridge), "{routes}");
    });
}

#[test]
fn a_running_agents_bridge_is_refused_naming_its_state_dir() {
    in_fresh_netns(
        "a_running_agents_bridge_is_refused_naming_its_state_dir",
        || {
            let state = tempfile::tempdir().unwrap();
            let live = tempfile::tempdir().unwrap();
            let _lock = StateLock::acquire(live.path()).unwrap();
            bridge(
                "drvlive0001",
                Some("10.9.0.1/24"),
                Some(&leftovers::marker(live.path())),
            );
            let err = setup(state.path()).unwrap_err().to_string();
            let dir = std::fs::canonicalize(live.path()).unwrap();
            assert_eq!(
                err,
                format!(
                    "gateway 10.9.0.1 of subnet 10.9.0.0/24 is already on interface drvlive0001, \
                 owned by the running drover agent with state dir {} (pid {})",
                    dir.display(),
                    std::process::id()
                )
            );
            assert!(exists("drvlive0001"));
        },
    );
}

#[test]
fn a_gone_agent_whose_containers_still_run_is_refused_with_the_cleanup_hint() {
    in_fresh_netns(
        "a_gone_agent_whose_containers_still_run_is_refused_with_the_cleanup_hint",
        || {
            let state = tempfile::tempdir().unwrap();
            let dormant = tempfile::tempdir().unwrap();
            // A monitor that still runs (this very process stands in for it).
            let bundle = dormant.path().join("bundles/a1");
            std::fs::create_dir_all(&bundle).unwrap();
            let me = std::process::id() as i32;
            let start = drover_agent::runtime::monitor::start_time(me).unwrap();
            std::fs::write(
                bundle.join("monitor.json"),
                format!(
                    r#"{{"monitor_pid":{me},"monitor_start":{start},"container_pid":{me},"container_start":{start}}}"#
                ),
            )
            .unwrap();
            bridge(
                "drvdorm0001",
                Some("10.9.0.1/24"),
                Some(&leftovers::marker(dormant.path())),
            );
            let err = setup(state.path()).unwrap_err().to_string();
            assert!(err.contains("interface drvdorm0001"), "{err}");
            assert!(err.contains("1 container(s) running"), "{err}");
            assert!(err.contains("drover-agent cleanup --state-dir"), "{err}");
            assert!(exists("drvdorm0001"), "its containers keep their network");
            // The startup sweep leaves it too.
            network::reclaim_gone(state.path()).unwrap();
            assert!(exists("drvdorm0001"));
        },
    );
}

#[test]
fn a_foreign_route_into_the_subnet_is_refused() {
    in_fresh_netns("a_foreign_route_into_the_subnet_is_refused", || {
        let state = tempfile::tempdir().unwrap();
        bridge("uplink0", None, None);
        ip(&["route", "add", "10.9.0.128/25", "dev", "uplink0"]);
        let err = setup(state.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            "subnet 10.9.0.0/24 is already routed by `10.9.0.128/25 dev uplink0` on interface \
             uplink0, not made by drover"
        );
    });
}

#[test]
fn a_drover_route_to_the_subnet_as_another_nodes_is_replaced() {
    in_fresh_netns(
        "a_drover_route_to_the_subnet_as_another_nodes_is_replaced",
        || {
            let state = tempfile::tempdir().unwrap();
            bridge("uplink0", Some("192.168.77.1/24"), None);
            ip(&[
                "route",
                "add",
                SUBNET,
                "via",
                "192.168.77.2",
                "proto",
                "215",
            ]);
            let net = setup(state.path()).unwrap();
            let out = Command::new("ip")
                .args(["route", "show", "root", SUBNET])
                .output()
                .unwrap();
            let routes = String::from_utf8_lossy(&out.stdout);
            assert!(!routes.contains("192.168.77.2"), "{routes}");
            assert!(routes.contains(&net.bridge), "{routes}");
        },
    );
}

#[test]
fn a_conflict_that_appears_later_fails_the_check_before_an_attach() {
    in_fresh_netns(
        "a_conflict_that_appears_later_fails_the_check_before_an_attach",
        || {
            let state = tempfile::tempdir().unwrap();
            let net = setup(state.path()).unwrap();
            net.check().unwrap();
            bridge("late0", Some("10.9.0.1/32"), None);
            let err = net.check().unwrap_err().to_string();
            assert!(err.contains("interface late0, not made by drover"), "{err}");
            assert!(net
                .attach("a1", std::process::id() as i32, NO_EXTRAS)
                .is_err());
            assert!(net.allocated().is_empty(), "no address handed out");
        },
    );
}

#[test]
fn the_startup_sweep_reclaims_only_what_gone_agents_left() {
    in_fresh_netns(
        "the_startup_sweep_reclaims_only_what_gone_agents_left",
        || {
            let own = tempfile::tempdir().unwrap();
            let gone = tempfile::tempdir().unwrap();
            let live = tempfile::tempdir().unwrap();
            let _lock = StateLock::acquire(live.path()).unwrap();
            bridge("drvgone0001", None, Some(&leftovers::marker(gone.path())));
            bridge("drvlive0001", None, Some(&leftovers::marker(live.path())));
            bridge("drvown00001", None, Some(&leftovers::marker(own.path())));
            bridge("foreign0", None, None);
            let own_dir = std::fs::canonicalize(own.path()).unwrap();
            let deleted = network::reclaim_gone(&own_dir).unwrap();
            assert_eq!(deleted, ["drvgone0001"]);
            assert!(!exists("drvgone0001"));
            for kept in ["drvlive0001", "drvown00001", "foreign0"] {
                assert!(exists(kept), "{kept} kept");
            }
        },
    );
}

#[test]
fn an_unmarked_bridge_named_like_drovers_is_refused_with_how_to_remove_it() {
    in_fresh_netns(
        "an_unmarked_bridge_named_like_drovers_is_refused_with_how_to_remove_it",
        || {
            let state = tempfile::tempdir().unwrap();
            // What an agent from before the markers left: the incident's bridge.
            bridge("drv3d661eba", Some("10.9.0.1/24"), None);
            let err = setup(state.path()).unwrap_err().to_string();
            assert!(
                err.contains("interface drv3d661eba, named like a drover link"),
                "{err}"
            );
            assert!(err.contains("`ip link del drv3d661eba`"), "{err}");
            assert!(exists("drv3d661eba"), "nothing tells whether it is in use");
        },
    );
}

#[test]
fn routes_to_other_nodes_follow_the_set_and_go_at_teardown() {
    in_fresh_netns(
        "routes_to_other_nodes_follow_the_set_and_go_at_teardown",
        || {
            let state = tempfile::tempdir().unwrap();
            bridge("uplink0", Some("192.168.77.1/24"), None);
            let net = setup(state.path()).unwrap();
            let routes = || {
                let out = Command::new("ip")
                    .args(["route", "show", "proto", "215"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            let to = |s: &str, via: &str| (s.to_string(), via.to_string());
            net.sync_routes(&[
                to("10.9.1.0/24", "192.168.77.2"),
                to("10.9.2.0/24", "192.168.77.3"),
            ]);
            let r = routes();
            assert!(r.contains("10.9.1.0/24 via 192.168.77.2"), "{r}");
            assert!(r.contains("10.9.2.0/24 via 192.168.77.3"), "{r}");
            net.sync_routes(&[to("10.9.2.0/24", "192.168.77.3")]);
            let r = routes();
            assert!(
                !r.contains("10.9.1.0/24"),
                "a node that left is no longer routed: {r}"
            );
            net.teardown();
            assert_eq!(routes(), "", "teardown removes every route it made");
            assert!(!exists(&net.bridge));
        },
    );
}

fn drover_routes() -> String {
    let out = Command::new("ip")
        .args(["route", "show", "proto", "215"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn to(subnet: &str, via: &str) -> (String, String) {
    (subnet.to_string(), via.to_string())
}

#[test]
fn a_killed_agents_routes_go_with_its_bridge() {
    in_fresh_netns("a_killed_agents_routes_go_with_its_bridge", || {
        let gone = tempfile::tempdir().unwrap();
        let own = tempfile::tempdir().unwrap();
        bridge("uplink0", Some("192.168.77.1/24"), None);
        let net = setup(gone.path()).unwrap();
        net.sync_routes(&[to("10.9.1.0/24", "192.168.77.2")]);
        // Killed: no teardown, and no lock held any more.
        drop(net);
        // Another agent on the host routes a subnet of its own.
        ip(&[
            "route",
            "add",
            "10.9.2.0/24",
            "via",
            "192.168.77.3",
            "proto",
            "215",
        ]);
        assert!(drover_routes().contains("10.9.1.0/24"));
        let own_dir = std::fs::canonicalize(own.path()).unwrap();
        let deleted = network::reclaim_gone(&own_dir).unwrap();
        assert_eq!(deleted.len(), 1, "{deleted:?}");
        let r = drover_routes();
        assert!(!r.contains("10.9.1.0/24"), "the gone agent's route: {r}");
        assert!(
            r.contains("10.9.2.0/24"),
            "a route it did not record stays: {r}"
        );
        assert!(network::routes::load(gone.path()).is_empty());
    });
}

#[test]
fn an_agent_restarting_on_its_state_dir_prunes_the_routes_it_made_before() {
    in_fresh_netns(
        "an_agent_restarting_on_its_state_dir_prunes_the_routes_it_made_before",
        || {
            let state = tempfile::tempdir().unwrap();
            bridge("uplink0", Some("192.168.77.1/24"), None);
            let net = setup(state.path()).unwrap();
            net.sync_routes(&[
                to("10.9.1.0/24", "192.168.77.2"),
                to("10.9.2.0/24", "192.168.77.3"),
            ]);
            drop(net);
            // While it was down, node 10.9.1.0/24 left and 10.9.2.0/24 moved.
            let net = setup(state.path()).unwrap();
            net.sync_routes(&[to("10.9.2.0/24", "192.168.77.4")]);
            let r = drover_routes();
            assert!(!r.contains("10.9.1.0/24"), "{r}");
            assert!(r.contains("10.9.2.0/24 via 192.168.77.4"), "{r}");
            net.teardown();
            assert_eq!(drover_routes(), "");
        },
    );
}

#[test]
fn cleanup_lists_and_removes_a_gone_agents_routes() {
    in_fresh_netns("cleanup_lists_and_removes_a_gone_agents_routes", || {
        let gone = tempfile::tempdir().unwrap();
        bridge("uplink0", Some("192.168.77.1/24"), None);
        let net = setup(gone.path()).unwrap();
        net.sync_routes(&[to("10.9.1.0/24", "192.168.77.2")]);
        drop(net);
        let cgroups = drover_agent::cgroups::manager_for(Path::new("/sys/fs/cgroup"));
        let plan = leftovers::cleanup::scan(&[gone.path().into()], cgroups.as_ref());
        let listed = plan.to_string();
        assert!(listed.contains("10.9.1.0/24 via 192.168.77.2"), "{listed}");
        assert!(plan.remove(cgroups.as_ref()).is_empty());
        assert_eq!(drover_routes(), "");
        assert!(leftovers::cleanup::scan(&[gone.path().into()], cgroups.as_ref()).is_empty());
    });
}

#[test]
fn the_bridge_comes_with_its_guard_and_the_guard_goes_with_the_bridge() {
    in_fresh_netns(
        "the_bridge_comes_with_its_guard_and_the_guard_goes_with_the_bridge",
        || {
            use network::guard;
            let state = tempfile::tempdir().unwrap();
            let net = setup(state.path()).unwrap();
            assert!(guard::exists(&net.bridge), "a network without its guard");
            let rules = Command::new("nft")
                .args(["list", "table", "inet", &net.bridge])
                .output()
                .unwrap();
            let rules = String::from_utf8_lossy(&rules.stdout);
            assert!(rules.contains("tcp dport 7401 drop"), "{rules}");
            // Set up again (an agent restart): replaced, not doubled.
            drop(net);
            let net = setup(state.path()).unwrap();
            let again = Command::new("nft")
                .args(["list", "table", "inet", &net.bridge])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&again.stdout), rules);
            net.teardown();
            assert!(!guard::exists(&net.bridge), "teardown left the guard");

            // A gone agent's bridge takes its guard along when reclaimed.
            let gone = tempfile::tempdir().unwrap();
            bridge("drvgone0002", None, Some(&leftovers::marker(gone.path())));
            guard::install(
                "drvgone0002",
                "10.9.1.0/24",
                &guard::ControlPlane::of(7401, &[]),
                &Default::default(),
            )
            .unwrap();
            let own = std::fs::canonicalize(state.path()).unwrap();
            assert_eq!(network::reclaim_gone(&own).unwrap(), ["drvgone0002"]);
            assert!(!guard::exists("drvgone0002"), "the sweep left the guard");
        },
    );
}

#[test]
fn cleanup_lists_and_removes_a_guard_whose_bridge_is_gone() {
    in_fresh_netns(
        "cleanup_lists_and_removes_a_guard_whose_bridge_is_gone",
        || {
            use network::guard;
            let cp = guard::ControlPlane::of(7401, &[]);
            guard::install("drvorphan01", "10.9.2.0/24", &cp, &Default::default()).unwrap();
            bridge("drvlive0002", None, None);
            guard::install("drvlive0002", "10.9.3.0/24", &cp, &Default::default()).unwrap();
            assert_eq!(guard::orphan_tables(), ["drvorphan01"]);
            let cg = drover_agent::cgroups::manager_for("/sys/fs/cgroup");
            let found = drover_agent::leftovers::cleanup::scan(&[], cg.as_ref());
            assert!(found.to_string().contains("inet drvorphan01"), "{found}");
            assert!(found.remove(cg.as_ref()).is_empty());
            assert!(!guard::exists("drvorphan01"));
            assert!(guard::exists("drvlive0002"), "a bridge's guard was taken");
        },
    );
}

/// A process in a network namespace of its own (`unshare --net sleep`),
/// made from the calling thread's namespace; killed when dropped.
struct Ns(std::process::Child);

impl Ns {
    fn new() -> Ns {
        let child = Command::new("unshare")
            .args(["--net", "sleep", "600"])
            .spawn()
            .unwrap();
        let ours = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        while std::fs::read_link(format!("/proc/{}/ns/net", child.id())).unwrap() == ours {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ns(child)
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Runs `f` on a thread inside this namespace.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/proc/{}/ns/net", self.pid());
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path).unwrap();
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// From inside `ns`, connects to `to` and reads what it says (None: no connection).
fn fetch(ns: &Ns, to: std::net::SocketAddr) -> Option<String> {
    use std::io::Read;
    ns.run(|| {
        let mut s =
            std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_secs(2)).ok()?;
        let mut got = String::new();
        s.read_to_string(&mut got).ok()?;
        Some(got)
    })
}

#[test]
fn containers_reach_outside_from_the_nodes_address_unless_egress_is_none() {
    in_fresh_netns(
        "containers_reach_outside_from_the_nodes_address_unless_egress_is_none",
        || {
            let state = tempfile::tempdir().unwrap();
            let net = setup(state.path()).unwrap();
            // "Outside": a host at 203.0.113.2, one link away from this node
            // (203.0.113.1), with no route back to the containers' subnet.
            let outside = Ns::new();
            ip(&[
                "link", "add", "out0", "type", "veth", "peer", "name", "out1",
            ]);
            ip(&["link", "set", "out1", "netns", &outside.pid().to_string()]);
            ip(&["addr", "add", "203.0.113.1/24", "dev", "out0"]);
            ip(&["link", "set", "out0", "up"]);
            let server = outside.run(|| {
                ip(&["addr", "add", "203.0.113.2/24", "dev", "out1"]);
                ip(&["link", "set", "out1", "up"]);
                std::net::TcpListener::bind("203.0.113.2:9000").unwrap()
            });
            let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let log = seen.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                for conn in server.incoming().flatten() {
                    log.lock().unwrap().push(conn.peer_addr().unwrap().ip());
                    let _ = (&conn).write_all(b"hello from outside");
                }
            });
            let to: std::net::SocketAddr = "203.0.113.2:9000".parse().unwrap();

            let open = Ns::new();
            let access = network::Access {
                control_plane: false,
                egress: true,
            };
            let addr = net.attach("open", open.pid(), access).unwrap();
            assert_eq!(fetch(&open, to).as_deref(), Some("hello from outside"));
            // Masqueraded: the outside saw the node, not the container.
            assert_eq!(
                *seen.lock().unwrap(),
                vec![std::net::IpAddr::from([203, 0, 113, 1])],
                "the container is {addr}"
            );

            let closed = Ns::new();
            net.attach("closed", closed.pid(), NO_EXTRAS).unwrap();
            assert_eq!(fetch(&closed, to), None, "egress: none got out");
            assert_eq!(seen.lock().unwrap().len(), 1);
            // Inside the cluster it still reaches the other container... no
            // listener there, so a refusal (not a drop) says it got through.
            let refused = closed.run(|| {
                std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::from((addr, 9)),
                    std::time::Duration::from_secs(2),
                )
                .unwrap_err()
                .kind()
            });
            assert_eq!(refused, std::io::ErrorKind::ConnectionRefused);

            // Gone, its address leaves the set (its next holder may get out).
            let held = network::guard::members(&net.bridge, "no_egress");
            assert_eq!(held.len(), 1);
            net.detach("closed");
            assert!(network::guard::members(&net.bridge, "no_egress").is_empty());
            net.teardown();
        },
    );
}
