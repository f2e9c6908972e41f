/* dua-run: runs a model trained by dua-train (dua_inference_*, dua_train.h): held-out evaluation with the
 * learned hard routing next to dense attention (accuracy, loss, per-layer density, time per batch), and
 * generation through the block-sparse prefill and the sparse paged-KV decode (tokens/s, K/V bytes read per
 * token sparse vs dense).
 *
 *   dua-run eval runs/dyck
 *   dua-run generate runs/dyck --prompt-test 3 --new 8
 *   dua-run generate runs/dyck --prompt "( [ ] (" --temperature 0.8 --top-k 3 --seed 2
 *   dua-run causal runs/text --examples 4
 */
#include "dua_train.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f) {
  fprintf(
      f,
      "usage: dua-run eval DIR [--sparse | --dense] [--reps N] [common options]\n"
      "       dua-run generate DIR (--prompt-test N | --prompt \"TOKENS\") [--new K] [--temperature T]\n"
      "                            [--top-k K] [--seed S] [--dense] [common options]\n"
      "       dua-run causal DIR [--examples N] [--cuts N] [--seed S] [--sparse | --dense] [common options]\n"
      "       dua-run --help\n\n"
      "DIR is a dua-train output directory (its model.ckpt is loaded) or a checkpoint file.\n\n"
      "eval: loss and accuracy on the task's held-out test set (never seen in training), evaluated exactly\n"
      "  as dua-train evaluates (the same numbers for the same checkpoint and device), with the learned "
      "hard\n"
      "  routing (\"sparse\") and with every head dense, side by side; the routing's depths and block "
      "density\n"
      "  per layer (key blocks visited / those of dense causal attention); and the median wall time per\n"
      "  batch (the checkpoint's batch size) of the whole forward up to the logits, and of the attention\n"
      "  alone (one dua_attention_forward per layer on the same activations).\n"
      "  dyck-lm: test accuracy counts every next-token target (random openers included); a \"closer\n"
      "  accuracy\" row counts only the targets that are closers, which the prefix determines.\n"
      "  --sparse          only the learned routing\n"
      "  --dense           only dense attention\n"
      "  --reps N          timed repetitions per figure, after one warm-up [10]\n\n"
      "generate: continues a prompt. The prompt runs through the block-sparse forward while each layer's\n"
      "  K/V is written into a paged KV cache; every new token then goes through dua_decode (one token per\n"
      "  step) under the same routing. Prints the prompt and the new tokens with the task's token names\n"
      "  (task text: as text in quotes, UTF-8 as is, \\\\ \\n \\t \\r and \\xHH for other bytes),\n"
      "  the prefill time and tokens/s (after a short warm-up generation), and the K/V bytes the decode\n"
      "  read per token (the 16-token units of the context holding a key some head can see, all layers)\n"
      "  next to what dense decode reads (every key of the context). Prompt and new tokens together must\n"
      "  fit the model's seq_len (its learned position embedding has no position past it).\n"
      "  --prompt-test N   the N-th test example up to its first scored position (its expected answer is\n"
      "                    shown next to the first new token); for next-token tasks (dyck-lm, text) its\n"
      "                    first half, with the example's continuation shown next to the new tokens\n"
      "  --prompt \"TOKENS\" token names separated by spaces, e.g. \"( [ ] (\" (Dyck) or\n"
      "                    \"[ MAX 3 [ MIN 4 7 ] ] =\" (ListOps); an unknown name lists the vocabulary;\n"
      "                    task text: the argument's bytes as they are (\"To be, or\")\n"
      "  --new K           new tokens [8, or as many as fit]\n"
      "  --temperature T   0 = greedy (argmax) [0]; > 0 samples softmax(logits / T)\n"
      "  --top-k K         sample among the K most likely tokens, 0 = all [0]\n"
      "  --seed S          sampling seed [1]\n"
      "  --dense           dense attention instead of the learned routing\n\n"
      "causal: checks that the trained model is causal as it runs: for N test examples and C random cut\n"
      "  points t each, replaces every token after t by a random one and requires the logits of positions\n"
      "  0..t to stay identical bit for bit (and counts the cuts where later logits changed, so the\n"
      "  perturbation is seen to matter); with the learned routing and with every head dense. Exit 1 on\n"
      "  any difference.\n"
      "  --examples N      test examples [4]\n"
      "  --cuts N          cut points per example [4]\n"
      "  --seed S          seed of the cut points and replacement tokens [1]\n"
      "  --sparse          only the learned routing\n"
      "  --dense           only dense attention\n\n");
  fprintf(f,
          "common options:\n"
          "  --routing FILE    run this routing file instead of the checkpoint's routing (it must match the\n"
          "                    checkpoint's layers, heads, seq_len, block and arity; depths may differ)\n"
          "  --text FILE       task text: the corpus's new path if it moved since training (the checkpoint\n"
          "                    records its absolute path, size and SHA-256; another file is refused)\n"
          "  --device SEL      device index, gpu/cpu, or a name substring (default: DUA_DEVICE, first GPU)\n"
          "  --json            one JSON object on stdout instead of the text report\n"
          "  --help            this text\n\n"
          "exit status: 0 success, 1 a file, device or run failed, 2 bad arguments.\n");
}

