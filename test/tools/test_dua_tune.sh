#!/bin/sh
# dua-tune on tiny problems (a candidate or two each, seconds on PoCL): the forward writes a tuning database
# entry that dua-info then reports as the source ("file <path>"); the backward and the decode (both plan
# classes, with the split-KV thresholds) merge their entries into the same file and dua-info reports them
# too; the warp kernel joins the decode space with DUA_TUNING_EMULATED_WARP=1 (or natively) and a database's
# warp plan is shown as "warp" where it can be used and skipped elsewhere; causal shapes (--causal 0 1) are
# recorded; the tensor-core forward (fwd_mma) is refused clearly where it does not run and tuned where it runs
# natively or emulated (DUA_TUNING_EMULATED_MMA=1: fp16, N 256, 2 heads; its programs are those test_tuning
# built); a malformed database is refused and not overwritten; bad arguments and a set developer override are
# refused.
set -eu
tune=$1
info=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
db=$dir/sub/tuning.json
"$tune" --kernel fwd --dtype fp32 --dim 64 --n 128 --depth 0 --heads 1 --fraction 0.004 --seed 3 --reps 1 \
  --out "$db" >"$dir/out.txt"
cat "$dir/out.txt"
grep -q "^best " "$dir/out.txt" || { echo "dua-tune printed no best configuration"; exit 1; }
python3 - "$db" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["format"] == "dua-tuning" and d["version"] == 1, d
e = d["entries"]
assert len(e) == 1 and e[0]["kernel"] == "fwd" and e[0]["dtype"] == "fp32" and e[0]["head_dim"] == 64, e
assert set(e[0]["params"]) == {"bm", "bn", "tm", "tn"}, e[0]["params"]
assert e[0]["best_ms"] > 0 and e[0]["default_ms"] >= e[0]["best_ms"] * 0.999, e[0]
assert e[0]["shapes"][0]["n"] == 128
print("database ok:", e[0]["params"], e[0]["best_ms"], "ms vs default", e[0]["default_ms"], "ms")
PY
out=$(DUA_TUNING_FILE="$db" "$info")
echo "$out" | grep "fwd  *fp32 head_dim  64" | grep -q "file $db" ||
  { echo "dua-info does not show the database as the source:"; echo "$out"; exit 1; }
echo "$out" | grep "fwd  *fp32 head_dim  32" | grep -q "built-in\|generic" ||
  { echo "head_dim 32 should still come from the compiled defaults"; exit 1; }
# a second entry (fp16, non-causal and causal shapes) merges into the same file
"$tune" --dtype fp16 --dim 64 --n 64 --depth 0 --heads 1 --causal 0 1 --fraction 0.001 --reps 1 --out "$db" >/dev/null
python3 - "$db" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))["entries"]
assert sorted(x["dtype"] for x in e) == ["fp16", "fp32"], e
s = [x for x in e if x["dtype"] == "fp16"][0]["shapes"]
assert [x.get("causal", 0) for x in s] == [0, 1] and "causal" not in s[0], s
PY
# the backward's tile
"$tune" --kernel bwd --dtype fp32 --dim 32 --n 64 --depth 0 --heads 1 --block 32 --fraction 0.005 --reps 1 \
  --out "$db" >"$dir/bwd.txt"
cat "$dir/bwd.txt"
grep -q "^entry       bwd" "$dir/bwd.txt" || { echo "no bwd entry reported"; exit 1; }
# the decode: one row per work-group ("decode") and GQA ("decode_gqa"), each with the split thresholds
"$tune" --kernel decode --dtype fp32 --dim 32 --n 64 --depth 0 --batch 2 --heads 2 --fraction 0.02 --reps 1 \
  --out "$db" >"$dir/dec.txt"
cat "$dir/dec.txt"
"$tune" --kernel decode --dtype fp16 --dim 32 --n 64 --block 32 --depth 0 1 --batch 1 --heads 4 --kv-heads 2 \
  --fraction 0.001 --reps 1 --out "$db" >"$dir/gqa.txt"
cat "$dir/gqa.txt"
grep -q "^overall " "$dir/gqa.txt" || { echo "no overall decode figure"; exit 1; }
python3 - "$db" <<'PY'
import json, sys
e = {(x["kernel"], x["dtype"], x["head_dim"]): x for x in json.load(open(sys.argv[1]))["entries"]}
want = {("fwd", "fp32", 64), ("fwd", "fp16", 64), ("bwd", "fp32", 32), ("decode", "fp32", 32),
        ("decode_split", "fp32", 32), ("decode_gqa", "fp16", 32), ("decode_split", "fp16", 32)}
