/* program.c: OpenCL program build with -D options, per-context memory cache, on-disk binary cache, and
 * kernel objects kept per program so steady-state calls allocate nothing. */
#include "runtime/context_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BASE_OPTIONS "-cl-std=CL1.2"

static char *dup_string(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d)
    memcpy(d, s, n);
  return d;
}

/* Reads a whole file into a NUL-terminated string; NULL if it cannot. */
static char *read_text_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  char *buf = NULL;
  if (fseek(f, 0, SEEK_END) == 0) {
    long n = ftell(f);
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) != NULL) {
      if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
      } else {
        buf[n] = '\0';
      }
    }
  }
  fclose(f);
  return buf;
}

/* Concatenates the named sources ("common,attn_fwd"), from DUA_CL_DIR if set, else embedded. */
static dua_status assemble_source(dua_context *ctx, const char *sources, char **out) {
  size_t cap = 1, len = 0;
  char *text = calloc(1, 1);
  if (!text)
    return DUA_ERROR_OUT_OF_MEMORY;
  const char *p = sources;
  while (*p) {
    const char *comma = strchr(p, ',');
    size_t n = comma ? (size_t)(comma - p) : strlen(p);
    char name[64];
    if (n == 0 || n >= sizeof name) {
      free(text);
      return dua_fail(ctx, DUA_ERROR_INTERNAL, "bad kernel source list \"%s\"", sources);
    }
    memcpy(name, p, n);
    name[n] = '\0';
    char *file_text = NULL;
    const char *piece = NULL;
    if (ctx->cl_dir[0]) {
      char path[700];
      snprintf(path, sizeof path, "%s/%s.cl", ctx->cl_dir, name);
      file_text = read_text_file(path);
      if (!file_text) {
        free(text);
        return dua_fail(ctx, DUA_ERROR_IO, "DUA_CL_DIR is set but %s cannot be read", path);
      }
      piece = file_text;
    } else {
      for (int i = 0; i < dua_embedded_source_count; i++)
        if (strcmp(dua_embedded_sources[i].name, name) == 0)
          piece = dua_embedded_sources[i].text;
      if (!piece) {
        free(text);
        return dua_fail(ctx, DUA_ERROR_INTERNAL, "no embedded kernel source named \"%s\"", name);
      }
    }
    size_t plen = strlen(piece);
    char header[96];
    int hlen = snprintf(header, sizeof header, "\n#line 1 \"%s.cl\"\n", name);
    char *grown = realloc(text, cap + plen + (size_t)hlen + 1);
    if (!grown) {
      free(file_text);
      free(text);
      return DUA_ERROR_OUT_OF_MEMORY;
    }
    text = grown;
    memcpy(text + len, header, (size_t)hlen);
    memcpy(text + len + (size_t)hlen, piece, plen);
    len += (size_t)hlen + plen;
    cap += (size_t)hlen + plen;
    text[len] = '\0';
    free(file_text);
    p += n;
    if (*p == ',')
      p++;
  }
  *out = text;
  return DUA_SUCCESS;
}

static void record_build_log(dua_context *ctx, cl_program program) {
  size_t need = 0;
  if (clGetProgramBuildInfo(program, ctx->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &need) != CL_SUCCESS ||
      !need)
    return;
  char *log = malloc(need + 1);
  if (!log)
    return;
  if (clGetProgramBuildInfo(program, ctx->device, CL_PROGRAM_BUILD_LOG, need, log, NULL) == CL_SUCCESS) {
    log[need] = '\0';
    dua_error_append(ctx, "\n--- OpenCL build log ---\n");
    dua_error_append(ctx, log);
  }
  free(log);
}

