/* attn_fwd_mma.cl: NVIDIA tensor-core block-sparse attention forward (inline PTX: cp.async, ldmatrix,
 * mma.sync, shfl.sync, ex2.approx), FlashAttention-2 style, for fp16 storage (m16n8k16 f16 x f16 -> f32) and,
 * with DUA_TF32=1, for fp32 storage through tf32 (m16n8k8 tf32 x tf32 -> f32).
 *
 * Same arguments and semantics as dua_attn_fwd in attn_fwd.cl (layout enumeration DUA_ENUM, tree membership
 * DUA_TREE, level bias DUA_BIAS, causal, window, sink, tails, GQA, strides, LSE, empty rows), and the same
 * per-block skip decisions: skipped key blocks are never loaded.
 *
 * A work-group of 4 warps (128 work-items) owns BM = 64 MT query rows of one (batch, query head), 16 MT rows
 * per warp (MT = 1 or 2). Q (BM x HEAD_DIM) goes once into A fragments held in registers (fp16: staged
 * through local memory and ldmatrix; tf32: straight from global memory). Key tiles of BN keys are staged in
 * local memory (K and V one buffer each, with cp.async: V(j) streams in while S = Q K(j)^T runs, K(j+1) while
 * O += P V(j) runs; on the wgmma path both double-buffered, STAGES 2). Scores, the online softmax (fp32, exp2
 * with log2(e) folded into the scale) and O live in mma C fragments; P is rounded to the operand type and
 * re-packed from C into A fragments.
 *
 * tf32 operands (10-bit mantissa, 8-bit exponent): Q (once per work-group) and P are rounded to nearest, ties
 * away from zero (half a tf32 ulp added to the bit pattern); K and V go to the tensor core as stored, which
 * reads their upper 19 bits (truncation, relative error < 2^-10, as Triton's tf32 dot): rounding them too
 * cost 7% at N = 8192 on an H100 (two integer adds per mma operand pair). Products are accumulated in fp32.
 * The reduction dimension of each mma is permuted so that every operand is one 64-bit (Q, K) or two 32-bit
 * (V) local loads: k-index t of an m16n8k8 step stands for element 2t of its 8, and t + 4 for element 2t + 1,
 * in both operands (a sum does not care about its order).
 *
 * Requirements checked by the host (forward_nv_mma.c): fp16 storage or fp32 storage with tf32 allowed,
 * HEAD_DIM 64 or 128, block size >= 64, every row of q, k, v, o 16-byte aligned.
 *
 * DUA_WGMMA=1 (Hopper, fp16, HEAD_DIM 64, or 128 with MT 1; host: forward_nv_mma.c where the wgmma probe
 * passed) runs both
 * products on the warpgroup MMA of nv_wgmma_ops.cl: the work-group is one warpgroup (4 warps) and each of
 * its MT m-tiles of 64 query rows (one wgmma per product and k-step) computes S = Q K^T with Q and K read
 * by the tensor core from local memory, and O += P V with P from registers and V from local memory; Q, K and
 * V tiles are stored in the 128-byte swizzle (TILE_AT). MT 2 runs the two m-tiles as a pipeline: S0 and S1
 * are issued together, m-tile 0's softmax runs while S1 computes, and m-tile 1's while O0 += P0 V does. The
 * running max of a row moves only when the row's max grows by more than 8 (log2 units), so that O is
 * rescaled rarely (one warp vote per m-tile and tile; p stays <= 256, exact in f16's range). At HEAD_DIM 128
 * each 64-row tile is two 64-column panels (TILE_AT), S takes eight k-steps over both and O += P V is two
 * 64-column products; Q, K and V fill the 48 KB, so K and V have one buffer each (STAGES 1). The rest
 * (enumeration, masks, output) is the code below, unchanged.
 *
 * DUA_MMA_EMULATE=1 replaces each warp-level instruction by plain OpenCL over local memory (with barriers),
 * so that the kernel's indexing and layout logic can be checked on any device (PoCL); slow, tests only. */

#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif
#ifndef DUA_ENUM
#define DUA_ENUM 0
#endif
#ifndef DUA_BIAS
#define DUA_BIAS 0
#endif
/* DUA_SPLIT 1: the launch may split its tail (split_entry_of; host/attention/split_tail.c) */
#ifndef DUA_SPLIT
#define DUA_SPLIT 0
#endif

#ifndef DUA_TF32
#define DUA_TF32 0
#endif
/* DUA_WGMMA 1: both products on Hopper's warpgroup MMA (nv_wgmma_ops.cl): fp16, HEAD_DIM 64 (MT m-tiles) or
 * 128 (MT 1) */
#ifndef DUA_WGMMA
#define DUA_WGMMA 0
#endif
#ifndef MT
#define MT 1 /* m-tiles (16 rows) per warp; 2 halves the local-memory reads per mma (blocks >= 128) */
#endif
#define BM (64 * MT) /* query rows per work-group: 4 warps x 16 MT rows (m-tile mt: rows 64 mt + 16 warp) */
#define THREADS 128  /* 4 warps (wgmma: one warpgroup, each product one wgmma per m-tile of 64 rows) */
#define WARP_MT MT   /* m-tiles per warp */
#if DUA_TF32
typedef uint lds_t;                  /* fp32 bit patterns */
#define BN (HEAD_DIM > 64 ? 32 : 64) /* keys per K/V tile: two tiles of 64 x 128 floats exceed 48 KB */
#define CHUNK 4                      /* elements per 16-byte copy */
#define K_PITCH (HEAD_DIM + 8)       /* floats: the 64-bit K loads of a half-warp hit 32 different banks */
#define V_PITCH (HEAD_DIM + 4) /* floats: the 32-bit V loads of rows 2t, 2t + 1 hit 32 different banks */
#define KSTEPS (HEAD_DIM / 8)  /* k-steps of S = Q K^T (8 head-dim columns each) */
#define PSTEPS (BN / 8)        /* k-steps of O += P V (8 keys each) */
#else
typedef ushort lds_t; /* f16 bit patterns */
#define BN 64 /* keys per K/V tile */
#define CHUNK 8
#if DUA_WGMMA
#define K_PITCH HEAD_DIM /* tiles in wgmma's swizzled layout (TILE_AT), no padding */
#else
#define K_PITCH                                                                                              \
  (HEAD_DIM + 8) /* halves per local row: +16 bytes puts the 8 rows of an ldmatrix in 8 bank groups */
#endif
#define V_PITCH K_PITCH
#define KSTEPS (HEAD_DIM / 16) /* k-steps of S = Q K^T (16 head-dim columns each) */
#define PSTEPS (BN / 16)       /* k-steps of O += P V (16 keys each) */
#endif
#define STILES (BN / 8)       /* n-tiles of S (8 keys each) */
#define OTILES (HEAD_DIM / 8) /* n-tiles of O (8 head-dim columns each) */

#if HEAD_DIM % 16
#error "HEAD_DIM must be a multiple of 16"
#endif
#if !DUA_TF32 && MT > 1 && BN != 64
#error "the fp16 Q prologue stages 64 rows per m-tile"
#endif
#if DUA_WGMMA &&                                                                                             \
    (DUA_TF32 || (HEAD_DIM != 64 && HEAD_DIM != 128) || MT > 2 || BN != 64 || (HEAD_DIM == 128 && MT > 1))
#error "the wgmma path is fp16, HEAD_DIM 64 (1 or 2 m-tiles) or 128 (one m-tile), 64-key tiles"
#endif

/* Local offset (elements) of tile element (row r, column c): wgmma's swizzled 128-byte rows (WGMMA_TILE_AT,
 * nv_wgmma_ops.cl; K and V tiles with keys as rows, Q with query rows; at head dim 128 each 64-row tile is
 * two such 64-column panels, columns 64.. in the second, 4096 elements on), else rows of `pitch` elements.
 * TILE_ROW_STEP: elements from row r to row r + 1 of one column. */
#if DUA_WGMMA
#define TILE_AT_PANEL(r, c, panel)                                                                           \
  (((c) >> 6) * (panel) + WGMMA_TILE_AT(r, (c)&63)) /* panels `panel` apart */
#define TILE_AT(r, c, pitch) TILE_AT_PANEL(r, c, WGMMA_PANEL)
#define TILE_ROW_STEP(pitch) 64
#define TILE_ALIGN 1024
#else
#define TILE_AT(r, c, pitch) ((r) * (pitch) + (c))
#define TILE_AT_PANEL(r, c, panel) TILE_AT(r, c, panel) /* load_rows_async: the pitch again */
#define TILE_ROW_STEP(pitch) (pitch)
#define TILE_ALIGN 16
#endif
/* A register cap for the kernel that states it (on NVIDIA's devices the host rebuilds the program from its
 * PTX, where host/runtime/ptx_sm90a.c turns the marker into the entry's .maxnreg), chosen for work-groups per
 * SM: 65536 registers / (128 work-items x n). */
#if (DUA_SM90A || DUA_PTX_CAPS) && !DUA_MMA_EMULATE
#define MAX_REGISTERS(n) asm volatile("// DUA_MAXNREG " #n)
#else
#define MAX_REGISTERS(n)
#endif
/* STAGES 1 (mma.sync; wgmma at head dim 128, whose Q, K and V tiles fill 48 KB): one K and one V buffer (V(j)
 * streams in during S(j), K(j + 1) during P V(j)); 2 (wgmma at head dim 64): both double-buffered (tile j + 1
 * streams in while tile j is computed; one barrier per tile) */
#define STAGES (DUA_WGMMA && HEAD_DIM == 64 ? 2 : 1)

typedef struct {
  int n_tokens, blk, nb, shift, window, sink, causal, hq, hkv, max_depth;
} dua_fwd_shape;

