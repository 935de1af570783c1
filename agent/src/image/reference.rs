//! Image references in skopeo's transport syntax: `oci:/path/to/layout[:tag]`.

use std::path::PathBuf;
use std::str::FromStr;

use super::ImageError;

/// A reference to an image inside an OCI image layout directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub layout: PathBuf,
    /// The `org.opencontainers.image.ref.name` to select; `None` means the
    /// layout must hold exactly one manifest.
    pub tag: Option<String>,
}

impl FromStr for ImageRef {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, ImageError> {
        let invalid = |reason| ImageError::InvalidReference {
            reference: s.to_string(),
            reason,
        };
        let rest = s
            .strip_prefix("oci:")
            .ok_or_else(|| invalid("must start with \"oci:\""))?;
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
        Ok(ImageRef {
            layout: PathBuf::from(path),
            tag: tag.map(str::to_string),
        })
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "oci:{}", self.layout.display())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_path_and_tag() {
        let r: ImageRef = "oci:/var/images/busybox:1.36".parse().unwrap();
        assert_eq!(r.layout, PathBuf::from("/var/images/busybox"));
        assert_eq!(r.tag.as_deref(), Some("1.36"));
        assert_eq!(r.to_string(), "oci:/var/images/busybox:1.36");
    }

    #[test]
    fn tag_is_optional() {
        let r: ImageRef = "oci:/var/images/busybox".parse().unwrap();
        assert_eq!(r.tag, None);
    }

    #[test]
    fn rejects_other_transports_and_empty_parts() {
        assert!("docker://busybox".parse::<ImageRef>().is_err());
        assert!("oci:".parse::<ImageRef>().is_err());
        assert!("oci:/x:".parse::<ImageRef>().is_err());
    }
}
