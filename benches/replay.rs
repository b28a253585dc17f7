//! bench placeholder.
fn main() {}
