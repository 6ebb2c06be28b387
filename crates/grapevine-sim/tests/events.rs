//! User events spread by rumour mongering reach every member once, in logarithmic time.

use grapevine_core::{Config, Event, Time};
use grapevine_sim::{NetConfig, Observer, Sim};
use std::time::Duration;

#[derive(Default)]
struct Deliveries {
    /// Per node: how many times the event arrived, and when first.
    got: Vec<(u32, Option<Time>)>,
}

impl Observer for Deliveries {
    fn on_event(&mut self, now: Time, node: u32, event: &Event) {
        if let Event::User { name, .. } = event {
            if name == "deploy" {
                let e = &mut self.got[node as usize];
                e.0 += 1;
                e.1.get_or_insert(now);
            }
        }
    }
}

#[test]
fn one_event_reaches_every_member_exactly_once() {
    let n = 300u32;
    let config = Config::lan();
    let mut sim = Sim::new(11, NetConfig::lan());
    let mut obs = Deliveries {
        got: vec![(0, None); n as usize],
    };
    for _ in 0..n {
        sim.add_node();
    }
    sim.start(0, config.clone(), &[], &mut obs);
    for i in 1..n {
        sim.start(i, config.clone(), &[0], &mut obs);
    }
    sim.run_until(Time::ZERO + Duration::from_secs(15), &mut obs);
    let t0 = sim.now();
    let id = sim
        .node_mut(42)
        .unwrap()
        .broadcast(t0, "deploy", b"v2".to_vec())
        .unwrap();
    sim.poke(42, &mut obs);
    sim.run_until(t0 + Duration::from_secs(20), &mut obs);
    assert!(id != 0);
    let reached = obs.got.iter().filter(|g| g.0 == 1).count();
    assert_eq!(reached, n as usize, "every member once");
    let last = obs
        .got
        .iter()
        .filter_map(|g| g.1)
        .max()
        .unwrap()
        .saturating_since(t0);
    // About log(N) gossip ticks of 200 ms.
    assert!(last < Duration::from_secs(5), "{last:?}");
    // The rumour died out: nobody still pushes it.
    assert!((0..n).all(|i| sim.node(i).unwrap().spreading_events() == 0));
    let pushes: u64 = (0..n)
        .map(|i| sim.node(i).unwrap().stats().messages_out[17])
        .sum();
    println!(
        "{pushes} pushes in all, {:.2} per member",
        pushes as f64 / f64::from(n)
    );
    println!("300 nodes: every member had the event after {last:?}");
}
