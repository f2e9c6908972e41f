/* test_train_config.c: unit tests of the trainer configuration: the defaults are the paper's Dyck-2 setup
 * and valid; every field refuses a bad value (below, above, NaN where it is a float; task-specific bounds
 * such as dyck-lm's even seq_len) with a message that names the field and its value; edge values inside the
 * ranges are accepted; task names round-trip. */
#include "dua_train.h"
#include "test_util.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_defaults) {
  dua_trainer_config c;
  memset(&c, 0x5a, sizeof c); /* init must set everything, reserved included */
  dua_trainer_config_init(&c);
  char err[256] = "untouched";
  ck_assert_int_eq(dua_trainer_config_validate(&c, err, sizeof err), DUA_SUCCESS);
  ck_assert_str_eq(err, "");
  ck_assert_int_eq(c.task, DUA_TASK_DYCK);
  ck_assert_int_eq(c.seq_len, 32);
  ck_assert_int_eq(c.dyck_kinds, 2);
  ck_assert_int_eq(c.test_size, 2000);
  ck_assert_int_eq(c.layers, 2);
  ck_assert_int_eq(c.width, 128);
  ck_assert_int_eq(c.heads, 4);
  ck_assert_int_eq(c.mlp_ratio, 4);
  ck_assert_int_eq(c.mode, DUA_ROUTING_DENSE);
  ck_assert_int_eq(c.block, 16);
  ck_assert_int_eq(c.arity, 2);
  ck_assert_int_eq(c.window, 0);
  ck_assert_int_eq(c.sink, 0);
  ck_assert_int_eq(c.shift_alternate, 0);
  ck_assert(c.tau_start == 1.0f && c.tau_end == 0.1f && c.tau_frac == 0.8f && c.hard_frac == 0.8f);
  ck_assert(c.gate_init == -2.0f && c.gate_lr_scale == 10.0f && c.density_weight == 0.0f);
  ck_assert(c.density_target == 0.25f && c.skip_bias == -30.0f);
  ck_assert_int_eq(c.batch, 64);
  ck_assert_int_eq(c.steps, 2000);
  ck_assert_int_eq(c.warmup, 100);
  ck_assert_int_eq(c.decay, DUA_DECAY_COSINE);
  ck_assert(c.lr == 1e-3f && c.lr_min == 0.1f && c.weight_decay == 0.1f);
  ck_assert(c.beta1 == 0.9f && c.beta2 == 0.95f && c.adam_eps == 1e-8f && c.grad_clip == 1.0f);
  ck_assert(c.seed == 1);
  ck_assert_int_eq(c.eval_every, 200);
  ck_assert_int_eq(c.ctrl_hidden, 32);
  for (int i = 0; i < (int)(sizeof c.reserved / sizeof c.reserved[0]); i++)
    ck_assert_int_eq(c.reserved[i], 0);
  ck_assert(c.balance_weight == 0.1f && c.router_lr_scale == 1.0f &&
            c.density_scope == DUA_DENSITY_PER_LAYER && c.balance_scope == DUA_BALANCE_BATCH &&
            c.router_input == DUA_ROUTER_TOKEN && c.density_estimate == DUA_DENSITY_SAMPLED);
  dua_trainer_config_init(NULL); /* NULL-safe */
  ck_assert_int_eq(dua_trainer_config_validate(NULL, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_trainer_config_validate(&c, NULL, 0), DUA_SUCCESS);
}
END_TEST

/* One bad value: the field the message must name and the value text it must contain. */
typedef struct bad_case {
  const char *field;
  const char *value;
  void (*apply)(dua_trainer_config *c);
} bad_case;

#define BAD(name, field, value_text, stmt)                                                                   \
  static void bad_##name(dua_trainer_config *c) {                                                            \
    stmt;                                                                                                    \
  }
