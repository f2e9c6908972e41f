/* attn_fwd.cl: portable block-sparse attention forward (OpenCL 1.2 C), FlashAttention-2 style.
 *
 * One work-group computes BLOCK_M query rows of one (batch, query head) against every key block its layout
 * row visits, BLOCK_N keys at a time, with an online softmax in fp32 (exp2, log2(e) folded into the scale).
 * Skipped key blocks are never loaded. Outputs O and LSE (natural log; -inf and O = 0 for empty rows).
 *
 * Work-items form a TM x TN grid. Thread (ty, tx) owns query rows ty + TM*i (i < RM), score columns
 * tx + TN*j (j < CN) and the DK contiguous output columns DK*tx .. DK*tx + DK-1, so V and P are read from
 * local memory as float4. Local memory holds the Q tile, one K or V chunk and the probabilities P.
 *
 * Key-block enumeration (DUA_ENUM): 0 = rule intervals (sink, window, positional tree range), 1 = intervals
 * plus the content-tree bucket of the query block, 2 = device block lists (full blocks first).
 * Tree membership for element masks and bias (DUA_TREE): 0 positional, 1 content paths, 2 none (the
 * caller's lists: a listed block is visible, only causality and the tail mask inside it).
 * DUA_TBIAS adds the token-tree bias of paper routing mode to every visible pair (table in local memory). */

#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif
#ifndef BLOCK_M
#define BLOCK_M 64
#endif
#ifndef BLOCK_N
#define BLOCK_N 32
#endif
#ifndef TM
#define TM 16
#endif
#ifndef TN
#define TN 16
#endif
#ifndef DUA_BIAS
#define DUA_BIAS 0
#endif
#ifndef DUA_TBIAS
#define DUA_TBIAS                                                                                            \
  0 /* 1: token-tree bias token_scale[b][h][i] * token_table[h][lvl(i, j)] on every visible pair */
#endif

#define THREADS (TM * TN)
#define RM (BLOCK_M / TM)
#define CN (BLOCK_N / TN)
#define DK (HEAD_DIM / TN)
#define ROW_STRIDE (HEAD_DIM + 4) /* local row pitch (floats): float4-aligned, staggers banks */
#define P_STRIDE (BLOCK_N + 4)    /* float4-aligned rows */

#if (BLOCK_M % TM) || (BLOCK_N % TN) || (HEAD_DIM % TN) || (DK % 4) || (BLOCK_N % 4)
#error                                                                                                       \
    "tile parameters must divide: BLOCK_M % TM, BLOCK_N % TN, HEAD_DIM % TN, (HEAD_DIM / TN) % 4, BLOCK_N % 4"
#endif

#ifdef DUA_PRECISE_EXP
#define DUA_EXP2 exp2
#else
#define DUA_EXP2 native_exp2 /* ex2.approx on NVIDIA; the tests bound the error like any other */
#endif

