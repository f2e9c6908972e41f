/* task_text.c: the text task's corpus (dua_train.h, "text corpus"): a UTF-8 file read whole into memory,
 * validated (regular file, strict UTF-8 per RFC 3629: no overlong forms, surrogates or code points above
 * U+10FFFF; the first invalid sequence is reported with its byte offset), hashed (SHA-256 of the whole
 * file) and split: the held-out region is the last floor(bytes / 10) bytes, moved back to the start of the
 * UTF-8 character the cut would split, the training region is the rest, each must hold seq_len + 1 bytes.
 * Training windows: seq_len + 1 bytes at an offset uniform over the training region (a 64-bit draw modulo
 * the number of offsets; the bias, below 2^-40 for any file that fits in memory, is irrelevant). Test
 * windows: test_size windows whose starts are spread evenly over the held-out region, first at its start
 * and last ending at the end of the file; consecutive starts are at least seq_len apart, so each byte is a
 * target at most once (the last target of one window may be the first token of the next).
 *
 * The checkpoint record (section "text_corpus", little-endian): u32 version (1), u64 file bytes, u64
 * training-region bytes, 32 bytes SHA-256, u32 path length (1..4095), the absolute path without a NUL.
 * A checkpoint's corpus must match the record's size, SHA-256 and split, whichever path it is read from;
 * the path can be replaced (the file moved) but not the file. */
#define _XOPEN_SOURCE 700 /* realpath (POSIX.1-2008 with the XSI extension, as glibc declares it) */

#include "train/file_util.h"
#include "train/task_internal.h"

#include <errno.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define RECORD_VERSION 1u
#define RECORD_FIXED (4 + 8 + 8 + 32 + 4)
#define PATH_MAX_BYTES 4095

struct dua_text_corpus {
  char *path; /* absolute (realpath), else as given */
  unsigned char *data;
  uint64_t bytes, train_bytes;
  unsigned char sha256[32];
  char names[256][5]; /* token names of the byte values */
};

static void hex(const unsigned char *d, char out[65]) {
  for (int i = 0; i < 32; i++)
    snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* Offset of the first byte of the first invalid UTF-8 sequence of p[0, n), or n when p is valid UTF-8. */
static uint64_t utf8_check(const unsigned char *p, uint64_t n, const char **why) {
  uint64_t i = 0;
  while (i < n) {
    const unsigned c = p[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    unsigned len, lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF)
      len = 2;
    else if (c >= 0xE0 && c <= 0xEF)
      len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4)
      len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else {
      *why = c <= 0xBF                ? "a continuation byte (0x80-0xBF) that no lead byte starts"
             : c == 0xC0 || c == 0xC1 ? "a lead byte that can only start an overlong encoding"
                                      : "a byte that never occurs in UTF-8 (0xF5-0xFF)";
      return i;
    }
    if (n - i < len) {
      *why = "a multi-byte sequence cut off by the end of the file";
      return i;
    }
    for (unsigned k = 1; k < len; k++) {
      const unsigned b = p[i + k];
      if (k == 1 && b >= 0x80 && b <= 0xBF && (b < lo || b > hi)) {
        *why = c == 0xED   ? "an encoded UTF-16 surrogate (U+D800-U+DFFF)"
               : c == 0xF4 ? "a code point above U+10FFFF"
                           : "an overlong encoding";
        return i;
      }
      if (b < 0x80 || b > 0xBF) {
        *why = "a lead byte without the continuation bytes it needs";
        return i;
      }
    }
    i += len;
  }
  return n;
}

void dua_text_corpus_destroy(dua_text_corpus *c) {
  if (c == NULL)
    return;
  free(c->path);
  free(c->data);
  free(c);
}

