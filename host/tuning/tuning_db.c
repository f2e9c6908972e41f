/* tuning_db.c: strict reader and writer of the tuning database (format in tuning_db.h), and the table of
 * tunable kernels with their parameter ranges. Every refusal names the entry and field it is about. */
#include "tuning/tuning_db.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- kernels */

static const dua_tune_kernel_desc kernels[] = {
    /* portable forward (cl/attn_fwd.cl): BLOCK_M, BLOCK_N, TM, TN */
    {"fwd", 4, {{"bm", 8, 256, 1}, {"bn", 8, 256, 1}, {"tm", 1, 256, 1}, {"tn", 1, 256, 1}}, 0, 0},
    /* portable backward (cl/attn_bwd.cl, both passes): BLOCK_M, BLOCK_N, TM, TN */
    {"bwd", 4, {{"bm", 8, 256, 1}, {"bn", 8, 256, 1}, {"tm", 1, 256, 1}, {"tn", 1, 256, 1}}, 0, 0},
    /* decode with one query row per work-group: the kernel (0 regs, 1 staged: cl/attn_decode.cl
     * DUA_DECODE_STAGED; 2 warp, 3 mma: cl/attn_decode_warp.cl), TILE_N, NT; tile and threads ranges per
     * kernel below (decode_variant_ranges) */
    {"decode", 3, {{"staged", 0, 3, 0}, {"tile", 1, 128, 1}, {"threads", 16, 1024, 1}}, 1, 1},
    /* decode with several rows per work-group (GQA sharing, several query tokens): + most rows HPW x TOKENS
     */
    {"decode_gqa",
     4,
     {{"staged", 0, 3, 0}, {"tile", 1, 128, 1}, {"threads", 16, 1024, 1}, {"rows", 1, 64, 0}},
     1,
     1},
    /* split-KV thresholds of decode (host/tuning/decode_params.c): split while the work-groups are fewer
     * than waves x compute units, each split at least minunit key units, at most maxspl splits */
    {"decode_split", 3, {{"waves", 1, 1024, 0}, {"minunit", 1, 65536, 0}, {"maxspl", 1, 256, 0}}, 1, 0},
    /* NVIDIA tensor-core forward (cl/attn_fwd_mma.cl, MT): m-tiles of 16 query rows per warp, for most calls
     * and for causal layouts that visit few blocks (host/tuning/tuning.h, dua_tuning_fwd_mma) */
    {"fwd_mma", 2, {{"mt", 1, 2, 0}, {"mt_cs", 1, 2, 0}}, 0, 0},
};

/* A decode plan's tile and threads per kernel variant (params[0] = staged). */
static const char *const decode_variant_names[4] = {"regs", "staged", "warp", "mma"};
static const dua_tune_param_desc decode_variant_ranges[4][2] = {
    {{"tile", 16, 128, 1}, {"threads", 16, 1024, 1}}, /* regs: keys per tile, work-items */
    {{"tile", 16, 128, 1}, {"threads", 16, 1024, 1}}, /* staged */
    {{"tile", 1, 128, 1}, {"threads", 32, 1024, 1}},  /* warp: keys per batch of a warp, whole warps */
    {{"tile", 16, 16, 1}, {"threads", 32, 1024, 1}},  /* mma: keys per step of a warp (one k-step of P V) */
};

const char *dua_tune_decode_variant(int32_t staged) {
  return staged >= 0 && staged < 4 ? decode_variant_names[staged] : NULL;
}

const dua_tune_param_desc *dua_tune_param_range(const dua_tune_kernel_desc *k, const int32_t *params, int i,
                                                const char **variant) {
  *variant = NULL;
  if (k->variants && (i == 1 || i == 2) && dua_tune_decode_variant(params[0])) {
    *variant = dua_tune_decode_variant(params[0]);
    return &decode_variant_ranges[params[0]][i - 1];
  }
  return &k->params[i];
}

const char *dua_tune_kernel_names(void) {
  return "fwd, bwd, decode, decode_gqa, decode_split, fwd_mma";
}

const dua_tune_kernel_desc *dua_tune_kernel_find(const char *name) {
  if (!name)
    return NULL;
  for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; i++)
    if (!strcmp(kernels[i].name, name))
      return &kernels[i];
  return NULL;
}

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static int
fail(char *why, size_t n, const char *fmt, ...) {
  if (why && n) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, n, fmt, ap);
    va_end(ap);
  }
  return -1;
}

