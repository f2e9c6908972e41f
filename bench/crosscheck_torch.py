#!/usr/bin/env python3
"""Cross-checks dua's attention forward against PyTorch (CPU, float64) on the same random inputs.

dua is driven through its public C API with ctypes (build/host/libdua.so); PyTorch computes
scaled_dot_product_attention with an explicit boolean mask built here from the layout formulas of
shared/DESIGN.md section 2 (written independently of dua's code, peers.py style), and the LSE with
logsumexp over the same masked scores. Cases cover dense, block-diagonal, intermediate depths with arity 2
and 3, shift, causal, window, sink, per-head depths, GQA, N not a multiple of the block, content paths,
caller lists with empty rows, and fp16.

Tolerance: fp32 |x - ref| <= 1e-4 + 1e-3 |ref| (DESIGN.md section 6); fp16 storage (inputs rounded to fp16
for both sides, output stored as fp16) |x - ref| <= 2e-3 + 4e-3 |ref|. LSE uses the same tolerance.
Rows with no visible key are NaN in PyTorch; there dua must give exactly 0 and LSE -inf. Outputs are
poisoned (NaN) before each call, so an element dua never writes fails. Exit status 1 on any failure.

  python3 bench/crosscheck_torch.py                      # build/host/libdua.so, DUA_DEVICE or the default
  python3 bench/crosscheck_torch.py --device cpu --algos auto list naive --only gqa tail
"""
import argparse
import ctypes as C
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------- ctypes mirrors of include/dua.h

DUA_F32, DUA_F16 = 0, 1
ALGOS = {"auto": 0, "rule": 1, "list": 2, "naive": 3}
DUA_ERROR_UNSUPPORTED = -2002


class ContextOptions(C.Structure):
    _fields_ = [("device_index", C.c_int), ("selector", C.c_char_p), ("log", C.c_void_p),
                ("log_user", C.c_void_p), ("log_level", C.c_int), ("disable_fast_paths", C.c_int),
                ("reserved", C.c_int * 16)]


class DeviceInfo(C.Structure):
    _fields_ = [("index", C.c_int), ("platform_index", C.c_int), ("type", C.c_int),
                ("platform_name", C.c_char * 128), ("platform_version", C.c_char * 128),
                ("name", C.c_char * 128), ("vendor", C.c_char * 128), ("device_version", C.c_char * 128),
                ("driver_version", C.c_char * 128), ("opencl_c_version", C.c_char * 64),
                ("compute_units", C.c_uint), ("max_clock_mhz", C.c_uint), ("global_mem_bytes", C.c_uint64),
                ("local_mem_bytes", C.c_uint64), ("max_alloc_bytes", C.c_uint64),
                ("max_work_group_size", C.c_size_t), ("preferred_work_group_multiple", C.c_size_t),
                ("native_vector_width_float", C.c_uint), ("native_vector_width_half", C.c_uint),
                ("has_fp16", C.c_int), ("has_fp64", C.c_int), ("has_subgroups", C.c_int),
                ("has_subgroup_shuffle", C.c_int), ("has_intel_subgroup_mma", C.c_int),
                ("nv_compute_capability", C.c_int), ("has_pci_bus_info", C.c_int), ("pci_domain", C.c_int),
                ("pci_bus", C.c_int), ("pci_device", C.c_int), ("pci_function", C.c_int),
                ("numa_node", C.c_int), ("nv_mma_probed", C.c_int), ("nv_mma_f16", C.c_int),
                ("nv_mma_tf32", C.c_int), ("reserved", C.c_int * 16)]


class Tensor(C.Structure):
    _fields_ = [("buffer", C.c_void_p), ("offset", C.c_size_t), ("dtype", C.c_int),
                ("shape", C.c_int64 * 4), ("strides", C.c_int64 * 4)]


class LayoutDesc(C.Structure):
    _fields_ = [("seq_len", C.c_int32), ("block", C.c_int32), ("batch", C.c_int32), ("heads", C.c_int32),
                ("kv_heads", C.c_int32), ("arity", C.c_int32), ("arities", C.POINTER(C.c_int32)),
                ("depths", C.POINTER(C.c_int32)), ("shift", C.c_int32), ("window", C.c_int32),
                ("sink", C.c_int32), ("causal", C.c_int32), ("paths", C.POINTER(C.c_uint8))]


