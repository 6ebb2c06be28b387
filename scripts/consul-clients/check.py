#!/usr/bin/env python3
"""Runs a real Consul client (python-consul, python-consul2 or py-consul: whichever `consul`
this interpreter imports) through the calls its users make, against three grapevine agents.

    python3 check.py HOST:PORT HOST:PORT HOST:PORT

Prints one line per call: `ok`, `refused as documented` (the documented refusal, with its
reason, came back), or `FAIL` with what went wrong; exits 1 if any call failed. Writes go to
the first agent and are read back on the others, so gossip carries them.
"""
import base64, importlib.metadata, json, sys, time, traceback

import consul

AGENTS = [a.rsplit(":", 1) for a in sys.argv[1:4]]
C = [consul.Consul(host=h, port=int(p)) for h, p in AGENTS]
a, b, c = C
results = []


def flavour():
    for dist in ("py-consul", "python-consul2", "python-consul"):
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            pass
    return "consul (unknown)"


def eventually(f, limit=20.0):
    t0, last = time.time(), None
    while time.time() - t0 < limit:
        try:
            v = f()
            if v:
                return v
        except Exception as e:  # the read may fail until gossip brings the data
            last = e
        time.sleep(0.2)
    raise AssertionError(f"not within {limit} s (last error: {last!r})")


def call(name, f):
    try:
        f()
        results.append(("ok", name, ""))
    except Exception as e:
        results.append(("FAIL", name, f"{e!r}\n{traceback.format_exc(limit=3)}"))


def refused(name, f, why):
    """A call the agent refuses on purpose: it must raise, with the documented reason."""
    try:
        f()
        results.append(("FAIL", name, "succeeded, but should have been refused"))
    except consul.ConsulException as e:
        if why in str(e):
            results.append(("refused as documented", name, ""))
        else:
            results.append(("FAIL", name, f"refused without the reason {why!r}: {e}"))
    except Exception as e:
        results.append(("FAIL", name, f"not a ConsulException: {e!r}"))


def check(cond, what):
    if not cond:
        raise AssertionError(what)


# ---------------- KV ----------------
def kv_put_get():
    check(a.kv.put("cc/a", "1") is True, "put")
    _, v = eventually(lambda: (lambda r: r if r[1] else None)(b.kv.get("cc/a")))
    check(v["Value"] == b"1", v)


def kv_flags():
    check(a.kv.put("cc/flags", "x", flags=42), "put")
    _, v = eventually(lambda: (lambda r: r if r[1] else None)(c.kv.get("cc/flags")))
    check(v["Flags"] == 42, f"flags read back as {v['Flags']}")


def kv_recurse():
    a.kv.put("cc/dir/x", "x")
    a.kv.put("cc/dir/y/z", "z")
    _, vs = eventually(lambda: (lambda r: r if r[1] and len(r[1]) >= 2 else None)(b.kv.get("cc/dir/", recurse=True)))
    check(sorted(v["Key"] for v in vs) == ["cc/dir/x", "cc/dir/y/z"], vs)


def kv_root():
    _, vs = a.kv.get("", recurse=True)
    check(vs and any(v["Key"] == "cc/a" for v in vs), f"the whole keyspace: {vs}")


def kv_keys_separator():
    _, ks = eventually(lambda: (lambda r: r if r[1] else None)(a.kv.get("cc/dir/", keys=True, separator="/")))
    check(ks == ["cc/dir/x", "cc/dir/y/"], ks)


def kv_cas():
    _, v = a.kv.get("cc/a")
    check(a.kv.put("cc/a", "2", cas=v["ModifyIndex"] + 1000) is False, "wrong cas wrote")
    check(a.kv.put("cc/a", "2", cas=v["ModifyIndex"]) is True, "right cas refused")
    check(a.kv.put("cc/new", "n", cas=0) is True, "cas=0 on an absent key")
    check(a.kv.put("cc/new", "n", cas=0) is False, "cas=0 on a present key")


def kv_delete_cas():
    _, v = a.kv.get("cc/new")
    check(a.kv.delete("cc/new", cas=v["ModifyIndex"] + 1000) is False, "wrong cas deleted")
    check(a.kv.get("cc/new")[1] is not None, "the key went anyway")
    check(a.kv.delete("cc/new", cas=v["ModifyIndex"]) is True, "right cas refused")
    check(a.kv.get("cc/new")[1] is None, "the key stayed")


