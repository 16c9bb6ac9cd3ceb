//! The `dashcache` binary answers `--help` and `--version`.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::process::Command;

fn dashcache(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dashcache"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn version_names_the_package_version() {
    let (ok, text) = dashcache(&["--version"]);
    assert!(ok, "{text}");
    assert_eq!(
        text.trim(),
        format!("dashcache {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_describes_the_tool() {
    let (ok, text) = dashcache(&["--help"]);
    assert!(ok, "{text}");
    assert!(text.contains("Usage: dashcache"), "{text}");
    assert!(text.contains("--version"), "{text}");
}

#[test]
fn unknown_arguments_fail_with_usage() {
    let (ok, text) = dashcache(&["--no-such-flag"]);
    assert!(!ok);
    assert!(text.contains("Usage"), "{text}");
}
