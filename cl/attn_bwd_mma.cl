/* attn_bwd_mma.cl: NVIDIA tensor-core block-sparse attention backward for fp16 storage (inline PTX mma.sync
 * m16n8k16 f16 x f16 -> f32), the two passes of attn_bwd.cl on tensor cores. Built after attn_fwd_mma.cl
 * (its warp-instruction helpers, tile loader and forward enumeration), with MT = 1 and fp16 storage.
 *
 * dua_attn_bwd_dq_mma: a work-group of 4 warps owns 64 query rows (16 per warp) of one (batch, query head)
 * and walks the forward's visited key tiles (64 keys): S = Q K^T, dP = dO V^T, P = exp2(S scale - LSE),
 * dS = P (dP - delta), dQ += dS K; dQ = scale dQ.
 *
 * dua_attn_bwd_dkdv_mma: a work-group owns 64 keys (16 per warp) of one (batch, K/V head) and walks, for each
 * query head of its GQA group, the query blocks of the transposed list in tiles of 64 rows: S^T = K Q^T,
 * dP^T = V dO^T, P^T and dS^T as above, dV += P^T dO, dK += dS^T Q; dK = scale dK.
 *
 * delta = rowsum(dO O) comes from dua_attn_bwd_pre (attn_bwd.cl). Q and dO (dq pass) or K and V (dkdv pass)
 * stay in registers as A fragments; the streamed tiles are staged in local memory with cp.async, one buffer
 * each (two, loading tile j + 1 while tile j is used, measured 8% slower on an H100: bench/NOTES-mma.md); P
 * and dS are rounded to f16 and re-packed from C into A fragments (as the forward's P), sums stay fp32. Same
 * masks, skips, GQA, tails and empty rows as attn_bwd.cl; no level bias, block-pair gradient or token-tree
 * bias (the host runs the portable kernels for those). Requirements checked by the host (backward_nv_mma.c):
 * fp16, HEAD_DIM 64, block >= 64, rows 16-byte aligned. */

#if DUA_TF32 || MT != 1 || BN != 64
#error "attn_bwd_mma.cl needs attn_fwd_mma.cl built for fp16 with MT 1 (64-row tiles)"
#endif

/* P (or dS) of one 16-row fragment block, C layout x[i] (8 columns each), packed as A fragments of the next
 * product over those columns: step kk takes C tiles 2kk and 2kk + 1 (as the forward's P). */
