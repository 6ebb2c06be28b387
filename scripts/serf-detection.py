#!/usr/bin/env python3
"""Failure detection in a mixed cluster: Serf's own victims against grapevine's.

Starts 5 Serf agents (Debian's `serf`) and 5 grapevine agents speaking Serf on loopback.
Trial after trial, it adds one more member (alternately a Serf agent and a grapevine
agent; each pair through one member, successive pairs through alternate kinds), waits
until all see it alive, SIGKILLs it, and times until every Serf agent and
every grapevine agent lists it as failed (polled every 100 ms). The watchers are the same
ten in every trial, so the victim's kind is the only thing that changes.

With `--replace`, the victim is one of the ten instead and a fresh member of its kind takes
its place; the watchers then number 4 of the victim's kind and 5 of the other.

    python3 scripts/serf-detection.py --trials 10 --grapevine ./target/release/grapevine [--json]
"""
import argparse, json, os, shutil, signal, statistics, subprocess, sys, tempfile, time, urllib.request

def free_ports(n, start=23000):
    return list(range(start, start + n))

class Member:
    def __init__(self, kind, name, gossip, control, join, binary, logdir):
        self.kind, self.name, self.gossip, self.control = kind, name, gossip, control
        log = open(os.path.join(logdir, name + ".log"), "w")
        if kind == "serf":
            args = ["serf", "agent", f"-node={name}", f"-bind=127.0.0.1:{gossip}",
                    f"-rpc-addr=127.0.0.1:{control}"]
            if join:
                args += [f"-retry-join=127.0.0.1:{join}", "-retry-interval=1s"]
        else:
            args = [binary, "agent", "--protocol", "serf", "--name", name, "--dns", "off",
                    "--bind", f"127.0.0.1:{gossip}", "--http", f"127.0.0.1:{control}"]
            if join:
                args += ["--join", f"127.0.0.1:{join}"]
        self.proc = subprocess.Popen(args, stdout=log, stderr=log)

    def view(self):
        try:
            if self.kind == "serf":
                out = subprocess.run(["serf", "members", f"-rpc-addr=127.0.0.1:{self.control}",
                                      "-format=json"], capture_output=True, timeout=5).stdout
                return {m["name"]: m["status"] for m in json.loads(out)["members"]}
            with urllib.request.urlopen(f"http://127.0.0.1:{self.control}/v1/grapevine/members",
                                        timeout=5) as r:
                return {m["name"]: m["status"] for m in json.load(r)}
        except Exception:
            return {}

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=10, help="trials per victim kind")
    ap.add_argument("--grapevine", default="./target/release/grapevine")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serfs", type=int, default=5, help="Serf agents")
    ap.add_argument("--grapevines", type=int, default=5, help="grapevine agents")
    ap.add_argument("--replace", action="store_true",
                    help="kill one of the cluster's members rather than an extra one")
    a = ap.parse_args()
    if not shutil.which("serf"):
        sys.exit("serf is not installed (apt-get install serf)")
    logdir = tempfile.mkdtemp(prefix="serf-detection-")
    ports = iter(free_ports(400))
    members, counter, everyone = [], {"serf": 0, "grapevine": 0}, []

    def spawn(kind, join):
        counter[kind] += 1
        name = ("s" if kind == "serf" else "g") + str(counter[kind])
        m = Member(kind, name, next(ports), next(ports), join, a.grapevine, logdir)
        everyone.append(m)
        time.sleep(0.3)
        return m

    def joined(new):
        """Waits until every member lists `new` alive, then two seconds more."""
        t1 = time.time()
        while not all(m.view().get(new.name) == "alive" for m in members):
            if time.time() - t1 > 60:
                sys.exit(f"{new.name} did not join")
            time.sleep(0.2)
        time.sleep(2)

    def all_see(watchers, name, status):
        return all(w.view().get(name) == status for w in watchers)

    try:
        kinds = ["serf"] * a.serfs + ["grapevine"] * a.grapevines
        # Alternate the kinds while both last, so that each joins through the other.
        order = []
        while kinds:
            for k in ("serf", "grapevine"):
                if k in kinds:
                    kinds.remove(k)
                    order.append(k)
        for kind in order:
            members.append(spawn(kind, members[-1].gossip if members else None))
        names = [m.name for m in members]
        t0 = time.time()
        while not all(all(m.view().get(n) == "alive" for n in names) for m in members):
            if time.time() - t0 > 60:
                sys.exit("the cluster did not form")
            time.sleep(0.2)
        results = []
        for t in range(2 * a.trials):
            kind = "serf" if t % 2 == 0 else "grapevine"
            if a.replace:
                victim = next(m for m in members if m.kind == kind)
                members.remove(victim)
            else:
                # Each pair of trials joins through the same member, and successive pairs
                # through members of alternate kinds, so neither kind of victim always
                # joins through its own kind.
                victim = spawn(kind, members[(t // 2) % len(members)].gossip)
                joined(victim)
            serfs = [m for m in members if m.kind == "serf"]
            gvs = [m for m in members if m.kind == "grapevine"]
            t0 = time.time()
            victim.kill()
            seen = {}
            while len(seen) < 2:
                if time.time() - t0 > 90:
                    sys.exit(f"{victim.name} not detected: {seen}")
                for label, watchers in (("serf", serfs), ("grapevine", gvs)):
                    if label not in seen and all_see(watchers, victim.name, "failed"):
                        seen[label] = time.time() - t0
                time.sleep(0.1)
            results.append({"victim": kind, "name": victim.name, "by_serf": seen["serf"],
                            "by_grapevine": seen["grapevine"]})
            if not a.json:
                print(f"{victim.name:>4} ({kind:9}) failed at every Serf agent after "
                      f"{seen['serf']:.2f} s, at every grapevine agent after {seen['grapevine']:.2f} s",
                      flush=True)
            if not a.replace:
                continue
            new = spawn(kind, members[0].gossip)
            members.append(new)
            joined(new)
        summary = {}
        for kind in ("serf", "grapevine"):
            for by in ("by_serf", "by_grapevine"):
                xs = sorted(r[by] for r in results if r["victim"] == kind)
                summary[f"{kind}_victim_{by}"] = {
                    "mean": round(statistics.mean(xs), 2),
                    "median": round(statistics.median(xs), 2),
                    "min": round(xs[0], 2), "max": round(xs[-1], 2), "n": len(xs)}
        if a.json:
            print(json.dumps({"trials": results, "summary": summary}, indent=2))
        else:
            for k, v in summary.items():
                print(f"{k:32} mean {v['mean']:5.2f} s  median {v['median']:5.2f} s  "
                      f"range {v['min']:.2f}-{v['max']:.2f} s  ({v['n']} trials)")
    finally:
        for m in everyone:
            try:
                m.kill()
            except Exception:
                pass
        if os.environ.get("KEEP_LOGS"):
            print("logs in", logdir)
        else:
            shutil.rmtree(logdir, ignore_errors=True)

if __name__ == "__main__":
    main()
