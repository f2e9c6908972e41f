/* test_cache.c: program caches: memory hits, disk hits across contexts (timed), changed options, corrupt
 * or truncated entries rebuilt (never loaded), DUA_CACHE=0. */
#include "runtime/context_internal.h"
#include "test_util.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void fresh_cache_dir(char *dir) {
  strcpy(dir, "/tmp/dua-cache-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  setenv("DUA_CACHE_DIR", dir, 1);
  unsetenv("DUA_CACHE");
}

/* Applies fn to every cache entry file; returns how many there were. */
static int for_each_entry(const char *dir, void (*fn)(const char *path)) {
  DIR *d = opendir(dir);
  ck_assert_ptr_nonnull(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!strstr(e->d_name, ".bin"))
      continue;
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (fn)
      fn(path);
    n++;
  }
  closedir(d);
  return n;
}

static void truncate_entry(const char *path) {
  ck_assert_int_eq(truncate(path, 40), 0);
}

static void flip_payload_byte(const char *path) {
  FILE *f = fopen(path, "r+b");
  ck_assert_ptr_nonnull(f);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, n / 2 + 48, SEEK_SET);
  int c = fgetc(f);
  fseek(f, n / 2 + 48, SEEK_SET);
  fputc(c ^ 0x5a, f);
  fclose(f);
}

static void append_garbage(const char *path) {
  FILE *f = fopen(path, "ab");
  fputs("trailing", f);
  fclose(f);
}

static dua_cache_stats stats_of_new_context(double *ms) {
  double t0 = now_ms();
  dua_context *ctx = test_context();
  cl_program p = NULL;
  ck_assert_int_eq(dua_program_get(ctx, "probe", "-DDUA_TEST_VARIANT=1", &p), DUA_SUCCESS);
  if (ms)
    *ms = now_ms() - t0;
  dua_cache_stats s;
  dua_context_cache_stats(ctx, &s);
  dua_context_destroy(ctx);
  return s;
}

START_TEST(second_context_loads_from_disk) {
  char dir[64];
  fresh_cache_dir(dir);
  double cold = 0, warm = 0;
  dua_cache_stats a = stats_of_new_context(&cold);
  ck_assert_int_eq(a.disk_enabled, 1);
  ck_assert_str_eq(a.directory, dir);
  ck_assert_uint_ge(a.builds, 2); /* probe program + the variant */
  ck_assert_uint_eq(a.disk_hits, 0);
  ck_assert_int_ge(for_each_entry(dir, NULL), 2);
  dua_cache_stats b = stats_of_new_context(&warm);
  ck_assert_uint_eq(b.builds, 0);
  ck_assert_uint_ge(b.disk_hits, 2);
  ck_assert_uint_eq(b.disk_rejects, 0);
  fprintf(stderr, "cache: cold context + programs %.1f ms, warm (from disk) %.1f ms\n", cold, warm);
}
END_TEST

START_TEST(memory_hits_and_changed_options) {
  char dir[64];
  fresh_cache_dir(dir);
  dua_context *ctx = test_context();
  dua_cache_stats s0, s1;
  dua_context_cache_stats(ctx, &s0);
  cl_program p1 = NULL, p2 = NULL, p3 = NULL;
  ck_assert_int_eq(dua_program_get(ctx, "probe", "-DA=1", &p1), DUA_SUCCESS);
  ck_assert_int_eq(dua_program_get(ctx, "probe", "-DA=1", &p2), DUA_SUCCESS);
  ck_assert_ptr_eq(p1, p2);
  ck_assert_int_eq(dua_program_get(ctx, "probe", "-DA=2", &p3), DUA_SUCCESS);
  ck_assert_ptr_ne(p1, p3);
  dua_context_cache_stats(ctx, &s1);
  ck_assert_uint_eq(s1.builds - s0.builds, 2);
  ck_assert_uint_eq(s1.memory_hits - s0.memory_hits, 1);
  dua_context_destroy(ctx);
}
END_TEST

static void check_corruption_is_rebuilt(void (*damage)(const char *)) {
  char dir[64];
  fresh_cache_dir(dir);
  stats_of_new_context(NULL);
  ck_assert_int_ge(for_each_entry(dir, damage), 2);
  dua_cache_stats s = stats_of_new_context(NULL);
  ck_assert_uint_ge(s.disk_rejects, 2);
  ck_assert_uint_ge(s.builds, 2);
  ck_assert_uint_eq(s.disk_hits, 0);
  /* the rebuilt entries are good again */
  s = stats_of_new_context(NULL);
  ck_assert_uint_eq(s.builds, 0);
  ck_assert_uint_ge(s.disk_hits, 2);
}

START_TEST(truncated_entries_are_rebuilt) {
  check_corruption_is_rebuilt(truncate_entry);
}
END_TEST
START_TEST(flipped_bytes_are_rebuilt) {
  check_corruption_is_rebuilt(flip_payload_byte);
}
END_TEST
START_TEST(trailing_bytes_are_rebuilt) {
  check_corruption_is_rebuilt(append_garbage);
}
END_TEST

START_TEST(cache_can_be_disabled) {
  char dir[64];
  fresh_cache_dir(dir);
  setenv("DUA_CACHE", "0", 1);
  dua_cache_stats s = stats_of_new_context(NULL);
  ck_assert_int_eq(s.disk_enabled, 0);
  ck_assert_int_eq(for_each_entry(dir, NULL), 0);
  s = stats_of_new_context(NULL);
  ck_assert_uint_eq(s.disk_hits, 0);
  ck_assert_uint_ge(s.builds, 2);
  unsetenv("DUA_CACHE");
}
END_TEST

START_TEST(keys_depend_on_source_and_options) {
  dua_context *ctx = test_context();
  char a[65], b[65], c[65], d[65];
  dua_disk_cache_key(ctx, "kernel source", "-DX=1", a);
  dua_disk_cache_key(ctx, "kernel source", "-DX=2", b);
  dua_disk_cache_key(ctx, "kernel sourcf", "-DX=1", c);
  dua_disk_cache_key(ctx, "kernel source", "-DX=1", d);
  ck_assert_str_ne(a, b);
  ck_assert_str_ne(a, c);
  ck_assert_str_eq(a, d);
  ck_assert_uint_eq(strlen(a), 64);
  dua_context_destroy(ctx);
}
END_TEST

int main(void) {
  Suite *s = suite_create("cache");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, second_context_loads_from_disk);
  tcase_add_test(tc, memory_hits_and_changed_options);
  tcase_add_test(tc, truncated_entries_are_rebuilt);
  tcase_add_test(tc, flipped_bytes_are_rebuilt);
  tcase_add_test(tc, trailing_bytes_are_rebuilt);
  tcase_add_test(tc, cache_can_be_disabled);
  tcase_add_test(tc, keys_depend_on_source_and_options);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
