//! `grapevine sim merkle`: two replicas of a shared keyspace of `keys` keys, `diff` of them
//! differing, reconciled by the real tree exchange of `grapevine_core`; every message is
//! encoded as it would go on the wire and counted.
//!
//! The differing keys are split three ways: newer on the initiator, newer on the responder,
//! and present only on the responder. `full_exchange_bytes` is what shipping one replica's
//! whole keyspace would cost (memberlist's push-pull does this with its member list).

use grapevine_core::state::keyspace::{lww, Keyspace};
use grapevine_core::state::reconcile::{self, Exchange, Mode};
use grapevine_core::state::Timestamp;
use grapevine_core::wire::{self, Message, TreeEntries, TREE_KEYSPACE};
use grapevine_core::Name;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;
use std::time::Instant;

/// Parameters of a `merkle` run.
#[derive(Clone, Debug)]
pub struct MerkleParams {
    /// Keys in each replica.
    pub keys: u32,
    /// Keys that differ between the replicas.
    pub diff: u32,
    /// The flow of the exchange.
    pub mode: Mode,
    /// Bytes of each value.
    pub value_len: usize,
    /// RNG seed.
    pub seed: u64,
    /// Leave `wall_seconds` out, so the output is byte-identical across runs.
    pub no_wall_clock: bool,
}

impl Default for MerkleParams {
    fn default() -> Self {
        MerkleParams {
            keys: 100_000,
            diff: 10,
            mode: Mode::PushPull,
            value_len: 16,
            seed: 1,
            no_wall_clock: false,
        }
    }
}

/// What a `merkle` run measured.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MerkleReport {
    /// Keys per replica.
    pub keys: u32,
    /// Differing keys.
    pub diff: u32,
    /// The tree's leaf level.
    pub depth: u8,
    /// Bytes of every message of the exchange, as encoded for the wire.
    pub bytes: u64,
    /// Messages sent, both ways.
    pub messages: u32,
    /// Round trips (two messages each, the last one perhaps half).
    pub round_trips: u32,
    /// Bytes of one replica's whole keyspace in one message.
    pub full_exchange_bytes: u64,
    /// `bytes` as a share of `full_exchange_bytes`.
    pub fraction_of_full: f64,
    /// Whether the replicas ended identical.
    pub converged: bool,
    /// Wall-clock seconds (left out with `no_wall_clock`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_seconds: Option<f64>,
}

/// Runs the scenario.
pub fn run(p: &MerkleParams) -> Result<MerkleReport, String> {
    let started = Instant::now();
    if p.diff > p.keys {
        return Err("--diff cannot exceed --keys".into());
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(p.seed);
    let writer = Name::new("writer").map_err(|e| e.to_string())?;
    let key = |i: usize| format!("key/{i:09}").into_bytes();
    let value = |rng: &mut Xoshiro256PlusPlus| {
        let mut v = vec![0u8; p.value_len];
        rng.fill(&mut v[..]);
        v
    };
    let mut a = Keyspace::new(u64::MAX);
    // `diff` distinct keys, in the order drawn.
    let mut chosen: Vec<usize> = Vec::with_capacity(p.diff as usize);
    let mut taken = std::collections::HashSet::new();
    while chosen.len() < p.diff as usize {
        let i = rng.gen_range(0..p.keys as usize);
        if taken.insert(i) {
            chosen.push(i);
        }
    }
    let only_b: std::collections::HashSet<usize> = chosen
        .iter()
        .enumerate()
        .filter(|(j, _)| j % 3 == 2)
        .map(|(_, &i)| i)
        .collect();
    for i in 0..p.keys as usize {
        if only_b.contains(&i) {
            continue;
        }
        let v = lww(Timestamp::new(1, 0), &writer, Some(value(&mut rng)), None);
        a.apply(&key(i), &v, 1);
    }
    let mut b = a.clone();
    for (j, &i) in chosen.iter().enumerate() {
        let v = lww(Timestamp::new(2, 0), &writer, Some(value(&mut rng)), None);
        let side = if j % 3 == 0 { &mut a } else { &mut b };
        side.apply(&key(i), &v, 2);
    }

    let full = Message::TreeEntries(TreeEntries {
        id: 1,
        tree: TREE_KEYSPACE,
        entries: a.iter(2).map(|(k, v)| (k.to_vec(), v.clone())).collect(),
        want: Vec::new(),
    });
    let full_exchange_bytes =
        wire::encode_packet(wire::PROTOCOL_VERSION, b"", std::slice::from_ref(&full)).len() as u64;
    drop(full);

    let depth = a.tree().depth().min(b.tree().depth());
    let (mut ea, mut eb) = (
        Exchange::new(1, true, p.mode),
        Exchange::new(1, false, p.mode),
    );
    let mut msg = reconcile::open(&a, 1);
    let (mut bytes, mut messages) = (0u64, 0u32);
    let mut at_b = true;
    loop {
        // Each message crosses the wire as a frame of its own: encoded (with the packet
        // header and checksum), counted, decoded.
        let encoded = wire::encode_packet(wire::PROTOCOL_VERSION, b"", std::slice::from_ref(&msg));
        bytes += encoded.len() as u64;
        messages += 1;
        let decoded = wire::decode_packet(&encoded, b"", usize::MAX).map_err(|e| e.to_string())?;
        let Some(received) = decoded.into_iter().next() else {
            return Err("a message decoded to nothing".into());
        };
        let reply = if at_b {
            eb.step(&mut b, &received, 2)
        } else {
            ea.step(&mut a, &received, 2)
        };
        match reply {
            Some(m) => {
                msg = m;
                at_b = !at_b;
            }
            None => break,
        }
        if messages > 64 {
            return Err("the exchange did not end".into());
        }
    }
    let converged = a.tree().root() == b.tree().root();
    Ok(MerkleReport {
        keys: p.keys,
        diff: p.diff,
        depth,
        bytes,
        messages,
        round_trips: messages.div_ceil(2),
        full_exchange_bytes,
        fraction_of_full: (bytes as f64 / full_exchange_bytes as f64 * 1e6).round() / 1e6,
        converged,
        wall_seconds: (!p.no_wall_clock)
            .then(|| (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_replicas_cost_one_round_trip() {
        let r = run(&MerkleParams {
            keys: 10_000,
            diff: 0,
            no_wall_clock: true,
            ..MerkleParams::default()
        })
        .unwrap();
        assert!(r.converged);
        assert_eq!(r.messages, 2);
        assert!(r.bytes < 64, "{r:?}");
    }
}
