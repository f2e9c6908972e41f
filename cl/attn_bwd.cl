/* attn_bwd.cl: portable block-sparse attention backward (OpenCL 1.2 C), FlashAttention-2 structure.
 *
 *   dua_attn_bwd_pre:    delta[b,h,i] = rowsum(dO * O)                               (8 work-items a row)
 *   dua_attn_bwd_dq:     per query tile, over the visited key blocks (the forward's enumeration):
 *                        P = exp2(S - LSE), dP = dO V^T, dS = P (dP - delta), dQ = scale dS K
 *   dua_attn_bwd_dkdv:   per key tile and K/V head, over the query heads of its GQA group and, for each, the
 *                        query blocks of the transposed block list: dV = P^T dO, dK = scale dS^T Q; per block
 *                        pair the level-bias gradient sum(dS) of tree pairs that are not window/sink pairs
 *   dua_attn_bwd_bias:   sums those per-tile partials in a fixed order (no atomics: deterministic)
 *   dua_attn_bwd_tiles:  (DUA_TILE_GRAD) the block-pair gradient G[b][h][m][n] = sum of dS over the tree,
 *                        non window/sink pairs of (query block m, key block n): each dkdv work-group owns one
 *                        key tile, so it writes its own partial per (h, m); this kernel sums the partials of
 *                        block n's key tiles in order (no atomics: deterministic)
 * With DUA_TBIAS (paper mode's token-tree bias) both passes add r_i T[lvl(i, j)] to every visible score and
 * the dQ pass also writes dr_i = sum_j dS_ij T[lvl(i, j)] (its row is complete there: a fixed-order
 * reduction). Skipped blocks cost no memory traffic; rows with no visible key give dQ = 0 and contribute
 * nothing. Work-items form a TM x TN grid, as in attn_fwd.cl: thread (ty, tx) owns tile rows ty + TM*i and
 * the DK contiguous head-dim columns DK*tx.. of its accumulators. */

#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif
#ifndef BLOCK_M
#define BLOCK_M 32 /* query rows per tile */
#endif
#ifndef BLOCK_N
#define BLOCK_N 32 /* key rows per tile */
#endif
#ifndef TM
#define TM 8
#endif
#ifndef TN
#define TN 16
#endif
#ifndef DUA_BIAS
#define DUA_BIAS 0
#endif
#ifndef DUA_TILE_GRAD
#define DUA_TILE_GRAD 0 /* 1: dkdv also writes per-(key tile, h, query block m) sums of dS */
#endif
#define DUA_PAIR_SUMS (DUA_BIAS || DUA_TILE_GRAD)
#ifndef DUA_TBIAS
#define DUA_TBIAS                                                                                            \
  0 /* 1: token-tree bias r[b][h][i] * T[h][lvl(i, j)] on every visible pair; dQ pass returns dr */
#endif
#define DUA_MAX_LEVELS 32 /* level-bias entries per head held in local memory (max tree depth + 1) */

#define THREADS (TM * TN)
#define DK (HEAD_DIM / TN)
#define ROW_STRIDE (HEAD_DIM + 4)

#if (BLOCK_M % TM) || (BLOCK_N % TM) || (BLOCK_M % TN) || (BLOCK_N % TN) || (HEAD_DIM % TN) || (DK % 4)
#error "tile parameters must divide: BLOCK_M, BLOCK_N by TM and TN; HEAD_DIM by TN; (HEAD_DIM / TN) by 4"
#endif

/* x * scale_log2 + bias (log2 units) if (row, col) is visible, else -inf. */
inline float bwd_score(float x, int row, int col, int shared, float beta, int elementwise, dua_shape shape) {
  if (!elementwise)
    return x + beta;
  int extra = dua_token_extra(row, col, shape.window, shape.sink);
  int vis =
      (shared || extra) && col < shape.n_tokens && row < shape.n_tokens && (!shape.causal || col <= row);
  return vis ? x + (extra ? 0.0f : beta) : -INFINITY;
}