static int is_pow2(int32_t v) {
  return v > 0 && (v & (v - 1)) == 0;
}

int dua_tuning_params_check(const dua_tune_kernel_desc *k, const int32_t *params, int n, const char *where,
                            char *why, size_t why_size) {
  if (n != k->num_params)
    return fail(why, why_size, "%s: kernel \"%s\" takes %d parameters, not %d", where, k->name, k->num_params,
                n);
  for (int i = 0; i < n; i++) { /* in order: a decode plan's kernel variant before its own ranges */
    const char *variant;
    const dua_tune_param_desc *p = dua_tune_param_range(k, params, i, &variant);
    if (params[i] < p->min || params[i] > p->max || (p->pow2 && !is_pow2(params[i]))) {
      char kind[48] = "";
      if (variant)
        snprintf(kind, sizeof kind, " for the %s kernel (staged = %d)", variant, (int)params[0]);
      return fail(why, why_size, "%s.%s = %d: must be %s in %d..%d%s", where, p->name, (int)params[i],
                  p->pow2 ? "a power of two" : "an integer", (int)p->min, (int)p->max, kind);
    }
  }
  return 0;
}

/* ---------------------------------------------------------------- entry rules (load and put) */

static int check_text(const char *s, size_t cap, int may_be_empty, const char *where, const char *key,
                      char *why, size_t n) {
  size_t len = strlen(s);
  if ((!may_be_empty && len == 0) || len >= cap)
    return fail(why, n, "%s.%s: must be a string of %s%zu bytes", where, key, may_be_empty ? "0.." : "1..",
                cap - 1);
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)s[i] < 0x20)
      return fail(why, n, "%s.%s: control character at byte %zu", where, key, i);
  return 0;
}

static int check_ms(double v, const char *where, const char *key, char *why, size_t n) {
  if (!isfinite(v) || v <= 0 || v > 1e9)
    return fail(why, n, "%s.%s = %g: must be a time in ms in (0, 1e9]", where, key, v);
  return 0;
}

