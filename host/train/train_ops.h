/* train_ops.h: the trainer's layer operations on the device (kernels in cl/train_ops.cl, or
 * cl/train_ops_cpu.cl on CPU devices; GEMMs through CLBlast on GPUs). Everything is fp32, contiguous
 * row-major. A span names fp32 elements of a buffer from element `off` on, so the model can keep all
 * parameters, gradients and activations in a few arenas (llm.c style).
 *
 * Conventions:
 *   - every op only enqueues on the context's queue (no host sync), except dua_op_sumsq, which reads back;
 *   - forward ops overwrite their outputs; backward ops ACCUMULATE (+=) into every gradient they write,
 *     so the caller zeroes gradients once per step (dua_op_fill) and residual branches simply add up;
 *   - every reduction is deterministic (fixed order, no floating-point atomics), so a run is bit-identical
 *     when repeated on the same device;
 *   - R = rows (batch * tokens), C = channels; shapes are given in the comments as [rows, cols].
 */
#ifndef DUA_TRAIN_OPS_H
#define DUA_TRAIN_OPS_H

#include "runtime/context_internal.h"

typedef struct dua_span {
  dua_buffer *buf;
  size_t off; /* in fp32 (or int32) elements */
} dua_span;

static inline dua_span dua_span_at(dua_span s, size_t elements) {
  s.off += elements;
  return s;
}

/* Kernels, scratch memory and reusable host arrays for the ops of one context. */
typedef struct dua_ops dua_ops;

dua_status dua_ops_create(dua_context *ctx, dua_ops **out);
void dua_ops_destroy(dua_ops *ops);

/* x[0..n) = value */
dua_status dua_op_fill(dua_ops *ops, dua_span x, size_t n, float value);
/* dst[0..n) += src[0..n) */
dua_status dua_op_accumulate(dua_ops *ops, dua_span dst, dua_span src, size_t n);
/* out[0..n) = a + b */
dua_status dua_op_add(dua_ops *ops, dua_span out, dua_span a, dua_span b, size_t n);

/* Token + learned position embedding.
 *   out [R, C] = wte[tokens[r]] + wpe[r % T],  R = B * T; tokens: host int32 [R], each in [0, V).
 * The host tokens are uploaded by the op (invalid ids are refused with DUA_ERROR_INVALID_ARGUMENT). */
dua_status dua_op_embed_forward(dua_ops *ops, dua_span out, const int32_t *tokens, dua_span wte, dua_span wpe,
                                int B, int T, int C, int V);
/* dwte [V, C] += sum over rows with that token of dout; dwpe [T, C] += sum over the batch of dout.
 * Deterministic without atomics (rows of each token gathered on the host, summed in order). */
dua_status dua_op_embed_backward(dua_ops *ops, dua_span dwte, dua_span dwpe, dua_span dout,
                                 const int32_t *tokens, int B, int T, int C, int V);

/* Layer norm over C per row, eps 1e-5.
 *   out [R, C], mean [R], rstd [R] <- inp [R, C], w [C], b [C] */
dua_status dua_op_layernorm_forward(dua_ops *ops, dua_span out, dua_span mean, dua_span rstd, dua_span inp,
                                    dua_span w, dua_span b, int R, int C);
/* dinp [R, C] +=, dw [C] +=, db [C] += ; from dout [R, C], inp, w, mean, rstd */
dua_status dua_op_layernorm_backward(dua_ops *ops, dua_span dinp, dua_span dw, dua_span db, dua_span dout,
                                     dua_span inp, dua_span w, dua_span mean, dua_span rstd, int R, int C);

/* Linear layer: CLBlast SGEMM on GPUs, dua_ops_gemm (a CPU-tiled GEMM, several times faster than CLBlast on
 * PoCL: bench/RESULTS.md) on CPU devices; DUA_TRAIN_OPS forces a path. out [R, OC] = inp [R, C] * w [OC, C]^T
 * + bias [OC]   (bias.buf == NULL: no bias) */
dua_status dua_op_matmul_forward(dua_ops *ops, dua_span out, dua_span inp, dua_span w, dua_span bias, int R,
                                 int C, int OC);
/* dinp [R, C] += dout [R, OC] * w [OC, C];  dw [OC, C] += dout^T * inp;  dbias [OC] += column sums of dout.
 * dinp.buf == NULL skips dinp (first layer); dbias.buf == NULL skips dbias. */
dua_status dua_op_matmul_backward(dua_ops *ops, dua_span dinp, dua_span dw, dua_span dbias, dua_span dout,
                                  dua_span inp, dua_span w, int R, int C, int OC);

/* GELU, tanh approximation: out[i] = gelu(inp[i]);  dinp[i] += gelu'(inp[i]) * dout[i] */
dua_status dua_op_gelu_forward(dua_ops *ops, dua_span out, dua_span inp, size_t n);
dua_status dua_op_gelu_backward(dua_ops *ops, dua_span dinp, dua_span inp, dua_span dout, size_t n);

/* Softmax cross-entropy with an ignore index, fused with its gradient.
 *   logits [R, V]; targets: host int32 [R], each in [0, V) or == ignore_index (uploaded by the op).
 *   losses [R]: -log softmax(logits[r])[target] (0 for ignored rows);
 *   dlogits [R, V] = (softmax - onehot(target)) * grad_scale (0 rows for ignored; OVERWRITTEN, may alias
 *   logits exactly; buf == NULL: no gradient, e.g. for evaluation); predictions [R] (int32 span, may have
 *   buf == NULL): argmax of logits[r] (lowest index on ties). */
dua_status dua_op_crossentropy(dua_ops *ops, dua_span losses, dua_span dlogits, dua_span predictions,
                               dua_span logits, const int32_t *targets, int ignore_index, float grad_scale,
                               int R, int V);

/* Sum of squares of x[0..n) in double-free fp32 with a fixed reduction tree; blocking (reads back). */
dua_status dua_op_sumsq(dua_ops *ops, dua_span x, size_t n, float *result);

/* AdamW, step t >= 1 (bias-corrected), decoupled weight decay, gradient multiplied by grad_scale first
 * (global-norm clipping):
 *   g = grads * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *   params -= lr * (mhat / (sqrt(vhat) + eps) + wd * params) */
dua_status dua_op_adamw(dua_ops *ops, dua_span params, dua_span grads, dua_span m, dua_span v, size_t n,
                        float lr, float beta1, float beta2, float eps, float wd, int t, float grad_scale);

#endif
