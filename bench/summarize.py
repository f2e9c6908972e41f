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

# decode: dua-bench --pass decode next to peers.py --pass decode (peers have no GQA: a GQA row is shown next
# to the peers' 8-head problem, which reads the same K/V bytes)
dua, peers = load("dua_decode.jsonl"), load("peers_decode.jsonl")
if dua:
    print("\n== decode: ms (dua sparse / dua dense | flex / sdpa); GB/s and of_copy of dua sparse")
    print(f"{'n':>6} {'H/Hkv':>6} {'depth':>5} {'win':>4} {'page':>4} {'rag':>3} {'dtype':>5} {'visible':>7} "
          f"{'sparse':>8} {'dense':>8} {'x_dense':>7} {'ideal':>6} {'GB/s':>7} {'of_copy':>7} | {'flex':>8} "
          f"{'sdpa':>8} {'flex/dua':>8}")
    for r in dua:
        if r["variant"] != "dua_sparse_decode" or "ms" not in r:
            continue
        dense = next((x for x in dua if x["variant"] == "dua_dense_decode" and "ms" in x and all(
            x[k] == r[k] for k in ("n", "heads", "kv_heads", "dtype", "page", "ragged", "tokens"))), None)

        def peer(name):
            for p in peers:
                if (p["peer"], p["n"], p["dtype"], p.get("window", 0), p.get("sink", 0)) == \
                        (name, r["n"], r["dtype"], r["window"], r["sink"]) and p["heads"] == r["kv_heads"] and \
                        (name == "sdpa_dense_decode" or p["depth"] == r["depth"]):
                    return p["ms"]
            return float("nan")
        flex = peer("flex_decode")
        print(f"{r['n']:6d} {str(r['heads']) + '/' + str(r['kv_heads']):>6} {r['depth']:5d} {r['window']:4d} "
              f"{r['page']:4d} {'y' if r['ragged'] else 'n':>3} {r['dtype']:>5} {r['visible_fraction']:7.4f} "
              f"{r['ms']:8.4f} {dense['ms'] if dense else float('nan'):8.4f} {r['speedup_vs_dense']:7.2f} "
              f"{r['ideal_speedup']:6.2f} {r['gbps']:7.1f} {100 * r['fraction_of_copy']:6.1f}% | {flex:8.4f} "
              f"{peer('sdpa_dense_decode'):8.4f} {flex / r['ms']:8.2f}")
sweep = load("decode_sweep.jsonl")
if sweep:
    hi = max(r["depth"] for r in sweep)
    print(f"\n== decode tile x splits (fp16, n 16384, B 32, H 8, Dh 128): ms at depth 0 / depth {hi}, of_copy at 0")
    for tile in dict.fromkeys(r["tile"] for r in sweep):
        cells = []
        for splits in dict.fromkeys(r["splits"] for r in sweep):
            d0 = next((r for r in sweep if (r["tile"], r["splits"], r["depth"]) == (tile, splits, 0)), None)
            d4 = next((r for r in sweep if (r["tile"], r["splits"], r["depth"]) == (tile, splits, hi)), None)
            if d0 and d4:
                cells.append(f"{splits}: {d0['ms']:.3f}/{d4['ms']:.3f} ({100 * d0['fraction_of_copy']:.0f}%)")
        print(f"  tile {tile:>10}  " + "  ".join(cells))

