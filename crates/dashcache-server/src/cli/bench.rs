//! `dashcache bench`: dashcache and the raw client side by side, in one run, on the same server
//! (or in memory against raw moka): operations per second, p50 / p99, and the ratio.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dashcache::hybrid::HybridCache;
use dashcache::{Cache, MemoryCache, RedisCache, Ttl};
use dashcache_testkit::load::{Op, Plan, Turn, latency, measure, rate, ratio};
use indicatif::ProgressBar;

use super::{CliError, style};

/// An operation to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchOp {
    /// One GET.
    Get,
    /// One SET with a TTL.
    Set,
    /// MGET of `--batch` keys (100 by default).
    GetMany,
    /// INCRBY.
    Incr,
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// `redis://…` (or a cluster's: `redis+cluster://…`, comma-separated seeds), or `None` for
    /// the embedded cache (against raw moka).
    pub url: Option<String>,
    /// The operations.
    pub ops: Vec<BenchOp>,
    /// Concurrent tasks.
    pub concurrency: usize,
    /// Total time per operation (both sides together).
    pub duration: Duration,
    /// Distinct keys.
    pub keys: usize,
    /// Value size in bytes.
    pub value_size: usize,
    /// Keys per get-many.
    pub batch: usize,
    /// With `url`: the hybrid cache (L1 in front of Redis) against the embedded cache, plain
    /// `RedisCache` and the raw client.
    pub l1: bool,
    /// The key prefix (`CACHE_KEY_PREFIX`): every key the bench writes is
    /// `<prefix>:bench:…`, and they are deleted at the end.
    pub prefix: String,
}

const TTL_SECS: u64 = 600;

struct Data {
    keys: Vec<String>,
    /// The counter `incr` increments.
    counter: String,
    /// What every key starts with: `<prefix>:bench:`.
    space: String,
    /// Failed operations of every side, over the whole run.
    failed: AtomicU64,
    value: Bytes,
    batch: usize,
    /// Failed operations per side slot (0: dashcache over Redis or memory, 1: the raw
    /// baseline, 2 and 3: the hybrid and the embedded cache of `--l1`), since last taken.
    errors: [AtomicU64; 4],
}

/// Where a side's failures are counted.
#[derive(Clone, Copy)]
enum Slot {
    Ours = 0,
    Raw = 1,
    Hybrid = 2,
    Memory = 3,
}

/// The errors counted for `slot` since the last call.
fn take_errors(data: &Data, slot: Slot) -> u64 {
    data.errors[slot as usize].swap(0, Ordering::Relaxed)
}

/// A connection that failed, naming the server (masked).
fn unreachable(url: &str, e: &dashcache::Error) -> CliError {
    format!(
        "the Redis at {} (--url or REDIS_URL) cannot be used: {e}",
        dashcache::url::mask_url(url)
    )
    .into()
}

/// Runs the comparison; the table. Every key it wrote (`<prefix>:bench:…`) is deleted after.
///
/// # Errors
/// When Redis cannot be reached, or when operations failed on either side: the table is then
/// not a measurement (it is in the error, with the count).
pub async fn run(options: &BenchOptions) -> Result<String, CliError> {
    let (table, failed) = compare(options).await?;
    if let Some(url) = &options.url {
        let cleanup = async {
            let cache = RedisCache::builder(url.clone())
                .timeout(Duration::from_secs(5))
                .connect()
                .await?;
            let pattern = format!("{}:bench:*", dashcache::glob::escape(&options.prefix));
            cache.delete_pattern(&pattern).await
        };
        if let Err(e) = cleanup.await {
            eprintln!("dashcache bench: could not delete the bench keys: {e}");
        }
    }
    if failed > 0 {
        return Err(format!(
            "{table}\n{failed} operations failed (the errors column): these numbers measure \
             failures, not the cache"
        )
        .into());
    }
    Ok(table)
}

