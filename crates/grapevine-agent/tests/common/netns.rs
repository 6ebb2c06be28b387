//! Many hosts on one machine: network namespaces joined by a bridge, each with its own
//! address in a private range that exists only inside them, and nftables inside each
//! namespace to cut, drop or isolate its traffic.
//!
//! Everything a lab creates is named `gv<PID>…`, so a later run can tell the leftovers of a
//! killed run (whose PID is gone) from a lab still in use, and removes them first. A lab is
//! torn down when dropped, also when a test fails (the drop runs while unwinding).

use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Labs created by this process (for unique names and subnets).
static LABS: AtomicU32 = AtomicU32::new(0);

/// Runs a command, returning its output; an error says what failed.
fn run(args: &[&str]) -> Result<Output, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out)
}

/// Runs a command that must succeed (lab set-up and faults).
fn must(args: &[&str]) {
    if let Err(e) = run(args) {
        panic!("{e}");
    }
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The PID in a `gv<PID>…` name, if it is one.
fn owner(name: &str) -> Option<u32> {
    let digits: String = name
        .strip_prefix("gv")?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Removes the namespaces and links that killed runs left behind.
pub fn clean_leftovers() {
    if let Ok(out) = run(&["ip", "netns", "list"]) {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let ns = line.split_whitespace().next().unwrap_or_default();
            if owner(ns).is_some_and(|p| !pid_alive(p)) {
                eprintln!("removing namespace {ns} left by a killed run");
                // Its processes die with it only once killed: do that first.
                if let Ok(pids) = run(&["ip", "netns", "pids", ns]) {
                    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                        let _ = run(&["kill", "-9", pid]);
                    }
                }
                let _ = run(&["ip", "netns", "del", ns]);
            }
        }
    }
    if let Ok(dirs) = std::fs::read_dir("/etc/netns") {
        for d in dirs.flatten() {
            let name = d.file_name().to_string_lossy().into_owned();
            if owner(&name).is_some_and(|p| !pid_alive(p)) {
                let _ = std::fs::remove_dir_all(d.path());
            }
        }
    }
    if let Ok(out) = run(&["ip", "-o", "link", "show"]) {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "7: gv123b0: <...>" or "8: gv123h0@if2: <...>"
            let Some(name) = line.split(':').nth(1).map(str::trim) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or_default();
            if owner(name).is_some_and(|p| !pid_alive(p)) {
                eprintln!("removing link {name} left by a killed run");
                let _ = run(&["ip", "link", "del", name]);
            }
        }
    }
}

/// Whether this machine can create labs; when it cannot, the reason. Checked once per
/// test process (tests run in parallel threads).
pub fn available() -> Result<(), String> {
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    CHECKED
        .get_or_init(|| {
            for tool in [["ip", "-V"], ["nft", "--version"]] {
                run(&tool).map_err(|e| format!("{} is missing ({e})", tool[0]))?;
            }
            clean_leftovers();
            let probe = format!("gv{}probe", std::process::id());
            run(&["ip", "netns", "add", &probe])
                .map_err(|e| format!("cannot create a namespace: {e}"))?;
            let _ = run(&["ip", "netns", "del", &probe]);
            Ok(())
        })
        .clone()
}

/// Whether a netns test may run: `true` if the lab can be built; `false` (with a message) if
/// it cannot and the run does not require it; a panic if `GRAPEVINE_REQUIRE_NETNS` is set.
pub fn may_run(test: &str) -> bool {
    match available() {
        Ok(()) => true,
        Err(why) => {
            assert!(
                std::env::var_os("GRAPEVINE_REQUIRE_NETNS").is_none(),
                "{test}: GRAPEVINE_REQUIRE_NETNS is set but network namespaces are unusable: {why}"
            );
            eprintln!("skipped {test}: network namespaces are unusable here ({why}); run as root with iproute2 and nftables");
            false
        }
    }
}

