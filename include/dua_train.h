/* dua_train.h: public API of dua's trainer (shared/DESIGN.md section 7) and of routing files.
 *
 * A small GPT-style model whose dense math runs on CLBlast and whose attention runs on dua's block-sparse
 * kernels learns per-head routing depths; the routing file it writes drives the inference kernels.
 * Same conventions as dua.h (status codes, NULL-safe destroy, nothing printed, nothing half-written).
 * Kept apart from dua.h so that applications that only run attention never see the trainer's types.
 */
#ifndef DUA_TRAIN_H
#define DUA_TRAIN_H

#include "dua.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- configuration */

typedef enum dua_task_kind {
  DUA_TASK_DYCK = 0,          /* Dyck-k: classify the closer required at the end of a prefix */
  DUA_TASK_LISTOPS = 1,       /* ListOps: value (0-9) of a nested MIN/MAX/MED/SUMMOD expression, most
                               * examples nested, lengths spread over seq_len (dua's harder variant) */
  DUA_TASK_LISTOPS_PAPER = 2, /* ListOps as the paper's generator draws it (36% a single flat operator) */
  DUA_TASK_DYCK_LM = 3,       /* next-token LM on whole Dyck-k words of exactly seq_len tokens (even) */
  DUA_TASK_TEXT = 4           /* byte-level next-token LM on a UTF-8 file (see "text corpus" below) */
} dua_task_kind;

/* "dyck", "listops", "listops-paper", "dyck-lm", "text"; "?" for a value that is no task. */
DUA_API const char *dua_task_kind_name(int32_t task);
/* The task called name (as dua_task_kind_name spells it), or -1. */
DUA_API int32_t dua_task_kind_from_name(const char *name);

typedef enum dua_routing_mode {
  DUA_ROUTING_DENSE = 0,  /* every head dense (depth 0) */
  DUA_ROUTING_NATIVE = 1, /* per-head per-level Gumbel-Sigmoid gates as a level bias, then hard depths */
  DUA_ROUTING_PAPER = 2,  /* the paper's training (reproduction): dense heads with an additive z-normalized
                           * token-tree bias x per-position Gumbel-Sigmoid gate (a causal controller) x learned
                           * amplitude; extracted to depth 0 or D per head (dua_trainer_evaluate_paper) */
  DUA_ROUTING_CONTENT = 3 /* native's gates over a content tree: a per-layer, per-head router gives every
                           * block a path from its first token's hidden state (hard Gumbel-Softmax,
                           * straight-through, load balancing); see README "content mode" */
} dua_routing_mode;

typedef enum dua_lr_decay { DUA_DECAY_COSINE = 0, DUA_DECAY_LINEAR = 1 } dua_lr_decay;

/* Everything that defines a training run; recorded in the checkpoint. dua_trainer_config_init fills
 * the defaults (the paper's Dyck-2 setup); dua_trainer_config_validate names the first bad field. */