static dua_status read_file(const char *path, const dua_task_corpus *spec, unsigned char **data, uint64_t *n,
                            char *error, size_t error_size) {
  const int recorded = spec->path == NULL;
  const char *note = recorded ? " (the path the checkpoint records)" : "";
  const char *hint = recorded ? "; if the file moved, give its new path (dua-train --resume DIR --text FILE, "
                                "dua-run ... --text FILE)"
                              : "";
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return dua_train_fail(error, error_size, DUA_ERROR_IO, "text corpus %s%s: cannot open: %s%s", path, note,
                          strerror(errno), hint);
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
    fclose(f);
    return dua_train_fail(error, error_size, DUA_ERROR_IO, "text corpus %s%s: not a regular file", path,
                          note);
  }
  const uint64_t size = (uint64_t)sb.st_size;
  if (size > (uint64_t)SIZE_MAX - 1) {
    fclose(f);
    return dua_train_fail(error, error_size, DUA_ERROR_OUT_OF_MEMORY,
                          "text corpus %s: %llu bytes do not fit in memory", path, (unsigned long long)size);
  }
  unsigned char *d = malloc(size > 0 ? (size_t)size : 1);
  if (d == NULL) {
    fclose(f);
    return dua_train_fail(error, error_size, DUA_ERROR_OUT_OF_MEMORY,
                          "text corpus %s: out of memory for its %llu bytes", path, (unsigned long long)size);
  }
  size_t got = size > 0 ? fread(d, 1, (size_t)size, f) : 0;
  int extra = fgetc(f) != EOF; /* the file grew while being read */
  int bad = ferror(f);
  fclose(f);
  if (got != size || extra || bad) {
    free(d);
    return dua_train_fail(
        error, error_size, DUA_ERROR_IO,
        "text corpus %s: read %zu of its %llu bytes%s (read error, or the file changed while "
        "being read)",
        path, got, (unsigned long long)size, extra ? " and more" : "");
  }
  *data = d;
  *n = size;
  return DUA_SUCCESS;
}

