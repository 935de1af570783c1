//! Registry pulls against a real OCI distribution registry (Debian's
//! `docker-registry`) on loopback, with the demo images pushed by `skopeo`:
//! pulls by tag and by digest, a tampered layer rejected, concurrent pulls
//! downloading each layer once, layer GC, basic auth from htpasswd, bearer
//! tokens from a token server, and a job run by a real agent from a registry
//! image whose layers the agent frees when the job stops.

use drover_agent::image::RegistryError;
use drover_agent::image::{Credentials, ImageError, ImageRef, ImageStore, RegistryConfig};
use drover_e2e::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A `docker-registry` serving from a temp dir, with its access log in a file.
struct Registry {
    dir: tempfile::TempDir,
    host: String,
    _proc: Proc,
}

impl Registry {
    /// Starts a registry; with `htpasswd`, it demands basic auth for that user.
    fn start(htpasswd: Option<(&str, &str)>) -> Registry {
        Registry::start_with(htpasswd, None)
    }

    /// Starts a registry; with `tls` (certificate and key PEM files), over
    /// HTTPS only.
    fn start_with(htpasswd: Option<(&str, &str)>, tls: Option<(&Path, &Path)>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("drover-reg")
            .tempdir()
            .unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut auth = String::new();
        if let Some((user, password)) = htpasswd {
            let file = dir.path().join("htpasswd");
            let st = Command::new("htpasswd")
                .args(["-Bbc", file.to_str().unwrap(), user, password])
                .output()
                .expect("run htpasswd (apache2-utils)");
            assert!(st.status.success(), "htpasswd failed");
            auth = format!(
                "auth:\n  htpasswd:\n    realm: drover-test\n    path: {}\n",
                file.display()
            );
        }
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {host}\n{tls}{auth}",
                dir.path().join("data").display(),
                tls = tls.map_or(String::new(), |(cert, key)| format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    cert.display(),
                    key.display()
                )),
            ),
        )
        .unwrap();
        let proc = Proc::spawn(
            "docker-registry",
            Command::new("/usr/bin/docker-registry")
                .arg("serve")
                .arg(&config),
            dir.path().join("registry.log"),
        );
        wait_for("the registry to listen", Duration::from_secs(20), || {
            TcpStream::connect(&host).ok()
        });
        Registry {
            dir,
            host,
            _proc: proc,
        }
    }

    /// Pushes `examples/images/out/<image>` to `<host>/<image>`.
    fn push(&self, image: &str, creds: Option<&str>) {
        let layout = images().join(image.split(':').next().unwrap());
        let tag = image.split(':').nth(1).unwrap();
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some(c) = creds {
            cmd.args(["--dest-creds", c]);
        }
        let out = cmd
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{image}", self.host))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Where the registry stores blob `hex`.
    fn blob(&self, hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// How many times blob `hex` was fetched (from the access log).
    fn blob_gets(&self, hex: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap();
        let needle = format!("\"GET /v2/demo-web/blobs/sha256:{hex} ");
        log.lines().filter(|l| l.contains(&needle)).count()
    }

    fn config(&self) -> RegistryConfig {
        RegistryConfig {
            insecure: [self.host.clone()].into(),
            ..Default::default()
        }
    }
}

fn store(dir: &Path, config: RegistryConfig) -> ImageStore {
    ImageStore::new(dir.join("cache")).with_registries(config)
}

fn layer_hex(layer: &Path) -> String {
    layer.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn pulls_by_tag_and_by_digest_the_same_image_as_the_layout() {
    if !require_root("pulls_by_tag_and_by_digest_the_same_image_as_the_layout") {
        return;
    }
    let reg = Registry::start(None);
    reg.push("demo-web:v1", None);
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), reg.config());

    let by_tag = s
        .pull(&format!("{}/demo-web:v1", reg.host).parse().unwrap())
        .unwrap();
    let layout: ImageRef = format!("oci:{}/demo-web:v1", images().display())
        .parse()
        .unwrap();
    let local = s.pull(&layout).unwrap();
    assert_eq!(by_tag.layers, local.layers);
    assert_eq!(by_tag.config, local.config);
    assert!(!by_tag.config.entrypoint.is_empty() || !by_tag.config.cmd.is_empty());
    assert!(by_tag.layers.iter().all(|l| l.is_dir()));

    let by_digest = s
        .pull(
            &format!("{}/demo-web@{}", reg.host, by_tag.digest)
                .parse()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(by_digest, by_tag);

    // A digest the registry does not have is an error, not a silent fallback.
    let missing = format!("{}/demo-web@sha256:{}", reg.host, "0".repeat(64));
    let err = s.pull(&missing.parse().unwrap()).unwrap_err();
    assert!(err.to_string().contains("status 404"), "{err}");

    // Without --insecure-registry the agent insists on HTTPS.
    let strict = store(dir.path(), RegistryConfig::default());
    let err = strict
        .pull(&format!("{}/demo-web:v1", reg.host).parse().unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("https://"), "{err}");
}

/// An image named without a registry (`demo-web:v1`) comes from the
/// default registry, after the mirrors: a mirror that cannot answer is
/// passed over; one that has the image serves it.
#[test]
fn short_names_come_from_the_mirrors_then_the_default_registry() {
    if !require_root("short_names_come_from_the_mirrors_then_the_default_registry") {
        return;
    }
    let reg = Registry::start(None);
    reg.push("demo-web:v1", None);
    let dead = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let mut config = reg.config();
    config.insecure.insert(dead.clone());
    config.default_registry = reg.host.clone();
    config.mirrors = vec![dead.clone()];
    let image = store(dir.path(), config.clone())
        .pull(&"demo-web:v1".parse().unwrap())
        .unwrap();
    let pinned = store(dir.path(), reg.config())
        .pull(&format!("{}/demo-web:v1", reg.host).parse().unwrap())
        .unwrap();
    assert_eq!(image, pinned);
    // The mirror first: it has the image, the default registry is not asked.
    let gets_before = reg.blob_gets(&layer_hex(&image.layers[0]));
    let mirror = Registry::start(None);
    mirror.push("demo-web:v1", None);
    config.insecure.insert(mirror.host.clone());
    config.mirrors = vec![mirror.host.clone()];
    let fresh = tempfile::tempdir().unwrap();
    let from_mirror = store(fresh.path(), config)
        .pull(&"demo-web:v1".parse().unwrap())
        .unwrap();
    assert_eq!(from_mirror.digest, image.digest);
    assert_eq!(reg.blob_gets(&layer_hex(&image.layers[0])), gets_before);
    assert!(mirror.blob_gets(&layer_hex(&image.layers[0])) > 0);
}

#[test]
fn a_tampered_layer_is_rejected_and_not_cached() {
    if !require_root("a_tampered_layer_is_rejected_and_not_cached") {
        return;
    }
    let reg = Registry::start(None);
    reg.push("demo-web:v1", None);
    let local = ImageStore::new(tempfile::tempdir().unwrap().path().join("c"))
        .pull(
            &format!("oci:{}/demo-web:v1", images().display())
                .parse()
                .unwrap(),
        )
        .unwrap();
    let hex = layer_hex(local.layers.last().unwrap());
    let blob = reg.blob(&hex);
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let err = store(dir.path(), reg.config())
        .pull(&format!("{}/demo-web:v1", reg.host).parse().unwrap())
        .unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::Registry(RegistryError::DigestMismatch { ref expected, .. }) if *expected == hex
        ),
        "{err}"
    );
    let cached = dir.path().join("cache/layers");
    assert!(!cached.join(&hex).exists());
    let leftovers: Vec<_> = std::fs::read_dir(&cached)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn concurrent_pulls_download_each_layer_once_and_gc_frees_unused_layers() {
    if !require_root("concurrent_pulls_download_each_layer_once_and_gc_frees_unused_layers") {
        return;
    }
    let reg = Registry::start(None);
    reg.push("demo-web:v1", None);
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), reg.config());
    let r: ImageRef = format!("{}/demo-web:v1", reg.host).parse().unwrap();
    let pulled: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| s.pull(&r).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(pulled.windows(2).all(|w| w[0] == w[1]));
    for layer in &pulled[0].layers {
        assert_eq!(reg.blob_gets(&layer_hex(layer)), 1, "{}", layer.display());
    }

    // GC keeps what is in use, frees the rest; a later pull fetches again.
    let keep: std::collections::HashSet<String> = pulled[0]
        .layers
        .iter()
        .take(1)
        .map(|l| layer_hex(l))
        .collect();
    let removed = s.gc(&keep).unwrap();
    assert_eq!(removed, pulled[0].layers.len() - 1);
    assert!(pulled[0].layers[0].is_dir());
    assert!(pulled[0].layers[1..].iter().all(|l| !l.exists()));
    let again = s.pull(&r).unwrap();
    assert_eq!(again, pulled[0]);
    assert!(again.layers.iter().all(|l| l.is_dir()));
    assert_eq!(reg.blob_gets(&layer_hex(&again.layers[0])), 1);
}