typedef struct options {
  int eval, causal, examples, cuts, sparse_only, dense_only, json, reps, prompt_test, n_new, top_k;
  const char *dir, *prompt, *routing, *device, *text;
  float temperature;
  unsigned long long seed;
} options;

static int bad(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
static int bad(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "dua-run: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, " (see --help)\n");
  va_end(ap);
  return -1;
}

static int parse_int(const char *flag, const char *v, long lo, long hi, int *out) {
  char *end = NULL;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno || end == v || *end || x < lo || x > hi) {
    char range[64];
    snprintf(range, sizeof range, "%ld..%ld", lo, hi);
    fprintf(stderr, "dua-run: %s %s: expected an integer in %s (see --help)\n", flag, v, range);
    return -1;
  }
  *out = (int)x;
  return 0;
}

static int parse_args(int argc, char **argv, options *o) {
  memset(o, 0, sizeof *o);
  o->reps = 10, o->prompt_test = -1, o->n_new = -1, o->seed = 1, o->examples = 4, o->cuts = 4;
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      usage(stdout);
      exit(0);
    }
  if (argc < 2)
    return bad("expected a command: eval, generate or causal");
  if (!strcmp(argv[1], "eval"))
    o->eval = 1;
  else if (!strcmp(argv[1], "causal"))
    o->causal = 1;
  else if (strcmp(argv[1], "generate") != 0)
    return bad("unknown command \"%s\": expected eval, generate or causal", argv[1]);
  if (argc < 3 || !strncmp(argv[2], "--", 2))
    return bad("%s: expected a directory (or checkpoint file) after \"%s\"", argv[1], argv[1]);
  o->dir = argv[2];
  for (int i = 3; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--json")) {
      o->json = 1;
      continue;
    }
    if (!strcmp(a, "--dense")) {
      o->dense_only = 1;
      continue;
    }
    if (!strcmp(a, "--sparse") && (o->eval || o->causal)) {
      o->sparse_only = 1;
      continue;
    }
    static const char *const eval_flags[] = {"--reps", "--routing", "--device", "--text", NULL};
    static const char *const gen_flags[] = {"--prompt-test", "--prompt", "--new",     "--temperature",
                                            "--top-k",       "--seed",   "--routing", "--device",
                                            "--text",        NULL};
    static const char *const causal_flags[] = {"--examples", "--cuts", "--seed", "--routing",
                                               "--device",   "--text", NULL};
    const char *const *known = o->eval ? eval_flags : o->causal ? causal_flags : gen_flags;
    int found = 0;
    for (int k = 0; known[k]; k++)
      found |= !strcmp(a, known[k]);
    if (!found)
      return bad("unknown option %s for %s", a, argv[1]);
    if (i + 1 >= argc)
      return bad("%s needs a value", a);
    const char *v = argv[++i];
    if (!strcmp(a, "--reps")) {
      if (parse_int(a, v, 1, 100000, &o->reps))
        return -1;
    } else if (!strcmp(a, "--routing")) {
      o->routing = v;
    } else if (!strcmp(a, "--device")) {
      o->device = v;
    } else if (!strcmp(a, "--text")) {
      o->text = v;
    } else if (!strcmp(a, "--prompt-test")) {
      if (parse_int(a, v, 0, 1 << 30, &o->prompt_test))
        return -1;
    } else if (!strcmp(a, "--prompt")) {
      o->prompt = v;
    } else if (!strcmp(a, "--examples")) {
      if (parse_int(a, v, 1, 1 << 20, &o->examples))
        return -1;
    } else if (!strcmp(a, "--cuts")) {
      if (parse_int(a, v, 1, 1 << 20, &o->cuts))
        return -1;
    } else if (!strcmp(a, "--new")) {
      if (parse_int(a, v, 1, 1 << 30, &o->n_new))
        return -1;
    } else if (!strcmp(a, "--top-k")) {
      if (parse_int(a, v, 0, 1 << 30, &o->top_k))
        return -1;
    } else if (!strcmp(a, "--temperature")) {
      char *end = NULL;
      errno = 0;
      o->temperature = strtof(v, &end);
      if (errno || end == v || *end || !isfinite(o->temperature) || o->temperature < 0)
        return bad("--temperature %s: expected a number >= 0", v);
    } else if (!strcmp(a, "--seed")) {
      char *end = NULL;
      errno = 0;
      o->seed = strtoull(v, &end, 10);
      if (errno || end == v || *end || *v == '-')
        return bad("--seed %s: expected an unsigned integer", v);
    }
  }
  if (o->sparse_only && o->dense_only)
    return bad("--sparse and --dense exclude each other");
  if (!o->eval && !o->causal && (o->prompt_test >= 0) == (o->prompt != NULL))
    return bad("generate needs exactly one of --prompt-test N and --prompt \"TOKENS\"");
  return 0;
}

