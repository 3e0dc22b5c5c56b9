//! Finding the program inside the container, the way `execvp` would.
//!
//! Paths are container paths; `root` is where the container's `/` is on the host view ("/" in
//! production, after pivot_root). Symbolic links are followed inside `root`: an absolute link
//! target starts again at `root`, and `..` never climbs above it.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::OciError;

/// The PATH used when the spec's environment sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Linux's limit on symbolic links followed while resolving one path.
const MAX_SYMLINKS: usize = 40;

/// Finds `arg0_path` in the container rooted at `root`.
///
/// With a `/` in it, `arg0_path` is absolute or relative to `cwd`; otherwise each entry of
/// `path_env` (default [`DEFAULT_PATH`]; relative and empty entries are relative to `cwd`) is
/// tried in order. Only regular files (after following symlinks) match. Returns the resolved
/// path (symlinks followed) joined under `root`.
///
/// During a PATH search, directories and files behind a directory that cannot be searched are
/// skipped like `execvp` does; if nothing else matches they are reported (permission denied
/// first, then "is a directory").
pub fn resolve_executable(
    root: &Path,
    arg0_path: &str,
    path_env: Option<&str>,
    cwd: &str,
) -> Result<PathBuf, OciError> {
    if arg0_path.is_empty() {
        return Err(OciError::InvalidEntrypoint {
            value: String::new(),
            reason: "empty path",
        });
    }
    let cwd = Path::new("/").join(cwd);

    if arg0_path.contains('/') {
        let wanted = cwd.join(arg0_path);
        return match lookup(root, &wanted) {
            Ok(found) => Ok(under_root(root, &found)),
            Err(Miss::Missing) => Err(OciError::NotFound {
                name: arg0_path.to_string(),
                searched: "the container's rootfs".to_string(),
            }),
            Err(miss) => Err(miss.into_error(&wanted)),
        };
    }

    let search = path_env.unwrap_or(DEFAULT_PATH);
    let mut skipped: Option<(Miss, PathBuf)> = None;
    for dir in search.split(':') {
        let candidate = cwd.join(dir).join(arg0_path);
        match lookup(root, &candidate) {
            Ok(found) => return Ok(under_root(root, &found)),
            Err(Miss::Missing) => {}
            Err(Miss::Denied) => {
                if !matches!(skipped, Some((Miss::Denied, _))) {
                    skipped = Some((Miss::Denied, candidate));
                }
            }
            Err(miss @ (Miss::Directory | Miss::NotRegular)) => {
                if skipped.is_none() {
                    skipped = Some((miss, candidate));
                }
            }
            Err(miss @ (Miss::Loop | Miss::Io(_))) => return Err(miss.into_error(&candidate)),
        }
    }
    Err(match skipped {
        Some((miss, path)) => miss.into_error(&path),
        None => OciError::NotFound {
            name: arg0_path.to_string(),
            searched: format!("PATH {search:?}"),
        },
    })
}

/// Why a candidate did not match.
#[derive(Debug)]
enum Miss {
    Missing,
    Directory,
    NotRegular,
    Denied,
    Loop,
    Io(io::Error),
}

impl Miss {
    fn from_io(e: io::Error) -> Miss {
        match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => Miss::Missing,
            io::ErrorKind::PermissionDenied => Miss::Denied,
            _ => Miss::Io(e),
        }
    }

    fn into_error(self, wanted: &Path) -> OciError {
        let path = wanted.display().to_string();
        match self {
            Miss::Missing => OciError::NotFound {
                name: path,
                searched: "the container's rootfs".to_string(),
            },
            Miss::Directory => OciError::IsDirectory { path },
            Miss::NotRegular => OciError::NotRegularFile { path },
            Miss::Denied => OciError::PermissionDenied { path },
            Miss::Loop => OciError::SymlinkLoop { path },
            Miss::Io(e) => OciError::io(wanted, "look up", e),
        }
    }
}

/// Resolves `wanted` (an absolute container path) and checks that it is a regular file.
/// Returns the resolved container path.
fn lookup(root: &Path, wanted: &Path) -> Result<PathBuf, Miss> {
    let resolved = resolve_in_root(root, wanted)?;
    let host = under_root(root, &resolved);
    // `resolved` holds no symlink: nothing is followed, so a link swapped in meanwhile (a
    // volume shared with another container) fails the lookup instead of leading out of the
    // root; the init then reads the file beneath the root anyway (openat2).
    let meta = fs::symlink_metadata(&host).map_err(Miss::from_io)?;
    if meta.is_dir() {
        return Err(Miss::Directory);
    }
    if !meta.is_file() {
        return Err(Miss::NotRegular);
    }
    // Not opened here: this runs as root on the host's tree (the init before its pivot), where
    // a directory of the path, in a volume another container shares, can be swapped for a
    // symlink meanwhile, and an open by path would follow it out of the root (opening a device
    // has effects). The init reads the file beneath the root (openat2 `RESOLVE_IN_ROOT`), as the
    // guest's user, and says so if it cannot.
    Ok(resolved)
}

/// Follows every symbolic link in `path` inside `root`. The result has no `.`, `..` or links.
fn resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf, Miss> {
    let mut todo: VecDeque<OsString> = components(path);
    let mut done = PathBuf::from("/");
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            done.pop();
            continue;
        }
        let next = done.join(&name);
        let host = under_root(root, &next);
        let meta = fs::symlink_metadata(&host).map_err(Miss::from_io)?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Miss::Loop);
            }
            let target = fs::read_link(&host).map_err(Miss::from_io)?;
            if target.is_absolute() {
                done = PathBuf::from("/");
            }
            for part in components(&target).into_iter().rev() {
                todo.push_front(part);
            }
        } else if !todo.is_empty() && !meta.is_dir() {
            return Err(Miss::Missing); // ENOTDIR, which execvp treats like ENOENT
        } else {
            done = next;
        }
    }
    Ok(done)
}