/// One host: a namespace with an address on the lab's bridge.
#[derive(Clone, Debug)]
pub struct Host {
    /// The namespace's name.
    pub ns: String,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// A set of hosts. Dropping it kills every process in its namespaces and removes them.
/// Build one only after `may_run`, which also removes what killed runs left.
pub struct Lab {
    /// The hosts, in creation order.
    pub hosts: Vec<Host>,
    bridge: Option<String>,
    links: Vec<String>,
    /// `/etc/netns/NS` directories made for the hosts.
    etc: Vec<String>,
}

impl Lab {
    fn prefix() -> (String, u32) {
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        (format!("gv{}l{n}", std::process::id()), n)
    }

    /// One namespace with only its loopback up: many agents on 127.0.0.1 of their own.
    pub fn loopback() -> Lab {
        let (prefix, _) = Lab::prefix();
        let ns = format!("{prefix}h0");
        must(&["ip", "netns", "add", &ns]);
        let lab = Lab {
            hosts: vec![Host {
                ns: ns.clone(),
                ip: Ipv4Addr::LOCALHOST,
            }],
            bridge: None,
            links: Vec::new(),
            etc: Vec::new(),
        };
        must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        lab.nft_init(0);
        lab
    }

    /// `n` hosts (at most 250) on one bridge, addresses 10.X.Y.1.. of a /24 that exists only
    /// inside the namespaces (the bridge itself has no address).
    pub fn bridged(n: usize) -> Lab {
        assert!((1..=250).contains(&n));
        let (prefix, k) = Lab::prefix();
        let bridge = format!("{prefix}b");
        must(&["ip", "link", "add", &bridge, "type", "bridge"]);
        must(&["ip", "link", "set", &bridge, "up"]);
        let mut lab = Lab {
            hosts: Vec::new(),
            bridge: Some(bridge.clone()),
            links: Vec::new(),
            etc: Vec::new(),
        };
        let subnet = (200 + (k % 50) as u8, (std::process::id() % 250) as u8);
        for i in 0..n {
            let ns = format!("{prefix}h{i}");
            let outer = format!("{prefix}v{i}");
            let ip = Ipv4Addr::new(10, subnet.0, subnet.1, i as u8 + 1);
            must(&["ip", "netns", "add", &ns]);
            lab.hosts.push(Host { ns: ns.clone(), ip });
            must(&[
                "ip", "link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            lab.links.push(outer.clone());
            must(&["ip", "link", "set", &outer, "master", &bridge]);
            must(&["ip", "link", "set", &outer, "up"]);
            must(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ]);
            must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            lab.nft_init(i);
        }
        lab
    }

    /// A table `gv` with an input and an output chain in host `i`'s namespace; faults add
    /// rules to it.
    fn nft_init(&self, i: usize) {
        let ns = &self.hosts[i].ns;
        must(&[
            "ip", "netns", "exec", ns, "nft", "add", "table", "inet", "gv",
        ]);
        for (chain, hook) in [("in", "input"), ("out", "output")] {
            let spec =
                format!("add chain inet gv {chain} {{ type filter hook {hook} priority 0; }}");
            must(&["ip", "netns", "exec", ns, "nft", &spec]);
        }
    }

    /// Adds an nftables rule to host `i`'s `in` or `out` chain, e.g. `ip saddr 10.0.0.2 drop`.
    pub fn rule(&self, i: usize, chain: &str, rule: &str) {
        let ns = &self.hosts[i].ns;
        let spec = format!("add rule inet gv {chain} {rule}");
        must(&["ip", "netns", "exec", ns, "nft", &spec]);
    }

    /// Removes every fault rule of host `i`.
    pub fn clear(&self, i: usize) {
        let ns = &self.hosts[i].ns;
        for chain in ["in", "out"] {
            must(&[
                "ip", "netns", "exec", ns, "nft", "flush", "chain", "inet", "gv", chain,
            ]);
        }
    }

    /// Removes every fault rule of every host.
    pub fn heal(&self) {
        for i in 0..self.hosts.len() {
            self.clear(i);
        }
    }

    /// Drops `percent` % of the packets host `i` sends, at random, counted: those it sends on
    /// the network (its own API calls, to itself, are spared), or, in a loopback lab, all.
    pub fn loss(&self, i: usize, percent: u32) {
        let on = if self.bridge.is_some() {
            "oifname \"eth0\" "
        } else {
            ""
        };
        self.rule(
            i,
            "out",
            &format!("{on}numgen random mod 100 < {percent} counter drop"),
        );
    }

    /// Packets dropped so far by host `i`'s counted rules.
    pub fn dropped(&self, i: usize) -> u64 {
        let ns = &self.hosts[i].ns;
        let Ok(out) = run(&[
            "ip", "netns", "exec", ns, "nft", "list", "table", "inet", "gv",
        ]) else {
            return 0;
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == "packets")?;
                words.next()?.parse::<u64>().ok()
            })
            .sum()
    }

