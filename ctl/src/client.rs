//! Connecting to the scheduler (the first peer of `--addr` that answers)
//! and to agents (for logs).

pub use crate::backoff::Backoff;
use anyhow::{anyhow, Context, Result};
use drover_proto::pb::{
    agent_api_client::AgentApiClient, cluster_client::ClusterClient, drover_client::DroverClient,
};
use drover_proto::pki::tls::ClientTls;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Where `drover` looks for credentials when given none.
pub const DEFAULT_PKI_DIRS: &[&str] = &["/var/lib/drover/dev/pki", "/var/lib/drover/scheduler/pki"];

/// How this process dials schedulers and agents (set once, from the
/// command line, before the first connection).
type Dial = Result<(ClientTls, ClientTls), String>;
static DIAL: RwLock<Option<Dial>> = RwLock::new(None);
/// The files the credentials in use came from: CA certificates,
/// certificate, key (`drover cluster rotate-ca` updates them).
static PATHS: RwLock<Option<[PathBuf; 3]>> = RwLock::new(None);
/// The arguments the credentials were resolved from (to resolve again).
static ARGS: RwLock<Option<crate::cli::CredentialArgs>> = RwLock::new(None);
/// The ACL token to present, if any (resolved with the credentials).
static TOKEN: RwLock<Option<Option<String>>> = RwLock::new(None);

/// Resolves the credentials the command line and environment name (see
/// [`crate::cli::CredentialArgs`]); errors wait until a connection is made,
/// so commands that connect nowhere work without any.
pub fn set_credentials(args: &crate::cli::CredentialArgs) {
    *ARGS.write().unwrap_or_else(|e| e.into_inner()) = Some(args.clone());
    *DIAL.write().unwrap_or_else(|e| e.into_inner()) = Some(resolve(args));
    *TOKEN.write().unwrap_or_else(|e| e.into_inner()) = Some(resolve_token(args));
}

/// `--token`/`DROVER_TOKEN`, or the `token` file beside the credentials
/// in use (`drover dev` keeps its admin token there).
fn resolve_token(a: &crate::cli::CredentialArgs) -> Option<String> {
    if let Some(t) = a.token.as_ref().filter(|t| !t.trim().is_empty()) {
        return Some(t.trim().to_string());
    }
    let dir = a.pki_dir.clone().or_else(|| {
        if a.cert.is_some() {
            return None;
        }
        DEFAULT_PKI_DIRS
            .iter()
            .map(PathBuf::from)
            .find(|d| d.join("admin.pem").exists())
    })?;
    let t = std::fs::read_to_string(dir.join("token")).ok()?;
    Some(t.trim().to_string()).filter(|t| !t.is_empty())
}

/// The files of the credentials in use: [CA certificates, certificate,
/// key] (`None` without TLS, or before the first connection).
pub fn credential_paths() -> Option<[PathBuf; 3]> {
    PATHS.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Reads the credentials again (their files changed).
pub fn reload_credentials() {
    let args = ARGS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default();
    set_credentials(&args);
}

/// The ACL token this process presents, if any.
pub fn token() -> Option<String> {
    let mut t = TOKEN.write().unwrap_or_else(|e| e.into_inner());
    t.get_or_insert_with(|| resolve_token(&Default::default()))
        .clone()
}

/// Uses the admin credential in `dir` from now on (benches that start
/// clusters of their own).
pub fn use_pki_dir(dir: &Path) {
    set_credentials(&crate::cli::CredentialArgs {
        pki_dir: Some(dir.to_path_buf()),
        ..Default::default()
    })
}

fn resolve(a: &crate::cli::CredentialArgs) -> Result<(ClientTls, ClientTls), String> {
    if a.insecure_plaintext {
        return Ok((ClientTls::Plain, ClientTls::Plain));
    }
    // A file the user named that is not there is the first thing to fix.
    for (given, what) in [
        (&a.ca_cert, "CA certificate"),
        (&a.cert, "client certificate"),
        (&a.key, "client key"),
    ] {
        if let Some(p) = given.as_ref().filter(|p| !p.exists()) {
            return Err(format!("{what} {}: no such file", p.display()));
        }
    }
    let dir: Option<PathBuf> = a.pki_dir.clone().or_else(|| {
        if a.ca_cert.is_some() && a.cert.is_some() && a.key.is_some() {
            return None;
        }
        DEFAULT_PKI_DIRS
            .iter()
            .map(PathBuf::from)
            .find(|d| d.join("admin.pem").exists())
    });
    let pick = |given: &Option<PathBuf>, file: &str, flag: &str| -> Result<PathBuf, String> {
        given
            .clone()
            .or_else(|| dir.as_ref().map(|d| d.join(file)))
            .ok_or_else(|| {
                format!(
                "no {flag} given and no credentials found (looked in {}): set DROVER_PKI_DIR to \
                 the pki dir of `drover dev` or of the scheduler that made the CA, or give \
                 --ca-cert, --cert and --key",
                DEFAULT_PKI_DIRS.join(", ")
            )
            })
    };
    let read = |p: &Path, what: &str| {
        std::fs::read_to_string(p).map_err(|e| format!("{what} {}: {e}", p.display()))
    };
    let paths = [
        pick(&a.ca_cert, "ca.pem", "--ca-cert")?,
        pick(&a.cert, "admin.pem", "--cert")?,
        pick(&a.key, "admin.key", "--key")?,
    ];
    let ca_pem = read(&paths[0], "CA certificate")?;
    let credential = drover_proto::pki::Credential::load_files(&paths[1], &paths[2])
        .map_err(|e| format!("client certificate and key: {e}"))?;
    *PATHS.write().unwrap_or_else(|e| e.into_inner()) = Some(paths);
    let config = drover_proto::pki::tls::client_config(&ca_pem, Some(&credential))
        .map_err(|e| e.to_string())?;
    Ok((
        ClientTls::new(config.clone(), drover_proto::pki::SCHEDULER_NAME),
        ClientTls::new(config, drover_proto::pki::AGENT_NAME),
    ))
}

fn dial(agent: bool) -> Result<ClientTls, anyhow::Error> {
    let mut d = DIAL.write().unwrap_or_else(|e| e.into_inner());
    match d.get_or_insert_with(|| resolve(&Default::default())) {
        Ok((s, a)) => Ok(if agent { a.clone() } else { s.clone() }),
        Err(e) => Err(anyhow!("{e}")),
    }
}

/// How long a peer may take to answer before the next one is tried.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

fn url(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

async fn channel(addr: &str, tls: &ClientTls) -> Result<Channel, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(url(addr))?
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(2))
        .keep_alive_while_idle(true);
    tls.connect(&endpoint).await
}