typedef struct dua_trainer_config {
  /* task */
  int32_t task;           /* dua_task_kind */
  int32_t seq_len;        /* S: tokens per example, 8..65536 (dyck-lm: even); examples longer than S are
                           * never generated */
  int32_t dyck_kinds;     /* k of Dyck-k (bracket pairs), 1..8 (dyck, dyck-lm) */
  int32_t dyck_max_depth; /* deepest nesting, 1..S-1 (dyck), 1..S/2 (dyck-lm) */
  int32_t test_size;      /* held-out examples (de-duplicated against training), >= 1 */
  /* model */
  int32_t layers;    /* >= 1 */
  int32_t width;     /* C: model width; C / heads must be 32, 64, 96 or 128 */
  int32_t heads;     /* attention heads */
  int32_t mlp_ratio; /* MLP hidden = mlp_ratio * C */
  /* routing */
  int32_t mode;   /* dua_routing_mode */
  int32_t block;  /* BLK: 16..256, power of two */
  int32_t arity;  /* tree arity p >= 2 */
  int32_t window; /* token window W >= 0 (OR'd with the tree) */
  int32_t sink;   /* sink keys S >= 0 */
  int32_t
      shift_alternate; /* 1 = odd layers shift the tree by floor(arity / 2) blocks (Swin-style), 0 = none */
  float tau_start, tau_end; /* Gumbel-Sigmoid temperature, annealed linearly */
  float tau_frac;           /* fraction of the steps over which tau anneals (0..1] */
  float hard_frac;          /* fraction of the steps after which depths are fixed (native mode), (0..1] */
  float gate_init;          /* initial gate logit (negative = start dense) */
  float gate_lr_scale;      /* gate learning rate = lr * gate_lr_scale */
  float density_weight;     /* penalty weight on the expected density (mean over heads) above density_target:
                             * per layer, averaged over layers, or of the whole model (density_scope); 0 = none */
  float density_target;     /* (0..1] */
  float skip_bias;          /* level-bias cut-off (< 0) below which blocks are skipped while training */
  /* optimisation */
  int32_t batch;  /* examples per step */
  int32_t steps;  /* total optimizer steps */
  int32_t warmup; /* linear warm-up steps */
  int32_t decay;  /* dua_lr_decay */
  float lr;       /* peak learning rate */
  float lr_min;   /* final learning rate as a fraction of lr, [0..1] */
  float weight_decay, beta1, beta2, adam_eps;
  float grad_clip;     /* global gradient-norm clip, 0 = none */
  uint64_t seed;       /* data, initialization and Gumbel noise */
  int32_t eval_every;  /* steps between evaluations, 0 = only at the end */
  int32_t ctrl_hidden; /* paper mode: hidden width of the depth controller E -> ctrl_hidden -> H (GELU);
                        * 0 = a linear map E -> H; 0..4096 (default 32 = E/4 at the default width) */
  int32_t reserved[8]; /* zero */
  /* fields taken from the end of the reserved space (older checkpoints hold 0 there) */
  int32_t density_estimate; /* dua_density_estimate: which gates (and content paths) the budget measures */
  int32_t router_input;     /* content mode, dua_router_input: what the router sees of each block */
  int32_t balance_scope; /* content mode, dua_balance_scope: the digit fractions of the balance loss over the
                          * batch (default) or within each sequence */
  int32_t density_scope; /* dua_density_scope: where the density budget holds (default per layer) */
  /* content mode */
  float balance_weight;  /* weight of the router's load-balancing loss (1 = uniform), >= 0 */
  float router_lr_scale; /* router learning rate = lr * router_lr_scale (> 0 in content mode) */
} dua_trainer_config;

/* Where the density budget (density_weight, density_target) holds: every layer's expected density on its own
 * (the default), or only their mean, so that a layer may spend what another saves (a dense head in one layer
 * next to sparser layers). */
typedef enum dua_density_scope { DUA_DENSITY_PER_LAYER = 0, DUA_DENSITY_MODEL = 1 } dua_density_scope;

/* What the density budget measures while the gates are soft:
 *   - SAMPLED (the default): the expected density of the step's sampled routing (the noisy gates and, in
 *     content mode, the Gumbel-sampled paths the forward used);
 *   - DETERMINISTIC: the expected density of the noise-free gates sigmoid(z / tau) over each block's argmax
 *     path (content mode);
 *   - EXTRACTED: the density of the routing extraction would fix now (each head's deepest gate with z > 0,
 *     argmax paths), which is what evaluation runs; its gradient is DETERMINISTIC's (straight-through).
 * The expected densities can sit well under the target while the extracted model is far over it: content
 * mode on dyck-lm read 0.13-0.17 (sampled) and 0.22 (deterministic) while its hard routing held 0.32-0.33
 * (bench/RESULTS.md): soft gates near z = 0 damp long-range pairs without cutting them. */
