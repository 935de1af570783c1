//! Pulling images from an OCI distribution registry.
//!
//! The distribution API is plain HTTP: `GET /v2/<name>/manifests/<ref>`
//! returns a manifest (or an index of per-platform manifests, which we follow
//! to linux/amd64), and `GET /v2/<name>/blobs/<digest>` returns the config and
//! layer blobs the manifest names. Nothing from the network is trusted until
//! its sha256 matches: a manifest pulled by digest must hash to that digest,
//! and every blob is streamed to a temporary file while hashed and only then
//! handed to the layer cache. Registries may demand credentials: we send basic
//! credentials from the agent's config, and answer a
//! `WWW-Authenticate: Bearer realm=…,service=…,scope=…` challenge by fetching a
//! token from the realm and retrying.
//!
//! The realm is named by the registry's answer, so it is not trusted with the
//! registry's credentials unless it is on the registry's own host (or a host
//! the operator allows with `--registry-token-host`) and reached over HTTPS
//! (or the operator made that host `--insecure-registry`). Elsewhere the
//! token is asked for anonymously. Redirects (to blob storage) never carry
//! credentials.
//!
//! Registries are reached over HTTPS unless listed as insecure, trusting the
//! public web roots and any private CA given with `--registry-ca`.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::layout::{compression, image_config, sha256_hex, LayerBlob};
use super::{ImageConfig, RegistryRef};

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";
const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
/// Manifests and configs are small; refuse to buffer anything bigger.
const MAX_JSON: u64 = 4 << 20;

/// Errors from talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("GET {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("GET {url}: unauthorized (configure credentials with --registry-auth)")]
    Unauthorized { url: String },
    #[error("GET {realm}: unauthorized; the credentials for {registry} were not sent to this token realm: {why}")]
    CredentialsWithheld {
        realm: String,
        registry: String,
        why: String,
    },
    #[error("GET {url}: content has digest sha256:{actual}, expected sha256:{expected}")]
    DigestMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("GET {url}: {actual} bytes, expected {expected}")]
    SizeMismatch {
        url: String,
        expected: u64,
        actual: u64,
    },
    #[error("GET {url}: invalid manifest: {reason}")]
    Manifest { url: String, reason: String },
    #[error("write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Login for one registry host.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How the agent reaches registries: which hosts speak plain HTTP and which
/// credentials to present to which host (`host` or `host:port`, as written in
/// image references).
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    pub insecure: HashSet<String>,
    pub credentials: HashMap<String, Credentials>,
    /// Hosts (`host` or `host:port`) besides a registry's own that may
    /// receive its credentials as its bearer-token realm (e.g. Docker Hub's
    /// `auth.docker.io` for `registry-1.docker.io`).
    pub token_hosts: HashSet<String>,
    /// The CAs trusted over HTTPS (add one with [`Self::trust_ca_pem`]).
    pub trust: RegistryTrust,
    /// Where images named without a registry (`nginx:1.27`,
    /// `library/nginx`) come from; "" is Docker Hub (`docker.io`).
    pub default_registry: String,
    /// Registries asked first for such images, in order (pull-through
    /// caches); the default registry is asked when none has it.
    pub mirrors: Vec<String>,
    /// A Docker credential helper (`credsStore`, or per host `credHelpers`
    /// of a Docker config): `docker-credential-<name> get` is asked for
    /// hosts without credentials of their own.
    pub helpers: HashMap<String, String>,
    pub default_helper: Option<String>,
    /// What helpers said lately, by host.
    pub helper_cache: std::sync::Arc<Mutex<HelperAnswers>>,
}

/// What credential helpers said, by host, and when.
pub type HelperAnswers = HashMap<String, (std::time::Instant, Option<Credentials>)>;

/// How long a credential helper's answer is used.
const HELPER_CACHE: Duration = Duration::from_secs(60);
/// How long a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(5);

