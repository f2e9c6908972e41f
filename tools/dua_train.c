/* dua-train: trains a small GPT-style model whose attention learns per-head routing depths
 * (DESIGN.md section 7), and writes a checkpoint, the routing file, logs and plots into --out.
 *
 *   dua-train --task dyck --mode native --steps 2000 --seed 1 --out runs/dyck
 *   dua-train --resume runs/dyck --steps 3000        (continues bit-identically, raising the total)
 *   dua-train --resume runs/dyck --eval-only         (evaluates the checkpoint with the hard routing)
 */
#include "dua_train.h"
#include "train_plots.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef enum { F_INT, F_FLOAT, F_U64, F_TASK, F_MODE, F_CHOICE } flag_kind;

typedef struct flag {
  const char *name;
  flag_kind kind;
  size_t offset; /* into dua_trainer_config */
  const char *help;
} flag;

static const char *const decay_names[] = {[DUA_DECAY_COSINE] = "cosine", [DUA_DECAY_LINEAR] = "linear", NULL};
static const char *const density_scope_names[] = {
    [DUA_DENSITY_PER_LAYER] = "layer", [DUA_DENSITY_MODEL] = "model", NULL};
static const char *const balance_scope_names[] = {
    [DUA_BALANCE_BATCH] = "batch", [DUA_BALANCE_SEQUENCE] = "sequence", NULL};
static const char *const density_estimate_names[] = {[DUA_DENSITY_SAMPLED] = "sampled",
                                                     [DUA_DENSITY_DETERMINISTIC] = "deterministic",
                                                     [DUA_DENSITY_EXTRACTED] = "extracted",
                                                     NULL};
static const char *const router_input_names[] = {
    [DUA_ROUTER_TOKEN] = "token", [DUA_ROUTER_TOKEN_POSITION] = "token+position", NULL};

#define CFG(field) offsetof(dua_trainer_config, field)

/* F_CHOICE flags: each one's value names, indexed by value, NULL-terminated */
static const struct {
  size_t offset;
  const char *const *names;
} choice_tables[] = {{CFG(decay), decay_names},
                     {CFG(density_scope), density_scope_names},
                     {CFG(density_estimate), density_estimate_names},
                     {CFG(balance_scope), balance_scope_names},
                     {CFG(router_input), router_input_names}};

static const char *const *choice_names(const flag *fl) {
  for (size_t i = 0; i < sizeof choice_tables / sizeof choice_tables[0]; i++)
    if (choice_tables[i].offset == fl->offset)
      return choice_tables[i].names;
  return NULL; /* not reached: every F_CHOICE flag has a table (the tool test runs --help) */
}

