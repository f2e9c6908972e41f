/* trainer.c: the training loop behind dua_trainer_* (DESIGN.md section 7): learning-rate and temperature
 * schedules, native-mode gates (soft level bias, skipping as gates polarize, then fixed depths), paper mode
 * (paper.h: dense heads with the gated token-tree bias; soft and hard evaluations, extraction to {0, D}),
 * gradient clipping, AdamW, evaluation with the hard routing, checkpoints and routing extraction. */
#include "train/checkpoint.h"
#include "train/content.h"
#include "train/gates.h"
#include "train/model.h"
#include "train/paper.h"
#include "train/task.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DUA_CKPT_STATE_VERSION 1

struct dua_trainer {
  dua_context *ctx;
  dua_trainer_config cfg;
  dua_task *task;
  dua_model *model;
  dua_loader *loader;
  int L, H, D;
  int64_t step;
  int32_t phase;           /* 0 soft / dense, 1 fixed depths */
  int32_t *fixed_depths;   /* [L][H] once phase == 1 */
  float *z, *zm, *zv, *dz; /* gate logits and their AdamW moments, [L][H][D] */
  float *x, *beta, *dbeta; /* [L][H][D], [L][H][D + 1], [L][H][D + 1] */
  /* the budget's gates with density_estimate deterministic or extracted (noise-free sigmoid(z / tau)), same
   * shapes */
  float *bx, *bbeta, *bdbeta;
  /* density_estimate extracted: per layer the block-level fractions (gates.h, dua_gates_block_fractions) of
   * the positional tree (native, fixed) or of the step's argmax paths (content): [L][H][D + 1] and [L][H] */
  double *bfrac, *bbase;
  double *frac;        /* [L][D + 1] causal pair fractions per lca level */
  double dense_blocks; /* visited-block density of dense causal attention */
  int32_t *tokens, *targets;
  dua_layer_routing *routing; /* [L] */
  dua_content *content;       /* content mode: the routers (content.h); NULL otherwise */
  double *cfrac;              /* content mode: [L][H][D + 1] lca fractions of the paths the budget measures */
  float balance;              /* content mode: the last step's balance loss */
  dua_paper *paper;           /* paper mode: controller, gates, amplitudes; extraction in fixed_depths */
  float *paper_gate_mean;     /* [L][H] mean sigmoid(z) of the last soft evaluation (0.5 before any) */
};

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void put_error(char *error, size_t size, const char *fmt, const char *text) {
  if (error && size)
    snprintf(error, size, fmt, text);
}

void dua_trainer_destroy(dua_trainer *t) {
  if (!t)
    return;
  dua_loader_destroy(t->loader);
  dua_model_destroy(t->model);
  dua_content_destroy(t->content);
  free(t->cfrac);
  dua_task_destroy(t->task);
  free(t->fixed_depths);
  free(t->z);
  free(t->zm);
  free(t->zv);
  free(t->dz);
  free(t->x);
  free(t->beta);
  free(t->dbeta);
  free(t->bx);
  free(t->bbeta);
  free(t->bdbeta);
  free(t->bfrac);
  free(t->bbase);
  free(t->frac);
  free(t->tokens);
  free(t->targets);
  free(t->routing);
  dua_paper_destroy(t->paper);
  free(t->paper_gate_mean);
  free(t);
}

/* Visited-block density of dense causal attention (the denominator of every reported density). */
static dua_status dense_block_density(const dua_trainer_config *c, double *out) {
  dua_layout_desc desc;
  memset(&desc, 0, sizeof desc);
  desc.seq_len = c->seq_len, desc.block = c->block, desc.batch = 1, desc.heads = 1, desc.arity = c->arity;
  desc.causal = 1;
  dua_layout *l = NULL;
  dua_status st = dua_layout_create(&desc, &l, NULL, 0);
  dua_layout_density dens;
  if (st == DUA_SUCCESS)
    st = dua_layout_density_get(l, &dens);
  dua_layout_destroy(l);
  if (st == DUA_SUCCESS)
    *out = dens.blocks;
  return st;
}