/// Docker Hub's name, and the hosts its API and tokens are on.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";
const DOCKER_HUB_AUTH: &str = "auth.docker.io";

/// A registry name as users write it, as the host its API is on.
pub fn api_host(name: &str) -> String {
    match name {
        "" | DOCKER_HUB | "index.docker.io" => DOCKER_HUB_API.to_string(),
        other => other.to_string(),
    }
}

/// What HTTPS to registries trusts: the public web roots, and private CAs.
#[derive(Debug, Clone, Default)]
pub struct RegistryTrust {
    /// TLS trusting the public web roots and `extra_roots` (`None`: the
    /// public roots only).
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Every CA certificate trusted beside the public roots.
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl RegistryConfig {
    /// Trusts the CA certificates in `pem` (a PEM bundle, the
    /// `--registry-ca` flag) for registries and token realms over HTTPS, in
    /// addition to the public web roots.
    pub fn trust_ca_pem(&mut self, pem: &str) -> Result<(), String> {
        use rustls::pki_types::pem::PemObject as _;
        let mut found = 0;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            self.trust
                .extra_roots
                .push(cert.map_err(|e| format!("not a PEM certificate: {e}"))?);
            found += 1;
        }
        if found == 0 {
            return Err("no PEM certificate in it".into());
        }
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for c in &self.trust.extra_roots {
            roots
                .add(c.clone())
                .map_err(|e| format!("not a usable CA certificate: {e}"))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        self.trust.tls = Some(std::sync::Arc::new(config));
        Ok(())
    }

    /// Whether `registry`'s credentials may go to the token realm at
    /// `realm`; `Err` says why not.
    fn may_send_credentials(&self, registry: &str, realm: &str) -> Result<(), String> {
        let (scheme, rest) = realm
            .split_once("://")
            .ok_or_else(|| "the realm is not a URL".to_string())?;
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.contains('@') {
            return Err("the realm URL carries a user name".into());
        }
        // Docker Hub's tokens come from its own token service, for it alone.
        let hub = host == DOCKER_HUB_AUTH && registry == DOCKER_HUB_API;
        if host != registry && !hub && !self.token_hosts.contains(host) {
            return Err(format!(
                "{host} is not the registry's host (allow it with --registry-token-host {host})"
            ));
        }
        match scheme.to_ascii_lowercase().as_str() {
            "https" => Ok(()),
            "http" if self.insecure.contains(host) => Ok(()),
            _ => Err(format!(
                "{realm} is not HTTPS (and {host} is not an --insecure-registry)"
            )),
        }
    }

    /// The registries to try for `r`, in order: its own host, or for an
    /// image named without one, the mirrors and then the default registry.
    pub fn candidates(&self, r: &RegistryRef) -> Vec<RegistryRef> {
        let default = api_host(&self.default_registry);
        let own = (!r.host.is_empty()).then(|| api_host(&r.host));
        // Named with a host that is not the default registry: that host.
        if let Some(host) = own.as_ref().filter(|h| **h != default) {
            return vec![RegistryRef {
                host: host.clone(),
                ..r.clone()
            }];
        }
        // Docker Hub's official images live under library/, on it and on
        // the mirrors of it.
        let name = if default == DOCKER_HUB_API && !r.name.contains('/') {
            format!("library/{}", r.name)
        } else {
            r.name.clone()
        };
        self.mirrors
            .iter()
            .map(|m| api_host(m))
            .chain(std::iter::once(default))
            .map(|host| RegistryRef {
                host,
                name: name.clone(),
                reference: r.reference.clone(),
            })
            .collect()
    }

    /// Adds the credentials and credential helpers of a Docker client
    /// config (`~/.docker/config.json`): `auths` (base64 `user:password`
    /// in `auth`, or `username`/`password`), `credHelpers`, `credsStore`.
    /// Credentials given otherwise (`--registry-auth`) win.
    pub fn load_docker_config(&mut self, text: &str) -> Result<(), String> {
        use base64::Engine as _;
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let host_of = |key: &str| {
            let k = key.split_once("://").map_or(key, |(_, rest)| rest);
            api_host(k.split('/').next().unwrap_or_default())
        };
        if let Some(auths) = v.get("auths").and_then(|a| a.as_object()) {
            for (key, entry) in auths {
                let login = match entry.get("auth").and_then(|a| a.as_str()) {
                    Some(b64) => {
                        let raw = base64::engine::general_purpose::STANDARD
                            .decode(b64.trim())
                            .map_err(|e| format!("auths.{key}.auth: not base64: {e}"))?;
                        let s = String::from_utf8(raw)
                            .map_err(|_| format!("auths.{key}.auth: not UTF-8"))?;
                        let (u, p) = s
                            .split_once(':')
                            .ok_or_else(|| format!("auths.{key}.auth: not user:password"))?;
                        Some((u.to_string(), p.to_string()))
                    }
                    None => match (
                        entry.get("username").and_then(|u| u.as_str()),
                        entry.get("password").and_then(|p| p.as_str()),
                    ) {
                        (Some(u), Some(p)) => Some((u.to_string(), p.to_string())),
                        _ => None,
                    },
                };
                if let Some((username, password)) = login {
                    self.credentials
                        .entry(host_of(key))
                        .or_insert(Credentials { username, password });
                }
            }
        }
        if let Some(helpers) = v.get("credHelpers").and_then(|h| h.as_object()) {
            for (host, name) in helpers {
                if let Some(name) = name.as_str() {
                    self.helpers.insert(host_of(host), name.to_string());
                }
            }
        }
        if let Some(store) = v.get("credsStore").and_then(|s| s.as_str()) {
            self.default_helper = Some(store.to_string());
        }
        Ok(())
    }

    /// The credentials for `host`: its own, else its credential helper's
    /// (asked once a minute at most).
    fn credentials_for(&self, host: &str) -> Option<Credentials> {
        if let Some(c) = self.credentials.get(host) {
            return Some(c.clone());
        }
        let helper = self.helpers.get(host).or(self.default_helper.as_ref())?;
        let mut cache = self.helper_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, c)) = cache.get(host) {
            if at.elapsed() < HELPER_CACHE {
                return c.clone();
            }
        }
        // The helper is asked by the name users log in with.
        let server = if host == DOCKER_HUB_API {
            "https://index.docker.io/v1/"
        } else {
            host
        };
        let c = helper_get(helper, server);
        cache.insert(host.to_string(), (std::time::Instant::now(), c.clone()));
        c
    }

    /// Parses a `HOST=USER:PASSWORD` credential (the `--registry-auth` flag).
    pub fn parse_auth(s: &str) -> Result<(String, Credentials), String> {
        let (host, login) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected HOST=USER:PASSWORD"))?;
        let (username, password) = login
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected HOST=USER:PASSWORD"))?;
        if host.is_empty() || username.is_empty() {
            return Err(format!("{s:?}: expected HOST=USER:PASSWORD"));
        }
        Ok((
            api_host(host),
            Credentials {
                username: username.to_string(),
                password: password.to_string(),
            },
        ))
    }
}