/// A client of the scheduler's API. Any peer will do: followers pass
/// writes and linearizable reads on to the leader. Calls the scheduler
/// rate-limits are retried after the wait it names, and a call a peer
/// cannot serve moves on to the next (see [`Backoff`]).
pub async fn connect(addrs: &str) -> Result<DroverClient<Backoff>> {
    Ok(DroverClient::new(failover(addrs).await?).max_decoding_message_size(64 << 20))
}

/// A client of the scheduler peers' cluster API (`drover cluster`).
pub async fn cluster(addrs: &str) -> Result<ClusterClient<Backoff>> {
    Ok(ClusterClient::new(failover(addrs).await?))
}

/// A channel to the best peer of `addrs` that moves on to another when
/// the one in use cannot serve.
async fn failover(addrs: &str) -> Result<Backoff> {
    let list = split(addrs);
    let (addr, ch) = pick(&list, &[]).await?;
    Ok(Backoff::with_failover(ch, list, addr))
}

fn split(addrs: &str) -> Vec<String> {
    addrs
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

/// A channel to the first peer of the comma-separated `addrs` that
/// answers and can serve (see [`pick`]).
pub async fn connect_any(addrs: &str) -> Result<Channel> {
    Ok(pick(&split(addrs), &[]).await?.1)
}

/// The first peer of `list`, other than those in `skip`, that answers
/// and is in touch with a leader; failing that, the first that answers.
///
/// "Answers" means a call, not a TCP handshake: the kernel of a frozen host
/// (or of a stopped process) still completes handshakes, and a CLI that
/// picked such a peer would hang. "In touch" matters because a leader cut
/// off from its peers still answers, and still says it leads, but cannot
/// commit anything. With one address there is nothing to choose, so no probe
/// is made.
pub async fn pick(list: &[String], skip: &[String]) -> Result<(String, Channel)> {
    let tls = dial(false)?;
    let mut last = None;
    let mut answered = None;
    for addr in list.iter().filter(|a| !skip.contains(a)) {
        match channel(addr, &tls).await {
            Ok(ch) if list.len() == 1 => return Ok((addr.clone(), ch)),
            Ok(ch) => {
                let mut probe = tonic::Request::new(drover_proto::pb::LocalStatusRequest {});
                probe.set_timeout(PROBE_TIMEOUT);
                let answer = tokio::time::timeout(
                    PROBE_TIMEOUT,
                    ClusterClient::new(ch.clone()).local_status(probe),
                )
                .await;
                match answer {
                    Ok(Ok(s)) if s.get_ref().in_touch => return Ok((addr.clone(), ch)),
                    Ok(Ok(_)) => {
                        last = Some(anyhow!("{addr}: not in touch with a leader"));
                        answered.get_or_insert((addr.clone(), ch));
                    }
                    Ok(Err(s)) => last = Some(anyhow!("{addr}: {}", s.message())),
                    Err(_) => last = Some(anyhow!("{addr}: no answer within 1s")),
                }
            }
            Err(e) => {
                let mut why = drover_proto::pki::join::source_chain(&e);
                if why.contains("InvalidContentType") {
                    why.push_str(
                        " (it does not speak TLS: a scheduler started with --insecure-plaintext needs --insecure-plaintext here too)",
                    );
                }
                last = Some(anyhow!("{addr}: {why}"))
            }
        }
    }
    if let Some(found) = answered {
        return Ok(found);
    }
    let why = last.unwrap_or_else(|| anyhow!("no scheduler address given"));
    Err(anyhow::Error::new(crate::exit::CallError {
        code: crate::exit::CONNECTION,
        message: format!(
            "cannot reach a Drover scheduler (is `drover dev` running? set --addr or DROVER_ADDR): {why:#}"
        ),
    }))
}

/// A client of one allocation's agent, for `action` (exec, logs, usage),
/// and the ticket the call must carry: the scheduler at `api` checks the
/// caller's token for the allocation's job and signs one.
pub async fn agent(
    api: &mut DroverClient<Backoff>,
    alloc_id: &str,
    action: &str,
) -> Result<(AgentApiClient<Channel>, Ticket)> {
    let t = api
        .agent_ticket(drover_proto::pb::AgentTicketRequest {
            alloc_id: alloc_id.to_string(),
            action: action.to_string(),
        })
        .await
        .map_err(status)?
        .into_inner();
    if t.node_address.is_empty() {
        return Err(anyhow!("allocation {alloc_id} is not on a known node"));
    }
    let addr = t.node_address.clone();
    let ch = channel(&addr, &dial(true)?)
        .await
        .map_err(|e| anyhow!("{}", drover_proto::pki::join::source_chain(&e)))
        .with_context(|| format!("cannot reach the agent at {addr}"))?;
    Ok((AgentApiClient::new(ch), Ticket(t.ticket)))
}

/// A scheduler-signed ticket for one call to an agent.
#[derive(Clone, Debug)]
pub struct Ticket(String);

impl Ticket {
    /// `message` as a request carrying the ticket.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        if let Ok(v) = self.0.parse() {
            r.metadata_mut()
                .insert(drover_proto::pki::ticket::METADATA, v);
        }
        r
    }
}