assert set(e) == want, sorted(e)
assert set(e[("bwd", "fp32", 32)]["params"]) == {"bm", "bn", "tm", "tn"}
assert set(e[("decode", "fp32", 32)]["params"]) == {"staged", "tile", "threads"}
assert set(e[("decode_gqa", "fp16", 32)]["params"]) == {"staged", "tile", "threads", "rows"}
assert set(e[("decode_split", "fp16", 32)]["params"]) == {"waves", "minunit", "maxspl"}
s = e[("decode_gqa", "fp16", 32)]["shapes"]
assert len(s) == 2 and s[1]["depth"] == 1 and s[0]["kv_heads"] == 2 and s[0]["tokens"] == 1 and s[0]["page"] == 16, s
for x in e.values():
    assert x["best_ms"] <= x["default_ms"] * 1.0001 and x["candidates"] >= 1, x
print("database ok:", len(e), "entries")
PY
out=$(DUA_TUNING_FILE="$db" "$info")
for k in "bwd  *fp32 head_dim  32" "decode  *fp32 head_dim  32" "decode_split  *fp32 head_dim  32" \
  "decode_gqa  *fp16 head_dim  32" "decode_split  *fp16 head_dim  32"; do
  echo "$out" | grep "$k" | grep -q "file $db" || { echo "dua-info: \"$k\" not from the database:"; echo "$out"; exit 1; }
done
echo "$out" | grep "decode_gqa  *fp32 head_dim  32" | grep -q "built-in\|generic" ||
  { echo "decode_gqa fp32 should come from the compiled defaults"; exit 1; }
# the warp kernel: in the decode space only where it runs natively, or emulated with
# DUA_TUNING_EMULATED_WARP=1; a database's warp plan is used there (dua-info names the kernel) and skipped
# elsewhere
space() { tr '\r' '\n' <"$1" | sed -n 's/.*(\([0-9]*\) in the space).*/\1/p' | head -1; }
"$tune" --kernel decode --dtype fp32 --dim 32 --n 64 --depth 0 --batch 1 --heads 2 --fraction 0.01 --reps 1 \
  --out "$dir/nowarp.json" >/dev/null 2>"$dir/nowarp.txt"
DUA_TUNING_EMULATED_WARP=1 "$tune" --kernel decode --dtype fp32 --dim 32 --n 64 --depth 0 --batch 1 --heads 2 \
  --fraction 0.01 --reps 1 --out "$dir/warp.json" >/dev/null 2>"$dir/warp.txt"
nowarp=$(space "$dir/nowarp.txt")
withwarp=$(space "$dir/warp.txt")
native=$("$info" --json | python3 -c 'import json,sys; d=json.load(sys.stdin)["devices"][0]; print(int(d["nv_mma_f16"] and "NVIDIA" in d["vendor"]))')
echo "decode space: $nowarp plans, $withwarp with DUA_TUNING_EMULATED_WARP=1 (native warp: $native)"
if [ "$native" = 0 ] && [ "$withwarp" -le "$nowarp" ]; then echo "no warp candidates with DUA_TUNING_EMULATED_WARP=1"; exit 1; fi
"$info" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)["devices"][0]
shape = {"n": 64, "depth": 0, "block": 128, "batch": 1, "heads": 2, "best_ms": 1.0, "default_ms": 1.0,
         "kv_heads": 2, "tokens": 1, "page": 16}
e = {"kernel": "decode", "dtype": "fp32", "head_dim": 32, "device": d["name"], "vendor": d["vendor"],
     "driver": d["driver_version"], "date": "2026-11-27T00:00:00Z", "params": {"staged": 2, "tile": 4, "threads": 64},
     "best_ms": 1.0, "default_ms": 1.0, "tuning_s": 1.0, "candidates": 1, "shapes": [shape]}
json.dump({"format": "dua-tuning", "version": 1, "entries": [e]}, open(sys.argv[1], "w"))' "$dir/wdb.json"
line=$(DUA_TUNING_EMULATED_WARP=1 DUA_TUNING_FILE="$dir/wdb.json" "$info" | grep "^    decode  *fp32 head_dim  32 ")
echo "$line" | grep -q "warp,4,64  file $dir/wdb.json" || { echo "dua-info: no warp plan from the database: $line"; exit 1; }
if [ "$native" = 0 ]; then
  line=$(DUA_TUNING_FILE="$dir/wdb.json" "$info" | grep "^    decode  *fp32 head_dim  32 ")
  echo "$line" | grep -q "built-in\|generic" || { echo "dua-info: an emulated warp plan was not skipped: $line"; exit 1; }