static cl_program build_from_binary(dua_context *ctx, const unsigned char *blob, size_t size,
                                    const char *options) {
  cl_int err = CL_SUCCESS, bin_status = CL_SUCCESS;
  cl_program program =
      clCreateProgramWithBinary(ctx->cl_ctx, 1, &ctx->device, &size, &blob, &bin_status, &err);
  if (err != CL_SUCCESS || bin_status != CL_SUCCESS)
    return NULL;
  if (clBuildProgram(program, 1, &ctx->device, options, NULL, NULL) != CL_SUCCESS) {
    clReleaseProgram(program);
    return NULL;
  }
  return program;
}

static void store_binary(dua_context *ctx, cl_program program, const char *key) {
  size_t size = 0;
  if (clGetProgramInfo(program, CL_PROGRAM_BINARY_SIZES, sizeof size, &size, NULL) != CL_SUCCESS || size == 0)
    return;
  unsigned char *blob = malloc(size);
  if (!blob)
    return;
  unsigned char *ptrs[1] = {blob};
  if (clGetProgramInfo(program, CL_PROGRAM_BINARIES, sizeof ptrs, ptrs, NULL) == CL_SUCCESS)
    dua_disk_cache_store(ctx, key, blob, size);
  free(blob);
}

/* The program's PTX (a NUL-terminated copy the caller frees), NULL when the driver gives none or out of
 * memory (*oom). */
static char *program_ptx(cl_program program, int *oom) {
  size_t size = 0;
  char *ptx = NULL;
  *oom = 0;
  if (clGetProgramInfo(program, CL_PROGRAM_BINARY_SIZES, sizeof size, &size, NULL) != CL_SUCCESS || !size)
    return NULL;
  if ((ptx = calloc(size + 1, 1)) == NULL) {
    *oom = 1;
    return NULL;
  }
  unsigned char *ptrs[1] = {(unsigned char *)ptx};
  if (clGetProgramInfo(program, CL_PROGRAM_BINARIES, sizeof ptrs, ptrs, NULL) != CL_SUCCESS) {
    free(ptx);
    return NULL;
  }
  return ptx;
}

/* A program built from ptx; NULL when the driver refuses it, with the reason in *why and the refused
 * program (for its build log; the caller releases it) in *refused. */
static cl_program program_from_ptx(dua_context *ctx, const char *ptx, const char *options, dua_status *why,
                                   cl_program *refused) {
  const size_t len = strlen(ptx) + 1;
  const unsigned char *bin = (const unsigned char *)ptx;
  cl_int err = CL_SUCCESS, bin_status = CL_SUCCESS;
  cl_program p = clCreateProgramWithBinary(ctx->cl_ctx, 1, &ctx->device, &len, &bin, &bin_status, &err);
  if (err == CL_SUCCESS && bin_status == CL_SUCCESS &&
      (err = clBuildProgram(p, 1, &ctx->device, options, NULL, NULL)) == CL_SUCCESS)
    return p;
  *why = (dua_status)(err ? err : bin_status);
  *refused = p;
  return NULL;
}

/* The sm_90 program -> its PTX with the DUA_SM90A lines uncommented (and the register caps applied), built
 * for sm_90a (DUA_SM90A_OPTION). Replaces *program (released either way); an error names the step that
 * failed, with the driver's build log when it refused the PTX. */
static dua_status rebuild_sm90a(dua_context *ctx, const char *sources, const char *options,
                                cl_program *program) {
  int oom = 0;
  char *ptx = program_ptx(*program, &oom);
  clReleaseProgram(*program);
  *program = NULL;
  if (!ptx)
    return oom ? DUA_ERROR_OUT_OF_MEMORY
               : dua_fail(ctx, DUA_ERROR_BUILD_FAILED, "building kernels %s for sm_90a: no PTX binary",
                          sources);
  int markers = 0;
  char *patched = dua_ptx_to_sm90a(ptx, &markers);
  const int sm90 = dua_ptx_targets_sm90(ptx);
  free(ptx);
  if (!patched || markers == 0) {
    free(patched);
    if (!patched && sm90)
      return DUA_ERROR_OUT_OF_MEMORY;
    return dua_fail(ctx, DUA_ERROR_BUILD_FAILED, "building kernels %s for sm_90a: %s", sources,
                    !patched
                        ? "the compiler's PTX does not target sm_90"
                        : "the PTX carries no DUA_SM90A line (its Hopper instructions would be missing)");
  }
  dua_status why = DUA_SUCCESS;
  cl_program refused = NULL;
  *program = program_from_ptx(ctx, patched, options, &why, &refused);
  free(patched);
  if (*program)
    return DUA_SUCCESS;
  dua_fail(ctx, DUA_ERROR_BUILD_FAILED,
           "building kernels %s: the driver refused the sm_90a PTX (%d instructions uncommented): %s",
           sources, markers, dua_status_string(why));
  if (refused) {
    record_build_log(ctx, refused);
    clReleaseProgram(refused);
  }
  return DUA_ERROR_BUILD_FAILED;
}

