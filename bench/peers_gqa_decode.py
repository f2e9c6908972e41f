"""GQA decode peers on one CUDA GPU: FlexAttention (enable_gqa) and SDPA (enable_gqa) for one query token
per sequence against a contiguous KV cache with fewer K/V heads than query heads, with the block mask of
shared/devkit/peers.py (key block n visible from the last query block m iff n // g == m // g, g = arity **
(D - depth)). Prints one JSON object per line, as peers.py does, so bench/gpu_decode_mma.sh can put dua's
paged GQA decode next to it in the same call. peers.py itself has no GQA.

  python3 bench/peers_gqa_decode.py --n 16384 --batch 32 --heads 32 --kv-heads 8 --dim 128 --depth 0 2 4
"""
import argparse, json
import torch, torch.nn.functional as F
from triton.testing import do_bench
from torch.nn.attention.flex_attention import flex_attention, create_block_mask


def tree_depth(nb, p):
    d, span = 0, 1
    while span < nb:
        span *= p
        d += 1
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[16384])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--arity", type=int, default=2)
    ap.add_argument("--depth", type=int, nargs="+", default=[0, 2, 4])
    a = ap.parse_args()
    dev, dtype = "cuda", torch.float16
    flex = torch.compile(flex_attention, dynamic=False)
    for n in a.n:
        gen = torch.Generator(device=dev).manual_seed(0)
        q = torch.randn(a.batch, a.heads, 1, a.dim, device=dev, dtype=dtype, generator=gen)
        k = torch.randn(a.batch, a.kv_heads, n, a.dim, device=dev, dtype=dtype, generator=gen)
        v = torch.randn_like(k)
        kv_bytes = 2 * k.numel() * k.element_size()
        last, nb = n - 1, -(-n // a.block)
        D = tree_depth(nb, a.arity)
        for d in a.depth:
            g = a.arity ** (D - d)

            def mask_mod(b, h, qi, ki):
                return (ki // a.block) // g == (last // a.block) // g

            bm = create_block_mask(mask_mod, None, None, 1, n, device=dev, BLOCK_SIZE=a.block)
            visible = mask_mod(0, 0, 0, torch.arange(n, device=dev)).float().mean().item()
            runs = {"flex_gqa_decode": lambda: flex(q, k, v, block_mask=bm, enable_gqa=True)}
            if d == 0:
                runs["sdpa_gqa_dense_decode"] = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
            for name, fn in runs.items():
                fn()
                torch.cuda.synchronize()
                ms = do_bench(fn, warmup=25, rep=200, return_mode="median")
                read = kv_bytes * (visible if name.startswith("flex") else 1.0)
                print(json.dumps(dict(peer=name, pass_="decode", n=n, batch=a.batch, heads=a.heads,
                                      kv_heads=a.kv_heads, dim=a.dim, block=a.block, depth=d, dtype="fp16",
                                      visible_fraction=visible, ms=round(ms, 5),
                                      kv_gb_per_s=round(read / ms / 1e6, 1), gpu=torch.cuda.get_device_name())),
                      flush=True)


if __name__ == "__main__":
    main()
