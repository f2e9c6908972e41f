/* model_grads.c: one forward + backward of the trainer's model (host/train/model.h) on a checkpoint's
 * parameters and one batch, with every input and output written to files, so that bench/torch_gpt.py can
 * check dua's parameter gradients (and native mode's level-bias gradient) against PyTorch autograd.
 *
 *   dua_model_grads --ckpt FILE --out DIR [--device SEL] [--batch train:STEP | test:FIRST]
 *                   [--routing hard | dense | soft] [--tau T]
 *
 * --batch train:STEP  the training batch of optimizer step STEP (dua_task_train_batch, what dua-train's
 *                     loader hands out at that step; default train:<the checkpoint's step count>)
 *         test:FIRST  held-out examples FIRST.. (the checkpoint's batch size of them; a short last batch is
 *                     padded with token 0 and ignored targets, as dua_trainer_evaluate pads)
 * --routing hard      what dua_trainer_step runs in phase 1 and dua_trainer_evaluate runs: per head the fixed
 *                     depth (phase 1) or the deepest gate on (z > 0); no level bias. Dense-mode: depth 0.
 *           dense     every head dense, no bias
 *           soft      native mode's soft phase without noise: beta from the checkpoint's gate logits at
 *                     temperature --tau (dua_gates_sample, noise 0), added as the level bias, and blocks
 *                     below the config's skip_bias skipped (dua_gates_skip_depth), as dua_trainer_step does
 *
 * Files in DIR (little-endian, raw): tokens.i32, targets.i32 [B][T]; grads.f32 [num_params] in the
 * checkpoint's parameter order (dua_model_param_layout); depths.i32 [L][H] (layout depth per head);
 * beta.f32 and dbeta.f32 [L][H][D + 1] (soft only: the level bias and its gradient); result.json
 * (loss_sum, count, correct, mean loss, shapes). Gradients are those of the mean cross-entropy over the
 * batch's scored targets, before clipping (what dua_model_backward leaves in the gradient arena).
 * Development tool, not installed; links the internal archive (like train_ops_bench). */
#include "train/checkpoint.h"
#include "train/gates.h"
#include "train/model.h"
#include "train/task.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct state_header { /* trainer.c's "state" section header */
  int64_t version, step, phase, entries;
} state_header;

static int usage(void) {
  fprintf(stderr, "usage: dua_model_grads --ckpt FILE --out DIR [--device SEL] [--batch train:STEP | "
                  "test:FIRST] [--routing hard | dense | soft] [--tau T]\n");
  return 2;
}

static int write_file(const char *dir, const char *name, const void *data, size_t bytes) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, bytes, f) != bytes || fclose(f) != 0) {
    fprintf(stderr, "dua_model_grads: cannot write %s: %s\n", path, strerror(errno));
    return 0;
  }
  return 1;
}