static const flag flags[] = {
    {"task", F_TASK, CFG(task), "dyck | listops | listops-paper | dyck-lm | text (README, \"Tasks\")"},
    {"mode", F_MODE, CFG(mode),
     "dense | native (learned per-head depths) | paper (the paper's gated token-tree bias, extracted to 0 or "
     "D) | content (native's gates over a tree of block paths a router learns)"},
    {"steps", F_INT, CFG(steps), "optimizer steps"},
    {"seed", F_U64, CFG(seed), "seed of data, initialization and gate noise"},
    {"seq-len", F_INT, CFG(seq_len), "tokens per example"},
    {"dyck-kinds", F_INT, CFG(dyck_kinds), "bracket kinds k of Dyck-k (dyck, dyck-lm)"},
    {"dyck-depth", F_INT, CFG(dyck_max_depth),
     "deepest Dyck nesting (dyck: < seq-len, dyck-lm: <= seq-len/2)"},
    {"test-size", F_INT, CFG(test_size), "held-out examples (never seen in training; text: windows)"},
    {"layers", F_INT, CFG(layers), "transformer blocks"},
    {"width", F_INT, CFG(width), "model width C (C / heads in 32, 64, 96, 128)"},
    {"heads", F_INT, CFG(heads), "attention heads"},
    {"mlp-ratio", F_INT, CFG(mlp_ratio), "MLP hidden width / C"},
    {"block", F_INT, CFG(block), "attention block size (16..256, power of two)"},
    {"arity", F_INT, CFG(arity), "routing tree arity p"},
    {"window", F_INT, CFG(window), "token window always visible (0 = none)"},
    {"sink", F_INT, CFG(sink), "leading sink keys always visible (0 = none)"},
    {"shift-alternate", F_INT, CFG(shift_alternate), "1 = odd layers shift the tree by p/2 blocks"},
    {"tau-start", F_FLOAT, CFG(tau_start), "initial Gumbel-Sigmoid temperature"},
    {"tau-end", F_FLOAT, CFG(tau_end), "final temperature"},
    {"tau-frac", F_FLOAT, CFG(tau_frac), "fraction of steps over which tau anneals"},
    {"hard-frac", F_FLOAT, CFG(hard_frac), "fraction of steps after which depths are fixed"},
    {"gate-init", F_FLOAT, CFG(gate_init), "initial gate logit (negative starts dense)"},
    {"gate-lr-scale", F_FLOAT, CFG(gate_lr_scale), "gate learning rate / lr"},
    {"density-weight", F_FLOAT, CFG(density_weight),
     "penalty on the expected density above the target (per --density-scope)"},
    {"density-target", F_FLOAT, CFG(density_target), "density budget (fraction of causal pairs)"},
    {"density-scope", F_CHOICE, CFG(density_scope),
     "layer | model: the budget holds for every layer, or for the mean over layers"},
    {"density-estimate", F_CHOICE, CFG(density_estimate),
     "sampled | deterministic | extracted: the budget measures the expected density of the step's noisy "
     "gates (and content paths) or of the noise-free ones, or the density of the routing extraction would "
     "fix now"},
    {"skip-bias", F_FLOAT, CFG(skip_bias), "level bias below which blocks are skipped in training"},
    {"balance-weight", F_FLOAT, CFG(balance_weight),
     "content: weight of the router's load-balancing loss (1 = uniform routing)"},
    {"balance-scope", F_CHOICE, CFG(balance_scope),
     "content: batch | sequence: the balance loss counts digits over the batch, or within each sequence"},
    {"router-input", F_CHOICE, CFG(router_input),
     "content: token | token+position: the router sees each block's first-token row, or that row and the "
     "block's place in the positional tree"},
    {"router-lr-scale", F_FLOAT, CFG(router_lr_scale), "content: router learning rate / lr"},
    {"batch", F_INT, CFG(batch), "examples per step"},
    {"warmup", F_INT, CFG(warmup), "linear warm-up steps (steps / 10 when the default exceeds steps)"},
    {"decay", F_CHOICE, CFG(decay), "cosine | linear learning-rate decay"},
    {"lr", F_FLOAT, CFG(lr), "peak learning rate"},
    {"lr-min", F_FLOAT, CFG(lr_min), "final learning rate / lr"},
    {"weight-decay", F_FLOAT, CFG(weight_decay), "AdamW decoupled weight decay"},
    {"beta1", F_FLOAT, CFG(beta1), "AdamW beta1"},
    {"beta2", F_FLOAT, CFG(beta2), "AdamW beta2"},
    {"adam-eps", F_FLOAT, CFG(adam_eps), "AdamW epsilon"},
    {"grad-clip", F_FLOAT, CFG(grad_clip), "global gradient-norm clip (0 = none)"},
    {"eval-every", F_INT, CFG(eval_every), "steps between evaluations (0 = only at the end)"},
    {"ctrl-hidden", F_INT, CFG(ctrl_hidden),
     "paper mode: depth-controller hidden width (0 = linear map; default width / 4)"},
};
#define NFLAGS ((int)(sizeof flags / sizeof flags[0]))

static const char *mode_name(int32_t mode) {
  return mode == DUA_ROUTING_DENSE     ? "dense"
         : mode == DUA_ROUTING_NATIVE  ? "native"
         : mode == DUA_ROUTING_PAPER   ? "paper"
         : mode == DUA_ROUTING_CONTENT ? "content"
                                       : "?";
}

