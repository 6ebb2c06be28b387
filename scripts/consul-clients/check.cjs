#!/usr/bin/env node
// Runs the npm `consul` client through the calls its users make, against three grapevine
// agents: `node check.cjs HOST:PORT HOST:PORT HOST:PORT` (with NODE_PATH pointing at the
// node_modules that holds `consul`). One line per call: `ok`, `refused as documented`, or
// `FAIL` with what went wrong; exit 1 if any call failed. The same calls as check.py.
"use strict";
const Consul = require("consul");

const [a, b, c] = process.argv.slice(2, 5).map((hp) => {
  const [host, port] = hp.split(":");
  return new Consul({ host, port: Number(port) });
});
const results = [];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const check = (cond, what) => {
  if (!cond) throw new Error(typeof what === "string" ? what : JSON.stringify(what));
};

async function eventually(f, limit = 20000) {
  const t0 = Date.now();
  let last;
  while (Date.now() - t0 < limit) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(200);
  }
  throw new Error(`not within ${limit} ms (last error: ${last})`);
}

async function call(name, f) {
  try {
    await f();
    results.push(["ok", name, ""]);
  } catch (e) {
    results.push(["FAIL", name, String(e && e.stack ? e.stack : e)]);
  }
}

async function refused(name, f, why) {
  try {
    await f();
    results.push(["FAIL", name, "succeeded, but should have been refused"]);
  } catch (e) {
    const text = `${e.message} ${e.response ? JSON.stringify(e.response.body) : ""}`;
    results.push(text.includes(why) ? ["refused as documented", name, ""] : ["FAIL", name, `refused without the reason ${why}: ${text}`]);
  }
}

const NO_LOCKS = "sessions and locks are not offered";
const NO_TXN = "transactions are not offered";

