//! Prints "waiting", then blocks in a read of stdin. Keeps blocking if stdin hits EOF, so the
//! only way out is a signal.
use std::io::{Read, Write};

fn main() {
    println!("waiting");
    std::io::stdout().flush().unwrap();
    let mut buf = [0u8; 64];
    loop {
        match std::io::stdin().read(&mut buf) {
            Ok(0) | Err(_) => std::thread::sleep(std::time::Duration::from_secs(3600)),
            Ok(_) => {}
        }
    }
}
