//! Image references: an OCI image layout on this node in skopeo's transport
//! syntax (`oci:/path/to/layout[:tag]`), or an image in an OCI distribution
//! registry (`host[:port]/name[/more][:tag]` or `...@sha256:<hex>`). As with
//! Docker, a first part with a `.` or `:` (or `localhost`) is the registry's
//! host; without one (`nginx:1.27`, `library/nginx`) the image comes from
//! the agent's default registry (Docker Hub unless `--default-registry`
//! says otherwise, after its mirrors). No tag means `latest`.

use std::path::PathBuf;
use std::str::FromStr;

use super::ImageError;

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// An image inside an OCI image layout directory.
    Layout {
        layout: PathBuf,
        /// The `org.opencontainers.image.ref.name` to select; `None` means the
        /// layout must hold exactly one manifest.
        tag: Option<String>,
    },
    /// An image in a registry.
    Registry(RegistryRef),
}

/// `host[:port]/name:tag` or `host[:port]/name@sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// `host` or `host:port`, as written; "" for the default registry.
    pub host: String,
    /// The repository name, e.g. `library/busybox`.
    pub name: String,
    /// A tag, or a `sha256:<hex>` digest that the manifest must match.
    pub reference: String,
}

impl RegistryRef {
    /// The manifest digest this reference pins, if it is a digest reference.
    pub fn digest(&self) -> Option<&str> {
        self.reference.strip_prefix("sha256:")
    }
}

impl FromStr for ImageRef {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, ImageError> {
        let invalid = |reason| ImageError::InvalidReference {
            reference: s.to_string(),
            reason,
        };
        let Some(rest) = s.strip_prefix("oci:") else {
            return parse_registry(s).map(ImageRef::Registry).map_err(invalid);
        };
        // A tag follows the last ':' unless that ':' belongs to the path.
        let (path, tag) = match rest.rsplit_once(':') {
            Some((path, tag)) if !tag.contains('/') => (path, Some(tag)),
            _ => (rest, None),
        };
        if path.is_empty() {
            return Err(invalid("layout path is empty"));
        }
        if tag == Some("") {
            return Err(invalid("tag is empty"));
        }
        Ok(ImageRef::Layout {
            layout: PathBuf::from(path),
            tag: tag.map(str::to_string),
        })
    }
}

fn parse_registry(s: &str) -> Result<RegistryRef, &'static str> {
    let (host, path) = match s.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest),
        _ => ("", s),
    };
    if s.contains("://") {
        return Err("must be oci:/path[:tag] or [host[:port]/]name[:tag] or ...@sha256:<hex>");
    }
    let host_ok = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b));
    if !host_ok {
        return Err("registry host must be host or host:port");
    }
    let (name, reference) = if let Some((name, digest)) = path.split_once('@') {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or("digest must be sha256:<64 hex digits>")?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err("digest must be sha256:<64 lowercase hex digits>");
        }
        (name, digest)
    } else {
        let (name, tag) = path
            .rsplit_once(':')
            .filter(|(_, tag)| !tag.contains('/'))
            .unwrap_or((path, "latest"));
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !tag_ok {
            return Err("tag must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'");
        }
        (name, tag)
    };
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
    };
    if !name.split('/').all(component_ok) {
        return Err("repository name must be lowercase [a-z0-9._-] components separated by '/'");
    }
    Ok(RegistryRef {
        host: host.to_string(),
        name: name.to_string(),
        reference: reference.to_string(),
    })
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageRef::Layout { layout, tag } => {
                write!(f, "oci:{}", layout.display())?;
                if let Some(tag) = tag {
                    write!(f, ":{tag}")?;
                }
                Ok(())
            }
            ImageRef::Registry(r) => {
                let sep = if r.digest().is_some() { '@' } else { ':' };
                if !r.host.is_empty() {
                    write!(f, "{}/", r.host)?;
                }
                write!(f, "{}{sep}{}", r.name, r.reference)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_path_and_tag() {
        let r: ImageRef = "oci:/var/images/busybox:1.36".parse().unwrap();
        assert_eq!(
            r,
            ImageRef::Layout {
                layout: PathBuf::from("/var/images/busybox"),
                tag: Some("1.36".into())
            }
        );
        assert_eq!(r.to_string(), "oci:/var/images/busybox:1.36");
    }

    #[test]
    fn tag_is_optional() {
        let r: ImageRef = "oci:/var/images/busybox".parse().unwrap();
        assert!(matches!(r, ImageRef::Layout { tag: None, .. }));
    }

    #[test]
    fn rejects_empty_parts() {
        assert!("oci:".parse::<ImageRef>().is_err());
        assert!("oci:/x:".parse::<ImageRef>().is_err());
    }

    #[test]
    fn parses_registry_tag_and_digest() {
        let r: ImageRef = "127.0.0.1:5000/demo/web:v1".parse().unwrap();
        let ImageRef::Registry(reg) = &r else {
            panic!("{r:?}")
        };
        assert_eq!(reg.host, "127.0.0.1:5000");
        assert_eq!(reg.name, "demo/web");
        assert_eq!(reg.reference, "v1");
        assert_eq!(reg.digest(), None);
        assert_eq!(r.to_string(), "127.0.0.1:5000/demo/web:v1");
        let hex = "a".repeat(64);
        let s = format!("registry.example.com/web@sha256:{hex}");
        let r: ImageRef = s.parse().unwrap();
        let ImageRef::Registry(reg) = &r else {
            panic!("{r:?}")
        };
        assert_eq!(reg.digest(), Some(hex.as_str()));
        assert_eq!(r.to_string(), s);
    }

    #[test]
    fn rejects_bad_registry_references() {
        for bad in [
            "docker://busybox",
            "host.example/web:",
            "host/Web:v1",
            "host/web@sha256:abc",
            "host/web@md5:0000",
            "/web:v1",
            "host.example//web:v1",
            "Nginx:1.27",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn names_without_a_registry_are_the_default_registrys() {
        let parse = |s: &str| match s.parse::<ImageRef>().unwrap() {
            ImageRef::Registry(r) => (r.host, r.name, r.reference),
            other => panic!("{other:?}"),
        };
        let r = |h: &str, n: &str, t: &str| (h.to_string(), n.to_string(), t.to_string());
        assert_eq!(parse("nginx:1.27"), r("", "nginx", "1.27"));
        assert_eq!(parse("library/nginx"), r("", "library/nginx", "latest"));
        assert_eq!(parse("myorg/app:v2"), r("", "myorg/app", "v2"));
        assert_eq!(parse("localhost/app"), r("localhost", "app", "latest"));
        assert_eq!(parse("host:5000/web"), r("host:5000", "web", "latest"));
        assert_eq!(
            "nginx:1.27".parse::<ImageRef>().unwrap().to_string(),
            "nginx:1.27"
        );
    }
}
