//! The `dashcache` subcommands other than `serve`.