/* A JSON string (quotes, backslashes and control characters escaped). */
static void json_string(const char *s) {
  putchar('"');
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      printf("\\%c", *s);
    else if ((unsigned char)*s < 0x20)
      printf("\\u%04x", (unsigned)(unsigned char)*s);
    else
      putchar(*s);
  }
  putchar('"');
}

/* ---------------------------------------------------------------- eval */

/* dyck-lm: argmax accuracy at the test positions whose target is a closer (determined by the prefix), from
 * dua_inference_forward's logits over the whole test set in batches of the checkpoint's size. The
 * evaluation's accuracy counts every next-token target, openers included, whose kind is random. */
static int closer_accuracy(dua_inference_model *m, int dense, double *accuracy, long long *scored) {
  const dua_trainer_config *c = dua_inference_config(m);
  const int S = c->seq_len, B = c->batch, V = dua_inference_vocab_size(m), n = dua_inference_test_size(m);
  const int32_t first_closer = 1 + c->dyck_kinds;
  int32_t *tok = malloc((size_t)B * S * sizeof *tok), *tgt = malloc((size_t)B * S * sizeof *tgt);
  float *logits = malloc((size_t)B * S * V * sizeof *logits);
  long long right = 0, count = 0;
  int rc = tok && tgt && logits ? 0 : -1;
  for (int first = 0; rc == 0 && first < n; first += B) {
    const int b = n - first < B ? n - first : B;
    for (int i = 0; i < b && rc == 0; i++)
      if (dua_inference_test_example(m, first + i, tok + (size_t)i * S, tgt + (size_t)i * S) != DUA_SUCCESS)
        rc = -1;
    if (rc == 0 && dua_inference_forward(m, tok, b, S, dense, logits) != DUA_SUCCESS)
      rc = -1;
    for (size_t r = 0; rc == 0 && r < (size_t)b * S; r++) {
      if (tgt[r] < first_closer)
        continue;
      const float *l = logits + r * V;
      int best = 0;
      for (int v = 1; v < V; v++)
        best = l[v] > l[best] ? v : best;
      right += best == tgt[r];
      count++;
    }
  }
  free(tok);
  free(tgt);
  free(logits);
  *accuracy = count ? (double)right / (double)count : 0.0;
  *scored = count;
  return rc;
}

static void json_eval(const char *key, const dua_eval_result *e, const dua_inference_timing *t) {
  printf("  \"%s\": {\"accuracy\": %.6f, \"loss\": %.6f, \"density\": %.6f, \"scored\": %lld, "
         "\"forward_ms_per_batch\": %.4f, \"attention_ms_per_batch\": %.4f}",
         key, e->accuracy, e->loss, e->density, (long long)e->scored, 1e3 * t->forward_seconds,
         1e3 * t->attention_seconds);
}

