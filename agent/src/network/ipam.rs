//! IP address management for one node's /24: one file per address in use
//! (`<dir>/<ip>`, holding the allocation id), created with O_EXCL so two
//! allocations can never get one address, and kept on disk so a restarted
//! agent knows which addresses are taken. Addresses are handed out in turn
//! (after the last one given), so a just-freed address is not reused at once
//! while peers may still remember it.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no free address left in the node's subnet")]
    Exhausted,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug)]
pub struct Ipam {
    dir: PathBuf,
    prefix: [u8; 4],
}

impl Ipam {
    pub fn open(dir: &Path, prefix: [u8; 4]) -> Result<Ipam, IpamError> {
        std::fs::create_dir_all(dir).map_err(|source| IpamError::Io {
            path: dir.into(),
            source,
        })?;
        Ok(Ipam {
            dir: dir.into(),
            prefix,
        })
    }

    /// The allocation's address: the one it already has, or the next free one.
    pub fn allocate(&self, alloc: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some((ip, _)) = self.list().into_iter().find(|(_, a)| a == alloc) {
            return Ok(ip);
        }
        let [a, b, c, _] = self.prefix;
        let last_path = self.dir.join(".last");
        let last: u8 = std::fs::read_to_string(&last_path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1);
        for i in 0..253u16 {
            let host = 2 + ((last as u16 - 1 + i) % 253) as u8;
            let ip = Ipv4Addr::new(a, b, c, host);
            let path = self.dir.join(ip.to_string());
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(alloc.as_bytes())
                        .map_err(|source| IpamError::Io { path, source })?;
                    let _ = std::fs::write(&last_path, host.to_string());
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(IpamError::Io { path, source }),
            }
        }
        Err(IpamError::Exhausted)
    }

    pub fn release(&self, alloc: &str) {
        for (ip, a) in self.list() {
            if a == alloc {
                let _ = std::fs::remove_file(self.dir.join(ip.to_string()));
            }
        }
    }

    /// Addresses in use and their allocations.
    pub fn list(&self) -> Vec<(Ipv4Addr, String)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return vec![];
        };
        entries
            .flatten()
            .filter_map(|e| {
                let ip: Ipv4Addr = e.file_name().to_str()?.parse().ok()?;
                let alloc = std::fs::read_to_string(e.path()).ok()?;
                Some((ip, alloc))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_in_turn_and_releases() {
        let d = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(d.path(), [10, 88, 3, 0]).unwrap();
        assert_eq!(ipam.allocate("a").unwrap(), Ipv4Addr::new(10, 88, 3, 2));
        assert_eq!(ipam.allocate("b").unwrap(), Ipv4Addr::new(10, 88, 3, 3));
        assert_eq!(
            ipam.allocate("a").unwrap(),
            Ipv4Addr::new(10, 88, 3, 2),
            "stable per allocation"
        );
        ipam.release("a");
        // Not the address just freed: the next one.
        assert_eq!(ipam.allocate("c").unwrap(), Ipv4Addr::new(10, 88, 3, 4));
        // A second handle (a restarted agent) sees the same.
        let again = Ipam::open(d.path(), [10, 88, 3, 0]).unwrap();
        let mut l = again.list();
        l.sort();
        assert_eq!(
            l,
            vec![
                (Ipv4Addr::new(10, 88, 3, 3), "b".into()),
                (Ipv4Addr::new(10, 88, 3, 4), "c".into())
            ]
        );
        assert_eq!(again.allocate("d").unwrap(), Ipv4Addr::new(10, 88, 3, 5));
    }

    #[test]
    fn exhausts_after_253() {
        let d = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(d.path(), [10, 0, 0, 0]).unwrap();
        for i in 0..253 {
            ipam.allocate(&format!("x{i}")).unwrap();
        }
        assert!(matches!(ipam.allocate("y"), Err(IpamError::Exhausted)));
    }
}
