/* tuning.c: kernel parameters through the lookup chain (dua.h, "tuning"): the developer variables
 * (DUA_FWD_TILE, DUA_DECODE_KERNEL/TILE/SPLITS, DUA_MMA_MT), the context's override (dua_context_set_tuning),
 * the tuning database file read once per context, compiled per-vendor defaults, generic defaults; for the
 * forward and backward tiles, the decode plan, the decode split-KV thresholds and the tensor-core forward's
 * m-tiles per warp; plus the parameter spaces dua-tune searches (dua_tuning_candidates). */
#include "tuning/tuning.h"
#include "runtime/context_internal.h"
#include "tuning/tuning_db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct override_entry {
  char kernel[32];
  int fp16, head_dim, num_params;
  int32_t params[DUA_TUNING_PARAMS];
} override_entry;

typedef struct tuning_state {
  int loaded;
  dua_tuning_db db;
  char file[512];    /* the file consulted, "" when none exists */
  char warning[512]; /* why it was refused */
  override_entry *overrides;
  int num_overrides;
  int warned_warp;   /* a tuned warp plan was skipped (the kernel would run emulated): said once */
  int warned_mma_mt; /* DUA_MMA_MT held neither "1" nor "2": said once */
} tuning_state;

static void state_free(void *p) {
  tuning_state *s = p;
  if (!s)
    return;
  dua_tuning_db_free(&s->db);
  free(s->overrides);
  free(s);
}

/* The database path: DUA_TUNING_FILE, else $XDG_DATA_HOME/dua/tuning.json, else
 * ~/.local/share/dua/tuning.json; "" when none can be formed. */
static void db_path(char *out, size_t n) {
  const char *env = getenv("DUA_TUNING_FILE"), *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
  out[0] = '\0';
  if (env && *env)
    snprintf(out, n, "%s", env);
  else if (xdg && *xdg)
    snprintf(out, n, "%s/dua/tuning.json", xdg);
  else if (home && *home)
    snprintf(out, n, "%s/.local/share/dua/tuning.json", home);
}

static tuning_state *state(dua_context *ctx) {
  if (!ctx->tuning) {
    tuning_state *s = calloc(1, sizeof *s);
    if (!s)
      return NULL;
    ctx->tuning = s;
    ctx->tuning_free = state_free;
  }
  tuning_state *s = ctx->tuning;
  if (!s->loaded) {
    s->loaded = 1;
    char path[512];
    db_path(path, sizeof path);
    if (path[0]) {
      char why[400] = "";
      int rc = dua_tuning_db_load(path, &s->db, why, sizeof why);
      if (rc == 0) {
        snprintf(s->file, sizeof s->file, "%s", path);
        dua_log(ctx, DUA_LOG_INFO, "tuning database %s: %d entries", path, s->db.count);
      } else if (rc < 0) {
        snprintf(s->file, sizeof s->file, "%s", path);
        snprintf(s->warning, sizeof s->warning, "%s", why);
        dua_log(ctx, DUA_LOG_WARNING, "tuning database %s refused (%s); using the compiled defaults", path,
                why);
      }
    }
  }
  return s;
}

/* ---------------------------------------------------------------- the chain's shared steps */

static const char *builtin_vendor(const dua_device_info *d) {
  if (strstr(d->vendor, "NVIDIA"))
    return "NVIDIA";
  if (strstr(d->platform_name, "Portable Computing Language"))
    return "PoCL";
  return NULL;
}

static const override_entry *find_override(const tuning_state *s, const char *kernel, int fp16,
                                           int head_dim) {
  for (int i = 0; s && i < s->num_overrides; i++)
    if (!strcmp(s->overrides[i].kernel, kernel) && s->overrides[i].fp16 == fp16 &&
        s->overrides[i].head_dim == head_dim)
      return &s->overrides[i];
  return NULL;
}

/* Steps 2 and 3 of the chain: the context's override, then the database entry for this device and driver,
 * each taken only if accept(params, arg) says the call can use it. 1 with params/source/origin, else 0. */
static int chain_lookup(dua_context *ctx, tuning_state *s, const char *kernel, int fp16, int head_dim,
                        int (*accept)(const int32_t *, void *), void *arg, int32_t *params,
                        dua_tuning_source *source, char *origin, size_t origin_size) {
  const override_entry *ov = find_override(s, kernel, fp16, head_dim);
  if (ov && accept(ov->params, arg)) {
    memcpy(params, ov->params, sizeof ov->params);
    *source = DUA_TUNING_OVERRIDE;
    snprintf(origin, origin_size, "override");
    return 1;
  }
  const dua_tuning_entry *e =
      s ? dua_tuning_db_find(&s->db, kernel, fp16, head_dim, ctx->info.name, ctx->info.driver_version) : NULL;
  if (e && accept(e->params, arg)) {
    memcpy(params, e->params, sizeof e->params);
    *source = DUA_TUNING_FILE;
    snprintf(origin, origin_size, "file %s", s->file);
    return 1;
  }
  return 0;
}

