#!/bin/sh
# dua-tune on a tiny forward problem (a few candidates, well under a minute on PoCL): writes a tuning
# database entry that dua-info then reports as the source ("file <path>"); merges a second entry into the
# same file; refuses to overwrite a malformed database; refuses bad arguments.
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
echo "$out" | grep "fp32 head_dim  64" | grep -q "file $db" ||
  { echo "dua-info does not show the database as the source:"; echo "$out"; exit 1; }
echo "$out" | grep "fp32 head_dim  32" | grep -q "built-in\|generic" ||
  { echo "head_dim 32 should still come from the compiled defaults"; exit 1; }
# a second entry (fp16) merges into the same file
"$tune" --dtype fp16 --dim 64 --n 64 --depth 0 --heads 1 --fraction 0.001 --reps 1 --out "$db" >/dev/null
python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["entries"]; assert sorted(x["dtype"] for x in e) == ["fp16", "fp32"], e' "$db"
# a malformed database is neither used nor overwritten
printf '{"format": "dua-tuning", "version": 1, "entries": [' >"$dir/bad.json"
if "$tune" --n 64 --fraction 0.001 --out "$dir/bad.json" >/dev/null 2>"$dir/err.txt"; then
  echo "dua-tune overwrote a malformed database"; exit 1
fi
grep -q "not valid JSON" "$dir/err.txt" || { echo "unclear refusal: $(cat "$dir/err.txt")"; exit 1; }
DUA_TUNING_FILE="$dir/bad.json" "$info" | grep -q "REFUSED" || { echo "dua-info hides a refused database"; exit 1; }
if "$tune" --fraction 2 >/dev/null 2>&1; then echo "--fraction 2 was accepted"; exit 1; fi
if "$tune" --kernel bwd >/dev/null 2>&1; then echo "--kernel bwd was accepted"; exit 1; fi
if "$tune" --bogus >/dev/null 2>&1; then echo "an unknown flag was accepted"; exit 1; fi
echo "dua-tune ok"
