/* kv_cache.cl: writes new tokens into the paged KV cache (host/attention/kv_cache.c, dua_kv_append).
 *
 * Page storage of one layer: [num_pages][kv_heads][page_tokens][head_dim], K and V in separate buffers.
 * block_table[seq * max_pages + i] is the page holding tokens [i*P, (i+1)*P) of sequence seq.
 * Each work-item copies 4 elements of one token of one (row, KV head): global (T * head_dim/4, Hkv, n). */

#ifndef DUA_KV_FP16
#define DUA_KV_FP16 0 /* cache storage is IEEE half */
#endif
#ifndef DUA_SRC_FP16
#define DUA_SRC_FP16 0 /* the appended k, v tensors are IEEE half */
#endif

#if DUA_KV_FP16
typedef half kv_t;
#define KV_STORE4(x, p) vstore_half4((x), 0, (p))
#else
typedef float kv_t;
#define KV_STORE4(x, p) vstore4((x), 0, (p))
#endif
#if DUA_SRC_FP16
typedef half src_t;
#define SRC_LOAD4(p) vload_half4(0, (p))
#else
typedef float src_t;
#define SRC_LOAD4(p) vload4(0, (p))
#endif

__kernel void dua_kv_append(__global const src_t *k, __global const src_t *v, long4 k_strides,
                            long4 v_strides, long2 offsets /* elements: k, v */, __global kv_t *kc,
                            __global kv_t *vc, __global const int *block_table, int max_pages,
                            __global const int2 *calls /* [n] (seq, first position) */, int kv_heads,
                            int page_tokens, int head_dim, int tokens) {
  const int vecs = head_dim / 4;
  const int t = get_global_id(0) / vecs, c = (get_global_id(0) % vecs) * 4;
  const int hk = get_global_id(1), row = get_global_id(2);
  if (t >= tokens)
    return;
  const int2 call = calls[row];
  const int pos = call.y + t;
  const int page = block_table[(long)call.x * max_pages + pos / page_tokens];
  const long dst = (((long)page * kv_heads + hk) * page_tokens + pos % page_tokens) * head_dim + c;
  const long ks = offsets.s0 + row * k_strides.s0 + hk * k_strides.s1 + t * k_strides.s2 + c;
  const long vs = offsets.s1 + row * v_strides.s0 + hk * v_strides.s1 + t * v_strides.s2 + c;
  KV_STORE4(SRC_LOAD4(k + ks), kc + dst);
  KV_STORE4(SRC_LOAD4(v + vs), vc + dst);
}