/* Steps 4 and 5: compiled defaults. The rules were measured on an H100 and on PoCL; other devices get the
 * same rules, labelled generic until a measurement says otherwise. */
static void compiled_source(const dua_context *ctx, dua_tuning_source *source, char *origin, size_t size) {
  const char *vendor = builtin_vendor(&ctx->info);
  *source = vendor ? DUA_TUNING_BUILTIN : DUA_TUNING_GENERIC;
  if (vendor)
    snprintf(origin, size, "built-in %s", vendor);
  else
    snprintf(origin, size, "generic");
}

/* ---------------------------------------------------------------- forward and backward tiles */

static void tile_to_array(int bm, int bn, int tm, int tn, int32_t *a) {
  a[0] = bm, a[1] = bn, a[2] = tm, a[3] = tn;
}

static int fwd_valid(const int32_t *a, int head_dim, int block, const dua_device_info *dev) {
  dua_fwd_params p = {a[0], a[1], a[2], a[3]};
  return dua_fwd_params_valid(&p, head_dim, block, dev);
}

static void fwd_default(int head_dim, int block, const dua_device_info *dev, int32_t *a) {
  dua_fwd_params p = dua_fwd_params_default(head_dim, block, dev);
  tile_to_array(p.block_m, p.block_n, p.threads_m, p.threads_n, a);
}

static int bwd_valid(const int32_t *a, int head_dim, int block, const dua_device_info *dev) {
  dua_bwd_params p = {a[0], a[1], a[2], a[3]};
  return dua_bwd_params_valid(&p, head_dim, block, dev);
}

static void bwd_default(int head_dim, int block, const dua_device_info *dev, int32_t *a) {
  dua_bwd_params p = dua_bwd_params_default(head_dim, block, dev);
  tile_to_array(p.block_m, p.block_n, p.threads_m, p.threads_n, a);
}

static size_t fwd_local(const int32_t *a, int head_dim) {
  dua_fwd_params p = {a[0], a[1], a[2], a[3]};
  return dua_fwd_local_bytes(&p, head_dim);
}

static size_t bwd_local(const int32_t *a, int head_dim) {
  dua_bwd_params p = {a[0], a[1], a[2], a[3]};
  return dua_bwd_local_bytes(&p, head_dim);
}

/* The two tiled kernels (bm, bn, tm, tn): their database name, the developer variable that replaces the
 * chain (NULL: none), the calling function and kernel for messages, the kernel's rules, compiled default and
 * local memory.
 */
typedef struct tile_kernel {
  const char *kernel, *env, *fn, *what;
  int (*valid)(const int32_t *a, int head_dim, int block, const dua_device_info *dev);
  void (*compiled)(int head_dim, int block, const dua_device_info *dev, int32_t *a);
  size_t (*local)(const int32_t *a, int head_dim);
} tile_kernel;

static const tile_kernel tile_fwd = {
    "fwd", "DUA_FWD_TILE", "dua_attention_forward", "forward", fwd_valid, fwd_default, fwd_local};
static const tile_kernel tile_bwd = {"bwd",       NULL,     "dua_attention_backward", "backward", bwd_valid,
                                     bwd_default, bwd_local};

typedef struct tile_call {
  dua_context *ctx;
  const tile_kernel *k;
  int head_dim, layout_block;
} tile_call;

static int accept_tile(const int32_t *a, void *arg) {
  const tile_call *c = arg;
  return c->k->valid(a, c->head_dim, c->layout_block, &c->ctx->info);
}

/* The whole chain for a tile: the developer variable (fwd: "block_m,block_n,threads_m,threads_n"), the
 * override, the database, the compiled default. Fails for an invalid developer variable
 * (DUA_ERROR_INVALID_ARGUMENT) or when no tile fits (DUA_ERROR_UNSUPPORTED). */
static dua_status tuning_tile(dua_context *ctx, const tile_kernel *k, int head_dim, int fp16,
                              int layout_block, int32_t *a, dua_tuning_source *source, char *origin,
                              size_t origin_size) {
  char dummy[8];
  if (!origin)
    origin = dummy, origin_size = sizeof dummy;
  dua_tuning_source src_dummy;
  if (!source)
    source = &src_dummy;
  tuning_state *s = state(ctx); /* NULL only when out of memory: the compiled defaults still work */
  const char *tile = k->env ? getenv(k->env) : NULL;
  if (tile && *tile) {
    char extra;
    if (sscanf(tile, "%d,%d,%d,%d%c", &a[0], &a[1], &a[2], &a[3], &extra) != 4 ||
        !k->valid(a, head_dim, layout_block, &ctx->info))
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                      "%s = \"%s\" is not a valid block_m,block_n,threads_m,threads_n for head_dim %d, "
                      "block %d on this device",
                      k->env, tile, head_dim, layout_block);
    *source = DUA_TUNING_DEVELOPER_ENV;
    snprintf(origin, origin_size, "env %s", k->env);
    return DUA_SUCCESS;
  }
  tile_call call = {ctx, k, head_dim, layout_block};
  if (chain_lookup(ctx, s, k->kernel, fp16, head_dim, accept_tile, &call, a, source, origin, origin_size))
    return DUA_SUCCESS;
  k->compiled(head_dim, layout_block, &ctx->info, a);
  if (!k->valid(a, head_dim, layout_block, &ctx->info))
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED,
                    "%s: no %s tile fits this device for head_dim %d, block %d (local memory %llu bytes, max "
                    "work-group %zu)",
                    k->fn, k->what, head_dim, layout_block, (unsigned long long)ctx->info.local_mem_bytes,
                    ctx->info.max_work_group_size);
  compiled_source(ctx, source, origin, origin_size);
  return DUA_SUCCESS;
}