static int check_entry(const dua_tuning_entry *e, const char *where, char *why, size_t n) {
  const dua_tune_kernel_desc *k = dua_tune_kernel_find(e->kernel);
  if (!k)
    return fail(why, n, "%s.kernel = \"%s\": unknown kernel (known: %s)", where, e->kernel,
                dua_tune_kernel_names());
  if (e->fp16 != 0 && e->fp16 != 1)
    return fail(why, n, "%s.dtype: must be \"fp32\" or \"fp16\"", where);
  if (e->head_dim < 8 || e->head_dim > 256 || e->head_dim % 8)
    return fail(why, n, "%s.head_dim = %d: must be a multiple of 8 in 8..256", where, (int)e->head_dim);
  if (check_text(e->device, sizeof e->device, 0, where, "device", why, n) ||
      check_text(e->vendor, sizeof e->vendor, 1, where, "vendor", why, n) ||
      check_text(e->driver, sizeof e->driver, 0, where, "driver", why, n) ||
      check_text(e->date, sizeof e->date, 0, where, "date", why, n))
    return -1;
  char pw[96];
  snprintf(pw, sizeof pw, "%s.params", where);
  if (dua_tuning_params_check(k, e->params, e->num_params, pw, why, n))
    return -1;
  if (check_ms(e->best_ms, where, "best_ms", why, n) || check_ms(e->default_ms, where, "default_ms", why, n))
    return -1;
  if (!isfinite(e->tuning_s) || e->tuning_s < 0 || e->tuning_s > 1e7)
    return fail(why, n, "%s.tuning_s = %g: must be seconds in [0, 1e7]", where, e->tuning_s);
  if (e->candidates < 1 || e->candidates > 1000000)
    return fail(why, n, "%s.candidates = %d: must be in 1..1000000", where, (int)e->candidates);
  if (e->num_shapes < 1 || e->num_shapes > DUA_TUNING_MAX_SHAPES)
    return fail(why, n, "%s.shapes: must hold 1..%d shapes, not %d", where, DUA_TUNING_MAX_SHAPES,
                e->num_shapes);
  for (int i = 0; i < e->num_shapes; i++) {
    const dua_tuning_shape *s = &e->shapes[i];
    char sw[128];
    snprintf(sw, sizeof sw, "%s.shapes[%d]", where, i);
    if (s->n < 1 || s->n > (1 << 30))
      return fail(why, n, "%s.n = %d: must be in 1..2^30", sw, (int)s->n);
    if (s->depth < 0 || s->depth > 30)
      return fail(why, n, "%s.depth = %d: must be in 0..30", sw, (int)s->depth);
    if (s->block < 16 || s->block > 256 || !is_pow2(s->block))
      return fail(why, n, "%s.block = %d: must be a power of two in 16..256", sw, (int)s->block);
    if (s->batch < 1 || s->batch > 65536)
      return fail(why, n, "%s.batch = %d: must be in 1..65536", sw, (int)s->batch);
    if (s->heads < 1 || s->heads > 65536)
      return fail(why, n, "%s.heads = %d: must be in 1..65536", sw, (int)s->heads);
    if (k->decode_shapes) {
      if (s->kv_heads < 1 || s->kv_heads > s->heads || s->heads % s->kv_heads)
        return fail(why, n, "%s.kv_heads = %d: must divide heads = %d", sw, (int)s->kv_heads, (int)s->heads);
      if (s->tokens < 1 || s->tokens > 4)
        return fail(why, n, "%s.tokens = %d: must be in 1..4", sw, (int)s->tokens);
      if (s->page < 16 || s->page > 256 || !is_pow2(s->page))
        return fail(why, n, "%s.page = %d: must be a power of two in 16..256", sw, (int)s->page);
      if (s->causal)
        return fail(why, n, "%s.causal: decode shapes are causal by construction (the key is for others)",
                    sw);
    } else if (s->kv_heads || s->tokens || s->page) {
      return fail(why, n, "%s: kv_heads, tokens and page belong to decode shapes only", sw);
    } else if (s->causal != 0 && s->causal != 1) {
      return fail(why, n, "%s.causal = %d: must be 0 or 1", sw, (int)s->causal);
    }
    if (check_ms(s->best_ms, sw, "best_ms", why, n) || check_ms(s->default_ms, sw, "default_ms", why, n))
      return -1;
  }
  return 0;
}

static int same_key(const dua_tuning_entry *a, const dua_tuning_entry *b) {
  return !strcmp(a->kernel, b->kernel) && a->fp16 == b->fp16 && a->head_dim == b->head_dim &&
         !strcmp(a->device, b->device) && !strcmp(a->driver, b->driver);
}

/* ---------------------------------------------------------------- JSON reading */

/* Refuses keys not in names[] and duplicates. */
static int check_keys(const cJSON *obj, const char *const *names, int count, const char *where, char *why,
                      size_t n) {
  for (const cJSON *c = obj->child; c; c = c->next) {
    int known = 0;
    for (int i = 0; i < count && !known; i++)
      known = !strcmp(c->string, names[i]);
    if (!known)
      return fail(why, n, "%s: unknown key \"%.64s\"", where, c->string);
    for (const cJSON *d = obj->child; d != c; d = d->next)
      if (!strcmp(d->string, c->string))
        return fail(why, n, "%s.%s: duplicate key", where, c->string);
  }
  return 0;
}

static const cJSON *get(const cJSON *obj, const char *key, const char *where, char *why, size_t n) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!v)
    fail(why, n, "%s.%s: missing", where, key);
  return v;
}

static int get_int(const cJSON *obj, const char *key, int32_t *out, const char *where, char *why, size_t n) {
  const cJSON *v = get(obj, key, where, why, n);
  if (!v)
    return -1;
  if (!cJSON_IsNumber(v))
    return fail(why, n, "%s.%s: must be an integer", where, key);
  double d = v->valuedouble;
  if (!isfinite(d) || d != floor(d) || d < -2147483648.0 || d > 2147483647.0)
    return fail(why, n, "%s.%s = %g: must be an integer that fits int32", where, key, d);
  *out = (int32_t)d;
  return 0;
}

static int get_num(const cJSON *obj, const char *key, double *out, const char *where, char *why, size_t n) {
  const cJSON *v = get(obj, key, where, why, n);
  if (!v)
    return -1;
  if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
    return fail(why, n, "%s.%s: must be a finite number", where, key);
  *out = v->valuedouble;
  return 0;
}