/* global (ceil(N / PRE_ROWS) PRE_ROWS PRE_LANES, Hq, B), local (PRE_ROWS PRE_LANES): delta = rowsum(dO * O)
 * in fp32. PRE_LANES work-items share a row, lane c taking elements c, c + PRE_LANES, ..., so consecutive
 * work-items read consecutive elements; the lanes' sums are added in a fixed order. (One work-item per row
 * read 32 rows a row pitch apart per load: 0.28 ms of an H100's 0.79 ms block-diagonal fp16 backward at N
 * 8192, bench/NOTES-mma.md.) */
#ifndef PRE_LANES
#define PRE_LANES 8 /* the host passes both (backward.c: the launch's sizes) */
#endif
#ifndef PRE_ROWS
#define PRE_ROWS 16
#endif
__kernel __attribute__((reqd_work_group_size(PRE_ROWS * PRE_LANES, 1, 1))) void
dua_attn_bwd_pre(__global const dua_store_t *o, __global const dua_store_t *d_o, __global float *delta,
                 long4 o_strides, long4 do_strides, long2 offsets, long delta_offset, dua_shape shape) {
  __local float part[PRE_ROWS * PRE_LANES];
  const int lid = get_local_id(0), lane = lid % PRE_LANES;
  const int i = get_group_id(0) * PRE_ROWS + lid / PRE_LANES, h = get_group_id(1), b = get_group_id(2);
  float acc = 0.0f;
  if (i < shape.n_tokens) {
    __global const dua_store_t *orow =
        o + offsets.s0 + b * o_strides.s0 + h * o_strides.s1 + i * o_strides.s2;
    __global const dua_store_t *grow =
        d_o + offsets.s1 + b * do_strides.s0 + h * do_strides.s1 + i * do_strides.s2;
    for (int d = lane; d < HEAD_DIM; d += PRE_LANES)
      acc = fma(DUA_LOAD(orow, d), DUA_LOAD(grow, d), acc);
  }
  part[lid] = acc;
  barrier(CLK_LOCAL_MEM_FENCE);
  if (lane == 0 && i < shape.n_tokens) {
    float sum = 0.0f;
    for (int c = 0; c < PRE_LANES; c++)
      sum += part[lid + c];
    delta[delta_offset + ((long)b * shape.hq + h) * shape.n_tokens + i] = sum;
  }
}

#define RQ (BLOCK_M / TM) /* dq: query rows per thread */
#define CK (BLOCK_N / TN) /* dq: key columns per thread */

