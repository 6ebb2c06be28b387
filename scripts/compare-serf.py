#!/usr/bin/env python3
"""grapevine and Serf side by side on loopback: N agents of each, one system after the other,
measured by the same method in the same run.

  scripts/compare-serf.py [--nodes 50] [--grapevine target/release/grapevine] [--serf serf]
                          [--settle 30] [--only grapevine|serf] [--json]

Measures, for each system:
  join      from starting the first agent until every agent's own CLI lists all N alive
            (polled: `grapevine members --format json`, `serf members -format json`)
  event     from firing a user event until every agent's handler script has run
  detect    from SIGKILL of one agent until every survivor's CLI lists it failed
  rss, cpu  an idle agent's resident memory and CPU share over a 20 s idle window, which starts
            30 s after the event: past the join's tail (connections opened while the cluster
            formed close after 15 s of idleness in grapevine; Serf closes each at once), so
            both systems are measured in their steady state
  bytes/s   loopback bytes per agent per second over the same idle window (IP packets: headers
            included, connections and acknowledgements too)
  kv        grapevine only (Serf has no key/value store): from writing a shared key on one
            agent until every agent's HTTP API has returned it to a blocking query (one per
            agent, all waiting before the write)

Both use their LAN profile. Needs Linux (/proc) and `serf` (apt-get install serf).
"""
import argparse, json, os, shutil, signal, socket, subprocess, sys, tempfile, time

_taken = set()


def free_port():
    """A port free for both UDP and TCP on loopback, never handed out twice in a run, and
    below Linux's ephemeral range (32768 and up), so that no agent's outgoing connection can
    take it between this check and the agent binding it."""
    import random
    while True:
        p = random.randint(20000, 32767)
        if p in _taken:
            continue
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            u.bind(("127.0.0.1", p))
            t.bind(("127.0.0.1", p))
            ok = True
        except OSError:
            ok = False
        finally:
            t.close()
            u.close()
        if ok:
            _taken.add(p)
            return p

def lo_bytes():
    with open("/proc/net/dev") as f:
        for line in f:
            if line.strip().startswith("lo:"):
                parts = line.split(":")[1].split()
                return int(parts[8])  # transmitted bytes
    return 0

def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])

class System:
    def __init__(self, name, n, workdir):
        self.name, self.n, self.dir = name, n, workdir
        self.procs, self.ports = [], []

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except Exception:
                pass

class Grapevine(System):
    def __init__(self, binary, n, workdir):
        super().__init__("grapevine", n, workdir)
        self.bin = binary

    def start(self, i):
        gossip, http = free_port(), free_port()
        handler = f"user=date +%s.%N > {self.dir}/event_{i}"
        args = [self.bin, "agent", "--name", f"g{i}", "--bind", f"127.0.0.1:{gossip}",
                "--http", f"127.0.0.1:{http}", "--profile", "lan", "--event-handler", handler]
        if i > 0:
            args += ["--join", f"127.0.0.1:{self.ports[0][0]}"]
        self.ports.append((gossip, http))
        self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def members(self, i):
        out = subprocess.run([self.bin, "members", "--format", "json", "--http",
                              f"127.0.0.1:{self.ports[i][1]}"], capture_output=True, timeout=10)
        if out.returncode != 0:
            return None
        return {m["name"]: m["status"] for m in json.loads(out.stdout)}

    def fire(self):
        import urllib.request
        req = urllib.request.Request(f"http://127.0.0.1:{self.ports[0][1]}/v1/event/fire/bench",
                                     data=b"x", method="PUT")
        urllib.request.urlopen(req, timeout=5).read()

    def name_of(self, i):
        return f"g{i}"

    def put_key(self, key, value):
        import urllib.request
        req = urllib.request.Request(f"http://127.0.0.1:{self.ports[0][1]}/v1/kv/{key}",
                                     data=value, method="PUT")
        urllib.request.urlopen(req, timeout=5).read()

    def await_key(self, i, key, limit):
        """Waits for `key` on agent i by blocking queries (Consul's: `?index=&wait=`), which
        return the moment it arrives; returns that moment, or None after `limit` seconds."""
        import urllib.request, urllib.error
        base = f"http://127.0.0.1:{self.ports[i][1]}/v1/kv/{key}"
        index, t0 = 0, time.time()
        while time.time() - t0 < limit:
            try:
                with urllib.request.urlopen(f"{base}?index={index}&wait=5s", timeout=10) as r:
                    return time.time()
            except urllib.error.HTTPError as e:
                index = int(e.headers.get("X-Consul-Index", index))
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        return None

class Serf(System):
    def __init__(self, binary, n, workdir):
        super().__init__("serf", n, workdir)
        self.bin = binary

    def start(self, i):
        gossip, rpc = free_port(), free_port()
        handler = f"user=date +%s.%N > {self.dir}/event_{i}"
        args = [self.bin, "agent", f"-node=s{i}", f"-bind=127.0.0.1:{gossip}",
                f"-rpc-addr=127.0.0.1:{rpc}", "-profile=lan", f"-event-handler={handler}",
                "-log-level=err"]
        if i > 0:
            # Retried until joined, every second, as grapevine retries its seeds.
            args += [f"-retry-join=127.0.0.1:{self.ports[0][0]}", "-retry-interval=1s"]
        self.ports.append((gossip, rpc))
        self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def members(self, i):
        out = subprocess.run([self.bin, "members", "-format=json", f"-rpc-addr=127.0.0.1:{self.ports[i][1]}"],
                             capture_output=True, timeout=10)
        if out.returncode != 0:
            return None
        return {m["name"]: m["status"] for m in json.loads(out.stdout)["members"]}

    def fire(self):
        subprocess.run([self.bin, "event", f"-rpc-addr=127.0.0.1:{self.ports[0][1]}", "bench", "x"],
                       check=True, capture_output=True, timeout=10)

    def name_of(self, i):
        return f"s{i}"