# decode2: the regs decode kernel ("new", DUA_DECODE_KERNEL=regs) against the staged one ("v1",
# DUA_DECODE_KERNEL=staged) from one call, next to FlexAttention's decode; new-half1/2 are the other fp16
# conversions (DUA_DECODE_HALF)
dua2, peers2 = load("dua_decode2.jsonl"), load("peers_decode2.jsonl")
if dua2:
    print("\n== decode2: dua sparse ms, previous kernel (v1) vs new; GB/s and of_copy of new | flex, flex/new")
    print(f"{'n':>6} {'H/Hkv':>6} {'dtype':>5} {'depth':>5} {'v1':>8} {'new':>8} {'new/v1':>6} {'GB/s':>7} "
          f"{'of_copy':>7} {'x_dense':>7} {'ideal':>6} {'half1':>8} {'half2':>8} | {'flex':>8} {'flex/new':>8}")
    rows = [r for r in dua2 if r["variant"] == "dua_sparse_decode" and "ms" in r]
    keys = list(dict.fromkeys((r["n"], r["heads"], r["kv_heads"], r["dtype"], r["depth"]) for r in rows))
    for key in keys:
        def get(kernel):
            return next((r for r in rows if r["kernel"] == kernel and
                         (r["n"], r["heads"], r["kv_heads"], r["dtype"], r["depth"]) == key), None)
        v1, new, h1, h2 = get("v1"), get("new"), get("new-half1"), get("new-half2")
        if not new:
            continue
        flex = next((p["ms"] for p in peers2 if p["peer"] == "flex_decode" and (p["n"], p["dtype"], p["depth"])
                     == (key[0], key[3], key[4]) and p["heads"] == key[2]), float("nan"))
        nan = float("nan")
        print(f"{key[0]:6d} {str(key[1]) + '/' + str(key[2]):>6} {key[3]:>5} {key[4]:5d} "
              f"{v1['ms'] if v1 else nan:8.4f} {new['ms']:8.4f} {(v1['ms'] / new['ms']) if v1 else nan:6.2f} "
              f"{new['gbps']:7.1f} {100 * new['fraction_of_copy']:6.1f}% {new['speedup_vs_dense']:7.2f} "
              f"{new['ideal_speedup']:6.2f} {h1['ms'] if h1 else nan:8.4f} {h2['ms'] if h2 else nan:8.4f} | "
              f"{flex:8.4f} {flex / new['ms']:8.2f}")
sweep2 = load("decode2_sweep.jsonl")
if sweep2:
    print("\n== decode2 sweep (new kernel, n 16384, B 32, H 8, Dh 128): ms at depth 0 / depth 4, of_copy at 0")
    for dt, tile, splits in dict.fromkeys((r["dtype"], r["tile"], r["splits"]) for r in sweep2):
        d0 = next((r for r in sweep2 if (r["dtype"], r["tile"], r["splits"], r["depth"]) == (dt, tile, splits, 0)),
                  None)
        d4 = next((r for r in sweep2 if (r["dtype"], r["tile"], r["splits"], r["depth"]) == (dt, tile, splits, 4)),
                  None)
        if d0 and d4:
            print(f"  {dt} tile {tile:>10} splits {splits:>4}: {d0['ms']:.4f} / {d4['ms']:.4f} "
                  f"({100 * d0['fraction_of_copy']:.1f}%)")

# decode3: the per-case kernel choice (defaults) and, for heads 8, the kernel not chosen (tag staged or regs)
dua3 = load("dua_decode3.jsonl")
if dua3:
    print("\n== decode3: dua sparse ms with the default choice (regs: fp16 one row per work-group; staged: the "
          "rest) | the other kernel, other/default")
    print(f"{'n':>6} {'H/Hkv':>6} {'dtype':>5} {'depth':>5} {'default':>8} {'GB/s':>7} {'of_copy':>7} "
          f"{'x_dense':>7} {'ideal':>6} | {'other':>6} {'ms':>8} {'oth/def':>7}")
    rows = [r for r in dua3 if r["variant"] == "dua_sparse_decode" and "ms" in r]
    for r in (r for r in rows if r["kernel"] == "default"):
        key = (r["n"], r["heads"], r["kv_heads"], r["dtype"], r["depth"])
        o = next((x for x in rows if x["kernel"] != "default" and
                  (x["n"], x["heads"], x["kv_heads"], x["dtype"], x["depth"]) == key), None)
        nan = float("nan")
        print(f"{r['n']:6d} {str(r['heads']) + '/' + str(r['kv_heads']):>6} {r['dtype']:>5} {r['depth']:5d} "
              f"{r['ms']:8.4f} {r['gbps']:7.1f} {100 * r['fraction_of_copy']:6.1f}% {r['speedup_vs_dense']:7.2f} "
              f"{r['ideal_speedup']:6.2f} | {o['kernel'] if o else '-':>6} {o['ms'] if o else nan:8.4f} "
              f"{(o['ms'] / r['ms']) if o else nan:7.2f}")