/// A gRPC status as a user-facing error: its message, not its debug form.
pub fn status(s: tonic::Status) -> anyhow::Error {
    let transport = std::error::Error::source(&s).is_some();
    let code = crate::exit::for_status(s.code(), transport);
    let message = status_words(s).to_string();
    anyhow::Error::new(crate::exit::CallError { code, message })
}

fn status_words(s: tonic::Status) -> anyhow::Error {
    match s.code() {
        tonic::Code::InvalidArgument => anyhow!("invalid: {}", s.message()),
        tonic::Code::Unauthenticated => anyhow!("not authenticated: {}", s.message()),
        tonic::Code::PermissionDenied => anyhow!("permission denied: {}", s.message()),
        tonic::Code::ResourceExhausted => anyhow!(
            "{} (the CLI retried for {}s)",
            s.message(),
            crate::backoff::MAX_WAIT.as_secs()
        ),
        tonic::Code::Unavailable if s.message().is_empty() => {
            anyhow!("the scheduler is unavailable")
        }
        // The connection itself failed (the status came from the transport,
        // not from a scheduler): say how, and what usually causes it.
        _ if std::error::Error::source(&s).is_some() => {
            let why = match std::error::Error::source(&s) {
                Some(e) => {
                    let chain = drover_proto::pki::join::source_chain(e);
                    if chain.starts_with(s.message()) {
                        chain
                    } else {
                        format!("{}: {chain}", s.message())
                    }
                }
                None => s.message().to_string(),
            };
            let plaintext = matches!(
                DIAL.read().unwrap_or_else(|e| e.into_inner()).as_ref(),
                Some(Ok((ClientTls::Plain, _)))
            );
            if plaintext {
                anyhow!("{why} (this CLI speaks plaintext: a scheduler that requires mutual TLS closes such connections; drop --insecure-plaintext)")
            } else {
                anyhow!("{why} (a scheduler started with --insecure-plaintext, such as `drover dev --insecure-plaintext`, needs --insecure-plaintext here too)")
            }
        }
        _ => anyhow!("{}", s.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_credential_file_that_is_missing_is_named_first() {
        // Whatever this machine holds in the default pki dirs.
        let a = crate::cli::CredentialArgs {
            ca_cert: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = resolve(&a).err().unwrap();
        assert!(e.contains("CA certificate /nonexistent/ca.pem"), "{e}");
        let a = crate::cli::CredentialArgs {
            pki_dir: Some("/nonexistent".into()),
            key: Some("/nonexistent/k.key".into()),
            ..Default::default()
        };
        let e = resolve(&a).err().unwrap();
        assert!(e.contains("client key /nonexistent/k.key"), "{e}");
    }
}
