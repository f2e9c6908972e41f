/* test_tuning_db.c: unit tests (no device) of the tuning database reader and writer: the corpus of bad files
 * under test/corpus/tuning/ (each refused with a message naming the entry, as EXPECT lists), good files
 * accepted (forward, backward, decode plan, decode GQA plan and split-KV entries, decode shapes, decode plans
 * of the warp kernel at the edges of its own ranges, tensor-core forward entries and causal shapes), every
 * truncation of a good file refused, print/parse and save/load round trips, replacing entries, each decode
 * kernel's ranges (staged 3 and a warp tile on a regs plan refused naming the entry), the tensor-core
 * forward's ranges (mt, mt_cs in 1..2), and seeded random mutations (no crash; what is accepted round-trips).
 */
#include "test_util.h"
#include "tuning/tuning_db.h"

#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *corpus_dir(void) {
  const char *d = getenv("DUA_TUNING_CORPUS");
  return d && *d ? d : "test/corpus/tuning";
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  ck_assert(buf != NULL);
  ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
  buf[n] = '\0';
  fclose(f);
  *len = (size_t)n;
  return buf;
}

static char *corpus_file(const char *name, size_t *len) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", corpus_dir(), name);
  return slurp(path, len);
}

static void assert_same_db(const dua_tuning_db *a, const dua_tuning_db *b) {
  ck_assert_int_eq(a->count, b->count);
  for (int i = 0; i < a->count; i++)
    ck_assert_msg(!memcmp(&a->entries[i], &b->entries[i], sizeof a->entries[i]), "entry %d differs", i);
}

START_TEST(bad_corpus_refused_naming_the_entry) {
  size_t len;
  char *expect = corpus_file("EXPECT", &len);
  int checked = 0;
  for (char *line = strtok(expect, "\n"); line; line = strtok(NULL, "\n")) {
    if (line[0] == '#')
      continue;
    char *tab = strchr(line, '\t');
    ck_assert_msg(tab != NULL, "EXPECT line without a tab: %s", line);
    *tab = '\0';
    size_t n;
    char *text = corpus_file(line, &n);
    dua_tuning_db db = {0};
    char why[512] = "";
    ck_assert_msg(dua_tuning_db_parse(text, n, &db, why, sizeof why) == -1, "%s was accepted", line);
    ck_assert_msg(strstr(why, tab + 1) != NULL, "%s: message \"%s\" lacks \"%s\"", line, why, tab + 1);
    ck_assert_int_eq(db.count, 0);
    ck_assert_ptr_null(db.entries);
    free(text);
    checked++;
    *tab = '\t';
  }
  /* every bad_*.json in the directory is listed (so nobody adds one that is never checked) */
  DIR *d = opendir(corpus_dir());
  ck_assert(d != NULL);
  int files = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    files += !strncmp(e->d_name, "bad_", 4);
  closedir(d);
  ck_assert_int_eq(files, checked);
  ck_assert_int_ge(checked, 30);
  free(expect);
}
END_TEST

static const char *const good_names[] = {"good_two_entries.json", "good_empty.json", "good_all_kernels.json",
                                         "good_warp.json", "good_fwd_mma.json"};
#define NGOOD 5
/* the non-empty good files, for the loop tests */
static const char *const round_names[] = {"good_two_entries.json", "good_all_kernels.json", "good_warp.json",
                                          "good_fwd_mma.json"};

