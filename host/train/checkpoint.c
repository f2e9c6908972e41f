/* checkpoint.c: versioned binary checkpoints (checkpoint.h). Layout, all integers little-endian:
 *
 *   "DUACKPT1"  magic, 8 bytes
 *   u32         format version (1)
 *   u32         config bytes (CONFIG_BYTES for version 1)
 *   config      dua_trainer_config field by field in declaration order: int32 and float fields as 4
 *               bytes (floats by their IEEE-754 bits), seed as 8 bytes, then reserved[] (ctrl_hidden took
 *               reserved[0]'s place; the fields after reserved[] took its last six: the config is
 *               still CONFIG_BYTES long and older files read those as 0)
 *   u32         section count
 *   sections    name[24] (NUL-terminated, NUL-padded), u64 payload bytes, payload
 *   sha256      32 bytes over everything before it
 *
 * Loading reads the file once, streaming it through SHA-256; every length is checked against the bytes
 * the file still holds before anything is allocated for it, so a corrupt size cannot cause a huge
 * allocation. Saving writes a temporary file in the same directory, fsyncs it and renames it over path. */
#include "train/checkpoint.h"
#include "train/file_util.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CKPT_MAGIC "DUACKPT1"
#define CKPT_VERSION 1u
#define CKPT_MAX_SECTIONS 65536
#define SECTION_HEADER (DUA_CKPT_NAME_MAX + 8)

/* ---------------------------------------------------------------- config serialization */

enum { F_I32, F_F32, F_U64 };

typedef struct field {
  size_t offset;
  int kind;
} field;

#define I32(name)                                                                                            \
  { offsetof(dua_trainer_config, name), F_I32 }
#define F32(name)                                                                                            \
  { offsetof(dua_trainer_config, name), F_F32 }

static const field config_fields[] = {I32(task),
                                      I32(seq_len),
                                      I32(dyck_kinds),
                                      I32(dyck_max_depth),
                                      I32(test_size),
                                      I32(layers),
                                      I32(width),
                                      I32(heads),
                                      I32(mlp_ratio),
                                      I32(mode),
                                      I32(block),
                                      I32(arity),
                                      I32(window),
                                      I32(sink),
                                      I32(shift_alternate),
                                      F32(tau_start),
                                      F32(tau_end),
                                      F32(tau_frac),
                                      F32(hard_frac),
                                      F32(gate_init),
                                      F32(gate_lr_scale),
                                      F32(density_weight),
                                      F32(density_target),
                                      F32(skip_bias),
                                      I32(batch),
                                      I32(steps),
                                      I32(warmup),
                                      I32(decay),
                                      F32(lr),
                                      F32(lr_min),
                                      F32(weight_decay),
                                      F32(beta1),
                                      F32(beta2),
                                      F32(adam_eps),
                                      F32(grad_clip),
                                      {offsetof(dua_trainer_config, seed), F_U64},
                                      I32(eval_every),
                                      I32(ctrl_hidden)};

/* fields declared after reserved[] (taken from the end of the reserved space): serialized after it, so
 * the stream keeps the struct's order and older files (zeros there) still read */
static const field tail_fields[] = {I32(density_estimate), I32(router_input),   I32(balance_scope),
                                    I32(density_scope),    F32(balance_weight), F32(router_lr_scale)};

#define N_FIELDS (sizeof config_fields / sizeof config_fields[0])
#define N_TAIL (sizeof tail_fields / sizeof tail_fields[0])
#define N_RESERVED ((int)(sizeof((dua_trainer_config *)0)->reserved / sizeof(int32_t)))

static size_t config_bytes(void) {
  size_t n = 4 * (size_t)N_RESERVED + 4 * N_TAIL;
  for (size_t i = 0; i < N_FIELDS; i++)
    n += config_fields[i].kind == F_U64 ? 8 : 4;
  return n;
}