#define BAD_LIST                                                                                             \
  BAD(task_lo, "task", "-1", c->task = -1)                                                                   \
  BAD(task_hi, "task", "5", c->task = 5)                                                                     \
  BAD(seq_lo, "seq_len", "7", c->seq_len = 7)                                                                \
  BAD(seq_hi, "seq_len", "65537", c->seq_len = 65537)                                                        \
  BAD(kinds_lo, "dyck_kinds", "0", c->dyck_kinds = 0)                                                        \
  BAD(kinds_hi, "dyck_kinds", "9", c->dyck_kinds = 9)                                                        \
  BAD(depth_lo, "dyck_max_depth", "0", c->dyck_max_depth = 0)                                                \
  BAD(depth_hi, "dyck_max_depth", "32", c->dyck_max_depth = 32)                                              \
  BAD(lm_odd, "seq_len", "33", (c->task = DUA_TASK_DYCK_LM, c->seq_len = 33, c->dyck_max_depth = 8))         \
  BAD(lm_depth, "dyck_max_depth", "17", (c->task = DUA_TASK_DYCK_LM, c->dyck_max_depth = 17))                \
  BAD(test_lo, "test_size", "0", c->test_size = 0)                                                           \
  BAD(test_hi, "test_size", "1048577", c->test_size = 1048577)                                               \
  BAD(test_mem, "test_size", "262144", (c->seq_len = 2048, c->dyck_max_depth = 8, c->test_size = 262144))    \
  BAD(layers_lo, "layers", "0", c->layers = 0)                                                               \
  BAD(layers_hi, "layers", "257", c->layers = 257)                                                           \
  BAD(heads_lo, "heads", "0", c->heads = 0)                                                                  \
  BAD(heads_hi, "heads", "257", c->heads = 257)                                                              \
  BAD(width_lo, "width", "16", c->width = 16)                                                                \
  BAD(width_hd, "width", "100", c->width = 100)                                                              \
  BAD(width_hd16, "width", "64", c->width = 64)                                                              \
  BAD(width_hd256, "width", "1024", c->width = 1024)                                                         \
  BAD(mlp_lo, "mlp_ratio", "0", c->mlp_ratio = 0)                                                            \
  BAD(mlp_hi, "mlp_ratio", "17", c->mlp_ratio = 17)                                                          \
  BAD(mode_lo, "mode", "-1", c->mode = -1)                                                                   \
  BAD(block_8, "block", "8", c->block = 8)                                                                   \
  BAD(block_48, "block", "48", c->block = 48)                                                                \
  BAD(block_512, "block", "512", c->block = 512)                                                             \
  BAD(arity_lo, "arity", "1", c->arity = 1)                                                                  \
  BAD(arity_hi, "arity", "257", c->arity = 257)                                                              \
  BAD(window_lo, "window", "-1", c->window = -1)                                                             \
  BAD(window_hi, "window", "33", c->window = 33)                                                             \
  BAD(sink_lo, "sink", "-1", c->sink = -1)                                                                   \
  BAD(sink_hi, "sink", "33", c->sink = 33)                                                                   \
  BAD(shift_hi, "shift_alternate", "2", c->shift_alternate = 2)                                              \
  BAD(tau_start_0, "tau_start", "0", c->tau_start = 0.0f)                                                    \
  BAD(tau_start_nan, "tau_start", "nan", c->tau_start = NAN)                                                 \
  BAD(tau_start_inf, "tau_start", "inf", c->tau_start = INFINITY)                                            \
  BAD(tau_end_0, "tau_end", "0", c->tau_end = 0.0f)                                                          \
  BAD(tau_end_up, "tau_end", "2", c->tau_end = 2.0f)                                                         \
  BAD(tau_frac_0, "tau_frac", "0", c->tau_frac = 0.0f)                                                       \
  BAD(tau_frac_hi, "tau_frac", "1.5", c->tau_frac = 1.5f)                                                    \
  BAD(hard_frac_0, "hard_frac", "0", c->hard_frac = 0.0f)                                                    \
  BAD(hard_frac_nan, "hard_frac", "nan", c->hard_frac = NAN)                                                 \
  BAD(gate_init_hi, "gate_init", "21", c->gate_init = 21.0f)                                                 \
  BAD(gate_init_nan, "gate_init", "nan", c->gate_init = NAN)                                                 \
  BAD(gate_lr_neg, "gate_lr_scale", "-1", c->gate_lr_scale = -1.0f)                                          \
  BAD(dens_w_neg, "density_weight", "-0.5", c->density_weight = -0.5f)                                       \
  BAD(dens_t_0, "density_target", "0", c->density_target = 0.0f)                                             \
  BAD(dens_t_hi, "density_target", "1.25", c->density_target = 1.25f)                                        \
  BAD(skip_0, "skip_bias", "0", c->skip_bias = 0.0f)                                                         \
  BAD(skip_nan, "skip_bias", "nan", c->skip_bias = NAN)                                                      \
  BAD(skip_ninf, "skip_bias", "-inf", c->skip_bias = -INFINITY)                                              \
  BAD(batch_lo, "batch", "0", c->batch = 0)                                                                  \
  BAD(batch_hi, "batch", "65537", c->batch = 65537)                                                          \
  BAD(steps_lo, "steps", "0", c->steps = 0)                                                                  \
  BAD(warmup_neg, "warmup", "-1", c->warmup = -1)                                                            \
  BAD(warmup_hi, "warmup", "2001", c->warmup = 2001)                                                         \
  BAD(decay_hi, "decay", "2", c->decay = 2)                                                                  \
  BAD(lr_0, "lr", "0", c->lr = 0.0f)                                                                         \
  BAD(lr_nan, "lr", "nan", c->lr = NAN)                                                                      \
  BAD(lr_min_hi, "lr_min", "1.5", c->lr_min = 1.5f)                                                          \
  BAD(wd_neg, "weight_decay", "-0.1", c->weight_decay = -0.1f)                                               \
  BAD(beta1_1, "beta1", "1", c->beta1 = 1.0f)                                                                \
  BAD(beta2_neg, "beta2", "-0.5", c->beta2 = -0.5f)                                                          \
  BAD(eps_0, "adam_eps", "0", c->adam_eps = 0.0f)                                                            \
  BAD(clip_neg, "grad_clip", "-1", c->grad_clip = -1.0f)                                                     \
  BAD(eval_neg, "eval_every", "-1", c->eval_every = -1)                                                      \
  BAD(reserved0, "reserved[0]", "7", c->reserved[0] = 7)                                                     \
  BAD(reserved7, "reserved[7]", "-1", c->reserved[7] = -1)                                                   \
  BAD(balance_scope_neg, "balance_scope", "-1", c->balance_scope = -1)                                       \
  BAD(balance_scope_2, "balance_scope", "2", c->balance_scope = 2)                                           \
  BAD(estimate_neg, "density_estimate", "-1", c->density_estimate = -1)                                      \
  BAD(estimate_3, "density_estimate", "3", c->density_estimate = 3)                                          \
  BAD(router_input_neg, "router_input", "-1", c->router_input = -1)                                          \
  BAD(router_input_2, "router_input", "2", c->router_input = 2)                                              \
  BAD(scope_neg, "density_scope", "-1", c->density_scope = -1)                                               \
  BAD(scope_2, "density_scope", "2", c->density_scope = 2)                                                   \
  BAD(balance_neg, "balance_weight", "-0.5", c->balance_weight = -0.5f)                                      \
  BAD(balance_nan, "balance_weight", "nan", c->balance_weight = NAN)                                         \
  BAD(router_lr_neg, "router_lr_scale", "-1", c->router_lr_scale = -1.0f)                                    \
  BAD(router_lr_0_content, "router_lr_scale", "0",                                                           \
      (c->mode = DUA_ROUTING_CONTENT, c->router_lr_scale = 0.0f))                                            \
  BAD(ctrl_hidden_neg, "ctrl_hidden", "-1", c->ctrl_hidden = -1)                                             \
  BAD(mode_4, "mode", "4", c->mode = 4)