typedef enum dua_density_estimate {
  DUA_DENSITY_SAMPLED = 0,
  DUA_DENSITY_DETERMINISTIC = 1,
  DUA_DENSITY_EXTRACTED = 2
} dua_density_estimate;

/* Where content mode's load-balancing loss counts each tree node's digits: over the whole batch (the
 * default; Switch-Transformer style), or within each sequence and then averaged, which also penalizes the
 * blocks of one sequence sharing a path (their collisions are the density a head at the deepest level
 * keeps). */
typedef enum dua_balance_scope { DUA_BALANCE_BATCH = 0, DUA_BALANCE_SEQUENCE = 1 } dua_balance_scope;

/* What content mode's router decides each block's path from: the layer-normed hidden state of the block's
 * first token (the default), or that row followed by the block's place in the positional tree (for each of
 * the D levels, p one-hot features of the block index's base-p digit, root first), so that a node can split
 * by position where the tokens do not separate one sequence's blocks. */
typedef enum dua_router_input { DUA_ROUTER_TOKEN = 0, DUA_ROUTER_TOKEN_POSITION = 1 } dua_router_input;

DUA_API void dua_trainer_config_init(dua_trainer_config *config);
/* DUA_ERROR_INVALID_ARGUMENT with the field, its value and the allowed range in error. */
DUA_API dua_status dua_trainer_config_validate(const dua_trainer_config *config, char *error,
                                               size_t error_size);

/* ---------------------------------------------------------------- text corpus (task text) */

/* DUA_TASK_TEXT reads its examples from a UTF-8 file, the corpus, given by path when a trainer is created
 * (dua_trainer_create_with_corpus). The file must be valid UTF-8 (else DUA_ERROR_INVALID_ARGUMENT naming the
 * byte offset of the first invalid sequence). The held-out region is the last floor(bytes / 10) bytes,
 * extended backward to the start of the UTF-8 character it would cut; the rest is the training region; each
 * must hold at least seq_len + 1 bytes. Vocabulary: the 256 byte values. A training example is the
 * seq_len + 1 bytes at an offset drawn from (seed, step) in the training region: tokens its first seq_len
 * bytes, targets the next byte at every position. The test set is config.test_size windows spread evenly
 * over the held-out region, each byte scored at most once (test_size * seq_len + 1 <= held-out bytes, else
 * DUA_ERROR_INVALID_ARGUMENT with the largest test_size that fits); it does not depend on the seed. No
 * training window equals a test window.
 *
 * The checkpoint records the corpus: its absolute path, size and SHA-256 (and the split). Loading a
 * checkpoint (dua_trainer_load, dua_inference_model_load) reads the recorded path; the *_with_corpus
 * variants take another path for a file that moved. Either way the file must have the recorded size and
 * SHA-256, else the load is refused (DUA_ERROR_INVALID_ARGUMENT, both identities in the message; a missing
 * file gives DUA_ERROR_IO). A trainer saves the path it read, so a checkpoint resumed from a moved corpus
 * records the new path. */
typedef struct dua_text_corpus_info {
  const char *path;         /* absolute path of the file read; valid while its trainer or model lives */
  uint64_t bytes;           /* file size */
  uint64_t train_bytes;     /* training region: bytes [0, train_bytes) */
  uint64_t heldout_bytes;   /* held-out region: bytes [train_bytes, bytes) */
  unsigned char sha256[32]; /* of the whole file */
  int32_t reserved[8];      /* zero */
} dua_text_corpus_info;

/* ---------------------------------------------------------------- routing files */

/* Per layer and head: what the inference kernels run (a dua_layout_desc per layer follows from it). */
typedef struct dua_routing_head {
  int32_t depth; /* 0..D (D from seq_len, block, arity) */
  int32_t arity;
  int32_t block;
  int32_t window;
  int32_t sink;
  int32_t shift; /* block shift s */
} dua_routing_head;

