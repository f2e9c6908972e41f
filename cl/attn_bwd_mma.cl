/* attn_bwd_mma.cl: NVIDIA tensor-core block-sparse attention backward for fp16 storage, the two passes of
 * attn_bwd.cl on tensor cores: inline PTX mma.sync m16n8k16 (f16 x f16 -> f32), or on Hopper (DUA_WGMMA=1)
 * the warpgroup MMA of nv_wgmma_ops.cl. Built after attn_fwd_mma.cl (its warp-instruction helpers, tile
 * loader and forward enumeration), with MT = 1 and fp16 storage.
 *
 * dua_attn_bwd_dq_mma: a work-group of 4 warps owns 64 query rows (16 per warp) of one (batch, query head)
 * and walks the forward's visited key tiles (64 keys): S = Q K^T, dP = dO V^T, P = exp2(S scale - LSE),
 * dS = P (dP - delta), dQ += dS K; dQ = scale dQ.
 *
 * dua_attn_bwd_dkdv_mma: a work-group owns 64 keys (16 per warp) of one (batch, K/V head) and walks, for each
 * query head of its GQA group, the query blocks of the transposed list in tiles of 64 rows (32 on wgmma at
 * head dim 128): S^T = K Q^T,
 * dP^T = V dO^T, P^T and dS^T as above, dV += P^T dO, dK += dS^T Q; dK = scale dK.
 *
 * delta = rowsum(dO O) comes from dua_attn_bwd_pre (attn_bwd.cl). The work-group's own 64 rows (Q and dO in
 * the dq pass, K and V in the dkdv pass) are the A operand of the first two products of every tile: on
 * mma.sync as register A fragments, on wgmma at head dim 64 in local memory (which wgmma reads; see
 * nv_wgmma_ops.cl on why not registers across a wait; at head dim 128 see BWD_WGMMA_D128 below). The
 * streamed tiles are staged in local memory with cp.async: mma.sync one buffer each (two measured slower on
 * an H100: its registers already cap residency, bench/NOTES-mma.md), wgmma two (tile j + 1 streams in while
 * tile j is computed; one barrier per tile; the dq pass at head dim 128: K two, V one, refilled after S and
 * dP, two barriers per tile). On wgmma the independent products of a
 * tile share one asm statement and one wait (S and dP; dV and dK). The dkdv kernel caps its registers at 168
 * (three work-groups per SM instead of two; the host applies the cap through a PTX rebuild): on mma.sync it
 * takes each tile in two halves of 32 queries to fit; on wgmma the tile's LSE and delta are loaded a tile
 * ahead (in the loop they stalled the softmax behind the products' wait). On Hopper the host runs both
 * passes on wgmma (backward_nv_mma.c). P and dS are rounded to f16 and re-packed from C into A fragments (as
 * the forward's P), sums stay fp32. Same masks, skips, GQA, tails and empty rows as attn_bwd.cl; no level
 * bias, block-pair gradient or token-tree bias (the host runs the portable kernels for those). Requirements
 * checked by the host (backward_nv_mma.c): fp16, HEAD_DIM 64 or 128 (wgmma or mma.sync), block >= 64, rows
 * 16-byte aligned. */

/* DUA_WINDOWED 1 (layouts with a token window; host: backward_nv_mma.c): the dK/dV walk skips dead query
 * tiles */
#ifndef DUA_WINDOWED
#define DUA_WINDOWED 0
#endif

#if DUA_WGMMA && HEAD_DIM != 64 && HEAD_DIM != 128
#error "the backward's wgmma variant is head dim 64 or 128"
#endif
/* The wgmma variant by head dim. 64 (BWD_WGMMA_SS): the work-group's own rows in local memory, read by wgmma,
 * and two stages of streamed tiles (48 KB). 128 (BWD_WGMMA_D128; a 64-row tile is 16 KB): the dq pass holds
 * its own rows as register A operands (RS), K in two buffers and V in one (48 KB); the dkdv pass its own K in
 * local memory (16 KB) and V as register A operands, and two stages of query tiles of QT_ROWS 32 rows (Q and
 * dO 8 KB each: 32 KB). */
#define BWD_WGMMA_SS (DUA_WGMMA && HEAD_DIM == 64)
#define BWD_WGMMA_D128 (DUA_WGMMA && HEAD_DIM == 128)
#if BWD_WGMMA_D128
#define QT_ROWS 32                   /* query rows per tile of the dkdv pass */
#define QT_PANEL (QT_ROWS * 64)      /* halves between its two 64-column panels */
#define QT_TILE (QT_ROWS * HEAD_DIM) /* halves of one such tile */
#if QT_ROWS % COPY_RSTEP
#error "a query tile is whole passes of the tile copy (load_rows_async)"
#endif
#else
#define QT_ROWS BN
#endif
/* Stages of the dkdv pass's query tiles, and halves per buffer of one */
#define KV_STAGES (DUA_WGMMA ? 2 : 1)
#if BWD_WGMMA_D128
#define KV_TILE QT_TILE
#else
#define KV_TILE STAGED_TILE
#endif
#if DUA_TF32 || MT != 1 || BN != 64 || THREADS != 128
#error "attn_bwd_mma.cl needs attn_fwd_mma.cl built for fp16 with MT 1 (64-row tiles, 4 warps)"
#endif

#if DUA_WGMMA
#define TENSOR_CORE_FENCE() wgmma_proxy_fence() /* local writes -> the tensor core's reads */
#else
#define TENSOR_CORE_FENCE()
#endif
/* Buffers of the dq pass's K tiles and of its V tiles: wgmma two of each (head dim 128: V one, refilled as
 * soon as S and dP are done, see the kernel), mma.sync one */
