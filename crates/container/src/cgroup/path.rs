//! Turning the spec's `linux.cgroupsPath` into a cgroupfs path relative to the cgroup root.
//!
//! Two forms exist:
//! - a plain path (`/a/b`, or relative `a/b`, which is taken from the root);
//! - the systemd form `parent-slice:prefix:name`, used when containerd/kubelet run with the
//!   systemd cgroup driver. systemd nests a slice named `a-b-c.slice` as
//!   `a.slice/a-b.slice/a-b-c.slice`, and the container gets the scope unit `prefix-name.scope`.

use super::{CgroupError, Result};

/// Slice used by the systemd form when its first field is empty.
const DEFAULT_SLICE: &str = "system.slice";

/// Normalizes a spec cgroups path into an absolute cgroupfs path ("/a/b"). An empty path becomes
/// `default`. `..` components are rejected, as is a path naming the root cgroup itself.
pub fn normalize_path(cgroups_path: &str, default: &str) -> Result<String> {
    let p = cgroups_path.trim();
    if p.is_empty() {
        return clean(default);
    }
    if !p.starts_with('/') {
        let parts: Vec<&str> = p.split(':').collect();
        if parts.len() == 3 {
            return systemd_path(p, parts[0], parts[1], parts[2]);
        }
    }
    clean(p)
}

/// Checks an already normalized path (as `Cgroup::new` receives it) and returns its clean form.
pub(crate) fn validate(path: &str) -> Result<String> {
    if !path.starts_with('/') {
        return Err(invalid(path, "must be absolute (normalize it first)"));
    }
    clean(path)
}

fn invalid(path: &str, reason: &str) -> CgroupError {
    CgroupError::InvalidPath {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

/// Joins the non-empty components of a plain path under "/", dropping `.` and rejecting `..`.
fn clean(p: &str) -> Result<String> {
    let mut out = String::new();
    for comp in p.split('/') {
        match comp {
            "" | "." => {}
            ".." => return Err(invalid(p, "`..` components are not allowed")),
            c => {
                out.push('/');
                out.push_str(c);
            }
        }
    }
    if out.is_empty() {
        return Err(invalid(p, "names the root cgroup"));
    }
    Ok(out)
}

fn systemd_path(whole: &str, slice: &str, prefix: &str, name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(invalid(
            whole,
            "systemd form needs a unit name (slice:prefix:name)",
        ));
    }
    if name.contains('/') || prefix.contains('/') {
        return Err(invalid(whole, "systemd unit names cannot contain `/`"));
    }
    if name == ".." || name == "." {
        return Err(invalid(whole, "`..` components are not allowed"));
    }
    let slice = if slice.is_empty() {
        DEFAULT_SLICE
    } else {
        slice
    };
    let parent = expand_slice(whole, slice)?;
    let unit = if name.ends_with(".slice") {
        name.to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    Ok(format!("{parent}/{unit}"))
}

/// `a-b-c.slice` -> `/a.slice/a-b.slice/a-b-c.slice`; the root slice `-.slice` -> "".
fn expand_slice(whole: &str, slice: &str) -> Result<String> {
    if slice == "-.slice" {
        return Ok(String::new());
    }
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(invalid(whole, "systemd parent must be a `.slice` unit"));
    };
    if stem.is_empty()
        || stem.contains('/')
        || stem.starts_with('-')
        || stem.ends_with('-')
        || stem.contains("--")
    {
        return Err(invalid(whole, "malformed systemd slice name"));
    }
    let mut out = String::new();
    let mut acc = String::new();
    for part in stem.split('-') {
        if !acc.is_empty() {
            acc.push('-');
        }
        acc.push_str(part);
        out.push('/');
        out.push_str(&acc);
        out.push_str(".slice");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEF: &str = "/default/t1";

    #[test]
    fn empty_uses_default() {
        assert_eq!(normalize_path("", DEF).unwrap(), "/default/t1");
        assert_eq!(normalize_path("  ", "k8s.io//abc/").unwrap(), "/k8s.io/abc");
    }

    #[test]
    fn plain_paths() {
        assert_eq!(normalize_path("/a/b", DEF).unwrap(), "/a/b");
        assert_eq!(normalize_path("a/b", DEF).unwrap(), "/a/b");
        assert_eq!(normalize_path("/a//./b/", DEF).unwrap(), "/a/b");
        // Colons in a plain path that is not the three-field systemd form are kept.
        assert_eq!(normalize_path("/a:b:c", DEF).unwrap(), "/a:b:c");
        assert_eq!(normalize_path("a:b", DEF).unwrap(), "/a:b");
    }

    #[test]
    fn rejects_dotdot_and_root() {
        for bad in ["/a/../b", "..", "a/..", "/../etc"] {
            let err = normalize_path(bad, DEF).unwrap_err();
            assert!(
                matches!(err, CgroupError::InvalidPath { .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains(".."), "{err}");
        }
        assert!(normalize_path("/", DEF).is_err());
        assert!(normalize_path("", "/").is_err());
        assert!(normalize_path("system.slice:cri:..", DEF).is_err());
    }

    #[test]
    fn systemd_form() {
        assert_eq!(
            normalize_path("system.slice:cri-containerd:abc", DEF).unwrap(),
            "/system.slice/cri-containerd-abc.scope"
        );
        assert_eq!(
            normalize_path("kubepods-besteffort-pod12.slice:cri-containerd:abc", DEF).unwrap(),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope"
        );
        assert_eq!(
            normalize_path(":docker:x", DEF).unwrap(),
            "/system.slice/docker-x.scope"
        );
        assert_eq!(normalize_path("-.slice::x", DEF).unwrap(), "/x.scope");
        assert_eq!(
            normalize_path("machine.slice:p:sub.slice", DEF).unwrap(),
            "/machine.slice/sub.slice"
        );
    }

    #[test]
    fn systemd_form_errors() {
        for bad in [
            "system:cri:abc",       // parent not a slice
            "a--b.slice:cri:abc",   // empty slice component
            "-a.slice:cri:abc",     // leading dash
            "system.slice:cri:",    // no name
            "system.slice:cri:a/b", // slash in unit
        ] {
            assert!(
                normalize_path(bad, DEF).is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn validate_requires_absolute() {
        assert_eq!(validate("/a//b").unwrap(), "/a/b");
        assert!(validate("a/b").is_err());
        assert!(validate("/a/../b").is_err());
        assert!(validate("/").is_err());
    }
}