static int get_str(const cJSON *obj, const char *key, char *out, size_t cap, const char *where, char *why,
                   size_t n) {
  const cJSON *v = get(obj, key, where, why, n);
  if (!v)
    return -1;
  if (!cJSON_IsString(v) || !v->valuestring)
    return fail(why, n, "%s.%s: must be a string", where, key);
  if (strlen(v->valuestring) >= cap)
    return fail(why, n, "%s.%s: longer than %zu bytes", where, key, cap - 1);
  memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
  return 0;
}

/* A shape: n, depth, block, batch, heads, best_ms, default_ms; decode shapes also kv_heads, tokens, page;
 * others an optional causal (0 or 1, absent = 0; written only when 1). */
static int read_shape(const cJSON *s, int decode, dua_tuning_shape *out, const char *where, char *why,
                      size_t n) {
  static const char *const names[] = {"n",          "depth",    "block",  "batch", "heads", "best_ms",
                                      "default_ms", "kv_heads", "tokens", "page",  "causal"};
  static const char *const plain[] = {"n",     "depth",   "block",      "batch",
                                      "heads", "best_ms", "default_ms", "causal"};
  if (!cJSON_IsObject(s))
    return fail(why, n, "%s: must be an object", where);
  if (check_keys(s, decode ? names : plain, decode ? 10 : 8, where, why, n))
    return -1;
  if (decode &&
      (get_int(s, "kv_heads", &out->kv_heads, where, why, n) ||
       get_int(s, "tokens", &out->tokens, where, why, n) || get_int(s, "page", &out->page, where, why, n)))
    return -1;
  if (!decode && cJSON_GetObjectItemCaseSensitive(s, "causal") &&
      get_int(s, "causal", &out->causal, where, why, n))
    return -1;
  if (get_int(s, "n", &out->n, where, why, n) || get_int(s, "depth", &out->depth, where, why, n) ||
      get_int(s, "block", &out->block, where, why, n) || get_int(s, "batch", &out->batch, where, why, n) ||
      get_int(s, "heads", &out->heads, where, why, n) ||
      get_num(s, "best_ms", &out->best_ms, where, why, n) ||
      get_num(s, "default_ms", &out->default_ms, where, why, n))
    return -1;
  return 0;
}

static int read_entry(const cJSON *j, dua_tuning_entry *e, const char *where, char *why, size_t n) {
  static const char *const names[] = {"kernel",   "dtype",      "head_dim", "device",  "vendor",
                                      "driver",   "date",       "params",   "best_ms", "default_ms",
                                      "tuning_s", "candidates", "shapes"};
  memset(e, 0, sizeof *e);
  if (!cJSON_IsObject(j))
    return fail(why, n, "%s: must be an object", where);
  if (check_keys(j, names, 13, where, why, n) ||
      get_str(j, "kernel", e->kernel, sizeof e->kernel, where, why, n))
    return -1;
  const dua_tune_kernel_desc *k = dua_tune_kernel_find(e->kernel);
  if (!k)
    return fail(why, n, "%s.kernel = \"%.32s\": unknown kernel (known: %s)", where, e->kernel,
                dua_tune_kernel_names());
  char dtype[8];
  if (get_str(j, "dtype", dtype, sizeof dtype, where, why, n))
    return -1;
  if (strcmp(dtype, "fp32") && strcmp(dtype, "fp16"))
    return fail(why, n, "%s.dtype = \"%s\": must be \"fp32\" or \"fp16\"", where, dtype);
  e->fp16 = !strcmp(dtype, "fp16");
  if (get_int(j, "head_dim", &e->head_dim, where, why, n) ||
      get_str(j, "device", e->device, sizeof e->device, where, why, n) ||
      get_str(j, "vendor", e->vendor, sizeof e->vendor, where, why, n) ||
      get_str(j, "driver", e->driver, sizeof e->driver, where, why, n) ||
      get_str(j, "date", e->date, sizeof e->date, where, why, n))
    return -1;
  char pw[96];
  snprintf(pw, sizeof pw, "%s.params", where);
  const cJSON *p = get(j, "params", where, why, n);
  if (!p)
    return -1;
  if (!cJSON_IsObject(p))
    return fail(why, n, "%s: must be an object", pw);
  const char *pnames[DUA_TUNING_PARAMS];
  for (int i = 0; i < k->num_params; i++)
    pnames[i] = k->params[i].name;
  if (check_keys(p, pnames, k->num_params, pw, why, n))
    return -1;
  for (int i = 0; i < k->num_params; i++)
    if (get_int(p, pnames[i], &e->params[i], pw, why, n))
      return -1;
  e->num_params = k->num_params;
  int32_t cands = 0;
  if (get_num(j, "best_ms", &e->best_ms, where, why, n) ||
      get_num(j, "default_ms", &e->default_ms, where, why, n) ||
      get_num(j, "tuning_s", &e->tuning_s, where, why, n) || get_int(j, "candidates", &cands, where, why, n))
    return -1;
  e->candidates = cands;
  const cJSON *sh = get(j, "shapes", where, why, n);
  if (!sh)
    return -1;
  if (!cJSON_IsArray(sh))
    return fail(why, n, "%s.shapes: must be an array", where);
  int ns = cJSON_GetArraySize(sh);
  if (ns < 1 || ns > DUA_TUNING_MAX_SHAPES)
    return fail(why, n, "%s.shapes: must hold 1..%d shapes, not %d", where, DUA_TUNING_MAX_SHAPES, ns);
  int i = 0;
  for (const cJSON *s = sh->child; s; s = s->next, i++) {
    char sw[128];
    snprintf(sw, sizeof sw, "%s.shapes[%d]", where, i);
    if (read_shape(s, k->decode_shapes, &e->shapes[i], sw, why, n))
      return -1;
  }
  e->num_shapes = ns;
  return check_entry(e, where, why, n);
}