/* A fresh trainer on corpus (NULL for the synthetic tasks). */
static dua_status create(dua_context *ctx, const dua_trainer_config *config, const dua_task_corpus *corpus,
                         dua_trainer **out, char *error, size_t error_size) {
  if (!ctx || !config || !out) {
    put_error(error, error_size, "%s", "dua_trainer_create: ctx, config and out must not be NULL");
    return DUA_ERROR_INVALID_ARGUMENT;
  }
  dua_status st = dua_trainer_config_validate(config, error, error_size);
  if (st != DUA_SUCCESS)
    return st;
  if (config->heads > 64 || config->layers > 64) {
    put_error(error, error_size, "%s", "dua_trainer_create: at most 64 layers and 64 heads per layer");
    return DUA_ERROR_UNSUPPORTED;
  }
  dua_trainer *t = calloc(1, sizeof *t);
  if (!t)
    return DUA_ERROR_OUT_OF_MEMORY;
  t->ctx = ctx;
  t->cfg = *config;
  st = dua_task_create(config, corpus, &t->task, error, error_size);
  if (st == DUA_SUCCESS) {
    st = dua_model_create(ctx, config, dua_task_vocab_size(t->task), &t->model);
    if (st != DUA_SUCCESS)
      put_error(error, error_size, "model: %s", dua_context_last_error(ctx));
  }
  if (st != DUA_SUCCESS) {
    dua_trainer_destroy(t);
    return st;
  }
  const int L = t->L = config->layers, H = t->H = config->heads, D = t->D = t->model->tree_depth;
  const size_t LH = (size_t)L * H, R = (size_t)config->batch * config->seq_len;
  t->fixed_depths = calloc(LH, sizeof *t->fixed_depths);
  t->z = calloc(LH * (D + 1), sizeof *t->z);
  t->zm = calloc(LH * (D + 1), sizeof *t->zm);
  t->zv = calloc(LH * (D + 1), sizeof *t->zv);
  t->dz = calloc(LH * (D + 1), sizeof *t->dz);
  t->x = calloc(LH * (D + 1), sizeof *t->x);
  t->beta = calloc(LH * (D + 1), sizeof *t->beta);
  t->dbeta = calloc(LH * (D + 1), sizeof *t->dbeta);
  t->bx = calloc(LH * (D + 1), sizeof *t->bx);
  t->bbeta = calloc(LH * (D + 1), sizeof *t->bbeta);
  t->bdbeta = calloc(LH * (D + 1), sizeof *t->bdbeta);
  t->bfrac = calloc(LH * (D + 1), sizeof *t->bfrac);
  t->bbase = calloc(LH, sizeof *t->bbase);
  t->frac = calloc((size_t)L * (D + 1), sizeof *t->frac);
  t->tokens = malloc(R * sizeof *t->tokens);
  t->targets = malloc(R * sizeof *t->targets);
  t->routing = calloc((size_t)L, sizeof *t->routing);
  if (!t->fixed_depths || !t->z || !t->zm || !t->zv || !t->dz || !t->x || !t->beta || !t->dbeta || !t->frac ||
      !t->bx || !t->bbeta || !t->bdbeta || !t->bfrac || !t->bbase || !t->tokens || !t->targets ||
      !t->routing) {
    dua_trainer_destroy(t);
    return DUA_ERROR_OUT_OF_MEMORY;
  }
  for (size_t i = 0; i < LH * D; i++)
    t->z[i] = config->gate_init;
  if (config->mode == DUA_ROUTING_PAPER) {
    t->paper_gate_mean = malloc(LH * sizeof *t->paper_gate_mean);
    st = t->paper_gate_mean ? dua_paper_create(ctx, t->model->ops, config, &t->paper)
                            : DUA_ERROR_OUT_OF_MEMORY;
    if (st != DUA_SUCCESS) {
      put_error(error, error_size, "paper-mode controller: %s", dua_context_last_error(ctx));
      dua_trainer_destroy(t);
      return st;
    }
    for (size_t i = 0; i < LH; i++)
      t->paper_gate_mean[i] = 0.5f;
    t->model->paper = t->paper;
  }
  const int nb = (config->seq_len + config->block - 1) / config->block;
  for (int l = 0; l < L; l++) {
    dua_gates_lca_fractions(config->seq_len, config->block, config->arity, D, dua_layer_shift(config, l),
                            t->frac + (size_t)l * (D + 1));
    if (config->density_estimate == DUA_DENSITY_EXTRACTED) /* the only reader (content: per step instead) */
      dua_gates_block_fractions(NULL, 1, H, nb, D, config->arity, dua_layer_shift(config, l), config->block,
                                config->window, config->sink, t->bfrac + (size_t)l * H * (D + 1),
                                t->bbase + (size_t)l * H);
  }
  if ((st = dense_block_density(config, &t->dense_blocks)) != DUA_SUCCESS) {
    dua_trainer_destroy(t);
    return st;
  }
  if (config->mode == DUA_ROUTING_CONTENT && D > 0) {
    t->cfrac = calloc((size_t)L * H * (D + 1), sizeof *t->cfrac);
    if (!t->cfrac || (st = dua_content_create(config, D, config->batch, 1, &t->content)) != DUA_SUCCESS) {
      dua_trainer_destroy(t);
      return DUA_ERROR_OUT_OF_MEMORY;
    }
    t->model->route = dua_content_route;
    t->model->route_user = t->content;
    t->model->want_tiles = 1;
  }
  dua_device_info info;
  int numa = -1;
  if (dua_context_device_info(ctx, &info) == DUA_SUCCESS)
    numa = info.numa_node;
  if ((st = dua_loader_create(t->task, config->batch, numa, 0, &t->loader)) != DUA_SUCCESS) {
    put_error(error, error_size, "%s", "could not start the batch loader thread");
    dua_trainer_destroy(t);
    return st;
  }
  *out = t;
  return DUA_SUCCESS;
}

dua_status dua_trainer_create_with_corpus(dua_context *ctx, const dua_trainer_config *config,
                                          const char *corpus_path, dua_trainer **out, char *error,
                                          size_t error_size) {
  dua_task_corpus corpus;
  memset(&corpus, 0, sizeof corpus);
  corpus.path = corpus_path;
  return create(ctx, config, &corpus, out, error, error_size);
}

dua_status dua_trainer_create(dua_context *ctx, const dua_trainer_config *config, dua_trainer **out,
                              char *error, size_t error_size) {
  return create(ctx, config, NULL, out, error, error_size);
}

dua_status dua_trainer_text_corpus(const dua_trainer *t, dua_text_corpus_info *info) {
  return t ? dua_task_text_corpus(t->task, info) : DUA_ERROR_INVALID_ARGUMENT;
}