dua_status dua_text_corpus_load(const dua_trainer_config *config, const dua_task_corpus *spec,
                                dua_text_corpus **out, char *error, size_t error_size) {
  *out = NULL;
  const char *path = spec->path != NULL ? spec->path : spec->recorded;
  dua_text_corpus *c = calloc(1, sizeof *c);
  if (c == NULL)
    return dua_train_fail(error, error_size, DUA_ERROR_OUT_OF_MEMORY, "text corpus: out of memory");
  dua_status st = read_file(path, spec, &c->data, &c->bytes, error, error_size);
  if (st != DUA_SUCCESS) {
    dua_text_corpus_destroy(c);
    return st;
  }
  unsigned int dlen = 32;
  if (EVP_Digest(c->data, (size_t)c->bytes, c->sha256, &dlen, EVP_sha256(), NULL) != 1) {
    dua_text_corpus_destroy(c);
    return dua_train_fail(error, error_size, DUA_ERROR_INTERNAL, "text corpus %s: SHA-256 failed", path);
  }
  char have[65], want[65];
  hex(c->sha256, have);
  if (spec->verify && (c->bytes != spec->bytes || memcmp(c->sha256, spec->sha256, 32) != 0)) {
    hex(spec->sha256, want);
    st = dua_train_fail(error, error_size, DUA_ERROR_INVALID_ARGUMENT,
                        "text corpus %s is not the file the checkpoint was trained on: it has %llu bytes, "
                        "SHA-256 %s; the checkpoint records %s with %llu bytes, SHA-256 %s",
                        path, (unsigned long long)c->bytes, have, spec->recorded[0] ? spec->recorded : "?",
                        (unsigned long long)spec->bytes, want);
    dua_text_corpus_destroy(c);
    return st;
  }
  const char *why = "";
  const uint64_t bad = utf8_check(c->data, c->bytes, &why);
  if (bad < c->bytes) {
    char shown[40] = "";
    for (uint64_t i = bad; i < c->bytes && i < bad + 4; i++)
      snprintf(shown + strlen(shown), sizeof shown - strlen(shown), "%s0x%02X", i > bad ? " " : "",
               c->data[i]);
    st = dua_train_fail(error, error_size, DUA_ERROR_INVALID_ARGUMENT,
                        "text corpus %s is not valid UTF-8: byte offset %llu (bytes %s%s): %s", path,
                        (unsigned long long)bad, shown, c->bytes - bad > 4 ? " ..." : "", why);
    dua_text_corpus_destroy(c);
    return st;
  }
  /* split: the last tenth held out, its start moved back to a character start */
  const uint64_t S = (uint64_t)config->seq_len;
  c->train_bytes = c->bytes - c->bytes / 10;
  while (c->train_bytes > 0 && c->train_bytes < c->bytes && (c->data[c->train_bytes] & 0xC0) == 0x80)
    c->train_bytes--;
  const uint64_t held = c->bytes - c->train_bytes;
  if (c->train_bytes < S + 1 || held < S + 1) {
    st = dua_train_fail(
        error, error_size, DUA_ERROR_INVALID_ARGUMENT,
        "text corpus %s: %llu bytes is too small for config.seq_len = %d: the training region "
        "(%llu bytes) and the held-out region (the last tenth, %llu bytes) must each hold "
        "seq_len + 1 = %llu bytes; a file of 10 * (seq_len + 1) = %llu bytes or more is enough",
        path, (unsigned long long)c->bytes, (int)S, (unsigned long long)c->train_bytes,
        (unsigned long long)held, (unsigned long long)(S + 1), (unsigned long long)(10 * (S + 1)));
    dua_text_corpus_destroy(c);
    return st;
  }
  const uint64_t fit = (held - 1) / S; /* windows whose targets are disjoint */
  if ((uint64_t)config->test_size > fit) {
    st = dua_train_fail(
        error, error_size, DUA_ERROR_INVALID_ARGUMENT,
        "config.test_size = %d: the held-out region of text corpus %s (its last %llu bytes) holds "
        "at most %llu test windows of seq_len %d that score each byte once; lower test_size "
        "to %llu or use a larger corpus",
        (int)config->test_size, path, (unsigned long long)held, (unsigned long long)fit, (int)S,
        (unsigned long long)fit);
    dua_text_corpus_destroy(c);
    return st;
  }
  if (spec->verify && c->train_bytes != spec->train_bytes) {
    st = dua_train_fail(
        error, error_size, DUA_ERROR_INVALID_ARGUMENT,
        "text corpus %s: this version of dua splits it at byte %llu, the checkpoint was trained "
        "with the split at %llu",
        path, (unsigned long long)c->train_bytes, (unsigned long long)spec->train_bytes);
    dua_text_corpus_destroy(c);
    return st;
  }
  char *abs = realpath(path, NULL);
  c->path = abs ? abs : strdup(path);
  if (c->path == NULL || strlen(c->path) > PATH_MAX_BYTES) {
    st = dua_train_fail(error, error_size, c->path ? DUA_ERROR_INVALID_ARGUMENT : DUA_ERROR_OUT_OF_MEMORY,
                        "text corpus %s: the path is longer than %d bytes", path, PATH_MAX_BYTES);
    dua_text_corpus_destroy(c);
    return st;
  }
  for (int b = 0; b < 256; b++) {
    if (b == '\\')
      snprintf(c->names[b], sizeof c->names[b], "\\\\");
    else if (b == '\n')
      snprintf(c->names[b], sizeof c->names[b], "\\n");
    else if (b == '\t')
      snprintf(c->names[b], sizeof c->names[b], "\\t");
    else if (b == '\r')
      snprintf(c->names[b], sizeof c->names[b], "\\r");
    else if (b >= 0x20 && b < 0x7f)
      snprintf(c->names[b], sizeof c->names[b], "%c", b);
    else
      snprintf(c->names[b], sizeof c->names[b], "\\x%02X", b);
  }
  *out = c;
  return DUA_SUCCESS;
}

const char *dua_text_token_name(const dua_text_corpus *c, int32_t id) {
  return id >= 0 && id < 256 ? c->names[id] : "?";
}

static void window(const dua_text_corpus *c, uint64_t at, int32_t S, int32_t *tokens, int32_t *targets) {
  const unsigned char *p = c->data + at;
  for (int32_t t = 0; t < S; t++) {
    tokens[t] = p[t];
    targets[t] = p[t + 1];
  }
}

void dua_text_train_window(const dua_text_corpus *c, int32_t S, dua_task_rng *r, int32_t *tokens,
                           int32_t *targets) {
  const uint64_t starts = c->train_bytes - (uint64_t)S; /* offsets 0 .. train_bytes - S - 1 */
  window(c, dua_task_rng_next(r) % starts, S, tokens, targets);
}

void dua_text_test_window(const dua_text_corpus *c, int32_t S, int32_t i, int32_t n, int32_t *tokens,
                          int32_t *targets) {
  const uint64_t span = c->bytes - c->train_bytes - (uint64_t)S - 1; /* last start - first start */
  const uint64_t at = n > 1 ? (uint64_t)i * span / (uint64_t)(n - 1) : 0;
  window(c, c->train_bytes + at, S, tokens, targets);
}