#[test]
fn basic_auth_from_htpasswd() {
    if !require_root("basic_auth_from_htpasswd") {
        return;
    }
    let reg = Registry::start(Some(("alice", "s3cret")));
    reg.push("demo-web:v1", Some("alice:s3cret"));
    let dir = tempfile::tempdir().unwrap();
    let r: ImageRef = format!("{}/demo-web:v1", reg.host).parse().unwrap();

    let err = store(dir.path(), reg.config()).pull(&r).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::Registry(RegistryError::Unauthorized { .. })
        ),
        "{err}"
    );
    let mut wrong = reg.config();
    wrong.credentials.insert(
        reg.host.clone(),
        Credentials {
            username: "alice".into(),
            password: "wrong".into(),
        },
    );
    assert!(store(dir.path(), wrong).pull(&r).is_err());

    let mut config = reg.config();
    let (host, creds) = RegistryConfig::parse_auth(&format!("{}=alice:s3cret", reg.host)).unwrap();
    config.credentials.insert(host, creds);
    let image = store(dir.path(), config).pull(&r).unwrap();
    assert!(!image.layers.is_empty());
}

/// A registry front that wants bearer tokens, like Docker Hub: requests
/// without `Authorization: Bearer good-token` get a challenge naming its
/// `/token` realm, which hands out the token for alice's basic credentials;
/// authorized requests are forwarded to the real registry.
fn bearer_front(upstream: String) -> String {
    bearer_front_with_realm(upstream, None)
}