fi
# the tensor-core forward: refused clearly where it does not run; tuned natively or emulated
if [ "$native" = 0 ]; then
  if "$tune" --kernel fwd_mma --dtype fp16 --dim 64 --n 256 --out "$dir/mma.json" >/dev/null 2>"$dir/err.txt"; then
    echo "dua-tune --kernel fwd_mma ran on a device without the kernel"; exit 1
  fi
  grep -q "nothing to tune on .*needs NVIDIA inline PTX" "$dir/err.txt" || { echo "unclear refusal: $(cat "$dir/err.txt")"; exit 1; }
  [ ! -e "$dir/mma.json" ] || { echo "a refused fwd_mma run wrote a database"; exit 1; }
fi
DUA_TUNING_EMULATED_MMA=1 "$tune" --kernel fwd_mma --dtype fp16 --dim 64 --n 256 --depth -1 --causal 0 1 --heads 2 \
  --reps 1 --warmup 0 --out "$db" >"$dir/mma.txt" 2>"$dir/mma_err.txt" ||
  { cat "$dir/mma_err.txt"; exit 1; }
cat "$dir/mma.txt"
grep -q "^entry       fwd_mma" "$dir/mma.txt" || { echo "no fwd_mma entry reported"; exit 1; }
grep -q "N    256 depth -1 batch   1 causal" "$dir/mma.txt" || { echo "no causal problem reported"; exit 1; }
python3 - "$db" <<'PY'
import json, sys
e = {(x["kernel"], x["dtype"], x["head_dim"]): x for x in json.load(open(sys.argv[1]))["entries"]}
m = e[("fwd_mma", "fp16", 64)]
assert set(m["params"]) == {"mt", "mt_cs"} and all(v in (1, 2) for v in m["params"].values()), m
assert [s.get("causal", 0) for s in m["shapes"]] == [0, 1], m["shapes"]
assert m["best_ms"] <= m["default_ms"] * 1.0001 and m["candidates"] >= 1, m
assert ("fwd", "fp32", 64) in e and ("decode", "fp32", 32) in e  # merged, nothing lost
print("fwd_mma entry ok:", m["params"])
PY
if [ "$native" = 1 ]; then
  DUA_TUNING_FILE="$db" "$info" | grep "^    fwd_mma  *fp16 head_dim  64 " | grep -q "file $db" ||
    { echo "dua-info: fwd_mma not from the database"; exit 1; }
fi
if DUA_MMA_MT=2 "$tune" --kernel fwd_mma --out "$dir/x.json" >/dev/null 2>"$dir/err.txt"; then
  echo "dua-tune ran under DUA_MMA_MT"; exit 1
fi
grep -q "DUA_MMA_MT" "$dir/err.txt" || { echo "unclear refusal: $(cat "$dir/err.txt")"; exit 1; }
if "$tune" --causal 2 --out "$dir/x.json" >/dev/null 2>&1; then echo "--causal 2 was accepted"; exit 1; fi
if "$tune" --kernel decode --causal 1 --out "$dir/x.json" >/dev/null 2>&1; then echo "decode --causal was accepted"; exit 1; fi
# a malformed database is neither used nor overwritten
printf '{"format": "dua-tuning", "version": 1, "entries": [' >"$dir/bad.json"
if "$tune" --n 64 --fraction 0.001 --out "$dir/bad.json" >/dev/null 2>"$dir/err.txt"; then
  echo "dua-tune overwrote a malformed database"; exit 1
fi
grep -q "not valid JSON" "$dir/err.txt" || { echo "unclear refusal: $(cat "$dir/err.txt")"; exit 1; }
DUA_TUNING_FILE="$dir/bad.json" "$info" | grep -q "REFUSED" || { echo "dua-info hides a refused database"; exit 1; }
if "$tune" --fraction 2 >/dev/null 2>&1; then echo "--fraction 2 was accepted"; exit 1; fi
if "$tune" --kernel attn >/dev/null 2>&1; then echo "--kernel attn was accepted"; exit 1; fi
if "$tune" --kernel decode --heads 3 --kv-heads 2 >/dev/null 2>&1; then echo "--kv-heads 2 of 3 was accepted"; exit 1; fi
if DUA_DECODE_TILE=32,128,16 "$tune" --kernel decode --out "$dir/x.json" >/dev/null 2>"$dir/err.txt"; then
  echo "dua-tune ran under a developer override"; exit 1
fi
grep -q "DUA_DECODE_TILE" "$dir/err.txt" || { echo "unclear refusal: $(cat "$dir/err.txt")"; exit 1; }
if "$tune" --bogus >/dev/null 2>&1; then echo "an unknown flag was accepted"; exit 1; fi
echo "dua-tune ok"
