/* test_tuning.c: the tuning lookup chain on a device (PoCL in CI): DUA_FWD_TILE over the context's override
 * over the database file (DUA_TUNING_FILE, then $XDG_DATA_HOME/dua/tuning.json, then
 * ~/.local/share/dua/tuning.json) over the compiled defaults; entries for another driver, dtype or a tile
 * the layout block cannot use are skipped; a refused file falls back with a warning through the log callback
 * naming the entry; dua_context_set_tuning's refusals; the candidate space; and a forward run with the file's
 * tile matching the default tile's output. The same chain for the backward tile, the decode plans and the
 * decode split-KV thresholds (with DUA_DECODE_KERNEL/TILE/SPLITS on top), their refusals and candidate
 * spaces; that tuned values reach the kernels (the build options of the programs the calls made, and the
 * split count through the scratch the decode merge needs); and that without a database the backward tile,
 * the decode plan and its split count are exactly the compiled rules. The warp kernel in the decode space:
 * its candidates, overrides and database entries only where it runs natively or DUA_TUNING_EMULATED_WARP=1
 * (else the override is refused and the entry skipped with one warning), its own ranges, its plans reaching
 * the kernel with outputs equal to the compiled plan's, and its own compiled split thresholds. Environment
 * variables are set inside the test. Expected values that depend on the device (its compiled defaults, what
 * fits its local memory) come from its info; all but the warp test run a second time with the info made to
 * look like an NVIDIA H100's (simulate_nvidia), so PoCL checks what an H100 would. The tensor-core forward's
 * m-tiles per warp ("fwd_mma": mt, mt_cs): refused where the kernel does not run, then with the kernel forced
 * on (emulated on PoCL, tiny problems) the chain DUA_MMA_MT > override > file > compiled rule, its space, and
 * the MT reaching the kernel (the -DMT= of its DEBUG log line) per call class, with MT 2 falling back to 1
 * below block 128. */
#include "attention/forward_internal.h"
#include "attention/kv_internal.h"
#include "dua.h"
#include "runtime/context_internal.h"
#include "test_util.h"
#include "tuning/bwd_params.h"
#include "tuning/decode_params.h"
#include "tuning/fwd_params.h"
#include "tuning/tuning_db.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[64];

static void clear_env(void) {
  unsetenv("DUA_FWD_TILE");
  unsetenv("DUA_TUNING_FILE");
  unsetenv("XDG_DATA_HOME");
  unsetenv("DUA_DECODE_KERNEL");
  unsetenv("DUA_DECODE_TILE");
  unsetenv("DUA_DECODE_SPLITS");
  unsetenv("DUA_TUNING_EMULATED_WARP");
  unsetenv("DUA_MMA_MT");
}

/* One entry for the test device: fwd fp32 head dim 64, tile (bm, bn, tm, tn), driver as given. */
static void write_db(const char *path, const dua_device_info *d, const char *driver, const int32_t *tile) {
  dua_tuning_db db = {0};
  dua_tuning_entry e;
  memset(&e, 0, sizeof e);
  snprintf(e.kernel, sizeof e.kernel, "fwd");
  e.head_dim = 64;
  snprintf(e.device, sizeof e.device, "%s", d->name);
  snprintf(e.vendor, sizeof e.vendor, "%s", d->vendor);
  snprintf(e.driver, sizeof e.driver, "%s", driver);
  snprintf(e.date, sizeof e.date, "2026-11-26T00:00:00Z");
  e.num_params = 4;
  memcpy(e.params, tile, 4 * sizeof *tile);
  e.best_ms = 1, e.default_ms = 2, e.tuning_s = 3, e.candidates = 4, e.num_shapes = 1;
  e.shapes[0] =
      (dua_tuning_shape){.n = 256, .block = 128, .batch = 1, .heads = 1, .best_ms = 1.0, .default_ms = 2.0};
  char why[512];
  ck_assert_msg(dua_tuning_db_put(&db, &e, why, sizeof why) == 0, "%s", why);
  ck_assert_msg(dua_tuning_db_save(path, &db, why, sizeof why) == 0, "%s", why);
  dua_tuning_db_free(&db);
}

static char logged[2048];
static void log_fn(dua_log_level level, const char *message, void *user) {
  (void)user;
  if (level == DUA_LOG_WARNING)
    snprintf(logged, sizeof logged, "%s", message);
}

/* Loop tests run twice: as the device is (_i = 0), then with ctx->info made to look like an NVIDIA H100
 * under its OpenCL driver (_i = 1): vendor, GPU, 48 KiB of local memory, 1024 work-items, 132 compute units,
 * warps of 32, the mma.sync probe passed. That changes every compiled default that depends on the device (the
 * "built-in NVIDIA" source, the warp kernel as the decode default, the tiles the local memory allows) while
 * the kernels still run on the real device; the warp kernel, which would then be built with inline PTX, is
 * never run in this mode. */
static int sim_nv;

static void simulate_nvidia(dua_context *ctx) {
  dua_device_info *i = &ctx->info;
  snprintf(i->vendor, sizeof i->vendor, "NVIDIA Corporation");
  i->type = DUA_DEVICE_GPU;
  i->local_mem_bytes = 48 * 1024;
  i->max_work_group_size = 1024;
  i->compute_units = 132;
  i->preferred_work_group_multiple = 32;
  i->nv_compute_capability = 90;
  i->nv_mma_probed = i->nv_mma_f16 = i->nv_mma_tf32 = 1;
}

static dua_context *context(void) {
  dua_context_options o;
  dua_context_options_init(&o);
  o.log = log_fn;
  o.log_level = DUA_LOG_WARNING;
  dua_context *ctx = NULL;
  ck_assert_int_eq(dua_context_create(&o, &ctx), DUA_SUCCESS);
  if (sim_nv)
    simulate_nvidia(ctx);
  return ctx;
}

static dua_tuning_info get(dua_context *ctx, dua_dtype dt, int dim, int block) {
  dua_tuning_info t;
  dua_status st = dua_context_get_tuning(ctx, "fwd", dt, dim, block, &t);
  ck_assert_msg(st == DUA_SUCCESS, "get_tuning: %s", dua_context_last_error(ctx));
  return t;
}

/* The test's tiles are valid for head dim 64, block >= 64, with 32 or 64 work-items and at most 40 KB of
 * local memory: on PoCL and within NVIDIA's 48 KiB (a tile PoCL takes may not fit there: 64,64,16,4 needs 53
 * KB). */
static const int32_t tile[4] = {32, 64, 8, 4};

/* The device takes the test's tile params for kernel (head dim 64) as an override: a precondition, said
 * plainly (the library says why not) rather than as a wrong source later. The override is cleared again. */
static void require_usable(dua_context *ctx, const char *kernel, const int32_t *params, int n) {
  ck_assert_msg(dua_context_set_tuning(ctx, kernel, DUA_F32, 64, params, n) == DUA_SUCCESS,
                "the test's %s parameters do not suit this device: %s", kernel, dua_context_last_error(ctx));
  ck_assert_int_eq(dua_context_set_tuning(ctx, kernel, DUA_F32, 64, NULL, 0), DUA_SUCCESS);
}