/// Asks the Docker credential helper `docker-credential-<name>` for
/// `server`'s login (its `get` protocol: the server on stdin, JSON out).
/// Nothing it says is logged.
fn helper_get(name: &str, server: &str) -> Option<Credentials> {
    use std::io::Write as _;
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return None;
    }
    let mut child = std::process::Command::new(format!("docker-credential-{name}"))
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(
            |e| tracing::warn!(helper = name, error = %e, "cannot run a Docker credential helper"),
        )
        .ok()?;
    let _ = child
        .stdin
        .take()
        .map(|mut s| s.write_all(server.as_bytes()));
    // A helper that waits (for a keyring, a prompt) is killed, not waited on.
    let started = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < HELPER_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                tracing::warn!(
                    helper = name,
                    "a Docker credential helper did not answer within 5 s"
                );
                return None;
            }
        }
    }
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(Credentials {
        username: v["Username"].as_str()?.to_string(),
        password: v["Secret"].as_str()?.to_string(),
    })
}

/// What a manifest resolves to: the verified manifest digest, the image
/// config and the layers to fetch.
pub(crate) struct Resolved {
    pub manifest_digest: String,
    pub config: ImageConfig,
    pub layers: Vec<LayerBlob>,
}

/// A client for one repository on one registry.
pub(crate) struct Client<'a> {
    agent: ureq::Agent,
    base: String,
    name: &'a str,
    config: &'a RegistryConfig,
    host: &'a str,
    credentials: Option<Credentials>,
    /// A bearer token from the last challenge, reused for later requests.
    token: Mutex<Option<String>>,
}

