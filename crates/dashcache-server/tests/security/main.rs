//! The service's security promises (README, "Security"), each attacked, in one test binary: a
//! module per pass of review.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

#[path = "../common/mod.rs"]
mod common;

mod first;
mod second;
