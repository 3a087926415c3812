//! Splitting a pipeline whose commands touch several hash slots into one
//! part per slot (or per master), each sent to the node that serves it.

use std::time::Instant;

use redis::Value;

use super::slot::key_slot;
use super::{ClusterTopology, Route, View};
use crate::error::{Error, ErrorClass, ErrorKind};

/// How [`ClusterTopology::split`] groups a pipeline's commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grouping {
    /// One group per hash slot: a group's commands all move together, so
    /// a `MOVED` means none of them ran.
    Slot,
    /// One group per master now: fewer round trips, for commands safe to
    /// send twice (the reconciler's `DEL` and replayed `SET`).
    Node,
}

/// One part of a split pipeline.
pub(crate) struct Part {
    /// Indices of its commands in the original pipeline.
    pub(crate) indices: Vec<usize>,
    pub(crate) pipeline: redis::Pipeline,
    /// Its keys, every command's, in order.
    pub(crate) keys: Vec<Vec<u8>>,
}

impl ClusterTopology {
    /// The group a slot belongs to under `grouping`: the slot itself, or
    /// its master's shard index (slots not in the map keep their own
    /// group).
    fn group_of(&self, view: &View, slot: u16, grouping: Grouping) -> u32 {
        match grouping {
            Grouping::Slot => u32::from(slot),
            Grouping::Node => view
                .table
                .get(slot)
                .and_then(|i| u32::try_from(i).ok())
                .map_or(u32::from(slot).saturating_add(1 << 16), |i| i),
        }
    }

    /// Splits `pipeline` (not a transaction) by the slot of each command's
    /// first key; a keyless command goes with the first part. Parts come
    /// in the order of their first command. A command whose keys the
    /// client cannot tell is an [`ErrorKind::Unsupported`] error.
    pub(crate) fn split(
        &self,
        pipeline: &redis::Pipeline,
        grouping: Grouping,
    ) -> Result<Vec<Part>, Error> {
        use crate::consistency::{command_keys, CommandKeys};
        let view = self.view.read().clone();
        let mut parts: Vec<(Option<u32>, Part)> = Vec::new();
        for (index, cmd) in pipeline.cmd_iter().enumerate() {
            let keys = match command_keys(cmd) {
                CommandKeys::Known { keys, .. } => keys,
                CommandKeys::Unknown => {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        ErrorClass::Permanent,
                        format!(
                            "redis cluster: command #{index} of the pipeline is one whose keys the client cannot tell, so it cannot be routed to the node that owns them; send it alone with execute, or split the pipeline"
                        ),
                    )
                    .with_may_have_executed(false));
                }
            };
            let group = keys
                .first()
                .map(|k| self.group_of(&view, key_slot(k), grouping));
            let at = match group {
                None if !parts.is_empty() => 0,
                _ => match parts.iter().position(|(g, _)| g.is_some() && *g == group) {
                    Some(i) => i,
                    None => {
                        parts.push((
                            group,
                            Part {
                                indices: Vec::new(),
                                pipeline: redis::pipe(),
                                keys: Vec::new(),
                            },
                        ));
                        parts.len().saturating_sub(1)
                    }
                },
            };
            if let Some((g, part)) = parts.get_mut(at) {
                if g.is_none() {
                    *g = group;
                }
                part.indices.push(index);
                part.pipeline.add_command(cmd.clone());
                part.keys.extend(keys);
            }
        }
        Ok(parts.into_iter().map(|(_, p)| p).collect())
    }

    /// Sends `pipeline` split by `grouping`, each part to its master,
    /// and returns every command's reply in the original order (none
    /// ignored). Used by the reconciler, whose commands are safe to send
    /// again: a part that fails fails the whole.
    pub(crate) fn pipeline_by_slot(
        &self,
        pipeline: &redis::Pipeline,
        deadline: Option<Instant>,
    ) -> Result<Vec<Value>, Error> {
        let parts = self.split(pipeline, Grouping::Node)?;
        let mut replies = vec![Value::Nil; pipeline.len()];
        for part in parts {
            let keys: Vec<&[u8]> = part.keys.iter().map(Vec::as_slice).collect();
            let values = self.call(Route::keys(&keys, true), deadline, &mut |conn, _| {
                part.pipeline
                    .query::<Vec<Value>>(conn)
                    .map_err(Error::from_redis)
            })?;
            for (i, v) in part.indices.iter().zip(values) {
                if let Some(slot) = replies.get_mut(*i) {
                    *slot = v;
                }
            }
        }
        Ok(replies)
    }
}