START_TEST(good_files_accepted) {
  const char *const *names = good_names;
  static const int counts[NGOOD] = {2, 0, 5, 4, 4};
  for (int i = 0; i < NGOOD; i++) {
    size_t n;
    char *text = corpus_file(names[i], &n);
    dua_tuning_db db = {0};
    char why[512] = "";
    ck_assert_msg(dua_tuning_db_parse(text, n, &db, why, sizeof why) == 0, "%s: %s", names[i], why);
    ck_assert_int_eq(db.count, counts[i]);
    if (i == 0) {
      const dua_tuning_entry *e = dua_tuning_db_find(&db, "fwd", 0, 64, "pthread-test-device", "3.1+test");
      ck_assert(e != NULL);
      ck_assert_int_eq(e->params[0], 64);
      ck_assert_int_eq(e->params[1], 128);
      ck_assert_int_eq(e->params[2], 16);
      ck_assert_int_eq(e->params[3], 1);
      ck_assert_int_eq(e->num_shapes, 2);
      ck_assert_int_eq(e->shapes[1].depth, 3);
      ck_assert(dua_tuning_db_find(&db, "fwd", 1, 64, "pthread-test-device", "3.1+test") == NULL);
      ck_assert(dua_tuning_db_find(&db, "fwd", 0, 64, "pthread-test-device", "3.2") == NULL);
      ck_assert(dua_tuning_db_find(&db, "fwd", 1, 128, "NVIDIA H100 80GB HBM3", "580.95.05") != NULL);
    }
    if (i == 2) { /* the backward, decode plans and split thresholds, decode shapes */
      const char *dev = "pthread-test-device", *drv = "3.1+test";
      const dua_tuning_entry *b = dua_tuning_db_find(&db, "bwd", 0, 64, dev, drv);
      ck_assert(b != NULL);
      ck_assert_int_eq(b->num_params, 4);
      ck_assert(b->params[0] == 64 && b->params[1] == 32 && b->params[2] == 8 && b->params[3] == 8);
      ck_assert_int_eq(b->shapes[1].kv_heads + b->shapes[1].tokens + b->shapes[1].page, 0);
      const dua_tuning_entry *d = dua_tuning_db_find(&db, "decode", 1, 128, dev, drv);
      ck_assert(d != NULL);
      ck_assert_int_eq(d->num_params, 3);
      ck_assert(d->params[0] == 0 && d->params[1] == 32 && d->params[2] == 128);
      ck_assert(d->shapes[1].depth == 4 && d->shapes[1].kv_heads == 8 && d->shapes[1].tokens == 1 &&
                d->shapes[1].page == 16);
      const dua_tuning_entry *g = dua_tuning_db_find(&db, "decode_gqa", 1, 128, dev, drv);
      ck_assert(g != NULL);
      ck_assert_int_eq(g->num_params, 4);
      ck_assert_int_eq(g->params[3], 4);
      ck_assert(g->shapes[0].kv_heads == 2 && g->shapes[0].tokens == 2 && g->shapes[0].page == 64);
      const dua_tuning_entry *sp = dua_tuning_db_find(&db, "decode_split", 1, 128, dev, drv);
      ck_assert(sp != NULL);
      ck_assert(sp->params[0] == 4 && sp->params[1] == 16 && sp->params[2] == 32);
      ck_assert(dua_tuning_db_find(&db, "decode_split", 0, 128, dev, drv) != NULL);
      ck_assert(dua_tuning_db_find(&db, "decode", 0, 128, dev, drv) == NULL);
      ck_assert(dua_tuning_db_find(&db, "decode_gqa", 1, 64, dev, drv) == NULL);
    }
    if (i == 3) { /* the warp kernel (staged 2) at the edges of its ranges: tile 1..128, threads 32..1024 */
      const char *dev = "NVIDIA H100 80GB HBM3", *drv = "580.159.04";
      const dua_tuning_entry *d = dua_tuning_db_find(&db, "decode", 1, 128, dev, drv);
      ck_assert(d != NULL);
      ck_assert(d->params[0] == 2 && d->params[1] == 1 && d->params[2] == 32);
      const dua_tuning_entry *g = dua_tuning_db_find(&db, "decode_gqa", 1, 128, dev, drv);
      ck_assert(g != NULL);
      ck_assert(g->params[0] == 2 && g->params[1] == 128 && g->params[2] == 1024 && g->params[3] == 64);
      const dua_tuning_entry *f = dua_tuning_db_find(&db, "decode", 0, 128, dev, drv);
      ck_assert(f != NULL);
      ck_assert(f->params[0] == 2 && f->params[1] == 4 && f->params[2] == 128);
    }
    if (i == 4) { /* the tensor-core forward (mt, mt_cs) per dtype and head dim; causal shapes */
      const char *dev = "NVIDIA H100 80GB HBM3", *drv = "580.159.04";
      const dua_tuning_entry *h = dua_tuning_db_find(&db, "fwd_mma", 1, 64, dev, drv);
      ck_assert(h != NULL);
      ck_assert(h->num_params == 2 && h->params[0] == 2 && h->params[1] == 1);
      ck_assert_int_eq(h->num_shapes, 6);
      for (int j = 0; j < 6; j++) /* three non-causal shapes, then three causal */
        ck_assert_int_eq(h->shapes[j].causal, j >= 3);
      ck_assert_int_eq(h->shapes[3].depth, 6);
      const dua_tuning_entry *t = dua_tuning_db_find(&db, "fwd_mma", 0, 64, dev, drv);
      ck_assert(t != NULL);
      ck_assert(t->params[0] == 1 && t->params[1] == 2);
      ck_assert(t->shapes[0].causal == 0 && t->shapes[1].causal == 1); /* "causal": 0 read as absent */
      ck_assert(dua_tuning_db_find(&db, "fwd_mma", 1, 128, dev, drv) != NULL);
      ck_assert(dua_tuning_db_find(&db, "fwd_mma", 0, 128, dev, drv) == NULL);
      const dua_tuning_entry *f = dua_tuning_db_find(&db, "fwd", 1, 64, dev, drv);
      ck_assert(f != NULL && f->shapes[0].causal == 1 && f->shapes[1].causal == 0);
    }
    dua_tuning_db_free(&db);
    free(text);
  }
}
END_TEST

