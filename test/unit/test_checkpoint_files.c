/* test_checkpoint_files.c: unit tests of checkpoints and routing files. Checkpoints: a bit-exact round
 * trip, the file equal to one built here from the format description (so the format is what checkpoint.c
 * documents), every single-byte flip and every truncation of a small checkpoint refused, structural faults
 * behind a valid checksum (magic, version, sizes, names, config) refused with the right message, saving
 * never leaves a half-written or temporary file. Routing files: a round trip, edge depths computed with
 * integer arithmetic, and a corpus of bad files, each refused with a message naming the bad entry. */
#include "dua_train.h"
#include "test_util.h"
#include "train/checkpoint.h"

#include <check.h>
#include <dirent.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Check records every passing ck_assert: in loops over many files, test with a plain if. */
#define REQUIRE(cond, ...)                                                                                   \
  do {                                                                                                       \
    if (!(cond))                                                                                             \
      ck_abort_msg(__VA_ARGS__);                                                                             \
  } while (0)

/* ---------------------------------------------------------------- scratch directory and files */

static char dir[256];

static void make_dir(void) {
  const char *base = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/dua_files_XXXXXX", base && *base ? base : "/tmp");
  ck_assert_ptr_nonnull(mkdtemp(dir));
}

/* Removes every file in dir, then dir; fails if a temporary file ("*.tmp.*") was left behind. */
static void remove_dir(void) {
  DIR *d = opendir(dir);
  ck_assert_ptr_nonnull(d);
  struct dirent *e;
  int stray = 0;
  char path[600];
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    stray += strstr(e->d_name, ".tmp.") != NULL;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
      rmdir(path);
    else
      unlink(path);
  }
  closedir(d);
  rmdir(dir);
  ck_assert_msg(stray == 0, "a temporary file was left behind");
}

static void path_of(char *out, size_t size, const char *name) {
  snprintf(out, size, "%s/%s", dir, name);
}

static void write_bytes(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  REQUIRE(f != NULL, "cannot write %s", path);
  REQUIRE(n == 0 || fwrite(data, 1, n, f) == n, "short write");
  REQUIRE(fclose(f) == 0, "close");
}

static unsigned char *read_bytes(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc((size_t)size + 1);
  ck_assert_ptr_nonnull(b);
  ck_assert_uint_eq(fread(b, 1, (size_t)size, f), (size_t)size);
  fclose(f);
  *n = (size_t)size;
  return b;
}

/* ---------------------------------------------------------------- an independent checkpoint writer */

typedef struct buf {
  unsigned char *p;
  size_t n, cap;
} buf;

static void put(buf *b, const void *data, size_t n) {
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2 + 64;
    b->p = realloc(b->p, b->cap);
    ck_assert_ptr_nonnull(b->p);
  }
  memcpy(b->p + b->n, data, n);
  b->n += n;
}

static void put_u32(buf *b, uint32_t v) {
  unsigned char x[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                        (unsigned char)(v >> 24)};
  put(b, x, 4);
}

static void put_u64(buf *b, uint64_t v) {
  put_u32(b, (uint32_t)v);
  put_u32(b, (uint32_t)(v >> 32));
}

static void put_i32(buf *b, int32_t v) {
  put_u32(b, (uint32_t)v);
}

static void put_f32(buf *b, float v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  put_u32(b, u);
}

/* The config as the format describes it: declaration order, 4 bytes a field, seed 8, ctrl_hidden,
 * reserved[10], then the four fields taken from the end of the reserved space. */
static void put_config(buf *b, const dua_trainer_config *c) {
  put_i32(b, c->task);
  put_i32(b, c->seq_len);
  put_i32(b, c->dyck_kinds);
  put_i32(b, c->dyck_max_depth);
  put_i32(b, c->test_size);
  put_i32(b, c->layers);
  put_i32(b, c->width);
  put_i32(b, c->heads);
  put_i32(b, c->mlp_ratio);
  put_i32(b, c->mode);
  put_i32(b, c->block);
  put_i32(b, c->arity);
  put_i32(b, c->window);
  put_i32(b, c->sink);
  put_i32(b, c->shift_alternate);
  put_f32(b, c->tau_start);
  put_f32(b, c->tau_end);
  put_f32(b, c->tau_frac);
  put_f32(b, c->hard_frac);
  put_f32(b, c->gate_init);
  put_f32(b, c->gate_lr_scale);
  put_f32(b, c->density_weight);
  put_f32(b, c->density_target);
  put_f32(b, c->skip_bias);
  put_i32(b, c->batch);
  put_i32(b, c->steps);
  put_i32(b, c->warmup);
  put_i32(b, c->decay);
  put_f32(b, c->lr);
  put_f32(b, c->lr_min);
  put_f32(b, c->weight_decay);
  put_f32(b, c->beta1);
  put_f32(b, c->beta2);
  put_f32(b, c->adam_eps);
  put_f32(b, c->grad_clip);
  put_u64(b, c->seed);
  put_i32(b, c->eval_every);
  put_i32(b, c->ctrl_hidden);
  for (int i = 0; i < 8; i++)
    put_i32(b, c->reserved[i]);
  put_i32(b, c->density_estimate); /* declared after reserved[]: serialized after it */
  put_i32(b, c->router_input);
  put_i32(b, c->balance_scope);
  put_i32(b, c->density_scope);
  put_f32(b, c->balance_weight);
  put_f32(b, c->router_lr_scale);
}

