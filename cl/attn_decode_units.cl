/* attn_decode_units.cl: what every decode kernel (attn_decode.cl, attn_decode_warp.cl) does before it reads
 * K/V: mark, in a local bitmap over key units of UNIT = 2^unit_shift tokens (a unit lies inside one page and
 * one layout block), the units that hold a visible key of some query row of the work-group, then find the
 * split's share of the visible units and walk it with a set-bit cursor. Needs common.cl before it.
 *
 * Per row the visible keys are the sink keys [0, min(S, t+1)), the window keys [t-W, t] and the tree keys
 * (positional: one contiguous block range; content: the bucket of blocks sharing the query block's path
 * prefix), all clipped to the causal bound t. Marking costs time proportional to the visible units plus
 * clearing and counting nwords = ceil(L / UNIT / 32) bitmap words; skipped units are never read. */

#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif
#ifndef TOKENS
#define TOKENS 1 /* query tokens per sequence */
#endif
#ifndef HPW
#define HPW 1 /* query heads per work-group (a divisor of the GQA group) */
#endif
#ifndef NT
#define NT 128 /* work-items per work-group */
#endif
#ifndef WORDS
#define WORDS 64 /* bitmap words: >= ceil(units of the layout's N / 32) */
#endif
#ifndef DUA_BIAS
#define DUA_BIAS 0
#endif

#define ROWS (HPW * TOKENS)

#ifdef DUA_PRECISE_EXP
#define DUA_EXP2 exp2
#else
#define DUA_EXP2 native_exp2 /* never called with -inf (guarded) */
#endif

/* Sets bits [ulo, uhi) of the bitmap; work-item `first` of `stride` takes words first, first+stride... */
inline void mark_units(volatile __local uint *bm, int ulo, int uhi, int first, int stride) {
  if (uhi <= ulo)
    return;
  for (int w = (ulo >> 5) + first; w <= ((uhi - 1) >> 5); w += stride) {
    const int a = max(ulo, w << 5) - (w << 5), b = min(uhi, (w << 5) + 32) - (w << 5);
    const uint mask = b - a == 32 ? 0xffffffffu : ((1u << (b - a)) - 1u) << a;
    atomic_or(&bm[w], mask);
  }
}

/* Units holding key tokens [lo, hi), marked by all work-items together. */
inline void mark_tokens(volatile __local uint *bm, int lo, int hi, int unit_shift, int tid) {
  if (hi > lo)
    mark_units(bm, lo >> unit_shift, ((hi - 1) >> unit_shift) + 1, tid, NT);
}

/* Step 1, by all NT work-items (the caller cleared the bitmap and put a barrier after it): the units holding
 * a visible key of some row r (query head h0 + r / TOKENS at position len - TOKENS + r % TOKENS). The caller
 * puts a barrier after it. */
inline void mark_visible_units(volatile __local uint *bm, int len, int h0, int unit_shift, dua_shape shape,
                               __global const dua_head_rule *head_rules, long lb, __global const int *order,
                               __global const int *rank_range, int tid) {
  (void)lb, (void)order, (void)rank_range;
  for (int r = 0; r < ROWS; r++) {
    const int pos = len - TOKENS + r % TOKENS;
    if (pos < 0)
      continue; /* uniform */
    const int h = h0 + r / TOKENS, m = pos / shape.blk;
    if (shape.sink > 0)
      mark_tokens(bm, 0, min(shape.sink, pos + 1), unit_shift, tid);
    if (shape.window > 0)
      mark_tokens(bm, max(0, pos - shape.window), pos + 1, unit_shift, tid);
#if DUA_TREE == 0
    const int2 tr = dua_tree_range(head_rules[h], m, shape.shift, shape.nb);
    mark_tokens(bm, tr.x * shape.blk, min(tr.y * shape.blk, pos + 1), unit_shift, tid);
#else
    const long row = (lb * shape.hq + h) * shape.nb;
    const int e0 = rank_range[2 * (row + m)], e1 = rank_range[2 * (row + m) + 1];
    for (int e = e0 + tid; e < e1; e += NT) {
      const int n = order[row + e];
      if (n <= m) /* one block: at most 16 units, inside one bitmap word */
        mark_units(bm, (n * shape.blk) >> unit_shift,
                   ((min((n + 1) * shape.blk, pos + 1) - 1) >> unit_shift) + 1, 0, 1);
    }
#endif
  }
}

/* A walk over a split's visible units: bitmap word, its bits not taken yet, units taken, units to take. */
typedef struct {
  int cw, taken, n_units;
  uint rem;
} unit_cursor;

/* Next set bit at or after the cursor (word *cw, remaining bits *rem); the caller knows one exists. */
inline int next_unit(__local const uint *bm, int *cw, uint *rem) {
  while (*rem == 0u)
    *rem = bm[++*cw];
  const uint low = *rem & (0u - *rem);
  *rem &= *rem - 1u;
  return (*cw << 5) + (31 - (int)clz(low));
}

/* Step 2: split `split` of `splits` takes visible units [u0, u1) (an even share of all of them); returns a
 * cursor on unit u0 with n_units = u1 - u0. */
inline unit_cursor split_cursor(__local const uint *bm, int nwords, int split, int splits) {
  int total = 0;
  for (int w = 0; w < nwords; w++)
    total += popcount(bm[w]);
  const int u0 = (int)(((long)total * split) / splits), u1 = (int)(((long)total * (split + 1)) / splits);
  int cw = 0, skip = u0;
  uint rem = nwords > 0 ? bm[0] : 0u;
  while (cw + 1 < nwords && skip >= (int)popcount(rem)) {
    skip -= popcount(rem);
    rem = bm[++cw];
  }
  for (; skip > 0; skip--)
    rem &= rem - 1u;
  const unit_cursor cur = {cw, 0, u1 - u0, rem};
  return cur;
}

/* Step 4 for output columns [c, c + 4) of row (query head h, token i): one split writes O (in q's dtype) and,
 * when has_lse, the natural-log LSE; several write the split's normalized partial O and log2-LSE for
 * dua_decode_merge (attn_decode_merge.cl). acc: unnormalized O; l, mx: softmax sum and max (log2 units). A
 * row with nothing visible (l = 0) gets O = 0 and LSE = -inf. */
inline void write_out4(float4 acc, float l, float mx, int h, int i, int c, int sidx, int split, int splits,
                       int hq, __global float *o, __global float *lse, __global float *part,
                       long part_lse_offset, long4 o_strides, long4 lse_strides, long4 offsets, int qo_fp16,
                       int has_lse) {
  const float4 out = l > 0.0f ? acc * (1.0f / l) : (float4)(0.0f);
  if (splits == 1) {
    const long off = offsets.s1 + sidx * o_strides.s0 + h * o_strides.s1 + i * o_strides.s2 + c;
    if (qo_fp16)
      vstore_half4(out, 0, (__global half *)o + off);
    else
      vstore4(out, 0, o + off);
    if (has_lse && c == 0)
      lse[offsets.s2 + sidx * lse_strides.s0 + h * lse_strides.s1 + i * lse_strides.s2] =
          l > 0.0f ? (mx + log2(l)) * DUA_LN2 : -INFINITY;
  } else {
    const long gr = ((long)sidx * hq + h) * TOKENS + i;
    vstore4(out, 0, part + (gr * splits + split) * HEAD_DIM + c);
    if (c == 0)
      part[part_lse_offset + gr * splits + split] = l > 0.0f ? mx + log2(l) : -INFINITY;
  }
}