static int run_eval(dua_context *ctx, dua_inference_model *m, const options *o, const char *device) {
  const dua_trainer_config *c = dua_inference_config(m);
  dua_routing r;
  double *dens = malloc((size_t)c->layers * sizeof *dens);
  if (!dens || dua_inference_routing(m, &r) != DUA_SUCCESS ||
      dua_inference_density(m, 0, dens) != DUA_SUCCESS) {
    fprintf(stderr, "dua-run: %s\n", dua_context_last_error(ctx));
    free(dens);
    return 1;
  }
  const int want[2] = {!o->dense_only, !o->sparse_only}; /* [0] sparse, [1] dense */
  dua_eval_result e[2];
  dua_inference_timing t[2];
  double closer[2] = {0, 0};
  long long closer_n[2] = {0, 0};
  const int lm_closers = c->task == DUA_TASK_DYCK_LM;
  memset(e, 0, sizeof e);
  memset(t, 0, sizeof t);
  for (int k = 0; k < 2; k++)
    if (want[k] && (dua_inference_evaluate(m, k, &e[k]) != DUA_SUCCESS ||
                    dua_inference_time(m, k, o->reps, &t[k]) != DUA_SUCCESS ||
                    (lm_closers && closer_accuracy(m, k, &closer[k], &closer_n[k]) != 0))) {
      fprintf(stderr, "dua-run: evaluation failed: %s\n", dua_context_last_error(ctx));
      dua_routing_free(&r);
      free(dens);
      return 1;
    }
  if (o->json) {
    printf("{\n  \"checkpoint\": ");
    json_string(o->dir);
    printf(", \"device\": ");
    json_string(device);
    printf(
        ", \"task\": \"%s\", \"step\": %lld, \"seq_len\": %d, \"batch\": %d, \"reps\": %d,\n  \"layers\": [",
        dua_task_kind_name(c->task), (long long)dua_inference_step_count(m), c->seq_len, c->batch, o->reps);
    for (int l = 0; l < r.layers; l++) {
      printf("%s{\"depths\": [", l ? ", " : "");
      for (int h = 0; h < r.heads; h++)
        printf("%s%d", h ? ", " : "", r.head[(size_t)l * r.heads + h].depth);
      printf("], \"density\": %.6f}", dens[l]);
    }
    printf("]");
    for (int k = 0; k < 2; k++)
      if (want[k]) {
        printf(",\n");
        json_eval(k ? "dense" : "sparse", &e[k], &t[k]);
        if (lm_closers)
          printf(",\n  \"%s_closer_accuracy\": %.6f, \"%s_closer_scored\": %lld", k ? "dense" : "sparse",
                 closer[k], k ? "dense" : "sparse", closer_n[k]);
      }
    printf("\n}\n");
  } else {
    printf("routing (%s tree depth D = %d; depth 0 = dense, D = %s):\n",
           r.content ? "content (paths from the router, per example)," : "", dua_inference_tree_depth(m),
           r.content ? "blocks on the same leaf" : "block-diagonal");
    for (int l = 0; l < r.layers; l++) {
      const dua_routing_head *h0 = &r.head[(size_t)l * r.heads];
      printf("  layer %d: depths", l);
      for (int h = 0; h < r.heads; h++)
        printf(" %d", r.head[(size_t)l * r.heads + h].depth);
      printf("  window %d sink %d shift %d  block density %.3f\n", h0->window, h0->sink, h0->shift, dens[l]);
    }
    printf("\n%-34s", "");
    for (int k = 0; k < 2; k++)
      if (want[k])
        printf("%16s", k ? "dense" : "sparse (routing)");
    printf("\n%-34s", "test accuracy");
    for (int k = 0; k < 2; k++)
      if (want[k])
        printf("%16.4f", e[k].accuracy);
    if (lm_closers) {
      printf("\n%-34s", "closer accuracy");
      for (int k = 0; k < 2; k++)
        if (want[k])
          printf("%16.4f", closer[k]);
    }
    printf("\n%-34s", "test loss");
    for (int k = 0; k < 2; k++)
      if (want[k])
        printf("%16.4f", e[k].loss);
    printf("\n%-34s", "scored positions");
    for (int k = 0; k < 2; k++)
      if (want[k])
        printf("%16lld", (long long)e[k].scored);
    printf("\n%-34s", "block density");
    for (int k = 0; k < 2; k++)
      if (want[k])
        printf("%16.3f", e[k].density);
    printf("\n%-34s", "whole forward, ms per batch");
    for (int k = 0; k < 2; k++)
      if (want[k])
        printf("%16.3f", 1e3 * t[k].forward_seconds);
    printf("\n%-34s", "attention only, ms per batch");
    for (int k = 0; k < 2; k++)
      if (want[k])
        printf("%16.3f", 1e3 * t[k].attention_seconds);
    printf("\n");
    if (want[0] && want[1])
      printf("\nsparse vs dense: whole forward %.2fx, attention %.2fx faster\n",
             t[1].forward_seconds / t[0].forward_seconds, t[1].attention_seconds / t[0].attention_seconds);
    printf("(batch %d x %d tokens; median of %d after a warm-up; the whole forward runs to the logits;\n"
           " attention only = the %d dua_attention_forward calls of a batch)\n",
           c->batch, c->seq_len, o->reps, c->layers);
    if (lm_closers)
      printf("(dyck-lm: test accuracy counts every next-token target, openers included, whose kind and\n"
             " place are random, so even the generator's own predictor stays near 50%%; closer accuracy\n"
             " counts the %lld targets that are closers, which the prefix determines: 1.0 is reachable)\n",
             closer_n[want[0] ? 0 : 1]);
  }
  dua_routing_free(&r);
  free(dens);
  return 0;
}