/// `bearer_front`, naming `realm` (when given) as its token realm instead
/// of its own `/token`.
fn bearer_front_with_realm(upstream: String, realm: Option<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let realm = realm.unwrap_or_else(|| format!("http://{addr}/token"));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                headers.push(line.trim().to_string());
            }
            let auth = headers
                .iter()
                .find_map(|h| {
                    h.strip_prefix("Authorization: ")
                        .or(h.strip_prefix("authorization: "))
                })
                .unwrap_or("")
                .to_string();
            let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
            let respond = |conn: &mut TcpStream, status: &str, extra: &str, body: &str| {
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            };
            if path.starts_with("/token") {
                // base64("alice:s3cret")
                if auth == "Basic YWxpY2U6czNjcmV0"
                    && path.contains("scope=repository%3Ademo-web%3Apull")
                {
                    respond(
                        &mut conn,
                        "200 OK",
                        "Content-Type: application/json\r\n",
                        r#"{"token":"good-token"}"#,
                    );
                } else {
                    respond(&mut conn, "401 Unauthorized", "", "");
                }
            } else if auth != "Bearer good-token" {
                let challenge = format!(
                    "WWW-Authenticate: Bearer realm=\"{realm}\",service=\"test\",scope=\"repository:demo-web:pull\"\r\n"
                );
                respond(&mut conn, "401 Unauthorized", &challenge, "");
            } else {
                let mut up = TcpStream::connect(&upstream).unwrap();
                let mut forwarded =
                    format!("{}Host: {upstream}\r\nConnection: close\r\n", request_line);
                for h in &headers {
                    if h.to_ascii_lowercase().starts_with("accept:") {
                        forwarded.push_str(&format!("{h}\r\n"));
                    }
                }
                forwarded.push_str("\r\n");
                up.write_all(forwarded.as_bytes()).unwrap();
                let mut response = Vec::new();
                up.read_to_end(&mut response).unwrap();
                let _ = conn.write_all(&response);
            }
        }
    });
    addr
}

#[test]
fn bearer_tokens_from_the_challenge_realm() {
    if !require_root("bearer_tokens_from_the_challenge_realm") {
        return;
    }
    let reg = Registry::start(None);
    reg.push("demo-web:v1", None);
    let front = bearer_front(reg.host.clone());
    let dir = tempfile::tempdir().unwrap();
    let r: ImageRef = format!("{front}/demo-web:v1").parse().unwrap();
    let mut config = RegistryConfig {
        insecure: [front.clone()].into(),
        ..Default::default()
    };
    let err = store(dir.path(), config.clone()).pull(&r).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::Registry(RegistryError::Unauthorized { .. })
        ),
        "{err}"
    );
    config.credentials.insert(
        front.clone(),
        Credentials {
            username: "alice".into(),
            password: "s3cret".into(),
        },
    );
    let image = store(dir.path(), config).pull(&r).unwrap();
    assert!(!image.layers.is_empty());
}

/// A token realm that records the Authorization header of every request
/// (empty when there was none) and refuses them all.
fn recording_realm() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut auth = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if line.to_ascii_lowercase().starts_with("authorization:") {
                    auth = line.trim().to_string();
                }
            }
            log.lock().unwrap().push(auth);
            let _ = write!(
                conn,
                "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (addr, seen)
}

