//! The direction of the crate's modules: no two of them import each other, directly or through
//! others. `-- --nocapture` shows the graph (ARCHITECTURE.md, "The direction of modules").

#[test]
fn modules_import_each_other_without_loops() {
    dashcache_testkit::modules::assert_no_loops(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
}
