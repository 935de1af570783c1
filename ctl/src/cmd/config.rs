//! `drover config set-context|use-context|get-contexts|delete-context`.

use crate::cli::ConfigCmd;
use crate::config::{self, Config};
use crate::output::table;
use anyhow::{bail, Result};

/// Runs `cmd`; `addr` and `given` are the global flags as given (no
/// context applied): what `set-context` stores.
pub fn run(
    cmd: ConfigCmd,
    addr: Option<String>,
    given: &crate::cli::CredentialArgs,
) -> Result<i32> {
    let path = config::path();
    let mut c = Config::load(&path)?;
    match cmd {
        ConfigCmd::SetContext { name, use_it } => {
            let crate::cli::CredentialArgs {
                pki_dir,
                ca_cert,
                cert,
                key,
                token,
                ..
            } = given.clone();
            let ctx = c.contexts.entry(name.clone()).or_default();
            let abs = |p: std::path::PathBuf| std::path::absolute(&p).unwrap_or(p);
            if addr.is_some() {
                ctx.addr = addr;
            }
            if pki_dir.is_some() {
                ctx.pki_dir = pki_dir.map(abs);
            }
            if ca_cert.is_some() {
                ctx.ca_cert = ca_cert.map(abs);
            }
            if cert.is_some() {
                ctx.cert = cert.map(abs);
            }
            if key.is_some() {
                ctx.key = key.map(abs);
            }
            if token.is_some() {
                ctx.token = token;
            }
            if use_it || c.current.is_none() {
                c.current = Some(name.clone());
            }
            c.save(&path)?;
            println!("context {name} saved in {}", path.display());
        }
        ConfigCmd::UseContext { name } => {
            if !c.contexts.contains_key(&name) {
                bail!("no context {name:?} in {}", path.display());
            }
            c.current = Some(name.clone());
            c.save(&path)?;
            println!("using context {name}");
        }
        ConfigCmd::GetContexts => {
            let rows: Vec<Vec<String>> = c
                .contexts
                .iter()
                .map(|(n, x)| {
                    let creds = match (&x.pki_dir, &x.cert) {
                        (Some(d), _) => d.display().to_string(),
                        (None, Some(cert)) => cert.display().to_string(),
                        (None, None) => "-".into(),
                    };
                    vec![
                        format!(
                            "{n}{}",
                            if c.current.as_deref() == Some(n) {
                                " *"
                            } else {
                                ""
                            }
                        ),
                        x.addr.clone().unwrap_or_else(|| "-".into()),
                        creds,
                        if x.token.is_some() { "yes" } else { "no" }.into(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["NAME", "ADDRESS", "CREDENTIALS", "TOKEN"], &rows)
            );
        }
        ConfigCmd::DeleteContext { name } => {
            if c.contexts.remove(&name).is_none() {
                bail!("no context {name:?} in {}", path.display());
            }
            if c.current.as_deref() == Some(&name) {
                c.current = None;
            }
            c.save(&path)?;
            println!("context {name} deleted");
        }
    }
    Ok(0)
}
