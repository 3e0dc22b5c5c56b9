//! Allocates 1 MiB chunks and touches every page, forever, printing the total every 8 MiB.
use std::io::Write;

fn main() {
    const CHUNK: usize = 1 << 20;
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; CHUNK];
        for i in (0..CHUNK).step_by(4096) {
            chunk[i] = (i as u8) | 1;
        }
        kept.push(std::hint::black_box(chunk));
        if kept.len() % 8 == 0 {
            println!("allocated {} MiB", kept.len());
            std::io::stdout().flush().unwrap();
        }
    }
}