/// The table, and how many operations failed on either side.
async fn compare(options: &BenchOptions) -> Result<(String, u64), CliError> {
    let batch = options.batch.max(1);
    let data = Arc::new(Data {
        batch,
        keys: (0..options.keys.max(batch))
            .map(|i| format!("{}:bench:{i}", options.prefix))
            .collect(),
        counter: format!("{}:bench:counter", options.prefix),
        space: format!("{}:bench:", options.prefix),
        failed: AtomicU64::new(0),
        value: Bytes::from(vec![b'x'; options.value_size]),
        errors: Default::default(),
    });
    let debug_warning = cfg!(debug_assertions).then(|| {
        let warning = "WARNING: this is a debug build; its numbers say nothing about \
                       production. Run `cargo run --release -p dashcache-server -- bench …` or \
                       target/release/dashcache.";
        eprintln!("{warning}");
        warning
    });
    let round = Duration::from_millis(200);
    let rounds = usize::try_from(options.duration.as_millis() / (2 * round.as_millis()))
        .unwrap_or(usize::MAX)
        .max(2);
    let plan = Plan {
        rounds,
        round,
        concurrency: options.concurrency.max(1),
    };
    if options.l1 {
        let Some(url) = &options.url else {
            return Err("--l1 measures the hybrid cache in front of Redis: give --url".into());
        };
        let table = hybrid_table(url, &data, &options.ops, plan, options.value_size).await?;
        let failed = data.failed.load(Ordering::Relaxed);
        return Ok((with_warning(debug_warning, table), failed));
    }
    let bar = ProgressBar::new((options.ops.len() * rounds * 2) as u64)
        .with_style(style("{bar:40} {pos}/{len} turns [{elapsed}<{eta}] {msg}"));
    let (backend, pairs) = match &options.url {
        Some(url) if dashcache::settings::cluster_seeds(url).1 => (
            "redis cluster",
            redis_sides(url, &data, &options.ops).await?,
        ),
        Some(url) => ("redis", redis_sides(url, &data, &options.ops).await?),
        None => ("memory", memory_sides(&data, &options.ops).await?),
    };
    let baseline = if options.url.is_some() {
        "raw redis"
    } else {
        "raw moka"
    };
    let mut out = vec![
        format!(
            "dashcache bench: {backend}, concurrency {}, {} rounds of {round:?} per side, {} keys, {} B values, get-many of {}",
            plan.concurrency,
            plan.rounds,
            data.keys.len(),
            options.value_size,
            data.batch
        ),
        "| operation | side | ops/s | p50 | p99 | errors | ratio |".into(),
        "|---|---|---|---|---|---|---|".into(),
    ];
    for (op, sides) in pairs {
        bar.set_message(format!("{op:?}"));
        let rounds: Vec<[Turn; 2]> = measure(&sides, plan, &mut || bar.inc(1)).await;
        for (i, side) in ["dashcache", baseline].iter().enumerate() {
            let (p50, p99) = latency(&rounds, i);
            let r = if i == 0 {
                format!("{:.2}", ratio(&rounds, 0, 1))
            } else {
                "1.00".into()
            };
            let slot = if i == 0 { Slot::Ours } else { Slot::Raw };
            out.push(format!(
                "| {op:?} | {side} | {:.0} | {} | {} | {} | {r} |",
                rate(&rounds, i),
                show(p50),
                show(p99),
                take_errors(&data, slot)
            ));
        }
    }
    bar.finish_and_clear();
    let failed = data.failed.load(Ordering::Relaxed);
    Ok((with_warning(debug_warning, out.join("\n")), failed))
}

fn with_warning(warning: Option<&str>, table: String) -> String {
    match warning {
        Some(warning) => format!("{warning}\n{table}"),
        None => table,
    }
}