dua_status dua_tuning_fwd(dua_context *ctx, int head_dim, int fp16, int layout_block, dua_fwd_params *out,
                          dua_tuning_source *source, char *origin, size_t origin_size) {
  int32_t a[DUA_TUNING_PARAMS];
  dua_status st = tuning_tile(ctx, &tile_fwd, head_dim, fp16, layout_block, a, source, origin, origin_size);
  if (st == DUA_SUCCESS)
    *out = (dua_fwd_params){a[0], a[1], a[2], a[3]};
  return st;
}

dua_status dua_tuning_bwd(dua_context *ctx, int head_dim, int fp16, int layout_block, dua_bwd_params *out,
                          dua_tuning_source *source, char *origin, size_t origin_size) {
  int32_t a[DUA_TUNING_PARAMS];
  dua_status st = tuning_tile(ctx, &tile_bwd, head_dim, fp16, layout_block, a, source, origin, origin_size);
  if (st == DUA_SUCCESS)
    *out = (dua_bwd_params){a[0], a[1], a[2], a[3]};
  return st;
}

/* ---------------------------------------------------------------- decode */

static const char *decode_kernel_name(int one_row) {
  return one_row ? "decode" : "decode_gqa";
}

/* Database/override arrays <-> params: "decode" has no rows (one row per work-group); the compiled rows
 * stay in place for it. */
static dua_decode_params decode_from_array(const int32_t *a, int one_row, int rows_default) {
  dua_decode_params p = {a[0], a[1], a[2], one_row ? rows_default : a[3]};
  return p;
}

static void decode_to_array(const dua_decode_params *p, int one_row, int32_t *a) {
  a[0] = p->staged, a[1] = p->tile_n, a[2] = p->threads;
  if (!one_row)
    a[3] = p->rows;
}

/* Whether the warp kernel belongs to this device's tuning space (candidates, override, database): where it
 * runs natively, or where DUA_TUNING_EMULATED_WARP=1 lets its emulation in (tests; slow). */
static int warp_tunable(const dua_context *ctx) {
  const char *env = getenv("DUA_TUNING_EMULATED_WARP");
  return dua_decode_warp_native(&ctx->info) || (env && !strcmp(env, "1"));
}

typedef struct decode_call {
  dua_context *ctx;
  int head_dim, fp16, one_row, rows_default;
  dua_decode_fits_fn fits;
  void *fits_arg;
} decode_call;

static int accept_decode(const int32_t *a, void *arg) {
  const decode_call *c = arg;
  dua_decode_params p = decode_from_array(a, c->one_row, c->rows_default);
  if (p.staged >= 2 && !warp_tunable(c->ctx)) {
    tuning_state *s = c->ctx->tuning;
    if (s && !s->warned_warp) {
      s->warned_warp = 1;
      dua_log(c->ctx, DUA_LOG_WARNING,
              "tuned decode plan (%s) with the %s kernel skipped: it needs NVIDIA inline PTX (not NVIDIA, "
              "the mma.sync probe failed or the fast paths are off) and would run emulated; using the next "
              "source",
              c->one_row ? "decode" : "decode_gqa", dua_tune_decode_variant(p.staged));
    }
    return 0;
  }
  return dua_decode_params_valid(&p, c->head_dim, c->fp16, &c->ctx->info) &&
         (!c->fits || c->fits(&p, c->fits_arg));
}

