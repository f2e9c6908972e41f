#!/usr/bin/env python3
"""Training speed (tokens/s) of dua-train's model written in PyTorch, fp32, for comparison with dua-train at
the same shape on the same card (bench/gpu_train_speed.sh runs both).

The model is bench/torch_gpt.py's DuaGPT (token + learned positions, pre-LN blocks, GELU-tanh MLP of
mlp_ratio * width, final LN, tied head, cross-entropy with ignore index), trained with AdamW (weight decay on
matrices and embeddings, as dua) and global-norm clipping at 1.0 (dua-train's default). Attention variants:

  dense         F.scaled_dot_product_attention(is_causal=True); the backend SDPA picks for fp32 is reported
                (flash has no fp32 kernel, so it is "efficient" or "math")
  native_flex   dua's native routing (DESIGN.md section 7), soft phase: per layer, head and tree level a gate
                logit z (init --gate-init), Gumbel-Sigmoid sample g = sigmoid((z + logistic noise) / tau) each
                step, level bias beta[h][k] = sum_{l > k} log(1 - g[h][l]) added to the score of every causal
                pair whose query and key blocks share k tree levels (lca). FlexAttention (torch.compile'd) with
                a causal BlockMask and a score_mod that reads beta[h][lca(q // BLK, kv // BLK)] from a (H, nb,
                nb) table; gradients flow back to z
  native_sdpa   the same level bias materialized as an additive (H, T, T) float mask (-inf above the
                diagonal) passed to SDPA

Each variant runs with TF32 off ("fp32", what dua computes: its GEMMs are fp32 SGEMM) and, with --tf32 both,
also with TF32 allowed for matmuls and cuDNN (labelled). Timing: --warmup steps (compilation included), then
--steps steps, each bracketed by CUDA events (on CPU: synchronize + perf_counter); tokens/s = batch * seq_len /
median step time. Peak memory = torch.cuda.max_memory_allocated over the timed steps. One JSON line per
variant on stdout (and --json FILE).

  python3 bench/torch_train_speed.py                                   # GPU: 4 x 256, 4 heads, S=1024
  python3 bench/torch_train_speed.py --device cpu --layers 1 --seq-len 128 --batch 2 --steps 3 --warmup 1
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpt import DuaGPT, decayed, tree_depth  # noqa: E402


def sdpa_backend(q, k, v, mask=None, causal=True):
    """Name of the backend SDPA picks for these inputs."""
    try:
        from torch.nn.attention import SDPBackend
        idx = torch._fused_sdp_choice(q, k, v, mask, 0.0, causal)
        return SDPBackend(idx).name.lower()
    except Exception:  # noqa: BLE001 - private API: probe instead
        pass
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        for b in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH):
            try:
                with sdpa_kernel([b]):
                    F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
                return b.name.lower()
            except RuntimeError:
                continue
    except ImportError:
        pass
    return "unknown"


def lca_blocks(nb, p, D, shift=0):
    """(nb, nb) long: tree levels shared by query block m and key block n (positional tree, DESIGN.md 2)."""
    m = torch.arange(nb).view(nb, 1)
    n = torch.arange(nb).view(1, nb)
    lca = torch.zeros(nb, nb, dtype=torch.long)
    for d in range(1, D + 1):
        g = p ** (D - d)
        lca += ((m + shift) // g == (n + shift) // g).long()
    return lca


class Gates(torch.nn.Module):
    """Native mode's gates: z [L, H, D]; per step a Gumbel-Sigmoid sample and the level bias tables."""

    def __init__(self, L, H, D, nb, arity, init, device):
        super().__init__()
        self.z = torch.nn.Parameter(torch.full((L, H, D), float(init), device=device))
        self.register_buffer("lca", lca_blocks(nb, arity, D).to(device))
        self.D = D

    def tables(self, tau):
        u = torch.rand_like(self.z).clamp(1e-7, 1 - 1e-7)
        x = (self.z + torch.log(u) - torch.log1p(-u)) / tau
        sp = F.softplus(x)  # -log(1 - g) for g = sigmoid(x)
        # beta[k] = -sum_{l > k} softplus(x[l - 1]), k = 0..D (beta[D] = 0)
        tail = torch.flip(torch.cumsum(torch.flip(sp, [-1]), -1), [-1])  # tail[k] = sum_{j >= k} sp[j]
        beta = torch.cat([-tail, torch.zeros_like(sp[..., :1])], -1)  # (L, H, D + 1)
        return beta[:, :, self.lca]  # (L, H, nb, nb)