#define CONFIG_BYTES (15 * 4 + 9 * 4 + 4 * 4 + 7 * 4 + 8 + 4 + 4 + 14 * 4)

/* Header fields that the structural tests bend. */
typedef struct layout_opts {
  const char *magic;
  uint32_t version, config_bytes, count_delta;
} layout_opts;

static void put_sha256(buf *b) {
  unsigned char d[32];
  unsigned int len = 32;
  ck_assert_int_eq(EVP_Digest(b->p, b->n, d, &len, EVP_sha256(), NULL), 1);
  put(b, d, 32);
}

/* A checkpoint built from the format description, with a valid checksum. */
static buf build(const dua_trainer_config *c, const dua_ckpt_section *s, int count, const layout_opts *o) {
  buf b = {NULL, 0, 0};
  put(&b, o && o->magic ? o->magic : "DUACKPT1", 8);
  put_u32(&b, o && o->version ? o->version : 1);
  put_u32(&b, o && o->config_bytes ? o->config_bytes : CONFIG_BYTES);
  put_config(&b, c);
  put_u32(&b, (uint32_t)count + (o ? o->count_delta : 0));
  for (int i = 0; i < count; i++) {
    put(&b, s[i].name, DUA_CKPT_NAME_MAX); /* the caller's 24 bytes, as given */
    put_u64(&b, s[i].bytes);
    put(&b, s[i].data, (size_t)s[i].bytes);
  }
  put_sha256(&b);
  return b;
}

/* ---------------------------------------------------------------- checkpoint tests */

static dua_trainer_config random_config(test_rng *r) {
  dua_trainer_config c;
  dua_trainer_config_init(&c);
  c.task = test_rng_int(r, 0, 4);                                                 /* every task kind */
  c.seq_len = test_rng_int(r, 16, 4096) & (c.task == DUA_TASK_DYCK_LM ? ~1 : ~0); /* dyck-lm: even */
  c.dyck_kinds = test_rng_int(r, 1, 8);
  c.dyck_max_depth = test_rng_int(r, 1, 15);
  c.layers = test_rng_int(r, 1, 12);
  c.heads = test_rng_int(r, 1, 16);
  c.width = c.heads * 32 * test_rng_int(r, 1, 4);
  c.mode = test_rng_int(r, 0, 1);
  c.block = 16 << test_rng_int(r, 0, 4);
  c.arity = test_rng_int(r, 2, 8);
  c.tau_start = 1.0f + 0.5f * test_rng_float(r);
  c.tau_end = 0.1f + 0.05f * test_rng_float(r);
  c.gate_init = 3.0f * test_rng_float(r);
  c.density_weight = 1.0f + test_rng_float(r);
  c.density_scope = test_rng_int(r, DUA_DENSITY_PER_LAYER, DUA_DENSITY_MODEL);
  c.balance_scope = test_rng_int(r, DUA_BALANCE_BATCH, DUA_BALANCE_SEQUENCE);
  c.router_input = test_rng_int(r, DUA_ROUTER_TOKEN, DUA_ROUTER_TOKEN_POSITION);
  c.density_estimate = test_rng_int(r, DUA_DENSITY_SAMPLED, DUA_DENSITY_EXTRACTED);
  c.balance_weight = 0.5f + 0.4f * test_rng_float(r); /* test_rng_float: [-1, 1) */
  c.skip_bias = -30.0f + test_rng_float(r);
  c.lr = 1e-3f * (1.5f + test_rng_float(r));
  c.adam_eps = 1e-8f * (1.5f + test_rng_float(r));
  c.steps = test_rng_int(r, 100, 100000);
  c.seed = test_rng_next(r);
  return c;
}

