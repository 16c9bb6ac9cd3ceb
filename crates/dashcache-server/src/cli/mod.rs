//! The `dashcache` subcommands other than `serve`: `config check`, `keys`, `users`, `bench`,
//! `load`, `drill` and `warm`.

pub mod bench;
pub mod config;
pub mod drill;
pub mod http_load;
pub mod keys;
pub mod log_bench;
pub mod users;
pub mod warm;

/// A command's failure, said plainly.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;

/// A spinner or bar in the style every command uses.
/// `n` and `noun`, plural unless `n` is 1: "1 key", "2 keys", "1 batch", "3 batches".
pub fn plural(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else if noun.ends_with(['s', 'x']) || noun.ends_with("ch") || noun.ends_with("sh") {
        format!("{n} {noun}es")
    } else if let Some(stem) = noun.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'o', 'u'])
    {
        format!("{n} {stem}ies")
    } else {
        format!("{n} {noun}s")
    }
}

pub(crate) fn style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}

#[cfg(test)]
mod tests {
    use super::plural;

    #[test]
    fn counts_are_pluralised() {
        assert_eq!(plural(1u64, "key"), "1 key");
        assert_eq!(plural(0u64, "key"), "0 keys");
        assert_eq!(plural(2u64, "batch"), "2 batches");
        assert_eq!(plural(3u64, "entry"), "3 entries");
        assert_eq!(plural(2u64, "flush"), "2 flushes");
        assert_eq!(plural(1u64, "batch"), "1 batch");
    }
}