dua_status dua_tuning_decode(dua_context *ctx, int head_dim, int fp16, int one_row, dua_decode_fits_fn fits,
                             void *fits_arg, dua_decode_params *out, int *adjust, dua_tuning_source *source,
                             char *origin, size_t origin_size) {
  char dummy[8];
  if (!origin)
    origin = dummy, origin_size = sizeof dummy;
  dua_tuning_source src_dummy;
  if (!source)
    source = &src_dummy;
  tuning_state *s = state(ctx);
  const dua_decode_params def = dua_decode_params_default(&ctx->info, fp16, one_row, head_dim);
  /* developer variables: exactly the behaviour they always had, before every other source */
  const char *kernel = getenv("DUA_DECODE_KERNEL"), *tile = getenv("DUA_DECODE_TILE");
  if ((kernel && *kernel) || (tile && *tile)) {
    dua_decode_params p = def;
    if (kernel && *kernel) {
      if (strcmp(kernel, "regs") != 0 && strcmp(kernel, "staged") != 0 && strcmp(kernel, "warp") != 0 &&
          strcmp(kernel, "mma") != 0)
        return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                        "DUA_DECODE_KERNEL = \"%s\" is not regs, staged, warp or mma", kernel);
      if (kernel[0] == 'm' && !dua_decode_mma_dims(head_dim, fp16))
        return dua_fail(ctx, DUA_ERROR_UNSUPPORTED,
                        "DUA_DECODE_KERNEL = mma needs an fp16 cache with head_dim 64 or 128; this one is %s "
                        "with head_dim = %d",
                        fp16 ? "fp16" : "fp32", head_dim);
      if (kernel[0] == 'w' && !dua_decode_warp_lanes(head_dim, fp16))
        return dua_fail(ctx, DUA_ERROR_UNSUPPORTED,
                        "DUA_DECODE_KERNEL = warp needs head_dim / %d (a 16-byte load) to divide 32; "
                        "head_dim = %d",
                        dua_decode_load_elems(fp16), head_dim);
      p = dua_decode_params_variant(&ctx->info, fp16,
                                    kernel[0] == 'm'   ? 3
                                    : kernel[0] == 'w' ? 2
                                                       : kernel[0] == 's');
    }
    if (tile && *tile) {
      if (sscanf(tile, "%d,%d,%d", &p.tile_n, &p.threads, &p.rows) != 3 ||
          p.tile_n < (p.staged >= 2 ? 1 : 16) || p.tile_n > 128 || (p.tile_n & (p.tile_n - 1)) ||
          p.threads < (p.staged >= 2 ? 32 : 16) || p.threads > 1024 || (p.threads & (p.threads - 1)) ||
          p.rows < 1 || p.rows > 64 || (p.staged == 3 && (p.tile_n != 16 || p.rows > 8)))
        return dua_fail(
            ctx, DUA_ERROR_INVALID_ARGUMENT,
            "DUA_DECODE_TILE = \"%s\" is not tile_n,threads,rows (tile_n a power of two 16..128, "
            "1..128 for the warp kernel, 16 for mma, threads a power of two 16..1024, 32..1024 for "
            "the warp and mma kernels, rows 1..64, 1..8 for mma)",
            tile);
    }
    *out = p;
    *adjust = 1;
    *source = DUA_TUNING_DEVELOPER_ENV;
    snprintf(origin, origin_size, "env%s%s", kernel && *kernel ? " DUA_DECODE_KERNEL" : "",
             tile && *tile ? " DUA_DECODE_TILE" : "");
    return DUA_SUCCESS;
  }
  decode_call call = {ctx, head_dim, fp16, one_row, def.rows, fits, fits_arg};
  int32_t a[DUA_TUNING_PARAMS];
  if (chain_lookup(ctx, s, decode_kernel_name(one_row), fp16, head_dim, accept_decode, &call, a, source,
                   origin, origin_size)) {
    *out = decode_from_array(a, one_row, def.rows);
    *adjust = 0;
    return DUA_SUCCESS;
  }
  *out = def;
  *adjust = 1;
  compiled_source(ctx, source, origin, origin_size);
  return DUA_SUCCESS;
}

static int accept_any(const int32_t *a, void *arg) {
  (void)a, (void)arg;
  return 1; /* range-checked when stored (database reader, dua_context_set_tuning) */
}

dua_status dua_tuning_decode_split(dua_context *ctx, int head_dim, int fp16, const dua_decode_params *plan,
                                   int rows, dua_decode_split_params *out, int *fixed_splits,
                                   dua_tuning_source *source, char *origin, size_t origin_size) {
  char dummy[8];
  if (!origin)
    origin = dummy, origin_size = sizeof dummy;
  dua_tuning_source src_dummy;
  if (!source)
    source = &src_dummy;
  tuning_state *s = state(ctx);
  *fixed_splits = 0;
  int32_t a[DUA_TUNING_PARAMS];
  if (chain_lookup(ctx, s, "decode_split", fp16, head_dim, accept_any, NULL, a, source, origin,
                   origin_size)) {
    *out = (dua_decode_split_params){a[0], a[1], a[2]};
  } else {
    *out = dua_decode_split_compiled(plan, rows);
    compiled_source(ctx, source, origin, origin_size);
  }
  const char *env = getenv("DUA_DECODE_SPLITS");
  if (env && *env) {
    char *end;
    long n = strtol(env, &end, 10);
    if (*end != '\0' || n < 1 || n > 256)
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "DUA_DECODE_SPLITS = \"%s\" is not a number in 1..256",
                      env);
    *fixed_splits = (int)n;
    *source = DUA_TUNING_DEVELOPER_ENV;
    snprintf(origin, origin_size, "env DUA_DECODE_SPLITS = %d (every call)", (int)n);
  }
  return DUA_SUCCESS;
}

/* ---------------------------------------------------------------- tensor-core forward ("fwd_mma") */

#define MMA_MT2_BLOCK 128 /* MT 2: a work-group's 128 query rows must fit in (divide) the layout block */

