#!/bin/sh
# dua-run on a checkpoint dua-train trains for a few steps: eval prints the same loss and accuracy as
# dua-train --eval-only, both columns and valid JSON; generate prints the prompt, the new tokens and the
# K/V figures, text and JSON; bad files and bad arguments exit 1 or 2 with a message (never a crash).
set -eu
train=$1
run=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$train" --task dyck --mode native --steps 12 --warmup 2 --seed 3 --layers 2 --width 64 --heads 2 \
  --seq-len 64 --batch 4 --test-size 16 --gate-init 3 --hard-frac 0.5 --window 3 --shift-alternate 1 \
  --out "$dir/m" --quiet >"$dir/train.log"

# eval: the trainer's numbers, sparse and dense columns, JSON
ref=$("$train" --resume "$dir/m" --eval-only | sed -n 's/.*test loss \([0-9.]*\) accuracy \([0-9.]*\).*/\1 \2/p')
"$run" eval "$dir/m" --reps 2 >"$dir/eval.txt"
cat "$dir/eval.txt"
got=$(awk '/^test loss/ {l = $3} /^test accuracy/ {a = $3} END {print l, a}' "$dir/eval.txt")
[ "$ref" = "$got" ] || { echo "dua-run eval gives loss/accuracy $got, dua-train --eval-only $ref"; exit 1; }
grep -q "sparse (routing)" "$dir/eval.txt" && grep -q "dense" "$dir/eval.txt" || { echo "missing a column"; exit 1; }
grep -q "layer 1: depths" "$dir/eval.txt" || { echo "no per-layer routing"; exit 1; }
"$run" eval "$dir/m/model.ckpt" --dense --json --reps 2 | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert "dense" in d and "sparse" not in d, d.keys()
assert d["dense"]["density"] == 1.0 and d["dense"]["forward_ms_per_batch"] > 0
assert len(d["layers"]) == 2 and len(d["layers"][0]["depths"]) == 2
print("eval json ok")'
"$run" eval "$dir/m" --routing "$dir/m/routing.json" --sparse --reps 1 | grep -q "test accuracy"

# causal: earlier logits identical bit for bit when later tokens change (routing and dense), JSON too
"$run" causal "$dir/m" --examples 2 --cuts 3 | grep -q "^causality: 12 checks .* 0 failed" || { echo "causal failed"; exit 1; }
"$run" causal "$dir/m" --examples 1 --cuts 2 --sparse --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["causal"] is True and d["checks"] == 2 and d["failures"] == 0 and d["later_changed"] >= 1, d
print("causal json ok")'

# a resumed run written to a new directory starts its logs with their headers (and appends without one)
"$train" --resume "$dir/m" --steps 14 --out "$dir/m2" --quiet >/dev/null
head -1 "$dir/m2/train.csv" | grep -q "^step,phase,loss" || { echo "train.csv of a resumed run has no header"; exit 1; }
head -1 "$dir/m2/eval.csv" | grep -q "^step,test_loss" || { echo "eval.csv of a resumed run has no header"; exit 1; }
[ "$(grep -c '^step' "$dir/m/train.csv")" = 1 ] || { echo "train.csv has more than one header"; exit 1; }

# generate: text and JSON
"$run" generate "$dir/m" --prompt-test 1 --new 5 >"$dir/gen.txt"
cat "$dir/gen.txt"
for want in "prompt (test example 1" "generated (5 tokens" "expected first token" "K/V read per decode step" \
  "tokens/s"; do
  grep -q "$want" "$dir/gen.txt" || { echo "generate printed no \"$want\""; exit 1; }
done
"$run" generate "$dir/m" --prompt "( [ ] (" --new 3 --temperature 0.7 --top-k 2 --seed 5 --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["prompt"] == ["(", "[", "]", "("], d["prompt"]
assert len(d["generated"]) == 3 and d["decode_steps"] == 2
assert 0 < d["kv_bytes_per_token"] <= d["dense_kv_bytes_per_token"]
print("generate json ok")'

