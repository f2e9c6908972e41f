#!/bin/sh
# dua-info: lists the device with every tunable kernel's parameters (decode plans with their kernel's name;
# the tensor-core forward's where it runs, else one line saying why), prints valid JSON with the probed
# fields, and fails clearly with no platform.
set -eu
info=$1
out=$("$info")
echo "$out" | grep -q "compute units" || { echo "dua-info printed no device:"; echo "$out"; exit 1; }
echo "$out" | grep -q "attention path" || { echo "dua-info printed no kernel path"; exit 1; }
for k in fwd bwd decode decode_gqa decode_split; do
  echo "$out" | grep -q "^    $k  *fp16 head_dim 128  " || { echo "dua-info printed no $k parameters"; exit 1; }
done
echo "$out" | grep -q "^    fwd_mma  *\(fp16 head_dim 128  [12],[12]  \|none on this device: .*fwd_mma\)" ||
  { echo "dua-info printed neither fwd_mma parameters nor why there are none:"; echo "$out" | grep fwd_mma; exit 1; }
# decode plans name their kernel (regs, staged, warp), never a bare "staged" number
for k in decode decode_gqa; do
  echo "$out" | grep -q "^    $k  *fp16 head_dim 128  \(regs\|staged\|warp\)," ||
    { echo "dua-info printed no kernel name for $k:"; echo "$out" | grep "^    $k "; exit 1; }
done
"$info" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["devices"], "no devices in --json"
for k in ("name", "vendor", "driver_version", "compute_units", "local_mem_bytes", "max_work_group_size",
          "fp16", "subgroups", "nv_mma_f16", "attention_path", "program_cache", "numa_node"):
    assert k in d["devices"][0], "missing " + k
assert d["host"]["cores"] >= 1
kernels = {t["kernel"] for t in d["devices"][0]["tuning"]}
assert kernels == {"fwd", "bwd", "decode", "decode_gqa", "decode_split", "fwd_mma"}, kernels
dev = d["devices"][0]
for t in dev["tuning"]:
    if t["kernel"] == "fwd_mma" and "error" in t:  # the tensor-core forward: only where it runs
        assert not (dev["nv_mma_f16"] and not dev["fast_paths_disabled"] and t["dtype"] == "fp16"
                    and t["head_dim"] in (64, 128)), t
        assert "fwd_mma" in t["error"], t
    else:
        assert "params" in t and t["source"], t
for t in d["devices"][0]["tuning"]:
    if t["kernel"] in ("decode", "decode_gqa"):
        assert t["decode_kernel"] == ("regs", "staged", "warp")[t["params"]["staged"]], t
print("json ok:", d["devices"][0]["name"])'
"$info" --device 0 >/dev/null
if "$info" --device no-such-device-xyz >/dev/null 2>&1; then echo "a bad --device was accepted"; exit 1; fi
if "$info" --bogus >/dev/null 2>&1; then echo "an unknown flag was accepted"; exit 1; fi
# No OpenCL platform at all: an empty vendor directory for the ICD loader.
empty=$(mktemp -d)
set +e
msg=$(OCL_ICD_VENDORS="$empty" OCL_ICD_FILENAMES="" "$info" 2>&1)
rc=$?
set -e
rmdir "$empty"
[ "$rc" -ne 0 ] || { echo "dua-info exited 0 without a platform"; exit 1; }
echo "$msg" | grep -qi "no OpenCL platform" || { echo "unclear message without a platform: $msg"; exit 1; }
echo "no-platform message ok: $msg"