typedef struct dua_routing {
  int32_t layers;
  int32_t heads;
  int32_t seq_len;
  int32_t causal;
  dua_routing_head *head; /* [layers * heads], row-major (layer, head) */
  int32_t content;        /* 1: content tree (the depths apply to paths from the checkpoint's router;
                           * file key "tree": "content"), 0: positional */
} dua_routing;

/* JSON file; written to a temporary name then renamed. Loading is strict: a missing, extra, wrong-typed
 * or out-of-range field, or a truncated file, gives DUA_ERROR_CORRUPT_FILE naming the entry. */
DUA_API dua_status dua_routing_save(const char *path, const dua_routing *routing, char *error,
                                    size_t error_size);
DUA_API dua_status dua_routing_load(const char *path, dua_routing *routing, char *error, size_t error_size);
/* Frees routing->head (NULL-safe) and zeroes the struct. */
DUA_API void dua_routing_free(dua_routing *routing);

/* ---------------------------------------------------------------- trainer */

typedef struct dua_trainer dua_trainer;

/* What one optimizer step did. */
typedef struct dua_train_stats {
  int64_t step;    /* steps completed after this one */
  int32_t phase;   /* 0 = soft gates (native) or dense, 1 = fixed depths through the hard kernels */
  float loss;      /* mean cross-entropy over the batch's scored positions */
  float accuracy;  /* argmax accuracy over the same positions */
  float lr, tau;   /* learning rate and gate temperature used */
  float grad_norm; /* global gradient norm before clipping */
  float density;   /* key blocks the kernels visited / blocks of dense causal attention, mean over layers */
  float expected_density; /* native soft phase: mean gate-expected density of token pairs; else = density */
  double seconds;         /* wall time of the step, including waiting for the device */
  float balance_loss;     /* content mode: the router's load-balancing loss (mean over layers, heads and
                           * levels; 1 = uniform); 0 otherwise */
} dua_train_stats;

/* Held-out evaluation, run with the hard routing exactly as the inference kernels run it. */
typedef struct dua_eval_result {
  double loss;     /* mean cross-entropy over scored test positions */
  double accuracy; /* argmax accuracy over them */
  double density;  /* key blocks visited / dense causal blocks, mean over layers */
  int64_t scored;  /* scored positions */
  double seconds;
} dua_eval_result;

/* A fresh model for config (validated; error names the bad field) on ctx; parameters from config->seed. */
DUA_API dua_status dua_trainer_create(dua_context *ctx, const dua_trainer_config *config, dua_trainer **out,
                                      char *error, size_t error_size);
/* As dua_trainer_create; corpus_path names the corpus file of DUA_TASK_TEXT (required for it, and refused
 * for any other task). dua_trainer_create is this with corpus_path NULL. */
DUA_API dua_status dua_trainer_create_with_corpus(dua_context *ctx, const dua_trainer_config *config,
                                                  const char *corpus_path, dua_trainer **out, char *error,
                                                  size_t error_size);
/* Resumes from a checkpoint written by dua_trainer_save: same model, optimizer state and step, so training
 * continues bit-identically on the same device. A corrupt or mismatched file is refused. A text checkpoint
 * reads the corpus path it records, which must still hold the same file (size and SHA-256). */
DUA_API dua_status dua_trainer_load(dua_context *ctx, const char *path, dua_trainer **out, char *error,
                                    size_t error_size);
/* As dua_trainer_load; a non-NULL corpus_path replaces the recorded corpus path of a text checkpoint (the
 * file moved; it must be the same file) and is refused for a checkpoint of another task. */
DUA_API dua_status dua_trainer_load_with_corpus(dua_context *ctx, const char *path, const char *corpus_path,
                                                dua_trainer **out, char *error, size_t error_size);