int dua_tuning_db_parse(const char *text, size_t len, dua_tuning_db *db, char *why, size_t why_size) {
  dua_tuning_db_free(db);
  if (!text)
    return fail(why, why_size, "no text");
  if (len > DUA_TUNING_MAX_FILE)
    return fail(why, why_size, "larger than %u bytes", DUA_TUNING_MAX_FILE);
  if (memchr(text, '\0', len))
    return fail(why, why_size, "NUL byte at offset %zu",
                (size_t)((const char *)memchr(text, '\0', len) - text));
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
  if (!root) {
    size_t at = end && end >= text ? (size_t)(end - text) : 0;
    return fail(why, why_size, "not valid JSON (near byte %zu of %zu%s)", at, len,
                at >= len ? ": truncated?" : "");
  }
  for (const char *c = end; c < text + len; c++)
    if (*c != ' ' && *c != '\t' && *c != '\n' && *c != '\r') {
      cJSON_Delete(root);
      return fail(why, why_size, "text after the JSON value at byte %zu", (size_t)(c - text));
    }
  int rc = -1;
  static const char *const top[] = {"format", "version", "entries"};
  char format[32];
  int32_t version = 0;
  if (!cJSON_IsObject(root)) {
    fail(why, why_size, "the top level must be an object");
    goto out;
  }
  if (check_keys(root, top, 3, "file", why, why_size) ||
      get_str(root, "format", format, sizeof format, "file", why, why_size))
    goto out;
  if (strcmp(format, DUA_TUNING_FORMAT)) {
    fail(why, why_size, "file.format = \"%s\": must be \"%s\"", format, DUA_TUNING_FORMAT);
    goto out;
  }
  if (get_int(root, "version", &version, "file", why, why_size))
    goto out;
  if (version != DUA_TUNING_VERSION) {
    fail(why, why_size, "file.version = %d: this library reads version %d", (int)version, DUA_TUNING_VERSION);
    goto out;
  }
  const cJSON *arr = get(root, "entries", "file", why, why_size);
  if (!arr)
    goto out;
  if (!cJSON_IsArray(arr)) {
    fail(why, why_size, "file.entries: must be an array");
    goto out;
  }
  int count = cJSON_GetArraySize(arr);
  if (count > DUA_TUNING_MAX_ENTRIES) {
    fail(why, why_size, "file.entries: %d entries, at most %d", count, DUA_TUNING_MAX_ENTRIES);
    goto out;
  }
  db->entries = count ? calloc((size_t)count, sizeof *db->entries) : NULL;
  if (count && !db->entries) {
    fail(why, why_size, "out of memory");
    goto out;
  }
  db->capacity = count;
  int i = 0;
  for (const cJSON *e = arr->child; e; e = e->next, i++) {
    char where[32];
    snprintf(where, sizeof where, "entries[%d]", i);
    if (read_entry(e, &db->entries[i], where, why, why_size))
      goto out;
    for (int j = 0; j < i; j++)
      if (same_key(&db->entries[j], &db->entries[i])) {
        fail(why, why_size, "%s: same kernel, dtype, head_dim, device and driver as entries[%d]", where, j);
        goto out;
      }
    db->count = i + 1;
  }
  rc = 0;
out:
  cJSON_Delete(root);
  if (rc)
    dua_tuning_db_free(db);
  return rc;
}