#define DQ_STAGES (DUA_WGMMA ? 2 : 1)
#define DQ_V_STAGES (BWD_WGMMA_D128 ? 1 : DQ_STAGES)
#if BWD_WGMMA_SS
/* The work-group's own 64 rows: a tile in local memory, read by wgmma */
typedef __local const ushort *rows_operand;
#else
/* This warp's 16 of the work-group's own rows, as mma.sync (or wgmma RS) A fragments per k-step */
typedef struct {
  uint4 f[KSTEPS];
} rows_operand;
#endif
/* Query columns of the dkdv pass's tile per step (see its loop; wgmma's products take the whole tile) */
#if DUA_WGMMA
#define KV_COLS QT_ROWS
#else
#define KV_COLS (BN / 2)
#endif
#define STAGED_TILE (BN * K_PITCH) /* elements per buffer of a staged 64-row tile (K_PITCH == V_PITCH) */

/* Two stages (DQ_STAGES, KV_STAGES), top of tile j: tile j's copies (the only ones in flight) have landed
 * and are visible to the tensor core for every warp, and every warp is done with tile j - 1's buffers. */
inline void staged_tile_ready(void) {
  CP_WAIT(0);
  TENSOR_CORE_FENCE();
  barrier(CLK_LOCAL_MEM_FENCE);
}

/* s[i] = 0 and dp[i] = dp0, the accumulators of a tile's first two products, for i < N, N a compile-time
 * constant (a fully unrolled loop: the arrays stay in registers). dp0 = -delta (the dq pass: its rows') makes
 * dP's products leave dP - delta, as softmax_grad takes it (one subtraction per score fewer). */
#define START_TILES(s, dp, dp0, N)                                                                           \
  _Pragma("unroll") for (int zi_ = 0; zi_ < (N); zi_++) {                                                    \
    s[zi_] = (float4)(0.0f);                                                                                 \
    dp[zi_] = (dp0);                                                                                         \
  }

/* P (or dS) of one 16-row fragment block, C layout x[i] (8 columns each, n_tiles of them), packed as A
 * fragments of the next product over those columns: step kk takes C tiles 2kk and 2kk + 1 (as the forward's
 * P). */
inline void pack_a(const float4 *x, uint4 *a, int n_tiles) {
#pragma unroll
  for (int i = 0; i < n_tiles; i++) {
    const uint lo = pack_half2(x[i].s0, x[i].s1), hi = pack_half2(x[i].s2, x[i].s3);
    if (i & 1) {
      a[i >> 1].s2 = lo;
      a[i >> 1].s3 = hi;
    } else {
      a[i >> 1].s0 = lo;
      a[i >> 1].s1 = hi;
    }
  }
}

/* The first two products of a tile: c0 += a0 t0^T and c1 += a1 t1^T over HEAD_DIM, 8 n_tiles columns each
 * (wgmma: STILES): a0, a1 the work-group's own rows (this warp's 16 as C rows), the rows of tiles t0, t1
 * (row-major: K-major for wgmma) the columns of C. wgmma: both in one asm statement (one wait for the pair).
 * The caller starts c0 and c1 with a loop of constant count (START_TILES): a loop over n_tiles here was
 * unrolled only partly, which left both arrays in local memory (stack) for the whole tile. */
inline void mma_rows_x_tiles(float4 *c0, rows_operand a0, __local const ushort *t0, float4 *c1,
                             rows_operand a1, __local const ushort *t1, int n_tiles EMU_PARAMS) {
#if BWD_WGMMA_SS
  wgmma_ss_kmajor_pair(c0, a0, t0, c1, a1, t1 EMU_ARGS);
#elif BWD_WGMMA_D128
  wgmma_rs_kmajor_d128_pair(c0, a0.f, t0, c1, a1.f, t1 EMU_ARGS);
#else
  const int lane = get_local_id(0) & 31;
#pragma unroll
  for (int x = 0; x < 2; x++) { /* the first product, then the second */
    float4 *c = x ? c1 : c0;
    const rows_operand a = x ? a1 : a0;
    __local const ushort *t_s = x ? t1 : t0;
#pragma unroll
    for (int kk = 0; kk < KSTEPS; kk++) {
#pragma unroll
      for (int np = 0; np < n_tiles / 2; np++) {
        const uint4 tb = ldsm_x4(t_s, (np * 16 + (lane & 7) + ((lane >> 4) & 1) * 8) * K_PITCH + kk * 16 +
                                          ((lane >> 3) & 1) * 8 EMU_ARGS);
        c[2 * np] = mma_16816(c[2 * np], a.f[kk], tb.s01 EMU_ARGS);
        c[2 * np + 1] = mma_16816(c[2 * np + 1], a.f[kk], tb.s23 EMU_ARGS);
      }
    }
  }
#endif
}

#if !DUA_WGMMA
/* acc += A (16 x 16 k_steps per warp, fragments a[k_steps]) times the first 16 k_steps rows of tile t_s
 * (row-major, HEAD_DIM wide: B as k x n, hence ldmatrix .trans), as the forward's O += P V. */
