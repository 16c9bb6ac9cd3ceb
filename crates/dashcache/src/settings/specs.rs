//! The numeric variables: names, defaults, bounds and units.

/// The unit of a numeric variable, for parsing and for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unit {
    Seconds,
    Millis,
    Count,
    Bytes,
    Percent,
}

impl Unit {
    pub(super) fn name(self) -> &'static str {
        match self {
            Unit::Seconds => "seconds",
            Unit::Millis => "milliseconds",
            Unit::Count => "",
            Unit::Bytes => "bytes",
            Unit::Percent => "percent",
        }
    }
}

/// One numeric variable: its name, default, bounds and meaning.
#[derive(Debug, Clone, Copy)]
pub(super) struct Spec {
    pub(super) var: &'static str,
    pub(super) default: u64,
    pub(super) min: u64,
    pub(super) max: u64,
    pub(super) unit: Unit,
}

pub(super) const DAY: u64 = 24 * 3600;

/// Every numeric variable, in the order of `.env.example`.
pub(super) const NUMERIC: &[Spec] = &[
    Spec {
        var: "CACHE_TTL_SESSION",
        default: 30 * DAY,
        min: 60,
        max: 90 * DAY,
        unit: Unit::Seconds,
    },
    Spec {
        var: "CACHE_TTL_PERMISSIONS",
        default: 300,
        min: 10,
        max: 3600,
        unit: Unit::Seconds,
    },
    Spec {
        var: "CACHE_TTL_OAUTH_STATE",
        default: 600,
        min: 60,
        max: 3600,
        unit: Unit::Seconds,
    },
    Spec {
        var: "CACHE_TTL_PROVIDER_CONNECTION",
        default: 300,
        min: 60,
        max: 3600,
        unit: Unit::Seconds,
    },
    Spec {
        var: "CACHE_TTL_ACCOUNTS_LIST",
        default: 300,
        min: 60,
        max: 3600,
        unit: Unit::Seconds,
    },
    Spec {
        var: "CACHE_TTL_SECURITY_CONFIG",
        default: 60,
        min: 10,
        max: 600,
        unit: Unit::Seconds,
    },
    Spec {
        var: "CACHE_TTL_STATIC_DATA",
        default: DAY,
        min: 3600,
        max: 7 * DAY,
        unit: Unit::Seconds,
    },
    Spec {
        var: "CACHE_TTL_USER",
        default: 3600,
        min: 60,
        max: DAY,
        unit: Unit::Seconds,
    },
    Spec {
        var: "CACHE_TTL_RATE_LIMIT",
        default: 60,
        min: 1,
        max: 3600,
        unit: Unit::Seconds,
    },
    Spec {
        var: "CACHE_TTL_PROVIDER_API",
        default: 300,
        min: 10,
        max: 3600,
        unit: Unit::Seconds,
    },
    Spec {
        var: "CACHE_TTL_TRANSACTIONS",
        default: 60,
        min: 5,
        max: 600,
        unit: Unit::Seconds,
    },
    Spec {
        var: "CACHE_TTL_CREDENTIALS",
        default: 60,
        min: 5,
        max: 300,
        unit: Unit::Seconds,
    },
    Spec {
        var: "CACHE_STALE_SECS",
        default: 0,
        min: 0,
        max: DAY,
        unit: Unit::Seconds,
    },
    Spec {
        var: "CACHE_TTL_JITTER_PERCENT",
        default: 10,
        min: 0,
        max: 50,
        unit: Unit::Percent,
    },
    Spec {
        var: "CACHE_TIMEOUT_MS",
        default: 250,
        min: 10,
        max: 10_000,
        unit: Unit::Millis,
    },
    Spec {
        var: "CACHE_CONNECT_TIMEOUT_MS",
        default: 250,
        min: 10,
        max: 30_000,
        unit: Unit::Millis,
    },
    Spec {
        var: "CACHE_SWEEP_TIMEOUT_MS",
        default: 30_000,
        min: 100,
        max: 3_600_000,
        unit: Unit::Millis,
    },
    Spec {
        var: "CACHE_BREAKER_FAILURES",
        default: 5,
        min: 1,
        max: 1000,
        unit: Unit::Count,
    },
    Spec {
        var: "CACHE_BREAKER_OPEN_MS",
        default: 500,
        min: 10,
        max: 60_000,
        unit: Unit::Millis,
    },
    Spec {
        var: "CACHE_MEMORY_MAX_ENTRIES",
        default: 1_000_000,
        min: 1000,
        max: 1_000_000_000,
        unit: Unit::Count,
    },
    Spec {
        var: "CACHE_MEMORY_MAX_BYTES",
        default: 128 << 20,
        min: 1 << 20,
        max: 1 << 40,
        unit: Unit::Bytes,
    },
    Spec {
        var: "CACHE_L1_MAX_ENTRIES",
        default: 100_000,
        min: 0,
        max: 1_000_000_000,
        unit: Unit::Count,
    },
    Spec {
        var: "CACHE_L1_MAX_BYTES",
        default: 64 << 20,
        min: 1 << 20,
        max: 1 << 40,
        unit: Unit::Bytes,
    },
    Spec {
        var: "CACHE_L1_STALENESS_MS",
        default: 1000,
        min: 10,
        max: 3_600_000,
        unit: Unit::Millis,
    },
    Spec {
        var: "CACHE_L1_MAX_TTL_SECS",
        default: 300,
        min: 1,
        max: DAY,
        unit: Unit::Seconds,
    },
    Spec {
        var: "CACHE_RATE_LIMIT_BATCH",
        default: 64,
        min: 1,
        max: 1024,
        unit: Unit::Count,
    },
    Spec {
        var: "CACHE_COMPRESS_MIN_BYTES",
        default: 1024,
        min: 64,
        max: 1 << 20,
        unit: Unit::Bytes,
    },
    Spec {
        var: "CACHE_COMPRESS_LEVEL",
        default: 3,
        min: 1,
        max: 19,
        unit: Unit::Count,
    },
];
