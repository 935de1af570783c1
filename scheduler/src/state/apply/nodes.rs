//! Applying the commands that change nodes: registering, status,
//! schedulability, network health, removal.

use super::*;

impl State {
    pub(super) fn set_schedulable(
        &mut self,
        name: &str,
        schedulable: bool,
        drain: bool,
        at_ms: i64,
    ) -> CommandResult {
        let Some(node) = self.nodes.get_mut(name) else {
            return CommandResult::refused(Refusal::NoNode(name.to_string()));
        };
        let changed = node.schedulable != schedulable || node.draining != drain;
        node.schedulable = schedulable;
        node.draining = drain;
        node.updated_at_ms = at_ms;
        if changed {
            let (kind, message) = match (schedulable, drain) {
                (_, true) => (Kind::NodeDraining, "draining: its replicas move elsewhere"),
                (false, false) => (Kind::NodeCordoned, "cordoned: no new replicas"),
                (true, false) => (Kind::NodeUncordoned, "schedulable again"),
            };
            self.events
                .push(|| Event::new(kind, at_ms, message.into()).node(name));
        }
        CommandResult::ok(changed)
    }

    pub(super) fn register_node(
        &mut self,
        name: &str,
        address: &str,
        (cpu_millis, memory_bytes, disk_bytes): (u64, u64, u64),
        (volumes, labels, facts): (
            &std::collections::BTreeMap<String, bool>,
            &Attributes,
            &Attributes,
        ),
        at_ms: i64,
        cluster_cidr: &str,
    ) -> CommandResult {
        if name.is_empty() {
            return CommandResult::refused(Refusal::Invalid("a node needs a name".into()));
        }
        // One range for the whole cluster: the first proposed wins.
        if self.cluster_cidr.is_empty() && !cluster_cidr.is_empty() {
            self.cluster_cidr = cluster_cidr.to_string();
        }
        let cluster_cidr = self.cluster_cidr.clone();
        let has_subnet = self.nodes.get(name).is_some_and(|n| !n.subnet.is_empty());
        let subnet = if has_subnet || cluster_cidr.is_empty() {
            None
        } else {
            let taken = self.nodes.values().map(|n| n.subnet.as_str());
            match super::subnet::next_free(&cluster_cidr, taken) {
                Some(s) => Some(s),
                None => {
                    return CommandResult::refused(Refusal::Conflict(format!(
                        "no free /24 left in the cluster range {cluster_cidr} ({} nodes hold one): \
                         remove nodes that are gone with `drover node rm`",
                        self.nodes.values().filter(|n| !n.subnet.is_empty()).count()
                    )))
                }
            }
        };
        let was = self.nodes.get(name).map(|n| n.status);
        let node = self.nodes.entry(name.to_string()).or_insert_with(|| Node {
            name: name.to_string(),
            address: String::new(),
            cpu_millis: 0,
            memory_bytes: 0,
            status: NodeStatus::Ready,
            schedulable: true,
            draining: false,
            subnet: String::new(),
            network_error: String::new(),
            volumes: Default::default(),
            disk_bytes: 0,
            labels: Default::default(),
            label_overrides: Default::default(),
            facts: Default::default(),
            registered_at_ms: at_ms,
            updated_at_ms: at_ms,
        });
        node.address = address.to_string();
        node.cpu_millis = cpu_millis;
        node.memory_bytes = memory_bytes;
        node.disk_bytes = disk_bytes;
        node.volumes = volumes.clone();
        node.labels = labels.clone();
        node.facts = facts.clone();
        node.status = NodeStatus::Ready;
        node.updated_at_ms = at_ms;
        if let Some(s) = subnet {
            node.subnet = s;
        }
        match was {
            None => self.events.push(|| {
                Event::new(
                    Kind::NodeRegistered,
                    at_ms,
                    format!(
                        "registered from {address}: {} cpu millis, {} MiB, subnet {}",
                        node.cpu_millis,
                        node.memory_bytes >> 20,
                        if node.subnet.is_empty() {
                            "none"
                        } else {
                            &node.subnet
                        }
                    ),
                )
                .node(name)
            }),
            Some(NodeStatus::Down) => self.events.push(|| {
                Event::new(
                    Kind::NodeReady,
                    at_ms,
                    "ready: its agent registered again".into(),
                )
                .node(name)
            }),
            Some(NodeStatus::Ready) => {}
        }
        CommandResult {
            note: node.subnet.clone(),
            ..CommandResult::ok(true)
        }
    }