START_TEST(every_truncation_refused) {
  const char *const *names = good_names;
  for (int f = 0; f < NGOOD; f++) {
    size_t n;
    char *text = corpus_file(names[f], &n);
    size_t last = (size_t)(strrchr(text, '}') - text); /* prefixes that keep the last brace are whole */
    for (size_t len = 0; len <= last; len++) {
      dua_tuning_db db = {0};
      char why[512] = "";
      ck_assert_msg(dua_tuning_db_parse(text, len, &db, why, sizeof why) == -1, "%s cut at %zu accepted",
                    names[f], len);
      ck_assert(why[0] != '\0');
    }
    free(text);
  }
}
END_TEST

START_TEST(print_parse_and_save_load_round_trip) {
  size_t n;
  char *text = corpus_file(round_names[_i], &n);
  dua_tuning_db a = {0}, b = {0}, c = {0};
  char why[512] = "";
  ck_assert_int_eq(dua_tuning_db_parse(text, n, &a, why, sizeof why), 0);
  char *printed = dua_tuning_db_print(&a);
  ck_assert(printed != NULL);
  ck_assert_msg(dua_tuning_db_parse(printed, strlen(printed), &b, why, sizeof why) == 0, "%s", why);
  assert_same_db(&a, &b);
  char dir[] = "/tmp/dua_tuning_db_XXXXXX";
  ck_assert(mkdtemp(dir) != NULL);
  char path[256];
  snprintf(path, sizeof path, "%s/tuning.json", dir);
  ck_assert_int_eq(dua_tuning_db_load(path, &c, why, sizeof why), 1); /* absent: not an error */
  ck_assert_msg(dua_tuning_db_save(path, &a, why, sizeof why) == 0, "%s", why);
  ck_assert_msg(dua_tuning_db_load(path, &c, why, sizeof why) == 0, "%s", why);
  assert_same_db(&a, &c);
  /* only the file remains (the temporary was renamed) */
  DIR *d = opendir(dir);
  int entries = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    entries += e->d_name[0] != '.';
  closedir(d);
  ck_assert_int_eq(entries, 1);
  /* a refused file reports -1, never "absent" */
  FILE *f = fopen(path, "w");
  fputs("{\"format\": \"dua-tuning\", \"version\": 1, \"entries\": [", f);
  fclose(f);
  ck_assert_int_eq(dua_tuning_db_load(path, &c, why, sizeof why), -1);
  ck_assert_int_eq(c.count, 0);
  unlink(path);
  rmdir(dir);
  dua_tuning_db_free(&a);
  dua_tuning_db_free(&b);
  dua_tuning_db_free(&c);
  free(printed);
  free(text);
}
END_TEST

