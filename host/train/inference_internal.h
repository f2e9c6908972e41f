/* inference_internal.h: the dua_inference_model struct and what inference_generate.c shares with
 * inference.c: per-(batch, dense) layout sets, the blocks run for full sequences, a prefill or one decode
 * step, and the output head. The model keeps parameters and one activation arena (no gradients, no
 * optimizer state); its ops are the trainer's (train_ops.h) in the trainer's order, so that evaluation is
 * bit for bit the trainer's. */
#ifndef DUA_INFERENCE_INTERNAL_H
#define DUA_INFERENCE_INTERNAL_H

#include "train/content.h"
#include "train/model.h"
#include "train/task.h"

/* Layouts of every layer for one attention batch size, sparse (the routing) or dense. */
typedef struct dua_layout_set {
  int32_t batch;
  int dense;
  dua_layout **layer; /* [L] */
  struct dua_layout_set *next;
} dua_layout_set;

/* Activation arena offsets (fp32 elements) for up to rows_max = batch * seq_len rows. */
typedef struct dua_inference_acts {
  size_t res[3];         /* [R, C] residual stream: block input, after attention, after the MLP (rotated) */
  size_t ln, mean, rstd; /* [R, C], [R], [R] */
  size_t qkv;            /* [R, 3C] */
  size_t atty;           /* [R, C] (B, T, H, Dh) */
  size_t tmp;            /* [R, C] */
  size_t fch, fchg;      /* [R, M] */
  size_t logits;         /* [R, V] */
  size_t losses, preds;  /* [R] */
  size_t lse;            /* [R * H] */
  size_t total;
} dua_inference_acts;

struct dua_inference_model {
  dua_context *ctx;
  dua_ops *ops;
  dua_task *task;
  dua_trainer_config cfg;
  int64_t step;
  int L, H, C, Dh, M, V, S, D, B; /* B: the checkpoint's batch size (evaluation batches) */
  size_t param_off[P_COUNT], param_size[P_COUNT], num_params;
  dua_buffer *params, *acts;
  dua_inference_acts a;
  dua_routing routing;               /* what runs */
  int32_t *depths;                   /* [L][H] from routing */
  int32_t *zeros;                    /* [H] */
  double dense_blocks;               /* visited-block density of dense causal attention */
  dua_layout_set *sets;              /* made on demand */
  dua_kv_cache *cache;               /* made by the first generation */
  int32_t *tokens, *targets, *preds; /* host [B * S] */
  float *losses;                     /* host [B * S] */
  /* content mode: the router (argmax paths from the model's own activations, per pass and batch) */
  dua_content *content; /* NULL for the positional tree */
  dua_layout **clay;    /* [L] content layouts of the last sparse pass */
  float *first_rows;    /* host [B][nb][C] */
  uint8_t *paths;       /* host [B][H][nb][D] */
  uint8_t
      *gen_paths; /* host [L][H][nb][D]: the paths of the sequence being generated (blocks not reached: 0) */
  dua_layout **glay; /* [L] its layouts (batch 1), rebuilt when a block's first token arrives */
  double *cdensity;  /* [L] mean block density of the content layouts over the last evaluation */
  int cdensity_valid;
};

/* Layouts for attention batch `batch` (1..B), sparse or dense; made once, kept until the model goes. */
dua_status dua_inference_layouts(dua_inference_model *m, int32_t batch, int dense, dua_layout ***out);

/* One pass through the blocks:
 *   full sequences: nseq sequences of S tokens (tokens [nseq][S]), rows = nseq * S, pos = -1, seq = -1;
 *   prefill: nseq = 1, rows = P <= S prompt tokens, pos = -1, seq = a cache sequence (each layer's K/V of
 *     the P positions are appended to it; the attention runs over S positions, rows P.. zeroed);
 *   decode: nseq = 1, rows = 1, pos = the token's position, seq = its sequence (K/V appended, then
 * dua_decode).
 * Content-routed models route prefill and decode through the sequence's own paths (gen_paths, glay): the
 * prefill routes the blocks the prompt reaches, a decode step the block its token starts, if any. *final_res
 * receives the element offset of the last block's output [rows, C] in the arena. */
typedef struct dua_inference_pass {
  const int32_t *tokens;
  int32_t nseq, rows, pos, seq;
  dua_layout **layouts; /* [L], batch nseq */
} dua_inference_pass;

dua_status dua_inference_blocks(dua_inference_model *m, const dua_inference_pass *p, size_t *final_res);
/* Final layer norm and tied output head for rows [first, first + n) of the residual at res: logits [n, V]
 * at the arena's logits offset. */
dua_status dua_inference_head(dua_inference_model *m, size_t res, int32_t first, int32_t n);

double dua_inference_now(void);

#endif