int dua_tuning_mma_runs(const dua_context *ctx, int fp16, int head_dim, char *why, size_t why_size) {
  if (ctx->fast_paths_disabled) {
    if (why)
      snprintf(why, why_size, "the fast paths are off (DUA_NO_MMA=1 or disable_fast_paths)");
    return 0;
  }
  if (!(fp16 ? ctx->info.nv_mma_f16 : ctx->info.nv_mma_tf32)) {
    if (why)
      snprintf(why, why_size,
               "the tensor-core forward needs NVIDIA inline PTX (the mma.sync %s probe), which %s lacks (not "
               "NVIDIA or the probe failed)",
               fp16 ? "f16" : "tf32", ctx->info.name);
    return 0;
  }
  if (head_dim != 64 && head_dim != 128) {
    if (why)
      snprintf(why, why_size, "the tensor-core forward has head dims 64 and 128, not %d", head_dim);
    return 0;
  }
  return 1;
}

/* The compiled default, before a call's block: the rule measured on an H100 (bench/NOTES-mma.md): 32 query
 * rows per warp for head dim 64 (fewer local-memory reads per mma), 16 for head dim 128 (its fragments would
 * take ~200 registers) and for causal layouts visiting few blocks (a 128-row tile computes a quarter of its
 * diagonal block masked, and fewer work-groups fill the GPU less). The same on Hopper's wgmma (the fp16
 * head-dim-64 forward where ctx->info.nv_wgmma): one warpgroup with two m-tiles of 64 rows, 1.03-1.10x
 * faster than one m-tile except on causal layouts visiting few blocks (0.71-0.87x there). */
static void mma_compiled(int head_dim, int32_t *a) {
  a[0] = head_dim == 64 ? 2 : 1;
  a[1] = 1;
}

/* Compiled defaults: "built-in NVIDIA" where the kernel is NVIDIA's; elsewhere (the emulated kernel of the
 * tests) "generic". */
static void mma_compiled_source(const dua_context *ctx, dua_tuning_source *source, char *origin,
                                size_t size) {
  const int nvidia = dua_device_is_nvidia(&ctx->info);
  *source = nvidia ? DUA_TUNING_BUILTIN : DUA_TUNING_GENERIC;
  snprintf(origin, size, "%s", nvidia ? "built-in NVIDIA" : "generic");
}

/* Both classes' MT (mt, mt_cs) before a call's block: DUA_MMA_MT, the override, the database, the compiled
 * default. */
static void mma_params(dua_context *ctx, int head_dim, int fp16, int32_t *a, dua_tuning_source *source,
                       char *origin, size_t origin_size) {
  tuning_state *s = state(ctx);
  const char *env = getenv("DUA_MMA_MT");
  if (env && *env) {
    if (!strcmp(env, "1") || !strcmp(env, "2")) {
      a[0] = a[1] = env[0] - '0';
      *source = DUA_TUNING_DEVELOPER_ENV;
      snprintf(origin, origin_size, "env DUA_MMA_MT");
      return;
    }
    if (s && !s->warned_mma_mt) {
      s->warned_mma_mt = 1;
      dua_log(ctx, DUA_LOG_WARNING, "DUA_MMA_MT = \"%s\" is neither 1 nor 2: ignored", env);
    }
  }
  if (chain_lookup(ctx, s, "fwd_mma", fp16, head_dim, accept_any, NULL, a, source, origin, origin_size))
    return;
  mma_compiled(head_dim, a);
  mma_compiled_source(ctx, source, origin, origin_size);
}

/* MT 2 where the block cannot hold a 128-row work-group: MT 1 for that call. */
static int32_t mma_fit(int32_t mt, int layout_block) {
  return mt == 2 && layout_block < MMA_MT2_BLOCK ? 1 : mt;
}

int dua_tuning_fwd_mma(dua_context *ctx, int head_dim, int fp16, int layout_block, int causal_short,
                       dua_tuning_source *source, char *origin, size_t origin_size) {
  char dummy[8];
  if (!origin)
    origin = dummy, origin_size = sizeof dummy;
  dua_tuning_source src_dummy;
  if (!source)
    source = &src_dummy;
  int32_t a[DUA_TUNING_PARAMS];
  mma_params(ctx, head_dim, fp16, a, source, origin, origin_size);
  return mma_fit(a[causal_short ? 1 : 0], layout_block);
}

/* ---------------------------------------------------------------- public API */

static dua_status check_args(dua_context *ctx, const char *fn, const char *kernel, dua_dtype dtype,
                             int head_dim, const dua_tune_kernel_desc **k) {
  if (!ctx)
    return DUA_ERROR_INVALID_ARGUMENT;
  *k = dua_tune_kernel_find(kernel);
  if (!*k)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: kernel \"%s\" is not tunable (known: %s)", fn,
                    kernel ? kernel : "(null)", dua_tune_kernel_names());
  if (dtype != DUA_F32 && dtype != DUA_F16)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: dtype %d is neither DUA_F32 nor DUA_F16", fn,
                    (int)dtype);
  if (head_dim < 8 || head_dim > 256 || head_dim % 8)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: head_dim = %d must be a multiple of 8 in 8..256",
                    fn, head_dim);
  return DUA_SUCCESS;
}

static int valid_block(int b) {
  return b == 16 || b == 32 || b == 64 || b == 128 || b == 256;
}

