#!/usr/bin/env python3
"""Pairwise covering arrays per ebuild model: gah-workgen vs covertable and allpairspy.

Reads the JSON lines of `cargo run --example bench_models` (one model per line: flags,
REQUIRED_USE, non-varied flag values, our rows and the feasible pairs they cover) and asks
each peer for a pairwise array honouring the same REQUIRED_USE, fed to it as a filter
function (allpairspy's filter_func on partial rows; covertable's "fn" constraint). Each
peer row is checked with an exact REQUIRED_USE evaluator written here (Portage semantics,
as gah-ebuild's: an untaken conditional is no member of its group; empty groups are false
for || and ^^, true for ??, all true in EAPI <= 6), and its coverage of the feasible pairs
is counted. A peer that times out or misses pairs is reported, not counted as a win.

Usage: workgen_compare.py MODELS.jsonl [--timeout S] [--guru-sample N] [--big N]
"""
import argparse
import itertools
import json
import multiprocessing as mp
import sys
import time


def parse(text):
    toks = text.split()
    pos = 0

    def items(until_close):
        nonlocal pos
        out = []
        while pos < len(toks):
            t = toks[pos]
            pos += 1
            if t == ")":
                return out
            if t in ("||", "^^", "??"):
                pos += 1  # "("
                out.append(("group", t, items(True)))
            elif t == "(":
                out.append(("all", items(True)))
            elif t.endswith("?"):
                f = t[:-1]
                neg = f.startswith("!")
                pos += 1  # "("
                out.append(("cond", f.lstrip("!"), neg, items(True)))
            else:
                out.append(("lit", t.lstrip("!"), t.startswith("!")))
        return out

    return items(False)


def flags_of(nodes, out):
    for n in nodes:
        if n[0] == "lit":
            out.add(n[1])
        elif n[0] == "cond":
            out.add(n[1])
            flags_of(n[3], out)
        else:
            flags_of(n[-1], out)
    return out


def node(n, val, empty_true):
    kind = n[0]
    if kind == "lit":
        return val[n[1]] != n[2]
    if kind == "cond":
        if val[n[1]] == n[2]:
            return None
        return all(v for v in (node(c, val, empty_true) for c in n[3]) if v is not None)
    members = [v for v in (node(c, val, empty_true) for c in n[-1]) if v is not None]
    if kind == "all":
        return all(members) if members else None
    if not members and empty_true:
        return True
    k = sum(members)
    return {"||": k >= 1, "^^": k == 1, "??": k <= 1}[n[1]]


def valid(tree, val, empty_true):
    return all(v for v in (node(n, val, empty_true) for n in tree) if v is not None)


class Model:
    def __init__(self, m):
        self.m = m
        self.vars = m["vars"]
        self.tree = parse(m["required_use"])
        self.empty_true = m["empty_groups_true"]
        self.fixed = {k: bool(v) for k, v in m["fixed"].items()}
        self.pins = {k: bool(v) for k, v in m["pins"].items()}
        self.named = sorted(flags_of(self.tree, set()) - set(self.fixed))
        self.index = {v: i for i, v in enumerate(self.vars)}

    def full_valid(self, row):
        """row: dict var -> bool (every var)."""
        if any(row[k] != v for k, v in self.pins.items()):
            return False
        val = dict(self.fixed)
        val.update(row)
        return valid(self.tree, val, self.empty_true)

    def maybe_valid(self, partial):
        """False only when no completion of `partial` (dict var -> bool) is valid."""
        if any(k in partial and partial[k] != v for k, v in self.pins.items()):
            return False
        unknown = [f for f in self.named if f not in partial]
        if len(unknown) > 12:
            return True  # too many completions to check: let the tool go on
        val = dict(self.fixed)
        val.update({k: partial.get(k, False) for k in self.named})
        for bits in itertools.product((False, True), repeat=len(unknown)):
            val.update(zip(unknown, bits))
            if valid(self.tree, val, self.empty_true):
                return True
        return False