/* global (tiles * THREADS, Hq, B), tiles = nb * (blk / BLOCK_M) */
__kernel __attribute__((reqd_work_group_size(THREADS, 1, 1))) void
dua_attn_bwd_dq(__global const dua_store_t *q, __global const dua_store_t *k, __global const dua_store_t *v,
                __global const dua_store_t *d_o, __global const float *lse, __global const float *delta,
                __global dua_store_t *dq, long4 q_strides, long4 k_strides, long4 v_strides, long4 do_strides,
                long4 dq_strides, long4 lse_strides, long4 offsets /* q, k, v, d_o */,
                long4 aux_offsets /* dq, lse, delta, level bias */, dua_shape shape, float scale,
                float scale_log2, __global const dua_head_rule *head_rules, __global const uchar *paths,
                __global const int *order, __global const int *rank_range, __global const int *list_counts,
                __global const int *list_full, __global const int *list_indices,
                __global const float *level_bias, int bias_stride, __global const float *tok_scale,
                __global const float *tok_table, __global float *d_tok, long4 tok_strides, long4 dtok_strides,
                long4 tok_offsets /* scale, table, d_tok */, int tok_table_stride, int tok_depth,
                int has_dtok) {
  __local float q_tile[BLOCK_M * ROW_STRIDE] __attribute__((aligned(16)));
  __local float do_tile[BLOCK_M * ROW_STRIDE] __attribute__((aligned(16)));
  __local float k_tile[BLOCK_N * ROW_STRIDE] __attribute__((aligned(16)));
  __local float v_tile[BLOCK_N * ROW_STRIDE] __attribute__((aligned(16)));
  __local float ds_tile[BLOCK_M * (BLOCK_N + 4)] __attribute__((aligned(16)));

  const int tid = get_local_id(0), tx = tid % TN, ty = tid / TN;
  const int h = get_group_id(1), b = get_group_id(2);
  const int tiles_per_block = max(1, shape.blk / BLOCK_M);
  const int m = get_group_id(0) / tiles_per_block;
  const int row0 = m * shape.blk + (get_group_id(0) % tiles_per_block) * BLOCK_M;
  if (row0 >= shape.n_tokens)
    return;
  const int row_end = min(shape.n_tokens, row0 + BLOCK_M);
  const int hk = h / (shape.hq / shape.hkv);
  const long bh = (long)b * shape.hq + h;
  const dua_head_rule hr = head_rules[h];
  __global const dua_store_t *k_bh = k + offsets.s1 + b * k_strides.s0 + hk * k_strides.s1;
  __global const dua_store_t *v_bh = v + offsets.s2 + b * v_strides.s0 + hk * v_strides.s1;
  __global const uchar *paths_bh = paths + bh * shape.nb * shape.max_depth;
  __global const uchar *path_m = paths_bh + (long)m * shape.max_depth;

  dua_load_rows(q_tile, q + offsets.s0 + b * q_strides.s0 + h * q_strides.s1, q_strides.s2, row0, BLOCK_M,
                shape.n_tokens, tid, THREADS, HEAD_DIM, ROW_STRIDE);
  dua_load_rows(do_tile, d_o + offsets.s3 + b * do_strides.s0 + h * do_strides.s1, do_strides.s2, row0,
                BLOCK_M, shape.n_tokens, tid, THREADS, HEAD_DIM, ROW_STRIDE);
  float lse2[RQ], dlt[RQ], acc[RQ][DK];
  for (int i = 0; i < RQ; i++) {
    const int row = row0 + ty + TM * i;
    lse2[i] =
        row < shape.n_tokens
            ? lse[aux_offsets.s1 + b * lse_strides.s0 + h * lse_strides.s1 + row * lse_strides.s2] * DUA_LOG2E
            : 0.0f;
    dlt[i] = row < shape.n_tokens ? delta[aux_offsets.s2 + bh * shape.n_tokens + row] : 0.0f;
    if (isinf(lse2[i]))
      lse2[i] = 0.0f; /* empty row: every score is masked, P = 0 */
    for (int c = 0; c < DK; c++)
      acc[i][c] = 0.0f;
  }
#if DUA_TBIAS
  __local float tok_tab[DUA_MAX_TOKEN_LEVELS]; /* natural units; read after the key loop's first barrier */
  for (int t = tid; t <= tok_depth; t += THREADS)
    tok_tab[t] = tok_table[tok_offsets.s1 + h * tok_table_stride + t];
  float tok_r[RQ], tok_d[RQ];
  for (int i = 0; i < RQ; i++) {
    const int row = row0 + ty + TM * i;
    tok_r[i] =
        row < shape.n_tokens
            ? tok_scale[tok_offsets.s0 + b * tok_strides.s0 + h * tok_strides.s1 + row * tok_strides.s2] *
                  DUA_LOG2E
            : 0.0f;
    tok_d[i] = 0.0f;
  }
#endif

  const dua_row_visits rv = dua_row_visits_begin(m, bh, hr, shape, rank_range, list_counts, list_full);
  for (int item = 0; item < rv.n_items; item++) {
    int n, shared, full;
    if (!dua_row_visit(&rv, item, m, bh, hr, shape, path_m, paths_bh, order, list_indices, &n, &shared,
                       &full))
      continue;
    float beta = 0.0f;
#if DUA_BIAS
    if (shared)
      beta = level_bias[aux_offsets.s3 + h * bias_stride +
                        block_lca(hr, m, n, shape.shift, path_m, paths_bh, shape.max_depth)] *
             DUA_LOG2E;
    const int elementwise = !full || shape.window > 0 || shape.sink > 0;
#else
    const int elementwise = !full;
#endif
    const int col_end = min(shape.n_tokens, n * shape.blk + shape.blk);
    for (int j0 = n * shape.blk; j0 < col_end; j0 += BLOCK_N) {
      if (shape.causal && j0 > row_end - 1)
        break;
      barrier(CLK_LOCAL_MEM_FENCE);
      dua_load_rows(k_tile, k_bh, k_strides.s2, j0, BLOCK_N, shape.n_tokens, tid, THREADS, HEAD_DIM,
                    ROW_STRIDE);
      dua_load_rows(v_tile, v_bh, v_strides.s2, j0, BLOCK_N, shape.n_tokens, tid, THREADS, HEAD_DIM,
                    ROW_STRIDE);
      barrier(CLK_LOCAL_MEM_FENCE);
      float s[RQ][CK], dp[RQ][CK];
      for (int i = 0; i < RQ; i++)
        for (int j = 0; j < CK; j++)
          s[i][j] = dp[i][j] = 0.0f;
      for (int d = 0; d < HEAD_DIM; d += 4) {
        float4 qv[RQ], gv[RQ];
        for (int i = 0; i < RQ; i++) {
          qv[i] = vload4(0, q_tile + (ty + TM * i) * ROW_STRIDE + d);
          gv[i] = vload4(0, do_tile + (ty + TM * i) * ROW_STRIDE + d);
        }
        for (int j = 0; j < CK; j++) {
          const float4 kv = vload4(0, k_tile + (tx + TN * j) * ROW_STRIDE + d);
          const float4 vv = vload4(0, v_tile + (tx + TN * j) * ROW_STRIDE + d);
          for (int i = 0; i < RQ; i++) {
            s[i][j] += dot(qv[i], kv);
            dp[i][j] += dot(gv[i], vv);
          }
        }
      }
      for (int i = 0; i < RQ; i++) {
        const int row = row0 + ty + TM * i;
        for (int j = 0; j < CK; j++) {
          const int col = j0 + tx + TN * j;
#if DUA_TBIAS
          const float tt = tok_tab[dua_tok_level(row, col, tok_depth)];
          const float x =
              bwd_score(fma(tok_r[i], tt, s[i][j] * scale_log2), row, col, shared, beta, elementwise, shape);
#else
          const float x = bwd_score(s[i][j] * scale_log2, row, col, shared, beta, elementwise, shape);
#endif
          const float p = x == -INFINITY ? 0.0f : exp2(x - lse2[i]);
          ds_tile[(ty + TM * i) * (BLOCK_N + 4) + tx + TN * j] = p * (dp[i][j] - dlt[i]);
#if DUA_TBIAS
          tok_d[i] = fma(p * (dp[i][j] - dlt[i]), tt, tok_d[i]); /* masked pairs have p = 0 */
#endif
        }
      }
      barrier(CLK_LOCAL_MEM_FENCE);
      for (int jj = 0; jj < BLOCK_N; jj++) { /* dQ += dS K */
        for (int c4 = 0; c4 < DK; c4 += 4) {
          const float4 kv = vload4(0, k_tile + jj * ROW_STRIDE + DK * tx + c4);
          for (int i = 0; i < RQ; i++) {
            const float g = ds_tile[(ty + TM * i) * (BLOCK_N + 4) + jj];
            DUA_FMA4(acc[i], c4, g, kv);
          }
        }
      }
    }
  }
  for (int i = 0; i < RQ; i++) {
    const int row = row0 + ty + TM * i;
    if (row >= shape.n_tokens)
      continue;
    __global dua_store_t *out =
        dq + aux_offsets.s0 + b * dq_strides.s0 + h * dq_strides.s1 + row * dq_strides.s2;
    for (int c = 0; c < DK; c++)
      DUA_STORE(acc[i][c] * scale, out, DK * tx + c);
  }
#if DUA_TBIAS
  if (has_dtok) { /* dr: the TN column partials of each row, summed in a fixed order */
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int i = 0; i < RQ; i++)
      ds_tile[(ty + TM * i) * TN + tx] = tok_d[i];
    barrier(CLK_LOCAL_MEM_FENCE);
    if (tx == 0)
      for (int i = 0; i < RQ; i++) {
        const int row = row0 + ty + TM * i;
        float total = 0.0f;
        for (int t = 0; t < TN; t++)
          total += ds_tile[(ty + TM * i) * TN + t];
        if (row < shape.n_tokens)
          d_tok[tok_offsets.s2 + b * dtok_strides.s0 + h * dtok_strides.s1 + row * dtok_strides.s2] = total;
      }
  }
