//! Resolving an image's `User` (`name|uid[:group|gid]`) to numeric ids using
//! the image's own `/etc/passwd` and `/etc/group`.

use std::path::Path;

/// Numeric credentials of the container process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Resolves `user` against the database files in `rootfs`; `Err` carries the
/// name that could not be found.
pub(crate) fn resolve(rootfs: &Path, user: Option<&str>) -> Result<Ids, String> {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Ok(Ids::default());
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_db(rootfs, "passwd");
    // passwd: name:x:uid:gid:...
    let entry = passwd
        .iter()
        .find(|f| field(f, 0) == Some(u) || field(f, 2) == Some(u));
    let uid = match u.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => entry
            .and_then(|f| f.get(2)?.parse().ok())
            .ok_or_else(|| u.to_string())?,
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => read_db(rootfs, "group")
                .iter()
                .find(|f| field(f, 0) == Some(g))
                .and_then(|f| f.get(2)?.parse().ok())
                .ok_or_else(|| g.to_string())?,
        },
        None => entry.and_then(|f| f.get(3)?.parse().ok()).unwrap_or(0),
    };
    Ok(Ids {
        uid,
        gid,
        additional_gids: Vec::new(),
    })
}

fn field(f: &[String], i: usize) -> Option<&str> {
    f.get(i).map(String::as_str)
}

/// Lines of `<rootfs>/etc/<name>` split on ':'; empty if absent. Symlinks are
/// not followed: they would be resolved against the host's root, not the image's.
fn read_db(rootfs: &Path, name: &str) -> Vec<Vec<String>> {
    let etc = rootfs.join("etc");
    let path = etc.join(name);
    let is_plain = |p: &Path| {
        std::fs::symlink_metadata(p)
            .map(|m| !m.file_type().is_symlink())
            .unwrap_or(false)
    };
    if !is_plain(&etc) || !is_plain(&path) {
        return Vec::new();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_and_numbers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let r = |u| resolve(dir.path(), u);
        assert_eq!(r(None).unwrap(), Ids::default());
        assert_eq!(
            r(Some("app")).unwrap(),
            Ids {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![]
            }
        );
        assert_eq!(r(Some("1000")).unwrap().gid, 1001);
        assert_eq!(r(Some("app:staff")).unwrap().gid, 50);
        assert_eq!(
            r(Some("42:7")).unwrap(),
            Ids {
                uid: 42,
                gid: 7,
                additional_gids: vec![]
            }
        );
        assert_eq!(r(Some("nobody")).unwrap_err(), "nobody");
        assert_eq!(r(Some("app:wheel")).unwrap_err(), "wheel");
    }
}
