/* paper.h: paper routing mode (DUA_ROUTING_PAPER, DESIGN.md section 7; PAPER-NOTES.md "Training"), the
 * reproduction of the paper's training: every head attends densely with an additive token-tree bias
 *     logits = q.k / sqrt(d) + Tz[lvl(i, j)] * g[b, i, h] * alpha_h
 * Tz: the token tree (D_tok = ceil(log2 N), lvl = D_tok - k*, diagonal D_tok) z-normalized over the causal
 * pairs j <= i (the only pairs a causal softmax ever weighs); g: Gumbel-Sigmoid gate sigmoid((z + G1 - G2) /
 * tau) while training, 1[z > 0] at the paper's evaluation; alpha_h: a learned amplitude per layer and head.
 * The gate logit z[b, i, h] comes from a causal depth controller on the position's own layer-normed input
 * (the layer's LN1 output): E -> hidden (GELU) -> H, or a linear map E -> H when hidden = 0. (The paper pools
 * over positions with a softmax, which lets a position's gate read later tokens: a causality leak dua does
 * not reproduce.) Extraction: depth D_b (block-diagonal) for a head whose mean sigmoid(z) over the evaluated
 * positions is > 0.5, else 0 (dense).
 *
 * Controller weights live in a small device arena of their own (parameters, gradients, AdamW moments), per
 * layer [W1 (hidden x C), b1 (hidden), W2 (H x hidden or H x C), b2 (H)]; alpha and its moments on the host,
 * like native mode's gate logits. Activations: per layer hid, gelu(hid) [R, hidden] and z [R, H] on the
 * device, the gates g [R, H] on the host; the bias scale r = alpha * g goes to the attention kernels as
 * token_scale (B, H, T, 1) and their d token_scale comes back for the chain rule. */
#ifndef DUA_PAPER_H
#define DUA_PAPER_H

#include "dua_train.h"
#include "train/train_ops.h"

typedef enum dua_paper_gate {
  DUA_PAPER_OFF = 0,   /* no token-tree bias (the extracted hard routing) */
  DUA_PAPER_TRAIN = 1, /* Gumbel-Sigmoid gate at temperature tau, noise from (seed, step, layer, row, head) */
  DUA_PAPER_EVAL_GATE = 2, /* the paper's evaluation gate 1[z > 0], no noise */
} dua_paper_gate;

typedef struct dua_paper {
  dua_context *ctx;
  dua_ops *ops;
  int L, H, C, B, T, R, hidden, levels;
  size_t off_w1, off_b1, off_w2, off_b2, per_layer, n_params; /* fp32 elements of the controller arena */
  dua_buffer *params, *grads, *adam_m, *adam_v;               /* [L * per_layer] */
  dua_buffer *acts;  /* per layer: hid [R, hidden], hidg [R, hidden], z [R, H]; then dz [R, H], dhidg, dhid */
  dua_buffer *scale; /* [L][B, H, T] token_scale r = alpha * g */
  dua_buffer *dscale; /* [B, H, T] d r of the layer being back-propagated */
  dua_buffer *table;  /* [1][levels] z-normalized token tree */
  float table_host[40];
  float *alpha, *alpha_m, *alpha_v, *dalpha; /* [L][H] */
  float *z, *g;                              /* host [L][R][H]: gate logits and gates of the last forward */
  float *buf;                                /* host [R * H] staging */
  /* per forward */
  dua_paper_gate gate;
  float tau;
  uint64_t seed, step;
  /* extraction statistics: sum of sigmoid(z) over the first collect_rows rows of each forward, [L][H] */
  int collect_rows;
  double *gate_sum;
  int64_t gate_count;
  char error[256];
} dua_paper;

/* The z-normalized token-tree table for N tokens: levels = D_tok + 1 values (mean 0, variance 1 over the
 * causal pairs j <= i < N). Returns levels. */
int dua_paper_token_table(int n, float *table);
/* Controller and alpha for config (hidden = config->ctrl_hidden), initialized from config->seed: weights
 * N(0, 0.02), biases 0 (z = 0: gates start at 1/2), alpha = 1. */
dua_status dua_paper_create(dua_context *ctx, dua_ops *ops, const dua_trainer_config *config,
                            dua_paper **out);
void dua_paper_destroy(dua_paper *p);
/* Forward of layer l's controller from ln1 [R, C] (the layer's layer-normed input), the gates (p->gate) and
 * the bias scale; *scale and *table receive the attention tensors. Blocking (reads z back). */
dua_status dua_paper_forward_layer(dua_paper *p, int l, dua_span ln1, dua_tensor *scale, dua_tensor *table);
/* The attention tensors of layer l's last forward. */
void dua_paper_layer_tensors(dua_paper *p, int l, dua_tensor *scale, dua_tensor *table);
/* The attention backward's d token_scale output for one layer ([B, H, T, 1] on p->dscale). */
dua_tensor dua_paper_dscale_view(dua_paper *p);
/* Chain rule of layer l after the attention backward filled p->dscale: dalpha, the controller's parameter
 * gradients (+=) and dln [R, C] += d ln1. Needs the TRAIN gate (the others have no gradient). */
dua_status dua_paper_backward_layer(dua_paper *p, int l, dua_span ln1, dua_span dln);
/* Zeroes the controller gradients and dalpha (once per step, before the backward). */
dua_status dua_paper_zero_grads(dua_paper *p);
/* Sum of squares of every paper gradient (blocking). */
dua_status dua_paper_grad_sumsq(dua_paper *p, double *ss);
/* AdamW (weight decay on W1, W2 only; alpha on the host, no decay). */
dua_status dua_paper_update(dua_paper *p, const dua_trainer_config *c, float lr, int t, float grad_scale);
/* Host copies of the whole state for checkpoints: [params | adam_m | adam_v] (3 * n_params floats) and
 * [alpha | alpha_m | alpha_v] (3 * L * H floats). */
dua_status dua_paper_state_read(dua_paper *p, float *device_state, float *alpha_state);
dua_status dua_paper_state_write(dua_paper *p, const float *device_state, const float *alpha_state);

#endif