def kv_delete_recurse():
    check(a.kv.delete("cc/dir/", recurse=True), "delete")
    check(a.kv.get("cc/dir/", recurse=True)[1] is None, "the subtree stayed")
    eventually(lambda: c.kv.get("cc/dir/", recurse=True)[1] is None)


def kv_blocking():
    idx, _ = a.kv.get("cc/a")
    t0 = time.time()
    a.kv.get("cc/a", index=idx, wait="1s")
    took = time.time() - t0
    check(0.8 < took < 5, f"a 1 s wait took {took:.2f} s")


def kv_null_and_big():
    a.kv.put("cc/null", None)
    check(a.kv.get("cc/null")[1]["Value"] is None, "a value-less put reads back as null")
    big = "v" * (500 * 1024)
    check(a.kv.put("cc/big", big), "a 500 KiB value")
    _, v = eventually(lambda: (lambda r: r if r[1] else None)(b.kv.get("cc/big")), 30)
    check(v["Value"] == big.encode(), "the big value came back different")
    a.kv.delete("cc/big")


# ---------------- agent ----------------
def agent_basics():
    check(a.agent.self()["Config"]["NodeName"], "self")
    names = {m["Name"] for m in a.agent.members()}
    check(len(names) == 3, names)


def service_register():
    kwargs = dict(service_id="web-1", port=8080, tags=["v1", "primary"],
                  check=consul.Check.ttl("10m"))
    a.agent.service.register("web", **kwargs)
    check("web-1" in a.agent.services(), "listed")
    a.agent.check.ttl_pass("service:web-1")
    checks = a.agent.checks()
    check(checks["service:web-1"]["Status"] == "passing", checks)
    eventually(lambda: b.health.service("web", passing=True)[1])


def node_check():
    a.agent.check.register("disk", consul.Check.ttl("30s"), check_id="disk-ttl")
    a.agent.check.ttl_warn("disk-ttl")
    check(a.agent.checks()["disk-ttl"]["Status"] == "warning", "warned")
    node = a.agent.self()["Config"]["NodeName"]
    eventually(lambda: any(x["CheckID"] == "disk-ttl" for x in c.health.node(node)[1]))
    check(a.agent.check.deregister("disk-ttl"), "deregister")
    check("disk-ttl" not in a.agent.checks(), "still listed")


def service_maintenance():
    a.agent.service.maintenance("web-1", "true", "upgrade")
    eventually(lambda: any(x["CheckID"] == "_service_maintenance:web-1" for x in b.health.checks("web")[1]))
    # In maintenance, the instance is not passing anywhere.
    eventually(lambda: not b.health.service("web", passing=True)[1])
    a.agent.service.maintenance("web-1", "false")
    eventually(lambda: not any(x["CheckID"].startswith("_service_maintenance") for x in b.health.checks("web")[1]))


def node_maintenance():
    a.agent.maintenance("true", "reboot")
    node = a.agent.self()["Config"]["NodeName"]
    eventually(lambda: any(x["CheckID"] == "_node_maintenance" for x in c.health.state("critical")[1]))
    check(any(x["CheckID"] == "_node_maintenance" for x in c.health.node(node)[1]), "health.node")
    a.agent.maintenance("false")
    eventually(lambda: not any(x["CheckID"] == "_node_maintenance" for x in c.health.state("any")[1]))


# ---------------- catalog and health ----------------
def catalog():
    check(a.catalog.datacenters() == ["grapevine"], "datacenters")
    _, nodes = eventually(lambda: (lambda r: r if len(r[1]) == 3 else None)(b.catalog.nodes()))
    check({"Node", "Address", "Meta"} <= set(nodes[0]), nodes[0])
    node = a.agent.self()["Config"]["NodeName"]
    _, n = b.catalog.node(node)
    check("web-1" in n["Services"], n)
    _, services = b.catalog.services()
    check("web" in services, services)
    _, inst = b.catalog.service("web", tag="primary")
    check(len(inst) == 1 and inst[0]["ServiceWeights"] == {"Passing": 1, "Warning": 1}, inst)
    _, none = b.catalog.service("web", tag="absent")
    check(none == [], none)


