//! The abstract models against the literature: the random phone-call model against Pittel
//! and Karp et al., rumour mongering against Demers et al.'s tables.

use grapevine_sim::scenario::rumor::{self, RumorParams, Variant};
use grapevine_sim::scenario::spread::{self, Mode, SpreadParams};

fn spread(nodes: u32, mode: Mode) -> spread::SpreadReport {
    spread::run(&SpreadParams {
        nodes,
        mode,
        fanout: 1,
        loss: 0.0,
        runs: 30,
        seed: 7,
        no_wall_clock: true,
    })
    .unwrap()
}

#[test]
fn push_follows_pittel_and_push_pull_follows_karp() {
    let sizes = [1_000, 10_000, 100_000];
    for mode in [Mode::Push, Mode::PushPull] {
        let reports: Vec<_> = sizes.iter().map(|&n| spread(n, mode)).collect();
        for r in &reports {
            // The leading terms of the known results, plus a constant of about one round.
            let gap = r.rounds_mean - r.theory_rounds.unwrap();
            assert!((0.0..2.0).contains(&gap), "{mode:?} at {}: {r:?}", r.nodes);
        }
        // Per tenfold growth: log2 10 + ln 10 = 5.6 rounds for push, log3 10 = 2.1 (plus the
        // slowly growing log log term) for push-pull.
        let expected = match mode {
            Mode::Push => 10f64.log2() + 10f64.ln(),
            _ => 10f64.ln() / 3f64.ln() + 0.25,
        };
        for w in reports.windows(2) {
            let step = w[1].rounds_mean - w[0].rounds_mean;
            assert!(
                (step - expected).abs() < 0.6,
                "{mode:?}: {step} rounds per decade, expected about {expected}"
            );
        }
    }
}

/// Demers et al. (1987), Table 1 (push, feedback, counter; n = 1000): k, residue, traffic.
const TABLE_1: [(u32, f64, f64); 5] = [
    (1, 0.18, 1.7),
    (2, 0.037, 3.3),
    (3, 0.011, 4.5),
    (4, 0.0036, 5.6),
    (5, 0.0012, 6.7),
];

/// Demers et al. (1987), Table 2 (push, blind, coin; n = 1000): k, residue, traffic.
const TABLE_2: [(u32, f64, f64); 5] = [
    (1, 0.96, 0.04),
    (2, 0.205, 1.59),
    (3, 0.060, 2.82),
    (4, 0.021, 3.91),
    (5, 0.008, 4.95),
];

fn rumor(variant: &str, k: u32) -> rumor::RumorReport {
    rumor::run(&RumorParams {
        nodes: 1000,
        variant: Variant::parse(variant).unwrap(),
        k,
        runs: 300,
        seed: 3,
        no_wall_clock: true,
    })
    .unwrap()
}

#[test]
fn rumor_mongering_reproduces_demers_tables_1_and_2() {
    for (variant, table) in [
        ("push-feedback-counter", TABLE_1),
        ("push-blind-coin", TABLE_2),
    ] {
        for (k, residue, traffic) in table {
            let r = rumor(variant, k);
            assert!(
                (r.residue - residue).abs() <= 0.15 * residue + 0.002,
                "{variant} k={k}: residue {} against the paper's {residue}",
                r.residue
            );
            assert!(
                (r.traffic - traffic).abs() <= 0.05 * traffic + 0.02,
                "{variant} k={k}: traffic {} against the paper's {traffic}",
                r.traffic
            );
        }
    }
}