/* Paper mode: both evaluations of the last dua_trainer_evaluate_paper (soft = the paper's, hard = extracted).
 */
static dua_paper_eval_result last_paper;
static int have_paper;

/* The evaluation every mode reports (the hard routing); paper mode also keeps the soft one in last_paper. */
static dua_status evaluate(dua_trainer *t, dua_eval_result *ev) {
  if (dua_trainer_get_config(t)->mode != DUA_ROUTING_PAPER)
    return dua_trainer_evaluate(t, ev);
  dua_status st = dua_trainer_evaluate_paper(t, &last_paper);
  if (st == DUA_SUCCESS) {
    *ev = last_paper.hard;
    have_paper = 1;
  }
  return st;
}

static void print_paper_eval(FILE *f) {
  const dua_paper_eval_result *p = &last_paper;
  fprintf(
      f,
      "  paper soft (dense, token-tree bias, gate 1[z>0]): loss %.4f accuracy %.4f | extracted hard (%d/%d "
      "heads at depth D, no bias): loss %.4f accuracy %.4f | change: accuracy %+.4f loss %+.4f\n",
      p->soft.loss, p->soft.accuracy, p->heads_sparse, p->heads_total, p->hard.loss, p->hard.accuracy,
      p->accuracy_change, p->loss_change);
}

static void usage(FILE *f) {
  dua_trainer_config d;
  dua_trainer_config_init(&d);
  fprintf(f,
          "usage: dua-train --task T --mode M --steps N --seed S --out DIR [options]\n"
          "       dua-train --task text --text FILE --seq-len S --test-size N --out DIR [options]\n"
          "       dua-train --resume DIR [--steps N] [--eval-only] [--text FILE]\n\n"
          "  --out DIR        where model.ckpt, routing.json, train.csv, eval.csv, result.json,\n"
          "                   loss.svg and depths.svg are written (created if missing)\n"
          "  --resume DIR     continue from DIR/model.ckpt (config from the checkpoint; --steps may raise\n"
          "                   the total); writes into DIR unless --out is given\n"
          "  --eval-only      with --resume: evaluate the checkpoint and exit\n"
          "  --text FILE      --task text: the UTF-8 corpus (its last tenth is held out); with --resume:\n"
          "                   the corpus's new path if it moved (it must be the same file: the checkpoint\n"
          "                   records its absolute path, size and SHA-256 and refuses any other)\n"
          "  --device SEL     device index, gpu/cpu, or a name substring (default: DUA_DEVICE, first GPU)\n"
          "  --quiet          no progress line\n"
          "  --help           this text\n\n"
          "tasks (README, \"Tasks\"):\n"
          "  dyck             Dyck-k prefix; one target: the closer it needs\n"
          "  listops          nested MIN/MAX/MED/SUMMOD, the value at '=' (dua's variant: mostly nested,\n"
          "                   lengths spread over seq-len; not comparable with the paper)\n"
          "  listops-paper    ListOps as the paper's generator draws it (36%% a single flat operator):\n"
          "                   the distribution behind its 62.7%%\n"
          "  dyck-lm          next-token LM on balanced Dyck-k words of exactly seq-len (even) tokens;\n"
          "                   accuracy counts every target, random openers included (a perfect model\n"
          "                   gets about 50%%); dua-run eval adds accuracy on the closers\n"
          "  text             byte-level next-token LM on --text FILE (256 tokens); --test-size windows\n"
          "                   of the held-out last tenth\n\n"
          "model, task, routing and schedule (default in brackets):\n");
  for (int i = 0; i < NFLAGS; i++) {
    const char *p = (const char *)&d + flags[i].offset;
    char def[64];
    switch (flags[i].kind) {
    case F_INT:
      snprintf(def, sizeof def, "%d", *(const int32_t *)p);
      break;
    case F_FLOAT:
      snprintf(def, sizeof def, "%g", (double)*(const float *)p);
      break;
    case F_U64:
      snprintf(def, sizeof def, "%llu", (unsigned long long)*(const uint64_t *)p);
      break;
    case F_TASK:
      snprintf(def, sizeof def, "%s", dua_task_kind_name(*(const int32_t *)p));
      break;
    case F_MODE:
      snprintf(def, sizeof def, "%s", mode_name(*(const int32_t *)p));
      break;
    case F_CHOICE:
      snprintf(def, sizeof def, "%s", choice_names(&flags[i])[*(const int32_t *)p]);
      break;
    }
    fprintf(f, "  --%-16s %s [%s]\n", flags[i].name, flags[i].help, def);
  }
}

