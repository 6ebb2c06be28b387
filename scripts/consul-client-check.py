#!/usr/bin/env python3
"""Drives a grapevine agent with python-consul (from PyPI): put, get, list, check-and-set,
watch (a blocking query), delete, members. Exits non-zero on the first failure.

  scripts/consul-client-check.py HOST:PORT
"""
import sys, threading, time
import consul

host, port = sys.argv[1].rsplit(":", 1)
c = consul.Consul(host=host, port=int(port))

assert c.kv.put("app/a", "x") is True
_, v = c.kv.get("app/a")
assert v["Value"] == b"x", v
assert c.kv.put("app/b", "y") is True
_, vals = c.kv.get("app/", recurse=True)
assert sorted(e["Key"] for e in vals) == ["app/a", "app/b"], vals
_, keys = c.kv.get("app/", keys=True)
assert sorted(keys) == ["app/a", "app/b"], keys

# Check-and-set against the modify index.
_, v = c.kv.get("app/a")
mi = v["ModifyIndex"]
assert c.kv.put("app/a", "z", cas=mi) is True
assert c.kv.put("app/a", "w", cas=mi) is False, "a stale index must fail"
assert c.kv.put("app/new", "n", cas=0) is True
assert c.kv.put("app/new", "m", cas=0) is False, "cas=0 only creates"

# Watch: a blocking query returns when the key changes.
index, _ = c.kv.get("app/a")
def later():
    time.sleep(0.5)
    c.kv.put("app/a", "watched")
threading.Thread(target=later).start()
t0 = time.time()
index2, v = c.kv.get("app/a", index=index, wait="5s")
took = time.time() - t0
assert v["Value"] == b"watched" and int(index2) > int(index), (index, index2, v)
assert 0.3 < took < 4.0, took

assert c.kv.delete("app/b") is True
_, v = c.kv.get("app/b")
assert v is None, v
assert any(m["Name"] for m in c.agent.members())

# Services, as Prometheus's consul_sd_configs reads them: the agent's datacenter, the
# catalog's services (a blocking query), then each service's health.
assert c.agent.service.register("api", service_id="api-1", port=9101, tags=["metrics"],
                                address="127.0.0.1", check=consul.Check.ttl("10m")) is True
assert c.agent.check.ttl_pass("service:api-1") is True
dc = c.agent.self()["Config"]["Datacenter"]
deadline = time.time() + 10
while True:
    index, services = c.catalog.services(dc=dc)
    if "api" in services:
        break
    assert time.time() < deadline, services
    time.sleep(0.1)
assert services["api"] == ["metrics"], services
_, nodes = c.health.service("api", passing=True, dc=dc)
assert [(n["Service"]["ID"], n["Service"]["Port"]) for n in nodes] == [("api-1", 9101)], nodes
_, entries = c.catalog.service("api")
assert entries[0]["ServiceAddress"] == "127.0.0.1", entries
def dereg():
    time.sleep(0.5)
    c.agent.service.deregister("api-1")
threading.Thread(target=dereg).start()
t0 = time.time()
while True:
    index, services = c.catalog.services(index=index, wait="5s")
    if "api" not in services:
        break
    assert time.time() - t0 < 5, services
gone = time.time() - t0
print(f"python-consul: put, get, recurse, keys, cas, watch ({took:.2f} s), delete, members, "
      f"service register, ttl pass, catalog, health, blocking deregistration ({gone:.2f} s): ok")
