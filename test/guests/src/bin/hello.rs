//! Prints one line to stdout and exits 0.
fn main() {
    println!("hello from wasm");
}
