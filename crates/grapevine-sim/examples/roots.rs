use grapevine_core::{Config, Time};
use grapevine_sim::{NetConfig, NoObserver, Sim};
use std::time::Duration;
fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    let mut sim = Sim::new(1, NetConfig::lan());
    for _ in 0..n { sim.add_node(); }
    sim.start(0, Config::lan(), &[], &mut NoObserver);
    for i in 1..n { sim.start(i, Config::lan(), &[0], &mut NoObserver); }
    for p in [5u32, 10, 20, 40, 80] {
        sim.run_until(Time::ZERO + Duration::from_secs(p as u64), &mut NoObserver);
        let mut roots = std::collections::BTreeMap::new();
        let mut syncs = 0; let mut div = 0; let mut q = 0;
        for i in 0..n { let nd = sim.node(i).unwrap(); *roots.entry(nd.digest_root()).or_insert(0) += 1; syncs += nd.stats().syncs; div += nd.stats().syncs_divergent; q += nd.pending_broadcasts(); }
        println!("t={p} distinct roots={} largest={} syncs={syncs} divergent={div} queued={q} members0={}", roots.len(), roots.values().max().unwrap(), sim.node(0).unwrap().num_members());
    }
    let mut ins = [0u64;16]; let mut ent = 0; let mut bin=0u64;
    for i in 0..n { let st = sim.node(i).unwrap().stats(); for k in 0..16 { ins[k]+=st.messages_in[k]; } ent += st.sync_entries_in; bin += st.bytes_in; }
    println!("per node: msgs_in by type {:?} sync entries {} bytes_in {}", ins.iter().map(|x| x / n as u64).collect::<Vec<_>>(), ent / n as u64, bin / n as u64);
    let a = sim.node(0).unwrap(); let b = sim.node(1).unwrap();
    let ma: Vec<_> = a.members().collect(); 
    for m in &ma { if let Some(mb) = b.member(&m.name) { if mb != *m { println!("diff {:?} vs {:?}", m, mb); break; } } }
}
#[allow(dead_code)]
fn unused() {}
