/* routing_file.c: routing files (dua_train.h), the JSON the trainer writes and the inference side reads:
 *
 *   {"format": "dua-routing", "version": 1, "layers": L, "heads": H, "seq_len": S, "causal": 0|1,
 *    "routing": [[{"depth": d, "arity": p, "block": b, "window": w, "sink": s, "shift": t}, ...H], ...L]}
 *   plus, for a content-routed model only, "tree": "content" (absent = the positional tree): the depths
 *   then apply to the paths the checkpoint's router computes (the router weights stay in the checkpoint).
 *
 * Loading is strict: the file must be at most 16 MiB of JSON with exactly these keys (no duplicates),
 * integer values that fit int32, arrays of exactly L and H entries, and every head valid for dua_layout:
 * arity >= 2, block a power of two in 16..256, depth in [0, D] with D the smallest d with p^d >= ceil(S /
 * b) (integer arithmetic), p^D <= 2^30, window and sink >= 0, shift in [0, p^D]. Anything else is
 * DUA_ERROR_CORRUPT_FILE with a message naming the entry ("routing[1][3].depth = 9 exceeds D = 3").
 * Saving validates the same rules (DUA_ERROR_INVALID_ARGUMENT), writes a temporary file in the same
 * directory, fsyncs it and renames it over the path. */
#include "dua_train.h"
#include "train/file_util.h"

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

#define ROUTING_FORMAT "dua-routing"
#define ROUTING_VERSION 1
#define ROUTING_MAX_FILE (16u << 20)
#define ROUTING_MAX_SPAN (1ll << 30)
#define ROUTING_MAX_ENTRIES (1ll << 22) /* layers * heads */

/* ---------------------------------------------------------------- validation (save and load) */

/* Checks the top-level fields; 0 if fine, else writes why. */
static int check_top(const dua_routing *r, char *why, size_t n) {
  if (r->layers < 1 || r->heads < 1 || (long long)r->layers * r->heads > ROUTING_MAX_ENTRIES) {
    snprintf(why, n, "layers = %d and heads = %d must be >= 1 with layers * heads <= %lld", (int)r->layers,
             (int)r->heads, ROUTING_MAX_ENTRIES);
    return -1;
  }
  if (r->seq_len < 1) {
    snprintf(why, n, "seq_len = %d must be >= 1", (int)r->seq_len);
    return -1;
  }
  if (r->causal != 0 && r->causal != 1) {
    snprintf(why, n, "causal = %d must be 0 or 1", (int)r->causal);
    return -1;
  }
  return 0;
}

/* Checks one head; 0 if fine, else writes why naming routing[l][h].field. */
static int check_head(const dua_routing_head *e, int32_t seq_len, int l, int h, char *why, size_t n) {
  if (e->arity < 2) {
    snprintf(why, n, "routing[%d][%d].arity = %d must be >= 2", l, h, (int)e->arity);
    return -1;
  }
  int32_t b = e->block;
  if (b != 16 && b != 32 && b != 64 && b != 128 && b != 256) {
    snprintf(why, n, "routing[%d][%d].block = %d must be a power of two in [16, 256]", l, h, (int)b);
    return -1;
  }
  long long nb = ((long long)seq_len + b - 1) / b, span = 1;
  int32_t D = 0;
  while (span < nb) { /* span < nb <= 2^27 and arity < 2^31 before the product: no overflow */
    span *= e->arity;
    D++;
  }
  if (span > ROUTING_MAX_SPAN) {
    snprintf(why, n, "routing[%d][%d].arity = %d gives a subtree span p^D = %lld above 2^30 for %lld blocks",
             l, h, (int)e->arity, span, nb);
    return -1;
  }
  if (e->depth < 0) {
    snprintf(why, n, "routing[%d][%d].depth = %d must be >= 0", l, h, (int)e->depth);
    return -1;
  }
  if (e->depth > D) {
    snprintf(why, n,
             "routing[%d][%d].depth = %d exceeds D = %d (seq_len %d, block %d, arity %d: %lld blocks)", l, h,
             (int)e->depth, (int)D, (int)seq_len, (int)b, (int)e->arity, nb);
    return -1;
  }
  if (e->window < 0) {
    snprintf(why, n, "routing[%d][%d].window = %d must be >= 0", l, h, (int)e->window);
    return -1;
  }
  if (e->sink < 0) {
    snprintf(why, n, "routing[%d][%d].sink = %d must be >= 0", l, h, (int)e->sink);
    return -1;
  }
  if (e->shift < 0 || e->shift > span) {
    snprintf(why, n, "routing[%d][%d].shift = %d must be in [0, %lld] (p^D)", l, h, (int)e->shift, span);
    return -1;
  }
  return 0;
}

