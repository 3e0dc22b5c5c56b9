//! Exits with status 3 after printing a line.
fn main() {
    println!("exiting with 3");
    std::process::exit(3);
}