/* The corpus of a text trainer; DUA_ERROR_INVALID_ARGUMENT for another task. */
DUA_API dua_status dua_trainer_text_corpus(const dua_trainer *trainer, dua_text_corpus_info *info);
DUA_API dua_status dua_trainer_save(dua_trainer *trainer, const char *path, char *error, size_t error_size);
DUA_API void dua_trainer_destroy(dua_trainer *trainer);

DUA_API const dua_trainer_config *dua_trainer_get_config(const dua_trainer *trainer);
/* Steps completed so far. */
DUA_API int64_t dua_trainer_step_count(const dua_trainer *trainer);
/* Raises the total number of steps (to continue a finished run); must not be below the steps done. */
DUA_API dua_status dua_trainer_set_steps(dua_trainer *trainer, int32_t steps);
/* One optimizer step on the next training batch. stats may be NULL. */
DUA_API dua_status dua_trainer_step(dua_trainer *trainer, dua_train_stats *stats);
/* Evaluates the whole test set with the hard routing (dense mode: dense). */
DUA_API dua_status dua_trainer_evaluate(dua_trainer *trainer, dua_eval_result *result);
/* Paper mode's two evaluations of the held-out set (PAPER-NOTES.md: the paper reported only the first):
 * soft = dense heads with the token-tree bias and the evaluation gate 1[z > 0] (what the paper reports);
 * hard = the extracted routing (per head depth D if the mean sigmoid(z) over the test positions, measured in
 * the soft pass, is > 0.5, else 0; no bias) through the block-sparse kernels: what dua-run executes. The
 * extraction is stored: dua_trainer_routing, checkpoints and routing files carry it afterwards. */
typedef struct dua_paper_eval_result {
  dua_eval_result soft;
  dua_eval_result hard;
  double accuracy_change; /* hard.accuracy - soft.accuracy */
  double loss_change;     /* hard.loss - soft.loss */
  int32_t heads_sparse;   /* heads extracted to depth D */
  int32_t heads_total;
  int32_t reserved[6];
} dua_paper_eval_result;

/* Both evaluations (paper mode only, else DUA_ERROR_INVALID_ARGUMENT). dua_trainer_evaluate in paper mode
 * runs this and returns the hard result. */
DUA_API dua_status dua_trainer_evaluate_paper(dua_trainer *trainer, dua_paper_eval_result *result);
/* The hard routing the evaluation runs (the extracted depths); free with dua_routing_free. */
DUA_API dua_status dua_trainer_routing(const dua_trainer *trainer, dua_routing *routing);
/* Gate probabilities sigmoid(z) [layers][heads][D] (D = dua_trainer_tree_depth), for depth maps; zeros in
 * dense mode; paper mode: each head's mean sigmoid(z) of the last evaluation, repeated over the D levels. */
DUA_API int32_t dua_trainer_tree_depth(const dua_trainer *trainer);
DUA_API dua_status dua_trainer_gate_probs(const dua_trainer *trainer, float *probs);
/* Name of token id of the trainer's task ("?" if unknown); vocabulary size. */
DUA_API const char *dua_trainer_token_name(const dua_trainer *trainer, int32_t id);
DUA_API int32_t dua_trainer_vocab_size(const dua_trainer *trainer);

/* ---------------------------------------------------------------- inference */

/* A trained model loaded for inference: the parameters of a checkpoint written by dua_trainer_save (no
 * gradients, no optimizer state), the task it was trained on (its held-out test set and token names), and a
 * routing: per layer and head the depth the block-sparse kernels run. Every attention call runs the hard
 * routing through dua_attention_forward (full sequences, prefill) or dua_decode (generation), so what is
 * measured here is what the kernels execute. Like a dua_context, use a model from one thread at a time;
 * destroy it before its context. The learned position embedding limits every sequence to the checkpoint's
 * seq_len tokens: longer requests are refused (DUA_ERROR_INVALID_ARGUMENT). */
typedef struct dua_inference_model dua_inference_model;