async function main() {
  const me = (await a.agent.self()).Config.NodeName;
  const other = (await b.agent.self()).Config.NodeName;

  await call("kv.set + kv.get (read on another agent)", async () => {
    check((await a.kv.set("cc/a", "1")) === true, "set");
    const v = await eventually(() => b.kv.get("cc/a"));
    check(v.Value === "1", v);
  });
  await call("kv.set(flags=42) + kv.get", async () => {
    await a.kv.set({ key: "cc/flags", value: "x", flags: 42 });
    const v = await eventually(() => c.kv.get("cc/flags"));
    check(v.Flags === 42, v);
  });
  await call("kv.get(recurse) and the whole keyspace", async () => {
    await a.kv.set("cc/dir/x", "x");
    await a.kv.set("cc/dir/y/z", "z");
    const vs = await eventually(async () => {
      const r = await b.kv.get({ key: "cc/dir/", recurse: true });
      return r && r.length >= 2 ? r : null;
    });
    check(vs.map((v) => v.Key).sort().join() === "cc/dir/x,cc/dir/y/z", vs);
    const all = await a.kv.get({ key: "", recurse: true });
    check(all.some((v) => v.Key === "cc/a"), all);
  });
  await call("kv.keys(separator='/')", async () => {
    const ks = await a.kv.keys({ key: "cc/dir/", separator: "/" });
    check(ks.join() === "cc/dir/x,cc/dir/y/", ks);
  });
  await call("kv.set(cas) and kv.del(cas)", async () => {
    const v = await a.kv.get("cc/a");
    // This client hands over Consul's `false` as undefined: check the value too.
    check((await a.kv.set({ key: "cc/a", value: "2", cas: v.ModifyIndex + 1000 })) !== true, "wrong cas wrote");
    check((await a.kv.get("cc/a")).Value === v.Value, "wrong cas changed the value");
    check((await a.kv.set({ key: "cc/a", value: "2", cas: v.ModifyIndex })) === true, "right cas refused");
    await a.kv.set("cc/new", "n");
    const n = await a.kv.get("cc/new");
    check((await a.kv.del({ key: "cc/new", cas: n.ModifyIndex + 1000 })) !== true, "wrong cas deleted");
    check((await a.kv.get("cc/new")) !== undefined, "the key went anyway");
    check((await a.kv.del({ key: "cc/new", cas: n.ModifyIndex })) === true, "right cas refused");
  });
  await call("kv.del(recurse)", async () => {
    await a.kv.del({ key: "cc/dir/", recurse: true });
    check((await a.kv.get({ key: "cc/dir/", recurse: true })) === undefined, "the subtree stayed");
  });
  await refused("kv.set(acquire=session)", () => a.kv.set({ key: "cc/lock", value: "me", acquire: "0a0b" }), NO_LOCKS);
  await refused("kv.get(dc='elsewhere')", () => a.kv.get({ key: "cc/a", dc: "elsewhere" }), "No path to datacenter");

  await call("agent.self, agent.members", async () => {
    check((await a.agent.members()).length === 3, "members");
  });
  await call("agent.service.register (TTL check), agent.service.list, agent.check.pass, agent.checks", async () => {
    await a.agent.service.register({ name: "web", id: "web-1", port: 8080, tags: ["v1", "primary"], check: { ttl: "10m" } });
    check("web-1" in (await a.agent.service.list()), "listed");
    await a.agent.check.pass("service:web-1");
    const checks = await a.agent.checks();
    check(checks["service:web-1"].Status === "passing", checks);
    await eventually(async () => (await b.health.service({ service: "web", passing: true })).length === 1);
  });
  await call("agent.check.register (node), warn, health.node, deregister", async () => {
    await a.agent.check.register({ name: "disk", id: "disk-ttl", ttl: "30s" });
    await a.agent.check.warn("disk-ttl");
    check((await a.agent.checks())["disk-ttl"].Status === "warning", "warned");
    await eventually(async () => (await c.health.node(me)).some((x) => x.CheckID === "disk-ttl"));
    await a.agent.check.deregister("disk-ttl");
    check(!("disk-ttl" in (await a.agent.checks())), "still listed");
  });
  await call("agent.service.maintenance and agent.maintenance on/off", async () => {
    await a.agent.service.maintenance({ id: "web-1", enable: true, reason: "upgrade" });
    await eventually(async () => (await b.health.checks("web")).some((x) => x.CheckID === "_service_maintenance:web-1"));
    await a.agent.service.maintenance({ id: "web-1", enable: false });
    await a.agent.maintenance({ enable: true, reason: "reboot" });
    await eventually(async () => (await c.health.state("critical")).some((x) => x.CheckID === "_node_maintenance"));
    await a.agent.maintenance({ enable: false });
    await eventually(async () => !(await c.health.state("any")).some((x) => x.CheckID === "_node_maintenance"));
  });
  await call("catalog.datacenters, node.list, node.services, service.list, service.nodes(tag)", async () => {
    check((await a.catalog.datacenters()).join() === "grapevine", "datacenters");
    await eventually(async () => (await b.catalog.node.list()).length === 3);
    const n = await b.catalog.node.services(me);
    check("web-1" in n.Services, n);
    check("web" in (await b.catalog.service.list()), "services");
    const inst = await b.catalog.service.nodes({ service: "web", tag: "primary" });
    check(inst.length === 1 && inst[0].ServiceWeights.Passing === 1, inst);
  });
  await call("health.service(passing, tag), health.checks, health.state", async () => {
    // The maintenance checks just withdrawn may still be on their way to this agent.
    const h = await eventually(async () => {
      const r = await b.health.service({ service: "web", passing: true });
      return r.length === 1 ? r : null;
    });
    check(h[0].Checks[0].CheckID === "serfHealth", h);
    check((await b.health.service({ service: "web", tag: "v1" })).length === 1, "tag");
    check((await b.health.checks("web"))[0].ServiceID === "web-1", "checks");
    check((await b.health.state("passing")).some((x) => x.CheckID === "serfHealth"), "state");
  });
  await call("event.fire, event.list, event.fire(node=...)", async () => {
    const ev = await a.event.fire("deploy", "v2");
    check(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(ev.ID), ev);
    const evs = await eventually(async () => { const l = await c.event.list({ name: "deploy" }); return l.length ? l : null; });
    check(evs[evs.length - 1].Payload.toString() === "v2", evs);
    await a.event.fire({ name: "only-b", payload: "x", node: `^${other}$` });
    await eventually(async () => (await b.event.list({ name: "only-b" })).length > 0);
    await sleep(1000);
    check((await c.event.list({ name: "only-b" })).length === 0, "a node-filtered event reached another node");
  });
  await call("status.leader, status.peers", async () => {
    check(await a.status.leader(), "leader");
    check((await a.status.peers()).length === 3, "peers");
  });
  await refused("session.create", () => a.session.create(), NO_LOCKS);
  await refused("transaction.create", () => a.transaction.create([{ KV: { Verb: "set", Key: "cc/t", Value: Buffer.from("t").toString("base64") } }]), NO_TXN);
  await call("agent.service.deregister", async () => {
    await a.agent.service.deregister("web-1");
    await eventually(async () => (await b.catalog.service.nodes("web")).length === 0);
  });
  await call("nothing refused was written", async () => {
    check((await a.kv.get("cc/lock")) === undefined && (await a.kv.get("cc/t")) === undefined, "a refused call wrote");
  });

  console.log(`== consul (npm) ${require("consul/package.json").version}`);
  for (const [status, name, detail] of results) {
    console.log(`${status.padEnd(22)} ${name}`);
    if (detail) console.log("    " + detail.replace(/\n/g, "\n    "));
  }
  process.exit(results.some((r) => r[0] === "FAIL") ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