static void put_le(unsigned char *p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

static void config_serialize(const dua_trainer_config *c, unsigned char *out) {
  const unsigned char *base = (const unsigned char *)c;
  for (size_t i = 0; i < N_FIELDS; i++) {
    const void *src = base + config_fields[i].offset;
    if (config_fields[i].kind == F_U64) {
      uint64_t v;
      memcpy(&v, src, 8);
      put_le(out, v, 8);
      out += 8;
    } else { /* int32 and float: the 4 bytes of the value, as an unsigned 32-bit integer */
      uint32_t v;
      memcpy(&v, src, 4);
      put_le(out, v, 4);
      out += 4;
    }
  }
  for (int i = 0; i < N_RESERVED; i++, out += 4)
    put_le(out, (uint32_t)c->reserved[i], 4);
  for (size_t i = 0; i < N_TAIL; i++, out += 4) {
    uint32_t v;
    memcpy(&v, (const unsigned char *)c + tail_fields[i].offset, 4);
    put_le(out, v, 4);
  }
}

static void config_deserialize(const unsigned char *in, dua_trainer_config *c) {
  memset(c, 0, sizeof *c);
  unsigned char *base = (unsigned char *)c;
  for (size_t i = 0; i < N_FIELDS; i++) {
    void *dst = base + config_fields[i].offset;
    if (config_fields[i].kind == F_U64) {
      uint64_t v = get_le(in, 8);
      memcpy(dst, &v, 8);
      in += 8;
    } else {
      uint32_t v = (uint32_t)get_le(in, 4);
      memcpy(dst, &v, 4);
      in += 4;
    }
  }
  for (int i = 0; i < N_RESERVED; i++, in += 4) {
    uint32_t v = (uint32_t)get_le(in, 4);
    memcpy(&c->reserved[i], &v, 4);
  }
  for (size_t i = 0; i < N_TAIL; i++, in += 4) {
    uint32_t v = (uint32_t)get_le(in, 4);
    memcpy(base + tail_fields[i].offset, &v, 4);
  }
}

/* ---------------------------------------------------------------- helpers */

/* A name is valid if it is non-empty and NUL-terminated within DUA_CKPT_NAME_MAX bytes. */
static int name_ok(const char *name) {
  return name[0] != '\0' && memchr(name, '\0', DUA_CKPT_NAME_MAX) != NULL;
}

/* ---------------------------------------------------------------- save */

typedef struct writer {
  FILE *f;
  EVP_MD_CTX *md;
  int ok;
} writer;

static void wr(writer *w, const void *p, size_t n) {
  if (!w->ok || n == 0)
    return;
  if (fwrite(p, 1, n, w->f) != n || EVP_DigestUpdate(w->md, p, n) != 1)
    w->ok = 0;
}

dua_status dua_checkpoint_save(const char *path, const dua_trainer_config *config,
                               const dua_ckpt_section *sections, int count, char *error, size_t error_size) {
  if (path == NULL || *path == '\0')
    return dua_train_fail(error, error_size, DUA_ERROR_INVALID_ARGUMENT,
                          "dua_checkpoint_save: path is NULL or empty");
  if (strlen(path) > 4000)
    return dua_train_fail(error, error_size, DUA_ERROR_INVALID_ARGUMENT,
                          "dua_checkpoint_save: path is too long");
  char why[512];
  if (dua_trainer_config_validate(config, why, sizeof why) != DUA_SUCCESS)
    return dua_train_fail(error, error_size, DUA_ERROR_INVALID_ARGUMENT, "dua_checkpoint_save: %s", why);
  if (count < 0 || count > CKPT_MAX_SECTIONS || (count > 0 && sections == NULL))
    return dua_train_fail(error, error_size, DUA_ERROR_INVALID_ARGUMENT,
                          "dua_checkpoint_save: count = %d must be in [0, %d] with sections non-NULL", count,
                          CKPT_MAX_SECTIONS);
  for (int i = 0; i < count; i++) {
    if (!name_ok(sections[i].name))
      return dua_train_fail(
          error, error_size, DUA_ERROR_INVALID_ARGUMENT,
          "dua_checkpoint_save: sections[%d].name is empty or not NUL-terminated within %d bytes", i,
          DUA_CKPT_NAME_MAX);
    if (sections[i].bytes > 0 && sections[i].data == NULL)
      return dua_train_fail(error, error_size, DUA_ERROR_INVALID_ARGUMENT,
                            "dua_checkpoint_save: sections[%d] (\"%s\") has %llu bytes but data is NULL", i,
                            sections[i].name, (unsigned long long)sections[i].bytes);
    if (sections[i].bytes > (uint64_t)SIZE_MAX)
      return dua_train_fail(error, error_size, DUA_ERROR_INVALID_ARGUMENT,
                            "dua_checkpoint_save: sections[%d] is too large", i);
    for (int j = 0; j < i; j++)
      if (strcmp(sections[i].name, sections[j].name) == 0)
        return dua_train_fail(error, error_size, DUA_ERROR_INVALID_ARGUMENT,
                              "dua_checkpoint_save: sections[%d] and sections[%d] are both named \"%s\"", j,
                              i, sections[i].name);
  }

  char tmp[4100];
  snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path);
  int fd = mkstemp(tmp);
  if (fd < 0)
    return dua_train_fail(error, error_size, DUA_ERROR_IO,
                          "checkpoint %s: cannot create a temporary file: %s", path, strerror(errno));
  (void)fchmod(fd, 0644);
  writer w = {fdopen(fd, "wb"), EVP_MD_CTX_new(), 1};
  if (w.f == NULL || w.md == NULL || EVP_DigestInit_ex(w.md, EVP_sha256(), NULL) != 1) {
    if (w.f)
      fclose(w.f);
    else
      close(fd);
    EVP_MD_CTX_free(w.md);
    unlink(tmp);
    return dua_train_fail(error, error_size, DUA_ERROR_IO, "checkpoint %s: cannot start writing", path);
  }
  unsigned char head[16], cfg[512], u32[4], u64[8], digest[32];
  unsigned int dlen = 32;
  memcpy(head, CKPT_MAGIC, 8);
  put_le(head + 8, CKPT_VERSION, 4);
  put_le(head + 12, config_bytes(), 4);
  wr(&w, head, 16);
  config_serialize(config, cfg);
  wr(&w, cfg, config_bytes());
  put_le(u32, (uint32_t)count, 4);
  wr(&w, u32, 4);
  for (int i = 0; i < count; i++) {
    char name[DUA_CKPT_NAME_MAX];
    memset(name, 0, sizeof name);
    memcpy(name, sections[i].name, strlen(sections[i].name)); /* NUL-padded: no stray bytes in the file */
    wr(&w, name, sizeof name);
    put_le(u64, sections[i].bytes, 8);
    wr(&w, u64, 8);
    wr(&w, sections[i].data, (size_t)sections[i].bytes);
  }
  int saved_errno = errno;
  if (w.ok && EVP_DigestFinal_ex(w.md, digest, &dlen) == 1)
    w.ok = fwrite(digest, 1, 32, w.f) == 32;
  else
    w.ok = 0;
  w.ok = w.ok && fflush(w.f) == 0 && fsync(fileno(w.f)) == 0;
  if (!w.ok)
    saved_errno = errno;
  w.ok = (fclose(w.f) == 0) && w.ok;
  EVP_MD_CTX_free(w.md);
  if (!w.ok || rename(tmp, path) != 0) {
    if (w.ok)
      saved_errno = errno;
    unlink(tmp);
    return dua_train_fail(error, error_size, DUA_ERROR_IO, "checkpoint %s: write failed: %s", path,
                          strerror(saved_errno));
  }
  dua_sync_parent_dir(path);
  if (error != NULL && error_size > 0)
    error[0] = '\0';
  return DUA_SUCCESS;
}

