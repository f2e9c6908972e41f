#!/bin/sh
# dua-bench: a small sweep (fp16 and fp32, forward and fwdbwd) checked against the CPU reference writes one
# valid JSON line per variant with its time, its check and the kernels it launched (kernel_fwd, kernel_bwd:
# the library's plan, build options included); a bad flag value fails, naming the value.
set -eu
bench=$1
out=$("$bench" --n 256 --batch 1 --heads 2 --dim 64 --block 64 --depth 1 --dtype fp16 fp32 --causal --check \
  --warmup 1 --min-time 0.01 --json - 2>/tmp/dua-bench-test.$$.err) ||
  { cat /tmp/dua-bench-test.$$.err; rm -f /tmp/dua-bench-test.$$.err; exit 1; }
grep -q "forward: " /tmp/dua-bench-test.$$.err || { echo "no kernel line in the table"; exit 1; }
rm -f /tmp/dua-bench-test.$$.err
echo "$out" | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
assert len(rows) == 6, len(rows)  # 2 dtypes x (sparse, dense, naive)
for r in rows:
    assert r["pass_"] == "fwd" and r["n"] == 256 and r["causal"] is True, r
    assert r["ms"] > 0 and r["checked"], r
    k = r["kernel_fwd"]
    if r["variant"] == "naive":
        assert k.startswith("naive baseline"), k
    else:
        assert "dua_attn_fwd" in k and "-DHEAD_DIM=64" in k, k
        assert ("-DDUA_FP16=1" in k) == (r["dtype"] == "fp16"), (r["dtype"], k)
    assert "kernel_bwd" not in r, r
'
out=$("$bench" --n 256 --batch 1 --heads 2 --dim 64 --block 64 --depth 1 --dtype fp16 --pass fwdbwd --no-naive \
  --warmup 1 --min-time 0.01 --json -)
echo "$out" | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
ran = [r for r in rows if "ms" in r]
assert len(ran) == 2, rows
for r in ran:
    assert r["pass_"] == "fwdbwd" and "dua_attn_fwd" in r["kernel_fwd"], r
    assert "dua_attn_bwd" in r["kernel_bwd"], r
'
if "$bench" --n 256 --dim 65 >/dev/null 2>/tmp/dua-bench-test.$$.err; then
  echo "--dim 65 was accepted"; rm -f /tmp/dua-bench-test.$$.err; exit 1
fi
grep -q -- "--dim.*65" /tmp/dua-bench-test.$$.err || { echo "the error does not name 65:"; cat /tmp/dua-bench-test.$$.err; exit 1; }
rm -f /tmp/dua-bench-test.$$.err
echo "dua-bench ok"
