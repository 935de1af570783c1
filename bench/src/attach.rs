//! `drover-bench attach`: what giving a container its network costs: the
//! agent's attach (a veth made with its peer in the container's network
//! namespace, on the node's bridge, address and default route set inside,
//! over netlink) beside the same steps run as iproute2 commands (`ip` and
//! `nsenter ip`, what the agent ran before), on one bridge, in one run,
//! alternating. The "containers" are `unshare --net sleep` processes: a
//! network namespace each, as a container's.

use anyhow::{bail, Context, Result};
use drover_agent::network::{guard::ControlPlane, NodeNetwork};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::stats::Samples;

/// A process in a network namespace of its own; killed when dropped.
struct Netns(Child);

impl Netns {
    fn start() -> Result<Netns> {
        let child = Command::new("unshare")
            .args(["--net", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .context("cannot run unshare (Debian: util-linux)")?;
        let ours = std::fs::read_link("/proc/self/ns/net")?;
        let start = Instant::now();
        // unshare execs sleep once the namespace is made.
        while std::fs::read_link(format!("/proc/{}/ns/net", child.id())).ok() == Some(ours.clone())
        {
            if start.elapsed() > Duration::from_secs(5) {
                bail!("unshare --net made no namespace within 5s");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Netns(child))
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd`, an error with what it printed if it fails.
fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<()> {
    run(
        Command::new("ip").args(args),
        &format!("ip {}", args.join(" ")),
    )
}

fn nsenter_ip(pid: i32, args: &[&str]) -> Result<()> {
    run(
        Command::new("nsenter")
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .arg("ip")
            .args(args),
        &format!("nsenter ip {}", args.join(" ")),
    )
}

/// The attach as iproute2 commands, as the agent ran them before netlink.
fn attach_with_ip(bridge: &str, i: usize, pid: i32, addr: &str, gateway: &str) -> Result<()> {
    let (host, peer) = (format!("dvbh{i}"), format!("dvbc{i}"));
    ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer])?;
    ip(&["link", "set", "dev", &host, "alias", "drover-bench"])?;
    ip(&["link", "set", &host, "master", bridge, "up"])?;
    ip(&["link", "set", &peer, "netns", &pid.to_string()])?;
    nsenter_ip(pid, &["link", "set", &peer, "name", "eth0"])?;
    nsenter_ip(pid, &["addr", "add", addr, "dev", "eth0"])?;
    nsenter_ip(pid, &["link", "set", "eth0", "up"])?;
    nsenter_ip(pid, &["route", "add", "default", "via", gateway])?;
    Ok(())
}

/// `n` attaches each way, alternating: (netlink, iproute2).
pub fn report(n: usize) -> Result<(Samples, Samples)> {
    let dir = crate::ha::scratch("attach")?;
    // A subnet of its own, away from drover dev's 10.88.0.0/16.
    let subnet = "10.253.77.0/24";
    let net = NodeNetwork::setup("bench-attach", subnet, &dir, &ControlPlane::default())?;
    let gateway = net.gateway.to_string();
    let mut netlink = Vec::new();
    let mut iproute = Vec::new();
    let r = (|| -> Result<()> {
        for i in 0..n {
            let a = Netns::start()?;
            let id = format!("bench-{i}");
            let start = Instant::now();
            net.attach(
                &id,
                a.pid(),
                drover_agent::network::Access {
                    control_plane: false,
                    egress: true,
                },
            )?;
            netlink.push(start.elapsed());
            net.detach(&id);
            let b = Netns::start()?;
            // Addresses from the top of the subnet, away from the IPAM's.
            let addr = format!("10.253.77.{}/24", 250 - i % 100);
            let start = Instant::now();
            let done = attach_with_ip(&net.bridge, i, b.pid(), &addr, &gateway);
            iproute.push(start.elapsed());
            let _ = ip(&["link", "del", &format!("dvbh{i}")]);
            done?;
        }
        Ok(())
    })();
    net.teardown();
    let _ = std::fs::remove_dir_all(&dir);
    r?;
    Ok((
        Samples {
            name: "netlink (the agent)",
            durations: netlink,
        },
        Samples {
            name: "ip + nsenter ip",
            durations: iproute,
        },
    ))
}

/// `drover-bench attach`: prints the table.
pub fn command(n: usize) -> Result<i32> {
    let (nl, ip) = report(n)?;
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e3);
    let rows: Vec<Vec<String>> = [&nl, &ip]
        .iter()
        .map(|s| {
            vec![
                s.name.to_string(),
                s.durations.len().to_string(),
                ms(s.median()),
                ms(s.percentile(90)),
                ms(s.max()),
            ]
        })
        .collect();
    print!(
        "{}",
        drover_ctl::output::table(&["ATTACH", "N", "MEDIAN_MS", "P90_MS", "MAX_MS"], &rows)
    );
    Ok(0)
}
