//! The `airlock` command: loads configuration and runs the appliance.
fn main() {}