def health():
    # The maintenance checks just withdrawn may still be on their way to this agent.
    _, h = eventually(lambda: (lambda r: r if len(r[1]) == 1 else None)(b.health.service("web", passing=True)))
    check(h[0]["Checks"][0]["CheckID"] == "serfHealth", h)
    _, h = b.health.service("web", tag="v1")
    check(len(h) == 1, h)
    _, cs = b.health.checks("web")
    check(cs and cs[0]["ServiceID"] == "web-1", cs)
    _, st = b.health.state("passing")
    check(any(x["CheckID"] == "serfHealth" for x in st), st)


# ---------------- events ----------------
def events():
    ev = a.event.fire("deploy", "v2")
    check(len(ev["ID"]) == 36 and ev["ID"].count("-") == 4, f"not a UUID: {ev['ID']}")
    _, evs = eventually(lambda: (lambda r: r if r[1] else None)(c.event.list(name="deploy")))
    payload = evs[-1]["Payload"]
    # python-consul decodes the payload itself; the others hand over base64.
    if isinstance(payload, str):
        payload = base64.b64decode(payload)
    check(payload == b"v2", evs[-1])


def event_filter():
    node = b.agent.self()["Config"]["NodeName"]
    a.event.fire("only-b", "x", node=f"^{node}$")
    eventually(lambda: b.event.list(name="only-b")[1])
    time.sleep(1.0)
    check(not c.event.list(name="only-b")[1], "a node-filtered event reached another node")


# ---------------- status, coordinates ----------------
def status():
    check(a.status.leader(), "leader")
    check(len(a.status.peers()) == 3, "peers")


def coordinates():
    nodes = a.coordinate.nodes()
    # Some clients answer (index, data), others data alone.
    if isinstance(nodes, tuple):
        nodes = nodes[1]
    check(nodes == [], f"coordinates: {nodes}")
    check(isinstance(a.coordinate.datacenters(), list), "coordinate datacenters")


def deregister():
    check(a.agent.service.deregister("web-1"), "deregister")
    eventually(lambda: not b.catalog.service("web")[1])


NO_LOCKS = "sessions and locks are not offered"
NO_TXN = "transactions are not offered"
call("kv.put + kv.get (read on another agent)", kv_put_get)
call("kv.put(flags=42) + kv.get", kv_flags)
call("kv.get(recurse=True)", kv_recurse)
call("kv.get('', recurse=True) (the whole keyspace)", kv_root)
call("kv.get(keys=True, separator='/')", kv_keys_separator)
call("kv.put(cas=...)", kv_cas)
call("kv.delete(cas=...)", kv_delete_cas)
call("kv.delete(recurse=True)", kv_delete_recurse)
call("kv.get(index=..., wait='1s') (blocking)", kv_blocking)
call("kv.put(None), kv.put(500 KiB)", kv_null_and_big)
refused("kv.put(acquire=session)", lambda: a.kv.put("cc/lock", "me", acquire="0a0b"), NO_LOCKS)
refused("kv.get(dc='elsewhere')", lambda: a.kv.get("cc/a", dc="elsewhere"), "No path to datacenter")
call("agent.self, agent.members", agent_basics)
call("agent.service.register (TTL check), agent.services, agent.check.ttl_pass, agent.checks", service_register)
call("agent.check.register (node), ttl_warn, health.node, agent.check.deregister", node_check)
call("agent.service.maintenance on/off", service_maintenance)
call("agent.maintenance on/off, health.state", node_maintenance)
call("catalog.datacenters, nodes, node, services, service(tag=)", catalog)
call("health.service(passing, tag), health.checks, health.state", health)
call("event.fire, event.list", events)
call("event.fire(node=...) (a filtered event)", event_filter)
call("status.leader, status.peers", status)
call("coordinate.nodes, coordinate.datacenters", coordinates)
refused("session.create", lambda: a.session.create(), NO_LOCKS)
refused("txn.put", lambda: a.txn.put([{"KV": {"Verb": "set", "Key": "cc/t", "Value": base64.b64encode(b"t").decode()}}]), NO_TXN)
call("agent.service.deregister", deregister)
call("nothing refused was written", lambda: check(a.kv.get("cc/lock")[1] is None and a.kv.get("cc/t")[1] is None, "a refused call wrote"))

print(f"== {flavour()}")
for status_, name, detail in results:
    print(f"{status_:22} {name}")
    if detail:
        print("    " + detail.replace("\n", "\n    ").rstrip())
sys.exit(1 if any(r[0] == "FAIL" for r in results) else 0)
