//! The configuration variables: each a typed constant carrying its name, its default and its
//! bounds. [`CacheSettings`](crate::CacheSettings) reads them, and the builders take their
//! defaults from them, so a default is written once and a misspelled name does not compile.
//!
//! A leaf: `settings`, `redis`, `hybrid`, `memory` and the patterns use it; it uses nothing.
//!
//! ```
//! use dashcache::vars::CACHE_TIMEOUT_MS;
//! assert_eq!(CACHE_TIMEOUT_MS.name, "CACHE_TIMEOUT_MS");
//! assert_eq!(CACHE_TIMEOUT_MS.default_duration(), std::time::Duration::from_millis(250));
//! ```

use std::time::Duration;

/// The unit of a numeric variable, for parsing and for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unit {
    /// Whole seconds.
    Seconds,
    /// Milliseconds.
    Millis,
    /// A plain count.
    Count,
    /// Bytes.
    Bytes,
    /// Percent.
    Percent,
}

impl Unit {
    /// The unit as a message names it (`""` for a count).
    pub fn name(self) -> &'static str {
        match self {
            Unit::Seconds => "seconds",
            Unit::Millis => "milliseconds",
            Unit::Count => "",
            Unit::Bytes => "bytes",
            Unit::Percent => "percent",
        }
    }
}

/// A numeric variable: an integer from `min` to `max` in `unit`, `default` when unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Number {
    /// The variable's name (and the settings file's key).
    pub name: &'static str,
    /// Its value when unset.
    pub default: u64,
    /// The smallest value allowed.
    pub min: u64,
    /// The largest value allowed.
    pub max: u64,
    /// What the integer counts.
    pub unit: Unit,
}

impl Number {
    const fn new(name: &'static str, default: u64, min: u64, max: u64, unit: Unit) -> Self {
        Self {
            name,
            default,
            min,
            max,
            unit,
        }
    }

    /// `n` in this variable's unit as a duration (seconds or milliseconds; a count is taken as
    /// milliseconds).
    pub const fn duration(&self, n: u64) -> Duration {
        match self.unit {
            Unit::Seconds => Duration::from_secs(n),
            _ => Duration::from_millis(n),
        }
    }

    /// The default as a duration.
    pub const fn default_duration(&self) -> Duration {
        self.duration(self.default)
    }

    /// The bounds as durations.
    pub const fn duration_bounds(&self) -> (Duration, Duration) {
        (self.duration(self.min), self.duration(self.max))
    }

    /// The default as a `u32` (the variable's bounds fit one).
    pub const fn default_u32(&self) -> u32 {
        if self.default > u32::MAX as u64 {
            u32::MAX
        } else {
            self.default as u32
        }
    }
}

/// A text variable, unset unless given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Text {
    /// The variable's name.
    pub name: &'static str,
    /// True when the value is a secret: shown masked, never echoed in an error.
    pub secret: bool,
}

/// A variable with two spellings, `off` and `on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Switch {
    /// The variable's name.
    pub name: &'static str,
    /// How "off" is written (the default).
    pub off: &'static str,
    /// How "on" is written.
    pub on: &'static str,
}

const DAY: u64 = 24 * 3600;

/// `CACHE_TTL_SESSION`: The TTL of sessions.
pub const CACHE_TTL_SESSION: Number =
    Number::new("CACHE_TTL_SESSION", 30 * DAY, 60, 90 * DAY, Unit::Seconds);
/// `CACHE_TTL_PERMISSIONS`: The TTL of cached permission checks.
pub const CACHE_TTL_PERMISSIONS: Number =
    Number::new("CACHE_TTL_PERMISSIONS", 300, 10, 3600, Unit::Seconds);
/// `CACHE_TTL_OAUTH_STATE`: The TTL of OAuth state tokens.
pub const CACHE_TTL_OAUTH_STATE: Number =
    Number::new("CACHE_TTL_OAUTH_STATE", 600, 60, 3600, Unit::Seconds);
/// `CACHE_TTL_PROVIDER_CONNECTION`: The TTL of provider connections.
pub const CACHE_TTL_PROVIDER_CONNECTION: Number = Number::new(
    "CACHE_TTL_PROVIDER_CONNECTION",
    300,
    60,
    3600,
    Unit::Seconds,
);
/// `CACHE_TTL_ACCOUNTS_LIST`: The TTL of account lists.
pub const CACHE_TTL_ACCOUNTS_LIST: Number =
    Number::new("CACHE_TTL_ACCOUNTS_LIST", 300, 60, 3600, Unit::Seconds);
