/* tuning.c: kernel parameters through the lookup chain (dua.h, "tuning"): DUA_FWD_TILE, the context's
 * override (dua_context_set_tuning), the tuning database file read once per context, compiled per-vendor
 * defaults, generic defaults; plus the parameter space dua-tune searches (dua_tuning_candidates). */
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

/* ---------------------------------------------------------------- forward */

static const char *builtin_vendor(const dua_device_info *d) {
  if (strstr(d->vendor, "NVIDIA"))
    return "NVIDIA";
  if (strstr(d->platform_name, "Portable Computing Language"))
    return "PoCL";
  return NULL;
}

static void fwd_to_array(const dua_fwd_params *p, int32_t *a) {
  a[0] = p->block_m, a[1] = p->block_n, a[2] = p->threads_m, a[3] = p->threads_n;
}

static dua_fwd_params fwd_from_array(const int32_t *a) {
  dua_fwd_params p = {a[0], a[1], a[2], a[3]};
  return p;
}

static const override_entry *find_override(const tuning_state *s, const char *kernel, int fp16,
                                           int head_dim) {
  for (int i = 0; s && i < s->num_overrides; i++)
    if (!strcmp(s->overrides[i].kernel, kernel) && s->overrides[i].fp16 == fp16 &&
        s->overrides[i].head_dim == head_dim)
      return &s->overrides[i];
  return NULL;
}

dua_status dua_tuning_fwd(dua_context *ctx, int head_dim, int fp16, int layout_block, dua_fwd_params *out,
                          dua_tuning_source *source, char *origin, size_t origin_size) {
  char dummy[8];
  if (!origin)
    origin = dummy, origin_size = sizeof dummy;
  dua_tuning_source src_dummy;
  if (!source)
    source = &src_dummy;
  tuning_state *s = state(ctx); /* NULL only when out of memory: the compiled defaults still work */
  const char *tile = getenv("DUA_FWD_TILE"); /* developer override "block_m,block_n,threads_m,threads_n" */
  if (tile && *tile) {
    dua_fwd_params o;
    char extra;
    if (sscanf(tile, "%d,%d,%d,%d%c", &o.block_m, &o.block_n, &o.threads_m, &o.threads_n, &extra) != 4 ||
        !dua_fwd_params_valid(&o, head_dim, layout_block, &ctx->info))
      return dua_fail(
          ctx, DUA_ERROR_INVALID_ARGUMENT,
          "DUA_FWD_TILE = \"%s\" is not a valid block_m,block_n,threads_m,threads_n for head_dim %d, "
          "block %d on this device",
          tile, head_dim, layout_block);
    *out = o;
    *source = DUA_TUNING_DEVELOPER_ENV;
    snprintf(origin, origin_size, "env DUA_FWD_TILE");
    return DUA_SUCCESS;
  }
  const override_entry *ov = find_override(s, "fwd", fp16, head_dim);
  if (ov) {
    dua_fwd_params p = fwd_from_array(ov->params);
    if (dua_fwd_params_valid(&p, head_dim, layout_block, &ctx->info)) {
      *out = p;
      *source = DUA_TUNING_OVERRIDE;
      snprintf(origin, origin_size, "override");
      return DUA_SUCCESS;
    }
  }
  const dua_tuning_entry *e =
      s ? dua_tuning_db_find(&s->db, "fwd", fp16, head_dim, ctx->info.name, ctx->info.driver_version) : NULL;
  if (e) {
    dua_fwd_params p = fwd_from_array(e->params);
    if (dua_fwd_params_valid(&p, head_dim, layout_block, &ctx->info)) {
      *out = p;
      *source = DUA_TUNING_FILE;
      snprintf(origin, origin_size, "file %s", s->file);
      return DUA_SUCCESS;
    }
  }
  /* compiled defaults: the rules of fwd_params.c were measured on an H100 and on PoCL; other devices get the
   * same rules, labelled generic until a measurement says otherwise */
  dua_fwd_params p = dua_fwd_params_default(head_dim, layout_block, &ctx->info);
  if (!dua_fwd_params_valid(&p, head_dim, layout_block, &ctx->info))
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED,
                    "dua_attention_forward: no forward tile fits this device for head_dim %d, block %d "
                    "(local memory %llu bytes, max work-group %zu)",
                    head_dim, layout_block, (unsigned long long)ctx->info.local_mem_bytes,
                    ctx->info.max_work_group_size);
  *out = p;
  const char *vendor = builtin_vendor(&ctx->info);
  *source = vendor ? DUA_TUNING_BUILTIN : DUA_TUNING_GENERIC;
  if (vendor)
    snprintf(origin, origin_size, "built-in %s", vendor);
  else
    snprintf(origin, origin_size, "generic");
  return DUA_SUCCESS;
}

