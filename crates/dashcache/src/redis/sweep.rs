//! [`RedisCache::sweep`]: `SCAN` + `UNLINK` over every master, and `DBSIZE`.

use redis::Value;

use super::cluster::{Node, Request, SlotGroup};
use super::conn::Backend;
use super::{RedisCache, convert, parse};
use crate::error::{Error, ErrorKind, Result};

/// What [`RedisCache::sweep`] does with the keys it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sweep {
    /// Deletes them.
    Delete,
    /// Only counts them (a dry run).
    Count,
}

/// How far a [`RedisCache::sweep`] has got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepProgress {
    /// `SCAN` steps so far.
    pub batches: u64,
    /// Keys matched so far (a key `SCAN` returns twice is counted twice).
    pub matched: u64,
    /// Keys deleted so far.
    pub deleted: u64,
}

impl RedisCache {
    /// Walks the keys matching `pattern` with `SCAN` (never `KEYS`), deleting them with
    /// `UNLINK` in batches (or only counting them, with [`Sweep::Count`]), and reports after
    /// each batch; the number matched (counting) or actually deleted. Each step has the
    /// operation deadline, the whole the
    /// [`sweep_timeout`](crate::RedisCacheBuilder::sweep_timeout).
    ///
    /// This is [`Cache::delete_pattern`](crate::Cache::delete_pattern) with progress, for
    /// tools such as `dashcache keys delete-pattern`.
    ///
    /// # Errors
    /// `InvalidArgument` for an empty pattern; `Timeout` past the sweep's deadline; transport
    /// errors (keys deleted before the error stay deleted).
    pub async fn sweep(
        &self,
        pattern: &str,
        mode: Sweep,
        progress: &mut (dyn FnMut(SweepProgress) + Send),
    ) -> Result<u64> {
        self.sweep_inspecting(pattern, mode, progress, &mut |_| {})
            .await
    }

    /// As [`sweep`](Self::sweep), showing `inspect` each batch of matching keys `SCAN`
    /// returns (before they are deleted, in [`Sweep::Delete`] mode): for a dry run that says
    /// what it would delete.
    ///
    /// # Errors
    /// As [`sweep`](Self::sweep).
    pub async fn sweep_inspecting(
        &self,
        pattern: &str,
        mode: Sweep,
        progress: &mut (dyn FnMut(SweepProgress) + Send),
        inspect: &mut (dyn FnMut(&[Vec<u8>]) + Send),
    ) -> Result<u64> {
        self.inner.limits.check_pattern(pattern)?;
        let work = self.sweep_steps(pattern, mode, progress, inspect);
        let Some(limit) = self.inner.sweep_timeout else {
            return work.await;
        };
        tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "the sweep of {pattern:?} did not finish within {} ms",
                    limit.as_millis()
                ),
            ))
        })
    }

    async fn sweep_steps(
        &self,
        pattern: &str,
        mode: Sweep,
        progress: &mut (dyn FnMut(SweepProgress) + Send),
        inspect: &mut (dyn FnMut(&[Vec<u8>]) + Send),
    ) -> Result<u64> {
        let mut report = SweepProgress::default();
        for node in self.nodes().await? {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(self.inner.scan_count);
                let reply = self.on_node(node.as_ref(), &scan).await?;
                let (next, keys): (u64, Vec<Vec<u8>>) = parse(reply)?;
                report.batches += 1;
                report.matched += keys.len() as u64;
                inspect(&keys);
                if mode == Sweep::Delete && !keys.is_empty() {
                    // UNLINK's count is what was actually deleted: a key SCAN returns twice, or
                    // one that expired meanwhile, is not counted.
                    report.deleted += self.unlink(&keys).await?;
                }
                progress(report);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(match mode {
            Sweep::Delete => report.deleted,
            Sweep::Count => report.matched,
        })
    }

    /// The number of keys in the server's database (`DBSIZE`; on a cluster, summed over the
    /// masters).
    ///
    /// # Errors
    /// Transport errors.
    pub async fn key_count(&self) -> Result<u64> {
        let mut total = 0;
        for node in self.nodes().await? {
            let reply = self.on_node(node.as_ref(), &redis::cmd("DBSIZE")).await?;
            total += parse::<u64>(reply)?;
        }
        Ok(total)
    }

    /// `UNLINK`s `keys` (split by slot on a cluster); how many existed.
    pub(crate) async fn unlink<K: AsRef<[u8]> + Sync>(&self, keys: &[K]) -> Result<u64> {
        let keys: Vec<&[u8]> = keys.iter().map(AsRef::as_ref).collect();
        if !self.is_cluster() {
            let mut conn = self.conn(b"");
            return self
                .run(None, redis::cmd("UNLINK").arg(&keys).query_async(&mut conn))
                .await;
        }
        let unlink = |pipe: &mut redis::Pipeline, group: &SlotGroup<&[u8]>| {
            pipe.cmd("UNLINK").arg(&group.items);
            1
        };
        let mut deleted = 0;
        for (_, reply) in self.per_slot(&keys, &unlink).await? {
            deleted += parse::<u64>(reply)?;
        }
        Ok(deleted)
    }

    /// The nodes a keyspace-wide command must visit: every master of a cluster, or the one
    /// server (`None`).
    pub(crate) async fn nodes(&self) -> Result<Vec<Option<Node>>> {
        match &self.inner.backend {
            Backend::Single(_) | Backend::Sentinel(_) => Ok(vec![None]),
            Backend::Cluster(router) => {
                let masters = self.run(None, router.masters()).await?;
                Ok(masters.into_iter().map(Some).collect())
            }
        }
    }

    /// Runs `cmd` on `node` (`None`: the one server) under the cluster-wide breaker and the
    /// deadline.
    pub(crate) async fn on_node(&self, node: Option<&Node>, cmd: &redis::Cmd) -> Result<Value> {
        match (&self.inner.backend, node) {
            (Backend::Cluster(router), Some(node)) => {
                let values = self
                    .run(None, router.on_node(node, Request::Command(cmd)))
                    .await?;
                let value = values.into_iter().next().unwrap_or(Value::Nil);
                value.extract_error().map_err(convert::error)
            }
            _ => {
                let mut conn = self.conn(b"");
                self.run(None, cmd.query_async(&mut conn)).await
            }
        }
    }
}