START_TEST(chain_precedence) {
  clear_env();
  sim_nv = _i;
  char path[128], bad[128];
  snprintf(path, sizeof path, "%s/explicit.json", tmpdir);
  snprintf(bad, sizeof bad, "%s/bad.json", tmpdir);
  /* no file: compiled defaults */
  setenv("DUA_TUNING_FILE", "/nonexistent/dua/tuning.json", 1);
  dua_context *ctx = context();
  dua_device_info d;
  dua_context_device_info(ctx, &d);
  const int32_t ov[4] = {64, 32, 16, 4}; /* the override: neither the file's tile nor the default */
  require_usable(ctx, "fwd", tile, 4);
  require_usable(ctx, "fwd", ov, 4);
  dua_tuning_info t = get(ctx, DUA_F32, 64, 128);
  ck_assert(t.source == DUA_TUNING_BUILTIN || t.source == DUA_TUNING_GENERIC);
  if (sim_nv) /* the compiled NVIDIA defaults */
    ck_assert_str_eq(t.origin, "built-in NVIDIA");
  ck_assert(memcmp(t.params, ov, sizeof ov) != 0 && memcmp(t.params, tile, sizeof tile) != 0);
  ck_assert(!memcmp(t.params, t.default_params, sizeof t.params));
  ck_assert_str_eq(t.file, "");
  dua_context_destroy(ctx);

  /* the file, for this device and driver */
  write_db(path, &d, d.driver_version, tile);
  setenv("DUA_TUNING_FILE", path, 1);
  ctx = context();
  t = get(ctx, DUA_F32, 64, 128);
  ck_assert_int_eq(t.source, DUA_TUNING_FILE);
  char want[256];
  snprintf(want, sizeof want, "file %s", path);
  ck_assert_str_eq(t.origin, want);
  ck_assert(!memcmp(t.params, tile, sizeof tile));
  /* other dtype / head dim: not in the file */
  ck_assert_int_ne(get(ctx, DUA_F16, 64, 128).source, DUA_TUNING_FILE);
  ck_assert_int_ne(get(ctx, DUA_F32, 32, 128).source, DUA_TUNING_FILE);
  /* a block the file's tile does not divide: skipped for that call */
  ck_assert_int_ne(get(ctx, DUA_F32, 64, 16).source, DUA_TUNING_FILE);
  /* the API override beats the file; clearing it brings the file back */
  ck_assert_msg(dua_context_set_tuning(ctx, "fwd", DUA_F32, 64, ov, 4) == DUA_SUCCESS, "%s",
                dua_context_last_error(ctx));
  t = get(ctx, DUA_F32, 64, 128);
  ck_assert_int_eq(t.source, DUA_TUNING_OVERRIDE);
  ck_assert_str_eq(t.origin, "override");
  ck_assert(!memcmp(t.params, ov, sizeof ov));
  /* DUA_FWD_TILE beats everything; an invalid one fails */
  setenv("DUA_FWD_TILE", "16,32,4,8", 1);
  t = get(ctx, DUA_F32, 64, 128);
  ck_assert_int_eq(t.source, DUA_TUNING_DEVELOPER_ENV);
  ck_assert_int_eq(t.params[0], 16);
  setenv("DUA_FWD_TILE", "7,32,4,8", 1);
  ck_assert_int_eq(dua_context_get_tuning(ctx, "fwd", DUA_F32, 64, 128, &t), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert(strstr(dua_context_last_error(ctx), "DUA_FWD_TILE") != NULL);
  unsetenv("DUA_FWD_TILE");
  ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd", DUA_F32, 64, NULL, 0), DUA_SUCCESS);
  ck_assert_int_eq(get(ctx, DUA_F32, 64, 128).source, DUA_TUNING_FILE);
  dua_context_destroy(ctx);

  /* an entry for another driver is not used */
  write_db(path, &d, "some-other-driver 0.0", tile);
  ctx = context();
  ck_assert_int_ne(get(ctx, DUA_F32, 64, 128).source, DUA_TUNING_FILE);
  dua_context_destroy(ctx);

  /* XDG_DATA_HOME, then HOME, when DUA_TUNING_FILE is not set */
  unsetenv("DUA_TUNING_FILE");
  char xdg[128], file[192];
  snprintf(xdg, sizeof xdg, "%s/xdg%d", tmpdir, _i); /* a directory per loop iteration */
  snprintf(file, sizeof file, "%s/dua", xdg);
  ck_assert_int_eq(mkdir(xdg, 0755), 0);
  ck_assert_int_eq(mkdir(file, 0755), 0);
  snprintf(file, sizeof file, "%s/dua/tuning.json", xdg);
  write_db(file, &d, d.driver_version, tile);
  setenv("XDG_DATA_HOME", xdg, 1);
  ctx = context();
  t = get(ctx, DUA_F32, 64, 128);
  ck_assert_int_eq(t.source, DUA_TUNING_FILE);
  ck_assert_str_eq(t.file, file);
  dua_context_destroy(ctx);
  unsetenv("XDG_DATA_HOME");
  const char *home = getenv("HOME");
  char *saved_home = home ? strdup(home) : NULL;
  char hdir[128], hfile[256];
  snprintf(hdir, sizeof hdir, "%s/home%d", tmpdir, _i);
  ck_assert_int_eq(mkdir(hdir, 0755), 0);
  snprintf(hfile, sizeof hfile, "%s/.local", hdir);
  ck_assert_int_eq(mkdir(hfile, 0755), 0);
  snprintf(hfile, sizeof hfile, "%s/.local/share", hdir);
  ck_assert_int_eq(mkdir(hfile, 0755), 0);
  snprintf(hfile, sizeof hfile, "%s/.local/share/dua", hdir);
  ck_assert_int_eq(mkdir(hfile, 0755), 0);
  snprintf(hfile, sizeof hfile, "%s/.local/share/dua/tuning.json", hdir);
  write_db(hfile, &d, d.driver_version, tile);
  setenv("HOME", hdir, 1);
  ctx = context();
  t = get(ctx, DUA_F32, 64, 128);
  ck_assert_int_eq(t.source, DUA_TUNING_FILE);
  ck_assert_str_eq(t.file, hfile);
  dua_context_destroy(ctx);
  /* DUA_TUNING_FILE wins over XDG_DATA_HOME and HOME */
  setenv("XDG_DATA_HOME", xdg, 1);
  setenv("DUA_TUNING_FILE", path, 1);
  write_db(path, &d, d.driver_version, ov);
  ctx = context();
  t = get(ctx, DUA_F32, 64, 128);
  ck_assert_str_eq(t.file, path);
  ck_assert(!memcmp(t.params, ov, sizeof ov));
  dua_context_destroy(ctx);
  if (saved_home)
    setenv("HOME", saved_home, 1);
  free(saved_home);

  /* a refused file: warning through the log naming the entry, compiled defaults */
  FILE *f = fopen(bad, "w");
  fputs(
      "{\"format\": \"dua-tuning\", \"version\": 1, \"entries\": [{\"kernel\": \"fwd\", \"dtype\": \"fp32\", "
      "\"head_dim\": 64, \"device\": \"x\", \"vendor\": \"\", \"driver\": \"y\", \"date\": \"z\", "
      "\"params\": "
      "{\"bm\": 7, \"bn\": 32, \"tm\": 16, \"tn\": 8}, \"best_ms\": 1, \"default_ms\": 1, \"tuning_s\": 1, "
      "\"candidates\": 1, \"shapes\": [{\"n\": 1, \"depth\": 0, \"block\": 16, \"batch\": 1, \"heads\": 1, "
      "\"best_ms\": 1, \"default_ms\": 1}]}]}\n",
      f);
  fclose(f);
  setenv("DUA_TUNING_FILE", bad, 1);
  logged[0] = '\0';
  ctx = context();
  t = get(ctx, DUA_F32, 64, 128);
  ck_assert(t.source == DUA_TUNING_BUILTIN || t.source == DUA_TUNING_GENERIC);
  ck_assert_msg(strstr(t.warning, "entries[0].params.bm = 7") != NULL, "%s", t.warning);
  ck_assert_msg(strstr(logged, "entries[0].params.bm = 7") != NULL, "log: %s", logged);
  ck_assert(strstr(logged, bad) != NULL);
  dua_context_destroy(ctx);
  clear_env();
  unlink(bad);
}
END_TEST

START_TEST(set_tuning_refusals_and_candidates) {
  clear_env();
  sim_nv = _i;
  setenv("DUA_TUNING_FILE", "/nonexistent/dua/tuning.json", 1);
  dua_context *ctx = context();
  const int32_t ok[4] = {64, 32, 16, 8}, seven[4] = {7, 32, 16, 8}, huge[4] = {256, 256, 256, 256},
                bad_div[4] = {64, 32, 16, 32};
  ck_assert_int_eq(dua_context_set_tuning(NULL, "fwd", DUA_F32, 64, ok, 4), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_context_set_tuning(ctx, "bwd_dq", DUA_F32, 64, ok, 4), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert(strstr(dua_context_last_error(ctx), "\"bwd_dq\"") != NULL);
  ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd", (dua_dtype)5, 64, ok, 4), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd", DUA_F32, 60, ok, 4), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd", DUA_F32, 64, ok, 3), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd", DUA_F32, 64, NULL, 4), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd", DUA_F32, 64, seven, 4), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(dua_context_last_error(ctx), "params.bm = 7") != NULL, "%s",
                dua_context_last_error(ctx));
  ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd", DUA_F32, 64, huge, 4), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd", DUA_F32, 64, bad_div, 4), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd", DUA_F32, 64, ok, 4), DUA_SUCCESS);
  /* the device's limits: a tile within the kernel's rules is taken exactly when its local memory fits
   * (NVIDIA: 48 KiB; PoCL: more), else refused saying so */
  dua_device_info d;
  dua_context_device_info(ctx, &d);
  const int32_t big[4] = {64, 64, 16, 4};
  const dua_fwd_params bp = {64, 64, 16, 4};
  const size_t big_bytes = dua_fwd_local_bytes(&bp, 64);
  /* every array of the kernels counted, the optional ones included (token-bias table, level sums, reduce) */
  ck_assert_uint_ge(big_bytes, 4 * (3 * 64 * 68 + 2 * 64 * 4 + 33)); /* q, K/V, P, row parts, token table */
  const dua_bwd_params bwd = {32, 32, 8, 16}; /* dK/dV pass: q, dO, K, V, P, dS, row stats, tables, reduce */
  ck_assert_uint_ge(dua_bwd_local_bytes(&bwd, 64), 4 * (4 * 32 * 68 + 2 * 32 * 36 + 3 * 32 + 33 + 32 + 128));
  if (big_bytes <= d.local_mem_bytes) {
    ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd", DUA_F32, 64, big, 4), DUA_SUCCESS);
  } else {
    ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd", DUA_F32, 64, big, 4), DUA_ERROR_INVALID_ARGUMENT);
    char want[128];
    snprintf(want, sizeof want, "needs %zu bytes of local memory, the device has %llu", big_bytes,
             (unsigned long long)d.local_mem_bytes);
    ck_assert_msg(strstr(dua_context_last_error(ctx), want) != NULL, "%s", dua_context_last_error(ctx));
  }
  if (sim_nv) /* 53 KB: what failed on the H100 as the override of chain_precedence */
    ck_assert_uint_gt(big_bytes, d.local_mem_bytes);
  dua_tuning_info t;
  ck_assert_int_eq(dua_context_get_tuning(ctx, "fwd", DUA_F32, 64, 48, &t), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_context_get_tuning(ctx, "fwd", DUA_F32, 64, 128, NULL), DUA_ERROR_INVALID_ARGUMENT);
  /* the space: every candidate is accepted as an override and reported back */
  int count = 0;
  ck_assert_int_eq(dua_tuning_candidates(ctx, "fwd", DUA_F32, 64, 128, NULL, 0, &count), DUA_SUCCESS);
  ck_assert_int_gt(count, 10);
  int32_t *c = malloc((size_t)count * 4 * sizeof *c);
  int again = 0;
  ck_assert_int_eq(dua_tuning_candidates(ctx, "fwd", DUA_F32, 64, 128, c, count, &again), DUA_SUCCESS);
  ck_assert_int_eq(again, count);
  for (int i = 0; i < count; i += 7) {
    ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd", DUA_F32, 64, c + 4 * i, 4), DUA_SUCCESS);
    t = get(ctx, DUA_F32, 64, 128);
    ck_assert_int_eq(t.source, DUA_TUNING_OVERRIDE);
    ck_assert(!memcmp(t.params, c + 4 * i, 4 * sizeof *c));
  }
  /* a smaller block has a smaller space */
  int small = 0;
  ck_assert_int_eq(dua_tuning_candidates(ctx, "fwd", DUA_F32, 64, 16, NULL, 0, &small), DUA_SUCCESS);
  ck_assert_int_lt(small, count);
  free(c);
  dua_context_destroy(ctx);
  clear_env();
}
END_TEST

/* The forward with the file's tile gives the default tile's output. */
START_TEST(forward_uses_file_tile) {
  clear_env();
  sim_nv = _i;
  char path[128];
  snprintf(path, sizeof path, "%s/fwd.json", tmpdir);
  setenv("DUA_TUNING_FILE", path, 1);
  dua_context *ctx = context();
  dua_device_info d;
  dua_context_device_info(ctx, &d);
  dua_context_destroy(ctx);
  write_db(path, &d, d.driver_version, tile);
  ctx = context();
  const int N = 300, D = 64, H = 2;
  int32_t depths[2] = {0, 1};
  dua_layout_desc desc;
  memset(&desc, 0, sizeof desc);
  desc.seq_len = N, desc.block = 64, desc.batch = 1, desc.heads = H, desc.arity = 2, desc.depths = depths;
  dua_layout *l = NULL;
  ck_assert_int_eq(dua_layout_create(&desc, &l, NULL, 0), DUA_SUCCESS);
  size_t n = (size_t)H * N * D;
  float *x = malloc(3 * n * sizeof *x), *o1 = malloc(n * sizeof *o1), *o2 = malloc(n * sizeof *o2);
  test_rng r = test_rng_make(test_seed() ^ 0x70u);
  test_fill(x, 3 * n, &r, DUA_F32);
  dua_buffer *qb = test_upload(ctx, x, n, DUA_F32), *kb = test_upload(ctx, x + n, n, DUA_F32),
             *vb = test_upload(ctx, x + 2 * n, n, DUA_F32), *ob = NULL;
  ck_assert_int_eq(dua_buffer_create(ctx, n * sizeof(float), &ob), DUA_SUCCESS);
  dua_tensor q = dua_tensor_contiguous(qb, 0, DUA_F32, 1, H, N, D),
             k = dua_tensor_contiguous(kb, 0, DUA_F32, 1, H, N, D),
             v = dua_tensor_contiguous(vb, 0, DUA_F32, 1, H, N, D),
             o = dua_tensor_contiguous(ob, 0, DUA_F32, 1, H, N, D);
  ck_assert_int_eq(get(ctx, DUA_F32, 64, 64).source, DUA_TUNING_FILE);
  ck_assert_int_eq(dua_attention_forward(ctx, l, NULL, &q, &k, &v, &o, NULL), DUA_SUCCESS);
  test_download(ob, o1, n, DUA_F32);
  dua_tuning_info t = get(ctx, DUA_F32, 64, 64);
  ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd", DUA_F32, 64, t.default_params, 4), DUA_SUCCESS);
  ck_assert(memcmp(t.default_params, tile, sizeof tile) != 0); /* two different tiles were compared */
  ck_assert_int_eq(dua_attention_forward(ctx, l, NULL, &q, &k, &v, &o, NULL), DUA_SUCCESS);
  test_download(ob, o2, n, DUA_F32);
  double err;
  long bad = test_compare(o1, o2, n, 1e-5, 1e-4, &err);
  ck_assert_msg(bad < 0, "file tile differs from the default at %ld (max error %g)", bad, err);
  dua_buffer_destroy(qb), dua_buffer_destroy(kb), dua_buffer_destroy(vb), dua_buffer_destroy(ob);
  dua_layout_destroy(l);
  free(x), free(o1), free(o2);
  dua_context_destroy(ctx);
  unlink(path);
  clear_env();
}
END_TEST