/* ---------------------------------------------------------------- load */

typedef struct reader {
  FILE *f;
  EVP_MD_CTX *md;
  uint64_t left; /* bytes of the file not read yet */
} reader;

/* Reads n bytes (n <= r->left, checked by the caller) and hashes them; 0 on a read error. */
static int rd(reader *r, void *p, size_t n) {
  unsigned char *b = p;
  size_t done = 0;
  while (done < n) {
    size_t chunk = n - done < (1u << 24) ? n - done : (1u << 24);
    if (fread(b + done, 1, chunk, r->f) != chunk || EVP_DigestUpdate(r->md, b + done, chunk) != 1)
      return 0;
    done += chunk;
  }
  r->left -= n;
  return 1;
}

void dua_checkpoint_free(dua_ckpt_section *sections, int count) {
  if (sections == NULL)
    return;
  for (int i = 0; i < count; i++)
    free(sections[i].data);
  free(sections);
}

dua_status dua_checkpoint_load(const char *path, dua_trainer_config *config, dua_ckpt_section **sections_out,
                               int *count_out, char *error, size_t error_size) {
  if (path == NULL || config == NULL || sections_out == NULL || count_out == NULL)
    return dua_train_fail(error, error_size, DUA_ERROR_INVALID_ARGUMENT,
                          "dua_checkpoint_load: path, config, sections and count must be non-NULL");
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return dua_train_fail(error, error_size, DUA_ERROR_IO, "checkpoint %s: cannot open: %s", path,
                          strerror(errno));
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
    fclose(f);
    return dua_train_fail(error, error_size, DUA_ERROR_IO, "checkpoint %s: not a regular file", path);
  }
  reader r = {f, EVP_MD_CTX_new(), (uint64_t)sb.st_size};
  dua_ckpt_section *secs = NULL;
  int count = 0;
  dua_status st = DUA_ERROR_CORRUPT_FILE;
  char msg[384] = "";
  const size_t cbytes = config_bytes();
  unsigned char head[16], cfg[512], u32[4], sh[SECTION_HEADER], digest[32], stored[32];
  unsigned int dlen = 32;
  dua_trainer_config c;
