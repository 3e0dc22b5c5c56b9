//! Tries to reach outside its sandbox, one attempt per argument, and prints one line per
//! attempt: `<attempt> -> ok: <what it got>` or `<attempt> -> error: <why>`. Attempts:
//!
//! - `read:PATH`: read the file (first line shown);
//! - `list:DIR`: list the directory (sorted names, comma-separated);
//! - `hardlink:FROM:TO`: make a hard link TO of FROM;
//! - `symlink:TARGET:LINK`: make a symbolic link LINK pointing at TARGET, then read through it;
//! - `write:PATH`: create the file;
//! - `open-rw:PATH`, `open-w:PATH`: open an existing file read-write / write-only (no create,
//!   no truncation; nothing is written): `/proc/self/mem`, `/proc/sysrq-trigger`, a device;
//! - `env`: every environment variable, one `env NAME=value` line each.
use std::fs;

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn path_symlink(old: *const u8, old_len: usize, fd: u32, new: *const u8, new_len: usize) -> u16;
}

/// WASI's `path_symlink` (std has no stable wrapper): LINK is made relative to the one preopen,
/// `/` (descriptor 3); TARGET is stored as given.
fn symlink(target: &str, link: &str) -> Result<(), String> {
    let link = link.trim_start_matches('/');
    // SAFETY: both pointers and lengths describe live byte strings; the call only reads them.
    let errno = unsafe { path_symlink(target.as_ptr(), target.len(), 3, link.as_ptr(), link.len()) };
    match errno {
        0 => Ok(()),
        n => Err(format!("wasi errno {n}")),
    }
}

fn first_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines().next().unwrap_or("").chars().take(120).collect()
}

fn attempt(arg: &str) -> Result<String, String> {
    let e = |e: std::io::Error| e.to_string();
    let (op, rest) = arg.split_once(':').unwrap_or((arg, ""));
    match op {
        "read" => fs::read(rest).map(|b| first_line(&b)).map_err(e),
        "list" => {
            let mut names: Vec<String> = fs::read_dir(rest)
                .map_err(e)?
                .filter_map(|d| d.ok())
                .map(|d| d.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            Ok(names.join(","))
        }
        "hardlink" => {
            let (from, to) = rest.split_once(':').ok_or("hardlink:FROM:TO")?;
            fs::hard_link(from, to).map_err(e)?;
            fs::read(to).map(|b| format!("linked, reads {}", first_line(&b))).map_err(e)
        }
        "symlink" => {
            let (target, link) = rest.split_once(':').ok_or("symlink:TARGET:LINK")?;
            symlink(target, link)?;
            fs::read(link)
                .map(|b| format!("linked, reads {}", first_line(&b)))
                .map_err(|err| format!("linked, but reading through it: {err}"))
        }
        "write" => fs::write(rest, b"written by the escape guest\n").map(|()| "written".into()).map_err(e),
        "open-rw" => fs::OpenOptions::new().read(true).write(true).open(rest).map(|_| "opened read-write".into()).map_err(e),
        "open-w" => fs::OpenOptions::new().write(true).open(rest).map(|_| "opened for writing".into()).map_err(e),
        other => Err(format!("unknown attempt {other:?}")),
    }
}

fn main() {
    for arg in std::env::args().skip(1) {
        if arg == "env" {
            for (k, v) in std::env::vars() {
                println!("env {k}={v}");
            }
            continue;
        }
        match attempt(&arg) {
            Ok(got) => println!("{arg} -> ok: {got}"),
            Err(why) => println!("{arg} -> error: {why}"),
        }
    }
}