const dua_trainer_config *dua_trainer_get_config(const dua_trainer *t) {
  return t ? &t->cfg : NULL;
}
int64_t dua_trainer_step_count(const dua_trainer *t) {
  return t ? t->step : 0;
}
int32_t dua_trainer_tree_depth(const dua_trainer *t) {
  return t ? t->D : 0;
}
const char *dua_trainer_token_name(const dua_trainer *t, int32_t id) {
  return t ? dua_task_token_name(t->task, id) : "?";
}
int32_t dua_trainer_vocab_size(const dua_trainer *t) {
  return t ? dua_task_vocab_size(t->task) : 0;
}

dua_status dua_trainer_set_steps(dua_trainer *t, int32_t steps) {
  if (!t || steps < 1 || steps < t->step)
    return dua_fail(t ? t->ctx : NULL, DUA_ERROR_INVALID_ARGUMENT,
                    "dua_trainer_set_steps: steps = %d is below the %lld steps already done", steps,
                    t ? (long long)t->step : 0LL);
  t->cfg.steps = steps;
  return DUA_SUCCESS;
}

static float learning_rate(const dua_trainer_config *c, int64_t step) {
  if (step < c->warmup)
    return c->lr * (float)(step + 1) / (float)c->warmup;
  double span = (double)(c->steps - c->warmup), prog = span > 0 ? (double)(step - c->warmup) / span : 1.0;
  if (prog > 1.0)
    prog = 1.0;
  double lo = (double)c->lr * c->lr_min, hi = c->lr;
  double f = c->decay == DUA_DECAY_COSINE ? 0.5 * (1.0 + cos(3.141592653589793 * prog)) : 1.0 - prog;
  return (float)(lo + (hi - lo) * f);
}

static float temperature(const dua_trainer_config *c, int64_t step) {
  double end = (double)c->tau_frac * c->steps, prog = end > 0 ? (double)step / end : 1.0;
  if (prog > 1.0)
    prog = 1.0;
  return (float)(c->tau_start + (c->tau_end - c->tau_start) * prog);
}

/* native and content mode both learn per-head gates (content adds the router) */
static int native(const dua_trainer *t) {
  return (t->cfg.mode == DUA_ROUTING_NATIVE || t->cfg.mode == DUA_ROUTING_CONTENT) && t->D > 0;
}

static int paper(const dua_trainer *t) {
  return t->cfg.mode == DUA_ROUTING_PAPER;
}

/* Hard depths: fixed ones in phase 1, else the deepest gate that is on; paper mode: the last extraction. */
static void hard_depths(const dua_trainer *t, int32_t *depths) {
  for (int l = 0; l < t->L; l++)
    for (int h = 0; h < t->H; h++) {
      size_t i = (size_t)l * t->H + h;
      depths[i] = paper(t)     ? t->fixed_depths[i]
                  : !native(t) ? 0
                  : t->phase   ? t->fixed_depths[i]
                               : dua_gates_extract_depth(t->z + i * t->D, t->D);
    }
}

static double layouts_density(const dua_trainer *t) {
  double sum = 0.0;
  for (int l = 0; l < t->L; l++) {
    dua_layout_density d;
    if (t->model->layouts[l] && dua_layout_density_get(t->model->layouts[l], &d) == DUA_SUCCESS)
      sum += d.blocks;
  }
  return sum / t->L / t->dense_blocks;
}

#define TRY(call)                                                                                            \
  do {                                                                                                       \
    dua_status st_ = (call);                                                                                 \
    if (st_ != DUA_SUCCESS)                                                                                  \
      return st_;                                                                                            \
  } while (0)

/* AdamW on the host gate logits (no weight decay). */
static void gates_update(dua_trainer *t, float lr, int step, float grad_scale) {
  const dua_trainer_config *c = &t->cfg;
  const size_t n = (size_t)t->L * t->H * t->D;
  const double b1c = 1.0 - pow(c->beta1, step), b2c = 1.0 - pow(c->beta2, step);
  for (size_t i = 0; i < n; i++) {
    float g = t->dz[i] * grad_scale;
    t->zm[i] = c->beta1 * t->zm[i] + (1.0f - c->beta1) * g;
    t->zv[i] = c->beta2 * t->zv[i] + (1.0f - c->beta2) * g * g;
    t->z[i] -= (float)(lr * c->gate_lr_scale * ((t->zm[i] / b1c) / (sqrt(t->zv[i] / b2c) + c->adam_eps)));
  }
}

/* Whether the density budget measures the noise-free gates (config density_estimate deterministic or
 * extracted): their level biases are t->bbeta and its gradient goes to t->bdbeta, else the step's sampled
 * gates' t->beta and t->dbeta. */
static int budget_deterministic(const dua_trainer *t) {
  return t->cfg.density_estimate != DUA_DENSITY_SAMPLED;
}

/* Density of layer l as the budget measures it (config density_estimate), with weight > 0 adding the budget
 * penalty's gradient to the level biases when it is above target. Sampled and deterministic: the expected
 * density sum_k frac[k] exp(beta[k]) of the gates over the token-pair lca fractions (native: the positional
 * tree's, content: those of the paths this step drew or of their argmax), and its gradient. Extracted: the
 * visited-block density (what dua_layout_density and evaluation report, window and sink included) of the
 * depths extraction would fix now (the deepest gate with z > 0) over the positional tree or the argmax paths,
 * mean over heads of base[h] + sum_{k >= depth} frac[h][k]; its gradient, when above target, is that of the
 * noise-free gates' base[h] + sum_k frac[h][k] exp(beta[k]) (straight-through). */
