/* test_tuning.c: the tuning lookup chain on a device (PoCL in CI): DUA_FWD_TILE over the context's override
 * over the database file (DUA_TUNING_FILE, then $XDG_DATA_HOME/dua/tuning.json, then
 * ~/.local/share/dua/tuning.json) over the compiled defaults; entries for another driver, dtype or a tile
 * the layout block cannot use are skipped; a refused file falls back with a warning through the log callback
 * naming the entry; dua_context_set_tuning's refusals; the candidate space; and a forward run with the file's
 * tile matching the default tile's output. Environment variables are set inside the test. */
#include "dua.h"
#include "test_util.h"
#include "tuning/tuning_db.h"

#include <check.h>
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

static dua_context *context(void) {
  dua_context_options o;
  dua_context_options_init(&o);
  o.log = log_fn;
  o.log_level = DUA_LOG_WARNING;
  dua_context *ctx = NULL;
  ck_assert_int_eq(dua_context_create(&o, &ctx), DUA_SUCCESS);
  return ctx;
}

static dua_tuning_info get(dua_context *ctx, dua_dtype dt, int dim, int block) {
  dua_tuning_info t;
  dua_status st = dua_context_get_tuning(ctx, "fwd", dt, dim, block, &t);
  ck_assert_msg(st == DUA_SUCCESS, "get_tuning: %s", dua_context_last_error(ctx));
  return t;
}

static const int32_t tile[4] = {32, 64, 8, 4}; /* valid for head dim 64, block >= 64, 32 work-items */

START_TEST(chain_precedence) {
  clear_env();
  char path[128], bad[128];
  snprintf(path, sizeof path, "%s/explicit.json", tmpdir);
  snprintf(bad, sizeof bad, "%s/bad.json", tmpdir);
  /* no file: compiled defaults */
  setenv("DUA_TUNING_FILE", "/nonexistent/dua/tuning.json", 1);
  dua_context *ctx = context();
  dua_device_info d;
  dua_context_device_info(ctx, &d);
  dua_tuning_info t = get(ctx, DUA_F32, 64, 128);
  ck_assert(t.source == DUA_TUNING_BUILTIN || t.source == DUA_TUNING_GENERIC);
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
  const int32_t ov[4] = {64, 64, 16, 4};
  ck_assert_int_eq(dua_context_set_tuning(ctx, "fwd", DUA_F32, 64, ov, 4), DUA_SUCCESS);
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
  snprintf(xdg, sizeof xdg, "%s/xdg", tmpdir);
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
  char hfile[256];
  snprintf(hfile, sizeof hfile, "%s/.local", tmpdir);
  ck_assert_int_eq(mkdir(hfile, 0755), 0);
  snprintf(hfile, sizeof hfile, "%s/.local/share", tmpdir);
  ck_assert_int_eq(mkdir(hfile, 0755), 0);
  snprintf(hfile, sizeof hfile, "%s/.local/share/dua", tmpdir);
  ck_assert_int_eq(mkdir(hfile, 0755), 0);
  snprintf(hfile, sizeof hfile, "%s/.local/share/dua/tuning.json", tmpdir);
  write_db(hfile, &d, d.driver_version, tile);
  setenv("HOME", tmpdir, 1);
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

int main(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/dua_test_tuning_XXXXXX");
  if (!mkdtemp(tmpdir))
    return 1;
  Suite *s = suite_create("tuning");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, chain_precedence);
  tcase_add_test(tc, set_tuning_refusals_and_candidates);
  tcase_add_test(tc, forward_uses_file_tile);
  suite_add_tcase(s, tc);
  int rc = test_run_suite(s);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0)
    rc = 1;
  return rc;
}