/// The hybrid cache, the embedded cache, `RedisCache` and the raw client, interleaved round
/// by round; the ratio column is the hybrid's rate over each side's.
async fn hybrid_table(
    url: &str,
    data: &Arc<Data>,
    ops: &[BenchOp],
    plan: Plan,
    value_size: usize,
) -> Result<String, CliError> {
    let redis = RedisCache::builder(url)
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| unreachable(url, &e))?;
    prefill(&redis, data).await?;
    let hybrid = HybridCache::builder(redis.clone())
        .track_prefix(data.space.clone())
        .max_entries(2_000_000)
        .max_bytes(1 << 32)
        .build()?;
    if !hybrid.ready(Duration::from_secs(10)).await {
        return Err("the hybrid cache's tracking connection did not prove itself in 10 s".into());
    }
    let memory = MemoryCache::builder().max_entries(2_000_000).build();
    prefill(&memory, data).await?;
    let (seeds, cluster) = dashcache::settings::cluster_seeds(url);
    let raw_pairs = if cluster {
        let raw = redis::cluster::ClusterClient::new(seeds)?
            .get_async_connection()
            .await?;
        raw_pairs(&redis, raw, data, ops)
    } else {
        let raw = redis::Client::open(url)?
            .get_multiplexed_async_connection()
            .await?;
        raw_pairs(&redis, raw, data, ops)
    };
    let bar = ProgressBar::new((ops.len() * plan.rounds * 4) as u64)
        .with_style(style("{bar:40} {pos}/{len} turns [{elapsed}<{eta}] {msg}"));
    let names = [
        "dashcache hybrid",
        "dashcache memory",
        "dashcache redis",
        "raw redis",
    ];
    let mut out = vec![
        format!(
            "dashcache bench: hybrid (L1 in front of {}), concurrency {}, {} rounds of {:?} per side, {} keys, {} B values, get-many of {}",
            if cluster { "redis cluster" } else { "redis" },
            plan.concurrency,
            plan.rounds,
            plan.round,
            data.keys.len(),
            value_size,
            data.batch
        ),
        "| operation | side | ops/s | p50 | p99 | errors | hybrid ÷ side |".into(),
        "|---|---|---|---|---|---|---|".into(),
    ];
    let shared: Arc<dyn Cache> = Arc::new(hybrid.clone());
    for (op, [plain, raw]) in raw_pairs {
        // L1 starts warm for reads, as a service's hot keys are.
        if matches!(op, BenchOp::Get | BenchOp::GetMany) {
            for chunk in data.keys.chunks(500) {
                let batch: Vec<&str> = chunk.iter().map(String::as_str).collect();
                shared.get_many(&batch).await?;
            }
        }
        bar.set_message(format!("{op:?}"));
        let sides = [
            cache_op(Arc::clone(&shared), data, op, Slot::Hybrid),
            cache_op(Arc::new(memory.clone()), data, op, Slot::Memory),
            plain,
            raw,
        ];
        let rounds: Vec<[Turn; 4]> = measure(&sides, plan, &mut || bar.inc(1)).await;
        let slots = [Slot::Hybrid, Slot::Memory, Slot::Ours, Slot::Raw];
        for (i, side) in names.iter().enumerate() {
            let (p50, p99) = latency(&rounds, i);
            out.push(format!(
                "| {op:?} | {side} | {:.0} | {} | {} | {} | {:.2} |",
                rate(&rounds, i),
                show(p50),
                show(p99),
                take_errors(data, slots[i]),
                ratio(&rounds, 0, i)
            ));
        }
    }
    bar.finish_and_clear();
    let status = hybrid.status();
    out.push(format!(
        "L1: {}, {}, {}, serving: {}",
        super::plural(status.l1_entries, "entry"),
        super::plural(status.invalidations, "invalidation"),
        super::plural(status.flushes, "flush"),
        status.serving
    ));
    Ok(out.join("\n"))
}

/// A latency in the unit that keeps its digits: µs below a millisecond.
fn show(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

type Pairs = Vec<(BenchOp, [Op; 2])>;

async fn redis_sides(url: &str, data: &Arc<Data>, ops: &[BenchOp]) -> Result<Pairs, CliError> {
    let cache = RedisCache::builder(url)
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| unreachable(url, &e))?;
    prefill(&cache, data).await?;
    // The baseline is the raw client the way it is used without dashcache: a multiplexed
    // connection, or the cluster client for a cluster (which splits MGET by slot itself).
    let (seeds, cluster) = dashcache::settings::cluster_seeds(url);
    if cluster {
        let raw = redis::cluster::ClusterClient::new(seeds)?
            .get_async_connection()
            .await?;
        Ok(raw_pairs(&cache, raw, data, ops))
    } else {
        let raw = redis::Client::open(url)?
            .get_multiplexed_async_connection()
            .await?;
        Ok(raw_pairs(&cache, raw, data, ops))
    }
}