/* The program rebuilt from its PTX with the kernels' register caps (DUA_PTX_CAPS_OPTION). The caps only tune:
 * where there is none, or the driver refuses the rewritten PTX (a warning), *program stays as built. */
static dua_status rebuild_with_caps(dua_context *ctx, const char *sources, const char *options,
                                    cl_program *program) {
  int oom = 0, caps = 0;
  char *ptx = program_ptx(*program, &oom);
  char *patched = ptx ? dua_ptx_caps(ptx, &caps) : NULL;
  oom = oom || (ptx && !patched);
  free(ptx);
  if (oom) {
    clReleaseProgram(*program);
    *program = NULL;
    return DUA_ERROR_OUT_OF_MEMORY;
  }
  if (!patched || caps == 0) { /* no PTX from the driver, or no cap in it */
    free(patched);
    return DUA_SUCCESS;
  }
  dua_status why = DUA_SUCCESS;
  cl_program refused = NULL;
  cl_program capped = program_from_ptx(ctx, patched, options, &why, &refused);
  free(patched);
  if (refused)
    clReleaseProgram(refused);
  if (!capped) {
    dua_log(ctx, DUA_LOG_WARNING,
            "kernels %s: the driver refused the PTX with %d register caps (%s); using "
            "them uncapped",
            sources, caps, dua_status_string(why));
    return DUA_SUCCESS;
  }
  clReleaseProgram(*program);
  *program = capped;
  return DUA_SUCCESS;
}

static dua_status build_program(dua_context *ctx, const char *sources, const char *options, cl_program *out) {
  char *text = NULL;
  dua_status st = assemble_source(ctx, sources, &text);
  if (st != DUA_SUCCESS)
    return st;
  size_t olen = strlen(BASE_OPTIONS) + strlen(options) + 2;
  char *full = malloc(olen);
  if (!full) {
    free(text);
    return DUA_ERROR_OUT_OF_MEMORY;
  }
  snprintf(full, olen, "%s %s", BASE_OPTIONS, options);
  char key[65];
  dua_disk_cache_key(ctx, text, full, key);
  cl_program program = NULL;
  unsigned char *blob = NULL;
  size_t size = 0;
  if (dua_disk_cache_load(ctx, key, &blob, &size) == 1) {
    program = build_from_binary(ctx, blob, size, full);
    free(blob);
    if (program) {
      ctx->cache.disk_hits++;
    } else {
      ctx->cache.disk_rejects++;
      dua_log(ctx, DUA_LOG_WARNING, "cached binary for %s was refused by the driver; rebuilding", sources);
    }
  }
  if (!program) {
    cl_int err = CL_SUCCESS;
    const char *src = text;
    program = clCreateProgramWithSource(ctx->cl_ctx, 1, &src, NULL, &err);
    if (err != CL_SUCCESS) {
      free(text);
      free(full);
      return dua_fail(ctx, (dua_status)err, "clCreateProgramWithSource(%s) failed", sources);
    }
    err = clBuildProgram(program, 1, &ctx->device, full, NULL, NULL);
    if (err != CL_SUCCESS) {
      dua_fail(ctx, DUA_ERROR_BUILD_FAILED, "building kernels %s with options \"%s\" failed: %s", sources,
               full, dua_status_string((dua_status)err));
      record_build_log(ctx, program);
      clReleaseProgram(program);
      free(text);
      free(full);
      return DUA_ERROR_BUILD_FAILED;
    }
    if (strstr(options, DUA_SM90A_OPTION))
      st = rebuild_sm90a(ctx, sources, full, &program);
    else if (strstr(options, DUA_PTX_CAPS_OPTION))
      st = rebuild_with_caps(ctx, sources, full, &program);
    if (st != DUA_SUCCESS) {
      free(text);
      free(full);
      return st;
    }
    ctx->cache.builds++;
    store_binary(ctx, program, key);
  }
  free(text);
  free(full);
  *out = program;
  return DUA_SUCCESS;
}