    pub(super) fn set_node_labels(
        &mut self,
        name: &str,
        labels: &std::collections::BTreeMap<String, Option<String>>,
        at_ms: i64,
    ) -> CommandResult {
        use drover_proto::spec::constraint::{label_key, label_value};
        for (k, v) in labels {
            if let Err(m) = label_key(k).and_then(|()| v.as_deref().map_or(Ok(()), label_value)) {
                return CommandResult::refused(Refusal::Invalid(format!("label {k}: {m}")));
            }
        }
        let Some(node) = self.nodes.get_mut(name) else {
            return CommandResult::refused(Refusal::NoNode(name.to_string()));
        };
        let before = node.labels_in_force();
        for (k, v) in labels {
            node.label_overrides.insert(k.clone(), v.clone());
        }
        node.updated_at_ms = at_ms;
        let changed = node.labels_in_force() != before;
        if changed {
            self.events.push(|| {
                let said: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| match v {
                        Some(v) => format!("{k}={v}"),
                        None => format!("{k} removed"),
                    })
                    .collect();
                Event::new(
                    Kind::NodeLabelled,
                    at_ms,
                    format!("labels: {}", said.join(", ")),
                )
                .node(name)
            });
        }
        CommandResult::ok(changed)
    }

    pub(super) fn remove_node(&mut self, name: &str, reason: &str, at_ms: i64) -> CommandResult {
        let Some(node) = self.nodes.get(name) else {
            return CommandResult::refused(Refusal::NoNode(name.to_string()));
        };
        if node.status != NodeStatus::Down {
            return CommandResult::refused(Refusal::Conflict(format!(
                "node {name} is {}: only a node that is down can be removed (stop its agent first; a running agent registers again)",
                node.status.as_str()
            )));
        }
        self.nodes.remove(name);
        self.events
            .push(|| Event::new(Kind::NodeRemoved, at_ms, format!("removed: {reason}")).node(name));
        let mut count = 0;
        let mut lost = Vec::new();
        for a in self.allocations.values_mut().filter(|a| a.node == name) {
            if a.desired == Desired::Run && !a.state.is_terminal() {
                lost.push((a.job.clone(), a.version, a.generation));
                self.events
                    .push(|| lost_event(a, "its node was removed", at_ms));
            }
            if a.desired == Desired::Run {
                a.desired = Desired::Stop;
                a.desired_reason = format!("node removed: {reason}");
                a.updated_at_ms = at_ms;
                count += 1;
            }
            if !a.state.is_terminal() {
                a.state = AllocState::Failed;
                a.pid = 0;
            }
        }
        for (job, version, generation) in lost {
            if let Some(j) = self.jobs.get_mut(&job) {
                j.count_batch_end(version, generation, false, at_ms);
            }
        }
        CommandResult {
            count,
            ..CommandResult::ok(true)
        }
    }

    pub(super) fn set_node_status(
        &mut self,
        name: &str,
        status: NodeStatus,
        at_ms: i64,
    ) -> CommandResult {
        let Some(node) = self.nodes.get_mut(name) else {
            return CommandResult::refused(Refusal::NoNode(name.to_string()));
        };
        if node.status == status {
            return CommandResult::ok(false);
        }
        node.status = status;
        node.updated_at_ms = at_ms;
        self.events.push(|| match status {
            NodeStatus::Down => Event::new(
                Kind::NodeDown,
                at_ms,
                "down: its agent stopped heartbeating".into(),
            )
            .node(name),
            NodeStatus::Ready => {
                Event::new(Kind::NodeReady, at_ms, "ready: heartbeating again".into()).node(name)
            }
        });
        if status == NodeStatus::Down {
            // Its allocations are lost: the reconciler replaces them elsewhere. When the
            // node returns, its agent sees they are no longer desired and stops them.
            let jobs = &self.jobs;
            let keeps_running = |job: &str, version: u64| {
                jobs.get(job)
                    .and_then(|j| j.version(version))
                    .is_some_and(|v| v.spec.on_disconnect == OnDisconnect::KeepRunning)
            };
            let mut lost = Vec::new();
            for a in self.allocations.values_mut().filter(|a| a.node == name) {
                // Replicas that asked to keep running were not stopped by their
                // agent, so they must not be started elsewhere: they stay, and
                // count, until the node is back or removed.
                if keeps_running(&a.job, a.version) {
                    continue;
                }
                if a.desired == Desired::Run && !a.state.is_terminal() {
                    lost.push((a.job.clone(), a.version, a.generation));
                    self.events
                        .push(|| lost_event(a, "its node is down: replaced", at_ms));
                }
                if a.desired == Desired::Run {
                    a.desired = Desired::Stop;
                    a.desired_reason = "node down: replaced".into();
                    a.updated_at_ms = at_ms;
                }
                if !a.state.is_terminal() {
                    a.state = AllocState::Failed;
                    a.pid = 0;
                }
            }
            // A batch replica lost with its node is a failure (it is retried).
            for (job, version, generation) in lost {
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.count_batch_end(version, generation, false, at_ms);
                }
            }
        }
        CommandResult::ok(true)
    }

    pub(super) fn set_node_network(
        &mut self,
        name: &str,
        error: &str,
        at_ms: i64,
    ) -> CommandResult {
        let Some(node) = self.nodes.get_mut(name) else {
            return CommandResult::refused(Refusal::NoNode(name.to_string()));
        };
        if node.network_error == error {
            return CommandResult::ok(false);
        }
        // Not `updated_at_ms`: that dates the node's status (how long it has been down).
        node.network_error = error.to_string();
        self.events.push(|| {
            if error.is_empty() {
                Event::new(
                    Kind::NodeNetworkUp,
                    at_ms,
                    "container network works again".into(),
                )
            } else {
                Event::new(
                    Kind::NodeNetworkDown,
                    at_ms,
                    format!("container network unavailable: {error}"),
                )
            }
            .node(name)
        });
        CommandResult::ok(true)
    }
}

fn lost_event(a: &Allocation, why: &str, at_ms: i64) -> Event {
    Event::new(Kind::AllocLost, at_ms, format!("{} lost: {why}", a.name))
        .job(&a.job, a.version)
        .alloc(&a.id)
        .node(&a.node)
}
