//! The client API (`drover.v1.Drover`): what the `drover` CLI calls.
//!
//! Writes go through Raft; reads are linearizable unless the request asks
//! for a stale read. Specs are parsed and validated here again, before any
//! command is proposed, so a bad request changes nothing. Each call
//! checks the caller's ACL token first (see `super::access`): `read` for
//! inspecting, `operate` for changing, on the job it concerns; a token
//! fenced to some jobs sees only those.

use super::access;
use super::convert;
use crate::cluster::Peer;
use crate::state::acl::{Permission, Token};
use crate::state::{Command, Desired, SecretKind};
use drover_proto::pb::{self, drover_server::Drover};
use tonic::{Request, Response, Status};

pub struct ClientApi {
    pub peer: Peer,
    /// This peer's certificate and key, which sign agent tickets
    /// (`None` without TLS: agents then take calls without one).
    pub signer: Option<drover_proto::pki::tls::LiveTls>,
    /// Seals secrets before they are proposed (see `crate::secrets`).
    pub secrets: std::sync::Arc<crate::secrets::SecretKey>,
    /// The events this peer applied (see `crate::events`).
    pub events: std::sync::Arc<crate::events::EventHub>,
    /// Says when the peer stops: following streams end.
    pub stop: tokio::sync::broadcast::Sender<()>,
}

/// A stream of event batches.
pub type EventStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::EventBatch, Status>> + Send>>;

fn kind_of(word: &str) -> Result<SecretKind, Status> {
    SecretKind::parse(word)
        .ok_or_else(|| Status::invalid_argument(format!("kind: {word:?} is not secret or config")))
}

fn stale(r: &Option<pb::ReadOptions>) -> bool {
    r.as_ref().is_some_and(|r| r.stale)
}

/// Whether a token (if any) sees job `job`.
fn sees(token: &Option<Token>, job: &str) -> bool {
    token.as_ref().is_none_or(|t| t.sees(job))
}

fn request_id(id: &str) -> String {
    if id.is_empty() {
        format!("{:032x}", rand::random::<u128>())
    } else {
        id.to_string()
    }
}

#[tonic::async_trait]
impl Drover for ClientApi {
    type EventsStream = EventStream;

