//! The `dashcache` subcommands other than `serve`: `config check`, `keys`, `users`, `bench`,
//! `load`, `drill` and `warm`.

pub mod bench;
pub mod config;
pub mod drill;
pub mod http_load;
pub mod keys;
pub mod users;
pub mod warm;

/// A command's failure, said plainly.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;

/// A spinner or bar in the style every command uses.
pub(crate) fn style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}
