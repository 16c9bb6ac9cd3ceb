//! Batches on a cluster: split by hash slot, one pipeline per master, the masters in parallel.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use redis::Value;

use super::{Node, Request};
use crate::error::{Error, Result};
use crate::redis::breaker::slot;
use crate::redis::{RedisCache, acquire_all, convert, mismatched};

/// Appends one slot group's commands to a pipeline; how many it appended.
pub(crate) type Build<'b, T> = dyn Fn(&mut redis::Pipeline, &SlotGroup<T>) -> usize + Sync + 'b;

impl RedisCache {
    /// Runs a batch on a cluster: `build` appends one slot group's commands to a pipeline; the
    /// commands for one master go in one pipeline, the masters in parallel, all within one
    /// deadline. Returns each group's positions in the batch and the reply of its last command.
    ///
    /// The masters come from the router's slot map. A group that went to the wrong node — the
    /// map was stale, a replica was promoted — is re-sent on its own, following `MOVED`.
    pub(crate) async fn per_slot<T: Keyed + Clone + Sync>(
        &self,
        items: &[T],
        build: &Build<'_, T>,
    ) -> Result<Vec<(Vec<usize>, Value)>> {
        let router = self.router()?;
        let work = async {
            let groups = by_slot(items);
            let map = router.current_map().await.map_err(convert::error)?;
            let mut by_node: HashMap<&Node, Vec<usize>> = HashMap::new();
            let mut unmapped = Vec::new();
            for (g, group) in groups.iter().enumerate() {
                match map.master_of(group.slot) {
                    Some(node) => by_node.entry(node).or_default().push(g),
                    None => unmapped.push(g),
                }
            }
            let parts = by_node
                .into_iter()
                .map(|(node, members)| self.node_part(node, &groups, members, build));
            let mut replies: Vec<(Vec<usize>, Value)> = Vec::with_capacity(groups.len());
            for part in futures::future::try_join_all(parts).await? {
                replies.extend(part);
            }
            if !unmapped.is_empty() {
                replies.extend(self.group_by_group(&groups, &unmapped, build).await?);
            }
            Ok(replies)
        };
        self.within_deadline_of(work).await
    }

    /// One master's share of [`per_slot`](Self::per_slot): `members` (indices in `groups`) in
    /// one pipeline to `node`.
    async fn node_part<T: Keyed + Clone + Sync>(
        &self,
        node: &Node,
        groups: &[SlotGroup<T>],
        members: Vec<usize>,
        build: &Build<'_, T>,
    ) -> Result<Vec<(Vec<usize>, Value)>> {
        let router = self.router()?;
        let mut pipeline = redis::pipe();
        // Per member: its group and how many replies are its own.
        let mut parts: Vec<(&SlotGroup<T>, usize)> = Vec::with_capacity(members.len());
        for &g in &members {
            if let Some(group) = groups.get(g) {
                parts.push((group, build(&mut pipeline, group)));
            }
        }
        let count: usize = parts.iter().map(|(_, n)| n).sum();
        let breakers = self
            .inner
            .breaker
            .for_slots(parts.iter().map(|(group, _)| group.slot));
        let permits = acquire_all(&breakers).await?;
        let request = Request::Pipeline {
            pipeline: &pipeline,
            offset: 0,
            count,
        };
        let sent = router.on_node(node, request).await.map_err(convert::error);
        permits
            .into_iter()
            .for_each(|p| p.record(&sent, Instant::now));
        let values = sent?;
        if values.len() != count {
            return Err(mismatched());
        }
        let mut values = values.into_iter();
        let mut replies = Vec::with_capacity(parts.len());
        let mut redirected = Vec::new();
        for ((group, n), &g) in parts.into_iter().zip(&members) {
            let own: Vec<Value> = values.by_ref().take(n).collect();
            // MOVED, ASK, TRYAGAIN, CLUSTERDOWN, EXECABORT: the map is stale or the slot in
            // motion; a transaction refused at queueing time wrote nothing. Re-sent alone, the
            // group follows the redirection (and a real error is reported then).
            if own.iter().any(|v| matches!(v, Value::ServerError(_))) {
                redirected.push(g);
            } else if let Some(last) = own.into_iter().last() {
                replies.push((group.positions.clone(), last));
            }
        }
        if !redirected.is_empty() {
            replies.extend(self.group_by_group(groups, &redirected, build).await?);
        }
        Ok(replies)
    }

    /// The groups `members`, one pipeline each, routed to their slot's master following
    /// redirections, in parallel.
    async fn group_by_group<T: Keyed + Clone + Sync>(
        &self,
        groups: &[SlotGroup<T>],
        members: &[usize],
        build: &Build<'_, T>,
    ) -> Result<Vec<(Vec<usize>, Value)>> {
        let router = self.router()?;
        let parts = members
            .iter()
            .filter_map(|&g| groups.get(g))
            .map(|group| async move {
                let mut pipeline = redis::pipe();
                let count = build(&mut pipeline, group);
                let breakers = self.inner.breaker.for_slots([group.slot]);
                let request = Request::Pipeline {
                    pipeline: &pipeline,
                    offset: 0,
                    count,
                };
                let values = self
                    .run_behind_all(&breakers, router.on_slot(group.slot, request))
                    .await?;
                if values.len() != count {
                    return Err(mismatched());
                }
                let mut last = Value::Nil;
                for value in values {
                    if let Value::ServerError(e) = value {
                        return Err(convert::error(e.into()));
                    }
                    last = value;
                }
                Ok::<_, Error>((group.positions.clone(), last))
            });
        futures::future::try_join_all(parts).await
    }
}

/// Something with a key, grouped by [`by_slot`].
pub(crate) trait Keyed {
    fn key_bytes(&self) -> &[u8];
}

impl Keyed for &str {
    fn key_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Keyed for &[u8] {
    fn key_bytes(&self) -> &[u8] {
        self
    }
}

impl Keyed for (&str, Bytes) {
    fn key_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Items whose keys share a hash slot, with the positions they had in the batch.
pub(crate) struct SlotGroup<T> {
    pub(crate) slot: u16,
    pub(crate) items: Vec<T>,
    pub(crate) positions: Vec<usize>,
}

/// `items` grouped by the hash slot of their keys, groups in order of first appearance.
fn by_slot<T: Keyed + Clone>(items: &[T]) -> Vec<SlotGroup<T>> {
    let mut index: HashMap<u16, usize> = HashMap::new();
    let mut groups: Vec<SlotGroup<T>> = Vec::new();
    for (at, item) in items.iter().enumerate() {
        let slot = slot(item.key_bytes());
        let g = *index.entry(slot).or_insert_with(|| {
            groups.push(SlotGroup {
                slot,
                items: Vec::new(),
                positions: Vec::new(),
            });
            groups.len() - 1
        });
        if let Some(group) = groups.get_mut(g) {
            group.items.push(item.clone());
            group.positions.push(at);
        }
    }
    groups
}