inline void cp_commit(void) {
#if !DUA_MMA_EMULATE
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

/* 16-byte asynchronous copy global -> local (completes at cp_wait + barrier) where valid, else 16 zero bytes
 * (the copy's source size 0: nothing is read, and src need only point at memory that exists). One instruction
 * either way: a zero store beside the copy cost the forward ~1% on an H200 (bench/NOTES-mma.md). */
inline void cp16(__local lds_t *dst, __global const lds_t *src, int valid) {
#if DUA_MMA_EMULATE
  *(__local uint4 *)dst = valid ? *(__global const uint4 *)src : (uint4)(0);
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
#endif
}

#if DUA_MMA_EMULATE
#define CP_WAIT(n)
#else
#define CP_WAIT(n) asm volatile("cp.async.wait_group " #n ";" ::: "memory")
#endif

/* Starts the copy of rows [r0, r0 + rows) x HEAD_DIM of a (tokens x HEAD_DIM) slice into dst (rows of
 * `pitch` elements; wgmma: 64-column panels `panel` elements apart, one per 64 columns); rows past n_tokens
 * are zero-filled (V rows meet p = 0 there: they must be finite). Work-item tid copies chunk tid % COPY_CPR
 * of rows tid / COPY_CPR + COPY_RSTEP i: the same column and (wgmma: COPY_RSTEP being a multiple of 8) the
 * same swizzle in every pass, so a pass is two pointer increments and one cp.async (the index arithmetic per
 * chunk it replaced cost the wgmma forward 22%: bench/NOTES-mma.md). */
#define COPY_CPR (HEAD_DIM / CHUNK)     /* 16-byte chunks per row */
#define COPY_RSTEP (THREADS / COPY_CPR) /* rows per pass of the work-group */
#if THREADS % COPY_CPR || BN % COPY_RSTEP || (DUA_WGMMA && COPY_RSTEP % 8)
#error "the tile copy wants whole rows per pass (wgmma's swizzle: a multiple of 8 rows)"
#endif
inline void load_rows_async(__local lds_t *dst, int pitch, int panel, __global const lds_t *src,
                            long row_stride, int r0, int rows, int n_tokens, int tid) {
  const int r = tid / COPY_CPR, c = (tid % COPY_CPR) * CHUNK;
  __global const lds_t *from = src + (long)(r0 + r) * row_stride + c;
  __local lds_t *to = dst + TILE_AT_PANEL(r, c, panel);
  const long from_step = COPY_RSTEP * row_stride;
  const int rows_left = n_tokens - r0 - r; /* pass i copies a row if COPY_RSTEP i < rows_left */
#pragma unroll
  for (int i = 0; i < rows / COPY_RSTEP; i++) {
    const int valid = COPY_RSTEP * i < rows_left;
    cp16(to, valid ? from : src + c, valid); /* a row past the end: row 0's address, nothing read */
    from += from_step;
    to += COPY_RSTEP * TILE_ROW_STEP(pitch);
  }
}

/* DUA_TMA (wgmma at head dim 64 on NVIDIA, not emulated): the K and V tiles of the key loop come by Hopper's
 * tensor memory accelerator instead of cp.async. Work-item 0 issues one 64 x 64 box of each
 * (cp.async.bulk.tensor: the hardware writes the 128-byte swizzle of WGMMA_TILE_AT and zero-fills rows past
 * the sequence) onto an mbarrier, whose phase every work-item then waits for: no copy instructions or address
 * arithmetic in the other 127 work-items. The two tensor maps (K's, then V's, 128 bytes each) are a kernel
 * argument by value (dua_tma_maps_arg, argument TMA_MAPS_ARG): in parameter space a tensor map needs no
 * acquire fence, which in global memory cost each work-group ~2 us on an H200 (bench/NOTES-mma.md). The host
 * has them from dua_tma_maps (below), which builds them on the device (bench/tma_probe.c). */
typedef struct {
  ulong w[32];
} __attribute__((aligned(64))) dua_tma_maps_arg;
#define TMA_MAPS_ARG 29 /* dua_attn_fwd_mma's argument */
#ifndef DUA_TMA
#define DUA_TMA 0
#endif
#if DUA_TMA && (!DUA_WGMMA || STAGES != 2)
#error "DUA_TMA: wgmma with two K/V stages only"
#endif
/* Two m-tiles fill the 48 KB with Q and two stages of K and V, and the mbarriers need 16 bytes more: there V
 * has one buffer (TMA_V_ALONE), refilled at each tile's top, after the barrier that follows every warp's P V
 * of the tile before, and waited for just before P V, a product and a softmax after its copy started. */
#define TMA_V_ALONE (DUA_TMA && MT == 2)
#define V_STAGES (TMA_V_ALONE ? 1 : STAGES)
#if DUA_TMA
#define TMA_TILE_BYTES (BN * HEAD_DIM * 2) /* one K or V box, fp16 */
#define TMA_BARS (STAGES + TMA_V_ALONE)    /* per stage: its tiles landed; TMA_V_ALONE: V's, last */

#if DUA_MMA_EMULATE
/* Tests only: the same calls in plain OpenCL. A "map" is then 7 words of the tensor (its start's address,
 * tokens, heads, batch, the element strides of tokens, heads and batch: tma_build_map below), a map's handle
 * the address of those words; every work-item takes part in a copy, which is done when tma_tile returns (the
 * callers issue a copy only where its buffer is free). Rows past the tokens and heads or batches past the
 * map's come as zeros, as the hardware's do. An mbarrier keeps the count of fills issued (low word) and
 * waited for (high word): a fill while the last is not waited for, a wait for no fill or with the wrong
 * parity, or a fill left at the end (tma_drained) breaks the bookkeeping, and the kernel then writes NaN. */
#define TMA_MAPS_OF(arg) ((ulong)(size_t)(arg).w)
#define TMA_BROKEN (1ul << 63)
#define TMA_ISSUED(x) ((x)&0xFFFFFFFFul)
#define TMA_WAITED(x) (((x) >> 32) & 0x7FFFFFFFul)
inline void tma_begin(__local ulong *bars) {
  if (get_local_id(0) == 0)
    for (int i = 0; i < TMA_BARS; i++)
      bars[i] = 0;
  barrier(CLK_LOCAL_MEM_FENCE);
}
inline void tma_fill(__local ulong *bar) {
  barrier(CLK_LOCAL_MEM_FENCE);
  if (get_local_id(0) == 0)
    *bar = (*bar + 1) | (TMA_ISSUED(*bar) != TMA_WAITED(*bar) ? TMA_BROKEN : 0);
  barrier(CLK_LOCAL_MEM_FENCE);
}
inline void tma_copy(__local lds_t *t, ulong map, int j0, int hk, int b) {
  const ulong *w = (const ulong *)(size_t)map;
  __global const lds_t *base = (__global const lds_t *)(size_t)w[0];
  const int in = hk < (int)w[2] && b < (int)w[3];
  load_rows_async(t, K_PITCH, WGMMA_PANEL, base + (in ? b * (long)w[6] + hk * (long)w[5] : 0), (long)w[4], j0,
                  BN, in ? (int)w[1] : 0, get_local_id(0));
}
inline void tma_tile(__local lds_t *t, __local ulong *bar, ulong map, int j0, int hk, int b) {
  tma_copy(t, map, j0, hk, b);
  tma_fill(bar);
}
inline void tma_key_tile(__local lds_t *k_t, __local lds_t *v_t, __local ulong *bar, ulong maps, int j0,
                         int hk, int b) {
  tma_copy(k_t, maps, j0, hk, b);
  tma_copy(v_t, maps + 128, j0, hk, b);
  tma_fill(bar);
}
inline void tma_wait(__local ulong *bar, uint parity) {
  barrier(CLK_LOCAL_MEM_FENCE);
  if (get_local_id(0) == 0)
    *bar = (*bar + (1ul << 32)) |
           (TMA_ISSUED(*bar) != TMA_WAITED(*bar) + 1 || (TMA_WAITED(*bar) & 1) != parity ? TMA_BROKEN : 0);
  barrier(CLK_LOCAL_MEM_FENCE);
}
/* Whether every fill was waited for and the bookkeeping held (every work-item) */
inline int tma_drained(__local ulong *bars) {
  barrier(CLK_LOCAL_MEM_FENCE);
  int ok = 1;
  for (int i = 0; i < TMA_BARS; i++)
    ok &= !(bars[i] & TMA_BROKEN) && TMA_ISSUED(bars[i]) == TMA_WAITED(bars[i]);
  barrier(CLK_LOCAL_MEM_FENCE);
  return ok;
}
#else
#define TMA_MAPS_OF(arg) tma_maps_address()
/* The generic address of the kernel's tensor maps (argument TMA_MAPS_ARG, in parameter space): its name is
 * "<entry>_param_<n>", which host/runtime/ptx_sm90a.c writes for "DUA_ENTRY_PARAM_<n>" */
#define TMA_STR(x) #x
#define TMA_PARAM(n) "DUA_ENTRY_PARAM_" TMA_STR(n)
#define TMA_MAPS_MOV "// DUA_SM90A mov.b64 %0, " TMA_PARAM(TMA_MAPS_ARG) ";\n"
inline ulong tma_maps_address(void) {
  ulong a;
  asm(TMA_MAPS_MOV "// DUA_SM90A cvta.param.u64 %0, %0;\n" : "=l"(a));
  return a;
}

/* Work-item 0: the mbarriers (one arrival each: the issuing work-item's); then every work-item may wait. */
inline void tma_begin(__local ulong *bars) {
  if (get_local_id(0) == 0) {
    for (int i = 0; i < TMA_BARS; i++)
      asm volatile("// DUA_SM90A mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(smem_addr(bars + i))
                   : "memory");
    asm volatile("// DUA_SM90A fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  barrier(CLK_LOCAL_MEM_FENCE);
}

/* Work-item 0 starts the copy of rows [j0, j0 + BN) of (batch b, KV head hk) of the tensor of `map` into t,
 * completing on *bar. */
inline void tma_tile(__local lds_t *t, __local ulong *bar, ulong map, int j0, int hk, int b) {
  if (get_local_id(0) == 0)
    asm volatile(
        "{\n.reg .b64 st;\n"
        "// DUA_SM90A mbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %6;\n"
        "// DUA_SM90A cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes "
        "[%1], [%2, {%7, %3, %4, %5}], [%0];\n"
        "}\n" ::"r"(smem_addr(bar)),
        "r"(smem_addr(t)), "l"(map), "r"(j0), "r"(hk), "r"(b), "r"(TMA_TILE_BYTES), "r"(0)
        : "memory");
}

/* Work-item 0 starts the copy of key rows [j0, j0 + BN) of (batch b, KV head hk): K into k_t, V into v_t,
 * completing on *bar. */
inline void tma_key_tile(__local lds_t *k_t, __local lds_t *v_t, __local ulong *bar, ulong maps, int j0,
                         int hk, int b) {
  if (get_local_id(0) == 0)
    asm volatile(
        "{\n.reg .b64 st;\n"
        "// DUA_SM90A mbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %8;\n"
        "// DUA_SM90A cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes "
        "[%1], [%3, {%9, %5, %6, %7}], [%0];\n"
        "// DUA_SM90A cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes "
        "[%2], [%4, {%9, %5, %6, %7}], [%0];\n"
        "}\n" ::"r"(smem_addr(bar)),
        "r"(smem_addr(k_t)), "r"(smem_addr(v_t)), "l"(maps), "l"(maps + 128), "r"(j0), "r"(hk), "r"(b),
        "r"(2 * TMA_TILE_BYTES), "r"(0)
        : "memory");
}

/* Until *bar's phase of parity `parity` has completed (the tiles it counts have landed, visible to this
 * work-item and to the tensor core) */
inline void tma_wait(__local ulong *bar, uint parity) {
  uint done;
  do
    asm volatile("{\n.reg .pred p;\n"
                 "// DUA_SM90A mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                 "// DUA_SM90A selp.u32 %0, 1, 0, p;\n"
                 "}\n"
                 : "=r"(done)
                 : "r"(smem_addr(bar)), "r"(parity)
                 : "memory");
  while (!done);
}
#endif /* DUA_MMA_EMULATE */

/* The first key tile's copies (stage 0) */
inline void tma_first_tile(__local lds_t *k_s, __local lds_t *v_s, __local ulong *bars, ulong maps, int j0,
                           int hk, int b) {
#if TMA_V_ALONE
  tma_tile(k_s, bars, maps, j0, hk, b);
  tma_tile(v_s, bars + STAGES, maps + 128, j0, hk, b);
#else
  tma_key_tile(k_s, v_s, bars, maps, j0, hk, b);
#endif
}
#endif

/* A tile of BN rows */
inline void load_tile_async(__local lds_t *dst, int pitch, __global const lds_t *src, long row_stride, int r0,
                            int n_tokens, int tid) {
#if DUA_WGMMA
  load_rows_async(dst, pitch, WGMMA_PANEL, src, row_stride, r0, BN, n_tokens, tid);
#else
  load_rows_async(dst, pitch, pitch, src, row_stride, r0, BN, n_tokens, tid); /* panel = pitch */
#endif
}

/* Starts the copy of key tile rows [j0, j0 + BN) (K into k_t, V into v_t). */
inline void load_key_tile(__local lds_t *k_t, __local lds_t *v_t, __global const lds_t *k_bh, long k_stride,
                          __global const lds_t *v_bh, long v_stride, int j0, int n_tokens) {
  const int tid = get_local_id(0);
  load_tile_async(k_t, K_PITCH, k_bh, k_stride, j0, n_tokens, tid);
  load_tile_async(v_t, V_PITCH, v_bh, v_stride, j0, n_tokens, tid);
}

/* A work-group's entry of its launch: (batch, head, block) and the tile of its rows or keys in the block. The
 * launch is (tiles of nb blocks x THREADS, heads, batch), so work-groups start in the order of their entries
 * e = (b heads + h) nb + block; from entry tail_start on, tail_order[e - tail_start] names the entry taken
 * instead: the last waves' entries by decreasing length, so that no long one starts last
 * (host/attention/tail_order.c). part, unit: the forward's split tail (split_entry_of); part -1 elsewhere. */
typedef struct {
  int b, h, blk, tile, part, unit;
} launch_entry;

inline launch_entry launch_entry_of(int tiles_per_block, int nb, __global const int *tail_order,
                                    int tail_start) {
  const int heads = get_num_groups(1);
  launch_entry w = {get_group_id(2),
                    get_group_id(1),
                    get_group_id(0) / tiles_per_block,
                    get_group_id(0) % tiles_per_block,
                    -1,
                    0};
  const long e = ((long)w.b * heads + w.h) * nb + w.blk;
  if (e >= tail_start) {
    const int t = tail_order[e - tail_start];
    w.blk = t % nb;
    w.h = (t / nb) % heads;
    w.b = t / nb / heads;
  }
  return w;
}

/* The forward's split tail (host/attention/split_tail.c), split = (first, parts, grid, heads) with parts >=
 * 2: the launch is one-dimensional, (grid + (grid - first)(parts - 1)) x THREADS, its work-groups in the
 * order of the usual three-dimensional launch's; the first `grid` are the row tiles as always, those from
 * `first` on take only part 0 of their visited key blocks (the items, cut into `parts` ranges of equal
 * count), and the work-groups past `grid` take parts 1 .. parts - 1 of the same row tiles, parts - 1
 * consecutive ones per row tile. So a launch whose last wave would run a few long work-groups on an idle GPU
 * runs twice or more as many short ones. Each part leaves its unnormalized O, running max and sums in
 * `partials`; the last part of a row tile to finish (an atomic count, which it resets to 0 for the next
 * launch) merges them and writes O and LSE. parts < 2: no split (the usual launch).
 *
 * split_part_of: work-group gid's part (-1: not split) and its row tile's index among the split ones (unit).
 */
inline int split_part_of(uint gid, int4 split, int *unit) {
  const uint per = split.y - 1; /* gid < 2^31 (host) */
  if (gid >= (uint)split.z) {
    *unit = (gid - split.z) / per;
    return 1 + (gid - split.z) % per;
  }
  *unit = gid - split.x;
  return gid >= (uint)split.x ? 0 : -1;
}

inline launch_entry split_entry_of(int tiles_per_block, int nb, __global const int *tail_order,
                                   int tail_start, int4 split) {
  if (!DUA_SPLIT || split.y < 2)
    return launch_entry_of(tiles_per_block, nb, tail_order, tail_start);
  launch_entry w;
  w.part = split_part_of(get_group_id(0), split, &w.unit);
  const uint row_tile = w.part > 0 ? split.x + w.unit : get_group_id(0);
  w.tile = row_tile % tiles_per_block;
  int e = row_tile / tiles_per_block; /* the entry, then as launch_entry_of */
  if (e >= tail_start)
    e = tail_order[e - tail_start];
  w.blk = e % nb;
  w.h = (e / nb) % split.w;
  w.b = e / nb / split.w;
  return w;
}

/* The work-group's id read anew after the key loop, so that the compiler keeps no split value live across the
 * loop (the two-m-tile kernel sits at its register cap) */
inline uint group_id_again(void) {
#if DUA_MMA_EMULATE
  return get_group_id(0);
#else
  uint x;
  asm volatile("mov.u32 %0, %%ctaid.x;" : "=r"(x));
  return x;
#endif
}

/* Orders the global stores before it (of this work-item, and of the work-group's others through a barrier
 * before it) before its later atomic, and the loads after it after that atomic (OpenCL 1.2's mem_fence orders
 * only within a work-item: enough for PoCL's CPU threads, tests only). */
inline void gpu_fence(void) {
#if DUA_MMA_EMULATE
  mem_fence(CLK_GLOBAL_MEM_FENCE);
#else
  asm volatile("fence.acq_rel.gpu;" ::: "memory");
#endif
}

/* The visited key blocks of one query block: intervals (+ content bucket) or a device list. */
typedef struct {
  int n_items;
#if DUA_ENUM == 2
  int n_full;
  __global const int *items;
#else
  int2 iv[3];
  int2 tree; /* m's tree range (positional tree) */
  int n_iv;
#if DUA_ENUM == 1
  int n_interval_items, bucket_lo;
  __global const int *order_bh;
#endif
#endif
} visit_list;

/* Position of the key tile being processed: item (visited block index), block n, first key j0. */
typedef struct {
  int item, n, j0, col_end, shared, full;
  float beta; /* level bias of the block, log2 units (0 without DUA_BIAS) */
} tile_pos;

/* Whether key tile cur needs no element mask for rows first_row and later: its block is full (dua_tile_full),
 * or it is tree-visible, every key is in range and (causal) at or before first_row, as the past half of a
 * diagonal block is for the second 64 rows (a window or sink only adds pairs to a tree-visible tile; with
 * level bias they differ in bias, which ELEMENTWISE below checks). (A macro: as an inline function the
 * compiler orders the tests differently inside the key loop.) */
#define TILE_UNMASKED(cur, shape, first_row)                                                                 \
  ((cur).full || ((cur).shared && (cur).j0 + BN <= (shape).n_tokens &&                                       \
                  (!(shape).causal || (cur).j0 + BN - 1 <= (first_row))))

/* Whether keys [j0, j0 + BN) show no key to any of rows [first_row, row_end): a block visited only through
 * the window or sink (shared 0: not tree-visible) whose keys lie past the sink and wholly outside the window
 * of every row, as the far half of the window's edge block does for half the row tiles. Such tiles are not
 * loaded: their scores would all be masked (the forward and dQ pass: TILE_DEAD; the dK/dV pass's query
 * tiles, transposed). */
#define KEYS_DEAD(shared, j0, shape, first_row, row_end)                                                     \
  (!(shared) && (j0) >= (shape).sink &&                                                                      \
   ((shape).window <= 0 || (j0) + BN - 1 < (first_row) - (shape).window ||                                   \
    (j0) > (row_end)-1 + (shape).window))
#define TILE_DEAD(cur, shape, first_row, row_end) KEYS_DEAD((cur).shared, (cur).j0, shape, first_row, row_end)

/* Moves p to the next key tile of the visited blocks, in the order and with the skips of attn_fwd.cl (the
 * next 64 keys of the block, else the next visited block); returns 0 when there is none. Uniform across the
 * work-group. */
inline int next_block_tile(tile_pos *p, const visit_list *vl, dua_head_rule hr, int m, int row_end,
                           dua_fwd_shape shape, __global const uchar *path_m, __global const uchar *paths_bh,
                           __global const float *bias_h /* level_bias + offset + h * bias_stride */) {
  if (p->item >= 0) {
    p->j0 += BN;
    if (p->j0 < p->col_end && !(shape.causal && p->j0 > row_end - 1))
      return 1;
  }
  for (p->item++; p->item < vl->n_items; p->item++) {
    const int item = p->item;
    int n, shared, full;
#if DUA_ENUM == 2
    n = vl->items[item];
#if DUA_TREE == 2
    shared = 1;
#else
    shared = block_shared(hr, m, n, shape.shift, path_m, paths_bh, shape.max_depth);
#endif
    full = item < vl->n_full;
#else
#if DUA_ENUM == 1
    if (item >= vl->n_interval_items) {
      n = vl->order_bh[vl->bucket_lo + (item - vl->n_interval_items)];
      int in_iv = 0;
      for (int t = 0; t < vl->n_iv; t++)
        in_iv |= n >= vl->iv[t].x && n < vl->iv[t].y;
      if (in_iv || (shape.causal && n > m))
        continue; /* visited through an interval already, or in the future */
      shared = 1;
    } else
#endif
    {
      int rest = item, t = 0;
      while (rest >= vl->iv[t].y - vl->iv[t].x) {
        rest -= vl->iv[t].y - vl->iv[t].x;
        t++;
      }
      n = vl->iv[t].x + rest;
      shared = dua_interval_block_shared(vl->tree, hr, m, n, shape.shift, path_m, paths_bh, shape.max_depth);
    }
    full = dua_tile_full(m, n, shared, shape.blk, shape.n_tokens, shape.window, shape.sink, shape.causal);
#endif
    float beta = 0.0f;
#if DUA_BIAS
    if (shared)
      beta = bias_h[block_lca(hr, m, n, shape.shift, path_m, paths_bh, shape.max_depth)] * DUA_LOG2E;
#endif
    p->n = n;
    p->shared = shared;
    p->full = full;
    p->beta = beta;
    p->j0 = n * shape.blk;
    p->col_end = min(shape.n_tokens, p->j0 + shape.blk);
    if (shape.causal && p->j0 > row_end - 1)
      continue; /* the whole block is in the future of every row of this tile: nothing is loaded */
    return 1;
  }
  return 0;
}

/* Moves p to the next key tile to visit for rows [row0, row_end): next_block_tile's, without the dead ones
 * (TILE_DEAD). */
inline int next_tile(tile_pos *p, const visit_list *vl, dua_head_rule hr, int m, int row0, int row_end,
                     dua_fwd_shape shape, __global const uchar *path_m, __global const uchar *paths_bh,
                     __global const float *bias_h) {
  while (next_block_tile(p, vl, hr, m, row_end, shape, path_m, paths_bh, bias_h))
    if (!TILE_DEAD(*p, shape, row0, row_end))
      return 1;
  return 0;
}

/* Whether the first visited key block is known from the head rule alone (the positional tree without window,
 * sink or content bucket: the tree range's first block, which holds every row's own block), so that its
 * copies can start before the visit list is built (the prologue's longest chain). Uniform. */
#define FIRST_BLOCK_EARLY(shape) (DUA_ENUM == 0 && DUA_TREE == 0 && (shape).window == 0 && (shape).sink == 0)

/* The visited key blocks of query block m of (batch, head) bh: the forward's enumeration. */
inline visit_list visit_list_begin(int m, long bh, dua_head_rule hr, dua_fwd_shape shape,
                                   __global const int *order, __global const int *rank_range,
                                   __global const int *list_counts, __global const int *list_full,
                                   __global const int *list_indices) {
  visit_list vl;
  (void)order;
  (void)rank_range;
  (void)list_counts;
  (void)list_full;
  (void)list_indices;
#if DUA_ENUM == 2
  vl.n_items = list_counts[bh * shape.nb + m];
  vl.n_full = list_full[bh * shape.nb + m];
  vl.items = list_indices + (bh * shape.nb + m) * shape.nb;
#else
  vl.tree = (int2)(0, 0);
#if DUA_TREE == 0
  vl.tree = dua_tree_range(hr, m, shape.shift, shape.nb);
#endif
  vl.n_iv = dua_visit_intervals(m, vl.tree, shape.blk, shape.n_tokens, shape.nb, shape.window, shape.sink,
                                shape.causal, vl.iv);
  vl.n_items = 0;
  for (int i = 0; i < vl.n_iv; i++)
    vl.n_items += vl.iv[i].y - vl.iv[i].x;
#if DUA_ENUM == 1
  vl.bucket_lo = rank_range[2 * (bh * shape.nb + m)];
  vl.n_interval_items = vl.n_items;
  vl.n_items += rank_range[2 * (bh * shape.nb + m) + 1] - vl.bucket_lo;
  vl.order_bh = order + bh * shape.nb;
#endif
#endif
  return vl;
}

/* Scaled score x of (row, col) with bias and the element mask of attn_fwd.cl. */
inline float masked_score(float x, int row, int col, int shared, float beta, dua_fwd_shape s) {
  const int extra = dua_token_extra(row, col, s.window, s.sink);
  const int vis = (shared || extra) && col < s.n_tokens && row < s.n_tokens && (!s.causal || col <= row);
  return vis ? x + (extra ? 0.0f : beta) : -INFINITY;
}

#if !DUA_BIAS
/* masked_score's element mask without level bias, for one row of a key tile, as bounds on the key's place:
 * key c0 + k (c0 this lane's first column of the tile, k >= 0) is visible iff lo <= k <= hi (tree-visible or
 * in the window, not in the future, inside the sequence) or k <= sink_hi (in the sink, not in the future).
 * Three compares with a constant per score, where masked_score takes about ten. */
typedef struct {
  int lo, hi, sink_hi;
} row_keys;
#define ROW_KEYS_NONE                                                                                        \
  { 1, 0, -1 } /* no key visible */

inline row_keys row_keys_of(int row, int c0, int shared, dua_fwd_shape s) {
  const int big = 1 << 30, base = row - c0; /* key k's distance row - col is base - k */
  row_keys r = ROW_KEYS_NONE;               /* rows past the sequence */
  if (row >= s.n_tokens)
    return r;
  int dlo = s.causal ? 0 : -big, dhi = big; /* visible distances */
  if (!shared) {
    dlo = max(dlo, -s.window);
    dhi = s.window;
  }
  dlo = max(dlo, row - s.n_tokens + 1); /* col < n_tokens */
  if (shared || s.window > 0) {
    r.lo = min(max(base - dhi, -1), BN);
    r.hi = min(max(base - dlo, -1), BN);
  }
  r.sink_hi = min(max(min(min(s.sink, s.n_tokens) - 1 - c0, s.causal ? base : big), -1), BN);
  return r;
}
#define KEY_VISIBLE(r, k) (((k) >= (r).lo && (k) <= (r).hi) || (k) <= (r).sink_hi)

#if DUA_MASK_TEST
/* Test only (test_forward_mma's mask_bounds): configuration i, cfg[8 i ..] = (n_tokens, window, sink, causal,
 * shared, row, c0, unused), checked key by key (k < BN) against masked_score: out[2 i] the keys where the two
 * disagree, out[2 i + 1] the keys masked_score shows. */
__kernel void dua_mask_bounds_test(__global const int *cfg, __global int *out) {
  const int i = get_global_id(0);
  __global const int *c = cfg + 8 * i;
  dua_fwd_shape s = {0};
  s.n_tokens = c[0], s.window = c[1], s.sink = c[2], s.causal = c[3];
  const int shared = c[4], row = c[5], c0 = c[6];
  const row_keys r = row_keys_of(row, c0, shared, s);
  int bad = 0, shown = 0;
  for (int k = 0; k < BN; k++) {
    const int visible = masked_score(0.0f, row, c0 + k, shared, 0.0f, s) != -INFINITY;
    bad += KEY_VISIBLE(r, k) != visible;
    shown += visible;
  }
  out[2 * i] = bad;
  out[2 * i + 1] = shown;
}
#endif
#endif

/* m where finite, else 0: the offset of a row whose scores are all masked (every p = exp2(-inf) = 0) */
inline float finite_or_zero(float m) {
  return m == -INFINITY ? 0.0f : m;
}

/* p = exp2(x sc + off) of one m-tile's S fragments (off0 for rows g, off1 for rows g + 8), rounded to the
 * operand type and re-packed as A fragments of P V, and the rows' sums of p. f16: key step kk uses S tiles
 * 2kk (keys 2t..2t+1) and 2kk + 1 (keys 2t+8..2t+9): a = {(g, tile 2kk), (g+8, tile 2kk), (g, 2kk+1), (g+8,
 * 2kk+1)}. tf32: key step kk is S tile kk, permuted: a = {(g, 2t), (g+8, 2t), (g, 2t+1), (g+8, 2t+1)} = C
 * elements 0, 2, 1, 3 */
inline void exp_pack(const float4 *s, float sc, float off0, float off1, uint4 *pa, float *sum0, float *sum1) {
  float r0 = 0.0f, r1 = 0.0f;
#pragma unroll
  for (int i = 0; i < STILES; i++) {
    const float p0 = fast_exp2(fma(s[i].s0, sc, off0)), p1 = fast_exp2(fma(s[i].s1, sc, off0));
    const float p2 = fast_exp2(fma(s[i].s2, sc, off1)), p3 = fast_exp2(fma(s[i].s3, sc, off1));
    r0 += p0 + p1;
    r1 += p2 + p3;
#if DUA_TF32
    pa[i] = (uint4)(tf32_bits(as_uint(p0)), tf32_bits(as_uint(p2)), tf32_bits(as_uint(p1)),
                    tf32_bits(as_uint(p3)));
#else
    const uint lo = pack_half2(p0, p1), hi = pack_half2(p2, p3);
    if (i & 1) {
      pa[i >> 1].s2 = lo;
      pa[i >> 1].s3 = hi;
    } else {
      pa[i >> 1].s0 = lo;
      pa[i >> 1].s1 = hi;
    }
#endif
  }
  *sum0 = r0;
  *sum1 = r1;
}

/* The maxima of rows g (.s0, .s1) and g + 8 (.s2, .s3) over a row tile's STILES C fragments, as a tree: the
 * softmax waits for them, and a chain of STILES maxima is twice the tree's depth. */
inline float2 tile_row_max(const float4 *s) {
  float lo[STILES], hi[STILES];
#pragma unroll
  for (int i = 0; i < STILES; i++) {
    lo[i] = fmax(s[i].s0, s[i].s1);
    hi[i] = fmax(s[i].s2, s[i].s3);
  }
#pragma unroll
  for (int w = 1; w < STILES; w *= 2)
#pragma unroll
    for (int i = 0; i + w < STILES; i += 2 * w) {
      lo[i] = fmax(lo[i], lo[i + w]);
      hi[i] = fmax(hi[i], hi[i + w]);
    }
  return (float2)(lo[0], hi[0]);
}

/* The maxima of two C-fragment rows (rows g and g + 8) over their quad, the four work-items that hold a row:
 * every one of them gets the row's maximum. */
inline void quad_max2(float *a, float *b EMU_PARAMS) {
  *a = fmax(*a, shfl_xor(*a, 1 EMU_ARGS));
  *b = fmax(*b, shfl_xor(*b, 1 EMU_ARGS));
  *a = fmax(*a, shfl_xor(*a, 2 EMU_ARGS));
  *b = fmax(*b, shfl_xor(*b, 2 EMU_ARGS));
}

/* A split row tile's part (split_entry_of) after its key loop: stores this work-item's O fragments, running
 * maxima and sums (unnormalized, as the loop leaves them) in its slot of partials,
 * [unit][part][value][work-item] floats, SPLIT_FLOATS values per work-item; returns 0 unless this is the row
 * tile's last part to finish, which instead merges every part's values, its own too, in part order (the
 * maxima's maximum, each part's sums and O rescaled to it; a part that saw nothing has max -inf and adds
 * nothing) and returns 1 to write O and LSE. flag: 4 bytes of local memory that no work-item still reads. */
#define SPLIT_FLOATS (WARP_MT * (4 * OTILES + 4))
inline int split_merge(float4 acc[WARP_MT][OTILES], float m_run[WARP_MT][2], float l_run[WARP_MT][2],
                       __global float *partials, __global int *counts, int4 split, int part, int unit,
                       __local int *flag) {
  const int tid = get_local_id(0);
  const long slots = (long)unit * split.y;
  __global float *mine = partials + (slots + part) * (SPLIT_FLOATS * THREADS) + tid;
#pragma unroll
  for (int mt = 0; mt < WARP_MT; mt++) {
#pragma unroll
    for (int i = 0; i < OTILES; i++) {
      const int at = (mt * OTILES + i) * 4 * THREADS;
      mine[at] = acc[mt][i].s0;
      mine[at + THREADS] = acc[mt][i].s1;
      mine[at + 2 * THREADS] = acc[mt][i].s2;
      mine[at + 3 * THREADS] = acc[mt][i].s3;
    }
    const int at = (WARP_MT * OTILES * 4 + mt * 4) * THREADS;
    mine[at] = m_run[mt][0];
    mine[at + THREADS] = m_run[mt][1];
    mine[at + 2 * THREADS] = l_run[mt][0];
    mine[at + 3 * THREADS] = l_run[mt][1];
  }
  /* release: every work-item's stores, then (after the barrier) one fence and the count; acquire: the fence
   * after the count, then the barrier before any work-item loads (the pattern of a grid-wide semaphore) */
  barrier(CLK_GLOBAL_MEM_FENCE | CLK_LOCAL_MEM_FENCE);
  if (tid == 0) {
    gpu_fence();
    *flag = atomic_inc(counts + unit) == split.y - 1;
    gpu_fence(); /* unconditional: under a branch the two-m-tile kernel spilled 96 bytes instead of 20 */
  }
  barrier(CLK_GLOBAL_MEM_FENCE | CLK_LOCAL_MEM_FENCE);
  const int last = *flag;
  barrier(CLK_LOCAL_MEM_FENCE); /* the flag's memory is the epilogue's */
  if (last) { /* every part from memory, in part order: the same bits whichever part finishes last */
#pragma unroll
    for (int mt = 0; mt < WARP_MT; mt++) {
      m_run[mt][0] = m_run[mt][1] = -INFINITY;
      l_run[mt][0] = l_run[mt][1] = 0.0f;
#pragma unroll
      for (int i = 0; i < OTILES; i++)
        acc[mt][i] = (float4)(0.0f);
    }
  }
  for (int q = 0; q < split.y && last; q++) {
    volatile __global const float *theirs = partials + (slots + q) * (SPLIT_FLOATS * THREADS) + tid;
#pragma unroll
    for (int mt = 0; mt < WARP_MT; mt++) {
      const int at = (WARP_MT * OTILES * 4 + mt * 4) * THREADS;
      float wa[2], wb[2];
#pragma unroll
      for (int r = 0; r < 2; r++) { /* rows g and g + 8 */
        const float mq = theirs[at + r * THREADS], lq = theirs[at + (2 + r) * THREADS];
        const float mn = fmax(m_run[mt][r], mq);
        wa[r] = m_run[mt][r] == -INFINITY ? 0.0f : exp2(m_run[mt][r] - mn);
        wb[r] = mq == -INFINITY ? 0.0f : exp2(mq - mn);
        m_run[mt][r] = mn;
        l_run[mt][r] = l_run[mt][r] * wa[r] + lq * wb[r];
      }
#pragma unroll
      for (int i = 0; i < OTILES; i++) {
        const int a = (mt * OTILES + i) * 4 * THREADS;
        const float4 x =
            (float4)(theirs[a], theirs[a + THREADS], theirs[a + 2 * THREADS], theirs[a + 3 * THREADS]);
        acc[mt][i] =
            acc[mt][i] * (float4)(wa[0], wa[0], wa[1], wa[1]) + x * (float4)(wb[0], wb[0], wb[1], wb[1]);
      }
    }
  }
  if (last && tid == 0)
    counts[unit] = 0; /* for the next launch */
  return last;
}

__kernel __attribute__((reqd_work_group_size(THREADS, 1, 1))) void
dua_attn_fwd_mma(__global const dua_store_t *q, __global const dua_store_t *k, __global const dua_store_t *v,
                 __global dua_store_t *o, __global float *lse, long4 q_strides, long4 k_strides,
                 long4 v_strides, long4 o_strides, long4 lse_strides, long4 offsets, long2 aux_offsets,
                 int has_lse, dua_fwd_shape shape, float scale_log2, __global const dua_head_rule *head_rules,
                 __global const uchar *paths, __global const int *order, __global const int *rank_range,
                 __global const int *list_counts, __global const int *list_full,
                 __global const int *list_indices, __global const float *level_bias, int bias_stride,
                 __global const int *tail_order, int tail_start, __global float *split_partials,
                 __global int *split_counts, int4 split, dua_tma_maps_arg tma_maps_arg) {
#if DUA_WGMMA && MT == 2
  MAX_REGISTERS(168); /* three work-groups per SM (193 registers uncapped: two) */
#elif DUA_WGMMA && HEAD_DIM == 128
  /* four work-groups per SM (48 KB of local memory each; O alone takes 64 registers): 2.4-9% faster than at
   * 168 (three) on an H200, 4-8 bytes of spills with clang 15 + ptxas 13 (bench/NOTES-mma.md) */
  MAX_REGISTERS(128);
#elif DUA_WGMMA
  /* five work-groups per SM (116 registers uncapped under NVIDIA's compiler: four; 16 bytes of spills): on an
   * H100 causal block-diagonal 6-7% faster, causal depth 3 at N 8192 2% (bench/NOTES-mma.md) */
  MAX_REGISTERS(96);
#endif
  /* K and V tiles, BN keys x HEAD_DIM elements each (pitches K_PITCH, V_PITCH); fp16 on mma.sync: Q passes
   * through them once */
  __local lds_t k_s[STAGES * BN * K_PITCH] __attribute__((aligned(TILE_ALIGN)));
  __local lds_t v_s[V_STAGES * BN * V_PITCH] __attribute__((aligned(TILE_ALIGN)));
#if DUA_WGMMA
  __local lds_t q_s[BM * HEAD_DIM] __attribute__((aligned(TILE_ALIGN))); /* Q: 64 rows per m-tile */
#endif
#if DUA_TMA
  __local ulong tma_bars[TMA_BARS] __attribute__((aligned(8)));
#endif
  EMU_LOCALS

  const int tid = get_local_id(0), lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const launch_entry w = split_entry_of(shape.blk / BM, shape.nb, tail_order, tail_start, split);
  const int h = w.h, b = w.b, m = w.blk;
  const int row0 = m * shape.blk + w.tile * BM;
  if (row0 >= shape.n_tokens)
    return;                                           /* whole work-group */
  const int row_end = min(shape.n_tokens, row0 + BM); /* exclusive */
  const int hk = h / (shape.hq / shape.hkv);
  const long bh = (long)b * shape.hq + h;
  const dua_head_rule hr = head_rules[h];

  __global const lds_t *q_bh = (__global const lds_t *)(q + offsets.s0 + b * q_strides.s0 + h * q_strides.s1);
  __global const lds_t *k_bh =
      (__global const lds_t *)(k + offsets.s1 + b * k_strides.s0 + hk * k_strides.s1);
  __global const lds_t *v_bh =
      (__global const lds_t *)(v + offsets.s2 + b * v_strides.s0 + hk * v_strides.s1);
  __global const uchar *paths_bh = paths + bh * shape.nb * shape.max_depth;
  __global const uchar *path_m = paths_bh + (long)m * shape.max_depth;
  __global const float *bias_h = level_bias + aux_offsets.s1 + (long)h * bias_stride;
  /* K(0), V(0) first where the head rule gives their block, committed below with Q (on an H100 block-diagonal
   * 3% faster, depth 3 1%: bench/NOTES-mma.md) */
  const int first_copied = STAGES == 2 && FIRST_BLOCK_EARLY(shape) && w.part <= 0;
#if DUA_TMA
  const ulong tma_maps = TMA_MAPS_OF(tma_maps_arg);
  tma_begin(tma_bars);
  if (first_copied)
    tma_first_tile(k_s, v_s, tma_bars, tma_maps, dua_tree_range(hr, m, shape.shift, shape.nb).x * shape.blk,
                   hk, b);
#else
  if (first_copied)
    load_key_tile(k_s, v_s, k_bh, k_strides.s2, v_bh, v_strides.s2,
                  dua_tree_range(hr, m, shape.shift, shape.nb).x * shape.blk, shape.n_tokens);
#endif

  /* ---- the visited key blocks (as attn_fwd.cl); a split row tile's part: its range of them */
  visit_list vl = visit_list_begin(m, bh, hr, shape, order, rank_range, list_counts, list_full, list_indices);
  int item_lo = 0;
  if (w.part >= 0) {
    const int n_items = vl.n_items;
    item_lo = n_items * w.part / split.y;
    vl.n_items = n_items * (w.part + 1) / split.y;
  }

  /* ---- prologue: Q rows [row0, row0 + BM) into A fragments; warp w owns rows mt * 64 + 16 w .. + 15 of the
   * tile for each m-tile mt < MT. */
#if !DUA_WGMMA
  uint4 qf[WARP_MT][KSTEPS]; /* A fragments of Q (16 rows x HEAD_DIM per m-tile) for each k-step */
#endif
#if DUA_TF32
  /* k-step kk, permuted: a = {(g, 8kk + 2t), (g + 8, 8kk + 2t), (g, 8kk + 2t + 1), (g + 8, 8kk + 2t + 1)};
   * rows past n_tokens read as 0 */
#pragma unroll
  for (int mt = 0; mt < WARP_MT; mt++) {
    const int ra = row0 + mt * 64 + warp * 16 + g, rb = ra + 8;
#pragma unroll
    for (int kk = 0; kk < KSTEPS; kk++) {
      const uint2 x = ra < shape.n_tokens ? vload2(0, q_bh + ra * q_strides.s2 + kk * 8 + 2 * t) : (uint2)(0);
      const uint2 y = rb < shape.n_tokens ? vload2(0, q_bh + rb * q_strides.s2 + kk * 8 + 2 * t) : (uint2)(0);
      qf[mt][kk] = (uint4)(tf32_bits(x.x), tf32_bits(y.x), tf32_bits(x.y), tf32_bits(y.y));
    }
  }
#elif DUA_WGMMA
  /* Q stays in local memory (q_s); visible to the tensor core once every work-item's copy landed */
  for (int part = 0; part < MT; part++)
    load_tile_async(q_s + part * BN * HEAD_DIM, HEAD_DIM, q_bh, q_strides.s2, row0 + part * BN,
                    shape.n_tokens, tid);
    /* committed with K(0) and V(0): one round trip to memory before the first tile */
#else
  /* through v_s (m-tile 0) and k_s (m-tile 1) */
  load_tile_async(v_s, V_PITCH, q_bh, q_strides.s2, row0, shape.n_tokens, tid);
  if (MT > 1)
    load_tile_async(k_s, K_PITCH, q_bh, q_strides.s2, row0 + BN, shape.n_tokens, tid);
  cp_commit();
  CP_WAIT(0);
  barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
  for (int mt = 0; mt < WARP_MT; mt++)
#pragma unroll
    for (int kk = 0; kk < KSTEPS; kk++)
      qf[mt][kk] = ldsm_x4(mt ? k_s : v_s,
                           TILE_AT(warp * 16 + (lane & 15), kk * 16 + (lane >> 4) * 8, K_PITCH) EMU_ARGS);
  barrier(CLK_LOCAL_MEM_FENCE); /* k_s and v_s are free */
#endif
  tile_pos cur;
  cur.item = item_lo - 1; /* a split part's range starts at a block: nothing left in block item_lo - 1 */
  cur.j0 = cur.col_end = 0;
  int have = next_tile(&cur, &vl, hr, m, row0, row_end, shape, path_m, paths_bh, bias_h);
#if DUA_TMA
  if (have && !first_copied)
    tma_first_tile(k_s, v_s, tma_bars, tma_maps, cur.j0, hk, b);
  uint tma_phases = 0; /* bit i: the parity of mbarrier i's next phase */
  int q_pending = 1;   /* Q's copy (cp.async) is waited for at the first tile */
  int v_issued = 1;    /* TMA_V_ALONE: V(j) is on its way (V(0): above) */
#else
  if (have && !first_copied) {
    load_tile_async(k_s, K_PITCH, k_bh, k_strides.s2, cur.j0, shape.n_tokens, tid);
    if (STAGES == 2)
      load_tile_async(v_s, V_PITCH, v_bh, v_strides.s2, cur.j0, shape.n_tokens, tid);
  }
#endif
  cp_commit();

  float4 acc[WARP_MT][OTILES]; /* O (16 rows x HEAD_DIM per m-tile) of this warp as C fragments */
  float m_run[WARP_MT][2],
      l_run[WARP_MT][2]; /* running max (log2 units) of rows g, g + 8; this lane's part of the sums */
  int r_lo[WARP_MT];
#pragma unroll
  for (int mt = 0; mt < WARP_MT; mt++) {
#pragma unroll
    for (int i = 0; i < OTILES; i++)
      acc[mt][i] = (float4)(0.0f);
    m_run[mt][0] = m_run[mt][1] = -INFINITY;
    l_run[mt][0] = l_run[mt][1] = 0.0f;
    r_lo[mt] = row0 + mt * 64 + warp * 16 + g;
  }

#if DUA_WGMMA
  if (!have) { /* nothing visited: every work-item's Q copy lands before O is staged in q_s */
    CP_WAIT(0);
#if DUA_TMA
    if (first_copied) { /* and the first key tile's, copied before an empty split part knew it was empty: no
                         * copy may be in flight when the work-group ends */
      tma_wait(tma_bars, 0);
      if (TMA_V_ALONE)
        tma_wait(tma_bars + STAGES, 0);
    }
#endif
    barrier(CLK_LOCAL_MEM_FENCE);
  }
#endif
  int stage = 0; /* STAGES 2: the buffers of tile j */
  while (have) {
    __local lds_t *k_t = k_s + stage * (BN * K_PITCH),
                  *v_t = v_s + (V_STAGES == 2 ? stage : 0) * (BN * V_PITCH);
    float4 s[WARP_MT][STILES]; /* S (16 rows x 64 keys per m-tile and warp), accumulated from 0 */
#pragma unroll
    for (int mt = 0; mt < WARP_MT; mt++)
#pragma unroll
      for (int i = 0; i < STILES; i++)
        s[mt][i] = (float4)(0.0f);
#if STAGES == 2
#if DUA_TMA
    tma_wait(tma_bars + stage, tma_phases >> stage & 1); /* K(j) and V(j) have landed */
    tma_phases ^= 1u << stage;
    if (q_pending) { /* and, at the first tile, Q */
      CP_WAIT(0);
      wgmma_proxy_fence();
      q_pending = 0;
    }
#else
    CP_WAIT(0);          /* K(j) and V(j) have landed (the only copies in flight) ... */
#if DUA_WGMMA
    wgmma_proxy_fence(); /* ... and are visible to the tensor core's reads */
#endif
#endif
    barrier(CLK_LOCAL_MEM_FENCE); /* ... for every warp, and every warp is done with tile j - 1's buffers */
#if TMA_V_ALONE
    if (!v_issued) /* every warp is done with V(j - 1) */
      tma_tile(v_s, tma_bars + STAGES, tma_maps + 128, cur.j0, hk, b);
    v_issued = 0;
#endif
#if DUA_WGMMA && MT == 2
    /* S0 = Q0 K(j)^T and S1 = Q1 K(j)^T are issued before the walk and the next tile's copies, which run
     * while they do (wgmma_wait_first_of_pair below) */
    wgmma_ss_kmajor_pair_issue(s[0], q_s, k_t, s[1], q_s + BN * HEAD_DIM, k_t EMU_ARGS);
#endif
    tile_pos nxt = cur;
    const int have_next = next_tile(&nxt, &vl, hr, m, row0, row_end, shape, path_m, paths_bh, bias_h);
#if TMA_V_ALONE
    if (have_next) /* K(j + 1) streams in while tile j is computed */
      tma_tile(k_s + (stage ^ 1) * (BN * K_PITCH), tma_bars + (stage ^ 1), tma_maps, nxt.j0, hk, b);
#elif DUA_TMA
    if (have_next)       /* tile j + 1 streams in while tile j is computed */
      tma_key_tile(k_s + (stage ^ 1) * (BN * K_PITCH), v_s + (stage ^ 1) * (BN * V_PITCH),
                   tma_bars + (stage ^ 1), tma_maps, nxt.j0, hk, b);
#else
    if (have_next) /* tile j + 1 streams in while tile j is computed */
      load_key_tile(k_s + (stage ^ 1) * (BN * K_PITCH), v_s + (stage ^ 1) * (BN * V_PITCH), k_bh,
                    k_strides.s2, v_bh, v_strides.s2, nxt.j0, shape.n_tokens);
    cp_commit();
#endif
#else
    /* V(j) streams in while S = Q K(j)^T runs */
    load_tile_async(v_t, V_PITCH, v_bh, v_strides.s2, cur.j0, shape.n_tokens, tid);
    cp_commit();
    CP_WAIT(1);          /* K(j) has landed */
#if DUA_WGMMA
    wgmma_proxy_fence(); /* ... and is visible to the tensor core's reads */
#endif
    barrier(CLK_LOCAL_MEM_FENCE);
#endif

#if DUA_TF32
      /* b of n-tile i, k-step kk (permuted as Q): K rows 8i + g, columns 8kk + 2t, 2t + 1: one 64-bit load
       */
#pragma unroll
    for (int kk = 0; kk < KSTEPS; kk++) {
#pragma unroll
      for (int i = 0; i < STILES; i++) {
        const uint2 kv = vload2(0, k_t + (i * 8 + g) * K_PITCH + kk * 8 + 2 * t);
        const uint2 kb = kv; /* truncated by the tensor core */
#pragma unroll
        for (int mt = 0; mt < WARP_MT; mt++)
          s[mt][i] = mma_1688(s[mt][i], qf[mt][kk], kb EMU_ARGS);
      }
    }
#elif DUA_WGMMA /* Q times K^T, both K-major in local memory (query rows, key rows) */
#if MT == 1
    WGMMA_S(s[0], q_s, k_t EMU_ARGS);
#else /* both m-tiles, issued above: S1 still runs while m-tile 0's softmax does */
    wgmma_wait_first_of_pair(s[0], s[1] EMU_ARGS);
#endif
#else
        /* B = K^T, i.e. K rows (keys x d) are B^T row-major. ldmatrix .x4 matrices: (keys +0..7, d +0..7),
         * (keys +0..7, d +8..15), (keys +8..15, d +0..7), (keys +8..15, d +8..15). */
#pragma unroll
    for (int kk = 0; kk < KSTEPS; kk++) {
#pragma unroll
      for (int np = 0; np < STILES / 2; np++) {
        const uint4 kb = ldsm_x4(k_t, TILE_AT(np * 16 + (lane & 7) + ((lane >> 4) & 1) * 8,
                                              kk * 16 + ((lane >> 3) & 1) * 8, K_PITCH) EMU_ARGS);
#pragma unroll
        for (int mt = 0; mt < WARP_MT; mt++) {
          s[mt][2 * np] = mma_16816(s[mt][2 * np], qf[mt][kk], kb.s01 EMU_ARGS);
          s[mt][2 * np + 1] = mma_16816(s[mt][2 * np + 1], qf[mt][kk], kb.s23 EMU_ARGS);
        }
      }
    }
#endif

    /* scale, bias, element mask; lane holds rows g (.s0, .s1) and g + 8 (.s2, .s3), keys j0 + 8i + 2t (+1).
     * Unmasked tiles (TILE_UNMASKED): wgmma decides per work-group, tf32 per warp (each measured best on an
     * H100); fp16 on mma.sync keeps the per-block rule cur.full (2-12% slower with either:
     * bench/NOTES-mma.md).
     */
#if DUA_BIAS
#define ELEMENTWISE(full) (!(full) || (shape.window > 0 || shape.sink > 0))
#else
#define ELEMENTWISE(full) (!(full))
#endif
#if DUA_WGMMA
    const int full = TILE_UNMASKED(cur, shape, row0), elementwise = ELEMENTWISE(full);
#endif
    /* P = exp2(S - m) as A fragments of P V (exp_pack) */
    uint4 pa[WARP_MT][PSTEPS];
#pragma unroll
    for (int mt = 0; mt < WARP_MT; mt++) {
#if DUA_TF32
      const int full = TILE_UNMASKED(cur, shape, r_lo[mt] - g), elementwise = ELEMENTWISE(full);
#elif !DUA_WGMMA
      const int full = cur.full, elementwise = ELEMENTWISE(full);
#endif
      const int rl = r_lo[mt], rh = rl + 8;
      /* One branch per m-tile: a full tile runs no test per S tile (one per S tile before: 3-4.5% of the
       * forward's time on an H200, bench/NOTES-mma.md, twenty-ninth session). */
      if (elementwise) {
#if !DUA_BIAS
        int row = rl; /* opaque, so that the masks' row terms are not hoisted out of the key loop (where the
                       * two-m-tile kernel spilled them, clang 15 + ptxas 13) */
#if !DUA_MMA_EMULATE
        asm volatile("" : "+r"(row));
#endif
        const row_keys kl = row_keys_of(row, cur.j0 + 2 * t, cur.shared, shape),
                       kh = row_keys_of(row + 8, cur.j0 + 2 * t, cur.shared, shape); /* rows rl, rh */
#endif
#pragma unroll
        for (int i = 0; i < STILES; i++) {
          float4 x = s[mt][i] * scale_log2;
#if DUA_BIAS
          const int c = cur.j0 + 8 * i + 2 * t;
          x.s0 = masked_score(x.s0, rl, c, cur.shared, cur.beta, shape);
          x.s1 = masked_score(x.s1, rl, c + 1, cur.shared, cur.beta, shape);
          x.s2 = masked_score(x.s2, rh, c, cur.shared, cur.beta, shape);
          x.s3 = masked_score(x.s3, rh, c + 1, cur.shared, cur.beta, shape);
#else
          x.s0 = KEY_VISIBLE(kl, 8 * i) ? x.s0 : -INFINITY;
          x.s1 = KEY_VISIBLE(kl, 8 * i + 1) ? x.s1 : -INFINITY;
          x.s2 = KEY_VISIBLE(kh, 8 * i) ? x.s2 : -INFINITY;
          x.s3 = KEY_VISIBLE(kh, 8 * i + 1) ? x.s3 : -INFINITY;
#endif
          s[mt][i] = x;
        }
      }
      const float2 tile_max = tile_row_max(s[mt]); /* of x (masked tiles) or of raw s (full) */
      float mx0 = tile_max.s0, mx1 = tile_max.s1;
      /* full tiles: scale_log2 > 0, so max(s) scale + beta is the max of x = s scale + beta; then
       * p = exp2(s scale + (beta - m)), one fma per score (FlashAttention-2's folding) */
      const float sc = elementwise ? 1.0f : scale_log2, bt = elementwise ? 0.0f : cur.beta;
      if (!elementwise) {
        mx0 = mx0 * scale_log2 + cur.beta;
        mx1 = mx1 * scale_log2 + cur.beta;
      }
      mx0 = fmax(m_run[mt][0], mx0);
      mx1 = fmax(m_run[mt][1], mx1);
      float sum0, sum1;
#if DUA_WGMMA
      /* The running max moves only when a row's max grows by more than 8 (p <= 256, exact in f16's range).
       * m_run is the same in the four work-items of a row (the quad), so a row grows past it exactly when one
       * of them sees it grow: the vote needs no quad maximum, and the shuffles run only when the max moves
       * (off the common path's dependence chain: 3% of the forward's time on an H200, bench/NOTES-mma.md).
       * Emulated shuffles are work-group barriers, not allowed in a warp's branch: there they run before the
       * vote (the same decision, the same results). P is not computed before the vote with the running max
       * as it stands (redone when it moves): S and P live together then, and ptxas 13 serialized the wgmma.
       */
#if DUA_MMA_EMULATE
      quad_max2(&mx0, &mx1 EMU_ARGS);
#endif
      if (warp_any(mx0 > m_run[mt][0] + 8.0f || mx1 > m_run[mt][1] + 8.0f EMU_ARGS)) {
#if !DUA_MMA_EMULATE
        quad_max2(&mx0, &mx1 EMU_ARGS);
#endif
        const float alpha0 = fast_exp2(m_run[mt][0] - finite_or_zero(mx0)),
                    alpha1 = fast_exp2(m_run[mt][1] - finite_or_zero(mx1));
        m_run[mt][0] = mx0;
        m_run[mt][1] = mx1;
        l_run[mt][0] *= alpha0;
        l_run[mt][1] *= alpha1;
#pragma unroll
        for (int i = 0; i < OTILES; i++)
          acc[mt][i] *= (float4)(alpha0, alpha0, alpha1, alpha1);
      }
      exp_pack(s[mt], sc, bt - finite_or_zero(m_run[mt][0]), bt - finite_or_zero(m_run[mt][1]), pa[mt], &sum0,
               &sum1);
      l_run[mt][0] += sum0;
      l_run[mt][1] += sum1;
#else /* the running max is the row max so far; O and the sums are rescaled after P */
      quad_max2(&mx0, &mx1 EMU_ARGS);
      const float alpha0 = fast_exp2(m_run[mt][0] - finite_or_zero(mx0)),
                  alpha1 = fast_exp2(m_run[mt][1] - finite_or_zero(mx1));
      m_run[mt][0] = mx0;
      m_run[mt][1] = mx1;
      exp_pack(s[mt], sc, bt - finite_or_zero(mx0), bt - finite_or_zero(mx1), pa[mt], &sum0, &sum1);
      l_run[mt][0] = l_run[mt][0] * alpha0 + sum0;
      l_run[mt][1] = l_run[mt][1] * alpha1 + sum1;
#pragma unroll
      for (int i = 0; i < OTILES; i++)
        acc[mt][i] *= (float4)(alpha0, alpha0, alpha1, alpha1);
#endif
#if DUA_WGMMA && MT == 2
      if (mt == 0) { /* O0 += P0 V runs while m-tile 1's softmax does; S1 is done on return */
#if TMA_V_ALONE
        tma_wait(tma_bars + STAGES, tma_phases >> STAGES & 1); /* V(j) has landed */
        tma_phases ^= 1u << STAGES;
#endif
        wgmma_rs_nmajor_then_wait1(acc[0], pa[0], v_t, s[1] EMU_ARGS);
      } else {
        wgmma_rs_nmajor_then_wait0(acc[1], pa[1], v_t, acc[0], pa[0] EMU_ARGS);
      }
#endif
    }

#if STAGES == 1
    CP_WAIT(0); /* V(j) has landed */
#if DUA_WGMMA
    wgmma_proxy_fence();
#endif
    barrier(CLK_LOCAL_MEM_FENCE); /* ... for every warp, and every warp is done with k_s */
    have = next_tile(&cur, &vl, hr, m, row0, row_end, shape, path_m, paths_bh, bias_h);
    if (have) /* K(j+1) streams in while O += P V(j) runs */
      load_tile_async(k_s, K_PITCH, k_bh, k_strides.s2, cur.j0, shape.n_tokens, tid);
    cp_commit();
#endif

    /* O += P V: B = V (keys x d) stored row-major, so ldmatrix .trans; .x4 matrices: (keys +0..7, d +0..7),
     * (keys +8..15, d +0..7), (keys +0..7, d +8..15), (keys +8..15, d +8..15) -> b of d-tiles 2dp, 2dp + 1 */
#if DUA_TF32
    /* b of d-tile i, key step kk (permuted as P): V rows 8kk + 2t and 8kk + 2t + 1, column 8i + g */
#pragma unroll
    for (int kk = 0; kk < PSTEPS; kk++) {
#pragma unroll
      for (int i = 0; i < OTILES; i++) {
        __local const uint *vr = v_t + (kk * 8 + 2 * t) * V_PITCH + i * 8 + g;
        const uint2 vb = (uint2)(vr[0], vr[V_PITCH]); /* truncated */
#pragma unroll
        for (int mt = 0; mt < WARP_MT; mt++)
          acc[mt][i] = mma_1688(acc[mt][i], pa[mt][kk], vb EMU_ARGS);
      }
    }
#elif DUA_WGMMA
    /* P (registers, the A fragments pa) times V (local, key rows: N-major): four k-steps of 16 keys */
#if MT == 1
    WGMMA_PV(acc[0], pa[0], v_t EMU_ARGS);
#endif
#else
#pragma unroll
    for (int kk = 0; kk < PSTEPS; kk++) {
#pragma unroll
      for (int dp = 0; dp < OTILES / 2; dp++) {
        const uint4 vb = ldsm_x4_trans(v_t, TILE_AT(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8,
                                                    dp * 16 + ((lane >> 4) & 1) * 8, V_PITCH) EMU_ARGS);
#pragma unroll
        for (int mt = 0; mt < WARP_MT; mt++) {
          acc[mt][2 * dp] = mma_16816(acc[mt][2 * dp], pa[mt][kk], vb.s01 EMU_ARGS);
          acc[mt][2 * dp + 1] = mma_16816(acc[mt][2 * dp + 1], pa[mt][kk], vb.s23 EMU_ARGS);
        }
      }
    }
#endif
#if STAGES == 2
    cur = nxt;
    have = have_next;
    stage ^= 1;
#else
    barrier(CLK_LOCAL_MEM_FENCE); /* v_s is free */
#endif
  }

  /* ---- normalize and write: empty rows give O = 0 and LSE = -inf. O goes through local memory (wgmma: this
   * work-group's Q tile, whose wgmma are done; tf32 at head dim 64: the K and V tiles, one m-tile each) and
   * out in 16-byte chunks, whole rows per COPY_CPR work-items (tf32 4-8% faster on an H100; the fp16 mma.sync
   * kernel 3% slower dense: it writes O from the C fragments, as tf32 at head dim 128 does, whose 32-key
   * tiles are too small). */
#if DUA_WGMMA
#define O_STAGED 1
#define O_STAGE_AT(r, c) (q_s + TILE_AT(r, c, 0))
#elif DUA_TF32 && BN >= 64
#define O_STAGED 1
#define O_STAGE_AT(r, c) ((r) < 64 ? k_s + (r)*K_PITCH + (c) : v_s + ((r)-64) * V_PITCH + (c))
  /* free: every tile of the loop ends with a barrier after its last read of k_s and v_s (tf32 reads Q from
   * global memory) */
#else
#define O_STAGED 0
#endif
#if DUA_WGMMA
#define SPLIT_FLAG ((__local int *)q_s) /* q_s is free: its last wgmma is done */
#else
#define SPLIT_FLAG ((__local int *)v_s) /* free after the loop's last barrier */
#endif
#if DUA_TMA && DUA_MMA_EMULATE
  if (!tma_drained(tma_bars)) /* tests: a TMA copy left in flight or waited for wrongly */
    for (int mt = 0; mt < WARP_MT; mt++) {
      l_run[mt][0] = l_run[mt][1] = NAN;
      for (int i = 0; i < OTILES; i++)
        acc[mt][i] = (float4)(NAN);
    }
#endif
  int writes = 1; /* this work-group writes O and LSE: of a split row tile, the last part only (no early
                    return: the barriers below stay uniform for any compiler) */
  if (DUA_SPLIT && split.y >= 2) {
    int unit;
    const int part = split_part_of(group_id_again(), split, &unit);
    if (part >= 0)
      writes = split_merge(acc, m_run, l_run, split_partials, split_counts, split, part, unit, SPLIT_FLAG);
  }
  __global dua_store_t *o_bh = o + offsets.s3 + b * o_strides.s0 + h * o_strides.s1;
#pragma unroll
  for (int mt = 0; mt < WARP_MT; mt++) {
    float l0 = l_run[mt][0], l1 = l_run[mt][1];
    l0 += shfl_xor(l0, 1 EMU_ARGS);
    l1 += shfl_xor(l1, 1 EMU_ARGS);
    l0 += shfl_xor(l0, 2 EMU_ARGS);
    l1 += shfl_xor(l1, 2 EMU_ARGS);
    const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
#pragma unroll
    for (int half_i = 0; half_i < 2; half_i++) { /* rows g (C elements 0, 1) and g + 8 (elements 2, 3) */
      const int row = r_lo[mt] + 8 * half_i;
      const float l = half_i ? l1 : l0, inv = half_i ? inv1 : inv0;
#if DUA_MMA_EMULATE
      volatile int valid = row < shape.n_tokens; /* PoCL treated this branch as uniform (wrote rows >= N) */
#else
      const int valid = row < shape.n_tokens;
#endif
#if O_STAGED
#pragma unroll
      for (int i = 0; i < OTILES; i++) {
        __local lds_t *at = O_STAGE_AT(row - row0, 8 * i + 2 * t);
#if DUA_TF32
        vstore2(as_uint2(half_i ? acc[mt][i].s23 * inv : acc[mt][i].s01 * inv), 0, at);
#else
        *(__local uint *)at = half_i ? pack_half2(acc[mt][i].s2 * inv, acc[mt][i].s3 * inv)
                                     : pack_half2(acc[mt][i].s0 * inv, acc[mt][i].s1 * inv);
#endif
      }
#endif
      if (valid && writes) {
#if O_STAGED
#elif DUA_TF32
        __global float *o_row = o_bh + row * o_strides.s2 + 2 * t;
#pragma unroll
        for (int i = 0; i < OTILES; i++)
          vstore2(half_i ? acc[mt][i].s23 * inv : acc[mt][i].s01 * inv, 0, o_row + 8 * i);
#else
        __global uint *o_row =
            (__global uint *)(o_bh + row * o_strides.s2 + 2 * t); /* 4-byte aligned (host) */
#pragma unroll
        for (int i = 0; i < OTILES; i++)
          o_row[4 * i] = half_i ? pack_half2(acc[mt][i].s2 * inv, acc[mt][i].s3 * inv)
                                : pack_half2(acc[mt][i].s0 * inv, acc[mt][i].s1 * inv);
#endif
        if (has_lse && t == 0)
          lse[aux_offsets.s0 + b * lse_strides.s0 + h * lse_strides.s1 + row * lse_strides.s2] =
              l > 0.0f ? (m_run[mt][half_i] + log2(l)) * DUA_LN2 : -INFINITY;
      }
    }
  }
#if O_STAGED
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int idx = tid; idx < BM * COPY_CPR; idx += THREADS) {
    const int r = idx / COPY_CPR, c = (idx % COPY_CPR) * CHUNK;
    if (writes && row0 + r < shape.n_tokens)
      *(__global uint4 *)(o_bh + (long)(row0 + r) * o_strides.s2 + c) =
          *(__local const uint4 *)O_STAGE_AT(r, c);
  }
#endif
}

#if DUA_TMA
/* Writes the tensor map of one fp16 tensor (batch, heads, tokens, HEAD_DIM; element strides s, the last 1)
 * for boxes of BN rows x HEAD_DIM in the 128-byte swizzle to *out: built in tm (128 bytes of local memory,
 * zeroed, each field set by tensormap.replace), then copied out through the tensor-map proxy by the whole
 * warp. */
inline void tma_build_map(__local uint *tm, __global const dua_store_t *base, long4 s, int tokens, int heads,
                          int batch, __global ulong *out) {
  const int lane = get_local_id(0);
#if DUA_MMA_EMULATE /* the words tma_tile reads (tests) */
  const ulong words[7] = {(ulong)(size_t)base, tokens, heads, batch, s.s2, s.s1, s.s0};
  if (lane < 7)
    out[lane] = words[lane];
#else
  tm[lane] = 0;
  barrier(CLK_LOCAL_MEM_FENCE);
  if (lane == 0)
    asm volatile("// DUA_SM90A tensormap.replace.tile.global_address.shared::cta.b1024.b64 [%0], %1;\n"
                 "// DUA_SM90A tensormap.replace.tile.rank.shared::cta.b1024.b32 [%0], 3;\n"
                 "// DUA_SM90A tensormap.replace.tile.box_dim.shared::cta.b1024.b32 [%0], 0, %2;\n"
                 "// DUA_SM90A tensormap.replace.tile.box_dim.shared::cta.b1024.b32 [%0], 1, %3;\n"
                 "// DUA_SM90A tensormap.replace.tile.box_dim.shared::cta.b1024.b32 [%0], 2, 1;\n"
                 "// DUA_SM90A tensormap.replace.tile.box_dim.shared::cta.b1024.b32 [%0], 3, 1;\n"
                 "// DUA_SM90A tensormap.replace.tile.global_dim.shared::cta.b1024.b32 [%0], 0, %2;\n"
                 "// DUA_SM90A tensormap.replace.tile.global_dim.shared::cta.b1024.b32 [%0], 1, %4;\n"
                 "// DUA_SM90A tensormap.replace.tile.global_dim.shared::cta.b1024.b32 [%0], 2, %5;\n"
                 "// DUA_SM90A tensormap.replace.tile.global_dim.shared::cta.b1024.b32 [%0], 3, %6;\n"
                 "// DUA_SM90A tensormap.replace.tile.global_stride.shared::cta.b1024.b64 [%0], 0, %7;\n"
                 "// DUA_SM90A tensormap.replace.tile.global_stride.shared::cta.b1024.b64 [%0], 1, %8;\n"
                 "// DUA_SM90A tensormap.replace.tile.global_stride.shared::cta.b1024.b64 [%0], 2, %9;\n"
                 "// DUA_SM90A tensormap.replace.tile.element_stride.shared::cta.b1024.b32 [%0], 0, 1;\n"
                 "// DUA_SM90A tensormap.replace.tile.element_stride.shared::cta.b1024.b32 [%0], 1, 1;\n"
                 "// DUA_SM90A tensormap.replace.tile.element_stride.shared::cta.b1024.b32 [%0], 2, 1;\n"
                 "// DUA_SM90A tensormap.replace.tile.element_stride.shared::cta.b1024.b32 [%0], 3, 1;\n"
                 "// DUA_SM90A tensormap.replace.tile.elemtype.shared::cta.b1024.b32 [%0], 1;\n"
                 "// DUA_SM90A tensormap.replace.tile.swizzle_mode.shared::cta.b1024.b32 [%0], 3;\n" ::"r"(
                     smem_addr(tm)),
                 "l"(base), "r"(HEAD_DIM), "r"(BN), "r"(tokens), "r"(heads), "r"(batch), "l"(s.s2 * 2),
                 "l"(s.s1 * 2), "l"(s.s0 * 2)
                 : "memory");
  barrier(CLK_LOCAL_MEM_FENCE);
  asm volatile("// DUA_SM90A tensormap.cp_fenceproxy.global.shared::cta.tensormap::generic.release.gpu.sync."
               "aligned [%0], [%1], 128;\n" ::"l"(out),
               "r"(smem_addr(tm))
               : "memory");
#endif
}

/* One warp: the key loop's K and V maps (tma_tile) of a launch into maps[first .. first + 31]. The host
 * checked what TMA needs: 16-byte aligned starts, strides multiples of 16 bytes. */
__kernel __attribute__((reqd_work_group_size(32, 1, 1))) void
dua_tma_maps(__global const dua_store_t *k, __global const dua_store_t *v, long4 k_strides, long4 v_strides,
             long4 offsets, int n_tokens, int hkv, int batch, __global ulong *maps_all, int first) {
  __global ulong *maps = maps_all + first;
  __local uint tm[2][32] __attribute__((aligned(128)));
  tma_build_map(tm[0], k + offsets.s1, k_strides, n_tokens, hkv, batch, maps);
  tma_build_map(tm[1], v + offsets.s2, v_strides, n_tokens, hkv, batch, maps + 16);
}
#endif