static int is_kernel(const dua_tune_kernel_desc *k, const char *name) {
  return !strcmp(k->name, name);
}

/* The tiled kernel k is ("fwd", "bwd"), or NULL. */
static const tile_kernel *tile_of(const dua_tune_kernel_desc *k) {
  return is_kernel(k, "fwd") ? &tile_fwd : is_kernel(k, "bwd") ? &tile_bwd : NULL;
}

/* Whether params (already range-checked) can serve some call on this device; else writes why. */
static int usable(dua_context *ctx, const dua_tune_kernel_desc *k, int fp16, int head_dim,
                  const int32_t *params, char *why, size_t n) {
  const tile_kernel *tk = tile_of(k);
  if (tk) {
    const int block = params[0] > params[1] ? params[0] : params[1];
    if (tk->valid(params, head_dim, block, &ctx->info))
      return 1;
  } else if (is_kernel(k, "decode") || is_kernel(k, "decode_gqa")) {
    const int one_row = is_kernel(k, "decode");
    dua_decode_params p = decode_from_array(params, one_row, 1);
    char rows[32] = "";
    if (!one_row)
      snprintf(rows, sizeof rows, " rows=%d", (int)params[3]);
    if (p.staged >= 2 && !warp_tunable(ctx)) {
      snprintf(why, n,
               "%s staged=%d (the %s kernel) needs NVIDIA inline PTX (the mma.sync probe), which %s lacks "
               "%s; the kernel would only run emulated (DUA_TUNING_EMULATED_WARP=1 allows that, for tests)",
               k->name, (int)p.staged, dua_tune_decode_variant(p.staged), ctx->info.name,
               ctx->fast_paths_disabled ? "with the fast paths off" : "(probe failed or not NVIDIA)");
      return 0;
    }
    if (dua_decode_params_valid(&p, head_dim, fp16, &ctx->info))
      return 1;
    snprintf(why, n,
             "%s staged=%d (%s) tile=%d threads=%d%s does not fit head_dim %d and this device's kernels "
             "(regs: threads a multiple of head_dim / %d and of tile, tile a multiple of the key groups; "
             "staged: threads >= rows; warp: head_dim / %d dividing 32; mma: fp16, head_dim 64 or 128, tile "
             "16, rows <= 8; work-group size %zu)",
             k->name, (int)params[0], dua_tune_decode_variant(params[0]), (int)params[1], (int)params[2],
             rows, head_dim, dua_decode_load_elems(fp16), dua_decode_load_elems(fp16),
             ctx->info.max_work_group_size);
    return 0;
  } else if (is_kernel(k, "fwd_mma")) {
    /* any values in range serve some call (MT 2: those with blocks >= 128), where the kernel runs */
    char reason[256];
    if (dua_tuning_mma_runs(ctx, fp16, head_dim, reason, sizeof reason))
      return 1;
    snprintf(why, n, "fwd_mma %s head_dim %d: %s; no call would use these parameters", fp16 ? "fp16" : "fp32",
             head_dim, reason);
    return 0;
  } else {
    return 1; /* decode_split: any values in range */
  }
  /* which rule: the device's limits (they differ between devices: a tile fine on one may not fit another),
   * else the kernel's divisibility */
  const size_t threads = (size_t)params[2] * (size_t)params[3], local = tk->local(params, head_dim);
  char rule[160];
  if (ctx->info.max_work_group_size && threads > ctx->info.max_work_group_size)
    snprintf(rule, sizeof rule, "%zu work-items, the device's work-groups hold %zu", threads,
             ctx->info.max_work_group_size);
  else if (ctx->info.local_mem_bytes && local > ctx->info.local_mem_bytes)
    snprintf(rule, sizeof rule, "needs %zu bytes of local memory, the device has %llu", local,
             (unsigned long long)ctx->info.local_mem_bytes);
  else
    snprintf(rule, sizeof rule, "the kernel's divisibility rules");
  snprintf(why, n, "%s bm=%d bn=%d tm=%d tn=%d does not fit head_dim %d on this device (%s)", k->name,
           (int)params[0], (int)params[1], (int)params[2], (int)params[3], head_dim, rule);
  return 0;
}

