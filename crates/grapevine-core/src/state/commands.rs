//! Writes by the application, checked against the wire's limits and this member's budget.

use super::replication::Replication;
use crate::error::{check_len, CommandError};
use crate::node::context::Ctx;
use crate::time::Time;
use std::time::Duration;

/// A shared key and value within the wire's limits.
fn check_shared(key: &[u8], value: &Option<Vec<u8>>) -> Result<(), CommandError> {
    check_len("shared key", key.len(), crate::state::value::MAX_KEY_LEN)?;
    check_len(
        "shared value",
        value.as_ref().map_or(0, |v| v.len()),
        crate::state::value::MAX_VALUE_LEN,
    )
}

/// A time to live in microseconds (saturating).
fn ttl_micros(ttl: Option<Duration>) -> Option<u64> {
    ttl.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl Replication {
    /// Sets a key of this node's own state, expiring after `ttl` if given; returns its
    /// version.
    pub fn set_state(
        &mut self,
        ctx: &Ctx,
        now: Time,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<u64, CommandError> {
        check_len(
            "state key",
            key.len(),
            crate::state::messages::MAX_STATE_KEY_LEN,
        )?;
        check_len(
            "state value",
            value.len(),
            crate::state::messages::MAX_STATE_VALUE_LEN,
        )?;
        if let Some(own) = self.nodes.get(&ctx.me.name) {
            // Tombstones count too: they travel until collected.
            let held: usize = own
                .entries
                .iter()
                .filter(|(k, _)| k.as_str() != key)
                .map(|(k, v)| k.len() + v.value.len())
                .sum();
            check_len(
                "this member's state",
                held + key.len() + value.len(),
                ctx.config.state.max_node_state,
            )?;
        }
        Ok(self.set_own(key, value, ttl_micros(ttl), now))
    }

    /// Writes a shared key last-write-wins (`None` deletes it), expiring after `ttl`.
    pub fn put_shared_checked(
        &mut self,
        now: Time,
        key: &[u8],
        value: Option<Vec<u8>>,
        ttl: Option<Duration>,
    ) -> Result<(), CommandError> {
        check_shared(key, &value)?;
        self.put_shared(key, value, ttl_micros(ttl), 0, now);
        Ok(())
    }

    /// Writes a shared key last-write-wins with `flags` (`None` deletes it).
    pub fn put_shared_flags(
        &mut self,
        now: Time,
        key: &[u8],
        value: Option<Vec<u8>>,
        flags: u64,
    ) -> Result<(), CommandError> {
        check_shared(key, &value)?;
        self.put_shared(key, value, None, flags, now);
        Ok(())
    }
}