fn raw_pairs<C>(cache: &RedisCache, raw: C, data: &Arc<Data>, ops: &[BenchOp]) -> Pairs
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    let mut pairs = Vec::new();
    for &op in ops {
        let ours = cache_op(Arc::new(cache.clone()), data, op, Slot::Ours);
        let (raw, d) = (raw.clone(), Arc::clone(data));
        let theirs: Op = Arc::new(move |i| {
            let (mut raw, d) = (raw.clone(), Arc::clone(&d));
            Box::pin(async move {
                let key = &d.keys[i % d.keys.len()];
                let mut cmd = redis::Cmd::new();
                match op {
                    BenchOp::Get => cmd.arg("GET").arg(key),
                    BenchOp::Set => cmd
                        .arg("SET")
                        .arg(key)
                        .arg(d.value.as_ref())
                        .arg("PX")
                        .arg(TTL_SECS * 1000),
                    BenchOp::GetMany => cmd.arg("MGET").arg(&d.keys[d.batch(i)]),
                    BenchOp::Incr => cmd.arg("INCRBY").arg(&d.counter).arg(1),
                };
                // The baseline's failures count as failures too: a side that fails fast must
                // not look fast.
                if cmd.query_async::<redis::Value>(&mut raw).await.is_err() {
                    d.errors[Slot::Raw as usize].fetch_add(1, Ordering::Relaxed);
                    d.failed.fetch_add(1, Ordering::Relaxed);
                }
            })
        });
        pairs.push((op, [ours, theirs]));
    }
    pairs
}

async fn memory_sides(data: &Arc<Data>, ops: &[BenchOp]) -> Result<Pairs, CliError> {
    let cache = MemoryCache::builder().max_entries(1_000_000).build();
    prefill(&cache, data).await?;
    let raw: moka::sync::Cache<String, Bytes> = moka::sync::Cache::builder()
        .max_capacity(1_000_000)
        .time_to_live(Duration::from_secs(TTL_SECS))
        .build();
    for key in &data.keys {
        raw.insert(key.clone(), data.value.clone());
    }
    let mut pairs = Vec::new();
    for &op in ops {
        let ours = cache_op(Arc::new(cache.clone()), data, op, Slot::Ours);
        let (raw, d) = (raw.clone(), Arc::clone(data));
        let theirs: Op = Arc::new(move |i| {
            let (raw, d) = (raw.clone(), Arc::clone(&d));
            Box::pin(async move {
                let key = &d.keys[i % d.keys.len()];
                match op {
                    BenchOp::Get => {
                        raw.get(key);
                    }
                    BenchOp::Set => raw.insert(key.clone(), d.value.clone()),
                    BenchOp::GetMany => {
                        for k in &d.keys[d.batch(i)] {
                            raw.get(k);
                        }
                    }
                    BenchOp::Incr => {
                        raw.entry_by_ref(d.counter.as_str()).and_upsert_with(|e| {
                            let n: i64 = e
                                .and_then(|e| {
                                    std::str::from_utf8(&e.into_value()).ok()?.parse().ok()
                                })
                                .unwrap_or(0);
                            Bytes::from((n + 1).to_string())
                        });
                    }
                }
            })
        });
        pairs.push((op, [ours, theirs]));
    }
    Ok(pairs)
}

impl Data {
    /// The keys of batch `i`.
    fn batch(&self, i: usize) -> std::ops::Range<usize> {
        let start = (i * self.batch) % (self.keys.len() - self.batch + 1);
        start..start + self.batch
    }
}

async fn prefill(cache: &dyn Cache, data: &Data) -> Result<(), CliError> {
    for chunk in data.keys.chunks(500) {
        let entries: Vec<(&str, Bytes)> = chunk
            .iter()
            .map(|k| (k.as_str(), data.value.clone()))
            .collect();
        cache.set_many(&entries, Ttl::secs(TTL_SECS)).await?;
    }
    Ok(())
}

fn cache_op(cache: Arc<dyn Cache>, data: &Arc<Data>, op: BenchOp, slot: Slot) -> Op {
    let d = Arc::clone(data);
    Arc::new(move |i| {
        let (cache, d) = (Arc::clone(&cache), Arc::clone(&d));
        Box::pin(async move {
            let key = &d.keys[i % d.keys.len()];
            // Errors are part of what is measured, not a reason to stop; they are reported.
            let result = match op {
                BenchOp::Get => cache.get(key).await.map(drop),
                BenchOp::Set => cache.set(key, d.value.clone(), Ttl::secs(TTL_SECS)).await,
                BenchOp::GetMany => {
                    let batch: Vec<&str> = d.keys[d.batch(i)].iter().map(String::as_str).collect();
                    cache.get_many(&batch).await.map(drop)
                }
                BenchOp::Incr => cache.increment(&d.counter, 1, None).await.map(drop),
            };
            if let Err(e) = result {
                d.failed.fetch_add(1, Ordering::Relaxed);
                // Counted into the table; the first of a burst is worth a look.
                if d.errors[slot as usize].fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(error = %e, "bench: an operation failed");
                }
            }
        })
    })
}