int dua_tuning_db_load(const char *path, dua_tuning_db *db, char *why, size_t why_size) {
  dua_tuning_db_free(db);
  FILE *f = fopen(path, "rb");
  if (!f) {
    if (errno == ENOENT)
      return 1;
    return fail(why, why_size, "cannot open: %s", strerror(errno));
  }
  char *buf = malloc(DUA_TUNING_MAX_FILE + 1);
  if (!buf) {
    fclose(f);
    return fail(why, why_size, "out of memory");
  }
  size_t len = fread(buf, 1, DUA_TUNING_MAX_FILE + 1, f);
  int err = ferror(f);
  fclose(f);
  int rc;
  if (err)
    rc = fail(why, why_size, "read error");
  else if (len > DUA_TUNING_MAX_FILE)
    rc = fail(why, why_size, "larger than %u bytes", DUA_TUNING_MAX_FILE);
  else
    rc = dua_tuning_db_parse(buf, len, db, why, why_size);
  free(buf);
  return rc;
}

/* ---------------------------------------------------------------- writing */

char *dua_tuning_db_print(const dua_tuning_db *db) {
  cJSON *root = cJSON_CreateObject(), *arr = NULL;
  if (!root || !cJSON_AddStringToObject(root, "format", DUA_TUNING_FORMAT) ||
      !cJSON_AddNumberToObject(root, "version", DUA_TUNING_VERSION) ||
      !(arr = cJSON_AddArrayToObject(root, "entries")))
    goto oom;
  for (int i = 0; i < db->count; i++) {
    const dua_tuning_entry *e = &db->entries[i];
    const dua_tune_kernel_desc *k = dua_tune_kernel_find(e->kernel);
    cJSON *o = cJSON_CreateObject(), *p = NULL, *sh = NULL;
    if (!o || !k)
      goto oom_o;
    cJSON_AddItemToArray(arr, o);
    if (!cJSON_AddStringToObject(o, "kernel", e->kernel) ||
        !cJSON_AddStringToObject(o, "dtype", e->fp16 ? "fp16" : "fp32") ||
        !cJSON_AddNumberToObject(o, "head_dim", e->head_dim) ||
        !cJSON_AddStringToObject(o, "device", e->device) ||
        !cJSON_AddStringToObject(o, "vendor", e->vendor) ||
        !cJSON_AddStringToObject(o, "driver", e->driver) || !cJSON_AddStringToObject(o, "date", e->date) ||
        !(p = cJSON_AddObjectToObject(o, "params")))
      goto oom;
    for (int j = 0; j < k->num_params && j < e->num_params; j++)
      if (!cJSON_AddNumberToObject(p, k->params[j].name, e->params[j]))
        goto oom;
    if (!cJSON_AddNumberToObject(o, "best_ms", e->best_ms) ||
        !cJSON_AddNumberToObject(o, "default_ms", e->default_ms) ||
        !cJSON_AddNumberToObject(o, "tuning_s", e->tuning_s) ||
        !cJSON_AddNumberToObject(o, "candidates", e->candidates) ||
        !(sh = cJSON_AddArrayToObject(o, "shapes")))
      goto oom;
    for (int j = 0; j < e->num_shapes; j++) {
      const dua_tuning_shape *s = &e->shapes[j];
      cJSON *so = cJSON_CreateObject();
      if (!so)
        goto oom;
      cJSON_AddItemToArray(sh, so);
      if (!cJSON_AddNumberToObject(so, "n", s->n) || !cJSON_AddNumberToObject(so, "depth", s->depth) ||
          !cJSON_AddNumberToObject(so, "block", s->block) ||
          !cJSON_AddNumberToObject(so, "batch", s->batch) ||
          !cJSON_AddNumberToObject(so, "heads", s->heads) ||
          (!k->decode_shapes && s->causal && !cJSON_AddNumberToObject(so, "causal", s->causal)) ||
          (k->decode_shapes && (!cJSON_AddNumberToObject(so, "kv_heads", s->kv_heads) ||
                                !cJSON_AddNumberToObject(so, "tokens", s->tokens) ||
                                !cJSON_AddNumberToObject(so, "page", s->page))) ||
          !cJSON_AddNumberToObject(so, "best_ms", s->best_ms) ||
          !cJSON_AddNumberToObject(so, "default_ms", s->default_ms))
        goto oom;
    }
    continue;
  oom_o:
    cJSON_Delete(o);
    goto oom;
  }
  char *text = cJSON_Print(root);
  cJSON_Delete(root);
  return text;
oom:
  cJSON_Delete(root);
  return NULL;
}