    async fn events(
        &self,
        req: Request<pb::EventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        use crate::events::{Filter, Gone, Start};
        let job = Some(req.get_ref().job.clone()).filter(|j| !j.is_empty());
        let token = access::check(
            &self.peer,
            &req,
            Permission::Read,
            job.as_deref(),
            "follow events",
        )?;
        // A token fenced to some jobs sees only their events.
        let job_prefix = token
            .map(|t| t.job_prefix.clone())
            .filter(|p| !p.is_empty());
        let r = req.into_inner();
        let mut topics = Vec::new();
        for t in &r.topics {
            match convert::topic_from_wire(*t) {
                Some(t) => topics.push(t),
                None => {
                    return Err(Status::invalid_argument(format!(
                        "topics: {t} is not a topic (job, rollout, alloc, node, cluster)"
                    )))
                }
            }
        }
        let start = if r.from_index > 0 || r.from_seq > 0 {
            Start::At(r.from_index, r.from_seq)
        } else if r.since_ms > 0 {
            Start::Since(r.since_ms)
        } else if r.follow {
            Start::Next
        } else {
            Start::Oldest
        };
        let gone = |e: Gone| match e {
            Gone::TooSlow { .. } => Status::resource_exhausted(e.to_string()),
            Gone::NotKept { .. } => Status::out_of_range(e.to_string()),
        };
        let mut sub = self
            .events
            .subscribe(
                start,
                Filter {
                    topics,
                    job,
                    job_prefix,
                },
            )
            .map_err(gone)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut stop = self.stop.subscribe();
        let follow = r.follow;
        tokio::spawn(async move {
            loop {
                match sub.poll() {
                    Err(e) => {
                        let _ = tx.send(Err(gone(e))).await;
                        return;
                    }
                    Ok(Some(batch)) => {
                        let batch = pb::EventBatch {
                            pre_encoded: batch.bytes,
                            ..Default::default()
                        };
                        // A reader that stopped reading must not hold up
                        // the peer's shutdown.
                        tokio::select! {
                            sent = tx.send(Ok(batch)) => if sent.is_err() { return },
                            _ = stop.recv() => return,
                        }
                    }
                    Ok(None) if !follow => return,
                    Ok(None) => {
                        tokio::select! {
                            more = sub.changed() => if !more { return },
                            _ = tx.closed() => return,
                            _ = stop.recv() => return,
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn submit_job(
        &self,
        req: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        // Who it is first: a caller without a token learns nothing, not
        // even whether its spec is valid.
        access::check(&self.peer, &req, Permission::Read, None, "submit jobs")?;
        let spec = drover_proto::spec::from_json(&req.get_ref().spec_json)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let name = spec.name.clone();
        access::check(
            &self.peer,
            &req,
            Permission::Operate,
            Some(&name),
            &format!("submit job {name:?}"),
        )?;
        // What reaches past a container's walls (the node's network, the
        // control plane, capabilities beyond the default set, a weaker
        // seccomp filter) is for
        // administrators, as Kubernetes keeps privileged pods for them.
        let mut privileged = Vec::new();
        if spec.network == drover_proto::spec::Network::Host {
            privileged.push("network: host");
        }
        if spec.security.control_plane_access {
            privileged.push("security.control_plane_access");
        }
        if !spec.security.capabilities.add.is_empty() {
            privileged.push("security.capabilities.add");
        }
        // Without the default filter a replica reaches more of the kernel;
        // a custom profile may allow anything.
        if !spec.security.seccomp.is_default() {
            privileged.push("security.seccomp");
        }
        if spec.security.seccomp_profile.is_some() {
            privileged.push("security.seccomp_profile");
        }
        // Opting out of the agents' user namespaces.
        if spec.security.user_namespace == Some(false) {
            privileged.push("security.user_namespace: false");
        }
        // A replica reads what it mounts: only those who manage every
        // secret (admins of the whole cluster, not of some jobs) may hand
        // them to a job.
        if !spec.secrets.is_empty() {
            access::check(
                &self.peer,
                &req,
                Permission::Admin,
                None,
                &format!("submit job {name:?} with secrets"),
            )?;
        }
        if !privileged.is_empty() {
            access::check(
                &self.peer,
                &req,
                Permission::Admin,
                Some(&name),
                &format!("submit job {name:?} with {}", privileged.join(", ")),
            )?;
        }
        let req = req.into_inner();
        let r = self
            .peer
            .write(Command::SubmitJob {
                request_id: request_id(&req.request_id),
                spec: Box::new(spec),
                at_ms: crate::clock::now_ms(),
            })
            .await?;
        let r = r.accepted()?;
        let index = *self.peer.applied.borrow();
        Ok(Response::new(pb::SubmitJobResponse {
            name,
            version: r.version,
            changed: r.changed,
            index,
            note: r.note,
        }))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let token = access::check(&self.peer, &req, Permission::Read, None, "list jobs")?;
        let (jobs, read) = self
            .peer
            .read(stale(&req.get_ref().read), |s| {
                s.jobs
                    .values()
                    .filter(|j| sees(&token, &j.name))
                    .map(|j| convert::job_summary(s, j))
                    .collect()
            })
            .await?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs,
            read: Some(read),
        }))
    }

    async fn get_job(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::JobStatus>, Status> {
        let name = req.get_ref().name.clone();
        access::check(
            &self.peer,
            &req,
            Permission::Read,
            Some(&name),
            &format!("read job {name:?}"),
        )?;
        let req = req.into_inner();
        let (job, read) = self
            .peer
            .read(stale(&req.read), |s| {
                s.jobs.get(&req.name).map(|j| convert::job(s, j))
            })
            .await?;
        let mut job =
            job.ok_or_else(|| Status::not_found(format!("no job named {:?}", req.name)))?;
        job.read = Some(read);
        Ok(Response::new(job))
    }

    async fn stop_job(
        &self,
        req: Request<pb::StopJobRequest>,
    ) -> Result<Response<pb::StopJobResponse>, Status> {
        let name = req.get_ref().name.clone();
        access::check(
            &self.peer,
            &req,
            Permission::Operate,
            Some(&name),
            &format!("stop job {name:?}"),
        )?;
        let req = req.into_inner();
        let exists = self
            .peer
            .read(false, |s| s.jobs.contains_key(&req.name))
            .await?
            .0;
        if !exists {
            return Err(Status::not_found(format!("no job named {:?}", req.name)));
        }
        let r = self
            .peer
            .write(Command::StopJob {
                request_id: request_id(&req.request_id),
                name: req.name.clone(),
                purge: req.purge,
                at_ms: crate::clock::now_ms(),
            })
            .await?;
        let r = r.accepted()?;
        Ok(Response::new(pb::StopJobResponse { stopping: r.count }))
    }

    async fn list_allocations(
        &self,
        req: Request<pb::ListAllocationsRequest>,
    ) -> Result<Response<pb::ListAllocationsResponse>, Status> {
        let job = Some(req.get_ref().job.clone()).filter(|j| !j.is_empty());
        let token = access::check(
            &self.peer,
            &req,
            Permission::Read,
            job.as_deref(),
            &format!(
                "list the allocations of job {:?}",
                job.as_deref().unwrap_or("")
            ),
        )?;
        let req = req.into_inner();
        let (allocations, read) = self
            .peer
            .read(stale(&req.read), |s| {
                if !req.job.is_empty() && !s.jobs.contains_key(&req.job) {
                    return Err(Status::not_found(format!("no job named {:?}", req.job)));
                }
                let mut out: Vec<pb::Allocation> = s
                    .allocations
                    .values()
                    .filter(|a| req.job.is_empty() || a.job == req.job)
                    .filter(|a| sees(&token, &a.job))
                    .filter(|a| req.all || a.desired == Desired::Run || !a.state.is_terminal())
                    .map(|a| convert::allocation(s, a))
                    .collect();
                out.sort_by(|a, b| {
                    (&a.job, a.replica, a.created_at_ms).cmp(&(&b.job, b.replica, b.created_at_ms))
                });
                Ok(out)
            })
            .await?;
        Ok(Response::new(pb::ListAllocationsResponse {
            allocations: allocations?,
            read: Some(read),
        }))
    }

    async fn get_allocation(
        &self,
        req: Request<pb::GetAllocationRequest>,
    ) -> Result<Response<pb::Allocation>, Status> {
        let token = access::check(&self.peer, &req, Permission::Read, None, "read allocations")?;
        let req = req.into_inner();
        let (a, _) = self
            .peer
            .read(stale(&req.read), |s| {
                let a = s.find_allocation(&req.id).map_err(Status::not_found)?;
                // Another team's allocation is as absent as one that never
                // was: its job's name is not this token's to learn.
                if !sees(&token, &a.job) {
                    return Err(Status::not_found(format!(
                        "no allocation with id {:?}",
                        req.id
                    )));
                }
                Ok(convert::allocation(s, a))
            })
            .await?;
        Ok(Response::new(a?))
    }

    async fn list_nodes(
        &self,
        req: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        access::check(&self.peer, &req, Permission::Read, None, "list nodes")?;
        let (nodes, read) = self
            .peer
            .read(stale(&req.get_ref().read), |s| {
                let usage = s.usage();
                s.nodes.values().map(|n| convert::node(&usage, n)).collect()
            })
            .await?;
        Ok(Response::new(pb::ListNodesResponse {
            nodes,
            read: Some(read),
        }))
    }

    async fn scale_job(
        &self,
        req: Request<pb::ScaleJobRequest>,
    ) -> Result<Response<pb::JobActionResponse>, Status> {
        self.may_operate(&req, &req.get_ref().name, "scale")?;
        let req = req.into_inner();
        if req.replicas > 10_000 {
            return Err(Status::invalid_argument(format!(
                "replicas: {} is more than the maximum of 10000",
                req.replicas
            )));
        }
        self.job_action(Command::ScaleJob {
            request_id: request_id(&req.request_id),
            name: req.name,
            replicas: req.replicas,
            at_ms: crate::clock::now_ms(),
        })
        .await
    }

    async fn rollback_job(
        &self,
        req: Request<pb::RollbackJobRequest>,
    ) -> Result<Response<pb::JobActionResponse>, Status> {
        self.may_operate(&req, &req.get_ref().name, "roll back")?;
        let req = req.into_inner();
        self.job_action(Command::RollbackJob {
            request_id: request_id(&req.request_id),
            name: req.name,
            to: req.to,
            reason: String::new(),
            at_ms: crate::clock::now_ms(),
            expect: None,
        })
        .await
    }

    async fn promote_job(
        &self,
        req: Request<pb::JobActionRequest>,
    ) -> Result<Response<pb::JobActionResponse>, Status> {
        self.may_operate(&req, &req.get_ref().name, "promote")?;
        let req = req.into_inner();
        self.job_action(Command::PromoteJob {
            request_id: request_id(&req.request_id),
            name: req.name,
            at_ms: crate::clock::now_ms(),
        })
        .await
    }

    async fn pause_job(
        &self,
        req: Request<pb::PauseJobRequest>,
    ) -> Result<Response<pb::JobActionResponse>, Status> {
        self.may_operate(&req, &req.get_ref().name, "pause")?;
        let req = req.into_inner();
        self.job_action(Command::PauseJob {
            request_id: request_id(&req.request_id),
            name: req.name,
            paused: req.paused,
            at_ms: crate::clock::now_ms(),
        })
        .await
    }

    async fn restart_job(
        &self,
        req: Request<pb::JobActionRequest>,
    ) -> Result<Response<pb::JobActionResponse>, Status> {
        self.may_operate(&req, &req.get_ref().name, "restart")?;
        let req = req.into_inner();
        self.job_action(Command::RestartJob {
            request_id: request_id(&req.request_id),
            name: req.name,
            at_ms: crate::clock::now_ms(),
        })
        .await
    }

    async fn launch_job(
        &self,
        req: Request<pb::JobActionRequest>,
    ) -> Result<Response<pb::JobActionResponse>, Status> {
        self.may_operate(&req, &req.get_ref().name, "launch")?;
        let req = req.into_inner();
        self.job_action(Command::LaunchRun {
            request_id: request_id(&req.request_id),
            name: req.name,
            scheduled_ms: None,
            at_ms: crate::clock::now_ms(),
        })
        .await
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        access::check(&self.peer, &req, Permission::Operate, None, "remove nodes")?;
        let name = req.into_inner().name;
        let r = self
            .peer
            .write(Command::RemoveNode {
                name: name.clone(),
                reason: "removed by a user".into(),
                at_ms: crate::clock::now_ms(),
            })
            .await?;
        let r = r.accepted()?;
        Ok(Response::new(pb::RemoveNodeResponse { replaced: r.count }))
    }

    async fn set_node_labels(
        &self,
        req: Request<pb::SetNodeLabelsRequest>,
    ) -> Result<Response<pb::SetNodeLabelsResponse>, Status> {
        access::check(&self.peer, &req, Permission::Operate, None, "label nodes")?;
        let req = req.into_inner();
        let mut labels: std::collections::BTreeMap<String, Option<String>> =
            req.set.into_iter().map(|(k, v)| (k, Some(v))).collect();
        for k in req.remove {
            if labels.insert(k.clone(), None).is_some() {
                return Err(Status::invalid_argument(format!(
                    "label {k} is both set and removed"
                )));
            }
        }
        if labels.is_empty() {
            return Err(Status::invalid_argument(
                "no label to set (KEY=VALUE) or remove (KEY-)",
            ));
        }
        let r = self
            .peer
            .write(Command::SetNodeLabels {
                name: req.name.clone(),
                labels,
                at_ms: crate::clock::now_ms(),
            })
            .await?;
        r.accepted()?;
        let (labels, _) = self
            .peer
            .read(false, |s| {
                s.nodes
                    .get(&req.name)
                    .map(|n| n.labels_in_force().into_iter().collect())
                    .unwrap_or_default()
            })
            .await?;
        Ok(Response::new(pb::SetNodeLabelsResponse { labels }))
    }

    async fn set_node_schedulable(
        &self,
        req: Request<pb::SetNodeSchedulableRequest>,
    ) -> Result<Response<pb::SetNodeSchedulableResponse>, Status> {
        access::check(
            &self.peer,
            &req,
            Permission::Operate,
            None,
            "cordon or drain nodes",
        )?;
        let req = req.into_inner();
        let r = self
            .peer
            .write(Command::SetNodeSchedulable {
                name: req.name.clone(),
                schedulable: req.schedulable,
                drain: req.drain,
                at_ms: crate::clock::now_ms(),
            })
            .await?;
        r.accepted()?;
        let (allocations, _) = self
            .peer
            .read(false, |s| {
                s.allocations
                    .values()
                    .filter(|a| a.node == req.name && a.desired == Desired::Run)
                    .count() as u32
            })
            .await?;
        Ok(Response::new(pb::SetNodeSchedulableResponse {
            allocations,
        }))
    }

    async fn put_secret(
        &self,
        req: Request<pb::PutSecretRequest>,
    ) -> Result<Response<pb::PutSecretResponse>, Status> {
        let kind = kind_of(&req.get_ref().kind)?;
        let permission = match kind {
            SecretKind::Secret => Permission::Admin,
            SecretKind::Config => Permission::Operate,
        };
        let what = format!("store {}s", kind.word());
        access::check(&self.peer, &req, permission, None, &what)?;
        let req = req.into_inner();
        drover_proto::spec::dns_label(&req.name)
            .map_err(|e| Status::invalid_argument(format!("name: {e}")))?;
        if req.data.len() > crate::secrets::MAX_SIZE {
            return Err(Status::invalid_argument(format!(
                "data: {} bytes is more than the maximum of {} (256Ki)",
                req.data.len(),
                crate::secrets::MAX_SIZE
            )));
        }
        let create = match req.mode.as_str() {
            "create" | "" => true,
            "update" => false,
            m => {
                return Err(Status::invalid_argument(format!(
                    "mode: {m:?} is not create or update"
                )))
            }
        };
        let data = match kind {
            SecretKind::Secret => self.secrets.seal(&req.name, &req.data),
            SecretKind::Config => req.data.clone(),
        };
        let r = self
            .peer
            .write(Command::PutSecret {
                request_id: request_id(&req.request_id),
                kind,
                name: req.name,
                data,
                size: req.data.len() as u64,
                create,
                key_id: match kind {
                    SecretKind::Secret => self.secrets.id(),
                    SecretKind::Config => String::new(),
                },
                at_ms: crate::clock::now_ms(),
            })
            .await?
            .accepted()?;
        let (rolling, restarted): (Vec<String>, Vec<String>) = r
            .note
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .partition(|s| s.starts_with('-'));
        Ok(Response::new(pb::PutSecretResponse {
            version: r.version,
            restarted,
            rolling: rolling
                .iter()
                .map(|s| s.trim_start_matches('-').to_string())
                .collect(),
        }))
    }

    async fn list_secrets(
        &self,
        req: Request<pb::ListSecretsRequest>,
    ) -> Result<Response<pb::ListSecretsResponse>, Status> {
        let kind = kind_of(&req.get_ref().kind)?;
        let what = format!("list {}s", kind.word());
        let token = access::check(&self.peer, &req, Permission::Read, None, &what)?;
        let (secrets, read) = self
            .peer
            .read(stale(&req.get_ref().read), |s| {
                s.stored(kind)
                    .iter()
                    .map(|(name, v)| pb::SecretInfo {
                        name: name.clone(),
                        kind: kind.word().into(),
                        version: v.version,
                        size: v.size,
                        created_at_ms: v.created_at_ms,
                        updated_at_ms: v.updated_at_ms,
                        // Only the jobs the caller sees.
                        used_by: s
                            .jobs_using(kind, name)
                            .into_iter()
                            .filter(|j| sees(&token, j))
                            .collect(),
                    })
                    .collect()
            })
            .await?;
        Ok(Response::new(pb::ListSecretsResponse {
            secrets,
            read: Some(read),
        }))
    }

    async fn delete_secret(
        &self,
        req: Request<pb::DeleteSecretRequest>,
    ) -> Result<Response<pb::DeleteSecretResponse>, Status> {
        let kind = kind_of(&req.get_ref().kind)?;
        let permission = match kind {
            SecretKind::Secret => Permission::Admin,
            SecretKind::Config => Permission::Operate,
        };
        let what = format!("delete {}s", kind.word());
        access::check(&self.peer, &req, permission, None, &what)?;
        let req = req.into_inner();
        self.peer
            .write(Command::DeleteSecret {
                request_id: request_id(&req.request_id),
                kind,
                name: req.name,
                at_ms: crate::clock::now_ms(),
            })
            .await?
            .accepted()?;
        Ok(Response::new(pb::DeleteSecretResponse {}))
    }

    async fn agent_ticket(
        &self,
        req: Request<pb::AgentTicketRequest>,
    ) -> Result<Response<pb::AgentTicketResponse>, Status> {
        use drover_proto::pki::ticket::{Action, Ticket};
        let action = Action::parse(&req.get_ref().action).ok_or_else(|| {
            Status::invalid_argument(format!(
                "action: {:?} is not exec, logs or usage",
                req.get_ref().action
            ))
        })?;
        // Authenticated first; the job is known once the allocation is found.
        let token = access::check(&self.peer, &req, Permission::Read, None, "use agents")?;
        let (found, _) = self
            .peer
            .read(false, |s| {
                s.find_allocation(&req.get_ref().alloc_id)
                    .map(|a| {
                        let address = s
                            .nodes
                            .get(&a.node)
                            .map(|n| n.address.clone())
                            .unwrap_or_default();
                        (a.id.clone(), a.job.clone(), a.node.clone(), address)
                    })
                    .map_err(Status::not_found)
            })
            .await?;
        let (alloc, job, node, node_address) = found?;
        if !sees(&token, &job) {
            return Err(Status::not_found(format!(
                "no allocation with id {:?}",
                req.get_ref().alloc_id
            )));
        }
        let permission = match action {
            Action::Exec => Permission::Exec,
            Action::Logs => Permission::Logs,
            Action::Usage => Permission::Read,
        };
        let what = match action {
            Action::Exec => format!("run commands in replicas of job {job:?}"),
            Action::Logs => format!("read the output of job {job:?}"),
            Action::Usage => format!("read the usage of job {job:?}"),
        };
        access::check(&self.peer, &req, permission, Some(&job), &what)?;
        let holder = match drover_proto::pki::tls::peer_identity(&req) {
            Some(drover_proto::pki::Identity::Client(n)) => n.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let ticket = match &self.signer {
            Some(live) => Ticket::new(action, &alloc, &node, &holder, std::time::SystemTime::now())
                .sign(&live.material().credential)
                .map_err(|e| Status::internal(format!("cannot sign a ticket: {e}")))?,
            None => String::new(),
        };
        Ok(Response::new(pb::AgentTicketResponse {
            ticket,
            alloc_id: alloc,
            node_address,
        }))
    }
}

impl ClientApi {
    /// Checks the caller may `verb` job `name`.
    fn may_operate<T>(&self, req: &Request<T>, name: &str, verb: &str) -> Result<(), Status> {
        access::check(
            &self.peer,
            req,
            Permission::Operate,
            Some(name),
            &format!("{verb} job {name:?}"),
        )
        .map(|_| ())
    }

    /// Proposes a job command; a refusal is the user's error, with its reason.
    async fn job_action(&self, cmd: Command) -> Result<Response<pb::JobActionResponse>, Status> {
        let r = self.peer.write(cmd).await?.accepted()?;
        Ok(Response::new(pb::JobActionResponse {
            version: r.version,
            note: r.note,
        }))
    }
}
