#!/usr/bin/env python3
"""PyTorch twin of dua-train's model, and a cross-check of dua's trainer against it on the same weights and
inputs.

The model (written here from host/train/model.h's description and shared/DESIGN.md sections 2 and 7, not
translated from dua's kernels): token embedding + learned positions, L pre-LN blocks (LayerNorm eps 1e-5 ->
fused QKV linear -> causal attention with scale 1/sqrt(Dh) -> output projection -> residual; LayerNorm ->
linear C -> mlp_ratio*C -> GELU (tanh form) -> linear back -> residual), final LayerNorm, head tied to the
token embedding, softmax cross-entropy with ignore index -1, mean over the scored targets.

Attention is masked with a boolean (T, T) mask per layer and head built here from DESIGN.md section 2:
blocks m = i // BLK and n = j // BLK share the depth-d subtree iff d == 0 or (m + s) // p^(D - d) ==
(n + s) // p^(D - d) (s = the layer's block shift), OR a causal token window (0 <= i - j <= W) OR a sink
(j < S), AND causality (j <= i). In native mode's soft phase each tree pair (not window/sink) gets the level
bias beta[h][lca(m, n)] added to its score, lca = number of shared tree levels.

Checkpoints (DUACKPT1, host/train/checkpoint.c) are parsed here, SHA-256 verified; the parameter tensors are
cut from the "params" section in model.h's arena order; the hard routing comes from the "state" section
(fixed depths, phase 1) or the "gate_z" logits (deepest gate with z > 0), as DESIGN.md section 7 says.

  python3 bench/torch_gpt.py eval DIR       # held-out set: dua (libdua.so via ctypes + dua-run eval --json)
                                            # vs torch float64, sparse routing and dense, per-example logits
  python3 bench/torch_gpt.py grads DIR      # parameter (and level-bias) gradients of one batch:
                                            # build/bench/dua_model_grads vs torch autograd
  python3 bench/torch_gpt.py step DIR       # one dua-train step resumed from DIR vs torch AdamW on the same
                                            # batch (clipping, schedule, moments, new parameters)
  python3 bench/torch_gpt.py all DIR...     # all three on each DIR; --json FILE for a summary

Exit status 1 when a figure is outside its tolerance (printed with each check).
"""
import argparse
import ctypes as C
import hashlib
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
IGNORE = -1

# ---------------------------------------------------------------- the model


class Block(nn.Module):
    def __init__(self, C_, H, M):
        super().__init__()
        self.H = H
        self.ln1 = nn.LayerNorm(C_, eps=1e-5)
        self.qkv = nn.Linear(C_, 3 * C_)  # weight [3C, C]: rows q (C), k (C), v (C)
        self.attproj = nn.Linear(C_, C_)
        self.ln2 = nn.LayerNorm(C_, eps=1e-5)
        self.fc = nn.Linear(C_, M)
        self.fcproj = nn.Linear(M, C_)

    def forward(self, x, attn, layer):
        B, T, C_ = x.shape
        H, Dh = self.H, C_ // self.H
        qkv = self.qkv(self.ln1(x))
        q, k, v = (qkv[..., i * C_:(i + 1) * C_].view(B, T, H, Dh).transpose(1, 2) for i in range(3))
        y = attn(q, k, v, layer)  # (B, H, T, Dh)
        x = x + self.attproj(y.transpose(1, 2).reshape(B, T, C_))
        return x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class DuaGPT(nn.Module):
    """dua-train's model. attn(q, k, v, layer) -> (B, H, T, Dh) is the attention of each layer."""

    def __init__(self, vocab, seq_len, width, heads, layers, mlp_ratio):
        super().__init__()
        self.V, self.T, self.C, self.H, self.L, self.M = vocab, seq_len, width, heads, layers, mlp_ratio * width
        self.wte = nn.Parameter(torch.zeros(vocab, width))
        self.wpe = nn.Parameter(torch.zeros(seq_len, width))
        self.blocks = nn.ModuleList(Block(width, heads, self.M) for _ in range(layers))
        self.lnf = nn.LayerNorm(width, eps=1e-5)

    def init_like_dua(self, generator=None):
        """N(0, 0.02) weights, residual projections / sqrt(2L), LN weights 1, biases 0 (model.h); the
        values differ from dua's (another RNG), the distribution is the same."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                if ".ln" in name or name.startswith("lnf"):
                    p.fill_(1.0 if name.endswith("weight") else 0.0)
                elif name.endswith("bias"):
                    p.zero_()
                else:
                    std = 0.02 / math.sqrt(2 * self.L) if ("attproj" in name or "fcproj" in name) else 0.02
                    p.normal_(0.0, std, generator=generator)

    def forward(self, tokens, attn):
        T = tokens.shape[1]
        x = self.wte[tokens] + self.wpe[:T]
        for l, blk in enumerate(self.blocks):
            x = blk(x, attn, l)
        return self.lnf(x) @ self.wte.t()

    # parameter tensors in model.h's arena order, one entry per (tensor, layer)
    def arena(self):
        b = self.blocks
        per_layer = [
            ("ln1w", lambda k: b[k].ln1.weight), ("ln1b", lambda k: b[k].ln1.bias),
            ("qkvw", lambda k: b[k].qkv.weight), ("qkvb", lambda k: b[k].qkv.bias),
            ("attprojw", lambda k: b[k].attproj.weight), ("attprojb", lambda k: b[k].attproj.bias),
            ("ln2w", lambda k: b[k].ln2.weight), ("ln2b", lambda k: b[k].ln2.bias),
            ("fcw", lambda k: b[k].fc.weight), ("fcb", lambda k: b[k].fc.bias),
            ("fcprojw", lambda k: b[k].fcproj.weight), ("fcprojb", lambda k: b[k].fcproj.bias)]
        out = [("wte", -1, self.wte), ("wpe", -1, self.wpe)]
        for name, get in per_layer:
            out += [(name, k, get(k)) for k in range(self.L)]
        return out + [("lnfw", -1, self.lnf.weight), ("lnfb", -1, self.lnf.bias)]

    def load_flat(self, flat):
        at = 0
        with torch.no_grad():
            for _, _, p in self.arena():
                n = p.numel()
                p.copy_(torch.from_numpy(np.asarray(flat[at:at + n], dtype=np.float64)).view_as(p))
                at += n
        if at != len(flat):
            raise ValueError("parameter arena holds %d values, the model needs %d" % (len(flat), at))

    def flat(self, what="data"):
        parts = []
        for _, _, p in self.arena():
            t = p.grad if what == "grad" else p.data
            parts.append(t.detach().reshape(-1).double().cpu().numpy())
        return np.concatenate(parts)


def decayed(name):
    """AdamW weight decay on matrices and embeddings only (model.h)."""
    return name in ("wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw")


def cross_entropy(logits, targets):
    """Mean over scored targets (ignore -1), the sum, the count and the correct argmax predictions."""
    lg = logits.reshape(-1, logits.shape[-1])
    tg = targets.reshape(-1)
    keep = tg != IGNORE
    losses = F.cross_entropy(lg[keep], tg[keep], reduction="none")
    correct = int((lg[keep].argmax(-1) == tg[keep]).sum())
    n = int(keep.sum())
    return losses.sum() / max(n, 1), float(losses.detach().sum()), n, correct


# ---------------------------------------------------------------- layouts (DESIGN.md section 2)


def tree_depth(nb, p):
    d, g = 0, 1
    while g < nb:
        g *= p
        d += 1
    return d


def layer_shift(cfg, layer):
    """--shift-alternate: odd layers shift the tree by p // 2 blocks (dua-train --help)."""
    return cfg["arity"] // 2 if cfg["shift_alternate"] and layer % 2 == 1 else 0