    /// Host `i` no longer hears host `j` (one way: `j` still hears `i`).
    pub fn deaf(&self, i: usize, j: usize) {
        self.rule(i, "in", &format!("ip saddr {} drop", self.hosts[j].ip));
    }

    /// Cuts every link between different groups (each group a list of host indexes).
    pub fn partition(&self, groups: &[&[usize]]) {
        for (g, group) in groups.iter().enumerate() {
            for (h, other) in groups.iter().enumerate() {
                if g == h {
                    continue;
                }
                for &i in group.iter() {
                    for &j in other.iter() {
                        self.deaf(i, j);
                    }
                }
            }
        }
    }

    /// Host `i` can reach no one and no one reaches it.
    pub fn isolate(&self, i: usize) {
        self.rule(i, "in", "iifname \"eth0\" drop");
        self.rule(i, "out", "oifname \"eth0\" drop");
    }

    /// Drops only `proto` (`udp` or `tcp`) traffic of host `i`, both ways.
    pub fn block_protocol(&self, i: usize, proto: &str) {
        self.rule(
            i,
            "in",
            &format!("iifname \"eth0\" meta l4proto {proto} drop"),
        );
        self.rule(
            i,
            "out",
            &format!("oifname \"eth0\" meta l4proto {proto} drop"),
        );
    }

    /// A command run inside host `i`'s namespace.
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hosts[i].ns, program]);
        c
    }

    /// An HTTP GET from inside host `i`'s namespace (where the agents' APIs are): the body,
    /// if it answered 2xx within 5 s.
    pub fn http_get(&self, i: usize, url: &str) -> Option<String> {
        let out = self
            .command(i, "python3")
            .args([
                "-c",
                "import sys, urllib.request\n\
                 sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())",
                url,
            ])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Lab {
    /// An HTTP PUT from inside host `i`'s namespace: whether it answered 2xx.
    pub fn http_put(&self, i: usize, url: &str, body: &str) -> bool {
        self.command(i, "python3")
            .args([
                "-c",
                "import sys, urllib.request\n\
                 r = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), method='PUT')\n\
                 urllib.request.urlopen(r, timeout=5).read()",
                url,
                body,
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Makes host `i`'s resolver the given nameserver (`/etc/netns/NS/resolv.conf`, which
    /// `ip netns exec` mounts over `/etc/resolv.conf`); removed with the lab.
    pub fn resolver(&mut self, i: usize, nameserver: &str) {
        let dir = format!("/etc/netns/{}", self.hosts[i].ns);
        std::fs::create_dir_all(&dir).expect("/etc/netns/NS");
        std::fs::write(
            format!("{dir}/resolv.conf"),
            format!("nameserver {nameserver}\n"),
        )
        .expect("resolv.conf");
        self.etc.push(dir);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in &self.hosts {
            if let Ok(pids) = run(&["ip", "netns", "pids", &h.ns]) {
                for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                    let _ = run(&["kill", "-9", pid]);
                }
            }
            let _ = run(&["ip", "netns", "del", &h.ns]);
        }
        for l in &self.links {
            let _ = run(&["ip", "link", "del", l]);
        }
        if let Some(b) = &self.bridge {
            let _ = run(&["ip", "link", "del", b]);
        }
        for d in &self.etc {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