/// A registry's answer names the token realm: one on another host (here
/// another port) never receives the registry's credentials, even over plain
/// HTTP to a host the operator made insecure, unless the operator allows
/// that host; the refusal says why.
#[test]
fn credentials_never_go_to_a_foreign_token_realm() {
    if !require_root("credentials_never_go_to_a_foreign_token_realm") {
        return;
    }
    let reg = Registry::start(None);
    reg.push("demo-web:v1", None);
    let (evil, seen) = recording_realm();
    let front = bearer_front_with_realm(reg.host.clone(), Some(format!("http://{evil}/token")));
    let dir = tempfile::tempdir().unwrap();
    let r: ImageRef = format!("{front}/demo-web:v1").parse().unwrap();
    let mut config = RegistryConfig {
        insecure: [front.clone(), evil.clone()].into(),
        ..Default::default()
    };
    config.credentials.insert(
        front.clone(),
        Credentials {
            username: "alice".into(),
            password: "s3cret".into(),
        },
    );
    let err = store(dir.path(), config.clone()).pull(&r).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            ImageError::Registry(RegistryError::CredentialsWithheld { .. })
        ),
        "{text}"
    );
    assert!(text.contains("--registry-token-host"), "{text}");
    let asked = seen.lock().unwrap().clone();
    assert!(!asked.is_empty(), "the realm was not asked at all");
    assert!(
        asked.iter().all(String::is_empty),
        "credentials reached a foreign realm: {asked:?}"
    );

    // Allowed by the operator (and made insecure by them): now it is sent.
    config.token_hosts.insert(evil.clone());
    let _ = store(dir.path(), config).pull(&r).unwrap_err();
    let asked = seen.lock().unwrap().clone();
    assert_eq!(
        asked.last().map(String::as_str),
        Some("Authorization: Basic YWxpY2U6czNjcmV0"),
        "{asked:?}"
    );
}

/// A CA of our own and a certificate for 127.0.0.1 it signed, as PEM files
/// in `dir`: (ca.pem, cert.pem, key.pem).
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    (paths.0, paths.1, paths.2)
}

/// A registry over HTTPS with a certificate from a private CA: refused,
/// naming the flag to use, until that CA is trusted; then pulled.
#[test]
fn pulls_over_https_trusting_a_private_ca() {
    if !require_root("pulls_over_https_trusting_a_private_ca") {
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(pki.path());
    let reg = Registry::start_with(None, Some((&cert, &key)));
    reg.push("demo-web:v1", None);
    let dir = tempfile::tempdir().unwrap();
    let r: ImageRef = format!("{}/demo-web:v1", reg.host).parse().unwrap();
    let err = store(dir.path(), RegistryConfig::default())
        .pull(&r)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--registry-ca"), "{err}");
    let mut config = RegistryConfig::default();
    config
        .trust_ca_pem(&std::fs::read_to_string(&ca).unwrap())
        .unwrap();
    let image = store(dir.path(), config).pull(&r).unwrap();
    assert!(!image.layers.is_empty());
}

#[test]
fn a_job_runs_from_a_registry_image() {
    if !require_root("a_job_runs_from_a_registry_image") {
        return;
    }
    let reg = Registry::start(None);
    reg.push("demo-web:v1", None);
    let mut c = Cluster::start("e2e-registry");
    let mut agent = c.agent.take().unwrap();
    agent.signal("INT");
    agent.wait(Duration::from_secs(10)).expect("agent stops");
    c.start_agent_with(&["--insecure-registry", &reg.host]);

    let port = free_port();
    let spec = c.spec(
        "web",
        &format!(
            "name: web\nimage: {}/demo-web:v1\nenv: {{PORT: \"{port}\"}}\nnetwork: host\n\
             resources: {{cpu: 0.1, memory: 64Mi}}\n",
            reg.host
        ),
    );
    let out = c.drover(&["job", "run", "--detach", spec.to_str().unwrap()]);
    assert!(out.ok(), "{}", out.stderr);
    let st = wait_for("the allocation to run", Duration::from_secs(30), || {
        let v = c.json(&["alloc", "ls", "--job", "web"]);
        let a = v.as_array()?.first()?.clone();
        assert_ne!(a["state"], "failed", "{a}");
        (a["state"] == "running").then_some(a)
    });
    let body = wait_for("demo-web to answer", Duration::from_secs(20), || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        write!(s, "GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        body.starts_with("HTTP/1.").then_some(body)
    });
    assert!(body.contains("200"), "{st} {body}");

    // The agent cached the layers while the job ran, and frees them once no
    // container uses them.
    let layers = c.agent_state_dir().join("images/layers");
    let cached = || {
        std::fs::read_dir(&layers)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().len() == 64 && e.path().is_dir())
            .count()
    };
    assert!(cached() > 0);
    assert!(c.drover(&["job", "stop", "web"]).ok());
    wait_for("unused layers to be freed", Duration::from_secs(30), || {
        (cached() == 0).then_some(())
    });
}