START_TEST(test_ckpt_round_trip) {
  test_rng r = test_rng_make(100 + (uint64_t)_i);
  make_dir();
  dua_trainer_config c = random_config(&r);
  static const char *const names[] = {"params", "adam_m",    "adam_v",
                                      "empty",  "rng_state", "exactly_23_characters__"};
  dua_ckpt_section s[6];
  for (int i = 0; i < 6; i++) {
    memset(s[i].name, 0, sizeof s[i].name);
    snprintf(s[i].name, sizeof s[i].name, "%s", names[i]);
    s[i].bytes = i == 3 ? 0 : (uint64_t)test_rng_int(&r, 1, 70000);
    s[i].data = malloc(s[i].bytes + 1);
    ck_assert_ptr_nonnull(s[i].data);
    for (uint64_t k = 0; k < s[i].bytes; k++)
      ((unsigned char *)s[i].data)[k] = (unsigned char)test_rng_next(&r);
  }
  char path[600], err[512] = "";
  path_of(path, sizeof path, "model.ckpt");
  ck_assert_msg(dua_checkpoint_save(path, &c, s, 6, err, sizeof err) == DUA_SUCCESS, "%s", err);
  /* the file is exactly the documented format */
  size_t n;
  unsigned char *file = read_bytes(path, &n);
  buf want = build(&c, s, 6, NULL);
  ck_assert_uint_eq(n, want.n);
  ck_assert(memcmp(file, want.p, n) == 0);
  free(want.p);
  free(file);
  /* and loads back bit for bit */
  dua_trainer_config back;
  dua_ckpt_section *ls = NULL;
  int count = -1;
  ck_assert_msg(dua_checkpoint_load(path, &back, &ls, &count, err, sizeof err) == DUA_SUCCESS, "%s", err);
  ck_assert(memcmp(&back, &c, sizeof c) == 0);
  ck_assert_int_eq(count, 6);
  for (int i = 0; i < 6; i++) {
    ck_assert_str_eq(ls[i].name, s[i].name);
    ck_assert_uint_eq(ls[i].bytes, s[i].bytes);
    ck_assert(ls[i].data != NULL);
    ck_assert(memcmp(ls[i].data, s[i].data, (size_t)s[i].bytes) == 0);
    ck_assert_ptr_eq(dua_checkpoint_find(ls, count, names[i]), &ls[i]);
  }
  ck_assert_ptr_null(dua_checkpoint_find(ls, count, "missing"));
  ck_assert_ptr_null(dua_checkpoint_find(ls, count, "param"));
  dua_checkpoint_free(ls, count);
  /* no sections at all; overwriting an existing checkpoint */
  ck_assert_int_eq(dua_checkpoint_save(path, &c, NULL, 0, err, sizeof err), DUA_SUCCESS);
  ck_assert_int_eq(dua_checkpoint_load(path, &back, &ls, &count, err, sizeof err), DUA_SUCCESS);
  ck_assert_int_eq(count, 0);
  dua_checkpoint_free(ls, count);
  dua_checkpoint_free(NULL, 0);
  for (int i = 0; i < 6; i++)
    free(s[i].data);
  remove_dir();
}
END_TEST

/* A small checkpoint: config plus two tiny sections. */
static buf small_checkpoint(dua_trainer_config *c) {
  dua_trainer_config_init(c);
  c->seed = 0x0123456789abcdefull;
  static dua_ckpt_section s[2];
  memset(s, 0, sizeof s);
  static unsigned char payload[3] = {1, 2, 3};
  strcpy(s[0].name, "a");
  s[0].bytes = 3;
  s[0].data = payload;
  strcpy(s[1].name, "b");
  s[1].bytes = 0;
  s[1].data = payload;
  return build(c, s, 2, NULL);
}

/* Loads path expecting DUA_ERROR_CORRUPT_FILE and untouched outputs; returns the message. */
static const char *expect_corrupt(const char *path, const char *what) {
  static char err[512];
  dua_trainer_config c;
  memset(&c, 0x33, sizeof c);
  dua_ckpt_section *s = (dua_ckpt_section *)&c;
  int count = -7;
  err[0] = '\0';
  dua_status st = dua_checkpoint_load(path, &c, &s, &count, err, sizeof err);
  REQUIRE(st == DUA_ERROR_CORRUPT_FILE, "%s: load gave %d (%s), not DUA_ERROR_CORRUPT_FILE", what, (int)st,
          err);
  REQUIRE(s == (dua_ckpt_section *)&c && count == -7, "%s: outputs written on error", what);
  REQUIRE(strncmp(err, "checkpoint ", 11) == 0 && strlen(err) > 20 + strlen(path), "%s: message \"%s\"", what,
          err);
  return err;
}

