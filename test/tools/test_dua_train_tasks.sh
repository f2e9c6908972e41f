#!/bin/sh
# dua-train and dua-run on the tasks listops-paper, dyck-lm and text, end to end at a tiny size: training
# runs and writes its outputs; dua-run eval prints dua-train --eval-only's numbers (and closer accuracy for
# dyck-lm); the text checkpoint records its corpus: a moved corpus is refused at the recorded path and
# accepted with --text NEW, a changed one is refused; bad corpora and flags exit with a message naming the
# problem; generate prints bytes as text.
set -eu
train=$1
run=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
small="--layers 1 --width 64 --heads 2 --batch 2 --steps 2 --warmup 1 --quiet"

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

# eval equal: dua-run eval's loss and accuracy = dua-train --eval-only's
same_eval() { # dir [--text FILE]
  d=$1
  shift
  ref=$("$train" --resume "$d" --eval-only "$@" | sed -n 's/.*test loss \([0-9.]*\) accuracy \([0-9.]*\).*/\1 \2/p')
  "$run" eval "$d" --sparse --reps 1 "$@" >"$dir/eval.txt"
  got=$(awk '/^test loss/ {l = $3} /^test accuracy/ {a = $3} END {print l, a}' "$dir/eval.txt")
  [ -n "$ref" ] && [ "$ref" = "$got" ] || { echo "dua-run eval gives $got, dua-train --eval-only $ref"; exit 1; }
}

# listops-paper
"$train" --task listops-paper --seq-len 64 --block 16 --test-size 50 $small --out "$dir/lp" >/dev/null
grep -q '"task": "listops-paper"' "$dir/lp/result.json" || { echo "result.json: no listops-paper"; exit 1; }
same_eval "$dir/lp"

# dyck-lm
"$train" --task dyck-lm --seq-len 256 --block 32 --dyck-depth 16 --test-size 8 $small --out "$dir/lm" >/dev/null
same_eval "$dir/lm"
grep -q "^closer accuracy" "$dir/eval.txt" || { echo "dua-run eval: no closer accuracy for dyck-lm"; exit 1; }
"$run" generate "$dir/lm" --prompt-test 2 --new 6 >"$dir/gen.txt"
grep -q "prompt (test example 2, 128 tokens)" "$dir/gen.txt" && grep -q "test example continues" "$dir/gen.txt" ||
  { echo "dyck-lm generate: no half-example prompt"; cat "$dir/gen.txt"; exit 1; }
fails 1 "even seq_len" "$train" --task dyck-lm --seq-len 255 $small --out "$dir/x"
fails 1 "dyck_max_depth = 200" "$train" --task dyck-lm --seq-len 256 --dyck-depth 200 $small --out "$dir/x"

# text: a UTF-8 corpus with 2-, 3- and 4-byte characters
python3 -c '
import random, sys
r = random.Random(5)
words = ["the", "and", "caf\u00e9", "na\u00efve", "\u65e5\u672c", "\U0001d11e", "\u20ac", "tree", "block"]
out = []
n = 0
while n < 30000:
    w = r.choice(words) + (" " if r.random() < 0.9 else "\n")
    out.append(w)
    n += len(w.encode())
open(sys.argv[1], "w", encoding="utf-8").write("".join(out))' "$dir/corpus.txt"
"$train" --task text --text "$dir/corpus.txt" --seq-len 64 --block 16 --test-size 20 $small --out "$dir/tx" \
  >"$dir/train.log"
grep -q "^corpus .*corpus.txt: [0-9]* bytes" "$dir/train.log" || { echo "no corpus line"; cat "$dir/train.log"; exit 1; }
python3 -c '
import hashlib, json, sys
d = json.load(open(sys.argv[1] + "/tx/result.json"))
data = open(sys.argv[1] + "/corpus.txt", "rb").read()
c = d["corpus"]
assert d["task"] == "text" and c["bytes"] == len(data) and c["sha256"] == hashlib.sha256(data).hexdigest(), c
assert c["train_bytes"] + c["heldout_bytes"] == len(data) and c["path"].startswith("/"), c
assert d["scored"] == 20 * 64, d["scored"]
print("text result.json ok")' "$dir"
same_eval "$dir/tx"
"$run" generate "$dir/tx" --prompt "caf$(printf '\303\251') " --new 5 >"$dir/gen.txt"
grep -q "^prompt (6 tokens): \"caf$(printf '\303\251') \"" "$dir/gen.txt" ||
  { echo "text generate: prompt not shown as text"; cat "$dir/gen.txt"; exit 1; }
"$run" generate "$dir/tx" --prompt-test 1 --new 4 --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert len(d["prompt"]) == 32 and len(d["generated"]) == 4 and len(d["expected"]) == 4, d
assert isinstance(d["generated_text"], str) and isinstance(d["prompt_text"], str)
print("text generate json ok")'
# moved corpus: refused at the recorded path, accepted with --text; a resumed run records the new path
mv "$dir/corpus.txt" "$dir/moved.txt"
fails 1 "give its new path" "$train" --resume "$dir/tx" --eval-only
fails 1 "give its new path" "$run" eval "$dir/tx"
same_eval "$dir/tx" --text "$dir/moved.txt"
"$train" --resume "$dir/tx" --steps 3 --text "$dir/moved.txt" --quiet >/dev/null
"$train" --resume "$dir/tx" --eval-only | grep -q "^corpus .*moved.txt" || { echo "new path not recorded"; exit 1; }
# changed corpus: refused, naming both files
cp "$dir/moved.txt" "$dir/changed.txt"
printf 'x' >>"$dir/changed.txt"
fails 1 "not the file the checkpoint was trained on" "$run" eval "$dir/tx" --text "$dir/changed.txt"
fails 1 "not the file the checkpoint was trained on" "$train" --resume "$dir/tx" --eval-only --text "$dir/changed.txt"
fails 1 "reads none" "$run" eval "$dir/lm" --text "$dir/moved.txt"
# bad corpora and flags
printf 'abc\377def' >"$dir/bad.txt"
head -c 2000 "$dir/moved.txt" >>"$dir/bad.txt"
fails 1 "byte offset 3" "$train" --task text --text "$dir/bad.txt" --seq-len 64 $small --out "$dir/x"
head -c 400 "$dir/moved.txt" | tr -c 'a-z' 'a' >"$dir/tiny.txt"
fails 1 "too small" "$train" --task text --text "$dir/tiny.txt" --seq-len 64 --test-size 1 $small --out "$dir/x"
fails 1 "at most" "$train" --task text --text "$dir/moved.txt" --seq-len 64 --test-size 5000 $small --out "$dir/x"
fails 1 "cannot open" "$train" --task text --text "$dir/none.txt" --seq-len 64 $small --out "$dir/x"
fails 2 "needs --text" "$train" --task text --seq-len 64 $small --out "$dir/x"
fails 2 "only --task text" "$train" --task dyck --text "$dir/moved.txt" $small --out "$dir/x"
fails 2 "not a valid value" "$train" --task lisptops $small --out "$dir/x"
help=$("$train" --help)
for want in "listops-paper" "dyck-lm" "text" "--text FILE"; do
  echo "$help" | grep -q -- "$want" || { echo "dua-train --help does not mention $want"; exit 1; }
done
"$run" --help | grep -q -- "--text FILE" || { echo "dua-run --help does not document --text"; exit 1; }
echo "dua-train tasks ok"