dua_status dua_context_set_tuning(dua_context *ctx, const char *kernel, dua_dtype dtype, int head_dim,
                                  const int32_t *params, int num_params) {
  const dua_tune_kernel_desc *k;
  dua_status st = check_args(ctx, "dua_context_set_tuning", kernel, dtype, head_dim, &k);
  if (st != DUA_SUCCESS)
    return st;
  if (num_params < 0 || (num_params > 0 && !params))
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_context_set_tuning: num_params = %d with params %s",
                    num_params, params ? "set" : "NULL");
  const int fp16 = dtype == DUA_F16;
  if (num_params > 0) {
    char why[400];
    if (dua_tuning_params_check(k, params, num_params, "params", why, sizeof why) ||
        !usable(ctx, k, fp16, head_dim, params, why, sizeof why))
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_context_set_tuning: %s", why);
  }
  tuning_state *s = state(ctx);
  if (!s)
    return dua_fail(ctx, DUA_ERROR_OUT_OF_MEMORY, "dua_context_set_tuning: out of memory");
  override_entry *ov = (override_entry *)find_override(s, k->name, fp16, head_dim);
  if (num_params == 0) {
    if (ov)
      *ov = s->overrides[--s->num_overrides];
    return DUA_SUCCESS;
  }
  if (!ov) {
    override_entry *grown = realloc(s->overrides, (size_t)(s->num_overrides + 1) * sizeof *grown);
    if (!grown)
      return dua_fail(ctx, DUA_ERROR_OUT_OF_MEMORY, "dua_context_set_tuning: out of memory");
    s->overrides = grown;
    ov = &s->overrides[s->num_overrides++];
  }
  memset(ov, 0, sizeof *ov);
  snprintf(ov->kernel, sizeof ov->kernel, "%s", k->name);
  ov->fp16 = fp16, ov->head_dim = head_dim, ov->num_params = num_params;
  memcpy(ov->params, params, (size_t)num_params * sizeof *params);
  return DUA_SUCCESS;
}

dua_status dua_context_get_tuning(dua_context *ctx, const char *kernel, dua_dtype dtype, int head_dim,
                                  int layout_block, dua_tuning_info *info) {
  const dua_tune_kernel_desc *k;
  dua_status st = check_args(ctx, "dua_context_get_tuning", kernel, dtype, head_dim, &k);
  if (st != DUA_SUCCESS)
    return st;
  if (!info || !valid_block(layout_block))
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "dua_context_get_tuning: %s (layout_block = %d must be a power of two in 16..256)",
                    info ? "bad block" : "info is NULL", layout_block);
  dua_tuning_info r;
  memset(&r, 0, sizeof r);
  const int fp16 = dtype == DUA_F16;
  const tile_kernel *tk = tile_of(k);
  if (tk) {
    if ((st = tuning_tile(ctx, tk, head_dim, fp16, layout_block, r.params, &r.source, r.origin,
                          sizeof r.origin)) != DUA_SUCCESS)
      return st;
    tk->compiled(head_dim, layout_block, &ctx->info, r.default_params);
  } else if (is_kernel(k, "decode") || is_kernel(k, "decode_gqa")) {
    const int one_row = is_kernel(k, "decode");
    dua_decode_params p;
    int adjust;
    if ((st = dua_tuning_decode(ctx, head_dim, fp16, one_row, NULL, NULL, &p, &adjust, &r.source, r.origin,
                                sizeof r.origin)) != DUA_SUCCESS)
      return st;
    decode_to_array(&p, one_row, r.params);
    dua_decode_params d = dua_decode_params_default(&ctx->info, fp16, one_row, head_dim);
    decode_to_array(&d, one_row, r.default_params);
  } else if (is_kernel(k, "fwd_mma")) {
    /* what a call with this block runs: each class's MT, MT 2 made 1 where the block holds fewer than 128
     * rows */
    char why[256];
    int runs = dua_tuning_mma_runs(ctx, fp16, head_dim, why, sizeof why);
    if (runs && layout_block < 64) {
      runs = 0;
      snprintf(why, sizeof why, "the tensor-core forward needs layout blocks >= 64");
    }
    if (!runs)
      return dua_fail(ctx, DUA_ERROR_UNSUPPORTED,
                      "dua_context_get_tuning: fwd_mma %s head_dim %d block %d: %s", fp16 ? "fp16" : "fp32",
                      head_dim, layout_block, why);
    mma_params(ctx, head_dim, fp16, r.params, &r.source, r.origin, sizeof r.origin);
    mma_compiled(head_dim, r.default_params);
    for (int i = 0; i < 2; i++) {
      r.params[i] = mma_fit(r.params[i], layout_block);
      r.default_params[i] = mma_fit(r.default_params[i], layout_block);
    }
  } else {
    /* the compiled thresholds are those of the compiled plan for one query row per work-group (the warp
     * kernel's differ: decode_params.h) */
    dua_decode_split_params p;
    int fixed;
    const dua_decode_params plan = dua_decode_params_default(&ctx->info, fp16, 1, head_dim);
    if ((st = dua_tuning_decode_split(ctx, head_dim, fp16, &plan, 1, &p, &fixed, &r.source, r.origin,
                                      sizeof r.origin)) != DUA_SUCCESS)
      return st;
    r.params[0] = p.waves, r.params[1] = p.min_units, r.params[2] = p.max_splits;
    dua_decode_split_params d = dua_decode_split_compiled(&plan, 1);
    r.default_params[0] = d.waves, r.default_params[1] = d.min_units, r.default_params[2] = d.max_splits;
  }
  r.num_params = k->num_params;
  for (int i = 0; i < k->num_params; i++)
    snprintf(r.param_names[i], sizeof r.param_names[i], "%s", k->params[i].name);
  const tuning_state *s = ctx->tuning;
  if (s) {
    snprintf(r.file, sizeof r.file, "%s", s->file);
    snprintf(r.warning, sizeof r.warning, "%s", s->warning);
  }
  *info = r;
  return DUA_SUCCESS;
}

