//! Reads /data/in.txt (shipped in the image), writes /tmp/out.txt, reads it back and prints it.
use std::fs;

fn main() {
    let input = match fs::read_to_string("/data/in.txt") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("read /data/in.txt: {e}");
            std::process::exit(1);
        }
    };
    println!("in: {}", input.trim_end());
    let written = format!("copied: {}", input.trim_end());
    if let Err(e) = fs::write("/tmp/out.txt", &written) {
        eprintln!("write /tmp/out.txt: {e}");
        std::process::exit(2);
    }
    match fs::read_to_string("/tmp/out.txt") {
        Ok(s) => println!("out: {s}"),
        Err(e) => {
            eprintln!("read back /tmp/out.txt: {e}");
            std::process::exit(3);
        }
    }
}