int dua_tuning_db_save(const char *path, const dua_tuning_db *db, char *why, size_t why_size) {
  for (int i = 0; i < db->count; i++) {
    char where[32];
    snprintf(where, sizeof where, "entries[%d]", i);
    if (check_entry(&db->entries[i], where, why, why_size))
      return -1;
  }
  char *text = dua_tuning_db_print(db);
  if (!text)
    return fail(why, why_size, "out of memory");
  size_t len = strlen(text);
  size_t plen = strlen(path);
  char *tmp = malloc(plen + 32);
  if (!tmp) {
    free(text);
    return fail(why, why_size, "out of memory");
  }
  snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644), rc = 0;
  if (fd < 0) {
    rc = fail(why, why_size, "cannot create %s: %s", tmp, strerror(errno));
  } else {
    size_t off = 0;
    while (off < len) {
      ssize_t w = write(fd, text + off, len - off);
      if (w <= 0) {
        if (w < 0 && errno == EINTR)
          continue;
        rc = fail(why, why_size, "write to %s failed: %s", tmp, strerror(errno));
        break;
      }
      off += (size_t)w;
    }
    if (!rc && (write(fd, "\n", 1) != 1 || fsync(fd) != 0))
      rc = fail(why, why_size, "write to %s failed: %s", tmp, strerror(errno));
    if (close(fd) != 0 && !rc)
      rc = fail(why, why_size, "close of %s failed: %s", tmp, strerror(errno));
    if (!rc && rename(tmp, path) != 0)
      rc = fail(why, why_size, "rename %s -> %s failed: %s", tmp, path, strerror(errno));
    if (rc)
      unlink(tmp);
  }
  free(tmp);
  free(text);
  return rc;
}

int dua_tuning_db_put(dua_tuning_db *db, const dua_tuning_entry *e, char *why, size_t why_size) {
  if (check_entry(e, "entry", why, why_size))
    return -1;
  for (int i = 0; i < db->count; i++)
    if (same_key(&db->entries[i], e)) {
      db->entries[i] = *e;
      return 0;
    }
  if (db->count >= DUA_TUNING_MAX_ENTRIES)
    return fail(why, why_size, "the database holds %d entries already", db->count);
  if (db->count == db->capacity) {
    int cap = db->capacity ? 2 * db->capacity : 8;
    dua_tuning_entry *grown = realloc(db->entries, (size_t)cap * sizeof *grown);
    if (!grown)
      return fail(why, why_size, "out of memory");
    db->entries = grown;
    db->capacity = cap;
  }
  db->entries[db->count++] = *e;
  return 0;
}

const dua_tuning_entry *dua_tuning_db_find(const dua_tuning_db *db, const char *kernel, int fp16,
                                           int head_dim, const char *device, const char *driver) {
  for (int i = 0; db && i < db->count; i++) {
    const dua_tuning_entry *e = &db->entries[i];
    if (!strcmp(e->kernel, kernel) && e->fp16 == fp16 && e->head_dim == head_dim &&
        !strcmp(e->device, device) && !strcmp(e->driver, driver))
      return e;
  }
  return NULL;
}

void dua_tuning_db_free(dua_tuning_db *db) {
  if (!db)
    return;
  free(db->entries);
  db->entries = NULL;
  db->count = db->capacity = 0;
}