static double layer_density(void *user, int l, float weight, float target) {
  dua_trainer *t = user;
  const int H = t->cfg.heads, D = t->D;
  const size_t g = (size_t)l * H;
  const float *beta = (budget_deterministic(t) ? t->bbeta : t->beta) + g * (D + 1);
  float *dbeta = weight > 0 ? (budget_deterministic(t) ? t->bdbeta : t->dbeta) + g * (D + 1) : NULL;
  if (t->cfg.density_estimate == DUA_DENSITY_EXTRACTED) {
    const double *frac = t->bfrac + g * (D + 1), *base = t->bbase + g; /* per head, kernel units */
    double hard = 0.0;
    for (int h = 0; h < H; h++) {
      hard += base[h] / H;
      for (int k = dua_gates_extract_depth(t->z + (g + h) * D, D); k <= D; k++)
        hard += frac[h * (D + 1) + k] / H;
    }
    if (dbeta && hard > target) /* forced on (target -1 is below any density); the base has no gradient */
      dua_router_density(beta, frac, H, D, weight, -1.0f, dbeta);
    return hard;
  }
  if (t->content)
    return dua_router_density(beta, t->cfrac + g * (D + 1), H, D, weight, target, dbeta);
  return dua_gates_density(beta, t->frac + (size_t)l * (D + 1), H, D, weight, target, dbeta);
}

dua_status dua_trainer_step(dua_trainer *t, dua_train_stats *stats) {
  if (!t)
    return DUA_ERROR_INVALID_ARGUMENT;
  if (t->step >= t->cfg.steps)
    return dua_fail(t->ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "dua_trainer_step: all %d steps are done (raise them with dua_trainer_set_steps)",
                    t->cfg.steps);
  const double t0 = now_seconds();
  const dua_trainer_config *c = &t->cfg;
  const int L = t->L, H = t->H, D = t->D;
  const size_t LH = (size_t)L * H;
  const float lr = learning_rate(c, t->step), tau = temperature(c, t->step);
  if (native(t) && !t->phase && t->step >= (int64_t)((double)c->hard_frac * c->steps)) {
    hard_depths(t, t->fixed_depths); /* the soft phase ends: depths are fixed from here on */
    t->phase = 1;
  }
  const int soft = native(t) && !t->phase;
  int32_t depths[64 * 64];
  double expected = 0.0;
  if (soft) {
    for (int l = 0; l < L; l++) {
      size_t g = (size_t)l * H;
      dua_gates_sample(t->z + g * D, H, D, tau, c->seed, (uint64_t)t->step, l, 1, t->x + g * D,
                       t->beta + g * (D + 1));
      for (int h = 0; h < H; h++)
        depths[g + h] = dua_gates_skip_depth(t->beta + (g + h) * (D + 1), D, c->skip_bias);
      if (budget_deterministic(t))
        dua_gates_sample(t->z + g * D, H, D, tau, c->seed, (uint64_t)t->step, l, 0, t->bx + g * D,
                         t->bbeta + g * (D + 1));
    }
    if (!t->content)
      for (int l = 0; l < L; l++)
        expected += layer_density(t, l, 0.0f, 0.0f) / L;
  } else if (paper(t)) { /* every head dense while training: the bias is soft, nothing is skipped */
    memset(depths, 0, LH * sizeof *depths);
    t->paper->gate = DUA_PAPER_TRAIN;
    t->paper->tau = tau;
    t->paper->seed = c->seed;
    t->paper->step = (uint64_t)t->step;
    t->paper->collect_rows = 0;
    TRY(dua_paper_zero_grads(t->paper));
  } else {
    hard_depths(t, depths);
  }
  for (int l = 0; l < L; l++) {
    memcpy(t->routing[l].depths, depths + (size_t)l * H, (size_t)H * sizeof *depths);
    t->routing[l].bias = soft ? t->beta + (size_t)l * H * (D + 1) : NULL;
  }
  if (t->content) { /* soft phase: sampled paths (Gumbel, tau); fixed depths: argmax, router frozen */
    t->content->B = c->batch;
    t->content->noise = soft;
    t->content->tau = tau;
    t->content->step = (uint64_t)t->step;
  }
  TRY(dua_loader_next(t->loader, (uint64_t)t->step, t->tokens, t->targets));
  double loss_sum = 0.0;
  int count = 0, correct = 0;
  TRY(dua_model_forward(t->model, t->tokens, t->targets, t->routing, &loss_sum, &count, &correct));
  if (t->content && soft)
    for (int l = 0; l < L; l++) { /* the density budget over the paths this step drew, or their argmax */
      double *f = t->cfrac + (size_t)l * H * (D + 1);
      if (c->density_estimate == DUA_DENSITY_EXTRACTED)
        dua_gates_block_fractions(dua_content_argmax(t->content, l), c->batch, H, t->content->nb, D, c->arity,
                                  0, c->block, c->window, c->sink, t->bfrac + (size_t)l * H * (D + 1),
                                  t->bbase + (size_t)l * H);
      else if (budget_deterministic(t))
        dua_content_argmax_lca_fractions(t->content, l, f);
      else
        dua_content_lca_fractions(t->content, l, f);
      expected += layer_density(t, l, 0.0f, 0.0f) / L;
    }
  TRY(dua_model_backward(t->model, soft ? t->dbeta : NULL));
  float norm = 0.0f;
  TRY(dua_model_grad_norm(t->model, &norm));
  if (soft) {
    memset(t->dz, 0, LH * D * sizeof *t->dz);
    double ss = (double)norm * norm;
    if (t->content) { /* router gradient from the block-pair gradients, before the budget touches dbeta */
      t->balance = (float)dua_content_backward(t->content, t->model->tiles_host, t->beta, c->balance_weight,
                                               c->balance_scope);
      ss += dua_content_grad_sumsq(t->content);
    }
    if (budget_deterministic(t))
      memset(t->bdbeta, 0, LH * (D + 1) * sizeof *t->bdbeta);
    dua_density_budget(c->density_scope, L, c->density_weight, c->density_target, layer_density, t);
    for (int l = 0; l < L; l++) {
      size_t g = (size_t)l * H;
      dua_gates_backward(t->x + g * D, t->dbeta + g * (D + 1), H, D, tau, t->dz + g * D);
      if (budget_deterministic(t)) /* the budget's gradient through the noise-free gates */
        dua_gates_backward(t->bx + g * D, t->bdbeta + g * (D + 1), H, D, tau, t->dz + g * D);
    }
    for (size_t i = 0; i < LH * D; i++)
      ss += (double)t->dz[i] * t->dz[i];
    norm = (float)sqrt(ss);
  } else if (t->content) {
    t->balance = (float)dua_content_balance(t->content, c->balance_scope);
  }
  if (paper(t)) {
    double ss = 0.0;
    TRY(dua_paper_grad_sumsq(t->paper, &ss));
    norm = (float)sqrt((double)norm * norm + ss);
  }
  float scale = (c->grad_clip > 0 && norm > c->grad_clip) ? c->grad_clip / norm : 1.0f;
  if (!isfinite(norm))
    return dua_fail(t->ctx, DUA_ERROR_INTERNAL, "step %lld: gradient norm is %g (diverged; lower --lr)",
                    (long long)t->step, (double)norm);
  TRY(dua_model_update(t->model, lr, (int)t->step + 1, scale));
  if (soft)
    gates_update(t, lr, (int)t->step + 1, scale);
  if (soft && t->content)
    dua_content_update(t->content, c, lr, (int)t->step + 1, scale);
  if (paper(t)) {
    TRY(dua_paper_update(t->paper, c, lr, (int)t->step + 1, scale));
    t->paper->gate = DUA_PAPER_OFF;
  }
  t->step++;
  if (stats) {
    memset(stats, 0, sizeof *stats);
    stats->step = t->step;
    stats->phase = t->phase;
    stats->loss = count ? (float)(loss_sum / count) : 0.0f;
    stats->accuracy = count ? (float)correct / (float)count : 0.0f;
    stats->lr = lr;
    stats->tau = tau;
    stats->grad_norm = norm;
    stats->density = (float)layouts_density(t);
    stats->expected_density = soft ? (float)expected : stats->density;
    stats->seconds = now_seconds() - t0;
    stats->balance_loss = t->content ? t->balance : 0.0f;
  }
  return DUA_SUCCESS;
}