/// The names in `path`, `..` kept (it must be applied after links are followed), `.` dropped.
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn under_root(root: &Path, container_path: &Path) -> PathBuf {
    root.join(container_path.strip_prefix("/").unwrap_or(container_path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use std::os::unix::fs::symlink;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in ["bin", "usr/bin", "app/sub", "opt/tools/app.wasm"] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::write(r.join("hello.wasm"), b"\0asm\x01\0\0\0").unwrap();
        fs::write(r.join("usr/bin/tool"), b"usr").unwrap();
        fs::write(r.join("bin/tool"), b"bin").unwrap();
        fs::write(r.join("app/sub/rel.wasm"), b"rel").unwrap();
        dir
    }

    #[test]
    fn absolute_path() {
        let dir = rootfs();
        let p = resolve_executable(dir.path(), "/hello.wasm", None, "/").unwrap();
        assert_eq!(p, dir.path().join("hello.wasm"));
    }

    #[test]
    fn relative_to_cwd() {
        let dir = rootfs();
        let p = resolve_executable(dir.path(), "sub/rel.wasm", None, "/app").unwrap();
        assert_eq!(p, dir.path().join("app/sub/rel.wasm"));
        let p = resolve_executable(dir.path(), "./rel.wasm", None, "/app/sub").unwrap();
        assert_eq!(p, dir.path().join("app/sub/rel.wasm"));
        // `..` cannot climb above the root.
        let p = resolve_executable(dir.path(), "../../../hello.wasm", None, "/app").unwrap();
        assert_eq!(p, dir.path().join("hello.wasm"));
    }

    #[test]
    fn path_lookup_order() {
        let dir = rootfs();
        let p = resolve_executable(dir.path(), "tool", Some("/usr/bin:/bin"), "/").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"usr");
        let p = resolve_executable(dir.path(), "tool", Some("/nope:/bin:/usr/bin"), "/").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"bin");
        // The default PATH has /usr/bin before /bin.
        let p = resolve_executable(dir.path(), "tool", None, "/").unwrap();
        assert_eq!(p, dir.path().join("usr/bin/tool"));
    }

    #[test]
    fn relative_path_entries_use_cwd() {
        let dir = rootfs();
        let p = resolve_executable(dir.path(), "rel.wasm", Some("/bin:sub"), "/app").unwrap();
        assert_eq!(p, dir.path().join("app/sub/rel.wasm"));
        // An empty entry is the cwd itself.
        let p = resolve_executable(dir.path(), "rel.wasm", Some("/bin::"), "/app/sub").unwrap();
        assert_eq!(p, dir.path().join("app/sub/rel.wasm"));
    }

    #[test]
    fn missing() {
        let dir = rootfs();
        let err = resolve_executable(dir.path(), "/nope.wasm", None, "/").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(
            err.to_string(),
            "entrypoint \"/nope.wasm\": not found in the container's rootfs"
        );
        let err = resolve_executable(dir.path(), "nope", Some("/bin:/usr/bin"), "/").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(
            err.to_string(),
            "entrypoint \"nope\": not found in PATH \"/bin:/usr/bin\""
        );
        // A regular file used as a directory is a miss too.
        let err = resolve_executable(dir.path(), "/hello.wasm/x", None, "/").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn directory() {
        let dir = rootfs();
        let err = resolve_executable(dir.path(), "/app", None, "/").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(err.to_string(), "entrypoint \"/app\": is a directory");
        // In a PATH search a directory is skipped in favour of a later file...
        fs::write(dir.path().join("bin/app.wasm"), b"x").unwrap();
        let p = resolve_executable(dir.path(), "app.wasm", Some("/opt/tools:/bin"), "/").unwrap();
        assert_eq!(p, dir.path().join("bin/app.wasm"));
        // ...and reported when nothing else matches.
        let err = resolve_executable(dir.path(), "app.wasm", Some("/opt/tools:/usr/bin"), "/")
            .unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    #[test]
    fn symlink_loop() {
        let dir = rootfs();
        symlink("b", dir.path().join("a")).unwrap();
        symlink("/a", dir.path().join("b")).unwrap();
        let err = resolve_executable(dir.path(), "/a", None, "/").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(
            err.to_string()
                .contains("too many levels of symbolic links"),
            "{err}"
        );
        let err = resolve_executable(dir.path(), "a", Some("/"), "/").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn symlink_to_file_stays_inside_root() {
        let dir = rootfs();
        // Absolute targets are resolved against the container root, not the host's.
        symlink("/hello.wasm", dir.path().join("bin/hello")).unwrap();
        symlink("../usr/bin", dir.path().join("app/ubin")).unwrap();
        let p = resolve_executable(dir.path(), "hello", Some("/bin"), "/").unwrap();
        assert_eq!(p, dir.path().join("hello.wasm"));
        let p = resolve_executable(dir.path(), "/app/ubin/tool", None, "/").unwrap();
        assert_eq!(p, dir.path().join("usr/bin/tool"));
        // A dangling link is not found.
        symlink("/gone", dir.path().join("bin/dangling")).unwrap();
        let err = resolve_executable(dir.path(), "/bin/dangling", None, "/").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn empty_name_is_invalid() {
        let dir = rootfs();
        let err = resolve_executable(dir.path(), "", None, "/").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }
}