START_TEST(put_replaces_by_key_and_validates) {
  size_t n;
  char *text = corpus_file("good_two_entries.json", &n);
  dua_tuning_db db = {0};
  char why[512] = "";
  ck_assert_int_eq(dua_tuning_db_parse(text, n, &db, why, sizeof why), 0);
  dua_tuning_entry e = db.entries[0];
  e.params[0] = 32;
  ck_assert_int_eq(dua_tuning_db_put(&db, &e, why, sizeof why), 0);
  ck_assert_int_eq(db.count, 2);
  ck_assert_int_eq(db.entries[0].params[0], 32);
  e.head_dim = 96; /* a new key */
  ck_assert_int_eq(dua_tuning_db_put(&db, &e, why, sizeof why), 0);
  ck_assert_int_eq(db.count, 3);
  e.params[1] = 24; /* not a power of two */
  ck_assert_int_eq(dua_tuning_db_put(&db, &e, why, sizeof why), -1);
  ck_assert_msg(strstr(why, "params.bn = 24") != NULL, "%s", why);
  ck_assert_int_eq(db.count, 3);
  /* decode entries: their shapes must carry kv_heads, tokens and page, others must not */
  char *all = corpus_file("good_all_kernels.json", &n);
  dua_tuning_db more = {0};
  ck_assert_int_eq(dua_tuning_db_parse(all, n, &more, why, sizeof why), 0);
  dua_tuning_entry d = more.entries[1];
  ck_assert_int_eq(dua_tuning_db_put(&db, &d, why, sizeof why), 0);
  ck_assert_int_eq(db.count, 4);
  d.shapes[0].page = 0;
  ck_assert_int_eq(dua_tuning_db_put(&db, &d, why, sizeof why), -1);
  ck_assert_msg(strstr(why, "shapes[0].page = 0") != NULL, "%s", why);
  e.shapes[0].tokens = 1; /* a forward entry with a decode field */
  e.params[1] = 32;
  ck_assert_int_eq(dua_tuning_db_put(&db, &e, why, sizeof why), -1);
  ck_assert_msg(strstr(why, "belong to decode shapes only") != NULL, "%s", why);
  ck_assert_int_eq(db.count, 4);
  dua_tuning_db_free(&more);
  free(all);
  dua_tuning_db_free(&db);
  free(text);
}
END_TEST

/* Each decode kernel's own ranges (dua_tuning_params_check, as the reader and dua_context_set_tuning use it):
 * a warp plan takes tiles 1..128 and 32..1024 work-items, an mma plan tile 16 and 32..1024, regs and staged
 * 16..128 and 16..1024; staged 4 is no kernel; a round trip through put/print/parse keeps every warp plan. */