impl<'a> Client<'a> {
    pub fn new(config: &'a RegistryConfig, r: &'a RegistryRef) -> Self {
        let scheme = if config.insecure.contains(&r.host) {
            "http"
        } else {
            "https"
        };
        let mut agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(60))
            // The default, said out loud: a redirect (to blob storage,
            // often another host) never carries our Authorization header.
            .redirect_auth_headers(ureq::RedirectAuthHeaders::Never);
        if let Some(tls) = &config.trust.tls {
            agent = agent.tls_config(tls.clone());
        }
        Client {
            agent: agent.build(),
            base: format!("{scheme}://{}/v2/{}", r.host, r.name),
            name: &r.name,
            config,
            host: &r.host,
            credentials: config.credentials_for(&r.host),
            token: Mutex::new(None),
        }
    }

    /// Fetches and verifies the manifest (following an index to
    /// linux/amd64) and the config.
    pub fn resolve(&self, reference: &str) -> Result<Resolved, RegistryError> {
        let pinned = reference.strip_prefix("sha256:");
        let (url, bytes) = self.manifest(reference, pinned)?;
        let value = parse_json(&url, &bytes)?;
        let (url, bytes) = if is_index(&value) {
            let digest = pick_platform(&url, &value)?;
            let hex = digest.trim_start_matches("sha256:").to_string();
            self.manifest(&digest, Some(&hex))?
        } else {
            (url, bytes)
        };
        let manifest_digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let bad = |reason: String| RegistryError::Manifest {
            url: url.clone(),
            reason,
        };
        let manifest = oci_spec::image::ImageManifest::from_reader(&bytes[..])
            .map_err(|e| bad(e.to_string()))?;
        let cfg = manifest.config();
        let cfg_hex = sha256_hex(cfg).map_err(|e| bad(e.to_string()))?;
        let (cfg_url, cfg_bytes) = self.small_blob(cfg_hex, cfg.size())?;
        let config =
            oci_spec::image::ImageConfiguration::from_reader(&cfg_bytes[..]).map_err(|e| {
                RegistryError::Manifest {
                    url: cfg_url,
                    reason: e.to_string(),
                }
            })?;
        let layers = manifest
            .layers()
            .iter()
            .map(|d| {
                Ok(LayerBlob {
                    hex: sha256_hex(d).map_err(|e| bad(e.to_string()))?.to_string(),
                    size: d.size(),
                    compression: compression(d.media_type()).map_err(|e| bad(e.to_string()))?,
                })
            })
            .collect::<Result<Vec<_>, RegistryError>>()?;
        Ok(Resolved {
            manifest_digest,
            config: image_config(&config),
            layers,
        })
    }

    /// Downloads a layer blob into `dir` while hashing it; the returned file
    /// is complete and verified.
    pub fn download(&self, layer: &LayerBlob, dir: &Path) -> Result<PathBuf, RegistryError> {
        let url = format!("{}/blobs/sha256:{}", self.base, layer.hex);
        let path = dir.join(format!(".download-{}", layer.hex));
        let io = |source| RegistryError::Io {
            path: path.clone(),
            source,
        };
        let mut out = File::create(&path).map_err(io)?;
        let result = (|| {
            let mut body = self.get(&url, "*/*")?.into_reader();
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            let mut size = 0u64;
            loop {
                let n = body.read(&mut buf).map_err(|e| http(&url, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                size += n as u64;
                if size > layer.size {
                    // A registry that sends more than the manifest promised
                    // is not believed, and not allowed to fill the disk.
                    break;
                }
                out.write_all(&buf[..n]).map_err(io)?;
            }
            verify(&url, &layer.hex, layer.size, size, &hasher.finalize())
        })();
        match result {
            Ok(()) => Ok(path),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    fn manifest(
        &self,
        reference: &str,
        pinned: Option<&str>,
    ) -> Result<(String, Vec<u8>), RegistryError> {
        let url = format!("{}/manifests/{reference}", self.base);
        let bytes = read_small(&url, self.get(&url, MANIFEST_TYPES)?)?;
        if let Some(hex) = pinned {
            let actual = Sha256::digest(&bytes);
            verify(&url, hex, bytes.len() as u64, bytes.len() as u64, &actual)?;
        }
        Ok((url, bytes))
    }

    fn small_blob(&self, hex: &str, size: u64) -> Result<(String, Vec<u8>), RegistryError> {
        let url = format!("{}/blobs/sha256:{hex}", self.base);
        let bytes = read_small(&url, self.get(&url, "*/*")?)?;
        verify(&url, hex, size, bytes.len() as u64, &Sha256::digest(&bytes))?;
        Ok((url, bytes))
    }

    /// A GET that authenticates as the registry asks: basic credentials up
    /// front if configured, a bearer token after a Bearer challenge.
    fn get(&self, url: &str, accept: &str) -> Result<ureq::Response, RegistryError> {
        let mut fetched_token = false;
        loop {
            let mut req = self.agent.get(url).set("Accept", accept);
            let token = self.token.lock().unwrap().clone();
            if let Some(token) = &token {
                req = req.set("Authorization", &format!("Bearer {token}"));
            } else if let Some(c) = &self.credentials {
                req = req.set("Authorization", &basic(c));
            }
            match req.call() {
                Ok(resp) => return Ok(resp),
                Err(ureq::Error::Status(401, resp)) if !fetched_token => {
                    let challenge = resp.header("www-authenticate").unwrap_or("").to_string();
                    let Some(params) = bearer_challenge(&challenge) else {
                        return Err(RegistryError::Unauthorized {
                            url: url.to_string(),
                        });
                    };
                    *self.token.lock().unwrap() = Some(self.fetch_token(url, &params)?);
                    fetched_token = true;
                }
                Err(ureq::Error::Status(401, _)) => {
                    return Err(RegistryError::Unauthorized {
                        url: url.to_string(),
                    })
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let mut text = String::new();
                    let _ = resp.into_reader().take(512).read_to_string(&mut text);
                    return Err(RegistryError::Http {
                        url: url.to_string(),
                        reason: format!("status {code}: {}", text.trim()),
                    });
                }
                Err(e) => return Err(http(url, e)),
            }
        }
    }

    fn fetch_token(
        &self,
        url: &str,
        params: &HashMap<String, String>,
    ) -> Result<String, RegistryError> {
        let realm = params.get("realm").ok_or_else(|| RegistryError::Http {
            url: url.to_string(),
            reason: "bearer challenge without realm".into(),
        })?;
        let mut req = self.agent.get(realm);
        if let Some(service) = params.get("service") {
            req = req.query("service", service);
        }
        let scope = params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", self.name));
        req = req.query("scope", &scope);
        let mut withheld = None;
        if let Some(c) = &self.credentials {
            match self.config.may_send_credentials(self.host, realm) {
                Ok(()) => req = req.set("Authorization", &basic(c)),
                Err(why) => {
                    tracing::warn!(registry = %self.host, %realm, %why, "not sending registry credentials to its token realm");
                    withheld = Some(why);
                }
            }
        }
        let resp = match req.call() {
            Ok(resp) => resp,
            Err(ureq::Error::Status(401 | 403, _)) => {
                return Err(match withheld {
                    Some(why) => RegistryError::CredentialsWithheld {
                        realm: realm.to_string(),
                        registry: self.host.to_string(),
                        why,
                    },
                    None => RegistryError::Unauthorized {
                        url: realm.to_string(),
                    },
                })
            }
            Err(e) => return Err(http(realm, e)),
        };
        let body = read_small(realm, resp)?;
        let value = parse_json(realm, &body)?;
        value
            .get("token")
            .or_else(|| value.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| RegistryError::Http {
                url: realm.to_string(),
                reason: "token response has no token".into(),
            })
    }
}

fn basic(c: &Credentials) -> String {
    let raw = format!("{}:{}", c.username, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Parses `Bearer realm="…",service="…",scope="…"`.
fn bearer_challenge(header: &str) -> Option<HashMap<String, String>> {
    let rest = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))?;
    let mut params = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(key.trim().to_ascii_lowercase(), value.to_string());
        s = tail.trim_start_matches([',', ' ']);
    }
    Some(params)
}

fn http(url: &str, e: impl std::fmt::Display) -> RegistryError {
    let mut reason = e.to_string();
    if reason.contains("UnknownIssuer") {
        reason.push_str(" (a registry with a private CA: trust it with --registry-ca)");
    }
    RegistryError::Http {
        url: url.to_string(),
        reason,
    }
}

fn read_small(url: &str, resp: ureq::Response) -> Result<Vec<u8>, RegistryError> {
    let mut bytes = Vec::new();
    resp.into_reader()
        .take(MAX_JSON + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| http(url, e))?;
    if bytes.len() as u64 > MAX_JSON {
        return Err(http(url, format!("larger than {MAX_JSON} bytes")));
    }
    Ok(bytes)
}

fn parse_json(url: &str, bytes: &[u8]) -> Result<serde_json::Value, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| RegistryError::Manifest {
        url: url.to_string(),
        reason: e.to_string(),
    })
}

