#!/usr/bin/env python3
"""Prints dua-bench and peers.py JSON lines from one GPU run side by side (one row per problem)."""
import json
import os
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "."


def load(name):
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path) if line.startswith("{")]


for pass_, dua_file, peer_file in (("fwd", "dua_fwd.jsonl", "peers_fwd.jsonl"),
                                   ("fwdbwd", "dua_fwdbwd.jsonl", "peers_fwdbwd.jsonl")):
    dua, peers = load(dua_file), load(peer_file)
    if not dua:
        continue
    print(f"\n== {pass_}: ms (dua sparse / dua dense / naive | flex / sdpa / flex-tf32)")
    print(f"{'n':>6} {'depth':>5} {'causal':>6} {'dtype':>5} {'dens':>7} {'sparse':>9} {'dense':>9} {'naive':>9}"
          f" {'TF/s':>6} | {'flex':>8} {'sdpa':>8} {'flex32':>8} {'x_flex':>7} {'x_dense':>7}")
    keys = sorted({(r["n"], r["depth"] if r["depth"] is not None else -9, r["causal"], r["dtype"])
                   for r in dua if r["variant"] == "dua_sparse" and "ms" in r})
    for n, depth, causal, dt in keys:
        def pick(variant, d=depth):
            for r in dua:
                if (r["variant"], r["n"], r["causal"], r["dtype"]) == (variant, n, causal, dt) and "ms" in r \
                        and (variant == "dua_dense" or r["depth"] == d):
                    return r
            return None

        def peer(name, tf32=False):
            for r in peers:
                if (r["peer"], r["n"], r["depth"], r["causal"], r["dtype"]) == (name, n, depth, causal, dt) \
                        and bool(r.get("tf32")) == tf32:
                    return r["ms"]
            return float("nan")
        s, d, nv = pick("dua_sparse"), pick("dua_dense"), pick("naive")
        flex = peer("flex_blockmask")
        print(f"{n:6d} {depth:5d} {str(causal):>6} {dt:>5} {s['density']:7.4f} {s['ms']:9.3f} "
              f"{d['ms'] if d else float('nan'):9.3f} {nv['ms'] if nv else float('nan'):9.3f} {s['tflops']:6.1f} | "
              f"{flex:8.3f} {peer('sdpa_dense'):8.3f} {peer('flex_blockmask', True):8.3f} {flex / s['ms']:7.2f} "
              f"{(d['ms'] / s['ms']) if d else float('nan'):7.2f}")