void dua_text_info(const dua_text_corpus *c, dua_text_corpus_info *info) {
  memset(info, 0, sizeof *info);
  info->path = c->path;
  info->bytes = c->bytes;
  info->train_bytes = c->train_bytes;
  info->heldout_bytes = c->bytes - c->train_bytes;
  memcpy(info->sha256, c->sha256, 32);
}

/* ---------------------------------------------------------------- checkpoint record */

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

dua_status dua_text_record(const dua_text_corpus *c, void **data, uint64_t *bytes) {
  const size_t len = strlen(c->path), n = RECORD_FIXED + len;
  unsigned char *p = malloc(n);
  if (p == NULL)
    return DUA_ERROR_OUT_OF_MEMORY;
  put_le(p, RECORD_VERSION, 4);
  put_le(p + 4, c->bytes, 8);
  put_le(p + 12, c->train_bytes, 8);
  memcpy(p + 20, c->sha256, 32);
  put_le(p + 52, len, 4);
  memcpy(p + RECORD_FIXED, c->path, len);
  *data = p;
  *bytes = n;
  return DUA_SUCCESS;
}

dua_status dua_task_corpus_from_record(const dua_trainer_config *config, const void *data, uint64_t bytes,
                                       const char *path_override, dua_task_corpus *corpus, char *error,
                                       size_t error_size) {
  memset(corpus, 0, sizeof *corpus);
  const char *sec = "checkpoint section \"" DUA_TASK_CORPUS_SECTION "\"";
  if (config->task != DUA_TASK_TEXT) {
    if (data != NULL)
      return dua_train_fail(error, error_size, DUA_ERROR_CORRUPT_FILE,
                            "%s in a checkpoint of task %s, which reads no corpus", sec,
                            dua_task_kind_name(config->task));
    if (path_override != NULL)
      return dua_train_fail(
          error, error_size, DUA_ERROR_INVALID_ARGUMENT,
          "a text corpus (%s) was given, but the checkpoint's task %s reads none (--text is for "
          "task text)",
          path_override, dua_task_kind_name(config->task));
    return DUA_SUCCESS;
  }
  if (data == NULL)
    return dua_train_fail(error, error_size, DUA_ERROR_CORRUPT_FILE,
                          "%s is missing: a text checkpoint records its corpus", sec);
  const unsigned char *p = data;
  if (bytes < RECORD_FIXED)
    return dua_train_fail(error, error_size, DUA_ERROR_CORRUPT_FILE, "%s: %llu bytes, at least %d expected",
                          sec, (unsigned long long)bytes, RECORD_FIXED);
  const uint64_t version = get_le(p, 4), len = get_le(p + 52, 4);
  if (version != RECORD_VERSION)
    return dua_train_fail(error, error_size, DUA_ERROR_CORRUPT_FILE, "%s: version %llu is not %u", sec,
                          (unsigned long long)version, RECORD_VERSION);
  if (len < 1 || len > PATH_MAX_BYTES || bytes != RECORD_FIXED + len)
    return dua_train_fail(error, error_size, DUA_ERROR_CORRUPT_FILE,
                          "%s: path length %llu does not fit its %llu bytes (1..%d)", sec,
                          (unsigned long long)len, (unsigned long long)bytes, PATH_MAX_BYTES);
  if (memchr(p + RECORD_FIXED, '\0', (size_t)len) != NULL)
    return dua_train_fail(error, error_size, DUA_ERROR_CORRUPT_FILE, "%s: the path holds a NUL byte", sec);
  corpus->bytes = get_le(p + 4, 8);
  corpus->train_bytes = get_le(p + 12, 8);
  if (corpus->train_bytes == 0 || corpus->train_bytes >= corpus->bytes)
    return dua_train_fail(error, error_size, DUA_ERROR_CORRUPT_FILE,
                          "%s: training region of %llu bytes in a file of %llu bytes", sec,
                          (unsigned long long)corpus->train_bytes, (unsigned long long)corpus->bytes);
  memcpy(corpus->sha256, p + 20, 32);
  memcpy(corpus->recorded, p + RECORD_FIXED, (size_t)len);
  corpus->recorded[len] = '\0';
  corpus->path = path_override; /* NULL: the recorded path */
  corpus->verify = 1;
  return DUA_SUCCESS;
}
