//! Sleeps for argv[1] seconds (default 5), printing "sleeping N" first and "done" at the end.
use std::io::Write;

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    println!("sleeping {secs}");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(std::time::Duration::from_secs_f64(secs));
    println!("done");
}