/* Appends one candidate (count it; write it while there is room). */
static void emit(const int32_t *a, int np, int32_t *params, int max_candidates, int *n) {
  if (params && *n < max_candidates)
    memcpy(params + (size_t)*n * (size_t)np, a, (size_t)np * sizeof *a);
  (*n)++;
}

/* Work-groups of 8..1024 work-items that are a multiple of the device's preferred work-group multiple (when
 * it has one below 1024). */
static int good_group(const dua_context *ctx, size_t threads) {
  const size_t pref = ctx->info.preferred_work_group_multiple;
  return threads >= 8 && threads <= 1024 && !(pref > 1 && pref < 1024 && threads % pref);
}

dua_status dua_tuning_candidates(dua_context *ctx, const char *kernel, dua_dtype dtype, int head_dim,
                                 int layout_block, int32_t *params, int max_candidates, int *count) {
  const dua_tune_kernel_desc *k;
  dua_status st = check_args(ctx, "dua_tuning_candidates", kernel, dtype, head_dim, &k);
  if (st != DUA_SUCCESS)
    return st;
  if (!count || !valid_block(layout_block) || (params && max_candidates < 0))
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "dua_tuning_candidates: count is NULL, max_candidates < 0 or layout_block = %d is not a "
                    "power of two in 16..256",
                    layout_block);
  const int np = k->num_params, fp16 = dtype == DUA_F16;
  int n = 0;
  int32_t a[DUA_TUNING_PARAMS];
  const tile_kernel *tk = tile_of(k);
  if (tk) {
    /* tiles: powers of two within the kernel's ranges, every divisibility rule of the kernel, at most the
     * device's work-group size and local memory */
    for (int bm = 8; bm <= 256; bm *= 2)
      for (int bn = 8; bn <= 256; bn *= 2)
        for (int tm = 1; tm <= 256; tm *= 2)
          for (int tn = 1; tn <= 256; tn *= 2) {
            if (!good_group(ctx, (size_t)tm * tn))
              continue;
            tile_to_array(bm, bn, tm, tn, a);
            if (tk->valid(a, head_dim, layout_block, &ctx->info))
              emit(a, np, params, max_candidates, &n);
          }
  } else if (is_kernel(k, "decode") || is_kernel(k, "decode_gqa")) {
    /* the kernels x tiles x work-groups (x most rows) within each kernel's ranges that pass its rules and
     * whose local memory fits with the smallest bitmap (8 words: contexts up to 256 key units); a call whose
     * bitmap or rows need more skips the tuned plan for that call. The warp kernel only where it is tunable
     * (warp_tunable: natively, or emulated when a test asks) */
    const int one_row = is_kernel(k, "decode"), kernels = warp_tunable(ctx) ? 4 : 2;
    const int emulated = !dua_decode_warp_native(&ctx->info);
    for (int staged = 0; staged < kernels; staged++) {
      int32_t v[DUA_TUNING_PARAMS] = {staged};
      const char *variant;
      const dua_tune_param_desc *tr = dua_tune_param_range(k, v, 1, &variant),
                                *nr = dua_tune_param_range(k, v, 2, &variant);
      for (int tile = tr->min; tile <= tr->max; tile *= 2)
        for (int threads = nr->min; threads <= nr->max; threads *= 2)
          for (int rows = 1; rows <= (one_row ? 1 : 64); rows++) {
            dua_decode_params p = {staged, tile, threads, rows};
            const size_t scratch = staged >= 2 && emulated ? dua_decode_emu_bytes(threads) : 0;
            if (!good_group(ctx, (size_t)threads) ||
                !dua_decode_params_valid(&p, head_dim, fp16, &ctx->info) ||
                dua_decode_local_bytes(&p, rows, 8, head_dim, fp16) + scratch > ctx->info.local_mem_bytes)
              continue;
            decode_to_array(&p, one_row, a);
            emit(a, np, params, max_candidates, &n);
          }
    }
  } else if (is_kernel(k, "fwd_mma")) {
    /* MT 1 or 2 per class where the kernel runs (none elsewhere), MT 2 only where the block holds 128 rows
     */
    if (dua_tuning_mma_runs(ctx, fp16, head_dim, NULL, 0) && layout_block >= 64)
      for (int mt = 1; mt <= 2; mt++)
        for (int cs = 1; cs <= 2; cs++) {
          if (mma_fit(mt, layout_block) != mt || mma_fit(cs, layout_block) != cs)
            continue;
          a[0] = mt, a[1] = cs;
          emit(a, np, params, max_candidates, &n);
        }
  } else {
    /* split thresholds: powers of two */
    for (int waves = 1; waves <= 1024; waves *= 2)
      for (int minunit = 1; minunit <= 256; minunit *= 2)
        for (int maxspl = 1; maxspl <= 256; maxspl *= 2) {
          a[0] = waves, a[1] = minunit, a[2] = maxspl;
          emit(a, np, params, max_candidates, &n);
        }
  }
  *count = n;
  return DUA_SUCCESS;
}