/// `CACHE_TTL_SECURITY_CONFIG`: The TTL of security configuration versions.
pub const CACHE_TTL_SECURITY_CONFIG: Number =
    Number::new("CACHE_TTL_SECURITY_CONFIG", 60, 10, 600, Unit::Seconds);
/// `CACHE_TTL_STATIC_DATA`: The TTL of rarely changing reference data.
pub const CACHE_TTL_STATIC_DATA: Number =
    Number::new("CACHE_TTL_STATIC_DATA", DAY, 3600, 7 * DAY, Unit::Seconds);
/// `CACHE_TTL_USER`: The TTL of user records.
pub const CACHE_TTL_USER: Number = Number::new("CACHE_TTL_USER", 3600, 60, DAY, Unit::Seconds);
/// `CACHE_TTL_RATE_LIMIT`: The TTL of fixed-window rate-limit counters.
pub const CACHE_TTL_RATE_LIMIT: Number =
    Number::new("CACHE_TTL_RATE_LIMIT", 60, 1, 3600, Unit::Seconds);
/// `CACHE_TTL_PROVIDER_API`: The TTL of upstream provider API answers (balances, holdings).
pub const CACHE_TTL_PROVIDER_API: Number =
    Number::new("CACHE_TTL_PROVIDER_API", 300, 10, 3600, Unit::Seconds);
/// `CACHE_TTL_TRANSACTIONS`: The TTL of pages of transaction lists.
pub const CACHE_TTL_TRANSACTIONS: Number =
    Number::new("CACHE_TTL_TRANSACTIONS", 60, 5, 600, Unit::Seconds);
/// `CACHE_TTL_CREDENTIALS`: How long decrypted provider credentials stay in process memory.
pub const CACHE_TTL_CREDENTIALS: Number =
    Number::new("CACHE_TTL_CREDENTIALS", 60, 5, 300, Unit::Seconds);
/// `CACHE_STALE_SECS`: How long cache-aside keeps values past their TTL (0: off).
pub const CACHE_STALE_SECS: Number = Number::new("CACHE_STALE_SECS", 0, 0, DAY, Unit::Seconds);
/// `CACHE_TTL_JITTER_PERCENT`: TTL jitter each way, in percent of the TTL.
pub const CACHE_TTL_JITTER_PERCENT: Number =
    Number::new("CACHE_TTL_JITTER_PERCENT", 10, 0, 50, Unit::Percent);
/// `CACHE_TIMEOUT_MS`: The deadline of each Redis operation.
pub const CACHE_TIMEOUT_MS: Number = Number::new("CACHE_TIMEOUT_MS", 250, 10, 10_000, Unit::Millis);
/// `CACHE_CONNECT_TIMEOUT_MS`: The deadline of a connection attempt to Redis.
pub const CACHE_CONNECT_TIMEOUT_MS: Number =
    Number::new("CACHE_CONNECT_TIMEOUT_MS", 250, 10, 30_000, Unit::Millis);
/// `CACHE_SWEEP_TIMEOUT_MS`: The deadline of a whole `delete_pattern` on Redis.
pub const CACHE_SWEEP_TIMEOUT_MS: Number = Number::new(
    "CACHE_SWEEP_TIMEOUT_MS",
    30_000,
    100,
    3_600_000,
    Unit::Millis,
);
/// `CACHE_BREAKER_FAILURES`: Consecutive transient failures that open the circuit breaker.
pub const CACHE_BREAKER_FAILURES: Number =
    Number::new("CACHE_BREAKER_FAILURES", 5, 1, 1000, Unit::Count);
/// `CACHE_BREAKER_OPEN_MS`: How long the breaker stays open before it lets one probe through.
pub const CACHE_BREAKER_OPEN_MS: Number =
    Number::new("CACHE_BREAKER_OPEN_MS", 500, 10, 60_000, Unit::Millis);