/* ---------------------------------------------------------------- generate */

static void print_vocab(dua_inference_model *m) {
  fprintf(stderr, "vocabulary:");
  for (int v = 0; v < dua_inference_vocab_size(m); v++)
    fprintf(stderr, " %s", dua_inference_token_name(m, v));
  fprintf(stderr, "\n");
}

/* Token names separated by white space -> ids; -1 with a message on an unknown name. */
static int parse_prompt(dua_inference_model *m, const char *text, int32_t *ids, int max) {
  int n = 0;
  const char *p = text;
  for (;;) {
    while (*p == ' ' || *p == '\t' || *p == '\n')
      p++;
    if (!*p)
      break;
    const char *e = p;
    while (*e && *e != ' ' && *e != '\t' && *e != '\n')
      e++;
    char name[64];
    size_t len = (size_t)(e - p);
    int32_t id = -1;
    if (len < sizeof name) {
      memcpy(name, p, len);
      name[len] = '\0';
      id = dua_inference_token_id(m, name);
    }
    if (id < 0) {
      fprintf(stderr, "dua-run: --prompt: unknown token \"%.*s\"\n", (int)len, p);
      print_vocab(m);
      return -1;
    }
    if (n == max) {
      fprintf(stderr, "dua-run: --prompt has more than %d tokens (the model's seq_len)\n", max);
      return -1;
    }
    ids[n++] = id;
    p = e;
  }
  if (n == 0) {
    fprintf(stderr, "dua-run: --prompt holds no token\n");
    print_vocab(m);
    return -1;
  }
  return n;
}

static int is_text(dua_inference_model *m) {
  return dua_inference_config(m)->task == DUA_TASK_TEXT;
}

/* Length of the well-formed UTF-8 sequence of 2-4 bytes at b[0..n), 0 if none starts there. */
static int utf8_len(const int32_t *b, int n) {
  const int c = b[0];
  int len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
  if (len == 0 || n < len)
    return 0;
  const int lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80, hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
  if (b[1] < lo || b[1] > hi)
    return 0;
  for (int k = 2; k < len; k++)
    if (b[k] < 0x80 || b[k] > 0xBF)
      return 0;
  return len;
}

/* Byte tokens as text (malloc'ed): printable ASCII and well-formed UTF-8 as they are, backslash, newline,
 * tab and carriage return as \\, \n, \t, \r, every other byte as \xHH. */
static char *text_of(const int32_t *ids, int n) {
  char *out = malloc((size_t)n * 4 + 1), *p = out;
  if (!out)
    return NULL;
  for (int i = 0; i < n;) {
    const int b = ids[i], len = b >= 0x80 ? utf8_len(ids + i, n - i) : 0;
    if (len > 0) {
      for (int k = 0; k < len; k++)
        *p++ = (char)ids[i + k];
      i += len;
      continue;
    }
    if (b == '\\' || b == '\n' || b == '\t' || b == '\r')
      p += sprintf(p, "\\%c", b == '\\' ? '\\' : b == '\n' ? 'n' : b == '\t' ? 't' : 'r');
    else if (b >= 0x20 && b < 0x7f)
      *p++ = (char)b;
    else
      p += sprintf(p, "\\x%02X", b & 0xff);
    i++;
  }
  *p = '\0';
  return out;
}

/* Tokens by name separated by spaces, or for the text task as one escaped text. */
static void print_tokens(dua_inference_model *m, const int32_t *ids, int n) {
  if (is_text(m)) {
    char *t = text_of(ids, n);
    printf("\"%s\"", t ? t : "?");
    free(t);
    return;
  }
  for (int i = 0; i < n; i++)
    printf("%s%s", i ? " " : "", dua_inference_token_name(m, ids[i]));
}

/* "key": [names], and for the text task also "key_text": the escaped text. */
static void json_tokens(dua_inference_model *m, const char *key, const int32_t *ids, int n) {
  printf("  \"%s\": [", key);
  for (int i = 0; i < n; i++) {
    printf("%s", i ? ", " : "");
    json_string(dua_inference_token_name(m, ids[i]));
  }
  printf("]");
  if (is_text(m)) {
    char *t = text_of(ids, n);
    printf(", \"%s_text\": ", key);
    json_string(t ? t : "?");
    free(t);
  }
}