def run_allpairspy(m):
    from allpairspy import AllPairs

    model = Model(m)
    names = model.vars

    def filt(row):
        return model.maybe_valid({names[i]: bool(v) for i, v in enumerate(row)}) if len(row) < len(names) else model.full_valid({names[i]: bool(v) for i, v in enumerate(row)})

    return [[bool(v) for v in r] for r in AllPairs([[0, 1]] * len(names), filter_func=filt)]


def run_covertable(m):
    from covertable import make

    model = Model(m)
    names = model.vars
    requires = [f for f in model.named] + list(model.pins)
    cons = [{"operator": "fn", "requires": requires, "evaluate": lambda row: model.full_valid({k: bool(row.get(k, 0)) for k in names})}] if requires else None
    rows = make({n: [0, 1] for n in names}, strength=2, constraints=cons)
    return [[bool(r[n]) for n in names] for r in rows]


TOOLS = {"allpairspy": run_allpairspy, "covertable": run_covertable}


def worker(args):
    tool, m = args
    t0 = time.time()
    rows = TOOLS[tool](m)
    return rows, time.time() - t0


def judge(m, rows):
    model = Model(m)
    invalid = sum(1 for r in rows if not model.full_valid(dict(zip(model.vars, r))))
    covered = set()
    for r in rows:
        if not model.full_valid(dict(zip(model.vars, r))):
            continue  # an invalid row cannot be built: it covers nothing
        n = len(r)
        for i in range(n):
            for j in range(i + 1, n):
                covered.add((i, int(r[i]), j, int(r[j])))
    feasible = {tuple(p) for p in m["feasible_pairs"]}
    return invalid, len(feasible - covered)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--guru-sample", type=int, default=60)
    ap.add_argument("--big", type=int, default=8, help="largest non-GURU models to add")
    a = ap.parse_args()
    models = [json.loads(l) for l in open(a.models)]
    guru = [m for m in models if m["repo"] == "guru"]
    step = max(1, len(guru) // a.guru_sample)
    sample = guru[::step][: a.guru_sample]
    others = sorted((m for m in models if m["repo"] != "guru"), key=lambda m: -len(m["vars"]))[: a.big]
    sample += others
    # Our own rows are checked by the same evaluator: a bug here would show as ours invalid.
    for m in sample:
        inv, miss = judge(m, m["rows"])
        assert inv == 0 and miss == 0, (m["cpv"], inv, miss)
    totals = {"ours": 0, **{t: 0 for t in TOOLS}}
    complete = {t: True for t in TOOLS}
    print("| model | flags | ours | " + " | ".join(TOOLS) + " |")
    print("|---|---:|---:|" + "---:|" * len(TOOLS))
    with mp.Pool(1, maxtasksperchild=1) as pool:
        for m in sample:
            cells = []
            totals["ours"] += m["ours_rows"]
            for tool in TOOLS:
                res = pool.apply_async(worker, ((tool, m),))
                try:
                    rows, secs = res.get(a.timeout)
                except mp.TimeoutError:
                    pool.terminate()
                    pool = mp.Pool(1, maxtasksperchild=1)
                    cells.append(f"timeout (>{a.timeout:.0f} s)")
                    complete[tool] = False
                    continue
                except Exception as e:  # a peer crashing on a model is a result too
                    cells.append(f"error: {type(e).__name__}")
                    complete[tool] = False
                    continue
                inv, miss = judge(m, rows)
                note = ""
                if inv:
                    note += f", {inv} invalid"
                if miss:
                    note += f", {miss} pairs missed"
                    complete[tool] = False
                totals[tool] += len(rows)
                cells.append(f"{len(rows)}{note} ({secs:.1f} s)")
            print(f"| {m['cpv']} | {len(m['vars'])} | {m['ours_rows']} ({m['ours_ms']:.0f} ms) | " + " | ".join(cells) + " |", flush=True)
    print(f"| **total** ({len(sample)} models) | | **{totals['ours']}** | " + " | ".join(f"**{totals[t]}**" + ("" if complete[t] else " (incomplete)") for t in TOOLS) + " |")


if __name__ == "__main__":
    main()
