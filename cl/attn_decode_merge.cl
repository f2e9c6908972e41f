/* attn_decode_merge.cl: the split-KV merge of the sparse decode (host/attention/decode.c): each split of
 * dua_decode (attn_decode.cl, built into the same program with the same options) left a normalized partial
 * O and its log2-LSE per row; this combines them. */

#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif
#ifndef TOKENS
#define TOKENS 1 /* query tokens per sequence */
#endif
#ifndef DUA_LN2
#define DUA_LN2 0.6931471805599453f
#endif

/* Combines the splits of each row (s, h, i): O = sum_k w_k O_k / sum_k w_k, w_k = 2^(lse_k - max),
 * LSE = (max + log2 sum w) ln 2; no split with a visible key gives O = 0, LSE = -inf.
 * Global (HEAD_DIM / 4, S * Hq * TOKENS). */
__kernel void dua_decode_merge(__global const float *part, long part_lse_offset, int splits,
                               __global float *o, __global float *lse, long4 o_strides, long4 lse_strides,
                               long4 offsets /* elements: -, o, lse, - */, int qo_fp16, int has_lse, int hq) {
  const int c = get_global_id(0) * 4;
  const long gr = get_global_id(1);
  const int i = gr % TOKENS, h = (gr / TOKENS) % hq;
  const long s = gr / TOKENS / hq;
  __global const float *lse_k = part + part_lse_offset + gr * splits;
  float mx = -INFINITY;
  for (int k = 0; k < splits; k++)
    mx = fmax(mx, lse_k[k]);
  float4 acc = (float4)(0.0f);
  float sum = 0.0f;
  if (mx != -INFINITY)
    for (int k = 0; k < splits; k++)
      if (lse_k[k] != -INFINITY) {
        const float w = exp2(lse_k[k] - mx);
        sum += w;
        acc = fma((float4)(w), vload4(0, part + (gr * splits + k) * HEAD_DIM + c), acc);
      }
  const float4 out = sum > 0.0f ? acc * (1.0f / sum) : (float4)(0.0f);
  const long off = offsets.s1 + s * o_strides.s0 + h * o_strides.s1 + i * o_strides.s2 + c;
  if (qo_fp16)
    vstore_half4(out, 0, (__global half *)o + off);
  else
    vstore4(out, 0, o + off);
  if (has_lse && c == 0)
    lse[offsets.s2 + s * lse_strides.s0 + h * lse_strides.s1 + i * lse_strides.s2] =
        sum > 0.0f ? (mx + log2(sum)) * DUA_LN2 : -INFINITY;
}
