#!/usr/bin/env python3
"""Pairwise covering arrays per ebuild model: gah-workgen vs covertable, PICT and allpairspy.

Reads the JSON lines of `cargo run --example bench_models` (one model per line: flags,
REQUIRED_USE, non-varied flag values, our rows and the feasible pairs they cover) and asks
each peer for a pairwise array honouring the same REQUIRED_USE. Every peer that has
declarative constraints gets the same model declaratively: REQUIRED_USE is translated here
into one propositional formula per top-level member with Portage's semantics (an untaken
conditional is no member of its group; empty groups are false for || and ^^, true for ??,
all true in EAPI <= 6; non-varied flags folded in as constants; the profile's pins as
equalities), given to covertable as its and/or/not/eq conditions and to PICT as
unconditional constraints. allpairspy has no constraint language: it gets a filter function
on partial rows (exact when <= 12 named flags are unset, else permissive). covertable runs
plain and with its simulated-annealing optimiser (`Controller.optimize`, default tuning,
its default seed). Each peer row is checked with an exact evaluator written here, and its
coverage of the feasible pairs is counted. A peer that times out or misses pairs is
reported, not counted as a win.

Usage: workgen_compare.py MODELS.jsonl [--timeout S] [--guru-sample N] [--big N]
                          [--flags MIN-MAX] [--tools a,b] [--pict PATH] [--summary]
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


def formula(nodes_, fixed, empty_true):
    """One formula per top-level member: ("const", b) | ("var", f) | ("not", x) | ("and", [..])
    | ("or", [..]), with Portage's semantics (see the module docs), constants folded."""

    def c(b):
        return ("const", b)

    def neg(x):
        if x[0] == "const":
            return c(not x[1])
        if x[0] == "not":
            return x[1]
        return ("not", x)

    def conj(xs):
        out = []
        for x in xs:
            if x == c(False):
                return c(False)
            if x != c(True):
                out.append(x)
        return c(True) if not out else out[0] if len(out) == 1 else ("and", out)

    def disj(xs):
        return neg(conj([neg(x) for x in xs]))

    def lit(f, negated):
        x = c(fixed[f]) if f in fixed else ("var", f)
        return neg(x) if negated else x

    def amo(es):
        return conj([neg(conj([a, b])) for a, b in itertools.combinations(es, 2)])

    def node_(n):
        """(act, val)."""
        kind = n[0]
        if kind == "lit":
            return c(True), lit(n[1], n[2])
        if kind == "cond":
            act = lit(n[1], n[2])
            if act == c(False):
                return c(False), c(True)
            return act, all_of(n[3])[1]
        if kind == "all":
            return all_of(n[1])
        acts, trues = [], []
        for ch in n[2]:
            a, v = node_(ch)
            acts.append(a)
            trues.append(conj([a, v]))
        holds = {"||": lambda: disj(trues), "??": lambda: amo(trues), "^^": lambda: conj([disj(trues), amo(trues)])}[n[1]]()
        if empty_true:
            holds = disj([holds, neg(disj(acts))])
        return c(True), holds

    def all_of(children):
        pairs = [node_(ch) for ch in children]
        return disj([a for a, _ in pairs]), conj([disj([neg(a), v]) for a, v in pairs])

    out = []
    for n in nodes_:
        a, v = node_(n)
        f = disj([neg(a), v])
        if f != c(True):
            out.append(f)
    return out


def constraints_of(model):
    """The model's formulas: REQUIRED_USE's members and the pins."""
    fs = formula(model.tree, model.fixed, model.empty_true)
    fs += [("var", k) if v else ("not", ("var", k)) for k, v in model.pins.items()]
    return fs


def to_covertable(f):
    kind = f[0]
    if kind == "var":
        return {"operator": "eq", "left": f[1], "value": 1}
    if kind == "not":
        return {"operator": "not", "condition": to_covertable(f[1])}
    if kind in ("and", "or"):
        return {"operator": kind, "conditions": [to_covertable(x) for x in f[1]]}
    # A constant member: "x = x" style truths are not needed once folded; false stays false.
    return {"operator": "eq", "left": "__never__", "value": 1}


def to_pict(f):
    kind = f[0]
    if kind == "var":
        return f"[{f[1]}] = 1"
    if kind == "not":
        return f"NOT ({to_pict(f[1])})"
    if kind in ("and", "or"):
        return "(" + f" {kind.upper()} ".join(to_pict(x) for x in f[1]) + ")"
    return "[__never__] = 1"


def run_allpairspy(m):
    from allpairspy import AllPairs

    model = Model(m)
    names = model.vars

    def filt(row):
        return model.maybe_valid({names[i]: bool(v) for i, v in enumerate(row)}) if len(row) < len(names) else model.full_valid({names[i]: bool(v) for i, v in enumerate(row)})

    return [[bool(v) for v in r] for r in AllPairs([[0, 1]] * len(names), filter_func=filt)]


def covertable_controller(m):
    from covertable.main import Controller

    model = Model(m)
    cons = [to_covertable(f) for f in constraints_of(model)]
    presets = [{n: int(v) for n, v in zip(model.vars, r)} for r in m.get("_seeds", [])]
    return model, Controller({n: [0, 1] for n in model.vars}, strength=2, constraints=cons or None, presets=presets or None)


