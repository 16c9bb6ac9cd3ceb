//! The direction of the crate's modules: no two of them import each other, directly or through
//! others (ARCHITECTURE.md says how to read the graph).

#![allow(clippy::panic)] // a panic is how a test fails

#[test]
fn modules_import_each_other_without_loops() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    println!(
        "{}",
        dashcache_testkit::modules::render(&dashcache_testkit::modules::graph(dir))
    );
    dashcache_testkit::modules::assert_no_loops(dir);
}