/* The text task's prompt: the argument's bytes. */
static int text_prompt(const char *text, int32_t *ids, int max) {
  const size_t n = strlen(text);
  if (n == 0) {
    fprintf(stderr, "dua-run: --prompt is empty\n");
    return -1;
  }
  if (n > (size_t)max) {
    fprintf(stderr, "dua-run: --prompt has %zu bytes, more than the model's seq_len %d\n", n, max);
    return -1;
  }
  for (size_t i = 0; i < n; i++)
    ids[i] = (unsigned char)text[i];
  return (int)n;
}

static int run_generate(dua_context *ctx, dua_inference_model *m, const options *o, const char *device) {
  const dua_trainer_config *c = dua_inference_config(m);
  const int S = c->seq_len;
  int32_t *prompt = malloc((size_t)S * sizeof *prompt), *targets = malloc((size_t)S * sizeof *targets);
  int32_t *out = malloc((size_t)S * sizeof *out), *rest = malloc((size_t)S * sizeof *rest);
  int rc = 1, P = 0, expected = -1, lm_rest = 0; /* lm_rest: the test example's tokens after the prompt */
  if (!prompt || !targets || !out || !rest)
    goto done;
  if (o->prompt_test >= 0) {
    const int n = dua_inference_test_size(m);
    if (o->prompt_test >= n) {
      fprintf(stderr, "dua-run: --prompt-test %d: the test set has %d examples (0..%d)\n", o->prompt_test, n,
              n - 1);
      rc = 2;
      goto done;
    }
    if (dua_inference_test_example(m, o->prompt_test, prompt, targets) != DUA_SUCCESS) {
      fprintf(stderr, "dua-run: %s\n", dua_context_last_error(ctx));
      goto done;
    }
    P = S;
    for (int i = 0; i < S; i++)
      if (targets[i] >= 0) {
        P = i + 1, expected = targets[i];
        break;
      }
    if (targets[0] >= 0) { /* next-token LM (every position scored): the first half is the prompt */
      P = S / 2, expected = -1, lm_rest = S - P;
      memcpy(rest, prompt + P, (size_t)lm_rest * sizeof *rest);
    }
  } else if ((P = is_text(m) ? text_prompt(o->prompt, prompt, S) : parse_prompt(m, o->prompt, prompt, S)) <
             0) {
    rc = 2;
    goto done;
  }
  int n_new = o->n_new;
  if (n_new < 0) { /* default: 8, or as many as fit */
    n_new = S - P < 8 ? S - P : 8;
    if (n_new < 1) {
      fprintf(stderr, "dua-run: the prompt has %d tokens, the model's seq_len: no room for a new token\n", P);
      rc = 2;
      goto done;
    }
  }
  dua_generate_options g;
  dua_generate_options_init(&g);
  g.temperature = o->temperature, g.top_k = o->top_k, g.seed = o->seed, g.dense = o->dense_only;
  dua_generate_stats st;
  /* warm-up (kernel builds, first launches, the cache's allocation), then the measured run */
  dua_status s = dua_inference_generate(m, prompt, P, n_new < 2 ? n_new : 2, &g, out, NULL, NULL);
  if (s == DUA_SUCCESS)
    s = dua_inference_generate(m, prompt, P, n_new, &g, out, NULL, &st);
  if (s != DUA_SUCCESS) {
    fprintf(stderr, "dua-run: %s\n", dua_context_last_error(ctx));
    rc = s == DUA_ERROR_INVALID_ARGUMENT ? 2 : 1;
    goto done;
  }
  if (o->json) {
    printf("{\n  \"checkpoint\": ");
    json_string(o->dir);
    printf(", \"device\": ");
    json_string(device);
    printf(", \"routing\": \"%s\", \"temperature\": %g, \"top_k\": %d, \"seed\": %llu,\n",
           g.dense ? "dense" : "sparse", (double)g.temperature, g.top_k, o->seed);
    json_tokens(m, "prompt", prompt, P);
    printf(",\n");
    json_tokens(m, "generated", out, n_new);
    if (expected >= 0) {
      printf(",\n  \"expected_first\": ");
      json_string(dua_inference_token_name(m, expected));
    }
    if (lm_rest > 0) {
      printf(",\n");
      json_tokens(m, "expected", rest, n_new < lm_rest ? n_new : lm_rest);
    }
    printf(
        ",\n  \"prefill_ms\": %.4f, \"decode_steps\": %d, \"decode_ms\": %.4f, \"tokens_per_second\": %.2f, "
        "\"decode_tokens_per_second\": %.2f,\n  \"kv_bytes_per_token\": %.1f, \"dense_kv_bytes_per_token\": "
        "%.1f, \"density\": %.6f\n}\n",
        1e3 * st.prefill_seconds, st.decode_steps, 1e3 * st.decode_seconds, st.tokens_per_second,
        st.decode_tokens_per_second, st.kv_bytes_per_token, st.dense_kv_bytes_per_token, st.density);
  } else {
    if (o->prompt_test >= 0)
      printf("prompt (test example %d, %d tokens): ", o->prompt_test, P);
    else
      printf("prompt (%d tokens): ", P);
    print_tokens(m, prompt, P);
    printf("\ngenerated (%d tokens, %s, %s attention): ", n_new, g.temperature == 0 ? "greedy" : "sampled",
           g.dense ? "dense" : "learned sparse");
    print_tokens(m, out, n_new);
    printf("\n");
    if (expected >= 0)
      printf("expected first token: %s (%s)\n", dua_inference_token_name(m, expected),
             out[0] == expected ? "right" : "wrong");
    if (lm_rest > 0) {
      const int shown = n_new < lm_rest ? n_new : lm_rest;
      int same = 0;
      for (int i = 0; i < shown; i++)
        same += out[i] == rest[i];
      printf("test example continues:  ");
      print_tokens(m, rest, shown);
      printf("\n(%d of %d generated tokens equal the example's)\n", same, shown);
    }
    printf("prefill: %d tokens in %.2f ms (block-sparse forward, K/V into the paged cache, first token)\n", P,
           1e3 * st.prefill_seconds);
    if (st.decode_steps > 0)
      printf("decode: %d steps in %.2f ms, %.1f tokens/s (one token per dua_decode step, logits read back)\n",
             st.decode_steps, 1e3 * st.decode_seconds, st.decode_tokens_per_second);
    printf("overall: %.1f new tokens/s\n", st.tokens_per_second);
    if (st.decode_steps > 0)
      printf("K/V read per decode step: %.1f KB %s vs %.1f KB dense (%.2f of dense; block density %.3f)\n",
             st.kv_bytes_per_token / 1024, g.dense ? "(dense routing)" : "sparse",
             st.dense_kv_bytes_per_token / 1024, st.kv_bytes_per_token / st.dense_kv_bytes_per_token,
             st.density);
  }
  rc = 0;
done:
  free(prompt);
  free(targets);
  free(out);
  free(rest);
  return rc;
}

