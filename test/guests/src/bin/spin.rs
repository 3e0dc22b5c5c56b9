//! Prints "spinning", then burns CPU forever: only an interrupt (epoch, signal) stops it.
use std::io::Write;

fn main() {
    println!("spinning");
    std::io::stdout().flush().unwrap();
    let mut x: u64 = 1;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}