/* ---------------------------------------------------------------- public API */

static dua_status check_args(dua_context *ctx, const char *fn, const char *kernel, dua_dtype dtype,
                             int head_dim, const dua_tune_kernel_desc **k) {
  if (!ctx)
    return DUA_ERROR_INVALID_ARGUMENT;
  *k = dua_tune_kernel_find(kernel);
  if (!*k)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: kernel \"%s\" is not tunable (known: fwd)", fn,
                    kernel ? kernel : "(null)");
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

dua_status dua_context_set_tuning(dua_context *ctx, const char *kernel, dua_dtype dtype, int head_dim,
                                  const int32_t *params, int num_params) {
  const dua_tune_kernel_desc *k;
  dua_status st = check_args(ctx, "dua_context_set_tuning", kernel, dtype, head_dim, &k);
  if (st != DUA_SUCCESS)
    return st;
  if (num_params < 0 || (num_params > 0 && !params))
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_context_set_tuning: num_params = %d with params %s",
                    num_params, params ? "set" : "NULL");
  if (num_params > 0) {
    char why[256];
    if (dua_tuning_params_check(k, params, num_params, "params", why, sizeof why))
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_context_set_tuning: %s", why);
    dua_fwd_params p = fwd_from_array(params);
    int block = p.block_m > p.block_n ? p.block_m : p.block_n;
    if (!dua_fwd_params_valid(&p, head_dim, block, &ctx->info))
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                      "dua_context_set_tuning: fwd bm=%d bn=%d tm=%d tn=%d does not fit head_dim %d on this "
                      "device (divisibility, work-group size %zu, local memory %llu bytes)",
                      (int)params[0], (int)params[1], (int)params[2], (int)params[3], head_dim,
                      ctx->info.max_work_group_size, (unsigned long long)ctx->info.local_mem_bytes);
  }
  tuning_state *s = state(ctx);
  if (!s)
    return dua_fail(ctx, DUA_ERROR_OUT_OF_MEMORY, "dua_context_set_tuning: out of memory");
  int fp16 = dtype == DUA_F16;
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
  dua_fwd_params p;
  st =
      dua_tuning_fwd(ctx, head_dim, dtype == DUA_F16, layout_block, &p, &r.source, r.origin, sizeof r.origin);
  if (st != DUA_SUCCESS)
    return st;
  r.num_params = k->num_params;
  for (int i = 0; i < k->num_params; i++)
    snprintf(r.param_names[i], sizeof r.param_names[i], "%s", k->params[i].name);
  fwd_to_array(&p, r.params);
  dua_fwd_params d = dua_fwd_params_default(head_dim, layout_block, &ctx->info);
  fwd_to_array(&d, r.default_params);
  const tuning_state *s = ctx->tuning;
  if (s) {
    snprintf(r.file, sizeof r.file, "%s", s->file);
    snprintf(r.warning, sizeof r.warning, "%s", s->warning);
  }
  *info = r;
  return DUA_SUCCESS;
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
  /* the forward's space: powers of two within the kernel's ranges, every divisibility rule of the kernel, at
   * most the device's work-group size and local memory, work-groups of 8..1024 work-items that are a
   * multiple of the device's preferred work-group multiple (when it has one below 1024) */
  const size_t pref = ctx->info.preferred_work_group_multiple;
  int n = 0;
  for (int bm = 8; bm <= 256; bm *= 2)
    for (int bn = 8; bn <= 256; bn *= 2)
      for (int tm = 1; tm <= 256; tm *= 2)
        for (int tn = 1; tn <= 256; tn *= 2) {
          dua_fwd_params p = {bm, bn, tm, tn};
          size_t threads = (size_t)tm * tn;
          if (threads < 8 || threads > 1024 || (pref > 1 && pref < 1024 && threads % pref))
            continue;
          if (!dua_fwd_params_valid(&p, head_dim, layout_block, &ctx->info))
            continue;
          if (params && n < max_candidates)
            fwd_to_array(&p, params + (size_t)n * (size_t)k->num_params);
          n++;
        }
  *count = n;
  return DUA_SUCCESS;
}
