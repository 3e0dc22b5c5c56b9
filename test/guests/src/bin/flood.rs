//! Prints "flooding", then writes 64 KiB blocks to stdout as fast as it can, forever: only a
//! signal stops it (a failed write ends it with 1).
use std::io::Write;

fn main() {
    println!("flooding");
    let block = vec![b'x'; 64 << 10];
    let mut out = std::io::stdout().lock();
    loop {
        if out.write_all(&block).is_err() {
            std::process::exit(1);
        }
    }
}
