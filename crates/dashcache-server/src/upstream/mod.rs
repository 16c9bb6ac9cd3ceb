//! The upstream provider API — a brokerage's balances and holdings — and the service's
//! client of it. The server runs in-process with `serve` or on its own with
//! `dashcache upstream`, so tests, the drill and users all have one.

mod breaker;
pub mod client;
pub mod server;

pub use client::{ClientOptions, ProviderClient, UpstreamError};
pub use server::{KnobSettings, Knobs, RunningUpstream, UpstreamCalls};

/// The providers one can connect to.
pub const PROVIDERS: [&str; 3] = ["schwab", "plaid", "fidelity"];

/// A client of the upstream at `base_url` for every provider, with the default deadline and
/// breakers.
pub fn client_for(base_url: &str) -> ProviderClient {
    ProviderClient::new(ClientOptions::new(base_url), &PROVIDERS)
}
