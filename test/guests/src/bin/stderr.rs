//! One line to stdout, one to stderr: the suite checks they arrive on separate streams.
fn main() {
    println!("this goes to stdout");
    eprintln!("this goes to stderr");
}