static int parse_value(const flag *fl, const char *v, dua_trainer_config *c) {
  char *p = (char *)c + fl->offset, *end = NULL;
  errno = 0;
  switch (fl->kind) {
  case F_INT: {
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < INT32_MIN || x > INT32_MAX)
      return -1;
    *(int32_t *)p = (int32_t)x;
    return 0;
  }
  case F_FLOAT: {
    float x = strtof(v, &end);
    if (errno || *end || end == v || !isfinite(x))
      return -1;
    *(float *)p = x;
    return 0;
  }
  case F_U64: {
    if (*v == '-')
      return -1;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || end == v)
      return -1;
    *(uint64_t *)p = (uint64_t)x;
    return 0;
  }
  case F_TASK:
    *(int32_t *)p = dua_task_kind_from_name(v);
    break;
  case F_MODE:
    *(int32_t *)p = !strcmp(v, "dense")     ? DUA_ROUTING_DENSE
                    : !strcmp(v, "native")  ? DUA_ROUTING_NATIVE
                    : !strcmp(v, "paper")   ? DUA_ROUTING_PAPER
                    : !strcmp(v, "content") ? DUA_ROUTING_CONTENT
                                            : -1;
    break;
  case F_CHOICE:
    *(int32_t *)p = -1;
    for (int k = 0; choice_names(fl)[k]; k++)
      if (!strcmp(v, choice_names(fl)[k]))
        *(int32_t *)p = k;
    break;
  }
  return *(int32_t *)p < 0 ? -1 : 0;
}

typedef struct options {
  dua_trainer_config cfg;
  const char *out, *resume, *device, *text;
  int eval_only, quiet, steps_given, warmup_given, ctrl_given;
  double time_limit;
} options;

static int parse_args(int argc, char **argv, options *o) {
  dua_trainer_config_init(&o->cfg);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      exit(0);
    }
    if (!strcmp(a, "--eval-only")) {
      o->eval_only = 1;
      continue;
    }
    if (!strcmp(a, "--quiet")) {
      o->quiet = 1;
      continue;
    }
    if (strncmp(a, "--", 2) != 0 || i + 1 >= argc) {
      fprintf(stderr, "dua-train: %s: expected --flag value (see --help)\n", a);
      return -1;
    }
    const char *v = argv[++i];
    if (!strcmp(a, "--out")) {
      o->out = v;
      continue;
    }
    if (!strcmp(a, "--resume")) {
      o->resume = v;
      continue;
    }
    if (!strcmp(a, "--device")) {
      o->device = v;
      continue;
    }
    if (!strcmp(a, "--text")) {
      o->text = v;
      continue;
    }
    if (!strcmp(a, "--time-limit")) {
      char *end = NULL;
      o->time_limit = strtod(v, &end);
      if (*end || end == v || !(o->time_limit >= 0)) {
        fprintf(stderr, "dua-train: --time-limit %s: expected seconds >= 0\n", v);
        return -1;
      }
      continue;
    }
    int found = 0;
    for (int f = 0; f < NFLAGS && !found; f++)
      if (!strcmp(a + 2, flags[f].name)) {
        found = 1;
        if (parse_value(&flags[f], v, &o->cfg) != 0) {
          fprintf(stderr, "dua-train: --%s %s: not a valid value (%s)\n", flags[f].name, v, flags[f].help);
          return -1;
        }
        o->steps_given |= !strcmp(flags[f].name, "steps");
        o->warmup_given |= !strcmp(flags[f].name, "warmup");
        o->ctrl_given |= !strcmp(flags[f].name, "ctrl-hidden");
      }
    if (!found) {
      fprintf(stderr, "dua-train: unknown option %s (see --help)\n", a);
      return -1;
    }
  }
  if (!o->warmup_given && o->cfg.warmup > o->cfg.steps && o->cfg.steps > 0)
    o->cfg.warmup = o->cfg.steps / 10; /* a short run: the default warm-up would exceed it */
  if (!o->ctrl_given && o->cfg.width >= 4)
    o->cfg.ctrl_hidden = o->cfg.width / 4; /* the paper's E -> E/4 -> H controller */
  if (!o->resume && !o->out) {
    fprintf(stderr, "dua-train: --out DIR is required (see --help)\n");
    return -1;
  }
  if (!o->resume && o->cfg.task == DUA_TASK_TEXT && !o->text) {
    fprintf(stderr, "dua-train: --task text needs --text FILE (the UTF-8 corpus)\n");
    return -1;
  }
  if (!o->resume && o->text && o->cfg.task != DUA_TASK_TEXT) {
    fprintf(stderr, "dua-train: --text %s: only --task text reads a corpus (the task is %s)\n", o->text,
            dua_task_kind_name(o->cfg.task));
    return -1;
  }
  if (o->eval_only && !o->resume) {
    fprintf(stderr, "dua-train: --eval-only needs --resume DIR\n");
    return -1;
  }
  if (!o->out)
    o->out = o->resume;
  return 0;
}