class Params(C.Structure):
    _fields_ = [("scale", C.c_float), ("algo", C.c_int), ("level_bias", C.POINTER(Tensor))]


class Density(C.Structure):
    _fields_ = [("pairs", C.c_double), ("blocks", C.c_double), ("full_blocks", C.c_double),
                ("partial_blocks", C.c_double)]


class DuaError(RuntimeError):
    def __init__(self, status, text):
        super().__init__(text)
        self.status = status


class Dua:
    """The few entry points the cross-check needs, with their C signatures."""

    def __init__(self, path, device):
        L = self.L = C.CDLL(path)
        P, vp, sz = C.POINTER, C.c_void_p, C.c_size_t
        sig = {
            "dua_status_string": (C.c_char_p, [C.c_int]),
            "dua_version": (C.c_char_p, []),
            "dua_context_options_init": (None, [P(ContextOptions)]),
            "dua_context_create": (C.c_int, [P(ContextOptions), P(vp)]),
            "dua_context_destroy": (None, [vp]),
            "dua_context_last_error": (C.c_char_p, [vp]),
            "dua_context_device_info": (C.c_int, [vp, P(DeviceInfo)]),
            "dua_context_finish": (C.c_int, [vp]),
            "dua_buffer_create": (C.c_int, [vp, sz, P(vp)]),
            "dua_buffer_destroy": (None, [vp]),
            "dua_buffer_write": (C.c_int, [vp, sz, sz, vp]),
            "dua_buffer_read": (C.c_int, [vp, sz, sz, vp]),
            "dua_buffer_fill_bytes": (C.c_int, [vp, sz, sz, C.c_uint8]),
            "dua_tensor_contiguous": (Tensor, [vp, sz, C.c_int, C.c_int64, C.c_int64, C.c_int64, C.c_int64]),
            "dua_layout_create": (C.c_int, [P(LayoutDesc), P(vp), C.c_char_p, sz]),
            "dua_layout_create_from_lists": (C.c_int, [P(LayoutDesc), P(C.c_int32), P(C.c_int32), P(vp),
                                                       C.c_char_p, sz]),
            "dua_layout_destroy": (None, [vp]),
            "dua_layout_density_get": (C.c_int, [vp, P(Density)]),
            "dua_attention_params_init": (None, [P(Params)]),
            "dua_attention_forward": (C.c_int, [vp, vp, P(Params), P(Tensor), P(Tensor), P(Tensor), P(Tensor),
                                                P(Tensor)]),
            "dua_attention_backward": (C.c_int, [vp, vp, P(Params)] + [P(Tensor)] * 10),
        }
        for name, (res, args) in sig.items():
            try:
                f = getattr(L, name)
            except AttributeError:
                sys.exit(f"crosscheck: {path} has no {name} (is the forward pass built?)")
            f.restype, f.argtypes = res, args
        opts = ContextOptions()
        L.dua_context_options_init(C.byref(opts))
        if device is not None:
            opts.selector = device.encode()
        self.ctx = C.c_void_p()
        self.check(L.dua_context_create(C.byref(opts), C.byref(self.ctx)), "dua_context_create")
        self.info = DeviceInfo()
        self.check(L.dua_context_device_info(self.ctx, C.byref(self.info)), "dua_context_device_info")

    def check(self, st, what):
        if st != 0:
            text = self.L.dua_status_string(st).decode()
            last = self.L.dua_context_last_error(self.ctx).decode() if getattr(self, "ctx", None) else ""
            raise DuaError(st, f"{what}: {text} ({st}) {last}")

    def upload(self, array):
        buf = C.c_void_p()
        data = np.ascontiguousarray(array)
        self.check(self.L.dua_buffer_create(self.ctx, data.nbytes, C.byref(buf)), "dua_buffer_create")
        self.check(self.L.dua_buffer_write(buf, 0, data.nbytes, data.ctypes.data), "dua_buffer_write")
        return buf

    def empty(self, nbytes, poison=True):
        buf = C.c_void_p()
        self.check(self.L.dua_buffer_create(self.ctx, nbytes, C.byref(buf)), "dua_buffer_create")
        if poison:  # 0xff bytes are NaN in fp32 and fp16
            self.check(self.L.dua_buffer_fill_bytes(buf, 0, nbytes, 0xFF), "dua_buffer_fill_bytes")
        return buf

    def download(self, buf, shape, dtype):
        out = np.empty(shape, dtype=dtype)
        self.check(self.L.dua_buffer_read(buf, 0, out.nbytes, out.ctypes.data), "dua_buffer_read")
        return out

    def layout(self, case, B, H, Hkv, N):
        d = LayoutDesc(seq_len=N, block=case["block"], batch=B, heads=H, kv_heads=Hkv, arity=case["arity"],
                       shift=case.get("shift", 0), window=case.get("window", 0), sink=case.get("sink", 0),
                       causal=int(case.get("causal", False)))
        keep = []
        if case.get("depths") is not None:
            arr = (C.c_int32 * H)(*case["depths"])
            keep.append(arr)
            d.depths = C.cast(arr, C.POINTER(C.c_int32))
        if case.get("paths") is not None:
            p = np.ascontiguousarray(case["paths"], dtype=np.uint8)
            keep.append(p)
            d.paths = p.ctypes.data_as(C.POINTER(C.c_uint8))
        out, err = C.c_void_p(), C.create_string_buffer(512)
        if case.get("lists") is not None:
            counts, indices = (np.ascontiguousarray(a, dtype=np.int32) for a in case["lists"])
            st = self.L.dua_layout_create_from_lists(C.byref(d), counts.ctypes.data_as(C.POINTER(C.c_int32)),
                                                     indices.ctypes.data_as(C.POINTER(C.c_int32)),
                                                     C.byref(out), err, 512)
        else:
            st = self.L.dua_layout_create(C.byref(d), C.byref(out), err, 512)
        if st != 0:
            raise DuaError(st, f"dua_layout_create: {err.value.decode()}")
        return out

    def density(self, layout):
        dn = Density()
        self.check(self.L.dua_layout_density_get(layout, C.byref(dn)), "dua_layout_density_get")
        return dn

    def forward(self, layout, algo, q, k, v, dtype):
        """q (B,H,N,D), k/v (B,Hkv,N,D) float32 arrays (already rounded when dtype is fp16). Returns O, LSE."""
        B, H, N, D = q.shape
        Hkv = k.shape[1]
        np_dt, dt = (np.float16, DUA_F16) if dtype == "fp16" else (np.float32, DUA_F32)
        bufs = [self.upload(a.astype(np_dt)) for a in (q, k, v)]
        es = np.dtype(np_dt).itemsize
        ob, lb = self.empty(B * H * N * D * es), self.empty(B * H * N * 4)
        bufs += [ob, lb]
        try:
            tq = self.L.dua_tensor_contiguous(bufs[0], 0, dt, B, H, N, D)
            tk = self.L.dua_tensor_contiguous(bufs[1], 0, dt, B, Hkv, N, D)
            tv = self.L.dua_tensor_contiguous(bufs[2], 0, dt, B, Hkv, N, D)
            to = self.L.dua_tensor_contiguous(ob, 0, dt, B, H, N, D)
            tl = self.L.dua_tensor_contiguous(lb, 0, DUA_F32, B, H, N, 1)
            p = Params()
            self.L.dua_attention_params_init(C.byref(p))
            p.algo = ALGOS[algo]
            self.check(self.L.dua_attention_forward(self.ctx, layout, C.byref(p), C.byref(tq), C.byref(tk),
                                                    C.byref(tv), C.byref(to), C.byref(tl)),
                       "dua_attention_forward")
            self.check(self.L.dua_context_finish(self.ctx), "dua_context_finish")
            o = self.download(ob, (B, H, N, D), np_dt).astype(np.float64)
            lse = self.download(lb, (B, H, N), np.float32).astype(np.float64)
        finally:
            for b in bufs:
                self.L.dua_buffer_destroy(b)
        return o, lse

    def gradients(self, layout, algo, q, k, v, g, dtype):
        """Forward, then backward of dO = g on the device. Returns dQ, dK, dV as float64 arrays."""
        B, H, N, D = q.shape
        Hkv = k.shape[1]
        np_dt, dt = (np.float16, DUA_F16) if dtype == "fp16" else (np.float32, DUA_F32)
        es = np.dtype(np_dt).itemsize
        bufs = [self.upload(a.astype(np_dt)) for a in (q, k, v, g)]
        bufs += [self.empty(B * H * N * D * es), self.empty(B * H * N * 4)]  # O, LSE
        bufs += [self.empty(B * H * N * D * es), self.empty(B * Hkv * N * D * es), self.empty(B * Hkv * N * D * es)]
        try:
            shapes = [(dt, B, H), (dt, B, Hkv), (dt, B, Hkv), (dt, B, H), (dt, B, H), (DUA_F32, B, H),
                      (dt, B, H), (dt, B, Hkv), (dt, B, Hkv)]
            t = [self.L.dua_tensor_contiguous(bufs[i], 0, sdt, sb, sh, N, 1 if i == 5 else D)
                 for i, (sdt, sb, sh) in enumerate(shapes)]
            tq, tk, tv, tg, to, tl, tdq, tdk, tdv = t
            p = Params()
            self.L.dua_attention_params_init(C.byref(p))
            p.algo = ALGOS[algo]
            self.check(self.L.dua_attention_forward(self.ctx, layout, C.byref(p), C.byref(tq), C.byref(tk),
                                                    C.byref(tv), C.byref(to), C.byref(tl)), "dua_attention_forward")
            self.check(self.L.dua_attention_backward(self.ctx, layout, C.byref(p), C.byref(tq), C.byref(tk),
                                                     C.byref(tv), C.byref(to), C.byref(tl), C.byref(tg),
                                                     C.byref(tdq), C.byref(tdk), C.byref(tdv), None),
                       "dua_attention_backward")
            self.check(self.L.dua_context_finish(self.ctx), "dua_context_finish")
            return (self.download(bufs[6], (B, H, N, D), np_dt).astype(np.float64),
                    self.download(bufs[7], (B, Hkv, N, D), np_dt).astype(np.float64),
                    self.download(bufs[8], (B, Hkv, N, D), np_dt).astype(np.float64))
        finally:
            for b in bufs:
                self.L.dua_buffer_destroy(b)

    def close(self):
        self.L.dua_context_destroy(self.ctx)


