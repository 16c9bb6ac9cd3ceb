//! The tracker: one task per hybrid cache that keeps a tracking connection to every server L2
//! writes to (the one server, or each master of a cluster), and proves them alive.
//!
//! Each connection speaks RESP3 and runs `CLIENT TRACKING ON BCAST PREFIX …` for the tracked
//! key prefixes. Broadcasting mode, rather than the default mode that tracks the keys a
//! connection has read, because then what L1 may hold depends on no other connection: the
//! default mode only reports keys read *on a tracked connection*, so every data connection
//! would have to be tracked and redirected here, and a read on a data connection that had just
//! reconnected (and not yet re-enabled tracking) would go unreported — a silent hole in the
//! bound. Broadcasting costs one push per write to a tracked prefix per instance, whoever
//! wrote: which is why a hybrid cache tracks only the namespaces it caches (read-mostly by
//! nature), not counters or rate-limit buckets.
//!
//! Every `Δ/4` the tracker sends `ROLE` on each connection; when every reply is back (and, on
//! a cluster, every node still says it is a master) L1 may serve until the send time plus `Δ`
//! (see `coherence`). A connection that fails, drops (the `redis` crate pushes a
//! disconnection), or does not answer within `max(Δ, the L2 deadline)` is dropped, the slot
//! map is refreshed, and the next connection starts a new epoch: L1 is flushed before it
//! serves again.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::Notify;

use super::coherence::Coherence;
use crate::RedisCache;
use crate::error::{Error, ErrorKind, Result};
use crate::fallback::BurstLog;
use crate::redis::TrackedNode;

/// How the tracker runs.
pub(super) struct Config {
    pub(super) prefixes: Vec<String>,
    /// Between two probes: a quarter of Δ, so a late probe or two still keep L1 serving.
    pub(super) interval: Duration,
    /// How long a probe may take before its connection is given up.
    pub(super) probe_timeout: Duration,
    /// Whether every node must be a master (a cluster).
    pub(super) masters_only: bool,
}

/// What the tracker reports about itself.
#[derive(Default)]
pub(super) struct Report {
    pub(super) nodes: AtomicUsize,
    pub(super) connections: AtomicU64,
}

const LIVE: u8 = 0;
const DEAD: u8 = 1;
/// Dropped on purpose: its disconnection says nothing.
const RETIRED: u8 = 2;

