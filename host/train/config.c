/* config.c: the trainer configuration: defaults (the paper's Dyck-2 setup, PAPER-NOTES.md "Training")
 * and validation of every field, each failure naming the field, its value and the allowed range. */
#include "dua_train.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void dua_trainer_config_init(dua_trainer_config *c) {
  if (c == NULL)
    return;
  memset(c, 0, sizeof *c);
  c->task = DUA_TASK_DYCK;
  c->seq_len = 32;
  c->dyck_kinds = 2;
  c->dyck_max_depth = 8;
  c->test_size = 2000;
  c->layers = 2;
  c->width = 128;
  c->heads = 4;
  c->mlp_ratio = 4;
  c->mode = DUA_ROUTING_DENSE;
  c->block = 16;
  c->arity = 2;
  c->window = 0;
  c->sink = 0;
  c->shift_alternate = 0;
  c->tau_start = 1.0f;
  c->tau_end = 0.1f;
  c->tau_frac = 0.8f;
  c->hard_frac = 0.8f;
  c->gate_init = -2.0f;
  c->gate_lr_scale = 10.0f;
  c->density_weight = 0.0f;
  c->balance_weight = 0.1f;
  c->router_lr_scale = 1.0f;
  c->density_target = 0.25f;
  c->skip_bias = -30.0f;
  c->batch = 64;
  c->steps = 2000;
  c->warmup = 100;
  c->decay = DUA_DECAY_COSINE;
  c->lr = 1e-3f;
  c->lr_min = 0.1f;
  c->weight_decay = 0.1f;
  c->beta1 = 0.9f;
  c->beta2 = 0.95f;
  c->adam_eps = 1e-8f;
  c->grad_clip = 1.0f;
  c->seed = 1;
  c->eval_every = 200;
  c->ctrl_hidden = 32;
}

static const char *const task_names[] = {"dyck", "listops", "listops-paper", "dyck-lm", "text"};
#define N_TASKS ((int32_t)(sizeof task_names / sizeof task_names[0]))

const char *dua_task_kind_name(int32_t task) {
  return task >= 0 && task < N_TASKS ? task_names[task] : "?";
}

int32_t dua_task_kind_from_name(const char *name) {
  for (int32_t i = 0; name != NULL && i < N_TASKS; i++)
    if (strcmp(name, task_names[i]) == 0)
      return i;
  return -1;
}

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static dua_status
fail(char *error, size_t error_size, const char *fmt, ...) {
  if (error != NULL && error_size > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error, error_size, fmt, ap);
    va_end(ap);
  }
  return DUA_ERROR_INVALID_ARGUMENT;
}