/* One pass over the test set with these depths (and whatever bias the model's paper gate adds). */
static dua_status eval_pass(dua_trainer *t, const int32_t *depths, dua_eval_result *r) {
  const double t0 = now_seconds();
  const int B = t->cfg.batch, S = t->cfg.seq_len, n = dua_task_test_size(t->task);
  for (int l = 0; l < t->L; l++) {
    memcpy(t->routing[l].depths, depths + (size_t)l * t->H, (size_t)t->H * sizeof *depths);
    t->routing[l].bias = NULL;
  }
  if (t->content) { /* the router's argmax paths, as inference computes them */
    t->content->B = B;
    t->content->noise = 0;
  }
  double loss = 0.0;
  double density_sum = 0.0;
  int batches = 0;
  int64_t scored = 0, right = 0;
  for (int first = 0; first < n; first += B) {
    int count = n - first < B ? n - first : B;
    dua_task_test_examples(t->task, first, count, t->tokens, t->targets);
    for (size_t i = (size_t)count * S; i < (size_t)B * S; i++) { /* pad a short last batch */
      t->tokens[i] = 0;
      t->targets[i] = DUA_IGNORE;
    }
    double ls = 0.0;
    int c = 0, ok = 0;
    if (t->paper) /* extraction statistics over the real examples' positions, not the padding */
      t->paper->collect_rows = t->paper->gate == DUA_PAPER_EVAL_GATE ? count * S : 0;
    TRY(dua_model_forward(t->model, t->tokens, t->targets, t->routing, &ls, &c, &ok));
    loss += ls, scored += c, right += ok;
    density_sum += layouts_density(t); /* content layouts differ per batch */
    batches++;
  }
  memset(r, 0, sizeof *r);
  r->loss = scored ? loss / (double)scored : 0.0;
  r->accuracy = scored ? (double)right / (double)scored : 0.0;
  r->density = t->content && batches ? density_sum / batches : layouts_density(t);
  r->scored = scored;
  r->seconds = now_seconds() - t0;
  return DUA_SUCCESS;
}