struct Tracked {
    conn: MultiplexedConnection,
    state: Arc<AtomicU8>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let _ = self
            .state
            .compare_exchange(LIVE, RETIRED, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// Runs until the task is aborted (when the last handle of the cache is dropped).
pub(super) async fn run(
    coherence: Arc<Coherence>,
    l2: RedisCache,
    config: Config,
    report: Arc<Report>,
) {
    let wake = Arc::new(Notify::new());
    let mut tracked: HashMap<String, Tracked> = HashMap::new();
    let warnings = BurstLog::new();
    // After a failure, the next attempt: soon, but not a busy loop against a dead server.
    let retry = config
        .interval
        .clamp(Duration::from_millis(20), Duration::from_millis(250));
    loop {
        let outcome = round(&coherence, &l2, &config, &wake, &report, &mut tracked).await;
        report.nodes.store(tracked.len(), Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                tokio::select! {
                    () = tokio::time::sleep(config.interval) => {}
                    () = wake.notified() => {}
                }
            }
            Err(e) => {
                coherence.unprove();
                if let Some(suppressed) = warnings.should_log() {
                    tracing::warn!(
                        code = e.code(),
                        error = e.message(),
                        suppressed,
                        "hybrid cache: the invalidation channel is down; reads go to Redis \
                         until it is back (and L1 is flushed then)"
                    );
                }
                tokio::time::sleep(retry).await;
            }
        }
    }
}

/// One round: connects what is missing, then proves every connection alive.
async fn round(
    coherence: &Arc<Coherence>,
    l2: &RedisCache,
    config: &Config,
    wake: &Arc<Notify>,
    report: &Report,
    tracked: &mut HashMap<String, Tracked>,
) -> Result<()> {
    let nodes = l2.tracked_nodes().await?;
    tracked.retain(|label, t| {
        let keep =
            t.state.load(Ordering::Acquire) == LIVE && nodes.iter().any(|n| &n.label == label);
        if !keep {
            coherence.set_link(label, None);
        }
        keep
    });
    let mut fresh = Vec::new();
    for node in &nodes {
        if tracked.contains_key(&node.label) {
            continue;
        }
        let new = connect(node, coherence, config, wake, l2.connect_timeout()).await;
        match new {
            Ok(new) => fresh.push((node.label.clone(), new)),
            Err(e) => {
                l2.refresh_topology();
                return Err(e);
            }
        }
    }
    if !fresh.is_empty() {
        // What L1 holds may predate tracking on the new connections, and invalidations sent
        // to the old ones are lost: a new epoch, *before* any read can go through a new
        // connection. A batch read that took its ticket earlier then sees the epoch change
        // and reads everything again, instead of joining an old L1 part to a new read.
        coherence.flush();
        for (label, new) in fresh {
            coherence.set_link(&label, Some(new.conn.clone()));
            tracked.insert(label, new);
            report.connections.fetch_add(1, Ordering::Relaxed);
        }
    }
    let sent = coherence.now();
    let probes = tracked.iter().map(|(label, t)| {
        let mut conn = t.conn.clone();
        async move {
            let reply = tokio::time::timeout(
                config.probe_timeout,
                redis::cmd("ROLE").query_async::<Value>(&mut conn),
            )
            .await;
            (label.clone(), reply)
        }
    });
    let mut failed = None;
    for (label, reply) in futures::future::join_all(probes).await {
        let problem = match reply {
            Ok(Ok(role)) if !config.masters_only || is_master(&role) => continue,
            Ok(Ok(_)) => format!("{label} is no longer a master"),
            Ok(Err(e)) => format!("{label}: {e}"),
            Err(_) => format!(
                "{label} did not answer within {} ms",
                config.probe_timeout.as_millis()
            ),
        };
        tracked.remove(&label);
        coherence.set_link(&label, None);
        failed = Some(problem);
    }
    if let Some(problem) = failed {
        l2.refresh_topology();
        return Err(Error::new(ErrorKind::Unavailable, problem));
    }
    if tracked.is_empty() {
        return Err(Error::new(ErrorKind::Unavailable, "no server to track"));
    }
    coherence.prove(sent);
    Ok(())
}

/// A RESP3 connection to `node` tracking the prefixes, its pushes applied to L1 on the
/// connection's own task (so before any later reply is seen).
async fn connect(
    node: &TrackedNode,
    coherence: &Arc<Coherence>,
    config: &Config,
    wake: &Arc<Notify>,
    connect_timeout: Duration,
) -> Result<Tracked> {
    let settings = node
        .info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let info = node.info.clone().set_redis_settings(settings);
    let client = redis::Client::open(info).map_err(crate::redis::convert_error)?;
    let state = Arc::new(AtomicU8::new(LIVE));
    let on_push = {
        let coherence = Arc::clone(coherence);
        let state = Arc::clone(&state);
        let wake = Arc::clone(wake);
        move |push: PushInfo| -> std::result::Result<(), Infallible> {
            match push.kind {
                PushKind::Invalidate => coherence.on_invalidate(&push.data),
                PushKind::Disconnection
                    if state
                        .compare_exchange(LIVE, DEAD, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok() =>
                {
                    coherence.unprove();
                    wake.notify_one();
                }
                _ => {}
            }
            Ok(())
        }
    };
    let connection = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(config.probe_timeout))
        .set_push_sender(on_push);
    let setup = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&connection)
            .await?;
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(super::TRACKING_CLIENT_NAME)
            .query_async::<()>(&mut conn)
            .await?;
        let mut tracking = redis::cmd("CLIENT");
        tracking.arg("TRACKING").arg("ON").arg("BCAST");
        for prefix in &config.prefixes {
            tracking.arg("PREFIX").arg(prefix);
        }
        tracking.query_async::<()>(&mut conn).await?;
        Ok::<_, redis::RedisError>(conn)
    };
    let conn = tokio::time::timeout(connect_timeout + config.probe_timeout, setup)
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                format!("no tracking connection to {} in time", node.label),
            )
        })?
        .map_err(crate::redis::convert_error)?;
    Ok(Tracked { conn, state })
}

/// Whether a `ROLE` reply says "master".
fn is_master(role: &Value) -> bool {
    match role {
        Value::Array(parts) => {
            matches!(
                parts.first(),
                Some(Value::BulkString(b)) if b == b"master"
            ) || matches!(
                parts.first(),
                Some(Value::SimpleString(s)) if s == "master"
            )
        }
        _ => false,
    }
}