/* Integer field in [lo, hi]. */
#define CHECK_INT(field, lo, hi)                                                                             \
  do {                                                                                                       \
    long long v_ = (long long)c->field, lo_ = (long long)(lo), hi_ = (long long)(hi);                        \
    if (v_ < lo_ || v_ > hi_)                                                                                \
      return fail(error, error_size, "config." #field " = %lld is outside [%lld, %lld]", v_, lo_, hi_);      \
  } while (0)

/* Float field, finite, in [lo, hi] (NaN fails every comparison). */
#define CHECK_FLOAT(field, lo, hi)                                                                           \
  do {                                                                                                       \
    double v_ = (double)c->field;                                                                            \
    if (!(v_ >= (lo) && v_ <= (hi)))                                                                         \
      return fail(error, error_size, "config." #field " = %g is outside [%g, %g]", v_, (double)(lo),         \
                  (double)(hi));                                                                             \
  } while (0)

/* Float field, finite, in (lo, hi]. */
#define CHECK_FLOAT_OPEN_LO(field, lo, hi)                                                                   \
  do {                                                                                                       \
    double v_ = (double)c->field;                                                                            \
    if (!(v_ > (lo) && v_ <= (hi)))                                                                          \
      return fail(error, error_size, "config." #field " = %g is outside (%g, %g]", v_, (double)(lo),         \
                  (double)(hi));                                                                             \
  } while (0)

/* Float field, finite, in [lo, hi). */
#define CHECK_FLOAT_OPEN_HI(field, lo, hi)                                                                   \
  do {                                                                                                       \
    double v_ = (double)c->field;                                                                            \
    if (!(v_ >= (lo) && v_ < (hi)))                                                                          \
      return fail(error, error_size, "config." #field " = %g is outside [%g, %g)", v_, (double)(lo),         \
                  (double)(hi));                                                                             \
  } while (0)

dua_status dua_trainer_config_validate(const dua_trainer_config *c, char *error, size_t error_size) {
  if (c == NULL)
    return fail(error, error_size, "config is NULL");
  /* task */
  if (c->task < 0 || c->task >= N_TASKS) {
    char names[256] = "";
    for (int32_t i = 0; i < N_TASKS; i++) {
      size_t len = strlen(names);
      snprintf(names + len, sizeof names - len, "%s%d %s", i ? ", " : "", (int)i, task_names[i]);
    }
    return fail(error, error_size, "config.task = %d is not a task (%s)", (int)c->task, names);
  }
  CHECK_INT(seq_len, 8, 65536);
  if (c->task == DUA_TASK_DYCK_LM && c->seq_len % 2 != 0)
    return fail(error, error_size,
                "config.seq_len = %d is odd: task dyck-lm needs an even seq_len (a balanced word of seq_len "
                "tokens)",
                (int)c->seq_len);
  CHECK_INT(dyck_kinds, 1, 8);
  /* a Dyck prefix of at most seq_len - 1 tokens nests at most seq_len - 1 deep, a balanced word of seq_len
   * tokens at most seq_len / 2 (other tasks ignore it) */
  CHECK_INT(dyck_max_depth, 1,
            c->task == DUA_TASK_DYCK      ? c->seq_len - 1
            : c->task == DUA_TASK_DYCK_LM ? c->seq_len / 2
                                          : 65535);
  CHECK_INT(test_size, 1, 1 << 20);
  if ((long long)c->test_size * c->seq_len > (1ll << 28))
    return fail(error, error_size,
                "config.test_size * config.seq_len = %d * %d = %lld tokens exceeds 2^28 (test set memory)",
                (int)c->test_size, (int)c->seq_len, (long long)c->test_size * c->seq_len);
  /* model */
  CHECK_INT(layers, 1, 256);
  CHECK_INT(heads, 1, 256);
  CHECK_INT(width, 32, 32768);
  {
    int hd = c->width / c->heads;
    if (c->width % c->heads != 0 || (hd != 32 && hd != 64 && hd != 96 && hd != 128))
      return fail(
          error, error_size,
          "config.width = %d with config.heads = %d gives head dim %d%s; width / heads must be 32, 64, "
          "96 or 128",
          (int)c->width, (int)c->heads, hd, c->width % c->heads != 0 ? " (not a divisor)" : "");
  }
  CHECK_INT(mlp_ratio, 1, 16);
  /* routing */
  if (c->mode != DUA_ROUTING_DENSE && c->mode != DUA_ROUTING_NATIVE && c->mode != DUA_ROUTING_PAPER &&
      c->mode != DUA_ROUTING_CONTENT)
    return fail(error, error_size,
                "config.mode = %d must be %d (dense), %d (native), %d (paper) or %d (content)", (int)c->mode,
                DUA_ROUTING_DENSE, DUA_ROUTING_NATIVE, DUA_ROUTING_PAPER, DUA_ROUTING_CONTENT);
  CHECK_INT(ctrl_hidden, 0, 4096);
  if (c->block != 16 && c->block != 32 && c->block != 64 && c->block != 128 && c->block != 256)
    return fail(error, error_size, "config.block = %d must be a power of two in [16, 256]", (int)c->block);
  CHECK_INT(arity, 2, 256);
  CHECK_INT(window, 0, c->seq_len);
  CHECK_INT(sink, 0, c->seq_len);
  CHECK_INT(shift_alternate, 0, 1);
  CHECK_FLOAT_OPEN_LO(tau_start, 0.0, 100.0);
  CHECK_FLOAT_OPEN_LO(tau_end, 0.0, (double)c->tau_start);
  CHECK_FLOAT_OPEN_LO(tau_frac, 0.0, 1.0);
  CHECK_FLOAT_OPEN_LO(hard_frac, 0.0, 1.0);
  CHECK_FLOAT(gate_init, -20.0, 20.0);
  CHECK_FLOAT(gate_lr_scale, 0.0, 1e4);
  CHECK_FLOAT(density_weight, 0.0, 1e6);
  CHECK_FLOAT_OPEN_LO(density_target, 0.0, 1.0);
  CHECK_INT(density_scope, DUA_DENSITY_PER_LAYER, DUA_DENSITY_MODEL);
  CHECK_INT(balance_scope, DUA_BALANCE_BATCH, DUA_BALANCE_SEQUENCE);
  CHECK_INT(router_input, DUA_ROUTER_TOKEN, DUA_ROUTER_TOKEN_POSITION);
  CHECK_INT(density_estimate, DUA_DENSITY_SAMPLED, DUA_DENSITY_EXTRACTED);
  CHECK_FLOAT_OPEN_HI(skip_bias, -1e4, 0.0);
  CHECK_FLOAT(balance_weight, 0.0, 1e4);
  if (c->mode == DUA_ROUTING_CONTENT)
    CHECK_FLOAT_OPEN_LO(router_lr_scale, 0.0, 1e4);
  else
    CHECK_FLOAT(router_lr_scale, 0.0, 1e4);
  /* optimisation */
  CHECK_INT(batch, 1, 1 << 16);
  if ((long long)c->batch * c->seq_len > (1ll << 28))
    return fail(error, error_size, "config.batch * config.seq_len = %d * %d = %lld tokens exceeds 2^28",
                (int)c->batch, (int)c->seq_len, (long long)c->batch * c->seq_len);
  CHECK_INT(steps, 1, INT32_MAX);
  CHECK_INT(warmup, 0, c->steps);
  CHECK_INT(decay, DUA_DECAY_COSINE, DUA_DECAY_LINEAR);
  CHECK_FLOAT_OPEN_LO(lr, 0.0, 10.0);
  CHECK_FLOAT(lr_min, 0.0, 1.0);
  CHECK_FLOAT(weight_decay, 0.0, 10.0);
  CHECK_FLOAT_OPEN_HI(beta1, 0.0, 1.0);
  CHECK_FLOAT_OPEN_HI(beta2, 0.0, 1.0);
  CHECK_FLOAT_OPEN_LO(adam_eps, 0.0, 1.0);
  CHECK_FLOAT(grad_clip, 0.0, 1e6);
  CHECK_INT(eval_every, 0, INT32_MAX);
  for (int i = 0; i < (int)(sizeof c->reserved / sizeof c->reserved[0]); i++)
    if (c->reserved[i] != 0)
      return fail(error, error_size, "config.reserved[%d] = %d must be 0", i, (int)c->reserved[i]);
  if (error != NULL && error_size > 0)
    error[0] = '\0';
  return DUA_SUCCESS;
}