inline void mma_acc_rows(float4 acc[OTILES], const uint4 *a, __local const ushort *t_s,
                         int k_steps EMU_PARAMS) {
  const int lane = get_local_id(0) & 31;
#pragma unroll
  for (int kk = 0; kk < k_steps; kk++) {
#pragma unroll
    for (int dp = 0; dp < OTILES / 2; dp++) {
      const uint4 tb = ldsm_x4_trans(t_s, (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * V_PITCH + dp * 16 +
                                              ((lane >> 4) & 1) * 8 EMU_ARGS);
      acc[2 * dp] = mma_16816(acc[2 * dp], a[kk], tb.s01 EMU_ARGS);
      acc[2 * dp + 1] = mma_16816(acc[2 * dp + 1], a[kk], tb.s23 EMU_ARGS);
    }
  }
}

/* acc += A times the whole tile (64 rows) */
inline void mma_acc_tile(float4 acc[OTILES], const uint4 a[PSTEPS], __local const ushort *t_s EMU_PARAMS) {
  mma_acc_rows(acc, a, t_s, PSTEPS EMU_ARGS);
}
#else
/* wgmma's N-major operand: the tile's rows are B's k rows (head dim 128: two 64-column products) */
#define mma_acc_tile WGMMA_PV
#endif

#if !BWD_WGMMA_SS
/* This warp's A fragments (rows 16 warp .. + 15, all k-steps) of a 64-row tile staged in x_s */
inline void rows_fragments(rows_operand *a, __local const ushort *x_s EMU_PARAMS) {
  const int lane = get_local_id(0) & 31, warp = get_local_id(0) >> 5;
#pragma unroll
  for (int kk = 0; kk < KSTEPS; kk++) /* ldmatrix: lane l gives row l % 16's 8 halves at column (l / 16) 8 */
    a->f[kk] = ldsm_x4(x_s, TILE_AT(warp * 16 + (lane & 15), kk * 16 + (lane >> 4) * 8, K_PITCH) EMU_ARGS);
}
#endif

/* The work-group's own rows [r0, r0 + 64) of two (tokens x HEAD_DIM) slices as operands a and b: copied into
 * x_s and y_s (cp.async, committed by the caller). mma.sync and wgmma at head dim 128: waits, reads this
 * warp's A fragments and frees the buffers (x_s, y_s are then the streamed tiles' buffers; the caller's
 * barrier precedes their reuse); wgmma at head dim 64: the operands are the buffers. */
inline void load_own_rows(rows_operand *a, rows_operand *b, __local ushort *x_s, __local ushort *y_s,
                          __global const ushort *x, long x_stride, __global const ushort *y, long y_stride,
                          int r0, int n_tokens EMU_PARAMS) {
  const int tid = get_local_id(0);
  load_tile_async(x_s, K_PITCH, x, x_stride, r0, n_tokens, tid);
  load_tile_async(y_s, V_PITCH, y, y_stride, r0, n_tokens, tid);
#if BWD_WGMMA_SS
  *a = x_s;
  *b = y_s;
#else
  cp_commit();
  CP_WAIT(0);
  barrier(CLK_LOCAL_MEM_FENCE);
  rows_fragments(a, x_s EMU_ARGS);
  rows_fragments(b, y_s EMU_ARGS);
#endif
}

/* One 16 x 8 C tile of scores s and of dP - delta (dp_dlt, START_TILES) of a tile that needs the element
 * mask (softmax_grad_full: one that does not): element e of lane (g, t) is (row row_lo + 8 (e >> 1), column
 * col_lo + (e & 1)). *p = exp2(x - lse2) of the scaled, masked scores x and *ds = P (dP - delta);
 * rows_are_queries: C rows are query rows (dq pass), else keys (dkdv pass: C columns are the queries). lse2
 * per element. */
inline void softmax_grad(float4 *p_out, float4 *ds_out, float4 s, float4 dp_dlt, float4 lse2, int row_lo,
                         int col_lo, int shared, int rows_are_queries, float scale_log2,
                         dua_fwd_shape shape) {
  float x[4] = {s.s0, s.s1, s.s2, s.s3}, d[4] = {dp_dlt.s0, dp_dlt.s1, dp_dlt.s2, dp_dlt.s3};
  float l[4] = {lse2.s0, lse2.s1, lse2.s2, lse2.s3};
  float p[4], g[4];
#pragma unroll
  for (int e = 0; e < 4; e++) {
    const int r = row_lo + 8 * (e >> 1), c = col_lo + (e & 1);
    const float y = rows_are_queries ? masked_score(x[e] * scale_log2, r, c, shared, 0.0f, shape)
                                     : masked_score(x[e] * scale_log2, c, r, shared, 0.0f, shape);
    p[e] = y == -INFINITY ? 0.0f : fast_exp2(y - l[e]);
    g[e] = p[e] * d[e];
  }
  *p_out = (float4)(p[0], p[1], p[2], p[3]);
  *ds_out = (float4)(g[0], g[1], g[2], g[3]);
}

/* softmax_grad of a tile that needs no element mask: p = exp2(s scale - lse), one fma and one ex2 per score,
 * with no branch (the masked version's per-score branches kept every score's chain apart in the SASS). */
inline void softmax_grad_full(float4 *p_out, float4 *ds_out, float4 s, float4 dp_dlt, float4 lse2,
                              float scale_log2) {
  const float4 y = s * scale_log2 - lse2; /* contracted to one fma per score */
  const float4 p = (float4)(fast_exp2(y.s0), fast_exp2(y.s1), fast_exp2(y.s2), fast_exp2(y.s3));
  *p_out = p;
  *ds_out = p * dp_dlt;
}

/* The dkdv pass's walk: position of the query tile being processed (query head h, item of the transposed
 * list of key block n, first row i0) and its mask flags. */
typedef struct {
  int h, item, count, n_full, i0, row_end, shared, full;
} query_tile_pos;

/* Moves p to the next query tile (QT_ROWS rows) that reaches keys [key0, key0 + 64): the rows of the next
 * visited query block, else the next query head of the GQA group; causal tiles whose rows all precede key0
 * are skipped. Start with p->h = first head - 1, p->item = p->count = p->i0 = p->row_end = 0. Returns 0 when
 * there is none. Uniform across the work-group. */
inline int next_query_tile(query_tile_pos *p, int h_end, int b, int n, int key0, dua_fwd_shape shape,
                           __global const dua_head_rule *head_rules, __global const uchar *paths,
                           __global const int *tlist_counts, __global const int *tlist_full,
                           __global const int *tlist_indices) {
  for (;;) {
    p->i0 += QT_ROWS;
    if (p->i0 < p->row_end) {
      if (shape.causal && p->i0 + QT_ROWS - 1 < key0)
        continue; /* every row of this tile precedes every key of the work-group */
#if DUA_WINDOWED
      /* no row of this tile has a key of the work-group in its window (KEYS_DEAD, as the forward's
       * TILE_DEAD): on an H200 1.7-3.7% off the windowed backward at N 8192 (within the spread at
       * 16384-32768); only for windowed layouts: compiled into every program it had cost the others 0.5-1.5%
       * (NOTES-mma.md) */
      if (KEYS_DEAD(p->shared, key0, shape, p->i0, min(p->i0 + QT_ROWS, p->row_end)))
        continue;
#endif
      return 1;
    }
    if (++p->item >= p->count) {
      do {
        if (++p->h >= h_end)
          return 0;
        const long bhn = ((long)b * shape.hq + p->h) * shape.nb + n;
        p->count = tlist_counts[bhn];
        p->n_full = tlist_full[bhn];
      } while (p->count == 0);
      p->item = 0;
    }
    const long bh = (long)b * shape.hq + p->h;
    const int m = tlist_indices[(bh * shape.nb + n) * shape.nb + p->item];
#if DUA_TREE == 2
    p->shared = 1;
#else
    __global const uchar *paths_bh = paths + bh * shape.nb * shape.max_depth;
    p->shared = block_shared(head_rules[p->h], m, n, shape.shift, paths_bh + (long)m * shape.max_depth,
                             paths_bh, shape.max_depth);
#endif
    p->full = p->item < p->n_full;
    p->row_end = min(shape.n_tokens, m * shape.blk + shape.blk);
    p->i0 = m * shape.blk - QT_ROWS; /* the loop's first step moves to the block's first row */
  }
}

/* LSE (as stored; lse2_at: in log2 units) and delta of query row `row` (< n_tokens) of (batch b, query head
 * h). */
inline float lse_at(__global const float *lse, long4 lse_strides, long lse_offset, int b, int h, int row) {
  return lse[lse_offset + b * lse_strides.s0 + h * lse_strides.s1 + row * lse_strides.s2];
}

inline float lse2_at(__global const float *lse, long4 lse_strides, long lse_offset, int b, int h, int row) {
  return lse_at(lse, lse_strides, lse_offset, b, h, row) * DUA_LOG2E;
}

inline float delta_at(__global const float *delta, long delta_offset, int b, int h, int row,
                      dua_fwd_shape shape) {
  return delta[delta_offset + ((long)b * shape.hq + h) * shape.n_tokens + row];
}

/* (LSE in log2 units, delta) of a row from its stored values, an empty row's LSE (-inf) as 0: all its scores
 * are masked. */
inline float2 stats_of(float lse, float dl) {
  const float l2 = lse * DUA_LOG2E;
  return (float2)(isinf(l2) ? 0.0f : l2, dl);
}

/* stats_of row `row`, 0 past the sequence. */
inline float2 row_stats(__global const float *lse, __global const float *delta, long4 lse_strides,
                        long lse_offset, long delta_offset, int b, int h, int row, dua_fwd_shape shape) {
  if (row >= shape.n_tokens)
    return (float2)(0.0f);
  return stats_of(lse_at(lse, lse_strides, lse_offset, b, h, row),
                  delta_at(delta, delta_offset, b, h, row, shape));
}

/* The statistic of query tile rows [i0, i0 + 64) of head h that work-item tid stages (THREADS == 2 BN): the
 * LSE (log2 units) of row i0 + tid, then the delta of row i0 + tid - BN; 0 past the sequence and for an empty
 * row's LSE (all its scores are masked; delta is finite). */
inline float tile_stat(__global const float *lse, __global const float *delta, long4 lse_strides,
                       long lse_offset, long delta_offset, int b, int h, int i0, dua_fwd_shape shape) {
  const int tid = get_local_id(0), row = i0 + (tid & (BN - 1));
  float x = 0.0f;
  if (row < shape.n_tokens) {
    x = tid < BN ? lse2_at(lse, lse_strides, lse_offset, b, h, row)
                 : delta_at(delta, delta_offset, b, h, row, shape);
    x = isinf(x) ? 0.0f : x;
  }
  return x;
}

/* The LSE and delta of query tile rows i0 + 2 lane, + 1 as stored (rows past the sequence read the last row):
 * loads only, with no branch and no arithmetic on the loaded values, so that nothing waits for them before
 * lane_stats_ready, a tile later. (A multiply right after each load made the dK/dV pass's walk to its next
 * tile wait for two round trips to memory; without it the backward is 2-4% faster on an H100:
 * bench/NOTES-mma.md, sixteenth session.) */
inline float4 lane_stats_raw(__global const float *lse, __global const float *delta, long4 lse_strides,
                             long lse_offset, long delta_offset, int b, int h, int i0, dua_fwd_shape shape) {
  const int r = i0 + 2 * (get_local_id(0) & 31);
  const int r0 = min(r, shape.n_tokens - 1), r1 = min(r + 1, shape.n_tokens - 1);
  return (
      float4)(lse_at(lse, lse_strides, lse_offset, b, h, r0), lse_at(lse, lse_strides, lse_offset, b, h, r1),
              delta_at(delta, delta_offset, b, h, r0, shape), delta_at(delta, delta_offset, b, h, r1, shape));
}

/* (lse, lse, delta, delta) of those rows from lane_stats_raw's values, as row_stats gives them. */
inline float4 lane_stats_ready(float4 raw, int i0, dua_fwd_shape shape) {
  const int r = i0 + 2 * (get_local_id(0) & 31);
  const float2 a = r < shape.n_tokens ? stats_of(raw.s0, raw.s2) : (float2)(0.0f),
               c = r + 1 < shape.n_tokens ? stats_of(raw.s1, raw.s3) : (float2)(0.0f);
  return (float4)(a.x, c.x, a.y, c.y);
}

/* The dkdv pass's statistic (x_c, x_c+1, x_c, x_c+1) of query columns c, c + 1 (c even) in a C tile: from
 * the lane holding them, whose (x_lo, x_hi) are its columns 2 lane, + 1 (lane_stats_ready; shuffles) */
inline float4 column_pair(float x_lo, float x_hi, int c EMU_PARAMS) {
  const int src = c >> 1;
  const float2 x = (float2)(shfl_idx(x_lo, src EMU_ARGS), shfl_idx(x_hi, src EMU_ARGS));
  return (float4)(x, x);
}

/* The same from a statistic staged per column in local memory (tile_stat) */
inline float4 column_pair_staged(__local const float *x, int c) {
  return (float4)(x[c], x[c + 1], x[c], x[c + 1]);
}

/* global (tiles * 128, Hq, B), tiles = nb * (blk / 64) */
__kernel __attribute__((reqd_work_group_size(THREADS, 1, 1))) void dua_attn_bwd_dq_mma(
    __global const dua_store_t *q, __global const dua_store_t *k, __global const dua_store_t *v,
    __global const dua_store_t *d_o, __global const float *lse, __global const float *delta,
    __global dua_store_t *dq, long4 q_strides, long4 k_strides, long4 v_strides, long4 do_strides,
    long4 dq_strides, long4 lse_strides, long4 offsets /* q, k, v, d_o */,
    long4 aux_offsets /* dq, lse, delta, - */, dua_fwd_shape shape, float scale, float scale_log2,
    __global const dua_head_rule *head_rules, __global const uchar *paths, __global const int *order,
    __global const int *rank_range, __global const int *list_counts, __global const int *list_full,
    __global const int *list_indices, __global const int *tail_order, int tail_start) {
  __local ushort k_s[DQ_STAGES * STAGED_TILE] __attribute__((aligned(TILE_ALIGN)));
  __local ushort v_s[DQ_V_STAGES * STAGED_TILE] __attribute__((aligned(TILE_ALIGN)));
#if BWD_WGMMA_SS
  __local ushort q_s[STAGED_TILE] __attribute__((aligned(TILE_ALIGN)));  /* Q rows of the work-group */
  __local ushort do_s[STAGED_TILE] __attribute__((aligned(TILE_ALIGN))); /* dO rows */
#elif BWD_WGMMA_D128
  __local ushort *const q_s = k_s, *const do_s = k_s + STAGED_TILE; /* Q and dO through the K stages */
#else
  __local ushort *const q_s = k_s, *const do_s = v_s; /* Q and dO pass through the K and V buffers */
#endif
  EMU_LOCALS
  const int tid = get_local_id(0), lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const launch_entry w = launch_entry_of(shape.blk / BM, shape.nb, tail_order, tail_start);
  const int h = w.h, b = w.b, m = w.blk;
  const int row0 = m * shape.blk + w.tile * BM;
  if (row0 >= shape.n_tokens)
    return;
  const int row_end = min(shape.n_tokens, row0 + BM);
  const int hk = h / (shape.hq / shape.hkv);
  const long bh = (long)b * shape.hq + h;
  const dua_head_rule hr = head_rules[h];
  __global const ushort *k_bh =
      (__global const ushort *)(k + offsets.s1 + b * k_strides.s0 + hk * k_strides.s1);
  __global const ushort *v_bh =
      (__global const ushort *)(v + offsets.s2 + b * v_strides.s0 + hk * v_strides.s1);
  __global const uchar *paths_bh = paths + bh * shape.nb * shape.max_depth;
  __global const uchar *path_m = paths_bh + (long)m * shape.max_depth;
  const visit_list vl =
      visit_list_begin(m, bh, hr, shape, order, rank_range, list_counts, list_full, list_indices);

  rows_operand qa, ga; /* Q and dO rows of the work-group */
  load_own_rows(&qa, &ga, q_s, do_s,
                (__global const ushort *)(q + offsets.s0 + b * q_strides.s0 + h * q_strides.s1), q_strides.s2,
                (__global const ushort *)(d_o + offsets.s3 + b * do_strides.s0 + h * do_strides.s1),
                do_strides.s2, row0, shape.n_tokens EMU_ARGS);
  float4 acc[OTILES];
#pragma unroll
  for (int i = 0; i < OTILES; i++)
    acc[i] = (float4)(0.0f);

  tile_pos cur;
  cur.item = -1;
  int have =
      next_tile(&cur, &vl, hr, m, row0, row_end, shape, path_m, paths_bh, lse /* unused without DUA_BIAS */);
#if BWD_WGMMA_D128
  barrier(CLK_LOCAL_MEM_FENCE); /* every warp has its Q and dO fragments: the buffers are K's and V's */
#endif
#if DQ_STAGES == 2
  if (have) { /* head dim 64: committed with the work-group's own rows */
    load_key_tile(k_s, v_s, k_bh, k_strides.s2, v_bh, v_strides.s2, cur.j0, shape.n_tokens);
  }
  cp_commit();
#endif
  /* LSE and delta of rows g, g + 8: loaded after the copies above are issued (each load's value is used at
   * once, so the work-items wait here; the copies are then already on their way) */
  const int r_lo = row0 + warp * 16 + g;
  const float2 st_lo = row_stats(lse, delta, lse_strides, aux_offsets.s1, aux_offsets.s2, b, h, r_lo, shape);
  const float2 st_hi =
      row_stats(lse, delta, lse_strides, aux_offsets.s1, aux_offsets.s2, b, h, r_lo + 8, shape);
  const float4 lse4 = (float4)(st_lo.x, st_lo.x, st_hi.x, st_hi.x),
               neg_dlt4 = -(float4)(st_lo.y, st_lo.y, st_hi.y, st_hi.y);
  int stage = 0; /* DQ_STAGES 2: the buffers of tile j */
  while (have) {
#if DQ_STAGES == 2
    __local ushort *k_t = k_s + stage * STAGED_TILE, *v_t = v_s + (DQ_V_STAGES - 1) * stage * STAGED_TILE;
    staged_tile_ready();
    tile_pos nxt = cur;
    const int have_next = next_tile(&nxt, &vl, hr, m, row0, row_end, shape, path_m, paths_bh, lse);
    if (have_next) { /* tile j + 1 streams in while tile j is computed (head dim 128: its K) */
#if BWD_WGMMA_D128
      load_tile_async(k_s + (stage ^ 1) * STAGED_TILE, K_PITCH, k_bh, k_strides.s2, nxt.j0, shape.n_tokens,
                      tid);
#else
      load_key_tile(k_s + (stage ^ 1) * STAGED_TILE, v_s + (stage ^ 1) * STAGED_TILE, k_bh, k_strides.s2,
                    v_bh, v_strides.s2, nxt.j0, shape.n_tokens);
#endif
    }
    cp_commit();
    /* unmasked tiles per work-group, as the wgmma forward (TILE_UNMASKED) */
    const int elementwise = !TILE_UNMASKED(cur, shape, row0);
#else
    __local ushort *k_t = k_s, *v_t = v_s;
    barrier(CLK_LOCAL_MEM_FENCE); /* every warp is done with k_s and v_s */
    load_key_tile(k_t, v_t, k_bh, k_strides.s2, v_bh, v_strides.s2, cur.j0, shape.n_tokens);
    cp_commit();
    CP_WAIT(0);
    TENSOR_CORE_FENCE();
    barrier(CLK_LOCAL_MEM_FENCE);
    const int elementwise = !cur.full;
#endif
    float4 s[STILES], dp[STILES]; /* S, then P; dP, then dS */
    START_TILES(s, dp, neg_dlt4, STILES);
    mma_rows_x_tiles(s, qa, k_t, dp, ga, v_t, STILES EMU_ARGS);
#if BWD_WGMMA_D128
    barrier(CLK_LOCAL_MEM_FENCE); /* every warp is done with V(j): V(j + 1) streams in from here */
    if (have_next)
      load_tile_async(v_s, V_PITCH, v_bh, v_strides.s2, nxt.j0, shape.n_tokens, tid);
    cp_commit();
#endif
    if (elementwise) {
#pragma unroll
      for (int i = 0; i < STILES; i++)
        softmax_grad(&s[i], &dp[i], s[i], dp[i], lse4, r_lo, cur.j0 + 8 * i + 2 * t, cur.shared, 1,
                     scale_log2, shape);
    } else {
#pragma unroll
      for (int i = 0; i < STILES; i++)
        softmax_grad_full(&s[i], &dp[i], s[i], dp[i], lse4, scale_log2);
    }
    uint4 dsa[PSTEPS];
    pack_a(dp, dsa, STILES);
    mma_acc_tile(acc, dsa, k_t EMU_ARGS); /* dQ += dS K */
#if DQ_STAGES == 2
    cur = nxt;
    have = have_next;
    stage ^= 1;
#else
    have = next_tile(&cur, &vl, hr, m, row0, row_end, shape, path_m, paths_bh, lse);
#endif
  }
  CP_WAIT(0); /* no copy outlives the work-group (nothing visited: the own rows' copies) */

  __global dua_store_t *dq_bh = dq + aux_offsets.s0 + b * dq_strides.s0 + h * dq_strides.s1;
#pragma unroll
  for (int half_i = 0; half_i < 2; half_i++) {
    const int row = r_lo + 8 * half_i;
#if DUA_MMA_EMULATE
    volatile int valid = row < shape.n_tokens; /* as the forward: PoCL treated this branch as uniform */
#else
    const int valid = row < shape.n_tokens;
#endif
    if (valid) {
      __global uint *out = (__global uint *)(dq_bh + row * dq_strides.s2 + 2 * t);
#pragma unroll
      for (int i = 0; i < OTILES; i++)
        out[4 * i] = half_i ? pack_half2(acc[i].s2 * scale, acc[i].s3 * scale)
                            : pack_half2(acc[i].s0 * scale, acc[i].s1 * scale);
    }
  }
}

/* Starts the copy of query tile rows [i0, i0 + QT_ROWS) of head h (Q into q_t, dO into do_t). */
inline void load_query_tile(__local ushort *q_t, __local ushort *do_t, __global const dua_store_t *q,
                            __global const dua_store_t *d_o, long4 q_strides, long4 do_strides, long4 offsets,
                            int b, int h, int i0, int n_tokens) {
  const int tid = get_local_id(0);
  __global const ushort *q_bh =
                            (__global const ushort *)(q + offsets.s0 + b * q_strides.s0 + h * q_strides.s1),
                        *do_bh = (__global const ushort *)(d_o + offsets.s3 + b * do_strides.s0 +
                                                           h * do_strides.s1);
#if BWD_WGMMA_D128
  load_rows_async(q_t, K_PITCH, QT_PANEL, q_bh, q_strides.s2, i0, QT_ROWS, n_tokens, tid);
  load_rows_async(do_t, V_PITCH, QT_PANEL, do_bh, do_strides.s2, i0, QT_ROWS, n_tokens, tid);
#else
  load_tile_async(q_t, K_PITCH, q_bh, q_strides.s2, i0, n_tokens, tid);
  load_tile_async(do_t, V_PITCH, do_bh, do_strides.s2, i0, n_tokens, tid);
#endif
}

/* global (key_tiles * 128, Hkv, B), key_tiles = nb * (blk / 64). Transposed lists: for (b, h, key block n),
 * the query blocks that visit it, full ones first. */
__kernel __attribute__((reqd_work_group_size(THREADS, 1, 1))) void dua_attn_bwd_dkdv_mma(
    __global const dua_store_t *q, __global const dua_store_t *k, __global const dua_store_t *v,
    __global const dua_store_t *d_o, __global const float *lse, __global const float *delta,
    __global dua_store_t *dk, __global dua_store_t *dv, long4 q_strides, long4 k_strides, long4 v_strides,
    long4 do_strides, long4 dk_strides, long4 dv_strides, long4 lse_strides, long4 offsets /* q, k, v, d_o */,
    long4 aux_offsets /* dk, dv, lse, delta */, dua_fwd_shape shape, float scale, float scale_log2,
    __global const dua_head_rule *head_rules, __global const uchar *paths, __global const int *tlist_counts,
    __global const int *tlist_full, __global const int *tlist_indices, __global const int *tail_order,
    int tail_start) {
#if HEAD_DIM == 64
  MAX_REGISTERS(168); /* three work-groups per SM (two uncapped: 1.2x slower on an H100; NOTES-mma.md) */
#endif
  /* head dim 128 uncapped: dK and dV alone hold 128 registers (mma.sync: at 168 clang 15 + ptxas 13 spilled
   * 2.1 KB, uncapped (255) 120 bytes; wgmma: 251, no spills) */
  __local ushort q_s[KV_STAGES * KV_TILE] __attribute__((aligned(TILE_ALIGN)));  /* query tiles */
  __local ushort do_s[KV_STAGES * KV_TILE] __attribute__((aligned(TILE_ALIGN))); /* dO tiles */
#if BWD_WGMMA_D128
  __local ushort k_s[STAGED_TILE] __attribute__((aligned(TILE_ALIGN))); /* K rows of the work-group */
  /* (V's rows pass through q_s into registers) */
#elif DUA_WGMMA
  __local ushort k_s[STAGED_TILE] __attribute__((aligned(TILE_ALIGN))); /* K rows of the work-group */
  __local ushort v_s[STAGED_TILE] __attribute__((aligned(TILE_ALIGN))); /* V rows */
  /* (48 KB with the query tiles: the tile's LSE and delta stay in registers, lane_stats_ready) */
#else
  __local ushort *const k_s = q_s, *const v_s = do_s; /* K and V pass through the query tiles' buffers */
  __local float stats[2 * BN];                        /* lse (log2 units), delta of the tile (tile_stat) */
#endif
  EMU_LOCALS
  const int tid = get_local_id(0), lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const launch_entry w = launch_entry_of(shape.blk / BN, shape.nb, tail_order, tail_start);
  const int hk = w.h, b = w.b, n = w.blk;
  const int key0 = n * shape.blk + w.tile * BN;
  if (key0 >= shape.n_tokens)
    return;
  const int group = shape.hq / shape.hkv;

  __global const ushort *k_bh =
                            (__global const ushort *)(k + offsets.s1 + b * k_strides.s0 + hk * k_strides.s1),
                        *v_bh =
                            (__global const ushort *)(v + offsets.s2 + b * v_strides.s0 + hk * v_strides.s1);
#if BWD_WGMMA_D128 /* K rows of the work-group read by wgmma, V rows as register A operands */
  __local const ushort *const ka = k_s;
  rows_operand va;
  load_tile_async(k_s, K_PITCH, k_bh, k_strides.s2, key0, shape.n_tokens, tid);
  load_tile_async(q_s, V_PITCH, v_bh, v_strides.s2, key0, shape.n_tokens, tid); /* both query stages */
  cp_commit();
  CP_WAIT(0);
  barrier(CLK_LOCAL_MEM_FENCE);
  rows_fragments(&va, q_s EMU_ARGS);
  barrier(CLK_LOCAL_MEM_FENCE); /* every warp has read V: q_s holds query tiles from here */
#else
  rows_operand ka, va; /* K and V rows of the work-group */
  load_own_rows(&ka, &va, k_s, v_s, k_bh, k_strides.s2, v_bh, v_strides.s2, key0, shape.n_tokens EMU_ARGS);
#endif
  const int k_lo = key0 + warp * 16 + g; /* C rows: keys k_lo, k_lo + 8 */
  float4 dk_acc[OTILES], dv_acc[OTILES];
#pragma unroll
  for (int i = 0; i < OTILES; i++)
    dk_acc[i] = dv_acc[i] = (float4)(0.0f);

  query_tile_pos cur = {hk * group - 1, 0, 0, 0, 0, 0, 0, 0};
  const int h_end = (hk + 1) * group;
  int have = next_query_tile(&cur, h_end, b, n, key0, shape, head_rules, paths, tlist_counts, tlist_full,
                             tlist_indices);
#if KV_STAGES == 2
  if (have) /* committed with the work-group's own rows (at head dim 128: K's, V's waited for above) */
    load_query_tile(q_s, do_s, q, d_o, q_strides, do_strides, offsets, b, cur.h, cur.i0, shape.n_tokens);
  cp_commit();
  /* LSE and delta of the tile's query rows 2 lane, + 1: loaded a tile ahead (the next tile's while this one
   * is computed; in the loop they stalled the softmax: 1.28x on an H100), each work-item's columns taken
   * from the lanes that hold them (shuffles) */
  float4 lane_raw =
      have ? lane_stats_raw(lse, delta, lse_strides, aux_offsets.s2, aux_offsets.s3, b, cur.h, cur.i0, shape)
           : (float4)(0.0f);
#endif
  int stage = 0; /* KV_STAGES 2: the buffers of tile j */
  while (have) {
    __local ushort *q_t = q_s + stage * KV_TILE, *do_t = do_s + stage * KV_TILE;
#if KV_STAGES == 2
    staged_tile_ready();
#if BWD_WGMMA_SS
    /* S^T = K Q^T and dP^T = V dO^T are issued before the walk and the next tile's copies, which run while
     * they do (wgmma_wait_all_of_pair below) */
    float4 s[KV_COLS / 8], dp[KV_COLS / 8]; /* S^T, then P^T; dP^T, then dS^T */
    START_TILES(s, dp, (float4)(0.0f), KV_COLS / 8);
    wgmma_ss_kmajor_pair_issue(s, ka, q_t, dp, va, do_t EMU_ARGS);
#endif
    const float4 lane_st =
        lane_stats_ready(lane_raw, cur.i0, shape); /* loaded a tile ago, or in the prologue */
    query_tile_pos nxt = cur;
    const int have_next = next_query_tile(&nxt, h_end, b, n, key0, shape, head_rules, paths, tlist_counts,
                                          tlist_full, tlist_indices);
    if (have_next) /* tile j + 1 streams in while tile j is computed */
      load_query_tile(q_s + (stage ^ 1) * KV_TILE, do_s + (stage ^ 1) * KV_TILE, q, d_o, q_strides,
                      do_strides, offsets, b, nxt.h, nxt.i0, shape.n_tokens);
    const float4 next_raw = have_next ? lane_stats_raw(lse, delta, lse_strides, aux_offsets.s2,
                                                       aux_offsets.s3, b, nxt.h, nxt.i0, shape)
                                      : (float4)(0.0f);
    cp_commit();
#else
    barrier(CLK_LOCAL_MEM_FENCE); /* every warp is done with q_s, do_s and stats */
    load_query_tile(q_t, do_t, q, d_o, q_strides, do_strides, offsets, b, cur.h, cur.i0, shape.n_tokens);
    cp_commit();
    stats[tid] = tile_stat(lse, delta, lse_strides, aux_offsets.s2, aux_offsets.s3, b, cur.h, cur.i0, shape);
    CP_WAIT(0);
    barrier(CLK_LOCAL_MEM_FENCE);
#endif
#if DUA_WGMMA
    /* unmasked tiles per work-group, as the dq pass: every key at or before every row of the tile */
    const int elementwise =
        !(cur.full ||
          (cur.shared && shape.window == 0 && shape.sink == 0 && cur.i0 + QT_ROWS <= shape.n_tokens &&
           key0 + BN <= shape.n_tokens && (!shape.causal || key0 + BN - 1 <= cur.i0)));
#else
    const int elementwise = !cur.full;
#endif
    /* wgmma: the whole tile; mma.sync: two halves of 32 queries (S^T, dP^T and their A fragments for 32
     * columns at a time: 48 fewer live registers; bench/NOTES-mma.md) */
#pragma unroll
    for (int c0 = 0; c0 < QT_ROWS; c0 += KV_COLS) {
#if !BWD_WGMMA_SS
      float4 s[KV_COLS / 8], dp[KV_COLS / 8]; /* S^T, then P^T; dP^T, then dS^T */
#endif
/* the LSE (log2 units) and the delta of query columns i0 + c, + 1, as (c, c + 1, c, c + 1) */
#if DUA_WGMMA
#define COLUMN_LSE(c) column_pair(lane_st.s0, lane_st.s1, c EMU_ARGS)
#define COLUMN_DELTA(c) column_pair(lane_st.s2, lane_st.s3, c EMU_ARGS)
#else
#define COLUMN_LSE(c) column_pair_staged(stats, c)
#define COLUMN_DELTA(c) column_pair_staged(stats + BN, c)
#endif
      /* dP^T from 0 here, delta subtracted after the products: starting it at -delta needs the delta shuffles
       * before the products (208 bytes of spills at the cap of 168; measured mixed, bench/NOTES-mma.md) */
#if BWD_WGMMA_SS
      wgmma_wait_all_of_pair(s, dp EMU_ARGS); /* issued above */
#else
      START_TILES(s, dp, (float4)(0.0f), KV_COLS / 8);
#if BWD_WGMMA_D128
      wgmma_ss_rs_kmajor_n32_d128_pair(s, ka, q_t, dp, va.f, do_t, QT_PANEL EMU_ARGS);
#else
      mma_rows_x_tiles(s, ka, q_t + c0 * K_PITCH, dp, va, do_t + c0 * V_PITCH, KV_COLS / 8 EMU_ARGS);
#endif
#endif
      if (elementwise) {
#pragma unroll
        for (int i = 0; i < KV_COLS / 8; i++) {
          const int c = c0 + 8 * i + 2 * t; /* query columns i0 + c, + 1 */
          softmax_grad(&s[i], &dp[i], s[i], dp[i] - COLUMN_DELTA(c), COLUMN_LSE(c), k_lo, cur.i0 + c,
                       cur.shared, 0, scale_log2, shape);
        }
      } else {
#pragma unroll
        for (int i = 0; i < KV_COLS / 8; i++) {
          const int c = c0 + 8 * i + 2 * t;
          softmax_grad_full(&s[i], &dp[i], s[i], dp[i] - COLUMN_DELTA(c), COLUMN_LSE(c), scale_log2);
        }
      }
#undef COLUMN_DELTA
#undef COLUMN_LSE
      uint4 pa[KV_COLS / 16], dsa[KV_COLS / 16];
      pack_a(s, pa, KV_COLS / 8);
      pack_a(dp, dsa, KV_COLS / 8);
#if BWD_WGMMA_D128 /* dV += P^T dO, dK += dS^T Q */
      wgmma_rs_nmajor_k32_d128_pair(dv_acc, pa, do_t, dk_acc, dsa, q_t, QT_PANEL EMU_ARGS);
#elif DUA_WGMMA
      wgmma_rs_nmajor_pair(dv_acc, pa, do_t, dk_acc, dsa, q_t EMU_ARGS);
#else
      mma_acc_rows(dv_acc, pa, do_t + c0 * V_PITCH, KV_COLS / 16 EMU_ARGS);
      mma_acc_rows(dk_acc, dsa, q_t + c0 * K_PITCH, KV_COLS / 16 EMU_ARGS);
#endif
    }
#if KV_STAGES == 2
    lane_raw = next_raw;
    cur = nxt;
    have = have_next;
    stage ^= 1;
#else
    have = next_query_tile(&cur, h_end, b, n, key0, shape, head_rules, paths, tlist_counts, tlist_full,
                           tlist_indices);
#endif
  }
  CP_WAIT(0); /* no copy outlives the work-group (nothing visited: the own rows' copies) */

  __global dua_store_t *dk_bh = dk + aux_offsets.s0 + b * dk_strides.s0 + hk * dk_strides.s1;
  __global dua_store_t *dv_bh = dv + aux_offsets.s1 + b * dv_strides.s0 + hk * dv_strides.s1;
#pragma unroll
  for (int half_i = 0; half_i < 2; half_i++) {
    const int key = k_lo + 8 * half_i;
#if DUA_MMA_EMULATE
    volatile int valid = key < shape.n_tokens;
#else
    const int valid = key < shape.n_tokens;
#endif
    if (valid) {
      __global uint *ko = (__global uint *)(dk_bh + key * dk_strides.s2 + 2 * t);
      __global uint *vo = (__global uint *)(dv_bh + key * dv_strides.s2 + 2 * t);
#pragma unroll
      for (int i = 0; i < OTILES; i++) {
        ko[4 * i] = half_i ? pack_half2(dk_acc[i].s2 * scale, dk_acc[i].s3 * scale)
                           : pack_half2(dk_acc[i].s0 * scale, dk_acc[i].s1 * scale);
        vo[4 * i] = half_i ? pack_half2(dv_acc[i].s2, dv_acc[i].s3) : pack_half2(dv_acc[i].s0, dv_acc[i].s1);
      }
    }
  }
}