START_TEST(decode_kernel_ranges) {
  const dua_tune_kernel_desc *k = dua_tune_kernel_find("decode"), *g = dua_tune_kernel_find("decode_gqa");
  ck_assert(k && g && k->variants && g->variants);
  ck_assert_str_eq(dua_tune_decode_variant(2), "warp");
  ck_assert_str_eq(dua_tune_decode_variant(3), "mma");
  ck_assert_ptr_null(dua_tune_decode_variant(4));
  struct {
    const dua_tune_kernel_desc *k;
    int32_t p[4];
    const char *msg; /* NULL: accepted */
  } cases[] = {
      {k, {2, 1, 32}, NULL},
      {k, {2, 128, 1024}, NULL},
      {k, {0, 16, 16}, NULL},
      {k, {1, 128, 1024}, NULL},
      {g, {2, 2, 64, 64}, NULL},
      {k, {3, 16, 128}, NULL},
      {g, {3, 16, 64, 8}, NULL},
      {k, {4, 32, 128}, "p.staged = 4: must be an integer in 0..3"},
      {k, {3, 32, 128}, "p.tile = 32: must be a power of two in 16..16 for the mma kernel (staged = 3)"},
      {k, {3, 16, 16}, "p.threads = 16: must be a power of two in 32..1024 for the mma kernel"},
      {k, {-1, 32, 128}, "p.staged = -1"},
      {k, {2, 256, 128}, "p.tile = 256: must be a power of two in 1..128 for the warp kernel (staged = 2)"},
      {k, {2, 4, 16}, "p.threads = 16: must be a power of two in 32..1024 for the warp kernel"},
      {k, {2, 4, 96}, "p.threads = 96"},
      {k, {0, 4, 128}, "p.tile = 4: must be a power of two in 16..128 for the regs kernel (staged = 0)"},
      {k, {1, 8, 128}, "p.tile = 8: must be a power of two in 16..128 for the staged kernel (staged = 1)"},
      {g, {2, 8, 128, 65}, "p.rows = 65"},
      {g, {2, 8, 2048, 4}, "p.threads = 2048"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char why[256] = "";
    const int rc =
        dua_tuning_params_check(cases[i].k, cases[i].p, cases[i].k->num_params, "p", why, sizeof why);
    if (!cases[i].msg) {
      ck_assert_msg(rc == 0, "case %zu refused: %s", i, why);
    } else {
      ck_assert_msg(rc == -1, "case %zu accepted", i);
      ck_assert_msg(strstr(why, cases[i].msg) != NULL, "case %zu: \"%s\" lacks \"%s\"", i, why, cases[i].msg);
    }
  }
  /* every warp plan in range survives put, print and parse */
  size_t n;
  char *text = corpus_file("good_warp.json", &n);
  dua_tuning_db db = {0}, back = {0};
  char why[512] = "";
  ck_assert_int_eq(dua_tuning_db_parse(text, n, &db, why, sizeof why), 0);
  dua_tuning_entry e = db.entries[1]; /* decode_gqa, fp16, 128 */
  int plans = 0;
  for (int tile = 1; tile <= 128; tile *= 2)
    for (int threads = 32; threads <= 1024; threads *= 2) {
      e.head_dim = 8 * (1 + plans % 32);
      e.fp16 = plans / 32 % 2;
      memset(e.driver, 0, sizeof e.driver); /* whole entries are compared: no bytes left after the NUL */
      snprintf(e.driver, sizeof e.driver, "warp-%d", plans);
      e.params[0] = 2, e.params[1] = tile, e.params[2] = threads, e.params[3] = 1 + plans % 64;
      ck_assert_msg(dua_tuning_db_put(&db, &e, why, sizeof why) == 0, "%s", why);
      plans++;
    }
  ck_assert_int_eq(plans, 48);
  char *printed = dua_tuning_db_print(&db);
  ck_assert(printed != NULL);
  ck_assert_msg(dua_tuning_db_parse(printed, strlen(printed), &back, why, sizeof why) == 0, "%s", why);
  assert_same_db(&db, &back);
  e.params[0] = 4; /* no such kernel */
  ck_assert_int_eq(dua_tuning_db_put(&db, &e, why, sizeof why), -1);
  ck_assert_msg(strstr(why, "params.staged = 4") != NULL, "%s", why);
  free(printed);
  dua_tuning_db_free(&db);
  dua_tuning_db_free(&back);
  free(text);
}
END_TEST

/* The tensor-core forward's ranges (mt and mt_cs: integers in 1..2) as dua_tuning_params_check, the reader
 * and dua_context_set_tuning use them; a shape's causal flag is written only when set (a file without causal
 * shapes prints as before), survives put/print/parse, and is refused on decode shapes and outside 0..1. */
START_TEST(fwd_mma_ranges_and_causal_shapes) {
  const dua_tune_kernel_desc *k = dua_tune_kernel_find("fwd_mma");
  ck_assert(k != NULL);
  ck_assert_int_eq(k->num_params, 2);
  ck_assert_str_eq(k->params[0].name, "mt");
  ck_assert_str_eq(k->params[1].name, "mt_cs");
  ck_assert(strstr(dua_tune_kernel_names(), "fwd_mma") != NULL);
  struct {
    int32_t p[2];
    int n;
    const char *msg; /* NULL: accepted */
  } cases[] = {
      {{1, 1}, 2, NULL},
      {{2, 2}, 2, NULL},
      {{1, 2}, 2, NULL},
      {{3, 1}, 2, "p.mt = 3: must be an integer in 1..2"},
      {{0, 1}, 2, "p.mt = 0"},
      {{2, 4}, 2, "p.mt_cs = 4: must be an integer in 1..2"},
      {{2, -1}, 2, "p.mt_cs = -1"},
      {{2, 1}, 1, "kernel \"fwd_mma\" takes 2 parameters, not 1"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char why[256] = "";
    const int rc = dua_tuning_params_check(k, cases[i].p, cases[i].n, "p", why, sizeof why);
    if (!cases[i].msg) {
      ck_assert_msg(rc == 0, "case %zu refused: %s", i, why);
    } else {
      ck_assert_msg(rc == -1, "case %zu accepted", i);
      ck_assert_msg(strstr(why, cases[i].msg) != NULL, "case %zu: \"%s\" lacks \"%s\"", i, why, cases[i].msg);
    }
  }
  /* the causal key: printed only where set */
  size_t n;
  char *text = corpus_file("good_two_entries.json", &n);
  dua_tuning_db db = {0}, back = {0};
  char why[512] = "";
  ck_assert_int_eq(dua_tuning_db_parse(text, n, &db, why, sizeof why), 0);
  char *printed = dua_tuning_db_print(&db);
  ck_assert(printed != NULL && strstr(printed, "causal") == NULL);
  free(printed);
  dua_tuning_entry e = db.entries[0];
  e.shapes[1].causal = 1;
  ck_assert_msg(dua_tuning_db_put(&db, &e, why, sizeof why) == 0, "%s", why);
  printed = dua_tuning_db_print(&db);
  ck_assert(printed != NULL && strstr(printed, "\"causal\"") != NULL);
  ck_assert_msg(dua_tuning_db_parse(printed, strlen(printed), &back, why, sizeof why) == 0, "%s", why);
  assert_same_db(&db, &back);
  ck_assert_int_eq(back.entries[0].shapes[1].causal, 1);
  ck_assert_int_eq(back.entries[0].shapes[0].causal, 0);
  free(printed);
  e.shapes[1].causal = 2;
  ck_assert_int_eq(dua_tuning_db_put(&db, &e, why, sizeof why), -1);
  ck_assert_msg(strstr(why, "shapes[1].causal = 2: must be 0 or 1") != NULL, "%s", why);
  /* a tensor-core forward entry through put; out of range refused naming the parameter */
  dua_tuning_entry m = db.entries[0];
  snprintf(m.kernel, sizeof m.kernel, "fwd_mma");
  m.num_params = 2, m.params[0] = 2, m.params[1] = 1, m.params[2] = m.params[3] = 0;
  m.shapes[1].causal = 1;
  ck_assert_msg(dua_tuning_db_put(&db, &m, why, sizeof why) == 0, "%s", why);
  ck_assert_ptr_nonnull(dua_tuning_db_find(&db, "fwd_mma", m.fp16, m.head_dim, m.device, m.driver));
  m.params[1] = 3;
  ck_assert_int_eq(dua_tuning_db_put(&db, &m, why, sizeof why), -1);
  ck_assert_msg(strstr(why, "entry.params.mt_cs = 3") != NULL, "%s", why);
  /* decode shapes never carry it */
  char *all = corpus_file("good_all_kernels.json", &n);
  dua_tuning_db more = {0};
  ck_assert_int_eq(dua_tuning_db_parse(all, n, &more, why, sizeof why), 0);
  dua_tuning_entry d = more.entries[1];
  d.shapes[0].causal = 1;
  ck_assert_int_eq(dua_tuning_db_put(&db, &d, why, sizeof why), -1);
  ck_assert_msg(strstr(why, "shapes[0].causal: decode shapes are causal by construction") != NULL, "%s", why);
  dua_tuning_db_free(&more);
  dua_tuning_db_free(&db);
  dua_tuning_db_free(&back);
  free(all);
  free(text);
}
END_TEST

START_TEST(random_mutations_never_crash) {
  size_t n;
  char *text = corpus_file(round_names[_i], &n);
  test_rng r = test_rng_make(test_seed() ^ 0x7u);
  char *buf = malloc(n + 64);
  int accepted = 0;
  for (int it = 0; it < 3000; it++) {
    memcpy(buf, text, n);
    size_t len = n;
    int edits = test_rng_int(&r, 1, 4);
    for (int k = 0; k < edits; k++) {
      size_t at = (size_t)test_rng_int(&r, 0, (int)len - 1);
      static const char alphabet[] = "{}[]\",:0123456789-.eE tfn\\\x01\x80";
      switch (test_rng_int(&r, 0, 2)) {
      case 0:
        buf[at] = alphabet[test_rng_int(&r, 0, (int)sizeof alphabet - 2)];
        break;
      case 1:
        memmove(buf + at, buf + at + 1, len - at - 1), len--;
        break;
      default:
        memmove(buf + at + 1, buf + at, len - at), buf[at] = buf[(at * 7) % len], len++;
      }
    }
    dua_tuning_db a = {0}, b = {0};
    char why[512];
    if (dua_tuning_db_parse(buf, len, &a, why, sizeof why) == 0) {
      accepted++;
      char *p = dua_tuning_db_print(&a);
      ck_assert(p != NULL);
      ck_assert_msg(dua_tuning_db_parse(p, strlen(p), &b, why, sizeof why) == 0, "reprint refused: %s", why);
      assert_same_db(&a, &b);
      free(p);
    }
    dua_tuning_db_free(&a);
    dua_tuning_db_free(&b);
  }
  (void)accepted;
  free(buf);
  free(text);
}
END_TEST

int main(void) {
  Suite *s = suite_create("tuning_db");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, bad_corpus_refused_naming_the_entry);
  tcase_add_test(tc, good_files_accepted);
  tcase_add_test(tc, every_truncation_refused);
  tcase_add_loop_test(tc, print_parse_and_save_load_round_trip, 0, 4);
  tcase_add_test(tc, put_replaces_by_key_and_validates);
  tcase_add_test(tc, decode_kernel_ranges);
  tcase_add_loop_test(tc, random_mutations_never_crash, 0, 4);
  tcase_add_test(tc, fwd_mma_ranges_and_causal_shapes);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