fn verify(
    url: &str,
    expected_hex: &str,
    expected_size: u64,
    actual_size: u64,
    actual: &[u8],
) -> Result<(), RegistryError> {
    use super::layout::{mismatch, Mismatch};
    let url = url.to_string();
    match mismatch(expected_hex, expected_size, actual_size, actual) {
        None => Ok(()),
        Some(Mismatch::Digest { expected, actual }) => Err(RegistryError::DigestMismatch {
            url,
            expected,
            actual,
        }),
        Some(Mismatch::Size { expected, actual }) => Err(RegistryError::SizeMismatch {
            url,
            expected,
            actual,
        }),
    }
}

fn is_index(value: &serde_json::Value) -> bool {
    let media_type = value.get("mediaType").and_then(|m| m.as_str());
    media_type.is_some_and(|m| INDEX_TYPES.contains(&m))
        || (media_type.is_none() && value.get("manifests").is_some())
}

/// The digest of the index's manifest for this machine (see
/// `layout::best_platform`).
fn pick_platform(url: &str, index: &serde_json::Value) -> Result<String, RegistryError> {
    pick_platform_for(url, index, super::layout::node_platform())
}

fn pick_platform_for(
    url: &str,
    index: &serde_json::Value,
    platform: (&str, Option<&str>),
) -> Result<String, RegistryError> {
    let manifests: Vec<&serde_json::Value> = index
        .get("manifests")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
        .collect();
    let word = |d: &serde_json::Value, k: &str| d["platform"][k].as_str().map(str::to_string);
    let platforms: Vec<_> = manifests
        .iter()
        .map(|d| (word(d, "os"), word(d, "architecture"), word(d, "variant")))
        .collect();
    super::layout::best_platform(&platforms, platform)
        .and_then(|i| manifests[i]["digest"].as_str())
        .filter(|d| d.starts_with("sha256:") && d.len() == 71)
        .map(str::to_string)
        .ok_or_else(|| RegistryError::Manifest {
            url: url.to_string(),
            reason: format!("index has no linux/{} manifest", platform.0),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let p = bearer_challenge(
            r#"Bearer realm="http://127.0.0.1:1/token",service="reg",scope="repository:web:pull""#,
        )
        .unwrap();
        assert_eq!(p["realm"], "http://127.0.0.1:1/token");
        assert_eq!(p["service"], "reg");
        assert_eq!(p["scope"], "repository:web:pull");
        assert!(bearer_challenge(r#"Basic realm="x""#).is_none());
    }

    #[test]
    fn credentials_go_only_to_a_realm_on_the_registry_over_https() {
        let mut c = RegistryConfig::default();
        let reg = "registry.example:5000";
        assert!(c
            .may_send_credentials(reg, "https://registry.example:5000/token")
            .is_ok());
        // Another host, another port, a user name smuggled into the host.
        for realm in [
            "https://evil.example/token",
            "https://registry.example/token",
            "https://registry.example:5000@evil.example/token",
            "https://evil.example/registry.example:5000",
        ] {
            let why = c.may_send_credentials(reg, realm).unwrap_err();
            assert!(
                why.contains("not the registry's host") || why.contains("user name"),
                "{realm}: {why}"
            );
        }
        // Plain HTTP, unless the operator made that host insecure.
        let why = c
            .may_send_credentials(reg, "http://registry.example:5000/token")
            .unwrap_err();
        assert!(why.contains("not HTTPS"), "{why}");
        c.insecure.insert(reg.into());
        assert!(c
            .may_send_credentials(reg, "http://registry.example:5000/token")
            .is_ok());
        // An allowed token host, over HTTPS only.
        c.token_hosts.insert("auth.example".into());
        assert!(c
            .may_send_credentials(reg, "https://auth.example/token")
            .is_ok());
        assert!(c
            .may_send_credentials(reg, "http://auth.example/token")
            .is_err());
        assert!(c
            .may_send_credentials(reg, "ftp://registry.example:5000/x")
            .is_err());
        assert!(c
            .may_send_credentials(reg, "registry.example:5000/x")
            .is_err());
    }

    #[test]
    fn a_private_ca_must_be_a_certificate() {
        let mut c = RegistryConfig::default();
        assert!(c.trust_ca_pem("not pem").is_err());
        assert!(c.trust.tls.is_none());
    }

    #[test]
    fn parses_registry_auth_flag() {
        let (host, c) = RegistryConfig::parse_auth("127.0.0.1:5000=alice:s3:cret").unwrap();
        assert_eq!(host, "127.0.0.1:5000");
        assert_eq!(c.username, "alice");
        assert_eq!(c.password, "s3:cret");
        assert!(RegistryConfig::parse_auth("host").is_err());
        assert!(RegistryConfig::parse_auth("host=alice").is_err());
    }

    #[test]
    fn picks_this_machines_platform_from_an_index() {
        let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let index = serde_json::json!({"manifests": [
            {"digest": digest('a'), "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
            {"digest": digest('b'), "platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": digest('c'), "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
            {"digest": digest('d'), "platform": {"os": "windows", "architecture": "arm64"}},
            {"digest": digest('e'), "platform": {"os": "linux", "architecture": "arm64"}},
        ]});
        assert!(is_index(&index));
        let pick = |arch, variant| pick_platform_for("u", &index, (arch, variant));
        assert_eq!(pick("amd64", None).unwrap(), digest('b'));
        // The variant asked for, not merely the first of the architecture.
        assert_eq!(pick("arm", Some("v7")).unwrap(), digest('c'));
        // linux only; one naming no variant does for any.
        assert_eq!(pick("arm64", Some("v8")).unwrap(), digest('e'));
        let err = pick("riscv64", None).unwrap_err().to_string();
        assert!(err.contains("no linux/riscv64 manifest"), "{err}");
        // This machine's own.
        let (arch, _) = crate::image::layout::node_platform();
        if arch == "amd64" {
            assert_eq!(pick_platform("u", &index).unwrap(), digest('b'));
        }
    }

    #[test]
    fn images_without_a_registry_try_the_mirrors_then_the_default() {
        let r = |s: &str| match s.parse::<crate::image::ImageRef>().unwrap() {
            crate::image::ImageRef::Registry(r) => r,
            other => panic!("{other:?}"),
        };
        let hosts = |c: &RegistryConfig, s: &str| -> Vec<String> {
            c.candidates(&r(s))
                .into_iter()
                .map(|r| format!("{}/{}:{}", r.host, r.name, r.reference))
                .collect()
        };
        let mut c = RegistryConfig::default();
        assert_eq!(
            hosts(&c, "nginx:1.27"),
            ["registry-1.docker.io/library/nginx:1.27"]
        );
        assert_eq!(
            hosts(&c, "myorg/app"),
            ["registry-1.docker.io/myorg/app:latest"]
        );
        assert_eq!(
            hosts(&c, "reg.example:5000/web:v1"),
            ["reg.example:5000/web:v1"]
        );
        // Docker Hub however written; its mirrors get library/ too.
        assert_eq!(
            hosts(&c, "docker.io/library/nginx:1.27"),
            ["registry-1.docker.io/library/nginx:1.27"]
        );
        c.mirrors = vec!["mirror.gcr.io".into()];
        assert_eq!(
            hosts(&c, "nginx"),
            [
                "mirror.gcr.io/library/nginx:latest",
                "registry-1.docker.io/library/nginx:latest"
            ]
        );
        // Hub's token service gets Hub's credentials only.
        assert!(c
            .may_send_credentials("registry-1.docker.io", "https://auth.docker.io/token")
            .is_ok());
        assert!(c
            .may_send_credentials("reg.example", "https://auth.docker.io/token")
            .is_err());
        c.mirrors = vec!["mirror.local:5000".into()];
        c.default_registry = "registry.example".into();
        assert_eq!(
            hosts(&c, "nginx"),
            [
                "mirror.local:5000/nginx:latest",
                "registry.example/nginx:latest"
            ]
        );
    }

    #[test]
    fn a_docker_config_gives_logins_and_helpers_and_flags_win() {
        let mut c = RegistryConfig::default();
        c.credentials.insert(
            "reg.example".into(),
            Credentials {
                username: "flag".into(),
                password: "p".into(),
            },
        );
        // "alice:s3cret" and a username/password pair.
        c.load_docker_config(
            r#"{"auths": {"https://index.docker.io/v1/": {"auth": "YWxpY2U6czNjcmV0"},
                          "reg.example": {"username": "config", "password": "q"},
                          "other.example:5000": {"username": "bob", "password": "pw"}},
                "credHelpers": {"gcr.io": "gcloud"}, "credsStore": "desktop"}"#,
        )
        .unwrap();
        assert_eq!(c.credentials["registry-1.docker.io"].username, "alice");
        assert_eq!(c.credentials["registry-1.docker.io"].password, "s3cret");
        assert_eq!(c.credentials["reg.example"].username, "flag");
        assert_eq!(c.credentials["other.example:5000"].password, "pw");
        assert_eq!(c.helpers["gcr.io"], "gcloud");
        assert_eq!(c.default_helper.as_deref(), Some("desktop"));
        // A password is never in Debug output.
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(c.load_docker_config("{").is_err());
        let bad =
            RegistryConfig::default().load_docker_config(r#"{"auths": {"x": {"auth": "!!"}}}"#);
        assert!(bad.unwrap_err().contains("auths.x.auth"));
    }
}
