/* dua-tune: per-device autotuning of dua's kernels: the portable forward's and backward's tiles (bm, bn, tm,
 * tn), the NVIDIA tensor-core forward's m-tiles per warp (mt, mt_cs) and the paged-KV decode's plan (kernel
 * variant, tile, work-items, rows) and split-KV thresholds. Runs the compiled default configuration as the
 * reference, then candidates from the device's parameter space (dua_tuning_candidates: every one, or a seeded
 * random fraction; the decode kernels include the warp kernel where it runs natively; decode and tensor-core
 * candidates that give the same launch plan on every problem are timed once),
 * checks each candidate's outputs against the reference on every problem shape, times it with profiling
 * events (warm-up, median of reps), shows a progress bar with an ETA on stderr, and writes the best
 * configuration into the tuning database (merged with the file's other entries, through a temporary file and
 * rename). */
#include "dua_tune.h"
#include "attention/forward_internal.h" /* dua_forward_mma_plan */
#include "runtime/context_internal.h"   /* DUA_TUNING_EMULATED_MMA: the tensor-core forward forced on */
#include "tuning/tuning_db.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define MAXV 32
#define KEY_INTS                                                                                             \
  7 /* decode plan key per problem: kernel, tile, threads, heads per group, splits, unroll, vpl */