START_TEST(test_ckpt_byte_flips) {
  make_dir();
  dua_trainer_config c;
  buf b = small_checkpoint(&c);
  char path[600], err[512];
  path_of(path, sizeof path, "flip.ckpt");
  /* the unmodified file loads */
  write_bytes(path, b.p, b.n);
  dua_trainer_config back;
  dua_ckpt_section *s;
  int count;
  ck_assert_msg(dua_checkpoint_load(path, &back, &s, &count, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_checkpoint_free(s, count);
  static const unsigned char masks[] = {0x01, 0x80, 0xff, 0x10};
  int refused = 0;
  for (size_t i = 0; i < b.n; i++)
    for (int m = 0; m < 4; m++) {
      b.p[i] ^= masks[m];
      write_bytes(path, b.p, b.n);
      char what[64];
      snprintf(what, sizeof what, "byte %zu ^ 0x%02x", i, masks[m]);
      expect_corrupt(path, what);
      refused++;
      b.p[i] ^= masks[m];
    }
  fprintf(stderr, "checkpoint of %zu bytes: %d single-byte flips, all refused\n", b.n, refused);
  free(b.p);
  remove_dir();
}
END_TEST

START_TEST(test_ckpt_truncations) {
  make_dir();
  dua_trainer_config c;
  buf b = small_checkpoint(&c);
  char path[600];
  path_of(path, sizeof path, "cut.ckpt");
  for (size_t len = 0; len < b.n; len++) {
    write_bytes(path, b.p, len);
    char what[64];
    snprintf(what, sizeof what, "truncated to %zu bytes", len);
    expect_corrupt(path, what);
  }
  /* one byte too many, and the checkpoint twice */
  unsigned char *longer = malloc(2 * b.n);
  ck_assert_ptr_nonnull(longer);
  memcpy(longer, b.p, b.n);
  memcpy(longer + b.n, b.p, b.n);
  write_bytes(path, longer, b.n + 1);
  expect_corrupt(path, "one byte appended");
  write_bytes(path, longer, 2 * b.n);
  expect_corrupt(path, "appended copy");
  fprintf(stderr, "checkpoint of %zu bytes: every truncation refused\n", b.n);
  free(longer);
  free(b.p);
  remove_dir();
}
END_TEST

/* Faults behind a valid checksum: only the structural checks can catch them. */
START_TEST(test_ckpt_structure) {
  make_dir();
  char path[600];
  path_of(path, sizeof path, "bad.ckpt");
  dua_trainer_config c;
  dua_trainer_config_init(&c);
  unsigned char data[16] = {0};
  dua_ckpt_section s[2];
  memset(s, 0, sizeof s);
  strcpy(s[0].name, "weights");
  s[0].bytes = 16;
  s[0].data = data;
  strcpy(s[1].name, "moments");
  s[1].bytes = 4;
  s[1].data = data;
  struct {
    const char *what, *expect;
    layout_opts o;
    int mutate; /* 0 none, 1 duplicate name, 2 unterminated name, 3 bytes after NUL, 4 empty name, 5 bad
                   config, 6 reserved, 7 huge size, 8 config with a wrong float */
  } cases[] = {
      {"wrong magic", "magic", {"DUACKPT2", 0, 0, 0}, 0},
      {"foreign file", "magic", {"\x89PNG\r\n\x1a\n", 0, 0, 0}, 0},
      {"wrong version", "version 2", {NULL, 2, 0, 0}, 0},
      {"version 0xffffffff", "version 4294967295", {NULL, 0xffffffffu, 0, 0}, 0},
      {"config size", "config size", {NULL, 0, CONFIG_BYTES - 4, 0}, 0},
      {"one section more than stored", "does not fit", {NULL, 0, 0, 1}, 0},
      {"one section less than stored", "checksum should end", {NULL, 0, 0, (uint32_t)-1}, 0},
      {"section count 2^32-1", "section count", {NULL, 0, 0, (uint32_t)-3}, 0},
      {"duplicate section names", "both named \"weights\"", {NULL, 0, 0, 0}, 1},
      {"unterminated name", "not NUL-terminated", {NULL, 0, 0, 0}, 2},
      {"bytes after the NUL", "after the name", {NULL, 0, 0, 0}, 3},
      {"empty name", "empty", {NULL, 0, 0, 0}, 4},
      {"invalid config", "seq_len", {NULL, 0, 0, 0}, 5},
      {"reserved config field", "reserved[3]", {NULL, 0, 0, 0}, 6},
      {"negative lr in the config", "lr", {NULL, 0, 0, 0}, 8},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    dua_trainer_config cc = c;
    dua_ckpt_section ss[2];
    memcpy(ss, s, sizeof ss);
    switch (cases[k].mutate) {
    case 1:
      strcpy(ss[1].name, "weights");
      break;
    case 2:
      memset(ss[1].name, 'x', DUA_CKPT_NAME_MAX);
      break;
    case 3:
      ss[1].name[DUA_CKPT_NAME_MAX - 1] = 'z';
      break;
    case 4:
      memset(ss[1].name, 0, DUA_CKPT_NAME_MAX);
      break;
    case 5:
      cc.seq_len = 4;
      break;
    case 6:
      cc.reserved[3] = 1;
      break;
    case 8:
      cc.lr = -cc.lr;
      break;
    default:
      break;
    }
    buf b = build(&cc, ss, 2, &cases[k].o);
    write_bytes(path, b.p, b.n);
    const char *msg = expect_corrupt(path, cases[k].what);
    ck_assert_msg(strstr(msg, cases[k].expect) != NULL, "%s: message \"%s\" lacks \"%s\"", cases[k].what, msg,
                  cases[k].expect);
    fprintf(stderr, "%-30s -> %s\n", cases[k].what, msg + strlen(path) + 13);
    free(b.p);
  }
  /* a section size near 2^64 must be refused before anything is allocated for it */
  buf b = build(&c, s, 2, NULL);
  size_t size_at = 8 + 4 + 4 + CONFIG_BYTES + 4 + DUA_CKPT_NAME_MAX;
  static const uint64_t bigs[] = {UINT64_MAX, 1ull << 62, 1ull << 40, 17};
  for (int k = 0; k < 4; k++) {
    for (int i = 0; i < 8; i++)
      b.p[size_at + i] = (unsigned char)(bigs[k] >> (8 * i));
    b.n -= 32;
    put_sha256(&b);
    write_bytes(path, b.p, b.n);
    const char *msg = expect_corrupt(path, "wrong section size");
    ck_assert_msg(bigs[k] == 17 || strstr(msg, "do not fit") != NULL, "%s", msg);
  }
  free(b.p);
  remove_dir();
}
END_TEST

START_TEST(test_ckpt_errors) {
  make_dir();
  char path[600], err[512] = "";
  path_of(path, sizeof path, "good.ckpt");
  dua_trainer_config c;
  dua_trainer_config_init(&c);
  unsigned char data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  dua_ckpt_section s[2];
  memset(s, 0, sizeof s);
  strcpy(s[0].name, "x");
  s[0].bytes = 8;
  s[0].data = data;
  strcpy(s[1].name, "y");
  s[1].bytes = 8;
  s[1].data = data;
  ck_assert_int_eq(dua_checkpoint_save(path, &c, s, 2, err, sizeof err), DUA_SUCCESS);
  size_t n0;
  unsigned char *before = read_bytes(path, &n0);
  /* refused saves leave the existing file alone */
  dua_trainer_config bad = c;
  bad.heads = 3;
  ck_assert_int_eq(dua_checkpoint_save(path, &bad, s, 2, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "heads") != NULL || strstr(err, "width") != NULL, "%s", err);
  strcpy(s[1].name, "x");
  ck_assert_int_eq(dua_checkpoint_save(path, &c, s, 2, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "\"x\"") != NULL, "%s", err);
  memset(s[1].name, 'q', DUA_CKPT_NAME_MAX);
  ck_assert_int_eq(dua_checkpoint_save(path, &c, s, 2, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "sections[1].name") != NULL, "%s", err);
  strcpy(s[1].name, "y");
  s[1].data = NULL;
  ck_assert_int_eq(dua_checkpoint_save(path, &c, s, 2, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  s[1].data = data;
  ck_assert_int_eq(dua_checkpoint_save(path, &c, s, -1, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_checkpoint_save(path, &c, NULL, 1, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_checkpoint_save(NULL, &c, s, 2, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_checkpoint_save(path, NULL, s, 2, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  size_t n1;
  unsigned char *after = read_bytes(path, &n1);
  ck_assert(n0 == n1 && memcmp(before, after, n0) == 0);
  free(before);
  free(after);
  /* I/O failures: a missing directory; a target that is a directory (the rename fails: no temp file left) */
  char missing[700];
  snprintf(missing, sizeof missing, "%s/no/such/dir/x.ckpt", dir);
  ck_assert_int_eq(dua_checkpoint_save(missing, &c, s, 2, err, sizeof err), DUA_ERROR_IO);
  char sub[700];
  path_of(sub, sizeof sub, "subdir");
  ck_assert_int_eq(mkdir(sub, 0755), 0);
  ck_assert_int_eq(dua_checkpoint_save(sub, &c, s, 2, err, sizeof err), DUA_ERROR_IO);
  /* loads that fail with DUA_ERROR_IO or refuse arguments */
  dua_trainer_config back;
  dua_ckpt_section *ls = NULL;
  int count = 0;
  ck_assert_int_eq(dua_checkpoint_load(missing, &back, &ls, &count, err, sizeof err), DUA_ERROR_IO);
  ck_assert_msg(strstr(err, missing) != NULL, "%s", err);
  ck_assert_int_eq(dua_checkpoint_load(sub, &back, &ls, &count, err, sizeof err), DUA_ERROR_IO);
  ck_assert_int_eq(dua_checkpoint_load(path, NULL, &ls, &count, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_checkpoint_load(path, &back, &ls, &count, NULL, 0),
                   DUA_SUCCESS); /* error may be NULL */
  dua_checkpoint_free(ls, count);
  remove_dir();
}
END_TEST

/* ---------------------------------------------------------------- routing files */

static int32_t tree_depth(int32_t seq_len, int32_t block, int32_t arity, int64_t *span) {
  int64_t nb = ((int64_t)seq_len + block - 1) / block, s = 1;
  int32_t d = 0;
  while (s < nb) {
    s *= arity;
    d++;
  }
  *span = s;
  return d;
}

START_TEST(test_routing_round_trip) {
  test_rng r = test_rng_make(200 + (uint64_t)_i);
  make_dir();
  dua_routing w = {test_rng_int(&r, 1, 6),
                   test_rng_int(&r, 1, 12),
                   test_rng_int(&r, 1, 20000),
                   test_rng_int(&r, 0, 1),
                   NULL,
                   0};
  w.head = calloc((size_t)w.layers * w.heads, sizeof *w.head);
  ck_assert_ptr_nonnull(w.head);
  for (int i = 0; i < w.layers * w.heads; i++) {
    dua_routing_head *e = &w.head[i];
    e->arity = test_rng_int(&r, 2, 7);
    e->block = 16 << test_rng_int(&r, 0, 4);
    int64_t span;
    int32_t D = tree_depth(w.seq_len, e->block, e->arity, &span);
    e->depth = test_rng_int(&r, 0, D);
    e->window = test_rng_int(&r, 0, 1) ? 0 : test_rng_int(&r, 1, 5000);
    e->sink = test_rng_int(&r, 0, 1) ? 0 : test_rng_int(&r, 1, 64);
    e->shift = test_rng_int(&r, 0, (int)span);
  }
  char path[600], err[512] = "";
  path_of(path, sizeof path, "routing.json");
  ck_assert_msg(dua_routing_save(path, &w, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_routing back;
  memset(&back, 0x55, sizeof back);
  ck_assert_msg(dua_routing_load(path, &back, err, sizeof err) == DUA_SUCCESS, "%s", err);
  ck_assert_int_eq(back.layers, w.layers);
  ck_assert_int_eq(back.heads, w.heads);
  ck_assert_int_eq(back.seq_len, w.seq_len);
  ck_assert_int_eq(back.causal, w.causal);
  ck_assert(memcmp(back.head, w.head, (size_t)w.layers * w.heads * sizeof *w.head) == 0);
  dua_routing_free(&back);
  ck_assert_ptr_null(back.head);
  ck_assert_int_eq(back.layers, 0);
  dua_routing_free(NULL);
  /* saving refuses what loading would refuse, and leaves the old file */
  w.head[w.layers * w.heads - 1].depth = 99;
  ck_assert_int_eq(dua_routing_save(path, &w, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  char want[64];
  snprintf(want, sizeof want, "routing[%d][%d].depth = 99", w.layers - 1, w.heads - 1);
  ck_assert_msg(strstr(err, want) != NULL, "%s", err);
  ck_assert_int_eq(dua_routing_load(path, &back, err, sizeof err), DUA_SUCCESS);
  dua_routing_free(&back);
  ck_assert_int_eq(dua_routing_save(NULL, &w, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_routing_save(path, NULL, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  char missing[700];
  snprintf(missing, sizeof missing, "%s/no/dir/r.json", dir);
  w.head[w.layers * w.heads - 1].depth = 0;
  ck_assert_int_eq(dua_routing_save(missing, &w, err, sizeof err), DUA_ERROR_IO);
  ck_assert_int_eq(dua_routing_load(missing, &back, err, sizeof err), DUA_ERROR_IO);
  ck_assert_int_eq(dua_routing_load(dir, &back, err, sizeof err), DUA_ERROR_IO);
  free(w.head);
  remove_dir();
}
END_TEST

/* Depth limits are D from integer arithmetic, exactly at powers of the arity. */
START_TEST(test_routing_depth_edges) {
  make_dir();
  char path[600], err[512];
  path_of(path, sizeof path, "edge.json");
  static const int32_t cases[][4] = {/* seq_len, block, arity, D */
                                     {4096, 16, 2, 8}, {4097, 16, 2, 9},    {144, 16, 3, 2},
                                     {145, 16, 3, 3},  {15625, 1, 5, 6},    {16, 16, 2, 0},
                                     {1, 256, 7, 0},   {243 * 16, 16, 3, 5}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    int32_t block = cases[k][1] == 1 ? 16 : cases[k][1];
    int32_t seq = cases[k][1] == 1 ? cases[k][0] * 16 : cases[k][0];
    for (int32_t depth = cases[k][3]; depth <= cases[k][3] + 1; depth++) {
      char text[512];
      snprintf(text, sizeof text,
               "{\"format\": \"dua-routing\", \"version\": 1, \"layers\": 1, \"heads\": 1, \"seq_len\": %d, "
               "\"causal\": 0, \"routing\": [[{\"depth\": %d, \"arity\": %d, \"block\": %d, \"window\": 0, "
               "\"sink\": 0, \"shift\": 0}]]}",
               (int)seq, (int)depth, (int)cases[k][2], (int)block);
      write_bytes(path, text, strlen(text));
      dua_routing r;
      dua_status st = dua_routing_load(path, &r, err, sizeof err);
      if (depth == cases[k][3]) {
        ck_assert_msg(st == DUA_SUCCESS, "seq_len %d block %d arity %d depth %d: %s", seq, block, cases[k][2],
                      depth, err);
        dua_routing_free(&r);
      } else {
        ck_assert_int_eq(st, DUA_ERROR_CORRUPT_FILE);
        char want[96];
        snprintf(want, sizeof want, "routing[0][0].depth = %d exceeds D = %d", depth, cases[k][3]);
        ck_assert_msg(strstr(err, want) != NULL, "%s", err);
      }
    }
  }
  remove_dir();
}
END_TEST

/* A valid file; each window value is unique, so a replacement can target one head. */
static const char base_json[] =
    "{\"format\": \"dua-routing\", \"version\": 1, \"layers\": 2, \"heads\": 2, \"seq_len\": 64, \"causal\": "
    "1,\n"
    " \"routing\": [\n"
    "  [{\"depth\": 0, \"arity\": 2, \"block\": 16, \"window\": 10, \"sink\": 0, \"shift\": 0},\n"
    "   {\"depth\": 1, \"arity\": 2, \"block\": 16, \"window\": 11, \"sink\": 1, \"shift\": 2}],\n"
    "  [{\"depth\": 2, \"arity\": 2, \"block\": 16, \"window\": 12, \"sink\": 0, \"shift\": 0},\n"
    "   {\"depth\": 2, \"arity\": 2, \"block\": 16, \"window\": 13, \"sink\": 4, \"shift\": 1}]]}\n";

typedef struct bad_json {
  const char *find, *replace; /* first occurrence in base_json; find NULL = replace is the whole file */
  const char *expect;         /* in the message */
} bad_json;

static const bad_json corpus[] = {
    {NULL, "", "empty file"},
    {NULL, "{", "truncated"},
    {NULL, "{\"format\": \"dua-routing\", \"version\": 1, \"layers\": 2, \"he", "truncated"},
    {"]]}\n", "]]", "truncated"},
    {"]]}\n", "]]}\nx", "trailing data"},
    {"]]}\n", "]]}{}", "trailing data"},
    {"]]}\n", "]]},", "trailing data"},
    {NULL, "[]", "not a JSON object"},
    {NULL, "null", "not a JSON object"},
    {NULL, "\"dua-routing\"", "not a JSON object"},
    {", \"causal\": 1", "", "missing the key \"causal\""},
    {"\"version\": 1,", "", "missing the key \"version\""},
    {"\"causal\": 1", "\"causal\": 1, \"comment\": \"hi\"", "unknown key \"comment\""},
    {"\"causal\": 1", "\"causal\": 1, \"layers\": 2", "the key \"layers\" twice"},
    {"\"dua-routing\"", "\"dua-routin\"", "format"},
    {"\"dua-routing\"", "7", "format"},
    {"\"version\": 1", "\"version\": 2", "version = 2"},
    {"\"version\": 1", "\"version\": \"1\"", "version is not a number"},
    {"\"layers\": 2", "\"layers\": 3", "routing is not an array of layers = 3"},
    {"\"layers\": 2", "\"layers\": 1", "routing is not an array of layers = 1"},
    {"\"layers\": 2", "\"layers\": 0", "layers = 0"},
    {"\"layers\": 2", "\"layers\": 1.5", "layers = 1.5"},
    {"\"layers\": 2", "\"layers\": -2", "layers = -2"},
    {"\"heads\": 2", "\"heads\": 3", "routing[0] is not an array of heads = 3"},
    {"\"heads\": 2", "\"heads\": 2e0, \"x\": 1", "unknown key \"x\""},
    {"\"seq_len\": 64", "\"seq_len\": 0", "seq_len = 0"},
    {"\"seq_len\": 64", "\"seq_len\": 1e10", "seq_len = 10000000000"},
    {"\"seq_len\": 64", "\"seq_len\": 2147483648", "seq_len = 2147483648"},
    {"\"causal\": 1", "\"causal\": 2", "causal = 2"},
    {"\"causal\": 1", "\"causal\": true", "causal is not a number"},
    {"\"causal\": 1", "\"causal\": null", "causal is not a number"},
    {NULL,
     "{\"format\": \"dua-routing\", \"version\": 1, \"layers\": 1, \"heads\": 1, \"seq_len\": 64, "
     "\"causal\": 1, "
     "\"routing\": {\"a\": 1}}",
     "routing is not an array"},
    {"{\"depth\": 2, \"arity\": 2, \"block\": 16, \"window\": 13",
     "{\"depth\": 3, \"arity\": 2, \"block\": 16, \"window\": 13", "routing[1][1].depth = 3 exceeds D = 2"},
    {"{\"depth\": 1, \"arity\": 2, \"block\": 16, \"window\": 11",
     "{\"depth\": -1, \"arity\": 2, \"block\": 16, \"window\": 11", "routing[0][1].depth = -1"},
    {"{\"depth\": 1, \"arity\": 2, \"block\": 16, \"window\": 11",
     "{\"depth\": 1.5, \"arity\": 2, \"block\": 16, \"window\": 11", "routing[0][1].depth = 1.5"},
    {"{\"depth\": 1, \"arity\": 2, \"block\": 16, \"window\": 11",
     "{\"depth\": \"1\", \"arity\": 2, \"block\": 16, \"window\": 11", "routing[0][1].depth is not a number"},
    {"{\"depth\": 1, \"arity\": 2, \"block\": 16, \"window\": 11",
     "{\"depth\": [1], \"arity\": 2, \"block\": 16, \"window\": 11", "routing[0][1].depth is not a number"},
    {"\"arity\": 2, \"block\": 16, \"window\": 12", "\"arity\": 1, \"block\": 16, \"window\": 12",
     "routing[1][0].arity = 1"},
    {"\"arity\": 2, \"block\": 16, \"window\": 12", "\"arity\": 0, \"block\": 16, \"window\": 12",
     "routing[1][0].arity = 0"},
    {"\"block\": 16, \"window\": 10", "\"block\": 48, \"window\": 10", "routing[0][0].block = 48"},
    {"\"block\": 16, \"window\": 10", "\"block\": 512, \"window\": 10", "routing[0][0].block = 512"},
    {"\"block\": 16, \"window\": 10", "\"block\": 8, \"window\": 10", "routing[0][0].block = 8"},
    {"\"window\": 13", "\"window\": -1", "routing[1][1].window = -1"},
    {"\"window\": 12, \"sink\": 0", "\"window\": 12, \"sink\": -2", "routing[1][0].sink = -2"},
    {"\"window\": 11, \"sink\": 1, \"shift\": 2", "\"window\": 11, \"sink\": 1, \"shift\": 5",
     "routing[0][1].shift = 5"},
    {"\"window\": 11, \"sink\": 1, \"shift\": 2", "\"window\": 11, \"sink\": 1, \"shift\": -1",
     "routing[0][1].shift = -1"},
    {"\"window\": 12, \"sink\": 0, \"shift\": 0}", "\"window\": 12, \"shift\": 0}",
     "routing[1][0] is missing the key \"sink\""},
    {"\"window\": 11, \"sink\": 1, \"shift\": 2}",
     "\"window\": 11, \"sink\": 1, \"shift\": 2, \"gate\": 0.5}",
     "routing[0][1] has an unknown key \"gate\""},
    {"\"window\": 11, \"sink\": 1, \"shift\": 2}", "\"window\": 11, \"sink\": 1, \"shift\": 2, \"sink\": 1}",
     "routing[0][1] has the key \"sink\" twice"},
    {"[{\"depth\": 0", "[[0], {\"depth\": 0", "routing[0] is not an array of heads = 2"},
    {"[{\"depth\": 0, \"arity\": 2, \"block\": 16, \"window\": 10, \"sink\": 0, \"shift\": 0},", "[7,",
     "routing[0][0] is not an object"},
    {"  [{\"depth\": 2, \"arity\": 2, \"block\": 16, \"window\": 12, \"sink\": 0, \"shift\": 0},\n"
     "   {\"depth\": 2, \"arity\": 2, \"block\": 16, \"window\": 13, \"sink\": 4, \"shift\": 1}]]}",
     "  {\"depth\": 2}]}", "routing[1] is not an array of heads = 2"},
    {"\"window\": 13", "\"window\": 13,", "syntax error"},
    {"\"window\": 13", "\"window\": 0x13", "syntax error"},
    {"\"window\": 13", "\"window\": NaN", "syntax error"},
    {"\"window\": 13", "'window': 13", "syntax error"},
};

START_TEST(test_routing_bad_files) {
  make_dir();
  char path[600], err[512] = "";
  path_of(path, sizeof path, "bad.json");
  /* the base itself is fine */
  write_bytes(path, base_json, strlen(base_json));
  dua_routing r;
  ck_assert_msg(dua_routing_load(path, &r, err, sizeof err) == DUA_SUCCESS, "%s", err);
  ck_assert_int_eq(r.head[3].sink, 4);
  dua_routing_free(&r);
  const int n = (int)(sizeof corpus / sizeof corpus[0]);
  for (int k = 0; k <= n; k++) {
    char text[4096];
    size_t len;
    if (k < n && corpus[k].find == NULL) {
      len = (size_t)snprintf(text, sizeof text, "%s", corpus[k].replace);
    } else if (k < n) {
      const char *at = strstr(base_json, corpus[k].find);
      ck_assert_msg(at != NULL, "corpus %d: \"%s\" not in the base", k, corpus[k].find);
      len = (size_t)snprintf(text, sizeof text, "%.*s%s%s", (int)(at - base_json), base_json,
                             corpus[k].replace, at + strlen(corpus[k].find));
    } else { /* a NUL byte inside */
      len = strlen(base_json);
      memcpy(text, base_json, len);
      text[len - 1] = '\0';
    }
    write_bytes(path, text, len);
    dua_routing out = {-1, -1, -1, -1, (dua_routing_head *)&out, 0};
    err[0] = '\0';
    dua_status st = dua_routing_load(path, &out, err, sizeof err);
    const char *expect = k < n ? corpus[k].expect : "NUL byte";
    ck_assert_msg(st == DUA_ERROR_CORRUPT_FILE, "corpus %d (%s): status %d (%s)", k, expect, (int)st, err);
    ck_assert_msg(out.layers == -1 && out.head == (dua_routing_head *)&out, "corpus %d: output written", k);
    ck_assert_msg(strstr(err, expect) != NULL, "corpus %d: message \"%s\" lacks \"%s\"", k, err, expect);
    ck_assert_msg(strstr(err, path) != NULL, "corpus %d: message \"%s\" does not name the file", k, err);
    fprintf(stderr, "routing corpus %2d: %s\n", k, err + strlen(path) + 15);
  }
  /* every truncation of the valid file */
  size_t total = strlen(base_json);
  for (size_t len = 0; len < total - 1; len++) { /* the last byte is a newline: dropping it is fine */
    write_bytes(path, base_json, len);
    dua_routing out = {0, 0, 0, 0, NULL, 0};
    dua_status st = dua_routing_load(path, &out, err, sizeof err);
    REQUIRE(st == DUA_ERROR_CORRUPT_FILE, "truncated to %zu bytes: status %d", len, (int)st);
  }
  /* too large: over 16 MiB, even of whitespace around a valid document */
  size_t big = (16u << 20) + 1;
  char *huge = malloc(big);
  ck_assert_ptr_nonnull(huge);
  memset(huge, ' ', big);
  memcpy(huge, base_json, strlen(base_json));
  write_bytes(path, huge, big);
  ck_assert_int_eq(dua_routing_load(path, &r, err, sizeof err), DUA_ERROR_CORRUPT_FILE);
  ck_assert_msg(strstr(err, "16 MiB") != NULL, "%s", err);
  write_bytes(path, huge, big - 1); /* exactly 16 MiB: allowed */
  ck_assert_msg(dua_routing_load(path, &r, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_routing_free(&r);
  free(huge);
  /* an arity whose subtree span p^D exceeds 2^30 */
  const char *wide =
      "{\"format\": \"dua-routing\", \"version\": 1, \"layers\": 1, \"heads\": 1, \"seq_len\": 1073741824, "
      "\"causal\": 0, \"routing\": [[{\"depth\": 0, \"arity\": 1048576, \"block\": 16, \"window\": 0, "
      "\"sink\": 0, \"shift\": 0}]]}";
  write_bytes(path, wide, strlen(wide));
  ck_assert_int_eq(dua_routing_load(path, &r, err, sizeof err), DUA_ERROR_CORRUPT_FILE);
  ck_assert_msg(strstr(err, "routing[0][0].arity = 1048576") != NULL, "%s", err);
  remove_dir();
}
END_TEST

int main(void) {
  Suite *s = suite_create("checkpoint_files");
  TCase *tc = tcase_create("checkpoint_files");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, test_ckpt_round_trip, 0, 4);
  tcase_add_test(tc, test_ckpt_byte_flips);
  tcase_add_test(tc, test_ckpt_truncations);
  tcase_add_test(tc, test_ckpt_structure);
  tcase_add_test(tc, test_ckpt_errors);
  tcase_add_loop_test(tc, test_routing_round_trip, 0, 8);
  tcase_add_test(tc, test_routing_depth_edges);
  tcase_add_test(tc, test_routing_bad_files);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