/* mkdir -p */
static int make_dir(const char *path) {
  char buf[4096];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        break;
      *p = '/';
    }
  if (mkdir(path, 0777) == 0 || errno == EEXIST)
    return 0;
  fprintf(stderr, "dua-train: cannot create %s: %s\n", path, strerror(errno));
  return -1;
}

static void join(char *dst, size_t n, const char *dir, const char *file) {
  snprintf(dst, n, "%s/%s", dir, file);
}

static void print_depths(dua_trainer *t, FILE *f) {
  dua_routing r;
  if (dua_trainer_routing(t, &r) != DUA_SUCCESS)
    return;
  fprintf(f, "learned depths (layer: head depths; D = %d):\n", dua_trainer_tree_depth(t));
  for (int l = 0; l < r.layers; l++) {
    fprintf(f, "  layer %d:", l);
    for (int h = 0; h < r.heads; h++)
      fprintf(f, " %d", r.head[(size_t)l * r.heads + h].depth);
    fprintf(f, "\n");
  }
  dua_routing_free(&r);
}

static void sha_hex(const unsigned char *d, char out[65]) {
  for (int i = 0; i < 32; i++)
    snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void print_corpus(FILE *f, const dua_text_corpus_info *c) {
  char h[65];
  sha_hex(c->sha256, h);
  fprintf(f, "corpus %s: %llu bytes (training %llu, held out %llu), SHA-256 %s\n", c->path,
          (unsigned long long)c->bytes, (unsigned long long)c->train_bytes,
          (unsigned long long)c->heldout_bytes, h);
}

/* A JSON string (quotes, backslashes and control characters escaped). */
static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      fprintf(f, "\\%c", *s);
    else if ((unsigned char)*s < 0x20)
      fprintf(f, "\\u%04x", (unsigned)(unsigned char)*s);
    else
      fputc(*s, f);
  }
  fputc('"', f);
}

