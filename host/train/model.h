/* model.h: the trainer's GPT-style model (DESIGN.md section 7) on the device: parameters, gradients and
 * AdamW moments in one arena each, activations in another (llm.c style), forward + loss, backward, update.
 * Dense math goes through train_ops (CLBlast GEMMs, OpenCL kernels); attention goes through dua's
 * block-sparse kernels with one layout per layer and, in native routing mode, a per-head level bias. */
#ifndef DUA_MODEL_H
#define DUA_MODEL_H

#include "dua_train.h"
#include "train/train_ops.h"

/* Parameter tensors, in arena order. Shapes use V vocab, T seq_len, C width, M = mlp_ratio * C, L layers;
 * per-layer tensors are stored for all layers back to back ([L, ...]). */
enum {
  P_WTE,      /* [V, C] token embedding, tied with the output head */
  P_WPE,      /* [T, C] learned positions */
  P_LN1W,     /* [L, C] */
  P_LN1B,     /* [L, C] */
  P_QKVW,     /* [L, 3C, C] rows: q (C), k (C), v (C) */
  P_QKVB,     /* [L, 3C] */
  P_ATTPROJW, /* [L, C, C] */
  P_ATTPROJB, /* [L, C] */
  P_LN2W,     /* [L, C] */
  P_LN2B,     /* [L, C] */
  P_FCW,      /* [L, M, C] */
  P_FCB,      /* [L, M] */
  P_FCPROJW,  /* [L, C, M] */
  P_FCPROJB,  /* [L, C] */
  P_LNFW,     /* [C] */
  P_LNFB,     /* [C] */
  P_COUNT
};

typedef struct dua_model_dims {
  int B, T, C, H, Dh, M, L, V;
  int R; /* B * T rows */
} dua_model_dims;

/* Per-layer attention routing for one forward/backward pass. */
typedef struct dua_layer_routing {
  int32_t depths[64]; /* [H] layout depth per head (blocks with lca < depth are skipped) */
  const float *bias;  /* host [H][Dmax + 1] level bias, or NULL (no bias) */
} dua_layer_routing;

/* Content routing hook: called by the forward after layer l's first layer norm with the layer-normed
 * rows of the first token of every block, x [B][nb][C]; must fill paths [B][H][nb][D] (D = tree_depth). */
typedef dua_status (*dua_route_fn)(void *user, int layer, const float *x, uint8_t *paths);

typedef struct dua_model {
  dua_context *ctx;
  dua_ops *ops;
  dua_trainer_config cfg;
  dua_model_dims d;
  int tree_depth; /* D: levels of the block tree (same for every head) */
  size_t param_size[P_COUNT], param_off[P_COUNT], num_params;
  dua_buffer *params, *grads, *adam_m, *adam_v; /* [num_params] each */
  dua_buffer *acts;                             /* activations, see model.c */
  size_t acts_floats;
  dua_buffer *bias, *dbias; /* [L][H][D + 1] level bias and its gradient */
  /* one layout per layer, rebuilt only when its depths change */
  dua_layout **layouts;
  int32_t *layout_depths; /* [L][H], -2 = no layout yet */
  /* host mirrors of the last pass */
  int32_t *tokens, *targets; /* [R] */
  float *losses;             /* [R] */
  int32_t *preds;            /* [R] */
  int has_bias;              /* the last forward used level biases */
  /* content routing: route != NULL makes every layer's layout a content tree from route's paths */
  dua_route_fn route;
  void *route_user;
  float *first_rows;       /* host [B][nb][C] */
  uint8_t *paths;          /* host [B][H][nb][D] */
  int want_tiles;          /* backward with level biases also returns the block-pair gradients */
  dua_buffer *tiles;       /* [L][B][H][nb][nb] (made on first use) */
  float *tiles_host;       /* host copy of tiles after such a backward */
  struct dua_paper *paper; /* paper mode's controller (owned by the trainer), or NULL */
  int paper_used;          /* the last forward added paper mode's token-tree bias */
  char error[512];
} dua_model;

/* Tree depth D: smallest d with p^d >= nb (integer arithmetic). */
int dua_tree_depth_of(int nb, int p);
/* Block shift of layer l: odd layers shift by floor(p / 2) blocks when config->shift_alternate is set (half
 * of the finest non-trivial subtree, so block boundaries at that level are crossed somewhere); 0 otherwise.
 * The one rule for the model, the trainer's routing and inference. */
int dua_layer_shift(const dua_trainer_config *config, int l);
/* Sizes and offsets (fp32 elements) of the parameter tensors of config with vocabulary V, in arena order;
 * returns the total. The one definition the trainer, checkpoints and inference share. */
size_t dua_model_param_layout(const dua_trainer_config *config, int vocab, size_t size[P_COUNT],
                              size_t offset[P_COUNT]);

/* Allocates arenas for config (batch rows B = config->batch) and vocabulary V; parameters initialized
 * from config->seed (weights N(0, 0.02), residual projections scaled by 1/sqrt(2L), LN weights 1, biases
 * 0); AdamW moments zeroed. */
dua_status dua_model_create(dua_context *ctx, const dua_trainer_config *config, int vocab, dua_model **out);
void dua_model_destroy(dua_model *m);

/* Forward pass on tokens/targets ([B][T] host arrays, targets DUA_IGNORE where no loss), with the given
 * routing per layer (routing[L]). Sums the loss over non-ignored targets into *loss_sum, counts them in
 * *count and correct argmax predictions in *correct (any may be NULL). Leaves dlogits ready for backward. */
dua_status dua_model_forward(dua_model *m, const int32_t *tokens, const int32_t *targets,
                             const dua_layer_routing *routing, double *loss_sum, int *count, int *correct);
/* Backward pass of the last forward: zeroes and fills the parameter gradients; when the forward used level
 * biases, writes their gradients to host dbias [L][H][D + 1]. */
dua_status dua_model_backward(dua_model *m, float *dbias);
/* Global L2 norm of the parameter gradients (blocking). */
dua_status dua_model_grad_norm(dua_model *m, float *norm);
/* Reads the first-token rows of each block of an [B*T, C] activation at element offset off of acts into
 * x [B][nb][C] (blocking). */
dua_status dua_read_first_rows(dua_buffer *acts, size_t off, int B, int T, int C, int block, float *x);
/* AdamW step t >= 1 with learning rate lr; gradients multiplied by grad_scale (clipping). Weight decay on
 * matrices and embeddings only. */
dua_status dua_model_update(dua_model *m, float lr, int t, float grad_scale);

#endif
