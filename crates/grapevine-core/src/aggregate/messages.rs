//! Push-sum's message: half of a node's mass for each metric.

use crate::wire::{Body, DecodeError, Reader, Writer};

/// The longest aggregated metric's name, in bytes.
pub const MAX_METRIC_NAME_LEN: usize = 128;

/// Half of a node's push-sum mass for each metric it aggregates.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregate {
    /// The aggregation epoch it belongs to.
    pub epoch: u64,
    /// The sender's round in that epoch.
    pub round: u32,
    /// One mass per metric.
    pub entries: Vec<AggregateMass>,
}

/// One metric's push-sum mass, and the extremes seen.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateMass {
    /// The metric.
    pub name: String,
    /// Value mass.
    pub s: f64,
    /// Weight of contributions.
    pub w: f64,
    /// Weight of the anchor's unit (for sums and counts).
    pub c: f64,
    /// Smallest contribution seen.
    pub min: f64,
    /// Largest contribution seen.
    pub max: f64,
}

impl Body for Aggregate {
    fn write(&self, w: &mut Writer) {
        w.u64(self.epoch);
        w.varint(self.round);
        w.varint(self.entries.len() as u32);
        for e in &self.entries {
            w.lp(e.name.as_bytes());
            for x in [e.s, e.w, e.c, e.min, e.max] {
                w.u64(x.to_bits());
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let epoch = r.u64("aggregate epoch")?;
        let round = r.varint("aggregate round")?;
        let n = r.count("aggregate entries", super::MAX_METRICS, 41)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.str("metric name", MAX_METRIC_NAME_LEN)?.to_string();
            let mut x = [0f64; 5];
            for v in &mut x {
                *v = f64::from_bits(r.u64("aggregate mass")?);
            }
            entries.push(AggregateMass {
                name,
                s: x[0],
                w: x[1],
                c: x[2],
                min: x[3],
                max: x[4],
            });
        }
        Ok(Aggregate {
            epoch,
            round,
            entries,
        })
    }
}
