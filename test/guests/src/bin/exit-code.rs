//! `exit-code CODE [after SECS] [when FILE]`: prints "waiting", waits SECS seconds and/or until
//! FILE exists (polling every 50 ms), then prints "exiting with CODE" and exits with CODE.
use std::io::Write;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code: i32 = args.first().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut after = None;
    let mut when = None;
    for pair in args[1.min(args.len())..].chunks(2) {
        match pair {
            [k, v] if k == "after" => after = v.parse::<f64>().ok(),
            [k, v] if k == "when" => when = Some(v.clone()),
            other => {
                eprintln!("exit-code: unexpected arguments {other:?}");
                std::process::exit(2);
            }
        }
    }
    println!("waiting");
    std::io::stdout().flush().unwrap();
    if let Some(secs) = after {
        std::thread::sleep(Duration::from_secs_f64(secs));
    }
    if let Some(file) = when {
        while std::fs::metadata(&file).is_err() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    println!("exiting with {code}");
    std::process::exit(code);
}