dua_status dua_trainer_evaluate_paper(dua_trainer *t, dua_paper_eval_result *r) {
  if (!t || !r)
    return DUA_ERROR_INVALID_ARGUMENT;
  if (!paper(t))
    return dua_fail(t->ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "dua_trainer_evaluate_paper: the trainer's mode is %d, not DUA_ROUTING_PAPER (2)",
                    t->cfg.mode);
  const size_t LH = (size_t)t->L * t->H;
  int32_t depths[64 * 64];
  memset(r, 0, sizeof *r);
  /* (a) the paper's evaluation: dense heads, token-tree bias with the gate 1[z > 0] */
  memset(depths, 0, LH * sizeof *depths);
  memset(t->paper->gate_sum, 0, LH * sizeof *t->paper->gate_sum);
  t->paper->gate_count = 0;
  t->paper->gate = DUA_PAPER_EVAL_GATE;
  dua_status st = eval_pass(t, depths, &r->soft);
  t->paper->gate = DUA_PAPER_OFF;
  t->paper->collect_rows = 0;
  if (st != DUA_SUCCESS)
    return st;
  /* extraction: depth D (block-diagonal) where the mean sigmoid(z) over the test positions is > 0.5 */
  r->heads_total = (int32_t)LH;
  for (size_t i = 0; i < LH; i++) {
    double mean = t->paper->gate_count ? t->paper->gate_sum[i] / (double)t->paper->gate_count : 0.0;
    t->paper_gate_mean[i] = (float)mean;
    t->fixed_depths[i] = mean > 0.5 ? t->D : 0;
    r->heads_sparse += t->fixed_depths[i] > 0;
  }
  /* (b) the extracted hard routing, no bias, through the block-sparse kernels (what dua-run runs) */
  hard_depths(t, depths);
  if ((st = eval_pass(t, depths, &r->hard)) != DUA_SUCCESS)
    return st;
  r->accuracy_change = r->hard.accuracy - r->soft.accuracy;
  r->loss_change = r->hard.loss - r->soft.loss;
  return DUA_SUCCESS;
}

dua_status dua_trainer_evaluate(dua_trainer *t, dua_eval_result *r) {
  if (!t || !r)
    return DUA_ERROR_INVALID_ARGUMENT;
  if (paper(t)) {
    dua_paper_eval_result pr;
    dua_status st = dua_trainer_evaluate_paper(t, &pr);
    if (st == DUA_SUCCESS)
      *r = pr.hard;
    return st;
  }
  int32_t depths[64 * 64];
  hard_depths(t, depths);
  return eval_pass(t, depths, r);
}

dua_status dua_trainer_routing(const dua_trainer *t, dua_routing *routing) {
  if (!t || !routing)
    return DUA_ERROR_INVALID_ARGUMENT;
  memset(routing, 0, sizeof *routing);
  routing->head = calloc((size_t)t->L * t->H, sizeof *routing->head);
  if (!routing->head)
    return DUA_ERROR_OUT_OF_MEMORY;
  int32_t depths[64 * 64];
  hard_depths(t, depths);
  routing->layers = t->L, routing->heads = t->H, routing->seq_len = t->cfg.seq_len, routing->causal = 1;
  routing->content = t->cfg.mode == DUA_ROUTING_CONTENT;
  for (int l = 0; l < t->L; l++)
    for (int h = 0; h < t->H; h++) {
      dua_routing_head *rh = &routing->head[(size_t)l * t->H + h];
      rh->depth = depths[(size_t)l * t->H + h];
      rh->arity = t->cfg.arity;
      rh->block = t->cfg.block;
      rh->window = t->cfg.window;
      rh->sink = t->cfg.sink;
      rh->shift = dua_layer_shift(&t->cfg, l);
    }
  return DUA_SUCCESS;
}

dua_status dua_trainer_gate_probs(const dua_trainer *t, float *probs) {
  if (!t || !probs)
    return DUA_ERROR_INVALID_ARGUMENT;
  const size_t n = (size_t)t->L * t->H * t->D;
  for (size_t i = 0; i < n; i++)
    probs[i] = native(t)  ? 1.0f / (1.0f + expf(-t->z[i]))
               : paper(t) ? t->paper_gate_mean[i / (size_t)(t->D ? t->D : 1)]
                          : 0.0f;
  return DUA_SUCCESS;
}

/* ---------------------------------------------------------------- checkpoints */

/* "state" section: format version, step, phase, fixed depths [L][H]. */
typedef struct state_header {
  int64_t version, step, phase, entries;
} state_header;

