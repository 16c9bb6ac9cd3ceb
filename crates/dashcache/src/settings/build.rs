//! What a [`CacheSettings`] builds: the caches, TLS options, rate-limit buckets, keyring and
//! compression it describes.

use super::CacheSettings;
use crate::memory::{MemoryCache, MemoryCacheBuilder};
use crate::sealed::Keyring;

impl CacheSettings {
    /// The embedded cache these settings describe.
    pub fn memory_cache_builder(&self) -> MemoryCacheBuilder {
        MemoryCache::builder()
            .max_entries(self.memory_max_entries)
            .max_bytes(self.memory_max_bytes)
    }

    /// The Redis cache these settings describe, when `REDIS_URL` is set.
    #[cfg(feature = "redis")]
    pub fn redis_cache_builder(&self) -> Option<crate::RedisCacheBuilder> {
        self.redis_url.as_ref().map(|url| {
            let builder = crate::RedisCache::builder(url.clone())
                .timeout(self.timeout)
                .connect_timeout(self.connect_timeout)
                .sweep_timeout(self.sweep_timeout)
                .breaker(
                    crate::BreakerConfig::default()
                        .with_failure_threshold(self.breaker_failures)
                        .with_open_for(self.breaker_open_for),
                )
                .tls(self.tls_options());
            match &self.sentinel_credentials {
                Some((username, password)) => {
                    builder.sentinel_credentials(username.as_deref(), password)
                }
                None => builder,
            }
        })
    }

    /// The TLS settings of `rediss://` connections (`CACHE_TLS_*`).
    #[cfg(feature = "redis")]
    pub fn tls_options(&self) -> crate::redis::TlsOptions {
        let mut tls = crate::redis::TlsOptions::new();
        if let Some(ca) = &self.tls_ca_file {
            tls = tls.ca_file(ca);
        }
        if let Some((cert, key)) = &self.tls_client_cert {
            tls = tls.client_cert(cert, key);
        }
        if self.tls_insecure {
            tls = tls.danger_accept_invalid_certs();
        }
        tls
    }

    /// The hybrid cache these settings describe in front of `l2` — L1's bounds, Δ and its
    /// longest TTL — or `None` when L1 is off (`CACHE_L1_MAX_ENTRIES=0`). Name the namespaces
    /// to track on the builder.
    #[cfg(feature = "redis")]
    pub fn hybrid_cache_builder(
        &self,
        l2: crate::RedisCache,
    ) -> Option<crate::hybrid::HybridCacheBuilder> {
        (self.l1_max_entries > 0).then(|| {
            crate::hybrid::HybridCache::builder(l2)
                .max_entries(self.l1_max_entries)
                .max_bytes(self.l1_max_bytes)
                .staleness(self.l1_staleness)
                .max_ttl(self.l1_max_ttl)
        })
    }

    /// Rate-limit buckets on `redis`, with [reservations](crate::ratelimit::Reservations)
    /// of up to `CACHE_RATE_LIMIT_BATCH` checks for hot buckets (none when it is 1).
    #[cfg(feature = "redis")]
    pub fn rate_limit_buckets(&self, redis: crate::RedisCache) -> crate::ratelimit::RedisBuckets {
        let buckets = crate::ratelimit::RedisBuckets::new(redis);
        if self.rate_limit_batch > 1 {
            buckets.with_reservations(
                crate::ratelimit::Reservations::default().max_batch(self.rate_limit_batch),
            )
        } else {
            buckets
        }
    }

    /// The sealing keys, when `CACHE_SEAL_KEYS` is set (validated when the settings were
    /// loaded).
    pub fn keyring(&self) -> Option<Keyring> {
        self.seal_keys
            .as_deref()
            .and_then(|spec| Keyring::parse(spec).ok())
    }

    /// How [`Compressed`](crate::compress::Compressed) should compress, from
    /// `CACHE_COMPRESS_MIN_BYTES` and `CACHE_COMPRESS_LEVEL`; wrap the cache with
    /// `Compressed::new` when [`compression`](Self::compression) is on, with
    /// `Compressed::passthrough` when it is off (to read values compressed earlier).
    #[cfg(feature = "compression")]
    pub fn compression_config(&self) -> crate::compress::Compression {
        crate::compress::Compression::default()
            .with_min_bytes(self.compress_min_bytes)
            .with_level(self.compress_level)
    }

    /// The TTL jitter as a fraction (10 % → 0.1), for [`CacheAsideBuilder::jitter`].
    ///
    /// [`CacheAsideBuilder::jitter`]: crate::aside::CacheAsideBuilder::jitter
    pub fn jitter_fraction(&self) -> f64 {
        f64::from(self.ttl_jitter_percent) / 100.0
    }
}
