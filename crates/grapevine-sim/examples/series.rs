use grapevine_core::{Config, Time};
use grapevine_sim::{NetConfig, Observer, Sim};
use std::time::Duration;
struct O { bytes: Vec<u64>, msgs: Vec<u64>, rel: Vec<u64> }
impl Observer for O {
    fn on_send(&mut self, now: Time, _n: u32, b: usize, r: bool) {
        let p = (now.as_micros() / 1_000_000) as usize;
        if p < self.bytes.len() { self.bytes[p] += b as u64; self.msgs[p] += 1; if r { self.rel[p] += b as u64; } }
    }
}
fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    let mut sim = Sim::new(1, NetConfig::lan());
    let mut o = O { bytes: vec![0; 200], msgs: vec![0; 200], rel: vec![0;200] };
    for _ in 0..n { sim.add_node(); }
    sim.start(0, Config::lan(), &[], &mut o);
    for i in 1..n { sim.start(i, Config::lan(), &[0], &mut o); }
    sim.run_until(Time::ZERO + Duration::from_secs(120), &mut o);
    for p in 0..120 { if p % 5 == 0 || p < 12 { println!("p={p} msgs/node={:.2} bytes/node={:.1} reliable_bytes/node={:.1}", o.msgs[p] as f64 / n as f64, o.bytes[p] as f64 / n as f64, o.rel[p] as f64 / n as f64); } }
}