def layer_mask(T, blk, p, D, depths, shift, window, sink, beta=None):
    """Visible (H, T, T) bool mask and additive (H, T, T) float64 bias for one layer.
    depths[h]: 0 = dense .. D = block-diagonal; beta [H][D + 1] or None."""
    i = torch.arange(T).view(T, 1)
    j = torch.arange(T).view(1, T)
    m, n = (i // blk).expand(T, T), (j // blk).expand(T, T)
    shares = [torch.ones(T, T, dtype=torch.bool)]  # shares[d]: same subtree at depth d
    for d in range(1, D + 1):
        g = p ** (D - d)
        shares.append((m + shift) // g == (n + shift) // g)
    lca = torch.stack(shares[1:]).sum(0) if D > 0 else torch.zeros(T, T, dtype=torch.long)
    extra = torch.zeros(T, T, dtype=torch.bool)
    if window > 0:
        extra |= (i - j >= 0) & (i - j <= window)
    if sink > 0:
        extra |= (j < sink).expand(T, T)
    causal = j <= i
    masks, biases = [], []
    for h, d in enumerate(depths):
        tree = shares[d]
        masks.append((tree | extra) & causal)
        b = torch.zeros(T, T, dtype=torch.float64)
        if beta is not None:
            table = torch.tensor(np.asarray(beta[h], dtype=np.float64))
            b = torch.where(tree & ~extra, table[lca], b)
        biases.append(b)
    return torch.stack(masks), torch.stack(biases)


def lca_table(T, blk, p, D, shift):
    """(T, T) long: shared tree levels of the blocks of query i and key j."""
    i = torch.arange(T).view(T, 1) // blk
    j = torch.arange(T).view(1, T) // blk
    lca = torch.zeros(T, T, dtype=torch.long)
    for d in range(1, D + 1):
        g = p ** (D - d)
        lca += ((i + shift) // g == (j + shift) // g).long()
    return lca


def masked_attention(masks, biases):
    """attn(q, k, v, layer) with explicit masks [L] (H, T, T) and biases; empty rows give 0."""
    def attn(q, k, v, layer):
        s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + biases[layer].to(q.dtype)
        s = s.masked_fill(~masks[layer], float("-inf"))
        w = torch.softmax(s, dim=-1).nan_to_num(0.0)
        return w @ v
    return attn


# ---------------------------------------------------------------- checkpoints (host/train/checkpoint.c)

CONFIG_FIELDS = (
    [(f, "i") for f in ("task", "seq_len", "dyck_kinds", "dyck_max_depth", "test_size", "layers", "width",
                        "heads", "mlp_ratio", "mode", "block", "arity", "window", "sink", "shift_alternate")]
    + [(f, "f") for f in ("tau_start", "tau_end", "tau_frac", "hard_frac", "gate_init", "gate_lr_scale",
                          "density_weight", "density_target", "skip_bias")]
    + [(f, "i") for f in ("batch", "steps", "warmup", "decay")]
    + [(f, "f") for f in ("lr", "lr_min", "weight_decay", "beta1", "beta2", "adam_eps", "grad_clip")]
    + [("seed", "Q"), ("eval_every", "i")] + [("reserved%d" % r, "i") for r in range(15)])


def read_checkpoint(path):
    if os.path.isdir(path):
        path = os.path.join(path, "model.ckpt")
    raw = open(path, "rb").read()
    if raw[:8] != b"DUACKPT1":
        raise ValueError("%s: bad magic" % path)
    if hashlib.sha256(raw[:-32]).digest() != raw[-32:]:
        raise ValueError("%s: SHA-256 mismatch" % path)
    version, cbytes = struct.unpack_from("<II", raw, 8)
    fmt = "<" + "".join(k for _, k in CONFIG_FIELDS)
    if version != 1 or cbytes != struct.calcsize(fmt):
        raise ValueError("%s: version %d, config %d bytes (expected 1, %d)" % (path, version, cbytes,
                                                                               struct.calcsize(fmt)))
    cfg = dict(zip([f for f, _ in CONFIG_FIELDS], struct.unpack_from(fmt, raw, 16)))
    at = 16 + cbytes
    (count,) = struct.unpack_from("<I", raw, at)
    at += 4
    sections = {}
    for _ in range(count):
        name = raw[at:at + 24].split(b"\0")[0].decode()
        (nbytes,) = struct.unpack_from("<Q", raw, at + 24)
        at += 32
        sections[name] = raw[at:at + nbytes]
        at += nbytes
    if at != len(raw) - 32:
        raise ValueError("%s: %d bytes after the sections" % (path, len(raw) - 32 - at))
    return cfg, sections


class Checkpoint:
    def __init__(self, path):
        self.path = path
        self.cfg, self.sec = read_checkpoint(path)
        c = self.cfg
        self.L, self.H, self.C, self.T = c["layers"], c["heads"], c["width"], c["seq_len"]
        self.M = c["mlp_ratio"] * self.C
        self.D = tree_depth(-(-self.T // c["block"]), c["arity"])
        self.params = np.frombuffer(self.sec["params"], dtype="<f4")
        # every tensor but the embedding has a size fixed by the config: the vocabulary is what is left
        L, C_, M, T = self.L, self.C, self.M, self.T
        rest = T * C_ + L * (2 * C_ + 3 * C_ * C_ + 3 * C_ + C_ * C_ + C_ + 2 * C_ + M * C_ + M + C_ * M + C_) + 2 * C_
        self.V = (len(self.params) - rest) // C_
        if self.V * C_ + rest != len(self.params):
            raise ValueError("params section does not fit the config")
        st = self.sec["state"]
        self.version, self.step, self.phase, entries = struct.unpack_from("<qqqq", st, 0)
        self.fixed = np.frombuffer(st[32:], dtype="<i4").reshape(self.L, self.H)
        self.z = np.frombuffer(self.sec["gate_z"], dtype="<f4").reshape(self.L, self.H, self.D)
        self.native = c["mode"] == 1 and self.D > 0

    def hard_depths(self):
        """Per layer and head: fixed depths (phase 1), else the deepest gate with z > 0; dense mode 0."""
        d = np.zeros((self.L, self.H), dtype=int)
        if not self.native:
            return d
        if self.phase:
            return self.fixed.astype(int).copy()
        for l in range(self.L):
            for h in range(self.H):
                on = [k + 1 for k in range(self.D) if self.z[l, h, k] > 0]
                d[l, h] = max(on) if on else 0
        return d

    def soft_beta(self, tau):
        """Noise-free level bias beta[l][h][k] = -sum_{g > k} softplus(z[g-1] / tau), in float32 like the
        trainer's host arrays, and the skip depths (smallest k with beta[k] >= skip_bias)."""
        x = (self.z.astype(np.float64) / np.float64(np.float32(tau))).astype(np.float32).astype(np.float64)
        sp = np.logaddexp(0.0, x)
        beta = np.zeros((self.L, self.H, self.D + 1))
        for k in range(self.D - 1, -1, -1):
            beta[:, :, k] = beta[:, :, k + 1] - sp[:, :, k]
        beta = beta.astype(np.float32)
        cut = np.float32(self.cfg["skip_bias"])
        depths = np.array([[next((k for k in range(self.D + 1) if beta[l, h, k] >= cut), self.D)
                            for h in range(self.H)] for l in range(self.L)])
        return beta, depths

    def model(self, dtype=torch.float64):
        m = DuaGPT(self.V, self.T, self.C, self.H, self.L, self.cfg["mlp_ratio"])
        m.load_flat(self.params)
        return m.to(dtype)

    def attention(self, depths, beta=None, dense=False):
        c = self.cfg
        masks, biases = [], []
        for l in range(self.L):
            d = [0] * self.H if dense else list(depths[l])
            mk, b = layer_mask(self.T, c["block"], c["arity"], self.D, d, layer_shift(c, l), c["window"],
                               c["sink"], None if beta is None else beta[l])
            masks.append(mk)
            biases.append(b)
        return masked_attention(masks, biases), masks


# ---------------------------------------------------------------- libdua through ctypes (public API only)


class EvalResult(C.Structure):
    _fields_ = [("loss", C.c_double), ("accuracy", C.c_double), ("density", C.c_double),
                ("scored", C.c_int64), ("seconds", C.c_double)]


class RoutingHead(C.Structure):
    _fields_ = [(f, C.c_int32) for f in ("depth", "arity", "block", "window", "sink", "shift")]


class Routing(C.Structure):
    _fields_ = [("layers", C.c_int32), ("heads", C.c_int32), ("seq_len", C.c_int32), ("causal", C.c_int32),
                ("head", C.POINTER(RoutingHead))]


class ContextOptions(C.Structure):  # dua.h, with room to spare: dua_context_options_init fills it
    _fields_ = [("device_index", C.c_int), ("selector", C.c_char_p), ("log", C.c_void_p),
                ("log_user", C.c_void_p), ("log_level", C.c_int), ("disable_fast_paths", C.c_int),
                ("spare", C.c_int * 32)]


class Dua:
    def __init__(self, lib, device):
        self.lib = C.CDLL(lib)
        L = self.lib
        L.dua_context_last_error.restype = C.c_char_p
        L.dua_status_string.restype = C.c_char_p
        L.dua_inference_test_size.restype = C.c_int32
        L.dua_inference_vocab_size.restype = C.c_int32
        opt = ContextOptions()
        L.dua_context_options_init(C.byref(opt))
        self._sel = device.encode() if device else None
        opt.selector = self._sel
        self.ctx = C.c_void_p()
        self.check(L.dua_context_create(C.byref(opt), C.byref(self.ctx)), "dua_context_create")
        self.models = []

    def check(self, st, what):
        if st != 0:
            msg = self.lib.dua_context_last_error(self.ctx).decode() if getattr(self, "ctx", None) else ""
            raise RuntimeError("%s: %s %s" % (what, self.lib.dua_status_string(st).decode(), msg))

    def load(self, ckpt):
        m = C.c_void_p()
        err = C.create_string_buffer(1024)
        st = self.lib.dua_inference_model_load(self.ctx, ckpt.encode(), None, C.byref(m), err, C.c_size_t(1024))
        if st != 0:
            raise RuntimeError("dua_inference_model_load: %s" % err.value.decode())
        self.models.append(m)
        return m

    def test_examples(self, m, T):
        n = self.lib.dua_inference_test_size(m)
        tok = np.zeros((n, T), dtype=np.int32)
        tgt = np.zeros((n, T), dtype=np.int32)
        for e in range(n):
            self.check(self.lib.dua_inference_test_example(
                m, C.c_int32(e), tok[e].ctypes.data_as(C.c_void_p), tgt[e].ctypes.data_as(C.c_void_p)),
                "dua_inference_test_example")
        return tok, tgt

    def forward(self, m, tokens, dense, V):
        n, T = tokens.shape
        tokens = np.ascontiguousarray(tokens, dtype=np.int32)
        out = np.zeros((n, T, V), dtype=np.float32)
        self.check(self.lib.dua_inference_forward(m, tokens.ctypes.data_as(C.c_void_p), C.c_int32(n),
                                                  C.c_int32(T), C.c_int(dense), out.ctypes.data_as(C.c_void_p)),
                   "dua_inference_forward")
        return out

    def evaluate(self, m, dense):
        r = EvalResult()
        self.check(self.lib.dua_inference_evaluate(m, C.c_int(dense), C.byref(r)), "dua_inference_evaluate")
        return r

    def routing(self, m):
        r = Routing()
        self.check(self.lib.dua_inference_routing(m, C.byref(r)), "dua_inference_routing")
        out = [[dict((f, getattr(r.head[l * r.heads + h], f)) for f, _ in RoutingHead._fields_)
                for h in range(r.heads)] for l in range(r.layers)]
        self.lib.dua_routing_free(C.byref(r))
        return out

    def close(self):
        for m in self.models:
            self.lib.dua_inference_model_destroy(m)
        self.models = []
        self.lib.dua_context_destroy(self.ctx)


# ---------------------------------------------------------------- checks

FAILED = []


def verdict(name, ok, text):
    print("  %-58s %s  %s" % (name, "ok  " if ok else "FAIL", text))
    if not ok:
        FAILED.append(name)
    return ok


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-30)


def check_eval(args, run_dir):
    ck = Checkpoint(run_dir)
    c = ck.cfg
    print("\n== eval %s: task %s, mode %s, step %d (phase %d), L=%d H=%d C=%d T=%d V=%d block %d arity %d D=%d "
          "window %d sink %d shift_alternate %d" % (run_dir, ["dyck", "listops"][c["task"]],
                                                     ["dense", "native"][c["mode"]], ck.step, ck.phase, ck.L, ck.H,
                                                     ck.C, ck.T, ck.V, c["block"], c["arity"], ck.D, c["window"],
                                                     c["sink"], c["shift_alternate"]))
    dua = Dua(args.lib, args.device)
    out = {"dir": run_dir, "step": ck.step}
    try:
        m = dua.load(os.path.join(run_dir, "model.ckpt") if os.path.isdir(run_dir) else run_dir)
        depths = ck.hard_depths()
        dua_depths = np.array([[h["depth"] for h in row] for row in dua.routing(m)])
        verdict("hard depths: torch's extraction == dua_inference_routing", (depths == dua_depths).all(),
                "torch %s, dua %s" % (depths.tolist(), dua_depths.tolist()))
        out["depths"] = depths.tolist()
        tok, tgt = dua.test_examples(m, ck.T)
        n = len(tok)
        rj = None
        if args.dua_run and os.path.exists(args.dua_run):
            p = subprocess.run([args.dua_run, "eval", run_dir, "--json", "--reps", "1"]
                               + (["--device", args.device] if args.device else []),
                               capture_output=True, text=True)
            if p.returncode == 0:
                rj = json.loads(p.stdout)
        model = ck.model(torch.float64 if args.dtype == "float64" else torch.float32)
        dt = model.wte.dtype
        for dense in (0, 1):
            label = "dense" if dense else "sparse"
            ev = dua.evaluate(m, dense)
            logits_dua = dua.forward(m, tok, dense, ck.V)
            attn, masks = ck.attention(depths, dense=bool(dense))
            with torch.no_grad():
                lt = torch.cat([model(torch.from_numpy(tok[s:s + args.chunk]).long(), attn)
                                for s in range(0, n, args.chunk)])
            targets = torch.from_numpy(tgt).long()
            _, tsum, tcount, tcorrect = cross_entropy(lt, targets)
            _, dsum, dcount, dcorrect = cross_entropy(torch.from_numpy(logits_dua).double(), targets)
            tloss, dloss = tsum / tcount, dsum / dcount
            keep = tgt != IGNORE
            pred_t = lt.argmax(-1).numpy()[keep]
            pred_d = logits_dua.argmax(-1)[keep]
            diff = np.abs(logits_dua.astype(np.float64) - lt.double().numpy())
            per_ex = diff.reshape(n, -1).max(1)
            scored_diff = diff[keep].max()
            # visited-block density of the torch masks: blocks with any visible pair / dense causal blocks
            blk = c["block"]
            nb = -(-ck.T // blk)
            dens = []
            for mk in masks:
                pad = F.pad(mk, (0, nb * blk - ck.T, 0, nb * blk - ck.T))
                vis = pad.view(ck.H, nb, blk, nb, blk).any(4).any(2).sum().item()
                dens.append(vis / ck.H / (nb * (nb + 1) / 2))
            tdens = float(np.mean(dens))
            print(" %s (%d examples, %d scored):" % (label, n, tcount))
            rep = {"dua_eval_loss": ev.loss, "dua_eval_accuracy": ev.accuracy, "dua_eval_density": ev.density,
                   "dua_forward_loss": dloss, "dua_forward_accuracy": dcorrect / dcount,
                   "torch_loss": tloss, "torch_accuracy": tcorrect / tcount, "torch_density": tdens,
                   "scored": tcount, "loss_rel_diff": rel(ev.loss, tloss),
                   "pred_disagreements": int((pred_t != pred_d).sum()),
                   "logits_max_abs_diff": float(diff.max()), "logits_max_abs_diff_scored": float(scored_diff),
                   "logits_per_example_max_abs_diff_median": float(np.median(per_ex)),
                   "logits_max_abs": float(np.abs(lt.double().numpy()).max())}
            if rj and label in rj:
                rep["dua_run_json"] = rj[label]
            out[label] = rep
            verdict("%s: dua_inference_evaluate loss vs torch (rel <= %.0e)" % (label, args.loss_rtol),
                    rep["loss_rel_diff"] <= args.loss_rtol,
                    "dua %.9f torch %.9f rel %.2e" % (ev.loss, tloss, rep["loss_rel_diff"]))
            verdict("%s: accuracy (argmax) identical" % label,
                    abs(ev.accuracy - tcorrect / tcount) < 1e-12 and rep["pred_disagreements"] == 0,
                    "dua %.6f torch %.6f, %d of %d predictions differ" % (ev.accuracy, tcorrect / tcount,
                                                                        rep["pred_disagreements"], tcount))
            verdict("%s: scored count" % label, ev.scored == tcount, "dua %d torch %d" % (ev.scored, tcount))
            verdict("%s: density of the torch masks == dua's" % label, abs(tdens - ev.density) < 1e-9,
                    "dua %.6f torch %.6f" % (ev.density, tdens))
            verdict("%s: per-example logits max |dua - torch| <= %.0e" % (label, args.logit_atol),
                    rep["logits_max_abs_diff"] <= args.logit_atol,
                    "max %.2e (scored positions %.2e, median per example %.2e; |logits| <= %.1f)"
                    % (rep["logits_max_abs_diff"], scored_diff, rep["logits_per_example_max_abs_diff_median"],
                       rep["logits_max_abs"]))
            if rj and label in rj:
                verdict("%s: dua-run eval --json (6 digits) == dua_inference_evaluate" % label,
                        abs(rj[label]["loss"] - ev.loss) <= 1e-6 * max(1, ev.loss) + 5e-7
                        and abs(rj[label]["accuracy"] - ev.accuracy) <= 5e-7,
                        "loss %.6f accuracy %.6f" % (rj[label]["loss"], rj[label]["accuracy"]))
    finally:
        dua.close()
    return out


def torch_grads(ck, model, tokens, targets, depths, beta=None):
    """Mean cross-entropy of one batch and its gradients (flat, arena order), and dL/dbeta."""
    bt = None
    if beta is not None:
        bt = torch.tensor(beta.astype(np.float64), requires_grad=True)
    c = ck.cfg
    masks = []
    lcas = []
    for l in range(ck.L):
        mk, _ = layer_mask(ck.T, c["block"], c["arity"], ck.D, list(depths[l]), layer_shift(c, l), c["window"],
                           c["sink"], None)
        masks.append(mk)
        lcas.append(lca_table(ck.T, c["block"], c["arity"], ck.D, layer_shift(c, l)))
    i = torch.arange(ck.T).view(-1, 1)
    j = torch.arange(ck.T).view(1, -1)
    extra = torch.zeros(ck.T, ck.T, dtype=torch.bool)
    if c["window"] > 0:
        extra |= (i - j >= 0) & (i - j <= c["window"])
    if c["sink"] > 0:
        extra |= (j < c["sink"]).expand(ck.T, ck.T)

    def attn(q, k, v, layer):
        s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        if bt is not None:  # beta[h][lca] on tree pairs (not window/sink pairs)
            b = bt[layer][:, lcas[layer]]  # (H, T, T)
            s = s + torch.where(extra, torch.zeros((), dtype=b.dtype), b)
        s = s.masked_fill(~masks[layer], float("-inf"))
        return torch.softmax(s, -1).nan_to_num(0.0) @ v

    model.zero_grad(set_to_none=True)
    logits = model(torch.from_numpy(tokens).long(), attn)
    loss, lsum, count, correct = cross_entropy(logits, torch.from_numpy(targets).long())
    loss.backward()
    return loss.item(), count, correct, model.flat("grad"), (bt.grad.numpy() if bt is not None else None)


def grad_table(model, g_dua, g_torch, rtol):
    """Per tensor (all layers together): ||dua - torch|| / ||torch|| and max abs diff."""
    worst = 0.0
    rows = {}
    at = 0
    groups = {}
    for name, layer, p in model.arena():
        n = p.numel()
        groups.setdefault(name, []).append((at, n))
        at += n
    for name, spans in groups.items():
        idx = np.concatenate([np.arange(a, a + n) for a, n in spans])
        d, t = g_dua[idx].astype(np.float64), g_torch[idx]
        r = np.linalg.norm(d - t) / max(np.linalg.norm(t), 1e-30)
        rows[name] = {"rel_l2": float(r), "max_abs_diff": float(np.abs(d - t).max()),
                      "max_abs": float(np.abs(t).max())}
        worst = max(worst, r)
    for name, r in rows.items():
        print("    %-9s rel L2 %.2e   max |diff| %.2e   max |grad| %.2e" % (name, r["rel_l2"], r["max_abs_diff"],
                                                                         r["max_abs"]))
    return worst, rows


def check_grads(args, run_dir, routing, batch=None, tau=None):
    ck = Checkpoint(run_dir)
    label = "%s%s" % (routing, "" if tau is None else " tau=%g" % tau)
    tmp = tempfile.mkdtemp(prefix="dua_grads_")
    try:
        cmd = [args.grads_helper, "--ckpt", ck.path if not os.path.isdir(ck.path) else os.path.join(ck.path, "model.ckpt"),
               "--out", tmp, "--routing", routing]
        if batch:
            cmd += ["--batch", batch]
        if tau is not None:
            cmd += ["--tau", repr(tau)]
        if args.device:
            cmd += ["--device", args.device]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        res = json.load(open(os.path.join(tmp, "result.json")))
        B, T = res["B"], res["T"]
        tokens = np.fromfile(os.path.join(tmp, "tokens.i32"), dtype="<i4").reshape(B, T)
        targets = np.fromfile(os.path.join(tmp, "targets.i32"), dtype="<i4").reshape(B, T)
        g_dua = np.fromfile(os.path.join(tmp, "grads.f32"), dtype="<f4")
        dua_depths = np.fromfile(os.path.join(tmp, "depths.i32"), dtype="<i4").reshape(ck.L, ck.H)
        beta = None
        if routing == "soft":
            beta, depths = ck.soft_beta(tau)
            dua_beta = np.fromfile(os.path.join(tmp, "beta.f32"), dtype="<f4").reshape(beta.shape)
            dbeta_dua = np.fromfile(os.path.join(tmp, "dbeta.f32"), dtype="<f4").reshape(beta.shape)
        elif routing == "dense":
            depths = np.zeros((ck.L, ck.H), dtype=int)
        else:
            depths = ck.hard_depths()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n== grads %s: batch %s, routing %s, depths %s" % (run_dir, res["batch"], label, depths.tolist()))
    model = ck.model(torch.float64)
    loss, count, correct, g_t, dbeta_t = torch_grads(ck, model, tokens, targets, depths, beta)
    out = {"dir": run_dir, "batch": res["batch"], "routing": label, "dua_loss": res["loss"], "torch_loss": loss,
           "count": count, "depths": depths.tolist()}
    verdict("grads %s: depths (torch's rule == dua's)" % label, (depths == dua_depths).all(),
            "dua %s" % dua_depths.tolist())
    if beta is not None:
        verdict("grads %s: level bias beta (torch's formula == dua_gates_sample)" % label,
                np.abs(beta - dua_beta).max() <= 1e-6 * max(1.0, np.abs(beta).max()),
                "max |diff| %.2e, beta in [%.3g, 0]" % (np.abs(beta - dua_beta).max(), beta.min()))
    verdict("grads %s: batch loss rel <= %.0e" % (label, args.loss_rtol), rel(res["loss"], loss) <= args.loss_rtol,
            "dua %.9f torch %.9f rel %.2e (%d targets, %d/%d correct)" % (res["loss"], loss, rel(res["loss"], loss),
                                                                        count, res["correct"], correct))
    worst, rows = grad_table(model, g_dua, g_t, args.grad_rtol)
    out["tensors"] = rows
    out["worst_rel_l2"] = worst
    gd, gt = g_dua.astype(np.float64), g_t
    out["global_rel_l2"] = float(np.linalg.norm(gd - gt) / np.linalg.norm(gt))
    out["grad_norm_dua"], out["grad_norm_torch"] = float(np.linalg.norm(gd)), float(np.linalg.norm(gt))
    verdict("grads %s: every tensor rel L2 <= %.0e" % (label, args.grad_rtol), worst <= args.grad_rtol,
            "worst %.2e, whole vector %.2e, norm dua %.6g torch %.6g" % (worst, out["global_rel_l2"],
                                                                        out["grad_norm_dua"], out["grad_norm_torch"]))
    if dbeta_t is not None:
        d = np.abs(dbeta_dua - dbeta_t)
        r = np.linalg.norm(dbeta_dua - dbeta_t) / max(np.linalg.norm(dbeta_t), 1e-30)
        out["dbeta_rel_l2"], out["dbeta_max_abs_diff"] = float(r), float(d.max())
        out["dbeta_dua"], out["dbeta_torch"] = dbeta_dua.tolist(), dbeta_t.tolist()
        verdict("grads %s: level-bias gradient dbeta rel L2 <= %.0e" % (label, args.grad_rtol), r <= args.grad_rtol,
                "rel %.2e, max |diff| %.2e, max |dbeta| %.2e" % (r, d.max(), np.abs(dbeta_t).max()))
    return out


def lr_at(cfg, step):
    """learning_rate() of trainer.c, in the same precisions (float config, double schedule, float result)."""
    f32 = np.float32
    if step < cfg["warmup"]:
        return float(f32(f32(cfg["lr"]) * f32(step + 1) / f32(cfg["warmup"])))
    span = float(cfg["steps"] - cfg["warmup"])
    prog = (step - cfg["warmup"]) / span if span > 0 else 1.0
    prog = min(prog, 1.0)
    lo, hi = float(f32(cfg["lr"])) * float(f32(cfg["lr_min"])), float(f32(cfg["lr"]))
    fac = 0.5 * (1.0 + math.cos(math.pi * prog)) if cfg["decay"] == 0 else 1.0 - prog
    return float(f32(lo + (hi - lo) * fac))


def check_step(args, run_dir):
    """dua-train --resume DIR --steps N+1 against torch AdamW (phase 1: hard depths, no gates)."""
    ck = Checkpoint(run_dir)
    if ck.native and not ck.phase:
        print("\n== step %s: soft phase (gates and Gumbel noise in the step): not covered, skipped" % run_dir)
        return None
    tmp = tempfile.mkdtemp(prefix="dua_step_")
    try:
        g = os.path.join(tmp, "grads")
        ckfile = os.path.join(run_dir, "model.ckpt")
        subprocess.run([args.grads_helper, "--ckpt", ckfile, "--out", g, "--routing", "hard",
                        "--batch", "train:%d" % ck.step] + (["--device", args.device] if args.device else []),
                       check=True, capture_output=True, text=True)
        res = json.load(open(os.path.join(g, "result.json")))
        tokens = np.fromfile(os.path.join(g, "tokens.i32"), dtype="<i4").reshape(res["B"], res["T"])
        targets = np.fromfile(os.path.join(g, "targets.i32"), dtype="<i4").reshape(res["B"], res["T"])
        nxt = os.path.join(tmp, "next")
        cmd = [args.dua_train, "--resume", run_dir, "--steps", str(ck.step + 1), "--out", nxt, "--quiet"]
        if args.device:
            cmd += ["--device", args.device]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError("dua-train: %s" % p.stderr)
        ck2 = Checkpoint(nxt)
        train_csv = open(os.path.join(nxt, "train.csv")).read().strip().splitlines()
        if not train_csv[0].startswith("step,"):  # a resumed run into a fresh --out writes no header line
            train_csv = open(os.path.join(run_dir, "train.csv")).readline().strip().splitlines() + train_csv
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cfg = ck2.cfg
    depths = ck.hard_depths()
    print("\n== step %s: dua-train --resume --steps %d (phase %d, depths %s) vs torch AdamW"
          % (run_dir, ck.step + 1, ck.phase, depths.tolist()))
    model = ck.model(torch.float64)
    loss, count, correct, g_t, _ = torch_grads(ck, model, tokens, targets, depths)
    norm = float(np.linalg.norm(g_t))
    clip = float(np.float32(cfg["grad_clip"]))
    scale = clip / norm if clip > 0 and norm > clip else 1.0
    lr = lr_at(cfg, ck.step)
    # torch.optim.AdamW with the checkpoint's moments as its state; per-tensor weight decay as model.h says
    m_old = np.frombuffer(ck.sec["adam_m"], dtype="<f4").astype(np.float64)
    v_old = np.frombuffer(ck.sec["adam_v"], dtype="<f4").astype(np.float64)
    decay, nodecay = [], []
    at = 0
    state = {}
    for name, _, p in model.arena():
        n = p.numel()
        p.grad.mul_(scale)
        state[p] = (torch.from_numpy(m_old[at:at + n]).view_as(p).clone(),
                    torch.from_numpy(v_old[at:at + n]).view_as(p).clone())
        (decay if decayed(name) else nodecay).append(p)
        at += n
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": float(np.float32(cfg["weight_decay"]))},
                             {"params": nodecay, "weight_decay": 0.0}], lr=lr,
                            betas=(float(np.float32(cfg["beta1"])), float(np.float32(cfg["beta2"]))),
                            eps=float(np.float32(cfg["adam_eps"])), foreach=False)
    for p, (mo, vo) in state.items():
        opt.state[p] = {"step": torch.tensor(float(ck.step)), "exp_avg": mo, "exp_avg_sq": vo}
    p_old = model.flat()
    opt.step()
    p_new_t = model.flat()
    m_new_t = np.concatenate([opt.state[p]["exp_avg"].reshape(-1).numpy() for _, _, p in model.arena()])
    v_new_t = np.concatenate([opt.state[p]["exp_avg_sq"].reshape(-1).numpy() for _, _, p in model.arena()])
    p_new_d = ck2.params.astype(np.float64)
    m_new_d = np.frombuffer(ck2.sec["adam_m"], dtype="<f4").astype(np.float64)
    v_new_d = np.frombuffer(ck2.sec["adam_v"], dtype="<f4").astype(np.float64)
    b1 = float(np.float32(cfg["beta1"]))
    g_dua_eff = (m_new_d - b1 * m_old) / (1 - b1)  # dua's clipped gradient, recovered from its first moment
    # the step's logged loss and gradient norm (train.csv: the last line)
    head = train_csv[0].split(",")
    last = dict(zip(head, train_csv[-1].split(",")))
    out = {"dir": run_dir, "step": ck.step + 1, "lr": lr, "clip_scale": scale, "torch_grad_norm": norm,
           "torch_loss": loss, "train_csv": last}

    def r2(a, b):
        return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
    dp_d, dp_t = p_new_d - p_old, p_new_t - p_old
    # The key bias (qkvb[C:2C]) has an exactly zero gradient (q . b_k is the same for every key of a row, and
    # softmax ignores it): dua's fp32 gradient there is rounding noise (~1e-10), torch's float64 one ~1e-18,
    # and Adam divides by sqrt(v) of that noise, so its update is noise in both. Compared apart.
    kb = np.zeros(len(p_old), dtype=bool)
    at = 0
    for name, _, p in model.arena():
        if name == "qkvb":
            kb[at + ck.C:at + 2 * ck.C] = True
        at += p.numel()
    out["update_rel_l2"] = r2(dp_d[~kb], dp_t[~kb])
    out["update_max_abs_diff"] = float(np.abs(dp_d - dp_t)[~kb].max())
    out["update_max_abs"] = float(np.abs(dp_t[~kb]).max())
    out["key_bias_grad_max_abs_dua"] = float(np.abs(g_dua_eff[kb]).max())
    out["key_bias_update_max_abs_diff"] = float(np.abs(dp_d - dp_t)[kb].max())
    out["m_rel_l2"], out["v_rel_l2"] = r2(m_new_d, m_new_t), r2(v_new_d, v_new_t)
    out["grad_from_m_rel_l2"] = r2(g_dua_eff, np.concatenate([p.grad.reshape(-1).numpy()
                                                               for _, _, p in model.arena()]))
    out["params_max_abs_diff"] = float(np.abs(p_new_d - p_new_t).max())
    worst = int(np.where(~kb, np.abs(dp_d - dp_t), 0).argmax())
    out["update_worst"] = {"index": worst, "p_old": float(p_old[worst]), "update_dua": float(dp_d[worst]),
                           "update_torch": float(dp_t[worst]), "m_old": float(m_old[worst]),
                           "v_old": float(v_old[worst]), "grad_torch": float(g_t[worst] * scale),
                           "grad_dua_from_m": float(g_dua_eff[worst])}
    print("  largest update difference at arena index %d: %s" % (worst, out["update_worst"]))
    for key in ("loss", "grad_norm", "lr"):
        if key in last:
            out["dua_" + key] = float(last[key])
    print("  lr %.9g, torch grad norm %.7g (dua logged %s), clip scale %.6g, loss torch %.9f (dua logged %s)"
          % (lr, norm, last.get("grad_norm"), scale, loss, last.get("loss")))
    if "lr" in last:
        verdict("step: learning rate (torch's schedule == dua's log)", rel(float(last["lr"]), lr) <= 1e-5,
                "dua %s torch %.9g" % (last["lr"], lr))
    if "grad_norm" in last:
        verdict("step: gradient norm rel <= %.0e" % args.grad_rtol,
                rel(float(last["grad_norm"]), norm) <= args.grad_rtol,
                "dua %s torch %.7g" % (last["grad_norm"], norm))
    verdict("step: dua's clipped gradient (from adam_m) vs torch, rel L2 <= %.0e" % args.grad_rtol,
            out["grad_from_m_rel_l2"] <= args.grad_rtol, "%.2e" % out["grad_from_m_rel_l2"])
    verdict("step: new first moment rel L2 <= %.0e" % args.grad_rtol, out["m_rel_l2"] <= args.grad_rtol,
            "%.2e" % out["m_rel_l2"])
    verdict("step: new second moment rel L2 <= %.0e" % args.grad_rtol, out["v_rel_l2"] <= args.grad_rtol,
            "%.2e" % out["v_rel_l2"])
    verdict("step: parameter update (new - old) rel L2 <= %.0e" % args.update_rtol,
            out["update_rel_l2"] <= args.update_rtol,
            "%.2e, max |diff| %.2e of max |update| %.2e (key bias apart: its gradient is 0, dua's fp32 value "
            "%.1e, update diff %.1e); new params max |diff| %.2e"
            % (out["update_rel_l2"], out["update_max_abs_diff"], out["update_max_abs"],
               out["key_bias_grad_max_abs_dua"], out["key_bias_update_max_abs_diff"], out["params_max_abs_diff"]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["eval", "grads", "step", "all"])
    ap.add_argument("dirs", nargs="+", help="dua-train output directories (model.ckpt inside)")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--lib", help="libdua.so [BUILD/host/libdua.so]")
    ap.add_argument("--device", help="dua device selector (default: DUA_DEVICE, first GPU, first CPU)")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"], help="torch eval precision")
    ap.add_argument("--chunk", type=int, default=64, help="examples per torch forward")
    ap.add_argument("--grad-batch", default=None, help="dua_model_grads --batch (default train:<step>)")
    ap.add_argument("--tau", default="1,0.02",
                    help="temperatures of the soft-routing gradient checks (comma-separated; a low one drives "
                         "the bias of some levels below skip_bias, so those blocks are skipped)")
    ap.add_argument("--loss-rtol", type=float, default=1e-5)
    ap.add_argument("--logit-atol", type=float, default=1e-3)
    ap.add_argument("--grad-rtol", type=float, default=1e-4)
    ap.add_argument("--update-rtol", type=float, default=1e-4)
    ap.add_argument("--json", help="write every figure to this file")
    args = ap.parse_args()
    args.lib = args.lib or os.path.join(args.build, "host", "libdua.so")
    args.dua_run = os.path.join(args.build, "tools", "dua-run")
    args.dua_train = os.path.join(args.build, "tools", "dua-train")
    args.grads_helper = os.path.join(args.build, "bench", "dua_model_grads")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    report = {"torch": torch.__version__, "runs": []}
    for d in args.dirs:
        ck = Checkpoint(d)
        entry = {"dir": d}
        if args.what in ("eval", "all"):
            entry["eval"] = check_eval(args, d)
        if args.what in ("grads", "all"):
            entry["grads"] = [check_grads(args, d, "hard", args.grad_batch),
                              check_grads(args, d, "dense", args.grad_batch)]
            if ck.native:
                for tau in args.tau.split(","):
                    entry["grads"].append(check_grads(args, d, "soft", args.grad_batch, float(tau)))
        if args.what in ("step", "all"):
            entry["step"] = check_step(args, d)
        report["runs"].append(entry)
    report["failed"] = FAILED
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    print("\n%d check(s) failed%s" % (len(FAILED), (": " + "; ".join(FAILED)) if FAILED else ""))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