/// `CACHE_MEMORY_MAX_ENTRIES`: The embedded cache's entry bound.
pub const CACHE_MEMORY_MAX_ENTRIES: Number = Number::new(
    "CACHE_MEMORY_MAX_ENTRIES",
    1_000_000,
    1000,
    1_000_000_000,
    Unit::Count,
);
/// `CACHE_MEMORY_MAX_BYTES`: The embedded cache's byte bound.
pub const CACHE_MEMORY_MAX_BYTES: Number = Number::new(
    "CACHE_MEMORY_MAX_BYTES",
    128 << 20,
    1 << 20,
    1 << 40,
    Unit::Bytes,
);
/// `CACHE_L1_MAX_ENTRIES`: The entry bound of the L1 in front of Redis (0 turns L1 off).
pub const CACHE_L1_MAX_ENTRIES: Number = Number::new(
    "CACHE_L1_MAX_ENTRIES",
    100_000,
    0,
    1_000_000_000,
    Unit::Count,
);
/// `CACHE_L1_MAX_BYTES`: The byte bound of the L1 in front of Redis.
pub const CACHE_L1_MAX_BYTES: Number = Number::new(
    "CACHE_L1_MAX_BYTES",
    64 << 20,
    1 << 20,
    1 << 40,
    Unit::Bytes,
);
/// `CACHE_L1_STALENESS_MS`: The staleness bound Δ of L1.
pub const CACHE_L1_STALENESS_MS: Number =
    Number::new("CACHE_L1_STALENESS_MS", 1000, 10, 3_600_000, Unit::Millis);
/// `CACHE_L1_MAX_TTL_SECS`: The longest an entry stays in L1.
pub const CACHE_L1_MAX_TTL_SECS: Number =
    Number::new("CACHE_L1_MAX_TTL_SECS", 300, 1, DAY, Unit::Seconds);
/// `CACHE_DB_STALENESS_MS`: the staleness bound Δ_db from a database commit to every
/// instance's answers (see [`crate::coherent`]).
pub const CACHE_DB_STALENESS_MS: Number =
    Number::new("CACHE_DB_STALENESS_MS", 1000, 10, 3_600_000, Unit::Millis);
/// `CACHE_RATE_LIMIT_BATCH`: The most checks of one hot rate-limit bucket a round trip reserves (1: no reservations).
pub const CACHE_RATE_LIMIT_BATCH: Number =
    Number::new("CACHE_RATE_LIMIT_BATCH", 64, 1, 1024, Unit::Count);
/// `CACHE_COMPRESS_MIN_BYTES`: Values shorter than this are stored uncompressed.
pub const CACHE_COMPRESS_MIN_BYTES: Number =
    Number::new("CACHE_COMPRESS_MIN_BYTES", 1024, 64, 1 << 20, Unit::Bytes);
/// `CACHE_COMPRESS_LEVEL`: The zstd level.
pub const CACHE_COMPRESS_LEVEL: Number = Number::new("CACHE_COMPRESS_LEVEL", 3, 1, 19, Unit::Count);

/// `REDIS_URL`: Redis when set (one server, a cluster's seeds, or a Sentinel set), the
/// embedded cache when not.
pub const REDIS_URL: Text = Text {
    name: "REDIS_URL",
    secret: false,
};
/// `CACHE_KEY_PREFIX`: what every key starts with (default `dashcache`).
pub const CACHE_KEY_PREFIX: Text = Text {
    name: "CACHE_KEY_PREFIX",
    secret: false,
};
/// `CACHE_KEY_SECRET`: the secret of opaque (hashed) key segments.
pub const CACHE_KEY_SECRET: Text = Text {
    name: "CACHE_KEY_SECRET",
    secret: true,
};
/// `CACHE_SEAL_KEYS`: the AES-256-GCM keys of sealed values.
pub const CACHE_SEAL_KEYS: Text = Text {
    name: "CACHE_SEAL_KEYS",
    secret: true,
};
/// `CACHE_TLS_CA_FILE`: a PEM bundle of the CAs to trust for `rediss://`.
pub const CACHE_TLS_CA_FILE: Text = Text {
    name: "CACHE_TLS_CA_FILE",
    secret: false,
};
/// `CACHE_TLS_CERT_FILE`: the client certificate (PEM) for mutual TLS.
pub const CACHE_TLS_CERT_FILE: Text = Text {
    name: "CACHE_TLS_CERT_FILE",
    secret: false,
};
/// `CACHE_TLS_KEY_FILE`: the client certificate's key (PEM).
pub const CACHE_TLS_KEY_FILE: Text = Text {
    name: "CACHE_TLS_KEY_FILE",
    secret: false,
};
/// `CACHE_SENTINEL_USERNAME`: the sentinels' own user.
pub const CACHE_SENTINEL_USERNAME: Text = Text {
    name: "CACHE_SENTINEL_USERNAME",
    secret: false,
};
/// `CACHE_SENTINEL_PASSWORD`: the sentinels' own password.
pub const CACHE_SENTINEL_PASSWORD: Text = Text {
    name: "CACHE_SENTINEL_PASSWORD",
    secret: true,
};
/// `CACHE_DB_COHERENT`: the namespaces that follow the database's invalidation log, comma
/// separated (default: every namespace whose truth is in the database), or `off`.
pub const CACHE_DB_COHERENT: Text = Text {
    name: "CACHE_DB_COHERENT",
    secret: false,
};
/// `CACHE_COMPRESSION`: `zstd` compresses large values; `off` stores them plain.
pub const CACHE_COMPRESSION: Switch = Switch {
    name: "CACHE_COMPRESSION",
    off: "off",
    on: "zstd",
};
/// `CACHE_TLS_INSECURE`: `true` turns certificate checks off (a test bench only).
pub const CACHE_TLS_INSECURE: Switch = Switch {
    name: "CACHE_TLS_INSECURE",
    off: "false",
    on: "true",
};