# ---------------------------------------------------------------- masks (DESIGN.md section 2, independently)

def tree_depth(nb, p):
    d, span = 0, 1
    while span < nb:
        span *= p
        d += 1
    return d


def mask_of(case, B, H, N):
    """Boolean (B, H, N, N): True where key j is visible from query i."""
    blk, p = case["block"], case["arity"]
    nb = -(-N // blk)
    D = tree_depth(nb, p)
    i = torch.arange(N).view(N, 1)
    j = torch.arange(N).view(1, N)
    qb, kb = i // blk, j // blk
    mask = torch.zeros(B, H, N, N, dtype=torch.bool)
    for b in range(B):
        for h in range(H):
            if case.get("lists") is not None:
                counts, indices = case["lists"]
                row = (b * H + h) * nb
                allowed = torch.zeros(nb, nb, dtype=torch.bool)
                for m in range(nb):
                    for t in range(counts[row + m]):
                        allowed[m, indices[(row + m) * nb + t]] = True
                vis = allowed[qb.expand(N, N), kb.expand(N, N)]
            else:
                depths = case.get("depths")
                d = 0 if depths is None else depths[h]
                d = D if d < 0 else d
                if case.get("paths") is not None:
                    path = torch.as_tensor(case["paths"][b, h, :, :d].astype(np.int64))  # (nb, d)
                    same = (path.view(nb, 1, d) == path.view(1, nb, d)).all(dim=2) if d else \
                        torch.ones(nb, nb, dtype=torch.bool)
                    vis = same[qb.expand(N, N), kb.expand(N, N)]
                else:
                    g = p ** (D - d)
                    s = case.get("shift", 0)
                    vis = (qb + s) // g == (kb + s) // g
                if case.get("window", 0):
                    vis = vis | ((i - j).abs() <= case["window"])
                if case.get("sink", 0):
                    vis = vis | (j < case["sink"])
            if case.get("causal"):
                vis = vis & (j <= i)
            mask[b, h] = vis
    return mask


def torch_reference(q, k, v, mask):
    """float64 SDPA with the boolean mask, and LSE = logsumexp of the masked scaled scores."""
    group = q.shape[1] // k.shape[1]
    qt = torch.as_tensor(q, dtype=torch.float64)
    kt = torch.as_tensor(k, dtype=torch.float64).repeat_interleave(group, dim=1)
    vt = torch.as_tensor(v, dtype=torch.float64).repeat_interleave(group, dim=1)
    out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask)
    scores = (qt @ kt.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    lse = torch.logsumexp(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return out.numpy(), lse.numpy()


def torch_gradients(q, k, v, g, mask):
    """float64 autograd of sum(O * g) through masked attention. Rows with no visible key get a dummy key 0 and
    their output is multiplied by 0, so they contribute exactly nothing (dua's rule: O = 0, no gradient)."""
    group = q.shape[1] // k.shape[1]
    qt, kt, vt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (q, k, v))
    has_key = mask.any(dim=-1, keepdim=True)
    safe = mask.clone()
    safe[..., 0] |= ~has_key[..., 0]
    kk, vv = kt.repeat_interleave(group, dim=1), vt.repeat_interleave(group, dim=1)
    scores = (qt @ kk.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    out = torch.softmax(scores.masked_fill(~safe, float("-inf")), dim=-1) @ vv * has_key.double()
    (out * torch.as_tensor(g, dtype=torch.float64)).sum().backward()
    return qt.grad.numpy(), kt.grad.numpy(), vt.grad.numpy()


def grad_tolerance(dtype):
    """Gradients sum up to N products: fp32 2e-4 + 2e-3|ref|; fp16 storage rounds inputs and outputs: 3e-3 + 6e-3|ref|."""
    return (3e-3, 6e-3) if dtype == "fp16" else (2e-4, 2e-3)


def run_grad_case(dua, c, algo, rng):
    B, H, Hkv, N, Dh = c["B"], c["H"], c["Hkv"], c["N"], c["Dh"]
    dtype = c.get("dtype", "fp32")
    q, g = (rng.uniform(-1, 1, size=(B, H, N, Dh)).astype(np.float32) for _ in range(2))
    k, v = (rng.uniform(-1, 1, size=(B, Hkv, N, Dh)).astype(np.float32) for _ in range(2))
    if dtype == "fp16":
        q, k, v, g = (a.astype(np.float16).astype(np.float32) for a in (q, k, v, g))
    layout = dua.layout(c, B, H, Hkv, N)
    try:
        grads = dua.gradients(layout, algo, q, k, v, g, dtype)
    finally:
        dua.L.dua_layout_destroy(layout)
    refs = torch_gradients(q, k, v, g, mask_of(c, B, H, N))
    atol, rtol = grad_tolerance(dtype)
    ok, notes, worst = True, [], 0.0
    for name, x, ref in zip(("dQ", "dK", "dV"), grads, refs):
        if np.isnan(x).any():
            ok = False
            notes.append(f"{name}: {int(np.isnan(x).sum())} NaN/unwritten")
        err = np.abs(x - ref)
        worst = max(worst, float(err.max()))
        bad = err > atol + rtol * np.abs(ref)
        if bad.any():
            ok = False
            notes.append(f"{name}: {int(bad.sum())} values out of tolerance")
    return dict(ok=ok, max_err=worst, note="; ".join(notes))


# ---------------------------------------------------------------- cases

def make_cases(rng):
    base = dict(B=2, H=4, Hkv=4, N=512, Dh=64, block=64, arity=2)

    def case(name, **kw):
        c = dict(base)
        c.update(kw)
        c["name"] = name
        return c

    cases = [
        case("dense", depths=[0] * 4),
        case("block_diagonal", depths=[-1] * 4),
        case("depth1_p2", depths=[1] * 4),
        case("depth2_p3", arity=3, N=600, depths=[2] * 4),  # nb 10, D 3
        case("depth1_p3_causal", arity=3, N=600, depths=[1] * 4, causal=True),
        case("per_head_depths", depths=[0, 1, 2, -1]),
        case("shift", depths=[2] * 4, shift=1),
        case("causal_dense", depths=[0] * 4, causal=True),
        case("causal_block_diag", depths=[-1] * 4, causal=True),
        case("window", depths=[-1] * 4, window=50),
        case("sink", depths=[-1] * 4, sink=7),
        case("causal_window_sink", depths=[2] * 4, window=33, sink=5, causal=True),
        case("gqa_4to2", Hkv=2, depths=[1, 2, 3, -1], causal=True),
        case("gqa_4to1", Hkv=1, depths=[0] * 4, window=20),
        case("tail_n500", N=500, depths=[1] * 4),
        case("tail_n77_blk16", N=77, block=16, depths=[2] * 4, causal=True, sink=3),
        case("n_below_block", N=40, depths=[-1] * 4, causal=True),
        case("dim32", Dh=32, depths=[1] * 4),
        case("dim128", Dh=128, N=300, depths=[2] * 4, causal=True),
        case("fp16_dense", dtype="fp16", depths=[0] * 4),
        case("fp16_causal_window", dtype="fp16", depths=[-1] * 4, window=40, causal=True),
        case("fp16_gqa_tail", dtype="fp16", Hkv=2, N=333, depths=[1] * 4, sink=4),
    ]
    # content tree: random paths (digits < arity), per batch/head/block, root first
    N, blk, p = 512, 64, 2
    nb = N // blk
    D = tree_depth(nb, p)
    cases.append(case("content_paths", depths=[1, 2, 3, 0],
                      paths=rng.integers(0, p, size=(2, 4, nb, D), dtype=np.uint8), causal=True))
    # caller lists with some query blocks listing nothing: those rows must be 0 (torch gives NaN)
    counts = np.zeros(2 * 4 * nb, dtype=np.int32)
    indices = np.zeros(2 * 4 * nb * nb, dtype=np.int32)
    for r in range(2 * 4 * nb):
        chosen = np.sort(rng.choice(nb, size=int(rng.integers(0, 4)), replace=False)) if r % 5 else []
        counts[r] = len(chosen)
        indices[r * nb:r * nb + len(chosen)] = chosen
    cases.append(case("lists_empty_rows", lists=(counts, indices)))
    cases.append(case("lists_empty_rows_causal", lists=(counts, indices), causal=True))
    return cases


def tolerance(dtype):
    return (2e-3, 4e-3) if dtype == "fp16" else (1e-4, 1e-3)


def run_case(dua, c, algo, rng):
    B, H, Hkv, N, Dh = c["B"], c["H"], c["Hkv"], c["N"], c["Dh"]
    dtype = c.get("dtype", "fp32")
    q = rng.uniform(-1, 1, size=(B, H, N, Dh)).astype(np.float32)
    k = rng.uniform(-1, 1, size=(B, Hkv, N, Dh)).astype(np.float32)
    v = rng.uniform(-1, 1, size=(B, Hkv, N, Dh)).astype(np.float32)
    if dtype == "fp16":  # both sides see the same rounded inputs
        q, k, v = (a.astype(np.float16).astype(np.float32) for a in (q, k, v))
    layout = dua.layout(c, B, H, Hkv, N)
    try:
        dens = dua.density(layout)
        o, lse = dua.forward(layout, algo, q, k, v, dtype)
    finally:
        dua.L.dua_layout_destroy(layout)
    mask = mask_of(c, B, H, N)
    ref, ref_lse = torch_reference(q, k, v, mask)
    has_key = mask.any(dim=-1).numpy()  # (B, H, N)
    atol, rtol = tolerance(dtype)
    notes = []
    ok = True
    if np.isnan(o).any() or np.isnan(lse).any():
        ok = False
        notes.append(f"{int(np.isnan(o).sum())} NaN/unwritten O, {int(np.isnan(lse).sum())} NaN LSE")
    err = np.abs(o[has_key] - ref[has_key])
    max_err = float(err.max()) if err.size else 0.0
    bad = err > atol + rtol * np.abs(ref[has_key])
    if bad.any():
        ok = False
        notes.append(f"{int(bad.sum())} O values out of tolerance")
    lerr = np.abs(lse[has_key] - ref_lse[has_key])
    max_lerr = float(lerr.max()) if lerr.size else 0.0
    lbad = ~(lerr <= atol + rtol * np.abs(ref_lse[has_key]))
    if lbad.any():
        ok = False
        notes.append(f"{int(lbad.sum())} LSE values out of tolerance")
    empty = ~has_key
    n_empty = int(empty.sum())
    if n_empty:
        if not (o[empty] == 0).all():
            ok = False
            notes.append("rows with no visible key are not 0")
        if not np.all(np.isneginf(lse[empty])):
            ok = False
            notes.append("rows with no visible key have LSE != -inf")
    pairs = float(mask.double().mean())
    if abs(pairs - dens.pairs) > 1e-9:
        ok = False
        notes.append(f"dua density {dens.pairs:.6f} != mask density {pairs:.6f}")
    return dict(ok=ok, max_err=max_err, max_lse_err=max_lerr, empty=n_empty, density=pairs,
                note="; ".join(notes))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default=os.path.join(HERE, "..", "build", "host", "libdua.so"),
                    help="libdua.so to load (default: build/host/libdua.so next to this script)")
    ap.add_argument("--device", default=None, help="dua device selector (default: DUA_DEVICE, then dua's rule)")
    ap.add_argument("--algos", nargs="+", default=["auto", "list", "naive"], choices=sorted(ALGOS),
                    help="dua algorithms to check on every case (default: auto list naive)")
    ap.add_argument("--only", nargs="+", default=None, help="run only cases whose name contains one of these")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--grad", action="store_true",
                    help="check dQ, dK, dV of dua_attention_backward against torch autograd (algos auto, list)")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    dua = Dua(os.path.abspath(a.lib), a.device)
    print(f"dua {dua.L.dua_version().decode()} on {dua.info.name.decode()} ({dua.info.platform_name.decode()}, "
          f"driver {dua.info.driver_version.decode()}); torch {torch.__version__} CPU float64 reference")
    print("tolerance: fp32 |x-ref| <= 1e-4 + 1e-3|ref|, fp16 <= 2e-3 + 4e-3|ref| (O and LSE); "
          "empty rows: O exactly 0, LSE -inf")
    cases = make_cases(rng)
    if a.only:
        cases = [c for c in cases if any(s in c["name"] for s in a.only)]
    if a.grad:
        sys.exit(grad_main(dua, cases, [x for x in a.algos if x in ("auto", "list", "rule")], rng))
    head = f"{'case':26} {'algo':5} {'N':>5} {'B':>2} {'H':>2} {'Hkv':>3} {'Dh':>3} {'blk':>3} {'dtype':5} " \
           f"{'density':>8} {'empty':>5} {'max|dO|':>9} {'max|dLSE|':>9}  result"
    print(head)
    print("-" * len(head))
    failures = skipped = 0
    for c in cases:
        for algo in a.algos:
            dtype = c.get("dtype", "fp32")
            line = f"{c['name']:26} {algo:5} {c['N']:5} {c['B']:2} {c['H']:2} {c['Hkv']:3} {c['Dh']:3} " \
                   f"{c['block']:3} {dtype:5} "
            if c.get("lists") is not None and algo in ("rule", "naive"):
                skipped += 1  # both need a rule layout by definition (dua.h): not a gap
                print(line + f"{'':>8} {'':>5} {'':>9} {'':>9}  n/a ({algo} needs a rule layout)")
                continue
            try:
                r = run_case(dua, c, algo, rng)
            except DuaError as e:
                if e.status == DUA_ERROR_UNSUPPORTED:
                    skipped += 1
                    print(line + f"{'':>8} {'':>5} {'':>9} {'':>9}  SKIP unsupported: {e}")
                    continue
                failures += 1
                print(line + f"{'':>8} {'':>5} {'':>9} {'':>9}  FAIL {e}")
                continue
            failures += not r["ok"]
            print(line + f"{r['density']:8.4f} {r['empty']:5d} {r['max_err']:9.2e} {r['max_lse_err']:9.2e}  "
                  + ("ok" if r["ok"] else "FAIL " + r["note"]), flush=True)
    dua.close()
    total = len(cases) * len(a.algos)
    print(f"{total - failures - skipped} passed, {failures} failed, {skipped} skipped (n/a or unsupported) of {total}")
    sys.exit(1 if failures else 0)


def grad_main(dua, cases, algos, rng):
    print("gradients vs torch autograd (float64): fp32 |x-ref| <= 2e-4 + 2e-3|ref|, fp16 <= 3e-3 + 6e-3|ref|")
    print(f"{'case':26} {'algo':5} {'N':>5} {'dtype':5} {'max|dX|':>9}  result")
    failures = skipped = total = 0
    for c in cases:
        for algo in algos:
            total += 1
            line = f"{c['name']:26} {algo:5} {c['N']:5} {c.get('dtype', 'fp32'):5} "
            if c.get("lists") is not None and algo == "rule":
                skipped += 1
                print(line + f"{'':>9}  n/a (rule needs a rule layout)")
                continue
            try:
                r = run_grad_case(dua, c, algo, rng)
            except DuaError as e:
                failures += 1
                print(line + f"{'':>9}  FAIL {e}")
                continue
            failures += not r["ok"]
            print(line + f"{r['max_err']:9.2e}  " + ("ok" if r["ok"] else "FAIL " + r["note"]), flush=True)
    dua.close()
    print(f"{total - failures - skipped} passed, {failures} failed, {skipped} skipped (n/a) of {total}")
    return 1 if failures else 0


if __name__ == "__main__":
    main()