/* splitmix64: the cut points and replacement tokens of `causal`. */
static uint64_t next_random(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* causal: logits of positions 0..t unchanged, bit for bit, when every token after t is replaced. */
static int run_causal(dua_inference_model *m, const options *o) {
  const dua_trainer_config *c = dua_inference_config(m);
  const int S = c->seq_len, V = dua_inference_vocab_size(m);
  const int n = o->examples < dua_inference_test_size(m) ? o->examples : dua_inference_test_size(m);
  int32_t *tokens = malloc(sizeof(int32_t) * S), *pert = malloc(sizeof(int32_t) * S),
          *targets = malloc(sizeof(int32_t) * S);
  float *la = malloc(sizeof(float) * (size_t)S * V), *lb = malloc(sizeof(float) * (size_t)S * V);
  int rc = 1;
  if (!tokens || !pert || !targets || !la || !lb) {
    fprintf(stderr, "dua-run: out of memory\n");
    goto done;
  }
  uint64_t rng = o->seed;
  long checks = 0, failures = 0, changed_later = 0;
  for (int dense = 0; dense <= 1; dense++) {
    if ((dense && o->sparse_only) || (!dense && o->dense_only))
      continue;
    for (int e = 0; e < n; e++) {
      dua_status st = dua_inference_test_example(m, e, tokens, targets);
      if (st == DUA_SUCCESS)
        st = dua_inference_forward(m, tokens, 1, S, dense, la);
      if (st != DUA_SUCCESS) {
        fprintf(stderr, "dua-run: test example %d: %s\n", e, dua_status_string(st));
        goto done;
      }
      for (int k = 0; k < o->cuts; k++) {
        const int t = (int)(next_random(&rng) % (uint64_t)(S - 1)); /* 0..S-2: at least one token after */
        memcpy(pert, tokens, sizeof(int32_t) * S);
        for (int j = t + 1; j < S; j++)
          pert[j] = (int32_t)(next_random(&rng) % (uint64_t)V);
        pert[t + 1] =
            (tokens[t + 1] + 1 + (int32_t)(next_random(&rng) % (uint64_t)(V - 1))) % V; /* differs */
        if ((st = dua_inference_forward(m, pert, 1, S, dense, lb)) != DUA_SUCCESS) {
          fprintf(stderr, "dua-run: test example %d: %s\n", e, dua_status_string(st));
          goto done;
        }
        checks++;
        const size_t kept = (size_t)(t + 1) * V;
        if (memcmp(la, lb, sizeof(float) * kept) != 0) {
          size_t i = 0;
          while (la[i] == lb[i] || (isnan(la[i]) && isnan(lb[i])))
            i++;
          failures++;
          fprintf(stderr,
                  "dua-run: NOT causal (%s): example %d, tokens after %d replaced, logit %d of position "
                  "%d changed: %.9g -> %.9g\n",
                  dense ? "dense" : "routing", e, t, (int)(i % V), (int)(i / V), la[i], lb[i]);
        }
        changed_later += memcmp(la + kept, lb + kept, sizeof(float) * ((size_t)S * V - kept)) != 0;
      }
    }
  }
  if (o->json)
    printf("{\"checks\": %ld, \"failures\": %ld, \"later_changed\": %ld, \"causal\": %s}\n", checks, failures,
           changed_later, failures ? "false" : "true");
  else
    printf(
        "causality: %ld checks (%d examples x %d cuts%s), %ld failed; logits after the cut changed in %ld of "
        "them\n%s\n",
        checks, n, o->cuts,
        o->sparse_only  ? ", routing"
        : o->dense_only ? ", dense"
                        : ", routing and dense",
        failures, changed_later,
        failures ? "NOT causal" : "causal: every earlier logit identical bit for bit");
  rc = failures ? 1 : 0;
done:
  free(tokens);
  free(pert);
  free(targets);
  free(la);
  free(lb);
  return rc;
}

int main(int argc, char **argv) {
  options o;
  if (parse_args(argc, argv, &o) != 0)
    return 2;
  char ckpt[4096], err[1024] = "";
  struct stat sb;
  if (stat(o.dir, &sb) != 0) {
    fprintf(stderr, "dua-run: %s: %s\n", o.dir, strerror(errno));
    return 1;
  }
  if (S_ISDIR(sb.st_mode))
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", o.dir);
  else
    snprintf(ckpt, sizeof ckpt, "%s", o.dir);
  dua_context_options copt;
  dua_context_options_init(&copt);
  copt.selector = o.device;
  dua_context *ctx = NULL;
  dua_status st = dua_context_create(&copt, &ctx);
  if (st != DUA_SUCCESS) {
    fprintf(stderr, "dua-run: no device%s%s: %s\n", o.device ? " matches " : "", o.device ? o.device : "",
            dua_status_string(st));
    return 1;
  }
  dua_device_info info;
  dua_context_device_info(ctx, &info);
  dua_inference_model *m = NULL;
  if ((st = dua_inference_model_load_with_corpus(ctx, ckpt, o.routing, o.text, &m, err, sizeof err)) !=
      DUA_SUCCESS) {
    fprintf(stderr, "dua-run: %s\n", err[0] ? err : dua_status_string(st));
    dua_context_destroy(ctx);
    return 1;
  }
  const dua_trainer_config *c = dua_inference_config(m);
  if (!o.json)
    printf("dua-run %s %s: %s, %s mode, step %lld, %d layers x %d heads, width %d, seq_len %d, block %d, "
           "arity %d%s%s\ndevice: %s\n\n",
           argv[1], ckpt, dua_task_kind_name(c->task),
           c->mode == DUA_ROUTING_CONTENT ? "content"
           : c->mode == DUA_ROUTING_PAPER ? "paper"
           : c->mode                      ? "native"
                                          : "dense",
           (long long)dua_inference_step_count(m), c->layers, c->heads, c->width, c->seq_len, c->block,
           c->arity, o.routing ? ", routing " : "", o.routing ? o.routing : "", info.name);
  dua_text_corpus_info corpus;
  if (!o.json && dua_inference_text_corpus(m, &corpus) == DUA_SUCCESS) {
    printf("corpus %s: %llu bytes (held out: the last %llu), SHA-256 ", corpus.path,
           (unsigned long long)corpus.bytes, (unsigned long long)corpus.heldout_bytes);
    for (int i = 0; i < 32; i++)
      printf("%02x", corpus.sha256[i]);
    printf("\n\n");
  }
  int rc = o.eval     ? run_eval(ctx, m, &o, info.name)
           : o.causal ? run_causal(m, &o)
                      : run_generate(ctx, m, &o, info.name);
  dua_inference_model_destroy(m);
  dua_context_destroy(ctx);
  return rc;
}