/* ---------------------------------------------------------------- backward and decode */

typedef struct kparams {
  const char *kernel;
  int fp16, head_dim, n;
  int32_t p[4];
} kparams;

/* A database holding one entry per kparams for the test device (decode kernels with decode shapes). */
static void write_entries(const char *path, const dua_device_info *d, const char *driver, const kparams *k,
                          int count) {
  dua_tuning_db db = {0};
  for (int i = 0; i < count; i++) {
    dua_tuning_entry e;
    memset(&e, 0, sizeof e);
    snprintf(e.kernel, sizeof e.kernel, "%s", k[i].kernel);
    e.fp16 = k[i].fp16;
    e.head_dim = k[i].head_dim;
    snprintf(e.device, sizeof e.device, "%s", d->name);
    snprintf(e.vendor, sizeof e.vendor, "%s", d->vendor);
    snprintf(e.driver, sizeof e.driver, "%s", driver);
    snprintf(e.date, sizeof e.date, "2026-11-26T00:00:00Z");
    e.num_params = k[i].n;
    memcpy(e.params, k[i].p, (size_t)k[i].n * sizeof(int32_t));
    e.best_ms = 1, e.default_ms = 2, e.tuning_s = 3, e.candidates = 4, e.num_shapes = 1;
    e.shapes[0] =
        (dua_tuning_shape){.n = 256, .block = 128, .batch = 1, .heads = 2, .best_ms = 1.0, .default_ms = 2.0};
    if (strncmp(k[i].kernel, "decode", 6) == 0)
      e.shapes[0].kv_heads = 2, e.shapes[0].tokens = 1, e.shapes[0].page = 16;
    char why[512];
    ck_assert_msg(dua_tuning_db_put(&db, &e, why, sizeof why) == 0, "%s", why);
  }
  char why[512];
  ck_assert_msg(dua_tuning_db_save(path, &db, why, sizeof why) == 0, "%s", why);
  dua_tuning_db_free(&db);
}

static dua_tuning_info getk(dua_context *ctx, const char *kernel, dua_dtype dt, int dim, int block) {
  dua_tuning_info t;
  dua_status st = dua_context_get_tuning(ctx, kernel, dt, dim, block, &t);
  ck_assert_msg(st == DUA_SUCCESS, "get_tuning %s: %s", kernel, dua_context_last_error(ctx));
  return t;
}

/* Valid on any device with >= 64 work-items per group and 48 KiB of local memory (head dim 64, fp32), none
 * of them a compiled default: */
static const kparams tuned[4] = {
    {"bwd", 0, 64, 4, {8, 64, 4, 8}},         /* blocks >= 64; 46 KB (16,64,4,8: 54 KB, too much on NVIDIA) */
    {"decode", 0, 64, 3, {0, 32, 64}},        /* regs, 4 key groups of 16 loads */
    {"decode_gqa", 0, 64, 4, {1, 64, 64, 4}}, /* staged, at most 4 rows */
    {"decode_split", 0, 64, 3, {64, 1, 256}}}; /* split as much as the context allows */

