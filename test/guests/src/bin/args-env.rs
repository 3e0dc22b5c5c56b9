//! Prints what the process was given: args, $GREETING, the working directory, and the contents of
//! a file named by a relative path (argv[1], default "rel.txt"), resolved against the cwd.
use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut out = std::io::stdout().lock();
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