static void usage(FILE *f) {
  fprintf(
      f,
      "usage: dua-tune --kernel fwd|fwd_mma|bwd|decode --dtype fp32|fp16 --dim D --n N [N...]\n"
      "                --depth d [d...] [--batch B [B...]] [--causal C [C...]] [--heads H] [--kv-heads H]\n"
      "                [--block BLK] [--arity P] [--tokens T] [--page P] [--device SEL] [--fraction F]\n"
      "                [--seed S] [--out FILE] [--max-minutes M] [--reps R] [--warmup W] [--min-gain G]\n"
      "Tunes one kernel for one dtype and head dim over the problem shapes N x depth x batch x causal\n"
      "(positional tree layout; block BLK = 128, arity 2 by default; --causal 0 1 gives both, default 0;\n"
      "fwd, fwd_mma and bwd):\n"
      "  fwd     the portable forward's tile (bm, bn, tm, tn); batch 1, heads 2 by default\n"
      "  fwd_mma the NVIDIA tensor-core forward (head dims 64, 128): mt, mt_cs = m-tiles of 16 query rows\n"
      "          per warp (1 or 2; 2 needs BLK >= 128) for most calls and for causal layouts visiting\n"
      "          <= 8 blocks per row (tune mt_cs with causal shapes: depth -1 visits 1, depth D - 3\n"
      "          visits 8); fp32 means the tf32 variant (allow_tf32 = 1). Only where the kernel runs\n"
      "          (NVIDIA, the mma.sync probe for that dtype passed); DUA_TUNING_EMULATED_MMA=1 runs it\n"
      "          emulated elsewhere (tests: very slow). Candidates that give the same MT on every problem\n"
      "          are timed once (the one nearest the default: a class no problem exercises keeps the\n"
      "          default's value)\n"
      "  bwd     the portable backward's tile (bm, bn, tm, tn, both passes), timing dua_attention_backward\n"
      "          after one forward; batch 1, heads 2 by default\n"
      "  decode  dua_decode on a paged KV cache: B sequences (default 4) of N context tokens, page P tokens\n"
      "          (default 16), T query tokens (default 1), heads H (default 4) over kv-heads (default H);\n"
      "          dtype is the cache's. Two stages, two database entries: the plan (staged = the kernel:\n"
      "          0 regs, 1 staged, 2 warp, 3 mma (2 and 3: NVIDIA inline PTX, only where the mma.sync probe\n"
      "          passed, or with DUA_TUNING_EMULATED_WARP=1, emulated and slow: tests; mma: fp16 cache, "
      "head\n"
      "          dim 64 or 128, at most 8 rows); tile (warp: keys per batch of a warp; mma: 16), threads; + "
      "rows when a work-group serves several query rows: GQA or T > 1, entry\n"
      "          \"decode_gqa\", else \"decode\"), then with the best plan the split-KV thresholds\n"
      "          (\"decode_split\": waves, minunit, maxspl: a call splits while its work-groups are fewer\n"
      "          than waves x compute units, each split at least minunit key units, at most maxspl splits;\n"
      "          its reference is the best plan's compiled thresholds: the warp kernel has its own). One\n"
      "          \"decode_split\" entry per dtype and head dim serves both plan entries: the last run's\n"
      "          stays.\n"
      "          Candidates that give the same launch plan (and split counts) on every problem as one\n"
      "          already timed are skipped; a plan a problem cannot run as given is never launched.\n");
  fprintf(
      f,
      "The compiled default configuration is the reference (the database in effect is not read while\n"
      "tuning); every candidate's outputs (fwd, decode: O and LSE; bwd: dQ, dK, dV) must match it within\n"
      "fp32: 1e-4 + 1e-3 |ref|, fp16 and tf32: 2e-3 + 1e-2 |ref| (fp16 stores results rounded to half, so\n"
      "another summation order moves them by about one half ulp), else it is rejected. Candidates: every\n"
      "configuration the device allows (local memory, work-group size, preferred multiple, the kernels'\n"
      "divisibility rules), or a random --fraction F of them (seed --seed, default 1; the split thresholds\n"
      "are always searched whole). Time per candidate: --warmup calls (default 1), then the median device\n"
      "time (profiling events) of --reps calls (default 5) per shape. A candidate's score is the mean over\n"
      "the shapes of its time / the default's time (every shape counts alike, however long it runs); a\n"
      "candidate more than --min-gain G (default 0.02) slower than the default on any shape cannot win.\n"
      "Stops early after --max-minutes (default 10; decode gives its plan stage 3/4 of it) and keeps the\n"
      "best so far; the default and the best are then re-timed alternately (3 rounds, medians) and the best\n"
      "is kept only if its score is still below 1 - G and no shape is more than G slower, else the entry\n"
      "stores the default (decode: the same for both entries together against the compiled defaults), so\n"
      "a tuned entry is never slower than the default beyond G. --out: the database to merge into\n"
      "(default: DUA_TUNING_FILE, else $XDG_DATA_HOME/dua/tuning.json, else\n"
      "~/.local/share/dua/tuning.json; the directory is created).\n");
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Tuned per-shape times b[] against the default's d[]: the mean ratio (the score) and the worst ratio. */
static double ratio_score(const double *b, const double *d, int n, double *worst) {
  double sum = 0, w = 0;
  for (int i = 0; i < n; i++) {
    const double r = b[i] / d[i];
    sum += r;
    w = r > w ? r : w;
  }
  if (worst)
    *worst = w;
  return n > 0 ? sum / n : 1.0;
}

/* Keep tuned times b[] over the default's d[]: min_gain better on average, nowhere min_gain worse. */
static int tuned_wins(const double *b, const double *d, int n, double min_gain) {
  double worst;
  const double score = ratio_score(b, d, n, &worst);
  return score < 1.0 - min_gain && worst <= 1.0 + min_gain;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static int parse_int(const char *flag, const char *v) {
  char *end;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno || *end || end == v || x < -1000000000L || x > 1000000000L) {
    fprintf(stderr, "dua-tune: %s expects an integer, not \"%s\"\n", flag, v);
    exit(2);
  }
  return (int)x;
}

static double parse_double(const char *flag, const char *v) {
  char *end;
  double x = strtod(v, &end);
  if (*end || end == v || !isfinite(x)) {
    fprintf(stderr, "dua-tune: %s expects a number, not \"%s\"\n", flag, v);
    exit(2);
  }
  return x;
}

/* Median device time (ms) of t->reps calls, after t->warmup calls; NAN when a call fails. */
static double time_problem(const tuner *t, problem *p) {
  for (int i = 0; i < t->warmup; i++)
    if (problem_run(t, p) != DUA_SUCCESS)
      return NAN;
  clFinish(t->queue);
  double ms[64];
  int reps = t->reps > 64 ? 64 : t->reps;
  for (int r = 0; r < reps; r++) {
    if (t->events) {
      cl_event a = NULL, b = NULL;
      clEnqueueMarkerWithWaitList(t->queue, 0, NULL, &a);
      dua_status st = problem_run(t, p);
      clEnqueueMarkerWithWaitList(t->queue, 0, NULL, &b);
      clWaitForEvents(1, &b);
      cl_ulong ea = 0, eb = 0;
      clGetEventProfilingInfo(a, CL_PROFILING_COMMAND_END, sizeof ea, &ea, NULL);
      clGetEventProfilingInfo(b, CL_PROFILING_COMMAND_END, sizeof eb, &eb, NULL);
      clReleaseEvent(a);
      clReleaseEvent(b);
      if (st != DUA_SUCCESS)
        return NAN;
      ms[r] = 1e-6 * (double)(eb - ea);
    } else {
      double t0 = now_s();
      if (problem_run(t, p) != DUA_SUCCESS)
        return NAN;
      clFinish(t->queue);
      ms[r] = 1e3 * (now_s() - t0);
    }
  }
  qsort(ms, (size_t)reps, sizeof ms[0], cmp_double);
  return reps % 2 ? ms[reps / 2] : 0.5 * (ms[reps / 2 - 1] + ms[reps / 2]);
}

static void fmt_time(double s, char *out, size_t n) {
  if (s < 0 || !isfinite(s))
    snprintf(out, n, "--:--");
  else
    snprintf(out, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
}

static void progress(const char *stage, int done, int total, double t0, double best_ms, double default_ms) {
  const int width = 30;
  int fill = total ? done * width / total : width;
  char bar[64], el[16], eta[16];
  for (int i = 0; i < width; i++)
    bar[i] = i < fill ? '#' : '.';
  bar[width] = '\0';
  double spent = now_s() - t0;
  fmt_time(spent, el, sizeof el);
  fmt_time(done ? spent / done * (total - done) : -1, eta, sizeof eta);
  fprintf(stderr, "\r%s [%s] %d/%d  elapsed %s  ETA %s  best %.3f ms (default %.3f)  ", stage, bar, done,
          total, el, eta, best_ms, default_ms);
  fflush(stderr);
}

static void default_db_path(char *out, size_t n) {
  const char *env = getenv("DUA_TUNING_FILE"), *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
  if (env && *env)
    snprintf(out, n, "%s", env);
  else if (xdg && *xdg)
    snprintf(out, n, "%s/dua/tuning.json", xdg);
  else if (home && *home)
    snprintf(out, n, "%s/.local/share/dua/tuning.json", home);
  else
    tune_die("no --out, DUA_TUNING_FILE, XDG_DATA_HOME or HOME to write the database to", NULL);
}

/* mkdir -p of the directory holding path. */
static void make_parent(const char *path) {
  char dir[1024];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (!slash || slash == dir)
    return;
  *slash = '\0';
  for (char *c = dir + 1; *c; c++)
    if (*c == '/') {
      *c = '\0';
      mkdir(dir, 0755);
      *c = '/';
    }
  mkdir(dir, 0755);
}

static void fmt_params(const dua_tuning_info *ti, const int32_t *p, char *out, size_t n) {
  size_t at = 0;
  out[0] = '\0';
  for (int i = 0; i < ti->num_params && at < n; i++) {
    const char *variant = strcmp(ti->param_names[i], "staged") ? NULL : dua_tune_decode_variant(p[i]);
    at += (size_t)snprintf(out + at, n - at, "%s%s=%d%s%s%s", i ? " " : "", ti->param_names[i], (int)p[i],
                           variant ? "(" : "", variant ? variant : "", variant ? ")" : "");
  }
}

/* ---------------------------------------------------------------- one stage: one database entry */

typedef struct stage {
  const char *kernel;
  int split; /* the decode split-KV thresholds */
  double deadline;
  /* results */
  dua_tuning_info ti; /* names and the reference (the compiled default; split: that of the plan stage's best)
                       */
  int32_t compiled[DUA_TUNING_MAX_PARAMS]; /* the values that give the library's compiled behaviour */
  int32_t best[DUA_TUNING_MAX_PARAMS];
  double default_total, best_total, t0, spent;
  double default_ms[DUA_TUNING_MAX_SHAPES], best_ms[DUA_TUNING_MAX_SHAPES]; /* per problem */
  int tried, rejected, failed, same_plan, no_fit, space, stopped;
} stage;

/* Sets (params) or clears (NULL) the context's override for the stage's kernel. */
static dua_status set_params(const tuner *t, const stage *s, const int32_t *params) {
  return dua_context_set_tuning(t->ctx, s->kernel, t->dtype, t->dim, params, params ? s->ti.num_params : 0);
}

/* The tensor-core forward's MT for problem p under the current settings, and its source; exits when the
 * problem would run the portable kernel (the kernel stopped running: a failed build turns the fast paths off,
 * with a warning). */
static int mma_plan(const tuner *t, const problem *p, dua_tuning_source *source) {
  const int mt = dua_forward_mma_plan(t->ctx, p->layout, t->dim, t->dtype == DUA_F16, source, NULL, 0);
  if (!mt) {
    fprintf(stderr, "dua-tune: N %d depth %d batch %d%s would not run the tensor-core forward%s\n", p->n,
            p->depth, p->batch, p->causal ? " causal" : "",
            t->ctx->fast_paths_disabled ? " (it failed and the fast paths were turned off: see the warnings)"
                                        : "");
    exit(1);
  }
  return mt;
}

/* Decode and the tensor-core forward: the launch plan of every problem under the current settings (the
 * forward: its MT); -1 if some problem does not take the stage's override (it does not fit that call: never
 * launched). */
static int plan_key(const tuner *t, const stage *s, problem *pr, int nprob, int want_override, int32_t *key) {
  for (int i = 0; i < nprob; i++) {
    if (t->mma) {
      dua_tuning_source src;
      int32_t *k = key + (size_t)i * KEY_INTS;
      memset(k, 0, KEY_INTS * sizeof *k);
      k[0] = mma_plan(t, &pr[i], &src);
      if (want_override && src != DUA_TUNING_OVERRIDE)
        return -1;
      continue;
    }
    dua_decode_plan_info pi;
    tune_check(t->ctx, problem_decode_plan(t, &pr[i], &pi), "dua_decode_plan_get");
    if (want_override && (s->split ? pi.split_source : pi.source) != DUA_TUNING_OVERRIDE)
      return -1;
    int32_t *k = key + (size_t)i * KEY_INTS;
    /* the warp kernel's tile is a batch of key steps: what runs is unroll (and vpl), clamped to the key unit
     */
    k[0] = pi.staged, k[1] = pi.staged == 2 ? 0 : pi.tile_n, k[2] = pi.threads, k[3] = pi.heads_per_group;
    k[4] = pi.splits, k[5] = pi.unroll, k[6] = pi.vpl;
  }
  return 0;
}

static double log2_distance(const int32_t *a, const int32_t *b, int np) {
  double d = 0;
  for (int i = 0; i < np; i++)
    d += fabs(log2((double)(a[i] + 1)) - log2((double)(b[i] + 1)));
  return d;
}

static const int32_t *sort_ref;
static int sort_np;
static int cmp_distance(const void *a, const void *b) {
  double x = log2_distance(a, sort_ref, sort_np), y = log2_distance(b, sort_ref, sort_np);
  return x < y ? -1 : x > y;
}

static void run_stage(tuner *t, problem *pr, int nprob, double fraction, double min_gain, uint64_t seed,
                      stage *s) {
  dua_context *ctx = t->ctx;
  s->t0 = now_s();
  tune_check(ctx, dua_context_get_tuning(ctx, s->kernel, t->dtype, t->dim, t->block, &s->ti),
             "dua_context_get_tuning");
  const int np = s->ti.num_params, decode = t->kind == TUNE_DECODE, plans = decode || t->mma;
  if (s->split) {
    /* the compiled thresholds depend on the plan that runs (the plan stage's best, in place now): the warp
     * kernel has its own, scaled by the query rows per work-group; the reference is what the problems use
     * without a split override */
    tune_check(ctx, set_params(t, s, NULL), "dua_context_set_tuning");
    for (int i = 0; i < nprob; i++) {
      dua_decode_plan_info pi;
      tune_check(ctx, problem_decode_plan(t, &pr[i], &pi), "dua_decode_plan_get");
      const int32_t th[3] = {pi.split.waves, pi.split.min_units, pi.split.max_splits};
      if (i == 0)
        memcpy(s->ti.default_params, th, sizeof th);
      else if (memcmp(s->ti.default_params, th, sizeof th))
        fprintf(stderr,
                "dua-tune: note: N %d depth %d batch %d: compiled split thresholds %d,%d,%d differ from the "
                "first problem's %d,%d,%d (its plan differs); the first problem's are the reference\n",
                pr[i].n, pr[i].depth, pr[i].batch, (int)th[0], (int)th[1], (int)th[2],
                (int)s->ti.default_params[0], (int)s->ti.default_params[1], (int)s->ti.default_params[2]);
    }
  }
  const size_t psz = (size_t)np * sizeof(int32_t);
  int total = 0;
  tune_check(ctx, dua_tuning_candidates(ctx, s->kernel, t->dtype, t->dim, t->block, NULL, 0, &total),
             "dua_tuning_candidates");
  if (!s->split) /* the split stage's was taken before any override (main) */
    memcpy(s->compiled, s->ti.default_params, psz);
  int32_t *cands = malloc(((size_t)total + 1) * psz);
  if (!cands)
    tune_die("out of memory", NULL);
  memcpy(cands, s->ti.default_params, psz); /* candidate 0: the compiled default (no override) */
  int space = 0;
  tune_check(ctx,
             dua_tuning_candidates(ctx, s->kernel, t->dtype, t->dim, t->block, cands + np, total, &space),
             "dua_tuning_candidates");
  s->space = space;
  /* drop the default from the space */
  int m = 0;
  for (int i = 0; i < space; i++)
    if (memcmp(cands + (size_t)(1 + i) * np, cands, psz))
      memmove(cands + (size_t)(1 + m++) * np, cands + (size_t)(1 + i) * np, psz);
  if (plans) {
    /* one candidate per distinct launch plan (the one nearest the default in log2 steps), only those every
     * problem can run as given */
    sort_ref = cands, sort_np = np;
    qsort(cands + np, (size_t)m, psz, cmp_distance);
    const size_t ksz = (size_t)nprob * KEY_INTS;
    int32_t *keys = malloc(((size_t)m + 1) * ksz * sizeof(int32_t));
    if (!keys)
      tune_die("out of memory", NULL);
    tune_check(ctx, set_params(t, s, NULL), "dua_context_set_tuning");
    plan_key(t, s, pr, nprob, 0, keys);
    int kept = 0;
    for (int i = 0; i < m; i++) {
      const int32_t *cp = cands + (size_t)(1 + i) * np;
      int32_t *key = keys + (size_t)(1 + kept) * ksz;
      tune_check(ctx, set_params(t, s, cp), "dua_context_set_tuning");
      if (plan_key(t, s, pr, nprob, 1, key) < 0) {
        s->no_fit++;
        continue;
      }
      int dup = 0;
      for (int j = 0; j <= kept && !dup; j++)
        dup = !memcmp(keys + (size_t)j * ksz, key, ksz * sizeof(int32_t));
      if (dup) {
        s->same_plan++;
        continue;
      }
      memmove(cands + (size_t)(1 + kept++) * np, cp, psz);
    }
    tune_check(ctx, set_params(t, s, NULL), "dua_context_set_tuning");
    free(keys);
    m = kept;
  }
  uint64_t rs = seed;
  for (int i = m - 1; i > 0; i--) {
    int j = (int)(splitmix(&rs) % (uint64_t)(i + 1));
    int32_t tmp[DUA_TUNING_MAX_PARAMS];
    memcpy(tmp, cands + (size_t)(1 + i) * np, psz);
    memcpy(cands + (size_t)(1 + i) * np, cands + (size_t)(1 + j) * np, psz);
    memcpy(cands + (size_t)(1 + j) * np, tmp, psz);
  }
  const int keep = fraction >= 1 || s->split ? m : (int)ceil(fraction * m);
  const int count = 1 + keep;

  char text[256];
  fmt_params(&s->ti, s->ti.default_params, text, sizeof text);
  if (plans)
    fprintf(stderr,
            "dua-tune: %s: default %s (%s); %d of the %d candidates with distinct launch plans (%d in the "
            "space)\n",
            s->kernel, text, s->ti.origin, keep, m, space);
  else
    fprintf(stderr, "dua-tune: %s: default %s (%s); %d of %d candidates\n", s->kernel, text, s->ti.origin,
            keep, space);
  s->default_total = NAN, s->best_total = INFINITY;
  double best_score = INFINITY;
  int best = 0;
  for (int c = 0; c < count; c++) {
    const int32_t *cp = cands + (size_t)c * np;
    if (c > 0 && now_s() > s->deadline) {
      s->stopped = 1;
      break;
    }
    dua_status st = set_params(t, s, c ? cp : NULL);
    double total_ms = 0;
    int ok = st == DUA_SUCCESS;
    for (int i = 0; i < nprob && ok; i++) {
      problem *p = &pr[i];
      if (problem_run(t, p) != DUA_SUCCESS) {
        ok = 0;
        break;
      }
      if (c == 0) {
        problem_read(t, p, p->ref);
      } else {
        problem_read(t, p, p->got);
        double g, r;
        long bad = problem_compare(t, p, &g, &r);
        if (bad >= 0) {
          char el[64];
          problem_element_name(t, p, bad, el, sizeof el);
          fmt_params(&s->ti, cp, text, sizeof text);
          fprintf(stderr, "\ndua-tune: rejected %s: N %d depth %d batch %d: %s = %g, reference %g\n", text,
                  p->n, p->depth, p->batch, el, g, r);
          s->rejected++;
          ok = -1;
          break;
        }
      }
      p->cand_ms = time_problem(t, p);
      if (!isfinite(p->cand_ms))
        ok = 0;
      total_ms += p->cand_ms;
    }
    if (ok == 0) {
      if (c == 0)
        tune_check(ctx, st != DUA_SUCCESS ? st : DUA_ERROR_INVALID_ARGUMENT, "the default configuration");
      s->failed++;
      fmt_params(&s->ti, cp, text, sizeof text);
      fprintf(stderr, "\ndua-tune: %s did not run: %s\n", text, dua_context_last_error(ctx));
    } else if (ok > 0) {
      s->tried++;
      if (c == 0) {
        s->default_total = total_ms;
        for (int i = 0; i < nprob; i++)
          pr[i].default_ms = pr[i].best_ms = pr[i].cand_ms;
      }
      double cand[DUA_TUNING_MAX_SHAPES], dflt[DUA_TUNING_MAX_SHAPES], worst;
      for (int i = 0; i < nprob; i++)
        cand[i] = pr[i].cand_ms, dflt[i] = pr[i].default_ms;
      const double score = ratio_score(cand, dflt, nprob, &worst);
      if (score < best_score && (c == 0 || worst <= 1.0 + min_gain)) {
        best_score = score, s->best_total = total_ms, best = c;
        for (int i = 0; i < nprob; i++)
          pr[i].best_ms = pr[i].cand_ms;
      }
    }
    if (t->mma)
      mma_plan(t, &pr[0], NULL); /* still the tensor-core kernel */
    progress(s->kernel, c + 1, count, s->t0, s->best_total, s->default_total);
  }
  fprintf(stderr, "\n");
  /* confirmation: the search's numbers come from one pass each on a possibly busy machine, so the default and
   * the best are timed again, alternating, 3 rounds; the medians are what is reported and stored */
  if (best != 0 && isfinite(s->default_total)) {
    double dm[DUA_TUNING_MAX_SHAPES][3], bm[DUA_TUNING_MAX_SHAPES][3];
    for (int r = 0; r < 3; r++)
      for (int w = 0; w < 2; w++) {
        tune_check(ctx, set_params(t, s, w ? cands + (size_t)best * np : NULL), "dua_context_set_tuning");
        for (int i = 0; i < nprob; i++)
          (w ? bm : dm)[i][r] = time_problem(t, &pr[i]);
      }
    double dt = 0, bt = 0, dmed[DUA_TUNING_MAX_SHAPES], bmed[DUA_TUNING_MAX_SHAPES];
    for (int i = 0; i < nprob; i++) {
      qsort(dm[i], 3, sizeof(double), cmp_double);
      qsort(bm[i], 3, sizeof(double), cmp_double);
      pr[i].default_ms = dmed[i] = dm[i][1], pr[i].best_ms = bmed[i] = bm[i][1];
      dt += dm[i][1], bt += bm[i][1];
    }
    s->default_total = dt, s->best_total = bt;
    if (!tuned_wins(bmed, dmed, nprob, min_gain)) { /* the default holds up on a second look: keep it */
      double worst;
      const double score = ratio_score(bmed, dmed, nprob, &worst);
      fmt_params(&s->ti, cands + (size_t)best * np, text, sizeof text);
      fprintf(
          stderr,
          "dua-tune: %s: on re-timing the search's best %s (%.3f ms; %.3f of the default's time on average, "
          "%.3f at worst) is not %.0f%% faster on average and nowhere %.0f%% slower than the default "
          "(%.3f ms): keeping the default\n",
          s->kernel, text, bt, score, worst, 100 * min_gain, 100 * min_gain, dt);
      best = 0, s->best_total = dt;
      for (int i = 0; i < nprob; i++)
        pr[i].best_ms = pr[i].default_ms;
    }
  }
  memcpy(s->best, cands + (size_t)best * np, psz);
  for (int i = 0; i < nprob; i++)
    s->default_ms[i] = pr[i].default_ms, s->best_ms[i] = pr[i].best_ms;
  /* what follows (the next stage, the caller) runs with the best configuration */
  tune_check(ctx, set_params(t, s, best ? s->best : NULL), "dua_context_set_tuning");
  s->spent = now_s() - s->t0;
  free(cands);
}

/* The tree depth a problem's layout has (-1 = deepest). */
static int layout_depth(const problem *p, int block, int arity) {
  if (p->depth >= 0)
    return p->depth;
  const int nb = (p->n + block - 1) / block;
  int d = 0;
  for (long span = 1; span < nb; span *= arity)
    d++;
  return d;
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv) {
  const char *kernel = "fwd", *device = NULL, *out = NULL;
  dua_dtype dtype = DUA_F32;
  int dim = 64, ns[MAXV], nn = 0, depths[MAXV], nd = 0, batches[MAXV], nb = 0, heads = -1, kv_heads = 0;
  int causals[MAXV], nc = 0;
  int block = 128, arity = 2, tokens = 1, page = 16, reps = 5, warmup = 1;
  double fraction = 1.0, max_minutes = 10.0, min_gain = 0.02;
  uint64_t seed = 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int more = i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    } else if ((!strcmp(a, "--n") || !strcmp(a, "--depth") || !strcmp(a, "--batch") ||
                !strcmp(a, "--causal")) &&
               more) {
      int *dst = a[2] == 'n' ? ns : a[2] == 'd' ? depths : a[2] == 'b' ? batches : causals;
      int *cnt = a[2] == 'n' ? &nn : a[2] == 'd' ? &nd : a[2] == 'b' ? &nb : &nc;
      while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
        if (*cnt >= MAXV)
          tune_die("too many values for", a);
        dst[(*cnt)++] = parse_int(a, argv[++i]);
      }
    } else if (!more) {
      fprintf(stderr, "dua-tune: unknown argument or missing value: \"%s\" (try --help)\n", a);
      return 2;
    } else if (!strcmp(a, "--kernel")) {
      kernel = argv[++i];
    } else if (!strcmp(a, "--dtype")) {
      const char *v = argv[++i];
      if (!strcmp(v, "fp32"))
        dtype = DUA_F32;
      else if (!strcmp(v, "fp16"))
        dtype = DUA_F16;
      else
        tune_die("--dtype must be fp32 or fp16, not", v);
    } else if (!strcmp(a, "--dim")) {
      dim = parse_int(a, argv[++i]);
    } else if (!strcmp(a, "--device")) {
      device = argv[++i];
    } else if (!strcmp(a, "--fraction")) {
      fraction = parse_double(a, argv[++i]);
    } else if (!strcmp(a, "--seed")) {
      seed = (uint64_t)parse_int(a, argv[++i]);
    } else if (!strcmp(a, "--out")) {
      out = argv[++i];
    } else if (!strcmp(a, "--max-minutes")) {
      max_minutes = parse_double(a, argv[++i]);
    } else if (!strcmp(a, "--heads")) {
      heads = parse_int(a, argv[++i]);
    } else if (!strcmp(a, "--kv-heads")) {
      kv_heads = parse_int(a, argv[++i]);
    } else if (!strcmp(a, "--block")) {
      block = parse_int(a, argv[++i]);
    } else if (!strcmp(a, "--arity")) {
      arity = parse_int(a, argv[++i]);
    } else if (!strcmp(a, "--tokens")) {
      tokens = parse_int(a, argv[++i]);
    } else if (!strcmp(a, "--page")) {
      page = parse_int(a, argv[++i]);
    } else if (!strcmp(a, "--reps")) {
      reps = parse_int(a, argv[++i]);
    } else if (!strcmp(a, "--warmup")) {
      warmup = parse_int(a, argv[++i]);
    } else if (!strcmp(a, "--min-gain")) {
      min_gain = parse_double(a, argv[++i]);
    } else {
      fprintf(stderr, "dua-tune: unknown argument \"%s\" (try --help)\n", a);
      return 2;
    }
  }
  tune_kind kind;
  const int mma = !strcmp(kernel, "fwd_mma");
  if (!strcmp(kernel, "fwd") || mma)
    kind = TUNE_FWD;
  else if (!strcmp(kernel, "bwd"))
    kind = TUNE_BWD;
  else if (!strcmp(kernel, "decode"))
    kind = TUNE_DECODE;
  else
    tune_die("--kernel must be fwd, fwd_mma, bwd or decode, not", kernel);
  if (heads < 0)
    heads = kind == TUNE_DECODE ? 4 : 2;
  if (kv_heads == 0)
    kv_heads = heads;
  if (nn == 0)
    ns[nn++] = 1024;
  if (nd == 0)
    depths[nd++] = 0;
  if (nb == 0)
    batches[nb++] = kind == TUNE_DECODE ? 4 : 1;
  if (nc == 0)
    causals[nc++] = 0;
  int bad_batch = 0;
  for (int i = 0; i < nb; i++)
    bad_batch |= batches[i] < 1;
  for (int i = 0; i < nc; i++)
    if (causals[i] != 0 && causals[i] != 1)
      tune_die("--causal takes 0 and/or 1", NULL);
  if (kind == TUNE_DECODE && (nc > 1 || causals[0]))
    tune_die("--causal is for fwd, fwd_mma and bwd (decode problems are causal by construction)", NULL);
  if (!(fraction > 0 && fraction <= 1) || !(max_minutes > 0) || reps < 1 || reps > 64 || warmup < 0 ||
      !(min_gain >= 0 && min_gain < 1) || bad_batch || heads < 1 || kv_heads < 1 || heads % kv_heads ||
      tokens < 1 || tokens > 4 || nn * nd * nb * nc > DUA_TUNING_MAX_SHAPES)
    tune_die(
        "need 0 < --fraction <= 1, --max-minutes > 0, 1 <= --reps <= 64, --warmup >= 0, 0 <= --min-gain "
        "< 1, --batch/--heads >= 1, --kv-heads dividing --heads, 1 <= --tokens <= 4 and at most 64 shapes",
        NULL);
  /* the developer variables would replace what is tuned */
  static const char *const dev_env[] = {"DUA_FWD_TILE", "DUA_DECODE_KERNEL", "DUA_DECODE_TILE",
                                        "DUA_DECODE_SPLITS", "DUA_MMA_MT"};
  for (int i = 0; i < 5; i++) {
    const char *v = getenv(dev_env[i]);
    if (v && *v)
      tune_die("unset the developer override first", dev_env[i]);
  }
  char path[1024];
  if (out)
    snprintf(path, sizeof path, "%s", out);
  else
    default_db_path(path, sizeof path);
  /* the database must be readable before anything runs: never overwrite a file we refuse */
  dua_tuning_db db = {0};
  char why[512];
  if (dua_tuning_db_load(path, &db, why, sizeof why) < 0)
    tune_die(path, why);
  /* the library in this process sees no database: "default" is the compiled default, never an earlier run */
  setenv("DUA_TUNING_FILE", "/nonexistent/dua-tune/reads-no-database.json", 1);
  /* fwd_mma: every launch with the MT its plan says (the short-launch rule would run the default's small
   * problems on one m-tile, where the candidates, through the override, run the MT they name) */
  setenv("DUA_SHORT_LAUNCH", "0", 1);

  dua_context_options co;
  dua_context_options_init(&co);
  co.selector = device;
  /* fwd/bwd: the portable kernels are what is tuned (the tensor-core forward is tuned as fwd_mma); decode:
   * the library's own choice is the reference, and on NVIDIA that is the warp kernel, which needs the fast
   * paths on; fwd_mma needs them too */
  co.disable_fast_paths = kind != TUNE_DECODE && !mma;
  dua_context *ctx = NULL;
  dua_status st = dua_context_create(&co, &ctx);
  if (st != DUA_SUCCESS) {
    fprintf(stderr, "dua-tune: no device%s%s: %s\n", device ? " matches " : "", device ? device : "",
            dua_status_string(st));
    return 1;
  }
  dua_device_info info;
  dua_context_device_info(ctx, &info);
  if (mma) {
    const char *emu = getenv("DUA_TUNING_EMULATED_MMA");
    if (emu && !strcmp(emu, "1") && !ctx->fast_paths_disabled && !dua_device_is_nvidia(&info)) {
      /* the kernel emulated in plain OpenCL (forward_nv_mma.c builds it so on devices that are not NVIDIA's):
       * for tests, very slow */
      ctx->info.nv_mma_f16 = ctx->info.nv_mma_tf32 = 1;
      fprintf(stderr, "dua-tune: DUA_TUNING_EMULATED_MMA=1: the tensor-core forward runs emulated on %s\n",
              info.name);
    }
    dua_tuning_info ti;
    if (dua_context_get_tuning(ctx, "fwd_mma", dtype, dim, block, &ti) != DUA_SUCCESS) {
      fprintf(stderr,
              "dua-tune: --kernel fwd_mma: nothing to tune on %s: %s\n(DUA_TUNING_EMULATED_MMA=1 runs the "
              "kernel emulated where it does not run natively: for tests, very slow)\n",
              info.name, dua_context_last_error(ctx));
      dua_context_destroy(ctx);
      return 1;
    }
  }
  static tuner t;
  t.ctx = ctx, t.queue = dua_context_cl_queue(ctx), t.kind = kind, t.dtype = dtype, t.dim = dim;
  t.block = block, t.arity = arity, t.heads = heads, t.kv_heads = kv_heads, t.tokens = tokens, t.page = page;
  t.reps = reps, t.warmup = warmup, t.atol = 1e-4, t.rtol = 1e-3;
  t.mma = mma, t.tf32 = mma && dtype == DUA_F32;
  if (dtype == DUA_F16 || t.tf32) /* tf32: 10-bit mantissas, as f16 */
    t.atol = 2e-3, t.rtol = 1e-2;
  cl_command_queue_properties props = 0;
  clGetCommandQueueInfo(t.queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL);
  t.events = (props & CL_QUEUE_PROFILING_ENABLE) != 0;

  /* problems: seeded random inputs; the default's outputs become the reference */
  const int nprob = nn * nd * nb * nc;
  problem *pr = calloc((size_t)nprob, sizeof *pr);
  if (!pr)
    tune_die("out of memory", NULL);
  uint64_t is = seed ^ 0xD1A7u;
  for (int e = 0; e < nc; e++) /* causal outermost: the non-causal problems first */
    for (int a = 0; a < nn; a++)
      for (int b = 0; b < nd; b++)
        for (int c = 0; c < nb; c++)
          problem_make(&t, &pr[((e * nn + a) * nd + b) * nb + c], ns[a], depths[b], batches[c], causals[e],
                       &is);

  stage stages[2];
  int nstages = 1;
  memset(stages, 0, sizeof stages);
  const double t0 = now_s(), limit = 60.0 * max_minutes;
  if (kind == TUNE_DECODE) {
    stages[0].kernel = heads == kv_heads && tokens == 1 ? "decode" : "decode_gqa";
    stages[0].deadline = t0 + 0.75 * limit;
    stages[1].kernel = "decode_split";
    stages[1].split = 1;
    stages[1].deadline = t0 + limit;
    nstages = 2;
  } else {
    stages[0].kernel = kernel;
    stages[0].deadline = t0 + limit;
  }
  fprintf(stderr, "dua-tune: %s %s head_dim %d on %s (%s), %d shapes; timing with %s\n", kernel,
          dtype == DUA_F16 ? "fp16" : "fp32", dim, info.name, info.driver_version, nprob,
          t.events ? "profiling events" : "the wall clock");
  if (kind == TUNE_DECODE) {
    /* the split thresholds of the compiled behaviour (the compiled plan's: the warp kernel has its own),
     * which an entry must hold to change nothing */
    dua_decode_plan_info pi;
    tune_check(ctx, problem_decode_plan(&t, &pr[0], &pi), "dua_decode_plan_get");
    stages[1].compiled[0] = pi.split.waves, stages[1].compiled[1] = pi.split.min_units;
    stages[1].compiled[2] = pi.split.max_splits;
  }
  for (int s = 0; s < nstages; s++)
    run_stage(&t, pr, nprob, fraction, min_gain, seed + (uint64_t)s, &stages[s]);
  double overall_default = stages[0].default_total, overall_best = stages[nstages - 1].best_total;
  int any_tuned = 0;
  for (int s = 0; s < nstages; s++)
    any_tuned |=
        memcmp(stages[s].best, stages[s].compiled, (size_t)stages[s].ti.num_params * sizeof(int32_t)) != 0;
  if (nstages > 1 && !any_tuned) {
    overall_best = overall_default; /* every entry keeps the compiled default: nothing to compare */
  } else if (nstages > 1) {
    /* the stages together against the compiled default, re-timed alternately (3 rounds); unless they are
     * min_gain faster together, every entry keeps its compiled default */
    double dm[DUA_TUNING_MAX_SHAPES][3], bm[DUA_TUNING_MAX_SHAPES][3];
    for (int r = 0; r < 3; r++)
      for (int w = 0; w < 2; w++) {
        for (int s = 0; s < nstages; s++) {
          const int tuned = w && memcmp(stages[s].best, stages[s].ti.default_params,
                                        (size_t)stages[s].ti.num_params * sizeof(int32_t));
          tune_check(ctx, set_params(&t, &stages[s], tuned ? stages[s].best : NULL),
                     "dua_context_set_tuning");
        }
        for (int i = 0; i < nprob; i++)
          (w ? bm : dm)[i][r] = time_problem(&t, &pr[i]);
      }
    overall_default = overall_best = 0;
    double dmed[DUA_TUNING_MAX_SHAPES], bmed[DUA_TUNING_MAX_SHAPES];
    for (int i = 0; i < nprob; i++) {
      qsort(dm[i], 3, sizeof(double), cmp_double);
      qsort(bm[i], 3, sizeof(double), cmp_double);
      overall_default += dmed[i] = dm[i][1], overall_best += bmed[i] = bm[i][1];
    }
    if (!tuned_wins(bmed, dmed, nprob, min_gain)) {
      int changed = 0;
      for (int s = 0; s < nstages; s++)
        changed |= memcmp(stages[s].best, stages[s].compiled,
                          (size_t)stages[s].ti.num_params * sizeof(int32_t)) != 0;
      if (changed)
        fprintf(stderr,
                "dua-tune: together the tuned entries (%.3f ms) are not %.0f%% faster on average and nowhere "
                "%.0f%% slower than the compiled defaults (%.3f ms): keeping the defaults, not",
                overall_best, 100 * min_gain, 100 * min_gain, overall_default);
      for (int s = 0; s < nstages; s++) {
        stage *sg = &stages[s];
        char text[256];
        fmt_params(&sg->ti, sg->best, text, sizeof text);
        if (changed)
          fprintf(stderr, "%s %s: %s", s ? ";" : "", sg->kernel, text);
        /* every entry: the compiled behaviour and its re-timed figures (the split stage's own default ran
         * under the plan stage's best) */
        memcpy(sg->best, sg->compiled, (size_t)sg->ti.num_params * sizeof(int32_t));
        memcpy(sg->ti.default_params, sg->compiled, (size_t)sg->ti.num_params * sizeof(int32_t));
        sg->best_total = sg->default_total = overall_default;
        for (int i = 0; i < nprob; i++)
          sg->best_ms[i] = sg->default_ms[i] = dm[i][1];
      }
      if (changed)
        fprintf(stderr, "\n");
      overall_best = overall_default;
    }
  }
  const double spent = now_s() - t0;

  /* merge with what the file holds now (another run may have written it meanwhile) */
  if (dua_tuning_db_load(path, &db, why, sizeof why) < 0)
    tune_die(path, why);
  time_t now = time(NULL);
  struct tm tmv;
  gmtime_r(&now, &tmv);
  for (int s = 0; s < nstages; s++) {
    const stage *sg = &stages[s];
    dua_tuning_entry e;
    memset(&e, 0, sizeof e);
    snprintf(e.kernel, sizeof e.kernel, "%s", sg->kernel);
    e.fp16 = dtype == DUA_F16;
    e.head_dim = dim;
    snprintf(e.device, sizeof e.device, "%s", info.name);
    snprintf(e.vendor, sizeof e.vendor, "%s", info.vendor);
    snprintf(e.driver, sizeof e.driver, "%s", info.driver_version);
    strftime(e.date, sizeof e.date, "%Y-%m-%dT%H:%M:%SZ", &tmv);
    e.num_params = sg->ti.num_params;
    memcpy(e.params, sg->best, (size_t)e.num_params * sizeof(int32_t));
    e.best_ms = sg->best_total, e.default_ms = sg->default_total, e.tuning_s = sg->spent;
    e.candidates = sg->tried;
    e.num_shapes = nprob;
    for (int i = 0; i < nprob; i++) {
      dua_tuning_shape *sh = &e.shapes[i];
      sh->n = pr[i].n, sh->depth = layout_depth(&pr[i], block, arity), sh->block = block;
      sh->batch = pr[i].batch, sh->heads = heads, sh->causal = pr[i].causal;
      if (kind == TUNE_DECODE)
        sh->kv_heads = kv_heads, sh->tokens = tokens, sh->page = page;
      sh->best_ms = sg->best_ms[i], sh->default_ms = sg->default_ms[i];
    }
    if (dua_tuning_db_put(&db, &e, why, sizeof why))
      tune_die("the new entry", why);
  }
  make_parent(path);
  if (dua_tuning_db_save(path, &db, why, sizeof why))
    tune_die(path, why);
  printf("device      %s (%s, driver %s)\n", info.name, info.vendor, info.driver_version);
  printf("problem     %s %s head_dim %d, block %d, heads %d", kernel, dtype == DUA_F16 ? "fp16" : "fp32", dim,
         block, heads);
  if (kind == TUNE_DECODE)
    printf(", kv_heads %d, tokens %d, page %d", kv_heads, tokens, page);
  printf("\n");
  for (int s = 0; s < nstages; s++) {
    const stage *sg = &stages[s];
    char text[256];
    printf("entry       %s (%.1f s)\n", sg->kernel, sg->spent);
    printf("candidates  %d timed, %d rejected (outside tolerance), %d failed to run, of %d in the space",
           sg->tried, sg->rejected, sg->failed, sg->space + 1);
    if (kind == TUNE_DECODE || mma)
      printf(" (%d gave a launch plan already timed, %d did not fit a problem as given)", sg->same_plan,
             sg->no_fit);
    printf("%s\n", sg->stopped ? " (stopped by --max-minutes)" : "");
    fmt_params(&sg->ti, sg->ti.default_params, text, sizeof text);
    printf("default     %s  %.3f ms\n", text, sg->default_total);
    fmt_params(&sg->ti, sg->best, text, sizeof text);
    printf("best        %s  %.3f ms  (%.2fx the default)\n", text, sg->best_total,
           sg->default_total / sg->best_total);
  }
  if (nstages > 1)
    printf("overall     %.3f ms tuned vs %.3f ms compiled default (%.2fx; both entries together, re-timed "
           "alternately, median of 3 rounds)\n",
           overall_best, overall_default, overall_default / overall_best);
  for (int i = 0; i < nprob; i++) {
    printf("  N %6d depth %2d batch %3d%s   default %9.3f ms", pr[i].n, pr[i].depth, pr[i].batch,
           pr[i].causal ? " causal" : "", stages[0].default_ms[i]);
    for (int s = 0; s < nstages; s++)
      printf("   %s %9.3f ms", nstages > 1 ? stages[s].kernel : "best", stages[s].best_ms[i]);
    printf("\n");
  }
  printf("(default and best re-timed alternately per entry, median of 3 rounds of --reps)\n");
  printf("tuning took %.1f s; written to %s\n", spent, path);
  for (int i = 0; i < nprob; i++)
    problem_free(&pr[i]);
  free(pr);
  tuner_free_caches(&t);
  dua_tuning_db_free(&db);
  dua_context_destroy(ctx);
  return 0;
}