def make_attention(variant, a, T, device):
    """attn(q, k, v, layer, tabs) for a variant; tabs = the (L, H, nb, nb) level-bias tables or None."""
    blk = a.block
    if variant == "dense":
        return lambda q, k, v, layer, tabs: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if variant == "native_sdpa":
        causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()

        def attn(q, k, v, layer, tabs):
            bias = tabs[layer].repeat_interleave(blk, 1).repeat_interleave(blk, 2)[:, :T, :T]
            mask = bias.masked_fill(~causal, float("-inf")).unsqueeze(0)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return attn
    if variant == "native_flex":
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        def causal_mod(b, h, qi, ki):
            return ki <= qi
        bm = create_block_mask(causal_mod, None, None, T, T, device=device)

        # compiled as a whole: the score_mod is made inside the compiled region and reads the table, an input
        # of it, so one compilation serves every layer and step (a fresh closure per call would recompile)
        def flex_layer(q, k, v, tab):
            def score_mod(score, b, h, qi, ki):
                return score + tab[h, qi // blk, ki // blk]
            return flex_attention(q, k, v, score_mod=score_mod, block_mask=bm)
        compiled = torch.compile(flex_layer, dynamic=False)

        def attn(q, k, v, layer, tabs):
            tab = tabs[layer]
            return compiled(q, k, v, tab.detach() if a.flex_detach else tab)
        return attn
    raise ValueError(variant)


def sdpa_mask_backend(a, device):
    """The SDPA backend for native_sdpa's inputs (float additive mask, no is_causal)."""
    T, H, Dh = a.seq_len, a.heads, a.width // a.heads
    q = torch.randn(a.batch, H, T, Dh, device=device)
    mask = torch.zeros(1, H, T, T, device=device)
    return sdpa_backend(q, q, q, mask, False)


class Skipped(Exception):
    pass


class Net(torch.nn.Module):
    """The model with one attention variant; forward(tokens, level-bias tables or None) -> logits."""

    def __init__(self, model, attn_fn):
        super().__init__()
        self.model = model
        self.attn_fn = attn_fn

    def forward(self, tokens, tabs):
        return self.model(tokens, lambda q, k, v, layer: self.attn_fn(q, k, v, layer, tabs))


def check_flex(a, device, flex_attn):
    """native_flex's attention against native_sdpa's (materialized bias) on random inputs and random gate
    logits: max |difference| of the outputs and, where FlexAttention has a backward (not on CPU), of the
    gradients of q, k, v and z. fp32, TF32 off."""
    T, H, Dh = a.seq_len, a.heads, a.width // a.heads
    nb = -(-T // a.block)
    D = tree_depth(nb, a.arity)
    g = torch.Generator(device="cpu").manual_seed(7)
    cuda = device.startswith("cuda")
    # the training batch: the compiled kernels for this shape are then the ones the timed steps use
    q, k, v = (torch.randn(a.batch, H, T, Dh, generator=g).to(device).requires_grad_(cuda) for _ in range(3))
    gates = Gates(1, H, D, nb, a.arity, 0.0, device)
    with torch.no_grad():
        gates.z.copy_(torch.randn(1, H, D, generator=g) * 2)
    torch.manual_seed(3)
    out = {}
    with torch.set_grad_enabled(cuda):
        tabs = gates.tables(a.tau)
        ref = make_attention("native_sdpa", a, T, device)(q, k, v, 0, tabs)
        w = torch.randn(ref.shape, generator=g).to(device)
        gr = torch.autograd.grad((ref * w).sum(), [q, k, v, gates.z], retain_graph=True) if cuda else None
        try:
            got = flex_attn(q, k, v, 0, tabs)
            if cuda:
                gf = torch.autograd.grad((got * w).sum(), [q, k, v, gates.z])
                out["flex_vs_sdpa_grad_max_abs_diff"] = {n: float((x - y).abs().max()) for n, x, y in
                                                         zip(("q", "k", "v", "z"), gf, gr)}
        except Exception as e:  # noqa: BLE001 - older torch: no gradient for tensors a score_mod captures
            if not cuda:
                raise
            out["flex_bias_grad"] = "unsupported (%s); trained with the bias detached" % repr(e)[:300]
            a.flex_detach = True
            got = flex_attn(q, k, v, 0, tabs)
    out["flex_vs_sdpa_out_max_abs_diff"] = float((got - ref).abs().max())
    return out


def run_variant(a, variant, tf32, device):
    torch.manual_seed(a.seed)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    T, V, B = a.seq_len, a.vocab, a.batch
    nb = -(-T // a.block)
    D = tree_depth(nb, a.arity)
    model = DuaGPT(V, T, a.width, a.heads, a.layers, a.mlp_ratio)
    model.init_like_dua()
    model.to(device)
    native = variant.startswith("native")
    gates = Gates(a.layers, a.heads, D, nb, a.arity, a.gate_init, device) if native else None
    attn_fn = make_attention(variant, a, T, device)
    check = None
    if variant == "native_flex" and (not tf32 or device == "cpu"):  # checked once, without TF32
        torch.backends.cuda.matmul.allow_tf32 = False
        check = check_flex(a, device, attn_fn)
        torch.backends.cuda.matmul.allow_tf32 = tf32
    if variant == "native_flex" and device == "cpu":
        raise Skipped("FlexAttention has no backward on CPU (its forward was checked against native_sdpa: %s)"
                      % json.dumps(check))
    decay, nodecay = [], []
    for name, _, p in model.arena():
        (decay if decayed(name) else nodecay).append(p)
    groups = [{"params": decay, "weight_decay": a.weight_decay}, {"params": nodecay, "weight_decay": 0.0}]
    if native:
        groups.append({"params": [gates.z], "weight_decay": 0.0, "lr": a.lr * a.gate_lr_scale})
    opt = torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    net = Net(model, attn_fn).to(device)
    fwd = torch.compile(net) if a.compile_model else net
    gen = torch.Generator(device="cpu").manual_seed(a.seed)
    # Dyck-like batches: random tokens, one scored target per sequence (dua's tasks score the answer only;
    # the logits and the loss are computed for every position either way)
    batches = []
    for _ in range(4):
        tok = torch.randint(0, V, (B, T), generator=gen)
        tgt = torch.full((B, T), -1, dtype=torch.long)
        pos = torch.randint(0, T, (B,), generator=gen)
        tgt[torch.arange(B), pos] = torch.randint(0, V, (B,), generator=gen)
        batches.append((tok.to(device), tgt.to(device)))
    cuda = device.startswith("cuda")
    backend = None
    if variant == "dense":
        q = torch.randn(B, a.heads, T, a.width // a.heads, device=device)
        backend = sdpa_backend(q, q, q)
    elif variant == "native_sdpa":
        backend = sdpa_mask_backend(a, device)

    def step(i):
        tok, tgt = batches[i % len(batches)]
        tabs = gates.tables(a.tau) if native else None
        logits = fwd(tok, tabs)
        loss = F.cross_entropy(logits.view(-1, V), tgt.view(-1), ignore_index=-1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if a.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(list(model.parameters()) + ([gates.z] if native else []), a.grad_clip)
        opt.step()
        return loss

    t0 = time.perf_counter()
    for i in range(a.warmup):
        step(i)
    if cuda:
        torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    loss = None
    for i in range(a.steps):
        if cuda:
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            loss = step(a.warmup + i)
            e1.record()
            e1.synchronize()
            times.append(e0.elapsed_time(e1) / 1e3)
        else:
            s0 = time.perf_counter()
            loss = step(a.warmup + i)
            times.append(time.perf_counter() - s0)
    med = statistics.median(times)
    out = {"variant": variant, "precision": "tf32" if tf32 else "fp32", "device": device,
           "device_name": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
           "layers": a.layers, "width": a.width, "heads": a.heads, "mlp_ratio": a.mlp_ratio, "seq_len": T,
           "vocab": V, "batch": B, "block": a.block, "arity": a.arity, "tree_depth": D,
           "compile_model": bool(a.compile_model), "steps": a.steps, "warmup": a.warmup,
           "warmup_seconds": round(warm_s, 2), "step_ms_median": round(med * 1e3, 3),
           "step_ms_min": round(min(times) * 1e3, 3), "tokens_per_s": round(B * T / med, 1),
           "final_loss": round(loss.item(), 5)}
    if backend:
        out["sdpa_backend"] = backend
    if check:
        out.update(check)
    if variant == "native_flex":
        out["bias_grad_to_gates"] = not a.flex_detach
    if cuda:
        out["peak_mem_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--mlp-ratio", type=int, default=4, help="dua-train's default")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=5, help="5 = Dyck-2 (PAD + 2 kinds x open/close); 256 = bytes")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--block", type=int, default=64, help="tree block size (native variants)")
    ap.add_argument("--arity", type=int, default=2)
    ap.add_argument("--gate-init", type=float, default=-2.0)
    ap.add_argument("--gate-lr-scale", type=float, default=10.0)
    ap.add_argument("--tau", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation)")
    ap.add_argument("--variants", default="dense,native_flex,native_sdpa")
    ap.add_argument("--tf32", default="off", choices=["off", "on", "both"])
    ap.add_argument("--compile-model", action="store_true", help="torch.compile the whole model too")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")
    ap.add_argument("--json", help="append the JSON lines to this file")
    a = ap.parse_args()
    a.flex_detach = False
    if a.threads:
        torch.set_num_threads(a.threads)
    precisions = {"off": [False], "on": [True], "both": [False, True]}[a.tf32]
    failed = 0
    for variant in a.variants.split(","):
        for tf32 in precisions:
            try:
                r = run_variant(a, variant, tf32, a.device)
            except Skipped as e:
                r = {"variant": variant, "precision": "tf32" if tf32 else "fp32", "skipped": str(e)}
            except Exception as e:  # noqa: BLE001 - report and go on with the other variants
                r = {"variant": variant, "precision": "tf32" if tf32 else "fp32", "error": repr(e)[:2000]}
                failed += 1
            line = json.dumps(r)
            print(line, flush=True)
            if a.json:
                with open(a.json, "a") as f:
                    f.write(line + "\n")
            if a.device.startswith("cuda"):
                torch.cuda.empty_cache()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
