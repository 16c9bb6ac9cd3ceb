//! The hybrid cache on real servers: L1 answers without the network, every writer's change
//! reaches another instance's L1 within the staleness bound Δ, and the bound holds while
//! Redis is frozen, killed, restarted, its tracking connection killed, or a cluster master
//! fails over — checked read by read against a log of completed writes.

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashcache::hybrid::{HybridCache, TRACKING_CLIENT_NAME};
use dashcache::metrics::CacheMetrics;
use dashcache::{Cache, Keys, RedisCache, Ttl};
use dashcache_testkit::{RedisCluster, RedisServer};

/// The bound the tests run with: short, so the faults do not take long.
const DELTA: Duration = Duration::from_millis(500);

async fn redis(url: &str) -> RedisCache {
    RedisCache::builder(url)
        .timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap()
}

async fn hybrid(url: &str) -> HybridCache {
    let cache = HybridCache::builder(redis(url).await)
        .staleness(DELTA)
        .build()
        .unwrap();
    assert!(cache.ready(Duration::from_secs(10)).await, "{cache:?}");
    cache
}

fn bytes(s: &str) -> Bytes {
    Bytes::from(s.to_owned())
}

/// Reads `key` on `cache` until it answers `want` from L1 (its fill landed); how long.
async fn until_in_l1(cache: &HybridCache, key: &str, want: Option<&str>) -> Duration {
    let start = Instant::now();
    loop {
        if let Some(Ok(found)) = cache.get_now(key)
            && found.as_deref() == want.map(str::as_bytes)
        {
            return start.elapsed();
        }
        let _ = cache.get(key).await;
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{key} never reached L1 as {want:?}: {cache:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Reads `key` on `cache` until it answers `want`; how long after `since` the last read that
/// still answered something else *began* (zero when none did). That, not how long the loop
/// took, is the staleness: on a loaded machine this task may not run for a while, and a read
/// that begins late and answers the new value has not seen anything stale.
async fn until_seen(
    cache: &HybridCache,
    key: &str,
    want: Option<&str>,
    since: Instant,
) -> Duration {
    let mut stale_until = Duration::ZERO;
    loop {
        let began = since.elapsed();
        if cache.get(key).await.unwrap().as_deref() == want.map(str::as_bytes) {
            return stale_until;
        }
        stale_until = began;
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "{key} never became {want:?}"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_answers_without_the_network_and_counts_its_tiers() {
    let server = RedisServer::start();
    let keys = Keys::new("app", ["user", "counter"]).unwrap();
    let metrics = CacheMetrics::new(&keys);
    let cache = HybridCache::builder(redis(&server.url()).await)
        .track_namespaces(&keys, ["user"])
        .unwrap()
        .metrics(metrics.clone())
        .staleness(DELTA)
        .build()
        .unwrap();
    assert!(cache.ready(Duration::from_secs(10)).await);
    let key = keys.key(["user", "1"]).unwrap();
    cache.set(&key, bytes("Ada"), Ttl::secs(60)).await.unwrap();
    assert_eq!(cache.get(&key).await.unwrap(), Some(bytes("Ada")));
    until_in_l1(&cache, &key, Some("Ada")).await;
    let user = metrics.snapshot("user");
    assert!(user.l2_hits >= 1, "{user:?}");
    let before = user.l1_hits;
    for _ in 0..10 {
        assert_eq!(cache.get(&key).await.unwrap(), Some(bytes("Ada")));
    }
    assert!(metrics.snapshot("user").l1_hits >= before + 10);
    // An untracked namespace never enters L1.
    let counter = keys.key(["counter", "1"]).unwrap();
    cache.increment(&counter, 1, None).await.unwrap();
    cache.get(&counter).await.unwrap();
    assert!(cache.get_now(&counter).is_none());
    // A missing key is remembered as missing.
    let missing = keys.key(["user", "nobody"]).unwrap();
    until_in_l1(&cache, &missing, None).await;
    assert!(!cache.exists(&missing).await.unwrap());
    // L1 keeps an entry no longer than Redis does.
    let short = keys.key(["user", "short"]).unwrap();
    cache
        .set(&short, bytes("x"), Ttl::millis(300))
        .await
        .unwrap();
    until_in_l1(&cache, &short, Some("x")).await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(cache.get_now(&short).and_then(Result::ok).flatten(), None);
    assert_eq!(cache.get(&short).await.unwrap(), None);
    // A batch: what L1 has, the rest in one round trip.
    let other = keys.key(["user", "2"]).unwrap();
    cache
        .set(&other, bytes("Bob"), Ttl::secs(60))
        .await
        .unwrap();
    let both = cache.get_many(&[&key, &other, &missing]).await.unwrap();
    assert_eq!(both, vec![Some(bytes("Ada")), Some(bytes("Bob")), None]);
    assert!(cache.status().l1_entries >= 2, "{:?}", cache.status());
}

/// A write on A — or a raw `SET`, `DEL`, `PEXPIRE` from a plain client — is seen on B within
/// Δ (asserted for each), typically within a millisecond or two (printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_writer_reaches_another_instances_l1_within_the_bound() {
    let server = RedisServer::start();
    let (a, b) = (hybrid(&server.url()).await, hybrid(&server.url()).await);
    let key = "shared:k";
    let mut took = Vec::new();
    for i in 0..20 {
        let old = format!("v{i}");
        a.set(key, bytes(&old), Ttl::secs(60)).await.unwrap();
        until_in_l1(&b, key, Some(&old)).await;
        let new = format!("v{}", i + 1);
        a.set(key, bytes(&new), Ttl::secs(60)).await.unwrap();
        took.push(until_seen(&b, key, Some(&new), Instant::now()).await);
    }
    let mut raw = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // SET from another client.
    until_in_l1(&b, key, Some("v20")).await;
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("raw")
        .query_async(&mut raw)
        .await
        .unwrap();
    took.push(until_seen(&b, key, Some("raw"), Instant::now()).await);
    // DEL.
    until_in_l1(&b, key, Some("raw")).await;
    let _: () = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut raw)
        .await
        .unwrap();
    took.push(until_seen(&b, key, None, Instant::now()).await);
    // PEXPIRE: the key is gone a millisecond later.
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("exp")
        .query_async(&mut raw)
        .await
        .unwrap();
    until_in_l1(&b, key, Some("exp")).await;
    let _: () = redis::cmd("PEXPIRE")
        .arg(key)
        .arg(1)
        .query_async(&mut raw)
        .await
        .unwrap();
    took.push(until_seen(&b, key, None, Instant::now()).await);
    took.sort();
    let (median, worst) = (took[took.len() / 2], took[took.len() - 1]);
    println!(
        "stale reads on another instance began up to: median {median:?}, worst {worst:?} after the write"
    );
    assert!(worst < DELTA, "worst {worst:?} is past Δ = {DELTA:?}");
}

// A fill overtaken by an invalidation: a unit test of `hybrid` (it needs a test hook).

/// The tracking connection partitioned (Redis keeps its data, and is written meanwhile by
/// another client): L1 stops answering within Δ — a read fails rather than serve the old
/// value — and after the heal serves the write, never the value from before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_stops_l1_within_delta_and_the_heal_brings_the_write() {
    let server = RedisServer::start();
    let proxy =
        dashcache_testkit::Proxy::start(format!("127.0.0.1:{}", server.port()).parse().unwrap());
    let cache = Arc::new(hybrid(&proxy.redis_url()).await);
    let mut raw = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let set = |value: &'static str| redis::cmd("SET").arg("part").arg(value).clone();
    let _: () = set("v1").query_async(&mut raw).await.unwrap();
    until_in_l1(&cache, "part", Some("v1")).await;
    let history = Arc::new(dashcache_testkit::History::named("part", DELTA));
    history.wrote(1);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (cache, history, stop) = (Arc::clone(&cache), Arc::clone(&history), Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                // A failed read serves nothing, stale or not.
                if let Ok(found) = cache.get("part").await {
                    let version = match found.as_deref() {
                        Some(b"v1") => 1,
                        Some(b"v2") => 2,
                        other => panic!("{other:?}"),
                    };
                    history.read(began, version, "partitioned instance");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.blackhole();
    let _: () = set("v2").query_async(&mut raw).await.unwrap();
    history.wrote(2);
    tokio::time::sleep(DELTA * 3).await;
    proxy.restore();
    let start = Instant::now();
    while cache.get("part").await.ok().flatten().as_deref() != Some(&b"v2"[..]) {
        assert!(start.elapsed() < Duration::from_secs(20), "{cache:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(DELTA).await;
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    history.assert_clean();
    assert!(history.reads() > 10);
}

/// Completed writes and, read by read, the check that no read returned a value older than
/// every write that completed Δ before it began.
#[derive(Default)]
struct Log {
    /// `(version, completed at)`, in order.
    writes: std::sync::Mutex<Vec<(u64, Instant)>>,
    /// When the server last lost its data: a write sent before then binds nothing, even if
    /// its reply is logged after.
    lost_at: std::sync::Mutex<Option<Instant>>,
    stale: std::sync::Mutex<Vec<String>>,
    reads: AtomicU64,
    /// Of those, answered by L1.
    l1_reads: AtomicU64,
    stop: AtomicBool,
}

impl Log {
    /// Forgets the writes: the server lost its data (a restart without persistence), so they
    /// no longer bind what a read may return.
    fn lost(&self) {
        let mut writes = self.writes.lock().unwrap();
        *self.lost_at.lock().unwrap() = Some(Instant::now());
        writes.clear();
    }

    /// Logs `version` as completed now, unless it was sent before the data was lost: a reply
    /// that raced the kill says nothing about what the restarted server holds.
    fn completed(&self, version: u64, sent: Instant) {
        let mut writes = self.writes.lock().unwrap();
        if self.lost_at.lock().unwrap().is_some_and(|at| sent <= at) {
            return;
        }
        writes.push((version, Instant::now()));
    }

    fn check(&self, began: Instant, read: u64) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let writes = self.writes.lock().unwrap();
        let must = writes
            .iter()
            .rev()
            .find(|(_, done)| *done + DELTA < began)
            .map_or(0, |(v, _)| *v);
        if read < must {
            self.stale.lock().unwrap().push(format!(
                "a read begun at {began:?} returned version {read}; version {must} had completed more than Δ before"
            ));
        }
    }
}

/// Writes increasing versions of `key` through a plain `RedisCache` (another client) and logs
/// each that completed.
fn writer(l2: RedisCache, key: &'static str, log: Arc<Log>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut version = 0u64;
        while !log.stop.load(Ordering::Acquire) {
            version += 1;
            let sent = Instant::now();
            if l2
                .set(key, Bytes::from(version.to_string()), Ttl::secs(600))
                .await
                .is_ok()
            {
                log.completed(version, sent);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

/// Reads `key` on `cache` as fast as it answers, checking each answer.
fn reader(
    cache: Arc<HybridCache>,
    key: &'static str,
    log: Arc<Log>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !log.stop.load(Ordering::Acquire) {
            let began = Instant::now();
            let answer = match cache.get_now(key) {
                Some(answer) => {
                    log.l1_reads.fetch_add(1, Ordering::Relaxed);
                    answer
                }
                None => cache.get(key).await,
            };
            if let Ok(found) = answer {
                let version = found.map_or(0, |b| String::from_utf8_lossy(&b).parse().unwrap_or(0));
                log.check(began, version);
            }
            tokio::task::yield_now().await;
        }
    })
}

/// What a fault scenario may do besides breaking things: write the quiet key, which nothing
/// else writes — so an invalidation of it that gets lost is never made good by a later write.
struct Faults {
    busy: Arc<Log>,
    quiet: Arc<Log>,
    l2: RedisCache,
    version: AtomicU64,
}

impl Faults {
    const QUIET: &'static str = "bound:quiet";

    /// Writes the next version of the quiet key, retrying until it lands.
    async fn write_quiet(&self) {
        let version = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        let start = Instant::now();
        while self
            .l2
            .set(
                Self::QUIET,
                Bytes::from(version.to_string()),
                Ttl::secs(600),
            )
            .await
            .is_err()
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the quiet write never landed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.quiet.completed(version, start);
    }

    /// The server lost its data.
    fn lost(&self) {
        self.busy.lost();
        self.quiet.lost();
    }
}

/// A writer and two readers of a busy key, a reader of a quiet key, `fault` in the middle;
/// then every read checked, and L1 serving again.
async fn bound_holds_through(
    cache: HybridCache,
    writer_l2: RedisCache,
    fault: impl AsyncFnOnce(&Faults),
) {
    const KEY: &str = "bound:k";
    let cache = Arc::new(cache);
    let faults = Faults {
        busy: Arc::new(Log::default()),
        quiet: Arc::new(Log::default()),
        l2: writer_l2.clone(),
        version: AtomicU64::new(0),
    };
    faults.write_quiet().await;
    until_in_l1(&cache, Faults::QUIET, Some("1")).await;
    let tasks = [
        writer(writer_l2, KEY, Arc::clone(&faults.busy)),
        reader(Arc::clone(&cache), KEY, Arc::clone(&faults.busy)),
        reader(Arc::clone(&cache), KEY, Arc::clone(&faults.busy)),
        reader(Arc::clone(&cache), Faults::QUIET, Arc::clone(&faults.quiet)),
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = cache.status();
    fault(&faults).await;
    // L1 serves again, after a flush if the channel was lost.
    let start = Instant::now();
    while !matches!(cache.get_now(KEY), Some(Ok(_))) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "L1 never served again: {:?}",
            cache.status()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "L1 served again {:?} after the fault ended",
        start.elapsed()
    );
    // And writes are landing again, and being read.
    let written = faults.busy.writes.lock().unwrap().len();
    while faults.busy.writes.lock().unwrap().len() < written + 50 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the writer never recovered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(DELTA * 2).await;
    faults.busy.stop.store(true, Ordering::Release);
    faults.quiet.stop.store(true, Ordering::Release);
    for task in tasks {
        task.await.unwrap();
    }
    for (name, log) in [("busy", &faults.busy), ("quiet", &faults.quiet)] {
        let stale = log.stale.lock().unwrap();
        assert!(
            stale.is_empty(),
            "{} stale reads of the {name} key:\n{}",
            stale.len(),
            stale.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
        );
        let (reads, l1_reads) = (
            log.reads.load(Ordering::Relaxed),
            log.l1_reads.load(Ordering::Relaxed),
        );
        println!("{name}: {reads} reads checked, {l1_reads} from L1");
        assert!(
            reads > 100 && l1_reads > 50,
            "{name}: {reads} reads, {l1_reads} from L1"
        );
    }
    let after = cache.status();
    println!("before {before:?}\nafter {after:?}");
    assert!(after.serving, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bound_holds_while_redis_is_frozen() {
    let server = RedisServer::start();
    let cache = hybrid(&server.url()).await;
    let probe = cache.clone();
    bound_holds_through(cache, redis(&server.url()).await, async |faults| {
        server.freeze();
        tokio::time::sleep(DELTA + Duration::from_millis(200)).await;
        // Past Δ without a proof: L1 does not answer at all.
        assert!(!probe.status().serving, "{:?}", probe.status());
        assert!(probe.get_now("bound:k").is_none());
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.thaw();
        faults.write_quiet().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bound_holds_when_the_tracking_connection_is_killed() {
    let server = RedisServer::start();
    let cache = hybrid(&server.url()).await;
    let probe = cache.clone();
    let before = probe.status();
    bound_holds_through(cache, redis(&server.url()).await, async |faults| {
        let mut admin = server
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut admin)
            .await
            .unwrap();
        let ids: Vec<&str> = list
            .lines()
            .filter(|l| l.contains(&format!("name={TRACKING_CLIENT_NAME} ")))
            .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
            .collect();
        assert_eq!(ids.len(), 1, "{list}");
        let killed: u64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(ids[0])
            .query_async(&mut admin)
            .await
            .unwrap();
        assert_eq!(killed, 1);
        // Written while the channel is down: its invalidation is lost for good.
        faults.write_quiet().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    })
    .await;
    let after = probe.status();
    assert!(
        after.connections > before.connections,
        "reconnected: {after:?}"
    );
    assert!(
        after.flushes > before.flushes,
        "flushed before serving: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bound_holds_when_redis_is_killed_and_restarted() {
    let mut server = RedisServer::start();
    let url = server.url();
    let cache = hybrid(&url).await;
    let writer_l2 = redis(&url).await;
    let probe = cache.clone();
    let server_ref = &mut server;
    bound_holds_through(cache, writer_l2, async |faults| {
        server_ref.kill();
        // Without persistence the data is gone: earlier writes no longer bind.
        faults.lost();
        tokio::time::sleep(DELTA + Duration::from_millis(200)).await;
        assert!(!probe.status().serving);
        server_ref.restart();
        faults.write_quiet().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bound_holds_through_a_cluster_failover() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let cache = hybrid(&url).await;
    let before = cache.status();
    assert_eq!(before.tracked_nodes, 3, "{before:?}");
    let probe = cache.clone();
    bound_holds_through(cache, redis(&url).await, async |faults| {
        // Every master swaps with its replica in turn: the keys' masters among them. The quiet
        // key is written while the tracker may still follow the demoted master.
        for master in 0..3 {
            cluster.promote_replica_of(master);
            faults.write_quiet().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    let after = probe.status();
    assert_eq!(after.tracked_nodes, 3, "{after:?}");
    assert!(after.connections >= before.connections + 3, "{after:?}");
}