static int write_result(const char *path, dua_trainer *t, const dua_eval_result *e, double train_seconds,
                        double tokens_per_s, int completed) {
  FILE *f = fopen(path, "w");
  if (!f)
    return -1;
  const dua_trainer_config *c = dua_trainer_get_config(t);
  dua_routing r;
  int have = dua_trainer_routing(t, &r) == DUA_SUCCESS;
  fprintf(f,
          "{\n  \"task\": \"%s\", \"mode\": \"%s\", \"steps\": %lld, \"seed\": %llu,\n"
          "  \"test_loss\": %.6f, \"test_accuracy\": %.6f, \"density\": %.6f, \"scored\": %lld,\n"
          "  \"train_seconds\": %.3f, \"tokens_per_second\": %.1f, \"completed\": %s,\n  \"depths\": [",
          dua_task_kind_name(c->task), mode_name(c->mode), (long long)dua_trainer_step_count(t),
          (unsigned long long)c->seed, e->loss, e->accuracy, e->density, (long long)e->scored, train_seconds,
          tokens_per_s, completed ? "true" : "false");
  for (int l = 0; have && l < r.layers; l++) {
    fprintf(f, "%s[", l ? ", " : "");
    for (int h = 0; h < r.heads; h++)
      fprintf(f, "%s%d", h ? ", " : "", r.head[(size_t)l * r.heads + h].depth);
    fprintf(f, "]");
  }
  fprintf(f, "]");
  dua_text_corpus_info corpus;
  if (dua_trainer_text_corpus(t, &corpus) == DUA_SUCCESS) {
    char h[65];
    sha_hex(corpus.sha256, h);
    fprintf(f, ",\n  \"corpus\": {\"path\": ");
    json_string(f, corpus.path);
    fprintf(f, ", \"bytes\": %llu, \"train_bytes\": %llu, \"heldout_bytes\": %llu, \"sha256\": \"%s\"}",
            (unsigned long long)corpus.bytes, (unsigned long long)corpus.train_bytes,
            (unsigned long long)corpus.heldout_bytes, h);
  }
  if (c->mode == DUA_ROUTING_PAPER && have_paper) {
    const dua_paper_eval_result *p = &last_paper;
    fprintf(f,
            ",\n  \"paper\": {\"soft_loss\": %.6f, \"soft_accuracy\": %.6f, \"hard_loss\": %.6f, "
            "\"hard_accuracy\": %.6f,\n            \"accuracy_change\": %.6f, \"loss_change\": %.6f, "
            "\"heads_sparse\": %d, \"heads_total\": %d, \"hard_density\": %.6f,\n            \"soft\": "
            "\"dense heads, z-normalized token-tree bias x gate 1[z>0] x alpha (what the paper reports)\",\n"
            "            \"hard\": \"extracted routing (depth D if mean sigmoid(z) > 0.5 else 0), no bias, "
            "block-sparse "
            "kernels (what dua-run eval runs)\"}",
            p->soft.loss, p->soft.accuracy, p->hard.loss, p->hard.accuracy, p->accuracy_change,
            p->loss_change, p->heads_sparse, p->heads_total, p->hard.density);
  }
  fprintf(f, "\n}\n");
  if (have)
    dua_routing_free(&r);
  return fclose(f) == 0 ? 0 : -1;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Saves checkpoint + routing file; returns 0 on success. */
static int save_all(dua_trainer *t, const char *out) {
  char path[4096], err[1024];
  join(path, sizeof path, out, "model.ckpt");
  dua_status st = dua_trainer_save(t, path, err, sizeof err);
  if (st != DUA_SUCCESS) {
    fprintf(stderr, "dua-train: saving %s: %s\n", path, err);
    return -1;
  }
  dua_routing r;
  if ((st = dua_trainer_routing(t, &r)) == DUA_SUCCESS) {
    join(path, sizeof path, out, "routing.json");
    st = dua_routing_save(path, &r, err, sizeof err);
    dua_routing_free(&r);
    if (st != DUA_SUCCESS) {
      fprintf(stderr, "dua-train: saving %s: %s\n", path, err);
      return -1;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  options o;
  memset(&o, 0, sizeof o);
  if (parse_args(argc, argv, &o) != 0)
    return 2;
  char err[1024] = "", path[4096];
  dua_context_options copt;
  dua_context_options_init(&copt);
  copt.selector = o.device;
  dua_context *ctx = NULL;
  dua_status st = dua_context_create(&copt, &ctx);
  if (st != DUA_SUCCESS) {
    fprintf(stderr, "dua-train: no device: %s\n", dua_status_string(st));
    return 1;
  }
  dua_device_info info;
  dua_context_device_info(ctx, &info);
  dua_trainer *t = NULL;
  if (o.resume) {
    join(path, sizeof path, o.resume, "model.ckpt");
    st = dua_trainer_load_with_corpus(ctx, path, o.text, &t, err, sizeof err);
    if (st == DUA_SUCCESS && o.steps_given && (st = dua_trainer_set_steps(t, o.cfg.steps)) != DUA_SUCCESS)
      snprintf(err, sizeof err, "%s", dua_context_last_error(ctx));
  } else {
    st = dua_trainer_create_with_corpus(ctx, &o.cfg, o.text, &t, err, sizeof err);
  }
  if (st != DUA_SUCCESS) {
    fprintf(stderr, "dua-train: %s\n", err[0] ? err : dua_status_string(st));
    dua_trainer_destroy(t);
    dua_context_destroy(ctx);
    return 1;
  }
  const dua_trainer_config *c = dua_trainer_get_config(t);
  dua_text_corpus_info corpus;
  const int text = dua_trainer_text_corpus(t, &corpus) == DUA_SUCCESS;
  if (text)
    print_corpus(stdout, &corpus);
  if (make_dir(o.out) != 0)
    return 1;
  dua_eval_result ev;
  if (o.eval_only) {
    if ((st = evaluate(t, &ev)) != DUA_SUCCESS) {
      fprintf(stderr, "dua-train: evaluation failed: %s\n", dua_context_last_error(ctx));
      return 1;
    }
    printf("eval step %lld: test loss %.4f accuracy %.4f density %.4f (%lld scored)\n",
           (long long)dua_trainer_step_count(t), ev.loss, ev.accuracy, ev.density, (long long)ev.scored);
    if (have_paper)
      print_paper_eval(stdout);
    print_depths(t, stdout);
    dua_trainer_destroy(t);
    dua_context_destroy(ctx);
    return 0;
  }
  printf("dua-train: %s, %s mode, %d steps, %d layers x %d heads, width %d, S=%d, block %d, arity %d, D=%d "
         "on %s\n",
         dua_task_kind_name(c->task), mode_name(c->mode), c->steps, c->layers, c->heads, c->width, c->seq_len,
         c->block, c->arity, dua_trainer_tree_depth(t), info.name);
  join(path, sizeof path, o.out, "train.csv");
  /* a new run starts the logs; a resumed one appends, with a header if the log is new (--out elsewhere) */
  const int fresh = dua_trainer_step_count(t) == 0;
  FILE *csv = fopen(path, fresh ? "w" : "a");
  const int csv_head = csv && ftell(csv) == 0;
  join(path, sizeof path, o.out, "eval.csv");
  FILE *ecsv = fopen(path, fresh ? "w" : "a");
  const int ecsv_head = ecsv && ftell(ecsv) == 0;
  if (!csv || !ecsv) {
    fprintf(stderr, "dua-train: cannot write logs in %s\n", o.out);
    return 1;
  }
  if (csv_head)
    fprintf(csv, "step,phase,loss,accuracy,lr,tau,grad_norm,density,expected_density,tokens_per_s%s\n",
            c->mode == DUA_ROUTING_CONTENT ? ",balance_loss" : "");
  const int paper = c->mode == DUA_ROUTING_PAPER;
  if (ecsv_head)
    fprintf(ecsv, "step,test_loss,test_accuracy,density%s\n",
            paper ? ",soft_loss,soft_accuracy,accuracy_change,heads_sparse" : "");
  const int tty = isatty(fileno(stdout)) && !o.quiet;
  const double t_start = now_seconds();
  double train_seconds = 0.0, tokens = 0.0;
  dua_train_stats s;
  while (dua_trainer_step_count(t) < c->steps) {
    if ((st = dua_trainer_step(t, &s)) != DUA_SUCCESS) {
      fprintf(stderr, "\ndua-train: step %lld failed: %s\n", (long long)dua_trainer_step_count(t) + 1,
              dua_context_last_error(ctx));
      return 1;
    }
    train_seconds += s.seconds;
    tokens += (double)c->batch * c->seq_len;
    double tps = (double)c->batch * c->seq_len / s.seconds;
    fprintf(csv, "%lld,%d,%.6f,%.5f,%.6g,%.4f,%.5f,%.5f,%.5f,%.1f", (long long)s.step, s.phase, s.loss,
            s.accuracy, s.lr, s.tau, s.grad_norm, s.density, s.expected_density, tps);
    if (c->mode == DUA_ROUTING_CONTENT)
      fprintf(csv, ",%.5f", s.balance_loss);
    fputc('\n', csv);
    double elapsed = now_seconds() - t_start;
    double eta = train_seconds / (double)s.step * (double)(c->steps - s.step);
    int report = tty || (!o.quiet && (s.step % 50 == 0 || s.step == c->steps));
    char balance[32] = "";
    if (c->mode == DUA_ROUTING_CONTENT)
      snprintf(balance, sizeof balance, "  balance %.3f", (double)s.balance_loss);
    if (report)
      printf("%sstep %6lld/%d  loss %.4f  acc %.3f  tau %.3f  density %.3f (expected %.3f)%s  %.0f tok/s  "
             "ETA %.0fs%s",
             tty ? "\r" : "", (long long)s.step, c->steps, s.loss, s.accuracy, s.tau, s.density,
             s.expected_density, balance, tokens / (elapsed > 0 ? elapsed : 1), eta, tty ? "   " : "\n");
    fflush(stdout);
    const int out_of_time = o.time_limit > 0 && now_seconds() - t_start > o.time_limit;
    if ((c->eval_every > 0 && s.step % c->eval_every == 0) || s.step == c->steps || out_of_time) {
      if ((st = evaluate(t, &ev)) != DUA_SUCCESS) {
        fprintf(stderr, "\ndua-train: evaluation failed: %s\n", dua_context_last_error(ctx));
        return 1;
      }
      fprintf(ecsv, "%lld,%.6f,%.6f,%.6f", (long long)s.step, ev.loss, ev.accuracy, ev.density);
      if (paper)
        fprintf(ecsv, ",%.6f,%.6f,%.6f,%d", last_paper.soft.loss, last_paper.soft.accuracy,
                last_paper.accuracy_change, last_paper.heads_sparse);
      fprintf(ecsv, "\n");
      fflush(ecsv);
      fflush(csv);
      if (!o.quiet)
        printf("%seval step %lld: test loss %.4f accuracy %.4f density %.4f (hard routing)\n",
               tty ? "\n" : "", (long long)s.step, ev.loss, ev.accuracy, ev.density);
      if (!o.quiet && paper)
        print_paper_eval(stdout);
      if (save_all(t, o.out) != 0)
        return 1;
    }
    if (out_of_time) {
      printf("time limit of %.0f s reached after %lld of %d steps\n", o.time_limit, (long long)s.step,
             c->steps);
      break;
    }
  }
  fclose(csv);
  fclose(ecsv);
  if (dua_trainer_step_count(t) == 0 || train_seconds == 0.0) { /* resumed a finished run: evaluate */
    if ((st = evaluate(t, &ev)) != DUA_SUCCESS)
      return 1;
  }
  print_depths(t, stdout);
  double tps = train_seconds > 0 ? tokens / train_seconds : 0.0;
  printf("final: test accuracy %.4f, test loss %.4f, density %.4f, %.0f tokens/s, %.1f s training\n",
         ev.accuracy, ev.loss, ev.density, tps, train_seconds);
  if (paper && have_paper)
    print_paper_eval(stdout);
  join(path, sizeof path, o.out, "result.json");
  if (write_result(path, t, &ev, train_seconds, tps, dua_trainer_step_count(t) == c->steps) != 0)
    fprintf(stderr, "dua-train: cannot write %s\n", path);
  if (dua_train_plots(o.out, t) != 0)
    fprintf(stderr, "dua-train: cannot write the plots in %s\n", o.out);
  if (save_all(t, o.out) != 0)
    return 1;
  dua_trainer_destroy(t);
  dua_context_destroy(ctx);
  return 0;
}
