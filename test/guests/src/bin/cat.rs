//! Copies stdin to stdout until end of file, then prints "EOF".
use std::io::{Read, Write};

fn main() {
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut buf = [0u8; 4096];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => stdout.write_all(&buf[..n]).unwrap(),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("read stdin: {e}");
                std::process::exit(1);
            }
        }
    }
    writeln!(stdout, "EOF").unwrap();
}