dua_status dua_trainer_save(dua_trainer *t, const char *path, char *error, size_t error_size) {
  if (!t || !path) {
    put_error(error, error_size, "%s", "dua_trainer_save: trainer and path must not be NULL");
    return DUA_ERROR_INVALID_ARGUMENT;
  }
  dua_model *m = t->model;
  const size_t P = m->num_params * 4, G = (size_t)t->L * t->H * t->D * 4, LH = (size_t)t->L * t->H;
  size_t state_bytes = sizeof(state_header) + LH * sizeof(int32_t);
  float *params = malloc(P), *mo = malloc(P), *vo = malloc(P);
  unsigned char *state = malloc(state_bytes);
  void *corpus = NULL; /* the text task's corpus record */
  uint64_t corpus_bytes = 0;
  const size_t PD = t->paper ? 3 * t->paper->n_params * 4 : 0, PA = t->paper ? (3 + 1) * LH * 4 : 0;
  float *pdev = t->paper ? malloc(PD) : NULL, *palpha = t->paper ? malloc(PA) : NULL;
  dua_status st = (!params || !mo || !vo || !state || (t->paper && (!pdev || !palpha)))
                      ? DUA_ERROR_OUT_OF_MEMORY
                      : DUA_SUCCESS;
  if (st == DUA_SUCCESS && t->paper) { /* [alpha | m | v] then the last extraction's gate means */
    if ((st = dua_paper_state_read(t->paper, pdev, palpha)) != DUA_SUCCESS)
      put_error(error, error_size, "reading the paper-mode state back: %s", dua_context_last_error(t->ctx));
    else
      memcpy(palpha + 3 * LH, t->paper_gate_mean, LH * 4);
  }
  if (st == DUA_SUCCESS)
    st = dua_task_corpus_record(t->task, &corpus, &corpus_bytes);
  if (st == DUA_SUCCESS && ((st = dua_buffer_read(m->params, 0, P, params)) != DUA_SUCCESS ||
                            (st = dua_buffer_read(m->adam_m, 0, P, mo)) != DUA_SUCCESS ||
                            (st = dua_buffer_read(m->adam_v, 0, P, vo)) != DUA_SUCCESS))
    put_error(error, error_size, "reading the model back: %s", dua_context_last_error(t->ctx));
  if (st == DUA_SUCCESS) {
    state_header h = {DUA_CKPT_STATE_VERSION, t->step, t->phase, (int64_t)LH};
    memcpy(state, &h, sizeof h);
    memcpy(state + sizeof h, t->fixed_depths, LH * sizeof(int32_t));
    dua_ckpt_section s[13] = {
        {"params", P, params},         {"adam_m", P, mo},    {"adam_v", P, vo},
        {"gate_z", G, t->z},           {"gate_m", G, t->zm}, {"gate_v", G, t->zv},
        {"state", state_bytes, state},
    };
    int ns = 7;
    if (corpus)
      s[ns++] = (dua_ckpt_section){DUA_TASK_CORPUS_SECTION, corpus_bytes, corpus};
    if (t->content) { /* content mode: the routers and their AdamW moments */
      const uint64_t RW = t->content->d.total * 4;
      s[ns++] = (dua_ckpt_section){"router_w", RW, t->content->w};
      s[ns++] = (dua_ckpt_section){"router_m", RW, t->content->wm};
      s[ns++] = (dua_ckpt_section){"router_v", RW, t->content->wv};
    }
    if (t->paper) {
      s[ns++] = (dua_ckpt_section){"paper_controller", PD, pdev};
      s[ns++] = (dua_ckpt_section){"paper_alpha", PA, palpha};
    }
    st = dua_checkpoint_save(path, &t->cfg, s, ns, error, error_size);
  } else if (st == DUA_ERROR_OUT_OF_MEMORY) {
    put_error(error, error_size, "%s", "dua_trainer_save: out of host memory");
  }
  free(corpus);
  free(params);
  free(mo);
  free(vo);
  free(state);
  free(pdev);
  free(palpha);
  return st;
}

static dua_status restore_section(const dua_ckpt_section *s, int n, const char *name, uint64_t bytes,
                                  void *dst, char *error, size_t error_size) {
  const dua_ckpt_section *f = dua_checkpoint_find(s, n, name);
  if (!f || f->bytes != bytes) {
    if (error && error_size)
      snprintf(error, error_size, "checkpoint section \"%s\" %s (expected %llu bytes)", name,
               f ? "has the wrong size" : "is missing", (unsigned long long)bytes);
    return DUA_ERROR_CORRUPT_FILE;
  }
  if (bytes)
    memcpy(dst, f->data, bytes);
  return DUA_SUCCESS;
}

dua_status dua_trainer_load(dua_context *ctx, const char *path, dua_trainer **out, char *error,
                            size_t error_size) {
  return dua_trainer_load_with_corpus(ctx, path, NULL, out, error, error_size);
}

