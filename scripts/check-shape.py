#!/usr/bin/env python3
"""Checks the source tree's shape, as .ci/run does:

* no Rust file (src, tests, benches, examples) over MAX_LINES lines;
* grapevine-core's node/ under NODE_MAX lines in all;
* grapevine-core's wire/ imports nothing from the crate but `crate::name`;
* no cycle among a crate's modules. A module is a file; an edge is a path into another
  module (`use crate::a::b`, `super::x`, a qualified `crate::a::b::f()`), resolved to the
  deepest module that exists. Edges between a module and its own ancestors are composition
  (a parent declares its children, a child extends its parent) and are not counted.

Exits 1 with one line per violation.
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_LINES = 800
NODE_MAX = 1000


def rust_files():
    for crate in sorted((ROOT / "crates").iterdir()):
        for sub in ("src", "tests", "benches", "examples"):
            d = crate / sub
            if d.is_dir():
                yield from sorted(d.rglob("*.rs"))


def module_path(src: pathlib.Path, f: pathlib.Path):
    """The module path of file `f` under a crate's `src`, e.g. ('node', 'context')."""
    parts = list(f.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip_comments(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def uses(text: str):
    """Every path starting at `crate::`, `super::` or `self::`, with `use` groups expanded."""
    text = strip_comments(text)
    out = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        out.extend(expand(re.sub(r"\s+", "", m.group(1))))
    for m in re.finditer(r"(?<![\w:])((?:crate|super|self)(?:::\w+)+)", text):
        out.append(m.group(1))
    return out


def expand(tree: str):
    """`a::{b,c::{d}}` -> a::b, a::c::d."""
    i = tree.find("{")
    if i < 0:
        return [tree]
    prefix, inner = tree[:i], tree[i + 1 : tree.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    return [x for p in parts if p for x in expand(prefix + p)]


def resolve(path: str, here, modules):
    segs = path.split("::")
    if segs[0] == "crate":
        base, rest = (), segs[1:]
    elif segs[0] in ("super", "self"):
        base = here
        rest = segs
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                base = base[:-1]
            rest = rest[1:]
    else:
        return None
    best = None
    for n in range(len(rest) + 1):
        cand = tuple(base) + tuple(rest[:n])
        if cand in modules:
            best = cand
    return best


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main():
    problems = []
    for f in rust_files():
        n = sum(1 for _ in f.open(encoding="utf-8"))
        if n > MAX_LINES:
            problems.append(f"{f.relative_to(ROOT)}: {n} lines (at most {MAX_LINES})")

    core = ROOT / "crates/grapevine-core/src"
    node_lines = sum(sum(1 for _ in f.open(encoding="utf-8")) for f in (core / "node").rglob("*.rs"))
    if node_lines >= NODE_MAX:
        problems.append(f"grapevine-core node/: {node_lines} lines (under {NODE_MAX})")
    for f in sorted((core / "wire").rglob("*.rs")):
        for p in uses(f.read_text(encoding="utf-8")):
            if p.startswith("crate::") and not p.startswith("crate::name"):
                problems.append(f"{f.relative_to(ROOT)}: wire/ imports {p}")

    for crate in sorted((ROOT / "crates").iterdir()):
        src = crate / "src"
        if not src.is_dir():
            continue
        files = {module_path(src, f): f for f in src.rglob("*.rs")}
        # lib.rs and main.rs are the roots: they declare and re-export, they are no layer.
        graph = {}
        for mod, f in files.items():
            if mod == ():
                continue
            edges = set()
            for p in uses(f.read_text(encoding="utf-8")):
                target = resolve(p, mod, files)
                if target is None or target == ():
                    continue
                related = target[: len(mod)] == mod or mod[: len(target)] == target
                if not related:
                    edges.add(target)
            graph[mod] = edges
        for comp in cycles(graph):
            names = ", ".join("::".join(m) for m in comp)
            problems.append(f"{crate.name}: module cycle among {names}")

    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print(f"shape ok: files <= {MAX_LINES} lines, node/ {node_lines} lines, wire/ clean, no module cycles")


if __name__ == "__main__":
    main()