def run_covertable(m):
    model, ctrl = covertable_controller(m)
    rows = ctrl.make()
    return [[bool(r[n]) for n in model.vars] for r in rows]


def run_covertable_opt(m):
    model, ctrl = covertable_controller(m)
    rows = ctrl.make()
    rows = ctrl.optimize(rows)
    return [[bool(r[n]) for n in model.vars] for r in rows]


PICT = None


def run_pict(m):
    import subprocess
    import tempfile

    model = Model(m)
    lines = [f"{n}: 0, 1" for n in model.vars]
    lines.append("")
    # A constraint line must open with "(" or "[" (else PICT reads it as a parameter).
    lines += ["(" + to_pict(f) + ");" for f in constraints_of(model)]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(lines) + "\n")
        path = fh.name
    args = [PICT, path]
    if m.get("_seeds"):
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
            fh.write("\t".join(model.vars) + "\n")
            fh.writelines("\t".join(str(int(v)) for v in r) + "\n" for r in m["_seeds"])
            args.append("/e:" + fh.name)
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout.splitlines()
    header = out[0].split("\t")
    idx = [header.index(n) for n in model.vars]
    return [[r.split("\t")[i] == "1" for i in idx] for r in out[1:] if r]


TOOLS = {"allpairspy": run_allpairspy, "covertable": run_covertable, "covertable+opt": run_covertable_opt, "pict": run_pict}


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
    global PICT
    ap = argparse.ArgumentParser()
    ap.add_argument("models")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--guru-sample", type=int, default=60)
    ap.add_argument("--big", type=int, default=8, help="largest non-GURU models to add")
    ap.add_argument("--flags", help="MIN-MAX: every model with that many flags instead of the sample")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--pict", help="the pict binary (built by hand); PICT is skipped without it")
    ap.add_argument("--summary", action="store_true", help="totals only, no row per model")
    ap.add_argument(
        "--mandatory",
        action="store_true",
        help="count issue 3's mandatory rows (closest to the defaults, all-on, all-off): ours include them, "
        "peers get them as seeds where they take seeds (covertable presets, PICT /e:) and any they lack is "
        "added to their count; without it, our plain array (covering_array_unseeded) against the peers' plain ones",
    )
    a = ap.parse_args()
    PICT = a.pict
    tools = [t for t in a.tools.split(",") if t != "pict" or PICT]
    models = [json.loads(l) for l in open(a.models)]
    if a.flags:
        lo, hi = (int(x) for x in a.flags.split("-"))
        sample = [m for m in models if lo <= len(m["vars"]) <= hi]
    else:
        guru = [m for m in models if m["repo"] == "guru"]
        step = max(1, len(guru) // a.guru_sample)
        sample = guru[::step][: a.guru_sample]
        others = sorted((m for m in models if m["repo"] != "guru"), key=lambda m: -len(m["vars"]))[: a.big]
        sample += others
    # Our own rows are checked by the same evaluator: a bug here would show as ours invalid.
    for m in sample:
        inv, miss = judge(m, m["rows"])
        assert inv == 0 and miss == 0, (m["cpv"], inv, miss)
    ours_key = "ours_rows" if a.mandatory else "plain_rows"
    for m in sample:
        m["_seeds"] = m["mandatory_rows"] if a.mandatory else []
    totals = {"ours": 0, **{t: 0 for t in tools}}
    # Per peer: models it completed (all pairs, no invalid row), its rows and ours on them.
    fair = {t: [0, 0, 0] for t in tools}
    complete = {t: True for t in tools}
    if not a.summary:
        print("| model | flags | ours | " + " | ".join(tools) + " |")
        print("|---|---:|---:|" + "---:|" * len(tools))
    with mp.Pool(1, maxtasksperchild=1) as pool:
        for m in sample:
            cells = []
            totals["ours"] += m[ours_key]
            for tool in tools:
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
                # The mandatory rows a peer dropped or never had are added back (they are valid).
                rows = rows + [[bool(v) for v in r] for r in m["_seeds"] if [bool(v) for v in r] not in rows]
                inv, miss = judge(m, rows)
                note = ""
                if inv:
                    note += f", {inv} invalid"
                if miss:
                    note += f", {miss} pairs missed"
                if inv or miss:
                    complete[tool] = False
                else:
                    fair[tool][0] += 1
                    fair[tool][1] += len(rows)
                    fair[tool][2] += m[ours_key]
                totals[tool] += len(rows)
                cells.append(f"{len(rows)}{note} ({secs:.1f} s)")
            if not a.summary:
                print(f"| {m['cpv']} | {len(m['vars'])} | {m[ours_key]} ({m['ours_ms']:.0f} ms) | " + " | ".join(cells) + " |", flush=True)
    if not a.summary:
        print(f"| **total** ({len(sample)} models) | | **{totals['ours']}** | " + " | ".join(f"**{totals[t]}**" + ("" if complete[t] else " (incomplete)") for t in tools) + " |")
        print()
    print("| peer | models complete | peer rows | our rows, same models |")
    print("|---|---:|---:|---:|")
    for t in tools:
        done, theirs, ours = fair[t]
        print(f"| {t} | {done} / {len(sample)} | {theirs} | {ours} |")


if __name__ == "__main__":
    main()
