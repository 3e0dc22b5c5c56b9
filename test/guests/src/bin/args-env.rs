//! Prints what the process was given: args, $GREETING, the working directory, and the contents of
//! a file named by a relative path (argv[1], default "rel.txt"), resolved against the cwd.
//!
//! WASI preview 1 has no initial working directory: wasi-libc always starts in "/". The shim
//! passes the OCI `process.cwd` in `PWD` (as a shell would), so the guest moves there first.
use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut out = std::io::stdout().lock();
    match std::env::var("PWD") {
        Ok(pwd) => {
            writeln!(out, "PWD={pwd}").unwrap();
            if let Err(e) = std::env::set_current_dir(&pwd) {
                writeln!(out, "chdir {pwd}: {e}").unwrap();
            }
        }
        Err(_) => writeln!(out, "PWD unset").unwrap(),
    }
    for (i, a) in args.iter().enumerate() {
        writeln!(out, "arg[{i}]={a}").unwrap();
    }
    match std::env::var("GREETING") {
        Ok(v) => writeln!(out, "GREETING={v}").unwrap(),
        Err(_) => writeln!(out, "GREETING unset").unwrap(),
    }
    match std::env::current_dir() {
        Ok(d) => writeln!(out, "cwd={}", d.display()).unwrap(),
        Err(e) => writeln!(out, "cwd error: {e}").unwrap(),
    }
    let rel = args.get(1).map(String::as_str).unwrap_or("rel.txt");
    match std::fs::read_to_string(rel) {
        Ok(s) => writeln!(out, "file {rel}: {}", s.trim_end()).unwrap(),
        Err(e) => {
            writeln!(out, "file {rel}: error: {e}").unwrap();
            drop(out);
            std::process::exit(1);
        }
    }
}