#endif
}

#define RK (BLOCK_N / TM) /* dkdv: key rows per thread */
#define CQ (BLOCK_M / TN) /* dkdv: query columns per thread */

/* global (key_tiles * THREADS, Hkv, B), key_tiles = nb * (blk / BLOCK_N). Transposed lists: for (b, h, key
 * block n), the query blocks that visit it, full ones first. bias_partial: [B][Hq][key_tiles][levels];
 * tile_partial (DUA_TILE_GRAD): [B][Hq][nb (query block m)][key_tiles], entries of unvisited pairs left as
 * the host zero-filled them. */
__kernel __attribute__((reqd_work_group_size(THREADS, 1, 1))) void dua_attn_bwd_dkdv(
    __global const dua_store_t *q, __global const dua_store_t *k, __global const dua_store_t *v,
    __global const dua_store_t *d_o, __global const float *lse, __global const float *delta,
    __global dua_store_t *dk, __global dua_store_t *dv, __global float *bias_partial, long4 q_strides,
    long4 k_strides, long4 v_strides, long4 do_strides, long4 dk_strides, long4 dv_strides, long4 lse_strides,
    long4 offsets /* q, k, v, d_o */, long4 aux_offsets /* dk, dv, lse, delta */,
    long2 bias_offsets /* level bias, partials */, dua_shape shape, float scale, float scale_log2,
    __global const dua_head_rule *head_rules, __global const uchar *paths, __global const int *tlist_counts,
    __global const int *tlist_full, __global const int *tlist_indices, __global const float *level_bias,
    int bias_stride, int levels, __global const float *tok_scale, __global const float *tok_table,
    long4 tok_strides, long2 tok_offsets /* scale, table */, int tok_table_stride, int tok_depth,
    __global float *tile_partial, long tile_offset) {
  __local float q_tile[BLOCK_M * ROW_STRIDE] __attribute__((aligned(16)));
  __local float do_tile[BLOCK_M * ROW_STRIDE] __attribute__((aligned(16)));
  __local float k_tile[BLOCK_N * ROW_STRIDE] __attribute__((aligned(16)));
  __local float v_tile[BLOCK_N * ROW_STRIDE] __attribute__((aligned(16)));
  __local float p_tile[BLOCK_N * (BLOCK_M + 4)] __attribute__((aligned(16)));
  __local float ds_tile[BLOCK_N * (BLOCK_M + 4)] __attribute__((aligned(16)));
  __local float row_stats[3 * BLOCK_M]; /* lse (log2 units), delta, token-bias scale (log2 units) */
#if DUA_TBIAS
  __local float tok_tab[DUA_MAX_TOKEN_LEVELS];
#endif
#if DUA_BIAS
  __local float level_sums[DUA_MAX_LEVELS];
#endif
#if DUA_PAIR_SUMS
  __local float reduce[THREADS];
#endif

  const int tid = get_local_id(0), tx = tid % TN, ty = tid / TN;
  const int hk = get_group_id(1), b = get_group_id(2);
  const int tiles_per_block = max(1, shape.blk / BLOCK_N);
  const int key_tiles = shape.nb * tiles_per_block;
  const int n = get_group_id(0) / tiles_per_block;
  const int key0 = n * shape.blk + (get_group_id(0) % tiles_per_block) * BLOCK_N;
  if (key0 >= shape.n_tokens)
    return;
  const int group = shape.hq / shape.hkv;

  dua_load_rows(k_tile, k + offsets.s1 + b * k_strides.s0 + hk * k_strides.s1, k_strides.s2, key0, BLOCK_N,
                shape.n_tokens, tid, THREADS, HEAD_DIM, ROW_STRIDE);
  dua_load_rows(v_tile, v + offsets.s2 + b * v_strides.s0 + hk * v_strides.s1, v_strides.s2, key0, BLOCK_N,
                shape.n_tokens, tid, THREADS, HEAD_DIM, ROW_STRIDE);
  float dk_acc[RK][DK], dv_acc[RK][DK];
  for (int a = 0; a < RK; a++)
    for (int c = 0; c < DK; c++)
      dk_acc[a][c] = dv_acc[a][c] = 0.0f;

  for (int h = hk * group; h < (hk + 1) * group; h++) {
    const long bh = (long)b * shape.hq + h;
    const dua_head_rule hr = head_rules[h];
    __global const uchar *paths_bh = paths + bh * shape.nb * shape.max_depth;
    __global const dua_store_t *q_bh = q + offsets.s0 + b * q_strides.s0 + h * q_strides.s1;
    __global const dua_store_t *do_bh = d_o + offsets.s3 + b * do_strides.s0 + h * do_strides.s1;
#if DUA_BIAS
    for (int t = tid; t < DUA_MAX_LEVELS; t += THREADS)
      level_sums[t] = 0.0f;
#endif
#if DUA_TBIAS /* read after the chunk loop's barriers; the previous head's last reads precede a barrier */
    for (int t = tid; t <= tok_depth; t += THREADS)
      tok_tab[t] = tok_table[tok_offsets.s1 + h * tok_table_stride + t];
#endif
    const int count = tlist_counts[bh * shape.nb + n], n_full = tlist_full[bh * shape.nb + n];
    for (int item = 0; item < count; item++) {
      const int m = tlist_indices[(bh * shape.nb + n) * shape.nb + item];
      __global const uchar *path_m = paths_bh + (long)m * shape.max_depth;
#if DUA_TREE == 2
      const int shared = 1;
#else
      const int shared = block_shared(hr, m, n, shape.shift, path_m, paths_bh, shape.max_depth);
#endif
      const int full = item < n_full;
      float beta = 0.0f;
      int lca = 0;
#if DUA_BIAS
      if (shared) {
        lca = block_lca(hr, m, n, shape.shift, path_m, paths_bh, shape.max_depth);
        beta = level_bias[bias_offsets.s0 + h * bias_stride + lca] * DUA_LOG2E;
      }
      const int elementwise = !full || shape.window > 0 || shape.sink > 0;
#else
      const int elementwise = !full;
#endif
      float bias_sum = 0.0f;
      const int row_end = min(shape.n_tokens, m * shape.blk + shape.blk);
      for (int i0 = m * shape.blk; i0 < row_end; i0 += BLOCK_M) {
        if (shape.causal && i0 + BLOCK_M - 1 < key0)
          continue; /* every row of this chunk precedes every key of the tile */
        barrier(CLK_LOCAL_MEM_FENCE);
        dua_load_rows(q_tile, q_bh, q_strides.s2, i0, BLOCK_M, shape.n_tokens, tid, THREADS, HEAD_DIM,
                      ROW_STRIDE);
        dua_load_rows(do_tile, do_bh, do_strides.s2, i0, BLOCK_M, shape.n_tokens, tid, THREADS, HEAD_DIM,
                      ROW_STRIDE);
        for (int r = tid; r < BLOCK_M; r += THREADS) {
          const int row = i0 + r;
          float l2 = 0.0f, dl = 0.0f;
          if (row < shape.n_tokens) {
            l2 = lse[aux_offsets.s2 + b * lse_strides.s0 + h * lse_strides.s1 + row * lse_strides.s2] *
                 DUA_LOG2E;
            dl = delta[aux_offsets.s3 + bh * shape.n_tokens + row];
          }
          row_stats[r] = isinf(l2) ? 0.0f : l2;
          row_stats[BLOCK_M + r] = dl;
#if DUA_TBIAS
          row_stats[2 * BLOCK_M + r] = row < shape.n_tokens
                                           ? tok_scale[tok_offsets.s0 + b * tok_strides.s0 +
                                                       h * tok_strides.s1 + row * tok_strides.s2] *
                                                 DUA_LOG2E
                                           : 0.0f;
#endif
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        float s[RK][CQ], dp[RK][CQ];
        for (int a = 0; a < RK; a++)
          for (int c = 0; c < CQ; c++)
            s[a][c] = dp[a][c] = 0.0f;
        for (int d = 0; d < HEAD_DIM; d += 4) {
          float4 kv[RK], vv[RK];
          for (int a = 0; a < RK; a++) {
            kv[a] = vload4(0, k_tile + (ty + TM * a) * ROW_STRIDE + d);
            vv[a] = vload4(0, v_tile + (ty + TM * a) * ROW_STRIDE + d);
          }
          for (int c = 0; c < CQ; c++) {
            const float4 qv = vload4(0, q_tile + (tx + TN * c) * ROW_STRIDE + d);
            const float4 gv = vload4(0, do_tile + (tx + TN * c) * ROW_STRIDE + d);
            for (int a = 0; a < RK; a++) {
              s[a][c] += dot(kv[a], qv);
              dp[a][c] += dot(vv[a], gv);
            }
          }
        }
        for (int a = 0; a < RK; a++) {
          const int col = key0 + ty + TM * a; /* key */
          for (int c = 0; c < CQ; c++) {
            const int row = i0 + tx + TN * c; /* query */
#if DUA_TBIAS
            const float x = bwd_score(fma(row_stats[2 * BLOCK_M + tx + TN * c],
                                          tok_tab[dua_tok_level(row, col, tok_depth)], s[a][c] * scale_log2),
                                      row, col, shared, beta, elementwise, shape);
#else
            const float x = bwd_score(s[a][c] * scale_log2, row, col, shared, beta, elementwise, shape);
#endif
            const float p = x == -INFINITY ? 0.0f : exp2(x - row_stats[tx + TN * c]);
            const float g = p * (dp[a][c] - row_stats[BLOCK_M + tx + TN * c]);
            p_tile[(ty + TM * a) * (BLOCK_M + 4) + tx + TN * c] = p;
            ds_tile[(ty + TM * a) * (BLOCK_M + 4) + tx + TN * c] = g;
#if DUA_PAIR_SUMS
            if (shared && !dua_token_extra(row, col, shape.window, shape.sink))
              bias_sum += g; /* masked pairs have g = 0 */
#endif
          }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int ii = 0; ii < BLOCK_M; ii++) { /* dV += P^T dO, dK += dS^T Q */
          for (int c4 = 0; c4 < DK; c4 += 4) {
            const float4 gv = vload4(0, do_tile + ii * ROW_STRIDE + DK * tx + c4);
            const float4 qv = vload4(0, q_tile + ii * ROW_STRIDE + DK * tx + c4);
            for (int a = 0; a < RK; a++) {
              const float p = p_tile[(ty + TM * a) * (BLOCK_M + 4) + ii];
              const float g = ds_tile[(ty + TM * a) * (BLOCK_M + 4) + ii];
              DUA_FMA4(dv_acc[a], c4, p, gv);
              DUA_FMA4(dk_acc[a], c4, g, qv);
            }
          }
        }
      }
#if DUA_PAIR_SUMS
      if (shared) { /* the work-group's sum of dS for this block pair, in a fixed order */
        reduce[tid] = bias_sum;
        barrier(CLK_LOCAL_MEM_FENCE);
        if (tid == 0) {
          float total = 0.0f;
          for (int t = 0; t < THREADS; t++)
            total += reduce[t];
#if DUA_BIAS
          level_sums[lca] += total;
#endif
#if DUA_TILE_GRAD /* this work-group alone owns key tile get_group_id(0): no other writer */
          tile_partial[tile_offset + (bh * shape.nb + m) * key_tiles + get_group_id(0)] = total;
#endif
        }
        barrier(CLK_LOCAL_MEM_FENCE);
      }
#endif
    }
#if DUA_BIAS
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int t = tid; t < levels; t += THREADS)
      bias_partial[bias_offsets.s1 + (bh * key_tiles + get_group_id(0)) * levels + t] = level_sums[t];
    barrier(CLK_LOCAL_MEM_FENCE);
#endif
  }
  for (int a = 0; a < RK; a++) {
    const int key = key0 + ty + TM * a;
    if (key >= shape.n_tokens)
      continue;
    __global dua_store_t *kout =
        dk + aux_offsets.s0 + b * dk_strides.s0 + hk * dk_strides.s1 + key * dk_strides.s2;
    __global dua_store_t *vout =
        dv + aux_offsets.s1 + b * dv_strides.s0 + hk * dv_strides.s1 + key * dv_strides.s2;
    for (int c = 0; c < DK; c++) {
      DUA_STORE(dk_acc[a][c] * scale, kout, DK * tx + c);
      DUA_STORE(dv_acc[a][c], vout, DK * tx + c);
    }
  }
}