# failures: exit status and message
fails() { # expected status, message pattern, command...
  want=$1
  pattern=$2
  shift 2
  set +e
  "$@" >"$dir/out" 2>"$dir/err"
  rc=$?
  set -e
  [ "$rc" -eq "$want" ] || { echo "exit $rc (want $want): $*"; cat "$dir/err"; exit 1; }
  grep -qi -- "$pattern" "$dir/err" || { echo "no \"$pattern\" in the message of: $*"; cat "$dir/err"; exit 1; }
}
fails 2 "expected a command" "$run"
fails 2 "unknown command" "$run" train "$dir/m"
fails 2 "expected a directory" "$run" eval --json
fails 2 "unknown option" "$run" eval "$dir/m" --bogus
fails 2 "unknown option --new for causal" "$run" causal "$dir/m" --new 3
fails 2 "--examples 0" "$run" causal "$dir/m" --examples 0
fails 2 "integer in 1" "$run" eval "$dir/m" --reps 0
fails 2 "exclude" "$run" eval "$dir/m" --sparse --dense
fails 2 "exactly one" "$run" generate "$dir/m"
fails 2 "exactly one" "$run" generate "$dir/m" --prompt "(" --prompt-test 1
fails 2 "unknown token" "$run" generate "$dir/m" --prompt "( foo"
fails 2 "no token" "$run" generate "$dir/m" --prompt "   "
fails 2 "test set has 16" "$run" generate "$dir/m" --prompt-test 16
fails 2 "seq_len" "$run" generate "$dir/m" --prompt "( (" --new 63
fails 2 "number >= 0" "$run" generate "$dir/m" --prompt "(" --temperature -1
fails 2 "top_k" "$run" generate "$dir/m" --prompt "(" --top-k 9
fails 2 "needs a value" "$run" generate "$dir/m" --prompt
fails 1 "No such file" "$run" eval "$dir/none"
fails 1 "no device" "$run" eval "$dir/m" --device no-such-device-xyz
cp "$dir/m/model.ckpt" "$dir/bad.ckpt"
python3 -c '
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0x20
open(p, "wb").write(b)' "$dir/bad.ckpt"
fails 1 "checksum\|corrupt\|damaged\|sha" "$run" eval "$dir/bad.ckpt"
python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
d["seq_len"] = 128
json.dump(d, open(sys.argv[2], "w"))' "$dir/m/routing.json" "$dir/r128.json"
fails 1 "does not match the checkpoint" "$run" eval "$dir/m" --routing "$dir/r128.json"
fails 1 "routing" "$run" generate "$dir/m" --prompt "(" --routing "$dir/none.json"
"$run" --help | grep -q -- "--prompt-test" || { echo "--help does not document --prompt-test"; exit 1; }

# content routing: a router picks every block's path; eval equals dua-train's, the model is causal as it runs
# (tokens after random cuts change no earlier logit), the routing file says "tree": "content", generation
# routes each block as its first token arrives and reads less K/V than dense (and works dense)
"$train" --task dyck-lm --mode content --steps 12 --warmup 2 --seed 4 --layers 2 --width 64 --heads 2 \
  --seq-len 128 --block 16 --batch 4 --test-size 8 --gate-init 1 --hard-frac 0.5 --density-weight 1 \
  --density-target 0.3 --balance-weight 0.1 --out "$dir/c" --quiet >"$dir/ctrain.log"
head -1 "$dir/c/train.csv" | grep -q ",balance_loss$" || { echo "content train.csv has no balance_loss"; exit 1; }
grep -q '"tree": "content"' "$dir/c/routing.json" || { echo "routing.json does not say content"; exit 1; }
ref=$("$train" --resume "$dir/c" --eval-only | sed -n 's/.*test loss \([0-9.]*\) accuracy \([0-9.]*\).*/\1 \2/p')
"$run" eval "$dir/c" --reps 1 >"$dir/ceval.txt"
got=$(awk '/^test loss/ {l = $3} /^test accuracy/ {a = $3} END {print l, a}' "$dir/ceval.txt")
[ "$ref" = "$got" ] || { echo "content: dua-run eval gives $got, dua-train --eval-only $ref"; exit 1; }
grep -q "content mode" "$dir/ceval.txt" || { echo "dua-run eval does not name content mode"; exit 1; }
"$run" causal "$dir/c" --examples 3 --cuts 4 | grep -q "^causality: 24 checks .* 0 failed" ||
  { echo "content model: causal failed"; exit 1; }
"$run" generate "$dir/c" --prompt-test 1 --new 40 --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["routing"] == "sparse" and len(d["generated"]) == 40 and d["decode_steps"] == 39, d
assert 0 < d["kv_bytes_per_token"] < d["dense_kv_bytes_per_token"], d
print("content generate json ok")' || { echo "content generate"; exit 1; }
"$run" generate "$dir/c" --prompt-test 1 --new 2 --dense | grep -q "generated" || { echo "dense generate"; exit 1; }
"$train" --help | grep -q -- "--balance-weight" || { echo "--help does not document --balance-weight"; exit 1; }
"$train" --help | grep -q -- "--density-scope *layer | model" || { echo "--help does not document --density-scope"; exit 1; }
"$train" --help | grep -q -- "--balance-scope *content: batch | sequence" || { echo "--help does not document --balance-scope"; exit 1; }
"$train" --help | grep -q -- "--density-estimate *sampled | deterministic | extracted" || { echo "--help does not document --density-estimate"; exit 1; }
"$train" --help | grep -q -- "--router-input *content: token | token+position" || { echo "--help does not document --router-input"; exit 1; }
echo "dua-run ok"
