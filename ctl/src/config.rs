//! `~/.config/drover/config.yaml`: named contexts, like a kubeconfig.
//!
//! A context says where a cluster is and who `drover` is to it: scheduler
//! addresses, credentials (a pki dir, or CA, certificate and key files) and
//! an ACL token. `drover config set-context` writes one, `use-context`
//! picks the current one, `--context`/`DROVER_CONTEXT` picks one for a
//! command. Flags and environment variables win over the context, and the
//! context over the built-in defaults. The file may hold tokens, so it is
//! written readable by its owner only.
//!
//! ```yaml
//! current: prod
//! contexts:
//!   prod:
//!     addr: 10.0.0.1:7400,10.0.0.2:7400,10.0.0.3:7400
//!     ca_cert: /home/me/prod/ca.pem
//!     cert: /home/me/prod/me.pem
//!     key: /home/me/prod/me.key
//!     token: DRVT-…
//!   dev:
//!     pki_dir: /var/lib/drover/dev/pki
//! ```

use crate::cli::CredentialArgs;
use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The address used when nothing names one.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7400";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pki_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_plaintext: bool,
}

/// Where the file is: `$DROVER_CONFIG`, else
/// `$XDG_CONFIG_HOME/drover/config.yaml`, else `~/.config/drover/config.yaml`.
pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os("DROVER_CONFIG") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("/root/.config"));
    base.join("drover/config.yaml")
}

impl Config {
    /// The file at `p`; an empty config if there is none.
    pub fn load(p: &Path) -> Result<Config> {
        match std::fs::read_to_string(p) {
            Ok(s) if s.trim().is_empty() => Ok(Config::default()),
            Ok(s) => serde_yaml_ng::from_str(&s).with_context(|| format!("{}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(anyhow!("{}: {e}", p.display())),
        }
    }

    pub fn save(&self, p: &Path) -> Result<()> {
        let text = serde_yaml_ng::to_string(self)?;
        drover_proto::pki::write_private(p, text.as_bytes())?;
        Ok(())
    }

    /// The context `name` names (`--context`), else the current one; an
    /// error for a name that is not there.
    pub fn pick(&self, name: Option<&str>) -> Result<Option<(&str, &Context)>> {
        let Some(name) = name.or(self.current.as_deref()) else {
            return Ok(None);
        };
        match self.contexts.get_key_value(name) {
            Some((k, c)) => Ok(Some((k.as_str(), c))),
            None => bail!(
                "no context {name:?} in {} (there are: {})",
                path().display(),
                if self.contexts.is_empty() {
                    "none".to_string()
                } else {
                    self.contexts.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ),
        }
    }
}

/// The scheduler addresses and credentials to use: what the command line
/// and environment give, the rest from `ctx`. Given certificate files take
/// none of the context's files, and a given address or files take none of
/// its token (a secret for its own cluster only).
pub fn apply(
    addr: Option<String>,
    args: &CredentialArgs,
    ctx: Option<&Context>,
) -> (String, CredentialArgs) {
    let Some(ctx) = ctx else {
        return (addr.unwrap_or_else(|| DEFAULT_ADDR.into()), args.clone());
    };
    let mut a = args.clone();
    let given_files = a.pki_dir.is_some() || a.cert.is_some() || a.ca_cert.is_some();
    if !given_files {
        a.pki_dir = ctx.pki_dir.clone();
        a.ca_cert = ctx.ca_cert.clone();
        a.cert = ctx.cert.clone();
        a.key = ctx.key.clone();
    }
    if a.token.is_none() && !given_files && addr.is_none() {
        a.token = ctx.token.clone();
    }
    a.insecure_plaintext |= ctx.insecure_plaintext;
    (
        addr.or_else(|| ctx.addr.clone())
            .unwrap_or_else(|| DEFAULT_ADDR.into()),
        a,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_wins_over_the_context_and_the_context_over_defaults() {
        let ctx = Context {
            addr: Some("10.0.0.1:7400".into()),
            pki_dir: Some("/ctx/pki".into()),
            token: Some("DRVT-ctx".into()),
            ..Default::default()
        };
        let (addr, a) = apply(None, &CredentialArgs::default(), Some(&ctx));
        assert_eq!(addr, "10.0.0.1:7400");
        assert_eq!(a.pki_dir, Some("/ctx/pki".into()));
        assert_eq!(a.token.as_deref(), Some("DRVT-ctx"));
        let given = CredentialArgs {
            cert: Some("/mine.pem".into()),
            token: Some("DRVT-mine".into()),
            ..Default::default()
        };
        let (addr, a) = apply(Some("1.2.3.4:7400".into()), &given, Some(&ctx));
        assert_eq!(addr, "1.2.3.4:7400");
        assert_eq!(
            a.pki_dir, None,
            "files from the command line are not mixed with the context's"
        );
        assert_eq!(a.token.as_deref(), Some("DRVT-mine"));
        // Another cluster's address: the context's token does not go there.
        let (_, a) = apply(
            Some("1.2.3.4:7400".into()),
            &CredentialArgs::default(),
            Some(&ctx),
        );
        assert_eq!(a.token, None);
        assert_eq!(a.pki_dir, Some("/ctx/pki".into()));
        let (addr, _) = apply(None, &CredentialArgs::default(), None);
        assert_eq!(addr, DEFAULT_ADDR);
    }

    #[test]
    fn a_config_round_trips_and_a_missing_context_is_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c/config.yaml");
        let mut c = Config::default();
        c.contexts.insert(
            "dev".into(),
            Context {
                pki_dir: Some("/var/lib/drover/dev/pki".into()),
                ..Default::default()
            },
        );
        c.current = Some("dev".into());
        c.save(&p).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = Config::load(&p).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.pick(None).unwrap().unwrap().0, "dev");
        let e = back.pick(Some("prod")).unwrap_err().to_string();
        assert!(
            e.contains("no context \"prod\"") && e.contains("there are: dev"),
            "{e}"
        );
        assert!(Config::load(&d.path().join("none.yaml"))
            .unwrap()
            .contexts
            .is_empty());
        std::fs::write(&p, "contexts: {x: {adr: 1}}").unwrap();
        assert!(Config::load(&p).is_err(), "an unknown field is an error");
    }
}
