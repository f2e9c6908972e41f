/* disk_cache.c: on-disk program binary cache. Key = SHA-256 of sources, options, device name, driver,
 * platform and library versions. Entries are written to a temp file and renamed; every load checks the
 * magic, format, key, size and a SHA-256 of the payload, so a corrupt or stale entry is rebuilt. */
#include "runtime/context_internal.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CACHE_MAGIC "DUACACHE"
#define CACHE_FORMAT 1u
#define CACHE_MAX_PAYLOAD (512u << 20)

/* header: magic[8] format u32 reserved u32 payload_size u64 key[32] payload_sha256[32] */
#define CACHE_HEADER_SIZE (8 + 4 + 4 + 8 + 32 + 32)

static int mkdir_p(const char *path) {
  char tmp[512];
  snprintf(tmp, sizeof tmp, "%s", path);
  for (char *p = tmp + 1; *p; p++) {
    if (*p == '/') {
      *p = '\0';
      if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return -1;
      *p = '/';
    }
  }
  if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
    return -1;
  return 0;
}

void dua_disk_cache_init(dua_context *ctx) {
  ctx->cache.disk_enabled = 0;
  ctx->cache.directory[0] = '\0';
  const char *off = getenv("DUA_CACHE");
  if (off && strcmp(off, "0") == 0)
    return;
  const char *dir = getenv("DUA_CACHE_DIR");
  const char *xdg = getenv("XDG_CACHE_HOME");
  const char *home = getenv("HOME");
  char path[512];
  if (dir && *dir)
    snprintf(path, sizeof path, "%s", dir);
  else if (xdg && *xdg)
    snprintf(path, sizeof path, "%s/dua", xdg);
  else if (home && *home)
    snprintf(path, sizeof path, "%s/.cache/dua", home);
  else
    return;
  if (mkdir_p(path) != 0 || access(path, W_OK) != 0) {
    dua_log(ctx, DUA_LOG_WARNING, "program cache directory %s is not writable; disk cache off", path);
    return;
  }
  snprintf(ctx->cache.directory, sizeof ctx->cache.directory, "%s", path);
  ctx->cache.disk_enabled = 1;
}

static void sha256(const void *data, size_t size, unsigned char out[32]) {
  unsigned int len = 32;
  EVP_Digest(data, size, out, &len, EVP_sha256(), NULL);
}

static void to_hex(const unsigned char *bytes, size_t n, char *hex) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    hex[2 * i] = digits[bytes[i] >> 4];
    hex[2 * i + 1] = digits[bytes[i] & 15];
  }
  hex[2 * n] = '\0';
}

void dua_disk_cache_key(const dua_context *ctx, const char *source_text, const char *options,
                        char key_hex[65]) {
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  unsigned char digest[32];
  unsigned int len = 32;
  const char *parts[] = {source_text,
                         options,
                         ctx->info.name,
                         ctx->info.driver_version,
                         ctx->info.platform_name,
                         ctx->info.platform_version,
                         dua_version()};
  if (!md) { /* without a digest context no entry can be trusted: a key that never matches */
    memset(key_hex, '0', 64);
    key_hex[64] = '\0';
    return;
  }
  EVP_DigestInit_ex(md, EVP_sha256(), NULL);
  for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
    const char *p = parts[i] ? parts[i] : "";
    EVP_DigestUpdate(md, p, strlen(p) + 1); /* the NUL separates the fields */
  }
  EVP_DigestFinal_ex(md, digest, &len);
  EVP_MD_CTX_free(md);
  to_hex(digest, 32, key_hex);
}

static void entry_path(const dua_context *ctx, const char *key_hex, char *path, size_t size) {
  snprintf(path, size, "%s/%s.bin", ctx->cache.directory, key_hex);
}

static int hex_to_bytes(const char *hex, unsigned char *out, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned v = 0;
    if (sscanf(hex + 2 * i, "%2x", &v) != 1)
      return -1;
    out[i] = (unsigned char)v;
  }
  return 0;
}

static uint64_t read_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

static uint32_t read_u32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void write_le(unsigned char *p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

int dua_disk_cache_load(dua_context *ctx, const char *key_hex, unsigned char **blob, size_t *size) {
  if (!ctx->cache.disk_enabled)
    return 0;
  char path[700];
  entry_path(ctx, key_hex, path, sizeof path);
  FILE *f = fopen(path, "rb");
  if (!f)
    return 0;
  unsigned char header[CACHE_HEADER_SIZE];
  unsigned char key[32], digest[32];
  int verdict = -1;
  unsigned char *payload = NULL;
  const char *why = "short header";
  if (fread(header, 1, sizeof header, f) == sizeof header) {
    uint64_t n = read_u64(header + 16);
    why = "bad magic, format or key";
    if (memcmp(header, CACHE_MAGIC, 8) == 0 && read_u32(header + 8) == CACHE_FORMAT &&
        hex_to_bytes(key_hex, key, 32) == 0 && memcmp(header + 24, key, 32) == 0) {
      why = "payload size out of range";
      if (n > 0 && n <= CACHE_MAX_PAYLOAD && (payload = malloc((size_t)n)) != NULL) {
        why = "truncated payload";
        if (fread(payload, 1, (size_t)n, f) == n && fgetc(f) == EOF) {
          sha256(payload, (size_t)n, digest);
          why = "payload checksum mismatch";
          if (memcmp(digest, header + 56, 32) == 0) {
            *blob = payload;
            *size = (size_t)n;
            payload = NULL;
            verdict = 1;
          }
        }
      }
    }
  }
  fclose(f);
  free(payload);
  if (verdict < 0) {
    dua_log(ctx, DUA_LOG_WARNING, "program cache entry %s rejected (%s); rebuilding", path, why);
    ctx->cache.disk_rejects++;
    remove(path);
  }
  return verdict;
}

void dua_disk_cache_store(dua_context *ctx, const char *key_hex, const unsigned char *blob, size_t size) {
  if (!ctx->cache.disk_enabled || size == 0 || size > CACHE_MAX_PAYLOAD)
    return;
  unsigned char header[CACHE_HEADER_SIZE];
  memcpy(header, CACHE_MAGIC, 8);
  write_le(header + 8, CACHE_FORMAT, 4);
  write_le(header + 12, 0, 4);
  write_le(header + 16, size, 8);
  if (hex_to_bytes(key_hex, header + 24, 32) != 0)
    return;
  sha256(blob, size, header + 56);
  char path[700], tmp[760];
  entry_path(ctx, key_hex, path, sizeof path);
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  FILE *f = fopen(tmp, "wb");
  if (!f) {
    dua_log(ctx, DUA_LOG_WARNING, "cannot write program cache entry %s", tmp);
    return;
  }
  int ok = fwrite(header, 1, sizeof header, f) == sizeof header && fwrite(blob, 1, size, f) == size;
  ok = (fclose(f) == 0) && ok;
  if (!ok || rename(tmp, path) != 0) {
    remove(tmp);
    dua_log(ctx, DUA_LOG_WARNING, "cannot write program cache entry %s", path);
  }
}
