//! The simulator's hot loop, in simulated events per second.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use grapevine_core::{Config, Time};
use grapevine_sim::{NetConfig, NoObserver, Sim};
use std::time::Duration;

fn steady_cluster(n: u32) -> Sim {
    let mut sim = Sim::new(1, NetConfig::lan());
    for _ in 0..n {
        sim.add_node();
    }
    for i in 0..n {
        sim.start(i, Config::lan(), &[0], &mut NoObserver);
    }
    sim.run_until(Time::ZERO + Duration::from_secs(30), &mut NoObserver);
    sim
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim");
    g.sample_size(10);
    // Measure how many events 10 simulated seconds of a converged 1,000-node cluster take.
    let probe = {
        let mut s = steady_cluster(1000);
        let before = s.events_processed();
        let t = s.now() + Duration::from_secs(10);
        s.run_until(t, &mut NoObserver);
        s.events_processed() - before
    };
    g.throughput(Throughput::Elements(probe));
    g.bench_function("steady_1000_nodes_10s", |b| {
        b.iter_batched_ref(
            || steady_cluster(1000),
            |s| {
                let t = s.now() + Duration::from_secs(10);
                s.run_until(t, &mut NoObserver);
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