/* Loads checkpoint_path. routing_path NULL: the checkpoint's hard routing, exactly what dua_trainer_evaluate
 * runs (the fixed depths, or before they are fixed the deepest gate that is on; dense mode: every head
 * dense). Otherwise a routing file (dua_routing_load; e.g. the routing.json dua-train writes, or an edited
 * copy): its layers, heads, seq_len, causal flag and every head's arity and block must match the checkpoint,
 * else DUA_ERROR_INVALID_ARGUMENT naming the mismatch; depth, window, sink and shift come from the file
 * (window, sink and shift must be the same for the heads of a layer, which share one layout). A damaged or
 * foreign file gives DUA_ERROR_CORRUPT_FILE, a missing one DUA_ERROR_IO; error receives the message. */
DUA_API dua_status dua_inference_model_load(dua_context *ctx, const char *checkpoint_path,
                                            const char *routing_path, dua_inference_model **out, char *error,
                                            size_t error_size);
/* As dua_inference_model_load; a non-NULL corpus_path replaces the corpus path a text checkpoint records
 * (the same file, moved; see "text corpus") and is refused for a checkpoint of another task. */
DUA_API dua_status dua_inference_model_load_with_corpus(dua_context *ctx, const char *checkpoint_path,
                                                        const char *routing_path, const char *corpus_path,
                                                        dua_inference_model **out, char *error,
                                                        size_t error_size);
/* The corpus of a text model; DUA_ERROR_INVALID_ARGUMENT for another task. */
DUA_API dua_status dua_inference_text_corpus(const dua_inference_model *model, dua_text_corpus_info *info);
/* NULL-safe. */
DUA_API void dua_inference_model_destroy(dua_inference_model *model);

/* The checkpoint's configuration (task, model shape, seq_len...) and optimizer steps done. */
DUA_API const dua_trainer_config *dua_inference_config(const dua_inference_model *model);
DUA_API int64_t dua_inference_step_count(const dua_inference_model *model);
/* A copy of the routing the model runs; free with dua_routing_free. */
DUA_API dua_status dua_inference_routing(const dua_inference_model *model, dua_routing *routing);
/* Tree depth D of the routing (every head: 0 = dense .. D = block-diagonal). */
DUA_API int32_t dua_inference_tree_depth(const dua_inference_model *model);
/* Vocabulary size; name of a token id ("?" if unknown); id of a name (-1 if none). */
DUA_API int32_t dua_inference_vocab_size(const dua_inference_model *model);
DUA_API const char *dua_inference_token_name(const dua_inference_model *model, int32_t id);
DUA_API int32_t dua_inference_token_id(const dua_inference_model *model, const char *name);
/* The task's held-out test set: size, and example `index` as seq_len tokens and targets (targets are -1
 * where nothing is scored, else the expected token). */
DUA_API int32_t dua_inference_test_size(const dua_inference_model *model);
DUA_API dua_status dua_inference_test_example(const dua_inference_model *model, int32_t index,
                                              int32_t *tokens, int32_t *targets);
/* Key blocks the attention visits per layer, as a fraction of dense causal attention's (dua_eval_result's
 * density is their mean): per_layer [layers]. dense = 1: every head dense (1.0 everywhere). */
DUA_API dua_status dua_inference_density(dua_inference_model *model, int dense, double *per_layer);

/* Logits of `batch` sequences of `tokens_per_seq` tokens (1..seq_len): tokens [batch][tokens_per_seq] host
 * ids in [0, vocab), logits [batch][tokens_per_seq][vocab] (or NULL). Position t's logits predict token t + 1
 * and depend on tokens 0..t only (causal). Sequences shorter than seq_len are padded (token 0) to seq_len
 * for the attention layouts, whose tree is defined over seq_len; the padding cannot reach earlier positions.
 * dense = 1 runs every head dense instead of the routing. Blocking. */