dua_status dua_trainer_load_with_corpus(dua_context *ctx, const char *path, const char *corpus_path,
                                        dua_trainer **out, char *error, size_t error_size) {
  if (!ctx || !path || !out) {
    put_error(error, error_size, "%s", "dua_trainer_load: ctx, path and out must not be NULL");
    return DUA_ERROR_INVALID_ARGUMENT;
  }
  dua_trainer_config cfg;
  dua_ckpt_section *s = NULL;
  int n = 0;
  dua_status st = dua_checkpoint_load(path, &cfg, &s, &n, error, error_size);
  if (st != DUA_SUCCESS)
    return st;
  dua_task_corpus corpus;
  const dua_ckpt_section *rec = dua_checkpoint_find(s, n, DUA_TASK_CORPUS_SECTION);
  st = dua_task_corpus_from_record(&cfg, rec ? rec->data : NULL, rec ? rec->bytes : 0, corpus_path, &corpus,
                                   error, error_size);
  dua_trainer *t = NULL;
  if (st == DUA_SUCCESS)
    st = create(ctx, &cfg, &corpus, &t, error, error_size);
  float *host = NULL;
  if (st == DUA_SUCCESS) {
    dua_model *m = t->model;
    const size_t P = m->num_params * 4, G = (size_t)t->L * t->H * t->D * 4, LH = (size_t)t->L * t->H;
    const dua_ckpt_section *state = dua_checkpoint_find(s, n, "state");
    state_header h;
    host = malloc(P);
    if (!host)
      st = DUA_ERROR_OUT_OF_MEMORY;
    else if (!state || state->bytes != sizeof h + LH * sizeof(int32_t)) {
      put_error(error, error_size, "%s", "checkpoint section \"state\" is missing or has the wrong size");
      st = DUA_ERROR_CORRUPT_FILE;
    } else {
      memcpy(&h, state->data, sizeof h);
      if (h.version != DUA_CKPT_STATE_VERSION || h.step < 0 || h.step > cfg.steps ||
          (h.phase != 0 && h.phase != 1) || h.entries != (int64_t)LH) {
        put_error(error, error_size, "%s", "checkpoint section \"state\" holds invalid values");
        st = DUA_ERROR_CORRUPT_FILE;
      }
    }
    if (st == DUA_SUCCESS) {
      t->step = h.step;
      t->phase = (int32_t)h.phase;
      memcpy(t->fixed_depths, (const unsigned char *)state->data + sizeof h, LH * sizeof(int32_t));
      for (size_t i = 0; i < LH && st == DUA_SUCCESS; i++)
        if (t->fixed_depths[i] < 0 || t->fixed_depths[i] > t->D) {
          put_error(error, error_size, "%s", "checkpoint section \"state\": a fixed depth is out of range");
          st = DUA_ERROR_CORRUPT_FILE;
        }
    }
    const char *names[3] = {"params", "adam_m", "adam_v"};
    dua_buffer *dst[3] = {m->params, m->adam_m, m->adam_v};
    for (int i = 0; i < 3 && st == DUA_SUCCESS; i++)
      if ((st = restore_section(s, n, names[i], P, host, error, error_size)) == DUA_SUCCESS)
        st = dua_buffer_write(dst[i], 0, P, host);
    if (st == DUA_SUCCESS)
      st = restore_section(s, n, "gate_z", G, t->z, error, error_size);
    if (st == DUA_SUCCESS)
      st = restore_section(s, n, "gate_m", G, t->zm, error, error_size);
    if (st == DUA_SUCCESS)
      st = restore_section(s, n, "gate_v", G, t->zv, error, error_size);
    if (st == DUA_SUCCESS && t->content) {
      const uint64_t RW = t->content->d.total * 4;
      if ((st = restore_section(s, n, "router_w", RW, t->content->w, error, error_size)) == DUA_SUCCESS &&
          (st = restore_section(s, n, "router_m", RW, t->content->wm, error, error_size)) == DUA_SUCCESS)
        st = restore_section(s, n, "router_v", RW, t->content->wv, error, error_size);
      for (size_t i = 0; i < t->content->d.total && st == DUA_SUCCESS; i++)
        if (!isfinite(t->content->w[i])) {
          put_error(error, error_size, "%s", "checkpoint section \"router_w\" holds a non-finite weight");
          st = DUA_ERROR_CORRUPT_FILE;
        }
    }
    if (st == DUA_SUCCESS && t->paper) { /* controller arena, amplitudes, extraction */
      const size_t PD = 3 * t->paper->n_params * 4, PA = 4 * LH * 4;
      float *pdev = malloc(PD), *palpha = malloc(PA);
      if (!pdev || !palpha)
        st = DUA_ERROR_OUT_OF_MEMORY;
      if (st == DUA_SUCCESS)
        st = restore_section(s, n, "paper_controller", PD, pdev, error, error_size);
      if (st == DUA_SUCCESS)
        st = restore_section(s, n, "paper_alpha", PA, palpha, error, error_size);
      for (size_t i = 0; st == DUA_SUCCESS && i < 4 * LH; i++)
        if (!isfinite(palpha[i])) {
          put_error(error, error_size, "%s", "checkpoint section \"paper_alpha\" holds a non-finite value");
          st = DUA_ERROR_CORRUPT_FILE;
        }
      for (size_t i = 0; st == DUA_SUCCESS && i < LH; i++)
        if (t->fixed_depths[i] != 0 && t->fixed_depths[i] != t->D) {
          put_error(error, error_size, "%s",
                    "checkpoint section \"state\": a paper-mode depth is neither 0 nor D");
          st = DUA_ERROR_CORRUPT_FILE;
        }
      if (st == DUA_SUCCESS) {
        st = dua_paper_state_write(t->paper, pdev, palpha);
        memcpy(t->paper_gate_mean, palpha + 3 * LH, LH * 4);
      }
      free(pdev);
      free(palpha);
    }
    if (st == DUA_SUCCESS) { /* the loader prefetched step 0: restart it at the resumed step */
      dua_loader_destroy(t->loader);
      t->loader = NULL;
      dua_device_info info;
      int numa = dua_context_device_info(ctx, &info) == DUA_SUCCESS ? info.numa_node : -1;
      st = dua_loader_create(t->task, cfg.batch, numa, (uint64_t)t->step, &t->loader);
    }
  }
  free(host);
  dua_checkpoint_free(s, n);
  if (st != DUA_SUCCESS) {
    dua_trainer_destroy(t);
    return st;
  }
  *out = t;
  return DUA_SUCCESS;
}