static dua_program_entry *find_or_build(dua_context *ctx, const char *sources, const char *options,
                                        dua_status *status) {
  for (dua_program_entry *e = ctx->programs; e; e = e->next)
    if (strcmp(e->sources, sources) == 0 && strcmp(e->options, options) == 0) {
      ctx->cache.memory_hits++;
      *status = DUA_SUCCESS;
      return e;
    }
  dua_program_entry *e = calloc(1, sizeof *e);
  if (!e) {
    *status = DUA_ERROR_OUT_OF_MEMORY;
    return NULL;
  }
  e->sources = dup_string(sources);
  e->options = dup_string(options);
  if (!e->sources || !e->options) {
    free(e->sources);
    free(e->options);
    free(e);
    *status = DUA_ERROR_OUT_OF_MEMORY;
    return NULL;
  }
  *status = build_program(ctx, sources, options, &e->program);
  if (*status != DUA_SUCCESS) {
    free(e->sources);
    free(e->options);
    free(e);
    return NULL;
  }
  e->next = ctx->programs;
  ctx->programs = e;
  return e;
}

dua_status dua_program_get(dua_context *ctx, const char *sources, const char *options, cl_program *out) {
  dua_status st;
  dua_program_entry *e = find_or_build(ctx, sources, options ? options : "", &st);
  if (e)
    *out = e->program;
  return st;
}

dua_status dua_program_kernel(dua_context *ctx, const char *sources, const char *options, const char *kernel,
                              cl_kernel *out) {
  dua_status st;
  dua_program_entry *e = find_or_build(ctx, sources, options ? options : "", &st);
  if (!e)
    return st;
  for (int i = 0; i < e->kernel_count; i++)
    if (strcmp(e->kernel_names[i], kernel) == 0) {
      *out = e->kernels[i];
      return DUA_SUCCESS;
    }
  if (e->kernel_count == DUA_MAX_KERNELS_PER_PROGRAM)
    return dua_fail(ctx, DUA_ERROR_INTERNAL, "too many kernels in program %s", sources);
  cl_int err = CL_SUCCESS;
  cl_kernel k = clCreateKernel(e->program, kernel, &err);
  if (err != CL_SUCCESS)
    return dua_fail(ctx, (dua_status)err, "clCreateKernel(%s) in %s failed: %s", kernel, sources,
                    dua_status_string((dua_status)err));
  char *name = dup_string(kernel);
  if (!name) {
    clReleaseKernel(k);
    return DUA_ERROR_OUT_OF_MEMORY;
  }
  e->kernel_names[e->kernel_count] = name;
  e->kernels[e->kernel_count] = k;
  e->kernel_count++;
  *out = k;
  return DUA_SUCCESS;
}

void dua_program_cache_release(dua_context *ctx) {
  dua_program_entry *e = ctx->programs;
  while (e) {
    dua_program_entry *next = e->next;
    for (int i = 0; i < e->kernel_count; i++) {
      clReleaseKernel(e->kernels[i]);
      free(e->kernel_names[i]);
    }
    clReleaseProgram(e->program);
    free(e->sources);
    free(e->options);
    free(e);
    e = next;
  }
  ctx->programs = NULL;
}