int main(int argc, char **argv) {
  const char *ckpt = NULL, *out = NULL, *device = NULL, *batch_arg = NULL, *routing_arg = "hard";
  float tau = 1.0f;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v)
      return usage();
    if (!strcmp(a, "--ckpt"))
      ckpt = v;
    else if (!strcmp(a, "--out"))
      out = v;
    else if (!strcmp(a, "--device"))
      device = v;
    else if (!strcmp(a, "--batch"))
      batch_arg = v;
    else if (!strcmp(a, "--routing"))
      routing_arg = v;
    else if (!strcmp(a, "--tau"))
      tau = strtof(v, NULL);
    else
      return usage();
    i++;
  }
  const int soft = !strcmp(routing_arg, "soft"), dense = !strcmp(routing_arg, "dense");
  if (!ckpt || !out || (!soft && !dense && strcmp(routing_arg, "hard")) || !(tau > 0.0f))
    return usage();
  if (mkdir(out, 0755) != 0 && errno != EEXIST) {
    fprintf(stderr, "dua_model_grads: cannot create %s: %s\n", out, strerror(errno));
    return 1;
  }

  char err[1024];
  dua_trainer_config cfg;
  dua_ckpt_section *secs = NULL;
  int nsec = 0;
  if (dua_checkpoint_load(ckpt, &cfg, &secs, &nsec, err, sizeof err) != DUA_SUCCESS) {
    fprintf(stderr, "dua_model_grads: %s\n", err);
    return 1;
  }
  dua_task *task = NULL;
  if (cfg.task == DUA_TASK_TEXT) { /* its batches need the corpus file: not wired here */
    fprintf(stderr, "dua_model_grads: task text is not supported (the checkpoint's corpus is not read)\n");
    return 1;
  }
  if (dua_task_create(&cfg, NULL, &task, err, sizeof err) != DUA_SUCCESS) {
    fprintf(stderr, "dua_model_grads: task: %s\n", err);
    return 1;
  }
  dua_context_options copt;
  dua_context_options_init(&copt);
  copt.selector = device;
  dua_context *ctx = NULL;
  if (dua_context_create(&copt, &ctx) != DUA_SUCCESS) {
    fprintf(stderr, "dua_model_grads: no device\n");
    return 1;
  }
  const int V = dua_task_vocab_size(task);
  dua_model *m = NULL;
  dua_status st = dua_model_create(ctx, &cfg, V, &m);
  if (st != DUA_SUCCESS) {
    fprintf(stderr, "dua_model_grads: model: %s\n", dua_context_last_error(ctx));
    return 1;
  }
  const int L = m->d.L, H = m->d.H, D = m->tree_depth, B = m->d.B, T = m->d.T;
  const size_t LH = (size_t)L * H, R = (size_t)B * T;
  const dua_ckpt_section *ps = dua_checkpoint_find(secs, nsec, "params");
  const dua_ckpt_section *ss = dua_checkpoint_find(secs, nsec, "state");
  const dua_ckpt_section *zs = dua_checkpoint_find(secs, nsec, "gate_z");
  state_header h;
  if (!ps || ps->bytes != m->num_params * 4 || !ss || ss->bytes != sizeof h + LH * 4 || !zs ||
      zs->bytes != LH * (size_t)D * 4) {
    fprintf(stderr, "dua_model_grads: checkpoint sections params/state/gate_z are missing or mis-sized\n");
    return 1;
  }
  memcpy(&h, ss->data, sizeof h);
  if (dua_buffer_write(m->params, 0, m->num_params * 4, ps->data) != DUA_SUCCESS) {
    fprintf(stderr, "dua_model_grads: %s\n", dua_context_last_error(ctx));
    return 1;
  }

  /* the batch */
  int32_t *tokens = malloc(R * 4), *targets = malloc(R * 4);
  if (!tokens || !targets)
    return 1;
  long long at = (long long)h.step;
  int is_test = 0;
  if (batch_arg) {
    if (!strncmp(batch_arg, "train:", 6))
      at = strtoll(batch_arg + 6, NULL, 10);
    else if (!strncmp(batch_arg, "test:", 5))
      at = strtoll(batch_arg + 5, NULL, 10), is_test = 1;
    else
      return usage();
  }
  if (is_test) {
    const int n = dua_task_test_size(task);
    if (at < 0 || at >= n) {
      fprintf(stderr, "dua_model_grads: test:%lld is outside the %d test examples\n", at, n);
      return 2;
    }
    const int count = n - at < B ? (int)(n - at) : B;
    dua_task_test_examples(task, (int32_t)at, count, tokens, targets);
    for (size_t i = (size_t)count * T; i < R; i++)
      tokens[i] = 0, targets[i] = DUA_IGNORE;
  } else {
    if (at < 0)
      return usage();
    dua_task_train_batch(task, (uint64_t)at, B, tokens, targets);
  }

  /* the routing, as trainer.c builds it */
  const int native = cfg.mode == DUA_ROUTING_NATIVE && D > 0;
  const int32_t *fixed = (const int32_t *)(const void *)((const unsigned char *)ss->data + sizeof h);
  const float *z = zs->data;
  int32_t *depths = calloc(LH, 4);
  float *x = calloc(LH * (size_t)(D + 1), 4), *beta = calloc(LH * (size_t)(D + 1), 4);
  float *dbeta = calloc(LH * (size_t)(D + 1), 4);
  dua_layer_routing *routing = calloc((size_t)L, sizeof *routing);
  if (!depths || !x || !beta || !dbeta || !routing)
    return 1;
  for (int l = 0; l < L; l++) {
    const size_t g = (size_t)l * H;
    if (soft) {
      dua_gates_sample(z + g * D, H, D, tau, cfg.seed, (uint64_t)h.step, l, 0, x + g * D, beta + g * (D + 1));
      for (int hh = 0; hh < H; hh++)
        depths[g + hh] = dua_gates_skip_depth(beta + (g + hh) * (D + 1), D, cfg.skip_bias);
      routing[l].bias = beta + g * (D + 1);
    } else {
      for (int hh = 0; hh < H; hh++)
        depths[g + hh] = (dense || !native) ? 0
                         : h.phase          ? fixed[g + hh]
                                            : dua_gates_extract_depth(z + (g + hh) * D, D);
      routing[l].bias = NULL;
    }
    memcpy(routing[l].depths, depths + g, (size_t)H * 4);
  }

  double loss_sum = 0.0;
  int count = 0, correct = 0;
  st = dua_model_forward(m, tokens, targets, routing, &loss_sum, &count, &correct);
  if (st == DUA_SUCCESS)
    st = dua_model_backward(m, soft ? dbeta : NULL);
  float *grads = malloc(m->num_params * 4);
  if (st == DUA_SUCCESS)
    st = grads ? dua_buffer_read(m->grads, 0, m->num_params * 4, grads) : DUA_ERROR_OUT_OF_MEMORY;
  if (st != DUA_SUCCESS) {
    fprintf(stderr, "dua_model_grads: %s: %s\n", dua_status_string(st), dua_context_last_error(ctx));
    return 1;
  }
  int ok = write_file(out, "tokens.i32", tokens, R * 4) && write_file(out, "targets.i32", targets, R * 4) &&
           write_file(out, "grads.f32", grads, m->num_params * 4) &&
           write_file(out, "depths.i32", depths, LH * 4);
  if (ok && soft)
    ok = write_file(out, "beta.f32", beta, LH * (size_t)(D + 1) * 4) &&
         write_file(out, "dbeta.f32", dbeta, LH * (size_t)(D + 1) * 4);
  if (ok) {
    char path[4096];
    snprintf(path, sizeof path, "%s/result.json", out);
    FILE *f = fopen(path, "w");
    ok = f != NULL;
    if (ok) {
      fprintf(f,
              "{\"checkpoint\": \"%s\", \"batch\": \"%s:%lld\", \"routing\": \"%s\", \"tau\": %.9g, "
              "\"step\": %lld, \"phase\": %lld, \"loss_sum\": %.17g, \"count\": %d, \"correct\": %d, "
              "\"loss\": %.17g, \"num_params\": %zu, \"B\": %d, \"T\": %d, \"L\": %d, \"H\": %d, \"D\": %d, "
              "\"V\": %d}\n",
              ckpt, is_test ? "test" : "train", at, routing_arg, (double)tau, (long long)h.step,
              (long long)h.phase, loss_sum, count, correct, count ? loss_sum / count : 0.0, m->num_params, B,
              T, L, H, D, V);
      ok = fclose(f) == 0;
    }
  }
  printf("dua_model_grads: %s batch %s:%lld routing %s: loss %.9g over %d targets, %d correct -> %s\n", ckpt,
         is_test ? "test" : "train", at, routing_arg, count ? loss_sum / count : 0.0, count, correct, out);
  free(grads);
  free(routing);
  free(dbeta);
  free(beta);
  free(x);
  free(depths);
  free(tokens);
  free(targets);
  dua_model_destroy(m);
  dua_context_destroy(ctx);
  dua_task_destroy(task);
  dua_checkpoint_free(secs, nsec);
  return ok ? 0 : 1;
}
