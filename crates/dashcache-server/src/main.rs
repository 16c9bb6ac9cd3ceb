//! `dashcache`: the command-line tool of the dashcache project.

use clap::Parser;

/// The cache layer for Rust web services: command-line tool.
///
/// The reference service (`serve`), the load generator (`bench`) and the key tools arrive with
/// their issues; this binary already reports its version and help.
#[derive(Debug, Parser)]
#[command(name = "dashcache", version, about, long_about = None)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