BAD_LIST
#undef BAD
#define BAD(name, field, value_text, stmt) {field, value_text, bad_##name},
static const bad_case bad_cases[] = {BAD_LIST};
#undef BAD
#define N_BAD ((int)(sizeof bad_cases / sizeof bad_cases[0]))

START_TEST(test_bad_field) {
  const bad_case *b = &bad_cases[_i];
  dua_trainer_config c;
  dua_trainer_config_init(&c);
  b->apply(&c);
  char err[256] = "";
  ck_assert_int_eq(dua_trainer_config_validate(&c, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  char want[64];
  snprintf(want, sizeof want, "config.%s ", b->field);
  ck_assert_msg(strstr(err, want) != NULL, "case %d: message \"%s\" does not name %s", _i, err, want);
  ck_assert_msg(strstr(err, b->value) != NULL, "case %d: message \"%s\" does not hold the value %s", _i, err,
                b->value);
  /* a range, or the allowed set, is given */
  ck_assert_msg(strchr(err, '[') != NULL || strchr(err, '(') != NULL || strstr(err, "must") != NULL ||
                    strstr(err, "exceeds") != NULL,
                "case %d: message \"%s\" gives no allowed range", _i, err);
}
END_TEST

/* Values on the edges of each range are accepted. */
START_TEST(test_edges_accepted) {
  dua_trainer_config c;
  char err[256];
  static const int32_t widths[][2] = {{32, 1}, {64, 1}, {96, 1}, {128, 1}, {384, 4}, {512, 8}, {768, 6}};
  for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++) {
    dua_trainer_config_init(&c);
    c.width = widths[i][0];
    c.heads = widths[i][1];
    ck_assert_msg(dua_trainer_config_validate(&c, err, sizeof err) == DUA_SUCCESS, "%s", err);
  }
  for (int32_t b = 16; b <= 256; b *= 2) {
    dua_trainer_config_init(&c);
    c.block = b;
    ck_assert_msg(dua_trainer_config_validate(&c, err, sizeof err) == DUA_SUCCESS, "%s", err);
  }
  static const int32_t lm[][2] = {{8, 4}, {8, 1}, {65536, 32768}}; /* dyck-lm: even S, depth up to S / 2 */
  for (size_t i = 0; i < sizeof lm / sizeof lm[0]; i++) {
    dua_trainer_config_init(&c);
    c.task = DUA_TASK_DYCK_LM;
    c.seq_len = lm[i][0];
    c.dyck_max_depth = lm[i][1];
    c.batch = 4;
    c.test_size = 100;
    ck_assert_msg(dua_trainer_config_validate(&c, err, sizeof err) == DUA_SUCCESS, "%s", err);
  }
  dua_trainer_config_init(&c);
  c.task = DUA_TASK_LISTOPS;
  c.seq_len = 8;
  c.dyck_max_depth = 7;
  c.dyck_kinds = 8;
  c.mode = DUA_ROUTING_NATIVE;
  c.window = 8;
  c.sink = 8;
  c.shift_alternate = 1;
  c.tau_end = c.tau_start;
  c.tau_frac = 1.0f;
  c.hard_frac = 1.0f;
  c.gate_lr_scale = 0.0f;
  c.density_target = 1.0f;
  c.warmup = c.steps;
  c.decay = DUA_DECAY_LINEAR;
  c.lr_min = 0.0f;
  c.weight_decay = 0.0f;
  c.beta1 = 0.0f;
  c.grad_clip = 0.0f;
  c.eval_every = 0;
  c.seed = UINT64_MAX;
  c.balance_scope = DUA_BALANCE_SEQUENCE;
  c.router_input = DUA_ROUTER_TOKEN_POSITION;
  c.density_estimate = DUA_DENSITY_EXTRACTED;
  ck_assert_msg(dua_trainer_config_validate(&c, err, sizeof err) == DUA_SUCCESS, "%s", err);
  /* a short error buffer is truncated, not overrun */
  char tiny[8];
  memset(tiny, 'x', sizeof tiny);
  c.layers = 0;
  ck_assert_int_eq(dua_trainer_config_validate(&c, tiny, 5), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(tiny[4], '\0');
  ck_assert_int_eq(tiny[5], 'x');
}
END_TEST

/* Task names: every kind has one, they round-trip, unknown values and names are refused. */
START_TEST(test_task_names) {
  static const char *const names[] = {"dyck", "listops", "listops-paper", "dyck-lm", "text"};
  const int n = (int)(sizeof names / sizeof names[0]);
  for (int i = 0; i < n; i++) {
    ck_assert_str_eq(dua_task_kind_name(i), names[i]);
    ck_assert_int_eq(dua_task_kind_from_name(names[i]), i);
    dua_trainer_config c;
    dua_trainer_config_init(&c);
    c.task = i;
    c.seq_len = 128;
    char err[256];
    ck_assert_msg(dua_trainer_config_validate(&c, err, sizeof err) == DUA_SUCCESS, "%s: %s", names[i], err);
  }
  ck_assert_str_eq(dua_task_kind_name(n), "?");
  ck_assert_str_eq(dua_task_kind_name(-1), "?");
  ck_assert_int_eq(dua_task_kind_from_name("Dyck"), -1);
  ck_assert_int_eq(dua_task_kind_from_name(""), -1);
  ck_assert_int_eq(dua_task_kind_from_name(NULL), -1);
}
END_TEST

int main(void) {
  Suite *s = suite_create("train_config");
  TCase *tc = tcase_create("train_config");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_defaults);
  tcase_add_loop_test(tc, test_bad_field, 0, N_BAD);
  tcase_add_test(tc, test_edges_accepted);
  tcase_add_test(tc, test_task_names);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
