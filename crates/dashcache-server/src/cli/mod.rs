//! The `dashcache` subcommands other than `serve`: `config check`, `keys`, `users`, `bench`,
//! `load` and `drill`.

pub mod bench;
pub mod config;
pub mod drill;
pub mod http_load;
pub mod keys;
pub mod users;

/// A command's failure, said plainly.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;

/// A spinner or bar in the style every command uses.
pub(crate) fn style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}