static int check_all(const dua_routing *r, char *why, size_t n) {
  if (check_top(r, why, n) != 0)
    return -1;
  for (int l = 0; l < r->layers; l++)
    for (int h = 0; h < r->heads; h++)
      if (check_head(&r->head[(size_t)l * r->heads + h], r->seq_len, l, h, why, n) != 0)
        return -1;
  return 0;
}

/* ---------------------------------------------------------------- save */

dua_status dua_routing_save(const char *path, const dua_routing *routing, char *error, size_t error_size) {
  char why[320];
  if (path == NULL || *path == '\0' || strlen(path) > 4000)
    return dua_train_fail(error, error_size, DUA_ERROR_INVALID_ARGUMENT,
                          "dua_routing_save: path is NULL, empty or too long");
  if (routing == NULL || routing->head == NULL)
    return dua_train_fail(error, error_size, DUA_ERROR_INVALID_ARGUMENT,
                          "dua_routing_save: routing or routing->head is NULL");
  if (check_all(routing, why, sizeof why) != 0)
    return dua_train_fail(error, error_size, DUA_ERROR_INVALID_ARGUMENT, "dua_routing_save: %s", why);

  char tmp[4100];
  snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path);
  int fd = mkstemp(tmp);
  if (fd < 0)
    return dua_train_fail(error, error_size, DUA_ERROR_IO,
                          "routing file %s: cannot create a temporary file: %s", path, strerror(errno));
  (void)fchmod(fd, 0644);
  FILE *f = fdopen(fd, "w");
  if (f == NULL) {
    close(fd);
    unlink(tmp);
    return dua_train_fail(error, error_size, DUA_ERROR_IO, "routing file %s: cannot write: %s", path,
                          strerror(errno));
  }
  fprintf(f,
          "{\n  \"format\": \"%s\",\n  \"version\": %d,\n  \"layers\": %d,\n  \"heads\": %d,\n"
          "  \"seq_len\": %d,\n  \"causal\": %d,\n%s  \"routing\": [\n",
          ROUTING_FORMAT, ROUTING_VERSION, (int)routing->layers, (int)routing->heads, (int)routing->seq_len,
          (int)routing->causal, routing->content ? "  \"tree\": \"content\",\n" : "");
  for (int l = 0; l < routing->layers; l++) {
    fprintf(f, "    [\n");
    for (int h = 0; h < routing->heads; h++) {
      const dua_routing_head *e = &routing->head[(size_t)l * routing->heads + h];
      fprintf(f,
              "      {\"depth\": %d, \"arity\": %d, \"block\": %d, \"window\": %d, \"sink\": %d, \"shift\": "
              "%d}%s\n",
              (int)e->depth, (int)e->arity, (int)e->block, (int)e->window, (int)e->sink, (int)e->shift,
              h + 1 < routing->heads ? "," : "");
    }
    fprintf(f, "    ]%s\n", l + 1 < routing->layers ? "," : "");
  }
  fprintf(f, "  ]\n}\n");
  int ok = !ferror(f) && fflush(f) == 0 && fsync(fileno(f)) == 0;
  int saved_errno = errno;
  ok = (fclose(f) == 0) && ok;
  if (!ok || rename(tmp, path) != 0) {
    if (ok)
      saved_errno = errno;
    unlink(tmp);
    return dua_train_fail(error, error_size, DUA_ERROR_IO, "routing file %s: write failed: %s", path,
                          strerror(saved_errno));
  }
  dua_sync_parent_dir(path);
  if (error != NULL && error_size > 0)
    error[0] = '\0';
  return DUA_SUCCESS;
}

/* ---------------------------------------------------------------- load */

/* Every key of object obj must be in keys[0..n) and appear once; all of them must be present. 0 if so,
 * else writes why (prefixed with where). */
static int check_keys(const cJSON *obj, const char *const *keys, int n, const char *where, char *why,
                      size_t size) {
  int seen[8] = {0};
  const cJSON *it;
  cJSON_ArrayForEach(it, obj) {
    int k = 0;
    while (k < n && strcmp(it->string, keys[k]) != 0)
      k++;
    if (k == n) {
      snprintf(why, size, "%s has an unknown key \"%.64s\"", where, it->string);
      return -1;
    }
    if (seen[k]++) {
      snprintf(why, size, "%s has the key \"%s\" twice", where, keys[k]);
      return -1;
    }
  }
  for (int k = 0; k < n; k++)
    if (!seen[k]) {
      snprintf(why, size, "%s is missing the key \"%s\"", where, keys[k]);
      return -1;
    }
  return 0;
}