START_TEST(backward_and_decode_chain) {
  clear_env();
  sim_nv = _i;
  char path[128];
  snprintf(path, sizeof path, "%s/kernels.json", tmpdir);
  setenv("DUA_TUNING_FILE", "/nonexistent/dua/tuning.json", 1);
  dua_context *ctx = context();
  dua_device_info d;
  dua_context_device_info(ctx, &d);
  for (int i = 0; i < 4; i++) { /* no file: compiled defaults */
    require_usable(ctx, tuned[i].kernel, tuned[i].p, tuned[i].n);
    dua_tuning_info t = getk(ctx, tuned[i].kernel, DUA_F32, 64, 128);
    ck_assert(t.source == DUA_TUNING_BUILTIN || t.source == DUA_TUNING_GENERIC);
    if (sim_nv)
      ck_assert_str_eq(t.origin, "built-in NVIDIA");
    ck_assert_int_eq(t.num_params, tuned[i].n);
    ck_assert(!memcmp(t.params, t.default_params, sizeof t.params));
    ck_assert(memcmp(t.params, tuned[i].p, (size_t)tuned[i].n * sizeof(int32_t)) != 0);
  }
  dua_context_destroy(ctx);

  write_entries(path, &d, d.driver_version, tuned, 4);
  setenv("DUA_TUNING_FILE", path, 1);
  ctx = context();
  char want[256];
  snprintf(want, sizeof want, "file %s", path);
  for (int i = 0; i < 4; i++) {
    dua_tuning_info t = getk(ctx, tuned[i].kernel, DUA_F32, 64, 128);
    ck_assert_msg(t.source == DUA_TUNING_FILE, "%s: %s", tuned[i].kernel, t.origin);
    ck_assert_str_eq(t.origin, want);
    ck_assert(!memcmp(t.params, tuned[i].p, (size_t)tuned[i].n * sizeof(int32_t)));
    ck_assert_int_ne(getk(ctx, tuned[i].kernel, DUA_F16, 64, 128).source, DUA_TUNING_FILE); /* other dtype */
    ck_assert_int_ne(getk(ctx, tuned[i].kernel, DUA_F32, 32, 128).source, DUA_TUNING_FILE); /* other dim */
  }
  ck_assert_int_ne(getk(ctx, "bwd", DUA_F32, 64, 32).source, DUA_TUNING_FILE); /* block 32 < bn 64 */
  /* the override beats the file; clearing it brings the file back */
  const int32_t ov[4][4] = {{32, 32, 8, 8}, {1, 16, 16}, {0, 32, 64, 2}, {2, 4, 8}};
  for (int i = 0; i < 4; i++) {
    ck_assert_msg(dua_context_set_tuning(ctx, tuned[i].kernel, DUA_F32, 64, ov[i], tuned[i].n) == DUA_SUCCESS,
                  "%s", dua_context_last_error(ctx));
    dua_tuning_info t = getk(ctx, tuned[i].kernel, DUA_F32, 64, 128);
    ck_assert_int_eq(t.source, DUA_TUNING_OVERRIDE);
    ck_assert(!memcmp(t.params, ov[i], (size_t)tuned[i].n * sizeof(int32_t)));
    ck_assert_int_eq(dua_context_set_tuning(ctx, tuned[i].kernel, DUA_F32, 64, NULL, 0), DUA_SUCCESS);
    ck_assert_int_eq(getk(ctx, tuned[i].kernel, DUA_F32, 64, 128).source, DUA_TUNING_FILE);
  }
  /* the developer variables beat everything; invalid ones fail naming themselves */
  setenv("DUA_DECODE_KERNEL", "regs", 1);
  dua_tuning_info t = getk(ctx, "decode_gqa", DUA_F32, 64, 128);
  ck_assert_int_eq(t.source, DUA_TUNING_DEVELOPER_ENV);
  ck_assert_str_eq(t.origin, "env DUA_DECODE_KERNEL");
  ck_assert_int_eq(t.params[0], 0);
  setenv("DUA_DECODE_KERNEL", "fast", 1);
  ck_assert_int_eq(dua_context_get_tuning(ctx, "decode", DUA_F32, 64, 128, &t), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert(strstr(dua_context_last_error(ctx), "DUA_DECODE_KERNEL = \"fast\"") != NULL);
  unsetenv("DUA_DECODE_KERNEL");
  setenv("DUA_DECODE_TILE", "64,128,2", 1);
  t = getk(ctx, "decode", DUA_F32, 64, 128);
  ck_assert_int_eq(t.source, DUA_TUNING_DEVELOPER_ENV);
  ck_assert(t.params[1] == 64 && t.params[2] == 128);
  setenv("DUA_DECODE_TILE", "64,100,2", 1);
  ck_assert_int_eq(dua_context_get_tuning(ctx, "decode", DUA_F32, 64, 128, &t), DUA_ERROR_INVALID_ARGUMENT);
  unsetenv("DUA_DECODE_TILE");
  setenv("DUA_DECODE_SPLITS", "5", 1);
  t = getk(ctx, "decode_split", DUA_F32, 64, 128);
  ck_assert_int_eq(t.source, DUA_TUNING_DEVELOPER_ENV);
  ck_assert_msg(strstr(t.origin, "DUA_DECODE_SPLITS = 5") != NULL, "%s", t.origin);
  setenv("DUA_DECODE_SPLITS", "0", 1);
  ck_assert_int_eq(dua_context_get_tuning(ctx, "decode_split", DUA_F32, 64, 128, &t),
                   DUA_ERROR_INVALID_ARGUMENT);
  unsetenv("DUA_DECODE_SPLITS");
  ck_assert_int_eq(getk(ctx, "decode", DUA_F32, 64, 128).source, DUA_TUNING_FILE);
  dua_context_destroy(ctx);

  /* entries for another driver are not used */
  write_entries(path, &d, "some-other-driver 0.0", tuned, 4);
  ctx = context();
  for (int i = 0; i < 4; i++)
    ck_assert_int_ne(getk(ctx, tuned[i].kernel, DUA_F32, 64, 128).source, DUA_TUNING_FILE);
  dua_context_destroy(ctx);
  unlink(path);
  clear_env();
}
END_TEST

START_TEST(backward_and_decode_refusals_and_candidates) {
  clear_env();
  sim_nv = _i;
  setenv("DUA_TUNING_FILE", "/nonexistent/dua/tuning.json", 1);
  dua_context *ctx = context();
  dua_device_info d;
  dua_context_device_info(ctx, &d);
  struct {
    const char *kernel;
    int n;
    int32_t p[4];
    const char *msg;
  } bad[] = {
      {"decode", 3, {4, 32, 64}, "params.staged = 4: must be an integer in 0..3"},
      {"decode", 3, {3, 32, 64}, "params.tile = 32: must be a power of two in 16..16 for the mma kernel"},
      {"decode", 3, {0, 8, 64}, "params.tile = 8: must be a power of two in 16..128 for the regs kernel"},
      {"decode", 3, {0, 32, 48}, "params.threads = 48"},
      {"decode", 3, {0, 128, 16}, "does not fit"}, /* regs: 16 work-items cannot cover a 128-key tile */
      {"decode", 4, {0, 32, 64, 1}, "takes 3 parameters"},
      {"decode_gqa", 4, {1, 16, 16, 32}, "does not fit"}, /* staged: fewer work-items than rows */
      {"decode_gqa", 4, {1, 16, 16, 0}, "params.rows = 0"},
      {"decode_split", 3, {0, 8, 64}, "params.waves = 0"},
      {"decode_split", 3, {16, 8, 512}, "params.maxspl = 512"},
      {"bwd", 4, {64, 32, 16, 32}, "does not fit"}, /* 64 / 32 columns: not a multiple of 4 */
      {"bwd", 4, {7, 32, 16, 8}, "params.bm = 7"}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ck_assert_int_eq(dua_context_set_tuning(ctx, bad[i].kernel, DUA_F32, 64, bad[i].p, bad[i].n),
                     DUA_ERROR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(dua_context_last_error(ctx), bad[i].msg) != NULL, "%s: \"%s\" lacks \"%s\"",
                  bad[i].kernel, dua_context_last_error(ctx), bad[i].msg);
    ck_assert(getk(ctx, bad[i].kernel, DUA_F32, 64, 128).source != DUA_TUNING_OVERRIDE);
  }
  /* the spaces: within the device's limits, each candidate accepted as an override and reported back */
  static const char *const kernels[4] = {"bwd", "decode", "decode_gqa", "decode_split"};
  for (int k = 0; k < 4; k++)
    for (int f = 0; f < 2; f++) {
      const dua_dtype dt = f ? DUA_F16 : DUA_F32;
      int count = 0;
      ck_assert_int_eq(dua_tuning_candidates(ctx, kernels[k], dt, 64, 64, NULL, 0, &count), DUA_SUCCESS);
      ck_assert_int_gt(count, 10);
      const int np = getk(ctx, kernels[k], dt, 64, 64).num_params;
      int32_t *c = malloc((size_t)count * (size_t)np * sizeof *c);
      int again = 0;
      ck_assert_int_eq(dua_tuning_candidates(ctx, kernels[k], dt, 64, 64, c, count, &again), DUA_SUCCESS);
      ck_assert_int_eq(again, count);
      if (k == 3)
        ck_assert_int_eq(count, 11 * 9 * 9);
      for (int i = 0; i < count; i++) {
        const int32_t *x = c + (size_t)i * np;
        if (k == 0) {
          dua_bwd_params b = {x[0], x[1], x[2], x[3]};
          ck_assert((size_t)x[2] * x[3] <= d.max_work_group_size);
          ck_assert(dua_bwd_local_bytes(&b, 64) <= d.local_mem_bytes);
          ck_assert(64 % x[0] == 0 && 64 % x[1] == 0);
        } else if (k < 3) {
          ck_assert((size_t)x[2] <= d.max_work_group_size);
        }
        if (i % 11)
          continue;
        ck_assert_msg(dua_context_set_tuning(ctx, kernels[k], dt, 64, x, np) == DUA_SUCCESS, "%s: %s",
                      kernels[k], dua_context_last_error(ctx));
        dua_tuning_info t = getk(ctx, kernels[k], dt, 64, 64);
        ck_assert_int_eq(t.source, DUA_TUNING_OVERRIDE);
        ck_assert(!memcmp(t.params, x, (size_t)np * sizeof *x));
      }
      free(c);
    }
  dua_context_destroy(ctx);
  clear_env();
}
END_TEST

/* The first program built from sources whose options contain needle, or NULL. */
static const dua_program_entry *program_with(const dua_context *ctx, const char *sources,
                                             const char *needle) {
  for (const dua_program_entry *e = ctx->programs; e; e = e->next)
    if (!strcmp(e->sources, sources) && strstr(e->options, needle))
      return e;
  return NULL;
}

/* The most local memory a kernel of program e uses as the OpenCL implementation reports it (0: none said). */
static size_t program_local_bytes(const dua_context *ctx, const dua_program_entry *e) {
  size_t most = 0;
  for (int i = 0; i < e->kernel_count; i++) {
    cl_ulong bytes = 0;
    if (clGetKernelWorkGroupInfo(e->kernels[i], ctx->device, CL_KERNEL_LOCAL_MEM_SIZE, sizeof bytes, &bytes,
                                 NULL) == CL_SUCCESS &&
        bytes > most)
      most = (size_t)bytes;
  }
  return most;
}

static int count_programs(const dua_context *ctx, const char *sources) {
  int n = 0;
  for (const dua_program_entry *e = ctx->programs; e; e = e->next)
    n += !strcmp(e->sources, sources);
  return n;
}

/* One backward call (N 128, block 64, one head, fp32) on random inputs; what it computes is not checked here
 * (test_backward.c does), only that it runs. */
static void run_backward(dua_context *ctx, int dim) {
  const int N = 128, n = N * dim;
  int32_t depth = 0;
  dua_layout_desc desc;
  memset(&desc, 0, sizeof desc);
  desc.seq_len = N, desc.block = 64, desc.batch = 1, desc.heads = 1, desc.arity = 2, desc.depths = &depth;
  dua_layout *l = NULL;
  ck_assert_int_eq(dua_layout_create(&desc, &l, NULL, 0), DUA_SUCCESS);
  float *x = malloc((size_t)n * 4);
  test_rng r = test_rng_make(test_seed() ^ 0x71u);
  test_fill(x, (size_t)n, &r, DUA_F32);
  dua_buffer *b[8];
  for (int i = 0; i < 8; i++)
    b[i] = test_upload(ctx, x, (size_t)n, DUA_F32);
  dua_tensor t[8];
  for (int i = 0; i < 8; i++)
    t[i] = dua_tensor_contiguous(b[i], 0, DUA_F32, 1, 1, N, dim);
  dua_buffer *lb = test_upload(ctx, x, N, DUA_F32);
  dua_tensor lse = dua_tensor_contiguous(lb, 0, DUA_F32, 1, 1, N, 1);
  ck_assert_int_eq(dua_attention_forward(ctx, l, NULL, &t[0], &t[1], &t[2], &t[3], &lse), DUA_SUCCESS);
  ck_assert_msg(dua_attention_backward(ctx, l, NULL, &t[0], &t[1], &t[2], &t[3], &lse, &t[4], &t[5], &t[6],
                                       &t[7], NULL) == DUA_SUCCESS,
                "%s", dua_context_last_error(ctx));
  ck_assert_int_eq(dua_context_finish(ctx), DUA_SUCCESS);
  for (int i = 0; i < 8; i++)
    dua_buffer_destroy(b[i]);
  dua_buffer_destroy(lb);
  dua_layout_destroy(l);
  free(x);
}

/* A decode problem: S sequences of len tokens (Hkv 2, head dim 64, pages of 16, fp32) and a causal dense
 * layout over N = 256 (block 32) with Hq query heads, T tokens. */
typedef struct dec_case {
  dua_kv_cache *cache;
  dua_layout *l;
  int32_t seqs[4];
  dua_buffer *qb, *ob;
  dua_tensor q, o;
  int S, Hq, T;
} dec_case;

static dua_dtype dec_cache_dtype = DUA_F32; /* the cache dtype of dec_make's cases */

static dec_case dec_make(dua_context *ctx, int S, int Hq, int T, int len) {
  dec_case c;
  memset(&c, 0, sizeof c);
  c.S = S, c.Hq = Hq, c.T = T;
  dua_kv_cache_desc cd;
  memset(&cd, 0, sizeof cd);
  cd.layers = 1, cd.kv_heads = 2, cd.head_dim = 64, cd.page_tokens = 16, cd.num_pages = 64, cd.max_seqs = 4;
  cd.max_tokens = 256, cd.dtype = dec_cache_dtype;
  ck_assert_int_eq(dua_kv_cache_create(ctx, &cd, &c.cache), DUA_SUCCESS);
  const size_t kn = (size_t)2 * len * 64, qn = (size_t)S * Hq * T * 64;
  float *x = malloc((kn > qn ? kn : qn) * 4);
  test_rng r = test_rng_make(test_seed() ^ 0x72u);
  test_fill(x, kn > qn ? kn : qn, &r, DUA_F32);
  dua_buffer *kb = test_upload(ctx, x, kn, DUA_F32);
  dua_tensor k = dua_tensor_contiguous(kb, 0, DUA_F32, 1, 2, len, 64);
  for (int i = 0; i < S; i++) {
    ck_assert_int_eq(dua_kv_seq_add(c.cache, &c.seqs[i]), DUA_SUCCESS);
    ck_assert_int_eq(dua_kv_append(c.cache, 0, 1, &c.seqs[i], &k, &k), DUA_SUCCESS);
  }
  c.qb = test_upload(ctx, x, qn, DUA_F32);
  ck_assert_int_eq(dua_buffer_create(ctx, qn * 4, &c.ob), DUA_SUCCESS);
  c.q = dua_tensor_contiguous(c.qb, 0, DUA_F32, S, Hq, T, 64);
  c.o = dua_tensor_contiguous(c.ob, 0, DUA_F32, S, Hq, T, 64);
  int32_t depths[8] = {0};
  dua_layout_desc desc;
  memset(&desc, 0, sizeof desc);
  desc.seq_len = 256, desc.block = 32, desc.batch = 1, desc.heads = Hq, desc.kv_heads = 2, desc.arity = 2;
  desc.depths = depths, desc.causal = 1;
  ck_assert_int_eq(dua_layout_create(&desc, &c.l, NULL, 0), DUA_SUCCESS);
  dua_buffer_destroy(kb);
  free(x);
  return c;
}

static void dec_run(dua_context *ctx, dec_case *c) {
  ck_assert_msg(dua_decode(ctx, c->cache, 0, c->l, NULL, c->seqs, &c->q, &c->o, NULL) == DUA_SUCCESS, "%s",
                dua_context_last_error(ctx));
  ck_assert_int_eq(dua_context_finish(ctx), DUA_SUCCESS);
}

static void dec_free(dec_case *c) {
  dua_layout_destroy(c->l);
  dua_buffer_destroy(c->qb);
  dua_buffer_destroy(c->ob);
  dua_kv_cache_destroy(c->cache);
}

/* Scratch bytes a decode with `splits` partial results per row needs (decode.c: O and LSE per split). */
static size_t split_scratch(const dec_case *c, int splits) {
  return splits > 1 ? (size_t)c->S * c->Hq * c->T * (size_t)splits * (64 + 1) * sizeof(float) : 0;
}

/* The compiled split-KV rule (decode_params.c, decode5 in bench/RESULTS.md), restated: the thresholds of a
 * plan whose work-groups serve `rows` query rows (the warp kernel: 2 work-groups per compute unit x rows, 4
 * key units per warp; the others: 16 waves, 8 units; at most 64 splits), and the split count for `groups`
 * work-groups per split and `units` key units. */
static dua_decode_split_params compiled_split(const dua_decode_plan_info *pi, int rows) {
  if (pi->staged == 3) /* mma: one wave of work-groups */
    return (dua_decode_split_params){1, 4 * (pi->threads / 32), 64};
  if (pi->staged == 2)
    return (dua_decode_split_params){2 * rows, 4 * (pi->threads / 32), 64};
  return (dua_decode_split_params){16, 8, 64};
}

static int split_count(const dua_decode_split_params *sp, int64_t groups, int64_t units, int cu) {
  int64_t s = ((int64_t)sp->waves * cu + groups - 1) / groups;
  s = s > units / sp->min_units ? units / sp->min_units : s;
  s = s > sp->max_splits ? sp->max_splits : s;
  return s < 1 ? 1 : (int)s;
}

/* The tuned values reach the kernels: the backward builds its program with the file's tile, the decode with
 * the file's kernel variant, tile and work-items, and splits as the file's thresholds say (the scratch its
 * merge needs grows with the split count). Each would fail if the value were ignored: the defaults differ.
 * Simulating NVIDIA, the compiled decode plan is the warp kernel's, which is planned but not run. */
START_TEST(tuned_values_reach_the_kernels) {
  clear_env();
  sim_nv = _i;
  char path[128];
  snprintf(path, sizeof path, "%s/reach.json", tmpdir);
  setenv("DUA_TUNING_FILE", path, 1);
  dua_context *ctx = context();
  dua_device_info d;
  dua_context_device_info(ctx, &d);
  dua_context_destroy(ctx);
  write_entries(path, &d, d.driver_version, tuned, 4);

  ctx = context();
  run_backward(ctx, 64);
  const dua_program_entry *bwd =
      program_with(ctx, "common,attn_bwd", "-DBLOCK_M=8 -DBLOCK_N=64 -DTM=4 -DTN=8 ");
  ck_assert_msg(bwd != NULL, "the backward did not build the file's tile");
  /* the local memory the library budgets for the tile covers what the device's compiler reports */
  const dua_bwd_params bp = {8, 64, 4, 8};
  ck_assert_uint_le(program_local_bytes(ctx, bwd), dua_bwd_local_bytes(&bp, 64));
  const dua_tuning_info ft = get(ctx, DUA_F32, 64, 64);
  const dua_fwd_params fp = {ft.params[0], ft.params[1], ft.params[2], ft.params[3]};
  char fopt[96];
  snprintf(fopt, sizeof fopt, "-DBLOCK_M=%d -DBLOCK_N=%d -DTM=%d -DTN=%d ", fp.block_m, fp.block_n,
           fp.threads_m, fp.threads_n);
  const dua_program_entry *fwd = program_with(ctx, "common,attn_fwd", fopt);
  ck_assert_msg(fwd != NULL, "no forward program with %s", fopt);
  ck_assert_uint_le(program_local_bytes(ctx, fwd), dua_fwd_local_bytes(&fp, 64));
  ck_assert_int_eq(count_programs(ctx, "common,attn_bwd"), 1);
  /* the compiled default, through an override, builds another program */
  dua_tuning_info t = getk(ctx, "bwd", DUA_F32, 64, 64);
  ck_assert_int_eq(dua_context_set_tuning(ctx, "bwd", DUA_F32, 64, t.default_params, 4), DUA_SUCCESS);
  run_backward(ctx, 64);
  ck_assert_int_eq(count_programs(ctx, "common,attn_bwd"), 2);

  /* decode, one row per work-group (Hq = Hkv): the file's regs plan and split thresholds */
  dec_case c = dec_make(ctx, 2, 2, 1, 200);
  dua_decode_plan_info pi;
  ck_assert_int_eq(dua_decode_plan_get(ctx, c.cache, 0, c.l, c.seqs, 2, 1, &pi), DUA_SUCCESS);
  ck_assert_int_eq(pi.source, DUA_TUNING_FILE);
  ck_assert_int_eq(pi.split_source, DUA_TUNING_FILE);
  ck_assert(pi.staged == 0 && pi.tile_n == 32 && pi.threads == 64);
  /* waves 64, minunit 1, maxspl 256: ceil(64 CU / 4 work-groups), at most 13 units of 16 tokens */
  const int cu = (int)(d.compute_units ? d.compute_units : 1), want = 64 * cu / 4 < 13 ? 64 * cu / 4 : 13;
  ck_assert_int_eq(pi.splits, want);
  ck_assert_ptr_null(
      program_with(ctx, "common,attn_decode_units,attn_decode,attn_decode_merge", "-DTILE_N="));
  const size_t scratch_before = ctx->scratch_bytes;
  dec_run(ctx, &c);
  ck_assert_msg(program_with(ctx, "common,attn_decode_units,attn_decode,attn_decode_merge",
                             "-DTILE_N=32 -DNT=64 ") != NULL &&
                    program_with(ctx, "common,attn_decode_units,attn_decode,attn_decode_merge",
                                 "-DDUA_DECODE_STAGED=0 ") != NULL,
                "the decode did not build the file's plan");
  ck_assert_uint_eq(ctx->scratch_bytes,
                    split_scratch(&c, want) > scratch_before ? split_scratch(&c, want) : scratch_before);
  dec_free(&c);
  dua_context_destroy(ctx);

  /* the split count alone: a fresh context (empty scratch), the file's thresholds against none */
  for (int with_file = 0; with_file <= 1; with_file++) {
    kparams only_split = tuned[3];
    write_entries(path, &d, d.driver_version, &only_split, with_file);
    ctx = context();
    c = dec_make(ctx, 2, 2, 1, 200);
    ck_assert_int_eq(dua_decode_plan_get(ctx, c.cache, 0, c.l, c.seqs, 2, 1, &pi), DUA_SUCCESS);
    ck_assert(pi.source == DUA_TUNING_BUILTIN || pi.source == DUA_TUNING_GENERIC);
    if (sim_nv)
      ck_assert_int_eq(pi.staged, 2); /* NVIDIA's compiled decode plan: the warp kernel */
    ck_assert_int_eq(ctx->scratch_bytes, 0);
    if (!(sim_nv && pi.staged == 2)) {
      dec_run(ctx, &c);
      ck_assert_int_eq(ctx->scratch_bytes, split_scratch(&c, pi.splits));
    }
    if (with_file) {
      ck_assert_int_eq(pi.split_source, DUA_TUNING_FILE);
      ck_assert_int_eq(pi.splits, want);
    } else { /* the compiled thresholds of the compiled plan: 4 work-groups, 13 units; 1 on PoCL and NVIDIA */
      ck_assert(pi.split_source == DUA_TUNING_BUILTIN || pi.split_source == DUA_TUNING_GENERIC);
      const dua_decode_split_params sp = compiled_split(&pi, 1);
      ck_assert(pi.split.waves == sp.waves && pi.split.min_units == sp.min_units &&
                pi.split.max_splits == sp.max_splits);
      ck_assert_int_eq(pi.splits, split_count(&sp, 4, 13, cu));
      ck_assert_int_ne(pi.splits, want);
    }
    dec_free(&c);
    dua_context_destroy(ctx);
  }

  /* decode_gqa: 8 query heads over 2 KV heads; the file's staged plan with at most 4 rows per work-group */
  write_entries(path, &d, d.driver_version, tuned, 4);
  ctx = context();
  c = dec_make(ctx, 1, 8, 1, 100);
  ck_assert_int_eq(dua_decode_plan_get(ctx, c.cache, 0, c.l, c.seqs, 1, 1, &pi), DUA_SUCCESS);
  ck_assert_int_eq(pi.source, DUA_TUNING_FILE);
  ck_assert(pi.staged == 1 && pi.tile_n == 64 && pi.threads == 64 && pi.heads_per_group == 4);
  dec_run(ctx, &c);
  ck_assert(program_with(ctx, "common,attn_decode_units,attn_decode,attn_decode_merge",
                         "-DHPW=4 -DTILE_N=64 -DNT=64 ") != NULL);
  dec_free(&c);
  dua_context_destroy(ctx);
  unlink(path);
  clear_env();
}
END_TEST

/* c->o as floats (malloc'd). */
static float *dec_read(const dec_case *c) {
  const size_t n = (size_t)c->S * c->Hq * c->T * 64;
  float *x = malloc(n * sizeof *x);
  ck_assert_int_eq(dua_buffer_read(c->ob, 0, n * sizeof *x, x), DUA_SUCCESS);
  return x;
}

/* Runs c with the current chain, then with the compiled plan as the override of kernel; the outputs agree
 * within the fp32 tolerance (every element written: the output buffer is poisoned first). */
static void dec_check_against_compiled(dua_context *ctx, dec_case *c, const char *kernel) {
  const size_t n = (size_t)c->S * c->Hq * c->T * 64;
  float *nan = malloc(n * sizeof *nan);
  for (size_t i = 0; i < n; i++)
    nan[i] = NAN;
  ck_assert_int_eq(dua_buffer_write(c->ob, 0, n * sizeof *nan, nan), DUA_SUCCESS);
  dec_run(ctx, c);
  float *got = dec_read(c);
  dua_tuning_info t = getk(ctx, kernel, DUA_F32, 64, 128);
  ck_assert_int_eq(dua_context_set_tuning(ctx, kernel, DUA_F32, 64, t.default_params, t.num_params),
                   DUA_SUCCESS);
  dec_run(ctx, c);
  float *want = dec_read(c);
  for (size_t i = 0; i < n; i++)
    ck_assert_msg(fabsf(got[i] - want[i]) <= 1e-4f + 1e-3f * fabsf(want[i]), "%s O[%zu] = %g, compiled %g",
                  kernel, i, (double)got[i], (double)want[i]);
  ck_assert_int_eq(dua_context_set_tuning(ctx, kernel, DUA_F32, 64, NULL, 0), DUA_SUCCESS);
  free(nan), free(got), free(want);
}

START_TEST(warp_in_the_tuning_space) {
  clear_env();
  char path[128];
  snprintf(path, sizeof path, "%s/warp.json", tmpdir);
  setenv("DUA_TUNING_FILE", path, 1);
  dua_context *ctx = context();
  dua_device_info d;
  dua_context_device_info(ctx, &d);
  const int native = dua_decode_warp_native(&d);
  dua_context_destroy(ctx);
  /* warp plans for head dim 64, fp32 (16 lanes per key row): one row per work-group, 4 keys per batch, 2
   * warps; several rows, 8 keys per batch, at most 4 rows. No split entry: the compiled thresholds */
  static const kparams warp[2] = {{"decode", 0, 64, 3, {2, 4, 64}}, {"decode_gqa", 0, 64, 4, {2, 8, 64, 4}}};
  write_entries(path, &d, d.driver_version, warp, 2);
  static const char *const srcs = "common,attn_decode_units,nv_mma_ops,attn_decode_warp,attn_decode_merge";
  for (int allow = 0; allow <= 1; allow++) {
    if (allow)
      setenv("DUA_TUNING_EMULATED_WARP", "1", 1);
    logged[0] = '\0';
    ctx = context();
    const int tunable = native || allow;
    /* the override: a warp plan taken where the kernel is tunable, refused saying why elsewhere */
    const int32_t ov[3] = {2, 8, 64};
    dua_status st = dua_context_set_tuning(ctx, "decode", DUA_F32, 64, ov, 3);
    if (tunable) {
      ck_assert_msg(st == DUA_SUCCESS, "%s", dua_context_last_error(ctx));
      ck_assert_int_eq(getk(ctx, "decode", DUA_F32, 64, 128).source, DUA_TUNING_OVERRIDE);
      ck_assert_int_eq(dua_context_set_tuning(ctx, "decode", DUA_F32, 64, NULL, 0), DUA_SUCCESS);
    } else {
      ck_assert_int_eq(st, DUA_ERROR_INVALID_ARGUMENT);
      ck_assert_msg(strstr(dua_context_last_error(ctx), "staged=2 (the warp kernel) needs NVIDIA inline PTX"),
                    "%s", dua_context_last_error(ctx));
      ck_assert_int_ne(getk(ctx, "decode", DUA_F32, 64, 128).source, DUA_TUNING_OVERRIDE);
    }
    /* where it cannot run at all: fp16 head dim 96 (12 lanes per key row do not divide 32); its own ranges */
    ck_assert_int_eq(dua_context_set_tuning(ctx, "decode", DUA_F16, 96, ov, 3), DUA_ERROR_INVALID_ARGUMENT);
    if (tunable)
      ck_assert_msg(strstr(dua_context_last_error(ctx), "staged=2 (warp) tile=8 threads=64 does not fit "
                                                        "head_dim 96"),
                    "%s", dua_context_last_error(ctx));
    const int32_t small[3] = {2, 8, 16}, tile3[4] = {2, 3, 64, 4}, regs8[3] = {0, 8, 64};
    ck_assert_int_eq(dua_context_set_tuning(ctx, "decode", DUA_F32, 64, small, 3),
                     DUA_ERROR_INVALID_ARGUMENT);
    ck_assert(strstr(dua_context_last_error(ctx),
                     "params.threads = 16: must be a power of two in 32..1024 for the warp kernel"));
    ck_assert_int_eq(dua_context_set_tuning(ctx, "decode_gqa", DUA_F32, 64, tile3, 4),
                     DUA_ERROR_INVALID_ARGUMENT);
    ck_assert(strstr(dua_context_last_error(ctx), "params.tile = 3"));
    ck_assert_int_eq(dua_context_set_tuning(ctx, "decode", DUA_F32, 64, regs8, 3),
                     DUA_ERROR_INVALID_ARGUMENT);
    /* the candidates hold warp plans exactly where the kernel is tunable, each within its ranges and taken
     * as an override */
    for (int g = 0; g < 2; g++) {
      const char *kernel = g ? "decode_gqa" : "decode";
      const int np = 3 + g;
      int count = 0, warps = 0;
      ck_assert_int_eq(dua_tuning_candidates(ctx, kernel, DUA_F32, 64, 128, NULL, 0, &count), DUA_SUCCESS);
      int32_t *cand = malloc((size_t)count * (size_t)np * sizeof *cand);
      ck_assert_int_eq(dua_tuning_candidates(ctx, kernel, DUA_F32, 64, 128, cand, count, &count),
                       DUA_SUCCESS);
      for (int i = 0; i < count; i++) {
        const int32_t *x = cand + (size_t)i * np;
        ck_assert(x[0] >= 0 && x[0] <= 2);
        if (x[0] != 2)
          continue;
        ck_assert(x[1] >= 1 && x[1] <= 128 && !(x[1] & (x[1] - 1)));
        ck_assert(x[2] >= 32 && x[2] <= 1024 && !(x[2] & (x[2] - 1)) &&
                  (size_t)x[2] <= d.max_work_group_size);
        if (warps++ % 7 == 0) {
          ck_assert_msg(dua_context_set_tuning(ctx, kernel, DUA_F32, 64, x, np) == DUA_SUCCESS, "%s",
                        dua_context_last_error(ctx));
          ck_assert(!memcmp(getk(ctx, kernel, DUA_F32, 64, 128).params, x, (size_t)np * sizeof *x));
        }
      }
      ck_assert_int_eq(dua_context_set_tuning(ctx, kernel, DUA_F32, 64, NULL, 0), DUA_SUCCESS);
      if (tunable)
        ck_assert_int_ge(warps, g ? 8 * 64 : 8 * 4); /* tiles 1..128 x (at least 32..256 work-items) */
      else
        ck_assert_int_eq(warps, 0);
      free(cand);
    }
    /* the database's warp plans: one row per work-group (Hq = Hkv = 2), and 8 query heads over 2 KV heads */
    for (int g = 0; g < 2; g++) {
      dec_case c = g ? dec_make(ctx, 1, 8, 1, 100) : dec_make(ctx, 2, 2, 1, 200);
      dua_decode_plan_info pi;
      ck_assert_int_eq(dua_decode_plan_get(ctx, c.cache, 0, c.l, c.seqs, c.S, 1, &pi), DUA_SUCCESS);
      if (tunable) {
        ck_assert_int_eq(pi.source, DUA_TUNING_FILE);
        ck_assert(pi.staged == 2 && pi.tile_n == (g ? 8 : 4) && pi.threads == 64);
        ck_assert_int_eq(pi.heads_per_group, g ? 4 : 1);
        /* the warp kernel's own compiled split thresholds: 2 work-groups per compute unit x rows, 4 units per
         * warp */
        ck_assert(pi.split_source == DUA_TUNING_BUILTIN || pi.split_source == DUA_TUNING_GENERIC);
        ck_assert_int_eq(pi.split.waves, g ? 8 : 2);
        ck_assert_int_eq(pi.split.min_units, 8);
        ck_assert_int_eq(pi.split.max_splits, 64);
        dec_check_against_compiled(ctx, &c, g ? "decode_gqa" : "decode");
        char opt[64];
        snprintf(opt, sizeof opt, "-DHPW=%d -DTILE_N=%d -DNT=64 ", g ? 4 : 1, g ? 8 : 4);
        ck_assert_msg(program_with(ctx, srcs, opt) != NULL, "no warp program with %s", opt);
      } else { /* skipped, said once, the compiled plan runs */
        ck_assert(pi.source == DUA_TUNING_BUILTIN || pi.source == DUA_TUNING_GENERIC);
        ck_assert_int_ne(pi.staged, 2);
        if (!g)
          ck_assert_msg(strstr(logged, "warp kernel skipped") != NULL, "logged: %s", logged);
        else
          ck_assert_str_eq(logged, ""); /* once per context */
        logged[0] = '\0';
        dec_run(ctx, &c);
        ck_assert_int_eq(count_programs(ctx, srcs), 0);
      }
      dec_free(&c);
    }
    /* the split thresholds reported: the compiled plan's for one row per work-group */
    dua_tuning_info t = getk(ctx, "decode_split", DUA_F32, 64, 128);
    ck_assert(!memcmp(t.params, t.default_params, 3 * sizeof(int32_t)));
    const dua_tuning_info plan = getk(ctx, "decode", DUA_F32, 64, 128);
    if (plan.default_params[0] != 2) /* the generic thresholds */
      ck_assert(t.default_params[0] == 16 && t.default_params[1] == 8 && t.default_params[2] == 64);
    else
      ck_assert(t.default_params[0] == 2 && t.default_params[1] == plan.default_params[2] / 8);
    dua_context_destroy(ctx);
  }
  unlink(path);
  clear_env();
}
END_TEST

/* Without a database (and no override or developer variable) the decode plan and split count are the
 * compiled rules, and the backward builds the compiled tile. The decode rules: where the warp kernel runs
 * natively (NVIDIA, the mma.sync probe passed; the default since 0b70021) the warp plan, 4 keys per batch (8
 * with several rows) x 128 work-items x at most 4 rows, with its own split thresholds, and for an fp16 cache
 * the mma plan (16 keys per step x 128 work-items x at most 8 rows, one wave); elsewhere
 * the rules of decode.c before tuning (commit 81ad4a4). */
START_TEST(no_database_is_the_compiled_behaviour) {
  clear_env();
  sim_nv = _i;
  setenv("DUA_TUNING_FILE", "/nonexistent/dua/tuning.json", 1);
  dua_context *ctx = context();
  dua_device_info d;
  dua_context_device_info(ctx, &d);
  const int cpu = d.type == DUA_DEVICE_CPU, cu = (int)(d.compute_units ? d.compute_units : 1);
  const int warp = dua_decode_warp_native(&d); /* fp32 cache, head dim 64: 16 lanes per key row */
  ck_assert_int_eq(warp, sim_nv || (!cpu && d.nv_mma_f16 && strstr(d.vendor, "NVIDIA") != NULL));
  struct {
    int S, Hq, T, len;
  } cases[] = {{2, 2, 1, 200}, {1, 8, 1, 256}, {4, 4, 2, 30}, {3, 8, 3, 256}, {1, 2, 1, 16}};
  for (size_t i = 0; i < 2 * (sizeof cases / sizeof cases[0]); i++) {
    const int fp16 = i >= sizeof cases / sizeof cases[0];
    dec_cache_dtype = fp16 ? DUA_F16 : DUA_F32;
    dec_case c =
        dec_make(ctx, cases[i % 5].S, cases[i % 5].Hq, cases[i % 5].T, cases[i % 5].len); /* 5 cases */
    dec_cache_dtype = DUA_F32;
    dua_decode_plan_info pi;
    ck_assert_int_eq(dua_decode_plan_get(ctx, c.cache, 0, c.l, c.seqs, c.S, c.T, &pi), DUA_SUCCESS);
    const int group = c.Hq / 2, one_row = group == 1 && c.T == 1;
    int staged, tile, threads, rows;
    if (warp && fp16) {
      staged = 3, tile = 16, threads = 128, rows = 8;
    } else if (warp) {
      staged = 2, tile = one_row ? 4 : 8, threads = 128, rows = 4;
    } else if (fp16 && one_row && !cpu) { /* regs for an fp16 cache with one row on GPUs */
      staged = 0, tile = 32, threads = 128, rows = 8;
    } else { /* staged */
      staged = 1, tile = cpu ? 16 : 32, threads = cpu ? 32 : 128, rows = 16;
    }
    ck_assert_int_eq(pi.staged, staged);
    ck_assert_int_eq(pi.tile_n, tile);
    ck_assert_int_eq(pi.threads, threads);
    int hpw = 1;
    for (int dd = group; dd >= 1; dd--)
      if (group % dd == 0 && dd * c.T <= rows) {
        hpw = dd;
        break;
      }
    ck_assert_int_eq(pi.heads_per_group, hpw);
    /* units of min(page 16, block 32, tile or the warp kernel's 64) = 16 tokens */
    const dua_decode_split_params sp = compiled_split(&pi, hpw * c.T);
    ck_assert(pi.split.waves == sp.waves && pi.split.min_units == sp.min_units &&
              pi.split.max_splits == sp.max_splits);
    ck_assert_int_eq(pi.splits,
                     split_count(&sp, (int64_t)c.S * 2 * (group / hpw), (cases[i % 5].len + 15) / 16, cu));
    ck_assert(pi.source == DUA_TUNING_BUILTIN || pi.source == DUA_TUNING_GENERIC);
    ck_assert(pi.split_source == DUA_TUNING_BUILTIN || pi.split_source == DUA_TUNING_GENERIC);
    dec_free(&c);
  }
  /* the backward's compiled tile for head dim 64: 32 x 32 keys, 8 x 16 work-items where the device takes it
   * (PoCL, NVIDIA's 48 KiB), and it is what the backward builds */
  const dua_bwd_params want = dua_bwd_params_default(64, 64, &d), usual = {32, 32, 8, 16};
  if (dua_bwd_params_valid(&usual, 64, 64, &d))
    ck_assert(!memcmp(&want, &usual, sizeof want));
  if (sim_nv)
    ck_assert(dua_bwd_params_valid(&usual, 64, 64, &d));
  run_backward(ctx, 64);
  char opt[96];
  snprintf(opt, sizeof opt, "-DBLOCK_M=%d -DBLOCK_N=%d -DTM=%d -DTN=%d ", want.block_m, want.block_n,
           want.threads_m, want.threads_n);
  ck_assert_msg(program_with(ctx, "common,attn_bwd", opt) != NULL, "no backward program with %s", opt);
  dua_context_destroy(ctx);
  clear_env();
}
END_TEST

/* ---------------------------------------------------------------- tensor-core forward ("fwd_mma") */

static char mma_line[512]; /* the last "dua_attn_fwd_mma (...)" DEBUG line */
static void mma_log(dua_log_level level, const char *message, void *user) {
  (void)user;
  if (strstr(message, "dua_attn_fwd_mma ("))
    snprintf(mma_line, sizeof mma_line, "%s", message);
  if (level == DUA_LOG_WARNING)
    snprintf(logged, sizeof logged, "%s", message);
}

/* A tiny tensor-core problem: fp16 (or fp32 with allow_tf32) N = 256, head dim 64, batch 1, 2 heads, block
 * as given, depth -1 (causal: 1 block per row, a "causal short" layout) or 0 (dense). */
typedef struct mma_case {
  dua_layout *l;
  dua_buffer *b[4];
  dua_tensor q, k, v, o;
  size_t n;
} mma_case;

static mma_case mma_make(dua_context *ctx, dua_dtype dt, int block, int causal) {
  mma_case c;
  memset(&c, 0, sizeof c);
  const int N = 256, D = 64, H = 2;
  int32_t depths[2] = {causal ? -1 : 0, causal ? -1 : 0};
  dua_layout_desc desc;
  memset(&desc, 0, sizeof desc);
  desc.seq_len = N, desc.block = block, desc.batch = 1, desc.heads = H, desc.arity = 2, desc.depths = depths;
  desc.causal = causal;
  ck_assert_int_eq(dua_layout_create(&desc, &c.l, NULL, 0), DUA_SUCCESS);
  c.n = (size_t)H * N * D;
  float *x = malloc(c.n * sizeof *x);
  test_rng r = test_rng_make(test_seed() ^ 0x73u);
  for (int i = 0; i < 4; i++) {
    test_fill(x, c.n, &r, dt);
    c.b[i] = test_upload(ctx, x, c.n, dt);
  }
  c.q = dua_tensor_contiguous(c.b[0], 0, dt, 1, H, N, D),
  c.k = dua_tensor_contiguous(c.b[1], 0, dt, 1, H, N, D);
  c.v = dua_tensor_contiguous(c.b[2], 0, dt, 1, H, N, D),
  c.o = dua_tensor_contiguous(c.b[3], 0, dt, 1, H, N, D);
  free(x);
  return c;
}

/* Runs the forward; returns the MT of the tensor-core launch it logged (0: none) and, if out, O. */
static int mma_run(dua_context *ctx, mma_case *c, float *out) {
  dua_attention_params p;
  dua_attention_params_init(&p);
  p.allow_tf32 = 1;
  mma_line[0] = '\0';
  ck_assert_msg(dua_attention_forward(ctx, c->l, &p, &c->q, &c->k, &c->v, &c->o, NULL) == DUA_SUCCESS, "%s",
                dua_context_last_error(ctx));
  ck_assert_int_eq(dua_context_finish(ctx), DUA_SUCCESS);
  if (out)
    test_download(c->b[3], out, c->n, c->q.dtype);
  const char *mt = strstr(mma_line, "-DMT=");
  return mt ? atoi(mt + 5) : 0;
}

static void mma_free(mma_case *c) {
  dua_layout_destroy(c->l);
  for (int i = 0; i < 4; i++)
    dua_buffer_destroy(c->b[i]);
}

static dua_context *mma_context(void) {
  dua_context_options o;
  dua_context_options_init(&o);
  o.log = mma_log;
  o.log_level = DUA_LOG_DEBUG;
  dua_context *ctx = NULL;
  ck_assert_int_eq(dua_context_create(&o, &ctx), DUA_SUCCESS);
  if (sim_nv)
    simulate_nvidia(ctx);
  return ctx;
}

START_TEST(fwd_mma_in_the_tuning_space) {
  clear_env();
  sim_nv = _i;
  char path[128];
  snprintf(path, sizeof path, "%s/mma.json", tmpdir);
  setenv("DUA_TUNING_FILE", "/nonexistent/dua/tuning.json", 1);
  dua_context *ctx = mma_context();
  dua_device_info d;
  dua_context_device_info(ctx, &d);
  const int32_t one_two[2] = {1, 2}, two_two[2] = {2, 2}, one_one[2] = {1, 1};
  dua_tuning_info t;
  /* where the kernel does not run (for a dtype): the override refused saying why, no parameters, an empty
   * space */
  if (!(d.nv_mma_f16 && d.nv_mma_tf32) || ctx->fast_paths_disabled) {
    const int fp16 = !d.nv_mma_f16 || ctx->fast_paths_disabled;
    const dua_dtype dt = fp16 ? DUA_F16 : DUA_F32;
    ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd_mma", dt, 64, one_two, 2), DUA_ERROR_INVALID_ARGUMENT);
    char want[64];
    snprintf(want, sizeof want, "fwd_mma %s head_dim 64: ", fp16 ? "fp16" : "fp32");
    ck_assert_msg(strstr(dua_context_last_error(ctx), want) != NULL &&
                      strstr(dua_context_last_error(ctx), "no call would use these parameters") != NULL,
                  "%s", dua_context_last_error(ctx));
    ck_assert_int_eq(dua_context_get_tuning(ctx, "fwd_mma", dt, 64, 128, &t), DUA_ERROR_UNSUPPORTED);
    int count = -1;
    ck_assert_int_eq(dua_tuning_candidates(ctx, "fwd_mma", dt, 64, 128, NULL, 0, &count), DUA_SUCCESS);
    ck_assert_int_eq(count, 0);
    if (dua_device_is_nvidia(&d)) { /* forcing it on would build the native kernel: not here */
      fprintf(stderr, "fwd_mma_in_the_tuning_space: the tensor-core forward is off on %s; the rest skipped\n",
              d.name);
      dua_context_destroy(ctx);
      clear_env();
      return;
    }
    /* forced on, as test_forward_mma does: the kernel runs emulated on a device that is not NVIDIA's */
    ctx->info.nv_mma_f16 = ctx->info.nv_mma_tf32 = 1;
    ctx->fast_paths_disabled = 0;
  }
  /* the fast paths off: refused again */
  ctx->fast_paths_disabled = 1;
  ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd_mma", DUA_F16, 64, one_two, 2),
                   DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(dua_context_last_error(ctx), "the fast paths are off"), "%s",
                dua_context_last_error(ctx));
  ctx->fast_paths_disabled = 0;
  const int nvidia = strstr(ctx->info.vendor, "NVIDIA") != NULL;
  const char *compiled = nvidia ? "built-in NVIDIA" : "generic";
  /* the compiled rule: mt 2 for head dim 64 (1 below block 128; on Hopper's wgmma too: one warpgroup, 128
   * rows), 1 for 128; mt_cs 1; both dtypes */
  for (int f = 0; f < 2; f++) {
    const dua_dtype dt = f ? DUA_F16 : DUA_F32;
    const int32_t mt64 = 2;
    t = getk(ctx, "fwd_mma", dt, 64, 128);
    ck_assert_str_eq(t.origin, compiled);
    ck_assert_int_eq(t.source, nvidia ? DUA_TUNING_BUILTIN : DUA_TUNING_GENERIC);
    ck_assert(t.num_params == 2 && !strcmp(t.param_names[0], "mt") && !strcmp(t.param_names[1], "mt_cs"));
    ck_assert_msg(
        t.params[0] == mt64 && t.params[1] == 1 && !memcmp(t.params, t.default_params, sizeof t.params),
        "%s head dim 64: mt %d, mt_cs %d (want %d, 1)", f ? "fp16" : "fp32", t.params[0], t.params[1], mt64);
    t = getk(ctx, "fwd_mma", dt, 64, 64);
    ck_assert(t.params[0] == 1 && t.params[1] == 1 && t.default_params[0] == 1);
    t = getk(ctx, "fwd_mma", dt, 128, 256);
    ck_assert(t.params[0] == 1 && t.params[1] == 1);
    ck_assert_int_eq(dua_context_get_tuning(ctx, "fwd_mma", dt, 64, 32, &t), DUA_ERROR_UNSUPPORTED);
    ck_assert_msg(strstr(dua_context_last_error(ctx), "blocks >= 64"), "%s", dua_context_last_error(ctx));
    ck_assert_int_eq(dua_context_get_tuning(ctx, "fwd_mma", dt, 96, 128, &t), DUA_ERROR_UNSUPPORTED);
    ck_assert_msg(strstr(dua_context_last_error(ctx), "head dims 64 and 128"), "%s",
                  dua_context_last_error(ctx));
  }
  /* refusals naming the value */
  struct {
    int32_t p[2];
    int n, dim;
    const char *msg;
  } bad[] = {{{3, 1}, 2, 64, "params.mt = 3: must be an integer in 1..2"},
             {{1, 0}, 2, 64, "params.mt_cs = 0"},
             {{1, 1}, 1, 64, "takes 2 parameters"},
             {{1, 1}, 2, 96, "head dims 64 and 128"}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd_mma", DUA_F16, bad[i].dim, bad[i].p, bad[i].n),
                     DUA_ERROR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(dua_context_last_error(ctx), bad[i].msg), "%zu: %s", i, dua_context_last_error(ctx));
  }
  /* the space: mt x mt_cs, each taken as an override and reported back; below block 128 only 1,1 */
  int32_t c[8];
  int count = 0;
  ck_assert_int_eq(dua_tuning_candidates(ctx, "fwd_mma", DUA_F16, 64, 128, c, 4, &count), DUA_SUCCESS);
  ck_assert_int_eq(count, 4);
  for (int i = 0; i < 4; i++) {
    ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd_mma", DUA_F16, 64, c + 2 * i, 2), DUA_SUCCESS);
    t = getk(ctx, "fwd_mma", DUA_F16, 64, 128);
    ck_assert_int_eq(t.source, DUA_TUNING_OVERRIDE);
    ck_assert(!memcmp(t.params, c + 2 * i, 2 * sizeof *c));
  }
  ck_assert_int_eq(dua_tuning_candidates(ctx, "fwd_mma", DUA_F16, 64, 64, c, 4, &count), DUA_SUCCESS);
  ck_assert(count == 1 && c[0] == 1 && c[1] == 1);
  ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd_mma", DUA_F16, 64, NULL, 0), DUA_SUCCESS);
  /* the plan of a call per class (dua-tune's view): causal depth -1 visits 1 block per row */
  mma_case nc = mma_make(ctx, DUA_F16, 128, 0), cs = mma_make(ctx, DUA_F16, 128, 1),
           small = mma_make(ctx, DUA_F16, 64, 0);
  ck_assert(!dua_layout_causal_short(nc.l) && dua_layout_causal_short(cs.l));
  { /* a token window or sink counts its key blocks: block-diagonal causal, 32 blocks of 128 */
    const struct {
      int32_t window, sink;
      int short_;
    } w[] = {{896, 0, 1}, {1024, 0, 0}, {896, 1, 0}, {768, 128, 1}, {4096, 0, 0}, {0, 129, 1}};
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
      int32_t depths[1] = {-1};
      dua_layout_desc desc;
      memset(&desc, 0, sizeof desc);
      desc.seq_len = 4096, desc.block = 128, desc.batch = 1, desc.heads = 1, desc.arity = 2;
      desc.depths = depths, desc.causal = 1, desc.window = w[i].window, desc.sink = w[i].sink;
      dua_layout *l = NULL;
      ck_assert_int_eq(dua_layout_create(&desc, &l, NULL, 0), DUA_SUCCESS);
      ck_assert_msg(dua_layout_causal_short(l) == w[i].short_, "window %d sink %d", (int)w[i].window,
                    (int)w[i].sink);
      dua_layout_destroy(l);
    }
  }
  dua_tuning_source src0;
  /* compiled rules: 2 m-tiles (1 for causal-short), on mma.sync and on wgmma (Hopper, fp16 head dim 64) */
  ck_assert_int_eq(dua_forward_mma_plan(ctx, nc.l, 64, 1, NULL, NULL, 0), 2);
  ck_assert_int_eq(dua_forward_mma_plan(ctx, cs.l, 64, 1, NULL, NULL, 0), 1);
  ck_assert_int_eq(dua_forward_mma_plan(ctx, nc.l, 96, 1, NULL, NULL, 0), 0); /* the portable kernel */
  { /* the wgmma rule on any device (plans only, nothing runs): fp16 head dim 64 only */
    const int had = ctx->info.nv_wgmma;
    ctx->info.nv_wgmma = 1;
    ck_assert_int_eq(dua_forward_mma_plan(ctx, nc.l, 64, 1, &src0, NULL, 0), 2);
    ck_assert(src0 == DUA_TUNING_BUILTIN || src0 == DUA_TUNING_GENERIC); /* compiled, no choice made */
    ck_assert_int_eq(dua_forward_mma_plan(ctx, cs.l, 64, 1, NULL, NULL, 0), 1);
    ck_assert_int_eq(dua_forward_mma_plan(ctx, nc.l, 64, 0, NULL, NULL, 0), 2); /* tf32 */
    t = getk(ctx, "fwd_mma", DUA_F16, 64, 128); /* what dua-info and dua-tune see */
    ck_assert(t.params[0] == 2 && t.params[1] == 1 && t.default_params[0] == 2 && t.default_params[1] == 1);
    ctx->info.nv_wgmma = had;
  }
  ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd_mma", DUA_F16, 64, one_two, 2), DUA_SUCCESS);
  dua_tuning_source src;
  ck_assert_int_eq(dua_forward_mma_plan(ctx, nc.l, 64, 1, &src, NULL, 0), 1);
  ck_assert_int_eq(src, DUA_TUNING_OVERRIDE);
  ck_assert_int_eq(dua_forward_mma_plan(ctx, cs.l, 64, 1, NULL, NULL, 0), 2);
  ck_assert_int_eq(dua_forward_mma_plan(ctx, nc.l, 64, 0, NULL, NULL, 0), 2); /* fp32: its own entry */
  ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd_mma", DUA_F16, 64, two_two, 2), DUA_SUCCESS);
  ck_assert_int_eq(dua_forward_mma_plan(ctx, small.l, 64, 1, &src, NULL, 0), 1); /* block 64: MT 1 */
  ck_assert_int_eq(src, DUA_TUNING_OVERRIDE);
  /* DUA_MMA_MT over the override, for both classes; another value ignored with one warning */
  setenv("DUA_MMA_MT", "1", 1);
  char origin[64];
  ck_assert_int_eq(dua_forward_mma_plan(ctx, cs.l, 64, 1, &src, origin, sizeof origin), 1);
  ck_assert(src == DUA_TUNING_DEVELOPER_ENV && !strcmp(origin, "env DUA_MMA_MT"));
  setenv("DUA_MMA_MT", "3", 1);
  logged[0] = '\0';
  ck_assert_int_eq(dua_forward_mma_plan(ctx, cs.l, 64, 1, &src, NULL, 0), 2);
  ck_assert_int_eq(src, DUA_TUNING_OVERRIDE);
  ck_assert_msg(strstr(logged, "DUA_MMA_MT = \"3\" is neither 1 nor 2"), "%s", logged);
  logged[0] = '\0';
  dua_forward_mma_plan(ctx, cs.l, 64, 1, NULL, NULL, 0);
  ck_assert_str_eq(logged, ""); /* once per context */
  unsetenv("DUA_MMA_MT");
  ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd_mma", DUA_F16, 64, NULL, 0), DUA_SUCCESS);
  if (!sim_nv) {
    /* the MT reaching the kernel (emulated on PoCL): the compiled rule, then overrides per class; MT 1 and 2
     * compute the same O */
    float *o2 = malloc(nc.n * sizeof *o2), *o1 = malloc(nc.n * sizeof *o1);
    ck_assert_int_eq(mma_run(ctx, &nc, o2), 2);
    ck_assert_int_eq(mma_run(ctx, &cs, NULL), 1);
    ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd_mma", DUA_F16, 64, one_two, 2), DUA_SUCCESS);
    ck_assert_int_eq(mma_run(ctx, &nc, o1), 1);
    ck_assert_int_eq(mma_run(ctx, &cs, NULL), 2);
    double err;
    long at = test_compare(o1, o2, nc.n, 1e-3, 2e-3, &err);
    ck_assert_msg(at < 0, "MT 1 and MT 2 differ at %ld (max error %g)", at, err);
    ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd_mma", DUA_F16, 64, two_two, 2), DUA_SUCCESS);
    ck_assert_int_eq(mma_run(ctx, &small, NULL), 1); /* MT 2 does not fit block 64 */
    setenv("DUA_MMA_MT", "1", 1);
    ck_assert_int_eq(mma_run(ctx, &nc, NULL), 1);
    unsetenv("DUA_MMA_MT");
    /* fp32 through tf32: its own entry */
    mma_case tf = mma_make(ctx, DUA_F32, 128, 0);
    ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd_mma", DUA_F32, 64, one_one, 2), DUA_SUCCESS);
    ck_assert_int_eq(mma_run(ctx, &tf, NULL), 1);
    ck_assert_msg(strstr(mma_line, "-DDUA_TF32=1"), "%s", mma_line);
    mma_free(&tf);
    free(o1), free(o2);
  }
  mma_free(&nc), mma_free(&cs), mma_free(&small);
  dua_context_destroy(ctx);

  /* the database: used for its dtype and head dim, under the override */
  const kparams entry[1] = {{"fwd_mma", 1, 64, 2, {1, 2}}};
  write_entries(path, &d, d.driver_version, entry, 1);
  setenv("DUA_TUNING_FILE", path, 1);
  ctx = mma_context();
  ctx->info.nv_mma_f16 = ctx->info.nv_mma_tf32 = 1; /* as above (real NVIDIA: already so) */
  ctx->fast_paths_disabled = 0;
  char want[256];
  snprintf(want, sizeof want, "file %s", path);
  t = getk(ctx, "fwd_mma", DUA_F16, 64, 128);
  ck_assert_int_eq(t.source, DUA_TUNING_FILE);
  ck_assert_str_eq(t.origin, want);
  ck_assert(t.params[0] == 1 && t.params[1] == 2 && t.default_params[1] == 1);
  ck_assert_int_eq(t.default_params[0], 2); /* the compiled rule */
  ck_assert_int_ne(getk(ctx, "fwd_mma", DUA_F32, 64, 128).source, DUA_TUNING_FILE);
  ck_assert_int_ne(getk(ctx, "fwd_mma", DUA_F16, 128, 128).source, DUA_TUNING_FILE);
  mma_case cf = mma_make(ctx, DUA_F16, 128, 1);
  ck_assert_int_eq(dua_forward_mma_plan(ctx, cf.l, 64, 1, &src, NULL, 0), 2);
  ck_assert_int_eq(src, DUA_TUNING_FILE);
  if (!sim_nv)
    ck_assert_int_eq(mma_run(ctx, &cf, NULL), 2);
  ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd_mma", DUA_F16, 64, one_one, 2), DUA_SUCCESS);
  ck_assert_int_eq(getk(ctx, "fwd_mma", DUA_F16, 64, 128).source, DUA_TUNING_OVERRIDE);
  ck_assert_int_eq(dua_forward_mma_plan(ctx, cf.l, 64, 1, NULL, NULL, 0), 1);
  mma_free(&cf);
  dua_context_destroy(ctx);
  unlink(path);
  clear_env();
}
END_TEST

int main(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/dua_test_tuning_XXXXXX");
  if (!mkdtemp(tmpdir))
    return 1;
  Suite *s = suite_create("tuning");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 600);
  tcase_add_loop_test(tc, chain_precedence, 0, 2);
  tcase_add_loop_test(tc, set_tuning_refusals_and_candidates, 0, 2);
  tcase_add_loop_test(tc, forward_uses_file_tile, 0, 2);
  tcase_add_loop_test(tc, backward_and_decode_chain, 0, 2);
  tcase_add_loop_test(tc, backward_and_decode_refusals_and_candidates, 0, 2);
  tcase_add_loop_test(tc, tuned_values_reach_the_kernels, 0, 2);
  tcase_add_loop_test(tc, no_database_is_the_compiled_behaviour, 0, 2);
  tcase_add_test(tc, warp_in_the_tuning_space);
  tcase_add_loop_test(tc, fwd_mma_in_the_tuning_space, 0, 2);
  suite_add_tcase(s, tc);
  int rc = test_run_suite(s);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0)
    rc = 1;
  return rc;
}