#define CORRUPT(...)                                                                                         \
  do {                                                                                                       \
    snprintf(msg, sizeof msg, __VA_ARGS__);                                                                  \
    goto done;                                                                                               \
  } while (0)
#define READ(p, n, what)                                                                                     \
  do {                                                                                                       \
    if ((uint64_t)(n) > r.left)                                                                              \
      CORRUPT("truncated: %s needs %llu bytes, %llu left", what, (unsigned long long)(n),                    \
              (unsigned long long)r.left);                                                                   \
    if (!rd(&r, p, n)) {                                                                                     \
      st = DUA_ERROR_IO;                                                                                     \
      CORRUPT("read error in %s", what);                                                                     \
    }                                                                                                        \
  } while (0)

  if (r.md == NULL || EVP_DigestInit_ex(r.md, EVP_sha256(), NULL) != 1) {
    st = DUA_ERROR_OUT_OF_MEMORY;
    CORRUPT("cannot start SHA-256");
  }
  READ(head, 8, "the magic");
  if (memcmp(head, CKPT_MAGIC, 8) != 0)
    CORRUPT("bad magic (not a dua checkpoint)");
  READ(head + 8, 8, "the header");
  uint32_t version = (uint32_t)get_le(head + 8, 4), cb = (uint32_t)get_le(head + 12, 4);
  if (version != CKPT_VERSION)
    CORRUPT("format version %u is not the supported version %u", version, CKPT_VERSION);
  if (cb != cbytes)
    CORRUPT("config size %u bytes is not the %zu bytes of format version %u", cb, cbytes, CKPT_VERSION);
  READ(cfg, cbytes, "the config");
  config_deserialize(cfg, &c);
  READ(u32, 4, "the section count");
  uint32_t n = (uint32_t)get_le(u32, 4);
  if (n > CKPT_MAX_SECTIONS || (uint64_t)n * SECTION_HEADER + 32 > r.left)
    CORRUPT("section count %u does not fit the %llu bytes left", n, (unsigned long long)r.left);
  count = (int)n;
  if (count > 0 && (secs = calloc((size_t)count, sizeof *secs)) == NULL) {
    st = DUA_ERROR_OUT_OF_MEMORY;
    CORRUPT("out of memory for %d sections", count);
  }
  for (int i = 0; i < count; i++) {
    READ(sh, SECTION_HEADER, "a section header");
    memcpy(secs[i].name, sh, DUA_CKPT_NAME_MAX);
    if (!name_ok(secs[i].name))
      CORRUPT("section %d: name is empty or not NUL-terminated", i);
    for (size_t k = strlen(secs[i].name); k < DUA_CKPT_NAME_MAX; k++)
      if (secs[i].name[k] != '\0')
        CORRUPT("section %d (\"%s\"): bytes after the name's NUL are not zero", i, secs[i].name);
    for (int j = 0; j < i; j++)
      if (strcmp(secs[i].name, secs[j].name) == 0)
        CORRUPT("sections %d and %d are both named \"%s\"", j, i, secs[i].name);
    uint64_t bytes = get_le(sh + DUA_CKPT_NAME_MAX, 8);
    uint64_t need_after = (uint64_t)(count - 1 - i) * SECTION_HEADER + 32;
    if (r.left < need_after || bytes > r.left - need_after)
      CORRUPT("section %d (\"%s\"): %llu bytes do not fit the %llu bytes left", i, secs[i].name,
              (unsigned long long)bytes, (unsigned long long)r.left);
    secs[i].bytes = bytes;
    if ((secs[i].data = malloc(bytes > 0 ? (size_t)bytes : 1)) == NULL) {
      st = DUA_ERROR_OUT_OF_MEMORY;
      CORRUPT("out of memory for section \"%s\" (%llu bytes)", secs[i].name, (unsigned long long)bytes);
    }
    READ(secs[i].data, bytes, "a section payload");
  }
  if (r.left != 32)
    CORRUPT("%llu bytes where the 32-byte checksum should end the file", (unsigned long long)r.left);
  if (EVP_DigestFinal_ex(r.md, digest, &dlen) != 1) {
    st = DUA_ERROR_INTERNAL;
    CORRUPT("SHA-256 failed");
  }
  if (fread(stored, 1, 32, f) != 32) {
    st = DUA_ERROR_IO;
    CORRUPT("read error in the checksum");
  }
  if (memcmp(stored, digest, 32) != 0)
    CORRUPT("SHA-256 checksum mismatch (the file is corrupt)");
  {
    char why[320];
    if (dua_trainer_config_validate(&c, why, sizeof why) != DUA_SUCCESS)
      CORRUPT("invalid config: %s", why);
  }
  st = DUA_SUCCESS;
done:
#undef READ
#undef CORRUPT
  EVP_MD_CTX_free(r.md);
  fclose(f);
  if (st != DUA_SUCCESS) {
    dua_checkpoint_free(secs, count); /* calloc'ed: sections not reached hold NULL */
    return dua_train_fail(error, error_size, st, "checkpoint %s: %s", path, msg);
  }
  *config = c;
  *sections_out = secs;
  *count_out = count;
  if (error != NULL && error_size > 0)
    error[0] = '\0';
  return DUA_SUCCESS;
}

const dua_ckpt_section *dua_checkpoint_find(const dua_ckpt_section *sections, int count, const char *name) {
  if (sections == NULL || name == NULL)
    return NULL;
  for (int i = 0; i < count; i++)
    if (strncmp(sections[i].name, name, DUA_CKPT_NAME_MAX) == 0)
      return &sections[i];
  return NULL;
}