/* obj[key] as an int32; 0 if it is a number with an integral value in int32 range, else writes why. */
static int get_int(const cJSON *obj, const char *key, const char *where, int32_t *out, char *why,
                   size_t size) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!cJSON_IsNumber(it)) {
    snprintf(why, size, "%s%s is not a number", where, key);
    return -1;
  }
  double v = it->valuedouble;
  if (!(v >= -2147483648.0 && v <= 2147483647.0) || v != floor(v)) {
    snprintf(why, size, "%s%s = %.17g is not an int32 integer", where, key, v);
    return -1;
  }
  *out = (int32_t)v;
  return 0;
}

/* 1 if text ends inside a string or with an object or array still open (a truncated document). */
static int unclosed(const char *text, size_t size) {
  long depth = 0;
  int in_string = 0;
  for (size_t i = 0; i < size; i++) {
    char ch = text[i];
    if (in_string) {
      if (ch == '\\')
        i++;
      else if (ch == '"')
        in_string = 0;
    } else if (ch == '"') {
      in_string = 1;
    } else if (ch == '{' || ch == '[') {
      depth++;
    } else if (ch == '}' || ch == ']') {
      depth--;
    }
  }
  return in_string || depth > 0;
}

/* Reads the whole file (at most ROUTING_MAX_FILE bytes) NUL-terminated. */
static dua_status read_file(const char *path, char **text, size_t *size, char *why, size_t n) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    snprintf(why, n, "cannot open: %s", strerror(errno));
    return DUA_ERROR_IO;
  }
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
    fclose(f);
    snprintf(why, n, "not a regular file");
    return DUA_ERROR_IO;
  }
  if (sb.st_size > (off_t)ROUTING_MAX_FILE) {
    fclose(f);
    snprintf(why, n, "%lld bytes is more than the %u-byte (16 MiB) limit", (long long)sb.st_size,
             ROUTING_MAX_FILE);
    return DUA_ERROR_CORRUPT_FILE;
  }
  char *buf = malloc((size_t)sb.st_size + 1);
  if (buf == NULL) {
    fclose(f);
    snprintf(why, n, "out of memory");
    return DUA_ERROR_OUT_OF_MEMORY;
  }
  size_t got = fread(buf, 1, (size_t)sb.st_size, f);
  int err = ferror(f), more = fgetc(f) != EOF;
  fclose(f);
  if (err || got != (size_t)sb.st_size || more) {
    free(buf);
    snprintf(why, n, "read error (or the file changed while being read)");
    return DUA_ERROR_IO;
  }
  buf[got] = '\0';
  *text = buf;
  *size = got;
  return DUA_SUCCESS;
}