def wait_until(check, limit):
    t0 = time.time()
    while time.time() - t0 < limit:
        if check():
            return True
        time.sleep(0.05)
    return False

def measure(sys_, n, settle):
    r = {}
    t0 = time.time()
    for i in range(n):
        sys_.start(i)
        if i == 0:
            time.sleep(0.3)
    names = [sys_.name_of(i) for i in range(n)]
    def all_alive():
        dead = [i for i, p in enumerate(sys_.procs) if p.poll() is not None]
        if dead:
            raise SystemExit(f"{sys_.name}: agents {dead} exited")
        for i in range(n):
            m = sys_.members(i)
            if m is None or sum(1 for x in names if m.get(x) == "alive") < n:
                return False
        return True
    if not wait_until(all_alive, 120):
        raise SystemExit(f"{sys_.name}: the join did not converge in 120 s")
    r["join_s"] = time.time() - t0

    time.sleep(2)
    t0 = time.time()
    sys_.fire()
    files = [os.path.join(sys_.dir, f"event_{i}") for i in range(n)]
    if not wait_until(lambda: all(os.path.exists(f) and os.path.getsize(f) > 0 for f in files), 60):
        raise SystemExit(f"{sys_.name}: the event did not reach everyone in 60 s")
    r["event_s"] = max(float(open(f).read().strip()) for f in files) - t0

    # Idle: let things settle (see the docstring), then a 20 s window.
    time.sleep(settle)
    pids = [p.pid for p in sys_.procs]
    b0, c0, w0 = lo_bytes(), [cpu_ticks(p) for p in pids], time.time()
    time.sleep(20)
    b1, c1, w1 = lo_bytes(), [cpu_ticks(p) for p in pids], time.time()
    hz = os.sysconf("SC_CLK_TCK")
    r["rss_mib"] = sum(rss_kb(p) for p in pids) / len(pids) / 1024
    r["cpu_pct"] = 100 * sum(b - a for a, b in zip(c0, c1)) / hz / (w1 - w0) / len(pids)
    r["bytes_per_s"] = (b1 - b0) / (w1 - w0) / len(pids)

    if hasattr(sys_, "put_key"):
        import threading
        arrived = [None] * n
        def wait(i):
            arrived[i] = sys_.await_key(i, "bench/spread", 60)
        threads = [threading.Thread(target=wait, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        time.sleep(2)  # every blocking query is waiting
        t0 = time.time()
        sys_.put_key("bench/spread", b"x")
        for t in threads:
            t.join()
        if any(a is None for a in arrived):
            raise SystemExit(f"{sys_.name}: the key did not reach everyone in 60 s")
        r["kv_s"] = max(arrived) - t0

    victim = n - 1
    t0 = time.time()
    sys_.procs[victim].send_signal(signal.SIGKILL)
    vname = sys_.name_of(victim)
    def all_see_failed():
        for i in range(n - 1):
            m = sys_.members(i)
            if m is None or m.get(vname) != "failed":
                return False
        return True
    if not wait_until(all_see_failed, 120):
        raise SystemExit(f"{sys_.name}: the kill was not detected everywhere in 120 s")
    r["detect_s"] = time.time() - t0
    return r

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--grapevine", default="target/release/grapevine")
    ap.add_argument("--serf", default=shutil.which("serf") or "serf")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--settle", type=float, default=30,
                    help="seconds between the event and the idle window")
    ap.add_argument("--only", choices=["grapevine", "serf"], help="measure one system alone")
    a = ap.parse_args()
    results = {}
    makers = {"grapevine": lambda d: Grapevine(a.grapevine, a.nodes, d),
              "serf": lambda d: Serf(a.serf, a.nodes, d)}
    for key, make in makers.items():
        if a.only and key != a.only:
            continue
        with tempfile.TemporaryDirectory() as d:
            s = make(d)
            try:
                print(f"measuring {s.name} with {a.nodes} agents...", file=sys.stderr)
                results[s.name] = measure(s, a.nodes, a.settle)
            finally:
                s.stop_all()
    if a.json or a.only:
        print(json.dumps(results, indent=2))
        return
    rows = [("join: all list all alive (s)", "join_s", "{:.2f}"),
            ("user event reaches all (s)", "event_s", "{:.2f}"),
            ("SIGKILL detected by all (s)", "detect_s", "{:.2f}"),
            ("idle RSS per agent (MiB)", "rss_mib", "{:.1f}"),
            ("idle CPU per agent (%)", "cpu_pct", "{:.2f}"),
            ("idle bytes per agent per s", "bytes_per_s", "{:.0f}"),
            ("shared key reaches all (s)", "kv_s", "{:.2f}")]
    print(f"{a.nodes} agents each, loopback, LAN profiles")
    print(f"{'':<32} {'grapevine':>10} {'serf':>10}")
    for label, k, fmt in rows:
        cells = [fmt.format(results[x][k]) if k in results[x] else "-" for x in ("grapevine", "serf")]
        print(f"{label:<32} {cells[0]:>10} {cells[1]:>10}")

if __name__ == "__main__":
    main()