/* global (Hq * levels): d_level_bias[h][l] = sum over batch and key tiles of the partials, in order.
 * Tiles past the sequence end were never written: the host zero-fills the partials once per call. */
__kernel void dua_attn_bwd_bias(__global const float *bias_partial, __global float *d_bias,
                                long partial_offset, long out_offset, int out_stride, int batch, int hq,
                                int key_tiles, int levels) {
  const int idx = get_global_id(0), h = idx / levels, l = idx % levels;
  if (h >= hq)
    return;
  float total = 0.0f;
  for (int b = 0; b < batch; b++)
    for (int t = 0; t < key_tiles; t++)
      total += bias_partial[partial_offset + (((long)b * hq + h) * key_tiles + t) * levels + l];
  d_bias[out_offset + h * out_stride + l] = total;
}

/* global (nb * nb, Hq, B): tile_grad[b][h][m][n] = sum over the key tiles of block n, in order, of the
 * dkdv partials (zero where no work-group visited the pair). Every element of the output is written. */
__kernel void dua_attn_bwd_tiles(__global const float *tile_partial, __global float *tile_grad,
                                 long partial_offset, long4 out_strides, long out_offset, int nb,
                                 int tiles_per_block) {
  const int idx = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
  if (idx >= nb * nb)
    return;
  const int m = idx / nb, n = idx % nb, hq = get_global_size(1), key_tiles = nb * tiles_per_block;
  __global const float *src = tile_partial + partial_offset + (((long)b * hq + h) * nb + m) * key_tiles;
  float total = 0.0f;
  for (int t = 0; t < tiles_per_block; t++)
    total += src[n * tiles_per_block + t];
  tile_grad[out_offset + b * out_strides.s0 + h * out_strides.s1 + m * out_strides.s2 + n * out_strides.s3] =
      total;
}