dua_status dua_routing_load(const char *path, dua_routing *routing, char *error, size_t error_size) {
  static const char *const top_keys[] = {"format",  "version", "layers",  "heads",
                                         "seq_len", "causal",  "routing", "tree"};
  static const char *const head_keys[] = {"depth", "arity", "block", "window", "sink", "shift"};
  if (path == NULL || routing == NULL)
    return dua_train_fail(error, error_size, DUA_ERROR_INVALID_ARGUMENT,
                          "dua_routing_load: path and routing must be non-NULL");
  char why[400] = "";
  char *text = NULL;
  size_t size = 0;
  cJSON *root = NULL;
  dua_routing r = {0, 0, 0, 0, NULL, 0};
  dua_status st = read_file(path, &text, &size, why, sizeof why);
  if (st != DUA_SUCCESS)
    goto done;
  st = DUA_ERROR_CORRUPT_FILE;
  if (size == 0) {
    snprintf(why, sizeof why, "empty file");
    goto done;
  }
  if (strlen(text) != size) {
    snprintf(why, sizeof why, "NUL byte at offset %zu", strlen(text));
    goto done;
  }
  const char *end = NULL;
  root = cJSON_ParseWithLengthOpts(text, size + 1, &end, 1); /* the +1 lets cJSON see the final NUL */
  if (root == NULL) {
    size_t off = end && end >= text && end <= text + size ? (size_t)(end - text) : 0;
    int line = 1;
    for (size_t i = 0; i < off; i++)
      line += text[i] == '\n';
    snprintf(why, sizeof why, "not valid JSON at byte %zu (line %d): %s", off, line,
             off >= size || unclosed(text, size) ? "truncated (a string, object or array is not closed)"
                                                 : "syntax error or trailing data");
    goto done;
  }
  if (!cJSON_IsObject(root)) {
    snprintf(why, sizeof why, "the top level is not a JSON object");
    goto done;
  }
  const cJSON *tree = cJSON_GetObjectItemCaseSensitive(root, "tree");
  if (check_keys(root, top_keys, tree ? 8 : 7, "the top-level object", why, sizeof why) != 0)
    goto done;
  if (tree) {
    if (!cJSON_IsString(tree) || strcmp(tree->valuestring, "content") != 0) {
      snprintf(why, sizeof why, "tree is not \"content\" (the only value allowed; absent = positional)");
      goto done;
    }
    r.content = 1;
  }
  const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
  if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, ROUTING_FORMAT) != 0) {
    snprintf(why, sizeof why, "format is not \"%s\"", ROUTING_FORMAT);
    goto done;
  }
  int32_t version;
  if (get_int(root, "version", "", &version, why, sizeof why) != 0)
    goto done;
  if (version != ROUTING_VERSION) {
    snprintf(why, sizeof why, "version = %d is not the supported version %d", (int)version, ROUTING_VERSION);
    goto done;
  }
  if (get_int(root, "layers", "", &r.layers, why, sizeof why) != 0 ||
      get_int(root, "heads", "", &r.heads, why, sizeof why) != 0 ||
      get_int(root, "seq_len", "", &r.seq_len, why, sizeof why) != 0 ||
      get_int(root, "causal", "", &r.causal, why, sizeof why) != 0)
    goto done;
  if (check_top(&r, why, sizeof why) != 0)
    goto done;
  const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "routing");
  if (!cJSON_IsArray(layers) || cJSON_GetArraySize(layers) != r.layers) {
    snprintf(why, sizeof why, "routing is not an array of layers = %d entries", (int)r.layers);
    goto done;
  }
  const cJSON *layer;
  int l = 0;
  cJSON_ArrayForEach(layer, layers) { /* sizes before the allocation: it is bounded by the file */
    if (!cJSON_IsArray(layer) || cJSON_GetArraySize(layer) != r.heads) {
      snprintf(why, sizeof why, "routing[%d] is not an array of heads = %d entries", l, (int)r.heads);
      goto done;
    }
    l++;
  }
  r.head = calloc((size_t)r.layers * (size_t)r.heads, sizeof *r.head);
  if (r.head == NULL) {
    st = DUA_ERROR_OUT_OF_MEMORY;
    snprintf(why, sizeof why, "out of memory");
    goto done;
  }
  l = 0;
  cJSON_ArrayForEach(layer, layers) {
    const cJSON *item;
    int h = 0;
    cJSON_ArrayForEach(item, layer) {
      char where[48];
      snprintf(where, sizeof where, "routing[%d][%d]", l, h);
      if (!cJSON_IsObject(item)) {
        snprintf(why, sizeof why, "%s is not an object", where);
        goto done;
      }
      if (check_keys(item, head_keys, 6, where, why, sizeof why) != 0)
        goto done;
      dua_routing_head *e = &r.head[(size_t)l * r.heads + h];
      strcat(where, ".");
      if (get_int(item, "depth", where, &e->depth, why, sizeof why) != 0 ||
          get_int(item, "arity", where, &e->arity, why, sizeof why) != 0 ||
          get_int(item, "block", where, &e->block, why, sizeof why) != 0 ||
          get_int(item, "window", where, &e->window, why, sizeof why) != 0 ||
          get_int(item, "sink", where, &e->sink, why, sizeof why) != 0 ||
          get_int(item, "shift", where, &e->shift, why, sizeof why) != 0)
        goto done;
      if (check_head(e, r.seq_len, l, h, why, sizeof why) != 0)
        goto done;
      h++;
    }
    l++;
  }
  st = DUA_SUCCESS;
done:
  cJSON_Delete(root);
  free(text);
  if (st != DUA_SUCCESS) {
    free(r.head);
    return dua_train_fail(error, error_size, st, "routing file %s: %s", path, why);
  }
  *routing = r;
  if (error != NULL && error_size > 0)
    error[0] = '\0';
  return DUA_SUCCESS;
}

void dua_routing_free(dua_routing *routing) {
  if (routing == NULL)
    return;
  free(routing->head);
  memset(routing, 0, sizeof *routing);
}