/// Every numeric variable, in the order of `.env.example`.
pub const NUMBERS: &[Number] = &[
    CACHE_TTL_SESSION,
    CACHE_TTL_PERMISSIONS,
    CACHE_TTL_OAUTH_STATE,
    CACHE_TTL_PROVIDER_CONNECTION,
    CACHE_TTL_ACCOUNTS_LIST,
    CACHE_TTL_SECURITY_CONFIG,
    CACHE_TTL_STATIC_DATA,
    CACHE_TTL_USER,
    CACHE_TTL_RATE_LIMIT,
    CACHE_TTL_PROVIDER_API,
    CACHE_TTL_TRANSACTIONS,
    CACHE_TTL_CREDENTIALS,
    CACHE_STALE_SECS,
    CACHE_TTL_JITTER_PERCENT,
    CACHE_TIMEOUT_MS,
    CACHE_CONNECT_TIMEOUT_MS,
    CACHE_SWEEP_TIMEOUT_MS,
    CACHE_BREAKER_FAILURES,
    CACHE_BREAKER_OPEN_MS,
    CACHE_MEMORY_MAX_ENTRIES,
    CACHE_MEMORY_MAX_BYTES,
    CACHE_L1_MAX_ENTRIES,
    CACHE_L1_MAX_BYTES,
    CACHE_L1_STALENESS_MS,
    CACHE_L1_MAX_TTL_SECS,
    CACHE_DB_STALENESS_MS,
    CACHE_RATE_LIMIT_BATCH,
    CACHE_COMPRESS_MIN_BYTES,
    CACHE_COMPRESS_LEVEL,
];

/// Every text variable.
pub const TEXTS: &[Text] = &[
    REDIS_URL,
    CACHE_KEY_PREFIX,
    CACHE_KEY_SECRET,
    CACHE_SEAL_KEYS,
    CACHE_TLS_CA_FILE,
    CACHE_TLS_CERT_FILE,
    CACHE_TLS_KEY_FILE,
    CACHE_SENTINEL_USERNAME,
    CACHE_SENTINEL_PASSWORD,
    CACHE_DB_COHERENT,
];

/// Every switch.
pub const SWITCHES: &[Switch] = &[CACHE_COMPRESSION, CACHE_TLS_INSECURE];

/// The variable naming the TOML file the settings read.
pub const CACHE_CONFIG_FILE: &str = "CACHE_CONFIG_FILE";

/// Every variable's name.
pub fn names() -> impl Iterator<Item = &'static str> {
    NUMBERS
        .iter()
        .map(|n| n.name)
        .chain(TEXTS.iter().map(|t| t.name))
        .chain(SWITCHES.iter().map(|s| s.name))
        .chain(std::iter::once(CACHE_CONFIG_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_lie_within_their_bounds_and_names_are_unique() {
        for n in NUMBERS {
            assert!(n.min <= n.default && n.default <= n.max, "{n:?}");
        }
        let mut all: Vec<&str> = names().collect();
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count);
    }
}