__kernel __attribute__((reqd_work_group_size(THREADS, 1, 1))) void
dua_attn_fwd(__global const dua_store_t *q, __global const dua_store_t *k, __global const dua_store_t *v,
             __global dua_store_t *o, __global float *lse, /* lse may be a 1-element dummy when has_lse = 0 */
             long4 q_strides, long4 k_strides, long4 v_strides, long4 o_strides, long4 lse_strides,
             long4 offsets /* elements: q, k, v, o */, long2 aux_offsets /* lse, level_bias */, int has_lse,
             dua_shape shape, float scale_log2, __global const dua_head_rule *head_rules,
             __global const uchar *paths,    /* [B][Hq][nb][max_depth] (DUA_TREE == 1) */
             __global const int *order,      /* [B*Hq][nb] (DUA_ENUM == 1) */
             __global const int *rank_range, /* [B*Hq][nb] x (lo, hi) (DUA_ENUM == 1) */
             __global const int *list_counts, __global const int *list_full,
             __global const int *list_indices, /* [B*Hq][nb] and [B*Hq][nb][nb] (DUA_ENUM == 2) */
             __global const float *level_bias, int bias_stride,
             __global const float *tok_scale, /* (B, Hq, N, 1) by tok_strides (DUA_TBIAS) */
             __global const float *tok_table, /* [Hq or 1][tok_depth + 1] */
             long4 tok_strides, long2 tok_offsets /* scale, table */, int tok_table_stride, int tok_depth) {
  __local float q_tile[BLOCK_M * ROW_STRIDE] __attribute__((aligned(16)));
  __local float kv_tile[BLOCK_N * ROW_STRIDE] __attribute__((aligned(16)));
  __local float p_tile[BLOCK_M * P_STRIDE];
  __local float row_max_part[BLOCK_M * TN];
  __local float row_sum_part[BLOCK_M * TN];

  const int tid = get_local_id(0), tx = tid % TN, ty = tid / TN;
  const int h = get_group_id(1), b = get_group_id(2);
  const int tiles_per_block = max(1, shape.blk / BLOCK_M);
  const int m = get_group_id(0) / tiles_per_block;
  const int row0 = m * shape.blk + (get_group_id(0) % tiles_per_block) * BLOCK_M;
  if (row0 >= shape.n_tokens)
    return; /* whole work-group: no barrier is skipped by only some work-items */
  const int row_end = min(shape.n_tokens, row0 + BLOCK_M); /* exclusive */
  const int hk = h / (shape.hq / shape.hkv);
  const long bh = (long)b * shape.hq + h;
  const dua_head_rule hr = head_rules[h];

  __global const dua_store_t *q_bh = q + offsets.s0 + b * q_strides.s0 + h * q_strides.s1;
  __global const dua_store_t *k_bh = k + offsets.s1 + b * k_strides.s0 + hk * k_strides.s1;
  __global const dua_store_t *v_bh = v + offsets.s2 + b * v_strides.s0 + hk * v_strides.s1;
  __global const uchar *paths_bh = paths + bh * shape.nb * shape.max_depth;
  __global const uchar *path_m = paths_bh + (long)m * shape.max_depth;
  (void)path_m;

  dua_load_rows(q_tile, q_bh, q_strides.s2, row0, BLOCK_M, shape.n_tokens, tid, THREADS, HEAD_DIM,
                ROW_STRIDE);

#if DUA_TBIAS
  __local float tok_tab[DUA_MAX_TOKEN_LEVELS]; /* log2 units; read after the first barrier of the key loop */
  for (int t = tid; t <= tok_depth; t += THREADS)
    tok_tab[t] = tok_table[tok_offsets.s1 + h * tok_table_stride + t] * DUA_LOG2E;
  float tok_r[RM];
  for (int i = 0; i < RM; i++) {
    const int row = row0 + ty + TM * i;
    tok_r[i] =
        row < shape.n_tokens
            ? tok_scale[tok_offsets.s0 + b * tok_strides.s0 + h * tok_strides.s1 + row * tok_strides.s2]
            : 0.0f;
  }
#endif
  float acc[RM][DK];
  float m_run[RM], l_run[RM];
  for (int i = 0; i < RM; i++) {
    m_run[i] = -INFINITY;
    l_run[i] = 0.0f;
    for (int c = 0; c < DK; c++)
      acc[i][c] = 0.0f;
  }

  /* ---- enumerate the visited key blocks: a few intervals, a bucket, or a list */
  const dua_row_visits rv = dua_row_visits_begin(m, bh, hr, shape, rank_range, list_counts, list_full);
  for (int item = 0; item < rv.n_items; item++) {
    int n, shared, full;
    if (!dua_row_visit(&rv, item, m, bh, hr, shape, path_m, paths_bh, order, list_indices, &n, &shared,
                       &full))
      continue; /* uniform across the work-group */
    float beta = 0.0f;
#if DUA_BIAS
    if (shared)
      beta = level_bias[aux_offsets.s1 + h * bias_stride +
                        block_lca(hr, m, n, shape.shift, path_m, paths_bh, shape.max_depth)] *
             DUA_LOG2E;
    const int elementwise = !full || (shape.window > 0 || shape.sink > 0);
#else
    const int elementwise = !full;
#endif
    const int col_block0 = n * shape.blk;
    const int col_block_end = min(shape.n_tokens, col_block0 + shape.blk);

    for (int j0 = col_block0; j0 < col_block_end; j0 += BLOCK_N) {
      if (shape.causal && j0 > row_end - 1)
        break;                      /* every later column is in the future of every row of this tile */
      barrier(CLK_LOCAL_MEM_FENCE); /* kv_tile, p_tile and partials are free */
      dua_load_rows(kv_tile, k_bh, k_strides.s2, j0, BLOCK_N, shape.n_tokens, tid, THREADS, HEAD_DIM,
                    ROW_STRIDE);
      barrier(CLK_LOCAL_MEM_FENCE);

      /* S = Q K^T for my RM x CN scores */
      float s[RM][CN];
      for (int i = 0; i < RM; i++)
        for (int j = 0; j < CN; j++)
          s[i][j] = 0.0f;
      for (int d = 0; d < HEAD_DIM; d += 4) {
        float4 qv[RM];
        for (int i = 0; i < RM; i++)
          qv[i] = vload4(0, q_tile + (ty + TM * i) * ROW_STRIDE + d);
        for (int j = 0; j < CN; j++) {
          float4 kv = vload4(0, kv_tile + (tx + TN * j) * ROW_STRIDE + d);
          for (int i = 0; i < RM; i++)
            s[i][j] = fma(qv[i].x, kv.x, fma(qv[i].y, kv.y, fma(qv[i].z, kv.z, fma(qv[i].w, kv.w, s[i][j]))));
        }
      }
      /* scale, bias, mask; partial row maxima */
      for (int i = 0; i < RM; i++) {
        const int row = row0 + ty + TM * i;
        float mx = -INFINITY;
        for (int j = 0; j < CN; j++) {
          const int col = j0 + tx + TN * j;
          float x = s[i][j] * scale_log2;
#if DUA_TBIAS
          x += tok_r[i] * tok_tab[dua_tok_level(row, col, tok_depth)];
#endif
          if (elementwise) {
            int extra = dua_token_extra(row, col, shape.window, shape.sink);
            int vis = (shared || extra) && col < shape.n_tokens && row < shape.n_tokens &&
                      (!shape.causal || col <= row);
            x = vis ? x + (extra ? 0.0f : beta) : -INFINITY;
          } else {
            x += beta;
          }
          s[i][j] = x;
          mx = fmax(mx, x);
        }
        row_max_part[(ty + TM * i) * TN + tx] = mx;
      }
      barrier(CLK_LOCAL_MEM_FENCE);

      /* row maxima, probabilities, partial sums; then V replaces K in local memory */
      float alpha[RM];
      for (int i = 0; i < RM; i++) {
        const int r = ty + TM * i;
        float mx = m_run[i];
        for (int t = 0; t < TN; t++)
          mx = fmax(mx, row_max_part[r * TN + t]);
        const float m_use = mx == -INFINITY ? 0.0f : mx; /* all masked so far: p = 0, alpha = 1 */
        alpha[i] = m_run[i] == -INFINITY
                       ? 1.0f
                       : DUA_EXP2(m_run[i] - m_use); /* native_* range is implementation-defined: no -inf */
        m_run[i] = mx;
        float sum = 0.0f;
        for (int j = 0; j < CN; j++) {
          float p = s[i][j] == -INFINITY ? 0.0f : DUA_EXP2(s[i][j] - m_use);
          p_tile[r * P_STRIDE + tx + TN * j] = p;
          sum += p;
        }
        row_sum_part[r * TN + tx] = sum;
      }
      dua_load_rows(kv_tile, v_bh, v_strides.s2, j0, BLOCK_N, shape.n_tokens, tid, THREADS, HEAD_DIM,
                    ROW_STRIDE);
      barrier(CLK_LOCAL_MEM_FENCE);

      /* O = alpha O + P V */
      for (int i = 0; i < RM; i++) {
        const int r = ty + TM * i;
        float sum = 0.0f;
        for (int t = 0; t < TN; t++)
          sum += row_sum_part[r * TN + t];
        l_run[i] = l_run[i] * alpha[i] + sum;
        for (int c = 0; c < DK; c++)
          acc[i][c] *= alpha[i];
      }
      for (int jj = 0; jj < BLOCK_N; jj += 4) {
        float4 pv[RM];
        for (int i = 0; i < RM; i++)
          pv[i] = vload4(0, p_tile + (ty + TM * i) * P_STRIDE + jj);
        for (int u = 0; u < 4; u++) {
          for (int c4 = 0; c4 < DK; c4 += 4) {
            const float4 vv = vload4(0, kv_tile + (jj + u) * ROW_STRIDE + DK * tx + c4);
            for (int i = 0; i < RM; i++) {
              const float p = u == 0 ? pv[i].x : u == 1 ? pv[i].y : u == 2 ? pv[i].z : pv[i].w;
              DUA_FMA4(acc[i], c4, p, vv);
            }
          }
        }
      }
    }
  }

  /* ---- normalize and write: empty rows give O = 0 and LSE = -inf */
  for (int i = 0; i < RM; i++) {
    const int row = row0 + ty + TM * i;
    if (row >= shape.n_tokens)
      continue;
    const float inv = l_run[i] > 0.0f ? 1.0f / l_run[i] : 0.0f;
    __global dua_store_t *o_row = o + offsets.s3 + b * o_strides.s0 + h * o_strides.s1 + row * o_strides.s2;
    for (int c = 0; c < DK; c++)
      DUA_STORE(acc[i][c] * inv, o_row, DK * tx + c);
    if (has_lse && tx == 0)
      lse[aux_offsets.s0 + b * lse_strides.s0 + h * lse_strides.s1 + row * lse_strides.s2] =
          l_run[i] > 0.0f ? (m_run[i] + log2(l_run[i])) * DUA_LN2 : -INFINITY;
  }
}