DUA_API dua_status dua_inference_forward(dua_inference_model *model, const int32_t *tokens, int32_t batch,
                                         int32_t tokens_per_seq, int dense, float *logits);

/* Loss and accuracy on the whole held-out test set, in batches of the checkpoint's batch size, with the
 * model's routing (dense = 1: every head dense). With the checkpoint's routing the numbers are bit for bit
 * those of dua_trainer_evaluate on the same checkpoint and device. */
DUA_API dua_status dua_inference_evaluate(dua_inference_model *model, int dense, dua_eval_result *result);

/* Median wall times over `reps` repetitions (after one warm-up) on one batch of test examples (the
 * checkpoint's batch size), each ended by dua_context_finish: the whole forward up to the logits, and the
 * attention calls alone (one dua_attention_forward per layer on the same activations). */
typedef struct dua_inference_timing {
  double forward_seconds;   /* per batch */
  double attention_seconds; /* per batch, all layers */
  int32_t batch, reps;
} dua_inference_timing;

DUA_API dua_status dua_inference_time(dua_inference_model *model, int dense, int32_t reps,
                                      dua_inference_timing *timing);

/* Generation. temperature 0 = greedy (argmax, lowest id on ties); > 0 samples softmax(logits / temperature)
 * among the top_k most likely tokens (0 = all), from a stream that is a pure function of seed. dense = 1 runs
 * every head dense (prefill and decode) instead of the routing. */
typedef struct dua_generate_options {
  float temperature;   /* >= 0 */
  int32_t top_k;       /* 0..vocab */
  uint64_t seed;       /* sampling stream */
  int32_t dense;       /* 0 or 1 */
  int32_t reserved[7]; /* zero */
} dua_generate_options;

/* temperature 0 (greedy), top_k 0, seed 1, dense 0. */
DUA_API void dua_generate_options_init(dua_generate_options *options);

typedef struct dua_generate_stats {
  int32_t prompt_tokens, new_tokens;
  int32_t decode_steps;     /* new_tokens - 1: the last new token is not fed back */
  double prefill_seconds;   /* prompt through the block-sparse forward + K/V into the cache + first token */
  double decode_seconds;    /* the decode steps (wall, each ends with its logits on the host) */
  double tokens_per_second; /* new_tokens / (prefill_seconds + decode_seconds) */
  double decode_tokens_per_second; /* decode_steps / decode_seconds (0 without decode steps) */
  double kv_bytes_per_token;       /* K/V bytes dua_decode read per decode step, all layers, mean */
  double dense_kv_bytes_per_token; /* the same for dense attention: every key of the context */
  double density; /* the routing's mean block density (dua_inference_density); content routing: that of
                   * the generated sequence's own layouts over the blocks it reached */
} dua_generate_stats;

/* Continues prompt [prompt_len] (1..seq_len tokens) by n_new >= 1 tokens, prompt_len + n_new <= seq_len:
 * the prompt goes through the block-sparse forward (dua_attention_forward with each layer's layout) while
 * each layer's K/V is written into a paged dua_kv_cache (fp32, 16-token pages); then each new token is
 * fed back through dua_decode, one token per step, under the same routing. tokens [n_new] receives the new
 * tokens; logits [n_new][vocab] (or NULL) the logits each was drawn from; stats may be NULL. K/V bytes are
 * counted from the layout: the 16-token units of the context holding a key visible to the new token's
 * query (what the decode kernel reads), times head_dim x 4 bytes x 2 (K and V), summed over heads and
 * layers. Blocking. */
DUA_API dua_status dua_inference_generate(dua_inference_model *model, const int32_t *prompt,
                                          int32_t prompt_len, int32_t n_new,
                                          const dua_generate_options *options, int32_t *tokens, float *logits,
                                          dua_generate_stats *stats);

#ifdef __cplusplus
}
#endif

#endif /* DUA_TRAIN_H */