inline void pack_a(float4 x[STILES], uint4 a[PSTEPS]) {
#pragma unroll
  for (int i = 0; i < STILES; i++) {
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

/* C = A_frag B^T over HEAD_DIM for 64 columns: B^T rows (columns of C) are the 64 rows of tile t_s
 * (row-major, pitch K_PITCH), A fragments af[KSTEPS] (16 rows x HEAD_DIM). */
inline void mma_rows_x_tile(float4 c[STILES], const uint4 af[KSTEPS], __local const ushort *t_s EMU_PARAMS) {
  const int lane = get_local_id(0) & 31;
#pragma unroll
  for (int i = 0; i < STILES; i++)
    c[i] = (float4)(0.0f);
#pragma unroll
  for (int kk = 0; kk < KSTEPS; kk++) {
#pragma unroll
    for (int np = 0; np < STILES / 2; np++) {
      const uint4 tb = ldsm_x4(t_s, (np * 16 + (lane & 7) + ((lane >> 4) & 1) * 8) * K_PITCH + kk * 16 +
                                        ((lane >> 3) & 1) * 8 EMU_ARGS);
      c[2 * np] = mma_16816(c[2 * np], af[kk], tb.s01 EMU_ARGS);
      c[2 * np + 1] = mma_16816(c[2 * np + 1], af[kk], tb.s23 EMU_ARGS);
    }
  }
}

/* acc += A (16 x 64, fragments a[PSTEPS]) times tile t_s (64 rows x HEAD_DIM, row-major: B as k x n, hence
 * ldmatrix .trans), as the forward's O += P V. */
inline void mma_acc_tile(float4 acc[OTILES], const uint4 a[PSTEPS], __local const ushort *t_s EMU_PARAMS) {
  const int lane = get_local_id(0) & 31;
#pragma unroll
  for (int kk = 0; kk < PSTEPS; kk++) {
#pragma unroll
    for (int dp = 0; dp < OTILES / 2; dp++) {
      const uint4 tb = ldsm_x4_trans(t_s, (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * V_PITCH + dp * 16 +
                                              ((lane >> 4) & 1) * 8 EMU_ARGS);
      acc[2 * dp] = mma_16816(acc[2 * dp], a[kk], tb.s01 EMU_ARGS);
      acc[2 * dp + 1] = mma_16816(acc[2 * dp + 1], a[kk], tb.s23 EMU_ARGS);
    }
  }
}

/* A fragments (16 rows x HEAD_DIM) of warp w's rows 16 w .. 16 w + 15 of a staged 64-row tile. */
inline void load_a_frags(uint4 af[KSTEPS], __local const ushort *t_s EMU_PARAMS) {
  const int lane = get_local_id(0) & 31, warp = get_local_id(0) >> 5;
#pragma unroll
  for (int kk = 0; kk < KSTEPS; kk++)
    af[kk] = ldsm_x4(t_s, (warp * 16 + (lane & 15)) * K_PITCH + kk * 16 + (lane >> 4) * 8 EMU_ARGS);
}

/* One 16 x 8 C tile of scores s and of dP: element e of lane (g, t) is (row row_lo + 8 (e >> 1), column
 * col_lo + (e & 1)). *p = exp2(x - lse2) of the scaled, masked scores x and *ds = P (dP - delta);
 * rows_are_queries: C rows are query rows (dq pass), else keys (dkdv pass: C columns are the queries). lse2
 * and dlt per element. */
inline void softmax_grad(float4 *p_out, float4 *ds_out, float4 s, float4 dp, float4 lse2, float4 dlt,
                         int row_lo, int col_lo, int elementwise, int shared, int rows_are_queries,
                         float scale_log2, dua_fwd_shape shape) {
  float x[4] = {s.s0, s.s1, s.s2, s.s3}, d[4] = {dp.s0, dp.s1, dp.s2, dp.s3};
  float l[4] = {lse2.s0, lse2.s1, lse2.s2, lse2.s3}, dl[4] = {dlt.s0, dlt.s1, dlt.s2, dlt.s3};
  float p[4], g[4];
#pragma unroll
  for (int e = 0; e < 4; e++) {
    const int r = row_lo + 8 * (e >> 1), c = col_lo + (e & 1);
    float y;
    if (elementwise)
      y = rows_are_queries ? masked_score(x[e] * scale_log2, r, c, shared, 0.0f, shape)
                           : masked_score(x[e] * scale_log2, c, r, shared, 0.0f, shape);
    else
      y = x[e] * scale_log2;
    p[e] = y == -INFINITY ? 0.0f : fast_exp2(y - l[e]);
    g[e] = p[e] * (d[e] - dl[e]);
  }
  *p_out = (float4)(p[0], p[1], p[2], p[3]);
  *ds_out = (float4)(g[0], g[1], g[2], g[3]);
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
    __global const int *list_indices) {
  __local ushort k_s[BN * K_PITCH] __attribute__((aligned(16)));
  __local ushort v_s[BN * V_PITCH] __attribute__((aligned(16)));
  EMU_LOCALS
  const int tid = get_local_id(0), lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int h = get_group_id(1), b = get_group_id(2);
  const int tiles_per_block = shape.blk / BM;
  const int m = get_group_id(0) / tiles_per_block;
  const int row0 = m * shape.blk + (get_group_id(0) % tiles_per_block) * BM;
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

  /* Q and dO rows of this warp as A fragments (staged through k_s and v_s) */
  uint4 qf[KSTEPS], gf[KSTEPS];
  load_tile_async(k_s, K_PITCH,
                  (__global const ushort *)(q + offsets.s0 + b * q_strides.s0 + h * q_strides.s1),
                  q_strides.s2, row0, shape.n_tokens, tid);
  load_tile_async(v_s, V_PITCH,
                  (__global const ushort *)(d_o + offsets.s3 + b * do_strides.s0 + h * do_strides.s1),
                  do_strides.s2, row0, shape.n_tokens, tid);
  cp_commit();
  CP_WAIT(0);
  barrier(CLK_LOCAL_MEM_FENCE);
  load_a_frags(qf, k_s EMU_ARGS);
  load_a_frags(gf, v_s EMU_ARGS);
  /* LSE (log2 units; an empty row's -inf becomes 0: all its scores are masked) and delta of rows g, g + 8 */
  const int r_lo = row0 + warp * 16 + g;
  float lse2[2], dlt[2];
#pragma unroll
  for (int half_i = 0; half_i < 2; half_i++) {
    const int row = r_lo + 8 * half_i;
    float l2 = 0.0f, dl = 0.0f;
    if (row < shape.n_tokens) {
      l2 = lse[aux_offsets.s1 + b * lse_strides.s0 + h * lse_strides.s1 + row * lse_strides.s2] * DUA_LOG2E;
      dl = delta[aux_offsets.s2 + bh * shape.n_tokens + row];
    }
    lse2[half_i] = isinf(l2) ? 0.0f : l2;
    dlt[half_i] = dl;
  }
  const float4 lse4 = (float4)(lse2[0], lse2[0], lse2[1], lse2[1]),
               dlt4 = (float4)(dlt[0], dlt[0], dlt[1], dlt[1]);
  float4 acc[OTILES];
#pragma unroll
  for (int i = 0; i < OTILES; i++)
    acc[i] = (float4)(0.0f);

  tile_pos cur;
  cur.item = -1;
  while (next_tile(&cur, &vl, hr, m, row_end, shape, path_m, paths_bh, lse /* unused without DUA_BIAS */)) {
    barrier(CLK_LOCAL_MEM_FENCE); /* every warp is done with k_s and v_s */
    load_tile_async(k_s, K_PITCH, k_bh, k_strides.s2, cur.j0, shape.n_tokens, tid);
    load_tile_async(v_s, V_PITCH, v_bh, v_strides.s2, cur.j0, shape.n_tokens, tid);
    cp_commit();
    CP_WAIT(0);
    barrier(CLK_LOCAL_MEM_FENCE);
    float4 s[STILES], dp[STILES]; /* S, then P; dP, then dS */
    mma_rows_x_tile(s, qf, k_s EMU_ARGS);
    mma_rows_x_tile(dp, gf, v_s EMU_ARGS);
    const int elementwise = !cur.full;
#pragma unroll
    for (int i = 0; i < STILES; i++)
      softmax_grad(&s[i], &dp[i], s[i], dp[i], lse4, dlt4, r_lo, cur.j0 + 8 * i + 2 * t, elementwise,
                   cur.shared, 1, scale_log2, shape);
    uint4 dsa[PSTEPS];
    pack_a(dp, dsa);
    mma_acc_tile(acc, dsa, k_s EMU_ARGS); /* dQ += dS K */
  }

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

/* global (key_tiles * 128, Hkv, B), key_tiles = nb * (blk / 64). Transposed lists: for (b, h, key block n),
 * the query blocks that visit it, full ones first. */
__kernel __attribute__((reqd_work_group_size(THREADS, 1, 1))) void dua_attn_bwd_dkdv_mma(
    __global const dua_store_t *q, __global const dua_store_t *k, __global const dua_store_t *v,
    __global const dua_store_t *d_o, __global const float *lse, __global const float *delta,
    __global dua_store_t *dk, __global dua_store_t *dv, long4 q_strides, long4 k_strides, long4 v_strides,
    long4 do_strides, long4 dk_strides, long4 dv_strides, long4 lse_strides, long4 offsets /* q, k, v, d_o */,
    long4 aux_offsets /* dk, dv, lse, delta */, dua_fwd_shape shape, float scale, float scale_log2,
    __global const dua_head_rule *head_rules, __global const uchar *paths, __global const int *tlist_counts,
    __global const int *tlist_full, __global const int *tlist_indices) {
  __local ushort q_s[BN * K_PITCH] __attribute__((aligned(16)));  /* query tile (first: K) */
  __local ushort do_s[BN * V_PITCH] __attribute__((aligned(16))); /* dO tile (first: V) */
  __local float stats[2 * BN];                                    /* lse (log2 units), delta of the tile */
  EMU_LOCALS
  const int tid = get_local_id(0), lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int hk = get_group_id(1), b = get_group_id(2);
  const int tiles_per_block = shape.blk / BN;
  const int n = get_group_id(0) / tiles_per_block;
  const int key0 = n * shape.blk + (get_group_id(0) % tiles_per_block) * BN;
  if (key0 >= shape.n_tokens)
    return;
  const int group = shape.hq / shape.hkv;

  /* K and V rows of this warp as A fragments */
  uint4 kf[KSTEPS], vf[KSTEPS];
  load_tile_async(q_s, K_PITCH,
                  (__global const ushort *)(k + offsets.s1 + b * k_strides.s0 + hk * k_strides.s1),
                  k_strides.s2, key0, shape.n_tokens, tid);
  load_tile_async(do_s, V_PITCH,
                  (__global const ushort *)(v + offsets.s2 + b * v_strides.s0 + hk * v_strides.s1),
                  v_strides.s2, key0, shape.n_tokens, tid);
  cp_commit();
  CP_WAIT(0);
  barrier(CLK_LOCAL_MEM_FENCE);
  load_a_frags(kf, q_s EMU_ARGS);
  load_a_frags(vf, do_s EMU_ARGS);
  const int k_lo = key0 + warp * 16 + g; /* C rows: keys k_lo, k_lo + 8 */
  float4 dk_acc[OTILES], dv_acc[OTILES];
#pragma unroll
  for (int i = 0; i < OTILES; i++)
    dk_acc[i] = dv_acc[i] = (float4)(0.0f);

  for (int h = hk * group; h < (hk + 1) * group; h++) {
    const long bh = (long)b * shape.hq + h;
    const dua_head_rule hr = head_rules[h];
    __global const uchar *paths_bh = paths + bh * shape.nb * shape.max_depth;
    __global const ushort *q_bh =
        (__global const ushort *)(q + offsets.s0 + b * q_strides.s0 + h * q_strides.s1);
    __global const ushort *do_bh =
        (__global const ushort *)(d_o + offsets.s3 + b * do_strides.s0 + h * do_strides.s1);
    const int count = tlist_counts[bh * shape.nb + n], n_full = tlist_full[bh * shape.nb + n];
    for (int item = 0; item < count; item++) {
      const int m = tlist_indices[(bh * shape.nb + n) * shape.nb + item];
#if DUA_TREE == 2
      const int shared = 1;
#else
      const int shared = block_shared(hr, m, n, shape.shift, paths_bh + (long)m * shape.max_depth, paths_bh,
                                      shape.max_depth);
#endif
      const int elementwise = item >= n_full;
      const int row_end = min(shape.n_tokens, m * shape.blk + shape.blk);
      for (int i0 = m * shape.blk; i0 < row_end; i0 += BN) {
        if (shape.causal && i0 + BN - 1 < key0)
          continue;                   /* every row of this tile precedes every key of the work-group */
        barrier(CLK_LOCAL_MEM_FENCE); /* every warp is done with q_s, do_s and stats */
        load_tile_async(q_s, K_PITCH, q_bh, q_strides.s2, i0, shape.n_tokens, tid);
        load_tile_async(do_s, V_PITCH, do_bh, do_strides.s2, i0, shape.n_tokens, tid);
        cp_commit();
        {
          const int r = tid & (BN - 1), row = i0 + r;
          float x = 0.0f;
          if (row < shape.n_tokens) {
            if (tid < BN) {
              x = lse[aux_offsets.s2 + b * lse_strides.s0 + h * lse_strides.s1 + row * lse_strides.s2] *
                  DUA_LOG2E;
              x = isinf(x) ? 0.0f : x;
            } else {
              x = delta[aux_offsets.s3 + bh * shape.n_tokens + row];
            }
          }
          stats[tid] = x; /* THREADS == 2 BN: lse2 of the 64 rows, then their delta */
        }
        CP_WAIT(0);
        barrier(CLK_LOCAL_MEM_FENCE);
        float4 s[STILES], dp[STILES]; /* S^T, then P^T; dP^T, then dS^T */
        mma_rows_x_tile(s, kf, q_s EMU_ARGS);
        mma_rows_x_tile(dp, vf, do_s EMU_ARGS);
#pragma unroll
        for (int i = 0; i < STILES; i++) {
          const int c = 8 * i + 2 * t; /* query columns i0 + c, + 1 */
          const float4 l4 = (float4)(stats[c], stats[c + 1], stats[c], stats[c + 1]);
          const float4 d4 = (float4)(stats[BN + c], stats[BN + c + 1], stats[BN + c], stats[BN + c + 1]);
          softmax_grad(&s[i], &dp[i], s[i], dp[i], l4, d4, k_lo, i0 + c, elementwise, shared, 0, scale_log2,
                       shape);
        }
        uint4 pa[PSTEPS], dsa[PSTEPS];
        pack_a(s, pa);
        pack_a(dp, dsa);
        mma_acc_tile(dv_acc, pa, do_s EMU_ARGS); /* dV += P^T dO */
        mma_acc_tile(dk_acc, dsa, q_s EMU_ARGS); /* dK += dS^T Q */
      }
    }
  }

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
