/* dua_bench_decode.c: dua-bench --pass decode. Fills a paged KV cache (dua_kv_cache) with --batch sequences
 * of --n tokens, then times dua_decode with the layout of the flags (dua_sparse_decode) and with the dense
 * layout (dua_dense_decode) on the same cache and queries, and reports ms, the K/V bytes the kernel reads,
 * GB/s, the fraction of the device's measured copy bandwidth and the speedup over dense (--help defines
 * each). --check validates both against a double softmax over the keys the layout's rule makes visible. */
#include "dua_bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DECODE_TILE 32 /* dua's default decode tile on GPUs, both kernels (host/tuning/decode_params.c) */
#define DECODE_CPU_TILE                                                                                      \
  16                        /* its default on CPU devices; the tuning chain (decode_tile) says which applies \
                             */
#define APPEND_CHUNK 2048   /* tokens per dua_kv_append while filling */
#define COPY_MAX (1u << 30) /* bytes copied to measure the copy bandwidth */

typedef struct dec {
  const options *o;
  dua_context *ctx;
  dua_device_info info;
  bench_clock clock;
  FILE *table, *json;
  int n, B, Hq, Hkv, Dh, T;
  dua_dtype dtype;
  size_t es;
  int32_t *lens, *seqs;
  dua_kv_cache *cache;
  float *hk, *hv, *hq0; /* host copies as stored: K, V pattern [Hkv][n][Dh] (every sequence holds its first
                         * L tokens), queries of set 0 (B, Hq, T, Dh) */
  int nsets;
  dua_buffer *qb[3], *ob, *lb;
  dua_tensor q[3], out, lse;
  double copy_gbs;
  int copy_measured;
  int rows_printed;
} dec;

/* ------------------------------------------------------------------ copy bandwidth */

/* Median device time (ms) of 5 clEnqueueCopyBuffer of `bytes` (after 2 warm-ups): the copy reads and writes
 * `bytes` each. Returns -1 when the buffers cannot be had or a copy fails (nothing is left allocated). */
static double time_copy(dec *d, size_t bytes) {
  dua_buffer *a = NULL, *b = NULL;
  if (dua_buffer_create(d->ctx, bytes, &a) != DUA_SUCCESS ||
      dua_buffer_create(d->ctx, bytes, &b) != DUA_SUCCESS ||
      dua_buffer_fill_bytes(a, 0, bytes, 1) != DUA_SUCCESS) {
    dua_buffer_destroy(a);
    dua_buffer_destroy(b);
    return -1;
  }
  cl_mem ma = dua_buffer_cl_mem(a), mb = dua_buffer_cl_mem(b);
  double ms[5];
  for (int i = -2; i < 5; i++) {
    cl_event ev = NULL;
    double t0 = now_s();
    if (clEnqueueCopyBuffer(d->clock.queue, ma, mb, 0, 0, bytes, 0, NULL, &ev) != CL_SUCCESS ||
        clWaitForEvents(1, &ev) != CL_SUCCESS) {
      if (ev)
        clReleaseEvent(ev);
      dua_buffer_destroy(a);
      dua_buffer_destroy(b);
      return -1;
    }
    double wall = 1e3 * (now_s() - t0);
    cl_ulong s0 = 0, s1 = 0;
    if (d->clock.events_ok &&
        clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof s0, &s0, NULL) == CL_SUCCESS &&
        clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof s1, &s1, NULL) == CL_SUCCESS && s1 > s0)
      wall = (double)(s1 - s0) * 1e-6;
    clReleaseEvent(ev);
    if (i >= 0)
      ms[i] = wall;
  }
  dua_buffer_destroy(a);
  dua_buffer_destroy(b);
  return median(ms, 5);
}

/* The largest copy the device allows us (COPY_MAX at most for the bandwidth measurement, `capped`), 4 KiB
 * aligned: each buffer at most half the largest allocation, both together at most a quarter of the memory. */
static size_t copy_cap(const dec *d, int capped) {
  size_t bytes = capped ? COPY_MAX : (size_t)-1;
  if (bytes > d->info.max_alloc_bytes / 2)
    bytes = (size_t)(d->info.max_alloc_bytes / 2);
  if (bytes > d->info.global_mem_bytes / 8)
    bytes = (size_t)(d->info.global_mem_bytes / 8);
  return bytes & ~(size_t)4095;
}

static double measure_copy(dec *d) {
  const size_t bytes = copy_cap(d, 1);
  const double m = time_copy(d, bytes);
  if (m <= 0) {
    fprintf(stderr,
            "dua-bench: the copy-bandwidth measurement failed (two buffers of %zu bytes and "
            "clEnqueueCopyBuffer); give --copy-gbs\n",
            bytes);
    exit(1);
  }
  fprintf(stderr,
          "device copy: %.1f GB/s (read + write of %.0f MiB, median of 5 clEnqueueCopyBuffer, %.3f ms)\n",
          2.0 * (double)bytes / m / 1e6, bytes / 1048576.0, m);
  return 2.0 * (double)bytes / m / 1e6;
}

/* The same-size floor of a row: the device time of one copy that moves as many bytes as the call does (reads
 * half, writes half), so that a short call is compared with a copy of its own size (a copy has its own fixed
 * start-up cost). -1 when the copy would exceed copy_cap (not capped at COPY_MAX) or fails. */
static double copy_same_bytes_ms(dec *d, double bytes) {
  const size_t half = ((size_t)(bytes / 2) + 4095) & ~(size_t)4095;
  return half > 0 && half <= copy_cap(d, 0) ? time_copy(d, half) : -1;
}

/* ------------------------------------------------------------------ cache and queries */

static void fill_host(float *x, size_t n, uint64_t seed, dua_dtype dt) {
  uint64_t s = seed;
  for (size_t i = 0; i < n; i++) {
    float v = uniform(&s);
    x[i] = dt == DUA_F16 ? dua_half_to_float(dua_float_to_half(v)) : v;
  }
}

static dua_buffer *upload(dec *d, const float *x, size_t n) {
  dua_buffer *buf = NULL;
  dua_status st = dua_buffer_create(d->ctx, n * d->es, &buf);
  if (st != DUA_SUCCESS) {
    fprintf(stderr, "dua-bench: cannot allocate %.1f MiB on the device\n", (double)(n * d->es) / 1048576.0);
    die_dua(d->ctx, st, "dua_buffer_create");
  }
  const size_t chunk = (size_t)1 << 20;
  void *tmp = xmalloc(chunk * d->es);
  for (size_t off = 0; off < n && st == DUA_SUCCESS; off += chunk) {
    size_t c = n - off < chunk ? n - off : chunk;
    if (d->dtype == DUA_F16)
      for (size_t i = 0; i < c; i++)
        ((uint16_t *)tmp)[i] = dua_float_to_half(x[off + i]);
    else
      memcpy(tmp, x + off, c * 4);
    st = dua_buffer_write(buf, off * d->es, c * d->es, tmp);
  }
  free(tmp);
  if (st != DUA_SUCCESS)
    die_dua(d->ctx, st, "dua_buffer_write");
  return buf;
}

/* The cache (one layer) with each sequence's first L tokens of the K/V pattern, and the query sets. */
static void build(dec *d) {
  const options *o = d->o;
  int64_t pages = 0;
  for (int b = 0; b < d->B; b++)
    pages += (d->lens[b] + o->page - 1) / o->page;
  dua_kv_cache_desc cd;
  memset(&cd, 0, sizeof cd);
  cd.layers = 1;
  cd.kv_heads = d->Hkv;
  cd.head_dim = d->Dh;
  cd.page_tokens = o->page;
  cd.num_pages = (int32_t)(pages > 0 ? pages : 1);
  cd.max_seqs = d->B;
  cd.max_tokens = d->n;
  cd.dtype = d->dtype;
  cd.page_order_seed = o->page_order ? (uint32_t)(o->seed * 2654435761u + 1) : 0;
  dua_status st = dua_kv_cache_create(d->ctx, &cd, &d->cache);
  if (st != DUA_SUCCESS)
    die_dua(d->ctx, st, "dua_kv_cache_create");
  const size_t kn = (size_t)d->Hkv * d->n * d->Dh;
  d->hk = xmalloc(kn * 4);
  d->hv = xmalloc(kn * 4);
  fill_host(d->hk, kn, o->seed * 1000003ull + 11, d->dtype);
  fill_host(d->hv, kn, o->seed * 1000003ull + 12, d->dtype);
  dua_buffer *pk = upload(d, d->hk, kn), *pv = upload(d, d->hv, kn);
  for (int b = 0; b < d->B; b++) {
    if ((st = dua_kv_seq_add(d->cache, &d->seqs[b])) != DUA_SUCCESS)
      die_dua(d->ctx, st, "dua_kv_seq_add");
    for (int start = 0; start < d->lens[b]; start += APPEND_CHUNK) {
      int t = d->lens[b] - start < APPEND_CHUNK ? d->lens[b] - start : APPEND_CHUNK;
      dua_tensor k = dua_tensor_contiguous(pk, (size_t)start * d->Dh * d->es, d->dtype, 1, d->Hkv, t, d->Dh);
      k.strides[1] = (int64_t)d->n * d->Dh;
      k.strides[0] = (int64_t)d->Hkv * d->n * d->Dh;
      dua_tensor v = k;
      v.buffer = pv;
      if ((st = dua_kv_append(d->cache, 0, 1, &d->seqs[b], &k, &v)) != DUA_SUCCESS)
        die_dua(d->ctx, st, "dua_kv_append");
    }
  }
  if ((st = dua_context_finish(d->ctx)) != DUA_SUCCESS)
    die_dua(d->ctx, st, "dua_context_finish");
  dua_buffer_destroy(pk);
  dua_buffer_destroy(pv);
  const size_t qn = (size_t)d->B * d->Hq * d->T * d->Dh;
  d->nsets = 3;
  d->hq0 = xmalloc(qn * 4);
  float *tmp = xmalloc(qn * 4);
  for (int s = 0; s < d->nsets; s++) {
    float *x = s == 0 ? d->hq0 : tmp;
    fill_host(x, qn, o->seed * 7919ull + 100 + (uint64_t)s, d->dtype);
    d->qb[s] = upload(d, x, qn);
    d->q[s] = dua_tensor_contiguous(d->qb[s], 0, d->dtype, d->B, d->Hq, d->T, d->Dh);
  }
  free(tmp);
  if ((st = dua_buffer_create(d->ctx, qn * d->es, &d->ob)) != DUA_SUCCESS ||
      (st = dua_buffer_create(d->ctx, (size_t)d->B * d->Hq * d->T * 4, &d->lb)) != DUA_SUCCESS)
    die_dua(d->ctx, st, "dua_buffer_create");
  d->out = dua_tensor_contiguous(d->ob, 0, d->dtype, d->B, d->Hq, d->T, d->Dh);
  d->lse = dua_tensor_contiguous(d->lb, 0, DUA_F32, d->B, d->Hq, d->T, 1);
}

static void release(dec *d) {
  dua_kv_cache_destroy(d->cache);
  d->cache = NULL;
  for (int s = 0; s < d->nsets; s++)
    dua_buffer_destroy(d->qb[s]);
  dua_buffer_destroy(d->ob);
  dua_buffer_destroy(d->lb);
  free(d->hk);
  free(d->hv);
  free(d->hq0);
  d->hk = d->hv = d->hq0 = NULL;
  d->nsets = 0;
}

/* ------------------------------------------------------------------ counts */

typedef struct counts {
  double kv_bytes, dense_kv_bytes, visible_fraction;
} counts;

/* The decode tile the library uses (for the read unit min(page, block, tile)): the tuning lookup chain's
 * (DUA_DECODE_TILE, an override, the tuning database, the compiled default) for this call's class, before
 * the call's own fitting; the compiled default when the lookup fails. */
static int decode_tile(const dec *d) {
  dua_tuning_info t;
  const char *kernel = d->Hq == d->Hkv && d->T == 1 ? "decode" : "decode_gqa";
  if (dua_context_get_tuning(d->ctx, kernel, d->dtype, d->Dh, 128, &t) == DUA_SUCCESS && t.params[1] >= 16)
    return t.params[1];
  return d->info.type == DUA_DEVICE_CPU ? DECODE_CPU_TILE : DECODE_TILE;
}

/* K/V bytes read (see --help); a length seen before reuses its count (positional layouts do not depend on
 * the batch). */
static counts count_bytes(dec *d, dua_layout *l) {
  counts c = {0, 0, 0};
  int unit = d->o->page < d->o->block ? d->o->page : d->o->block;
  if (unit > decode_tile(d))
    unit = decode_tile(d);
  const int G = d->Hq / d->Hkv;
  uint8_t *mark = xmalloc((size_t)(d->n / unit + 2));
  double *kv = xmalloc((size_t)d->B * sizeof(double)), *vis = xmalloc((size_t)d->B * sizeof(double));
  for (int b = 0; b < d->B; b++) {
    const int L = d->lens[b];
    int same = -1;
    for (int e = 0; e < b && same < 0; e++)
      if (d->lens[e] == L)
        same = e;
    kv[b] = vis[b] = 0;
    if (same >= 0) {
      kv[b] = kv[same];
      vis[b] = vis[same];
    } else {
      for (int hk = 0; hk < d->Hkv; hk++) {
        memset(mark, 0, (size_t)(L / unit + 2));
        for (int g = 0; g < G; g++)
          for (int i = 0; i < d->T; i++) {
            const int h = hk * G + g, pos = L - d->T + i;
            for (int j = 0; j <= pos; j++)
              if (dua_layout_visible(l, 0, h, pos, j)) {
                mark[j / unit] = 1;
                vis[b] += i == d->T - 1;
              }
          }
        for (int u = 0; u * unit < L; u++)
          if (mark[u])
            kv[b] += (double)((u + 1) * unit < L ? unit : L - u * unit);
      }
    }
    c.kv_bytes += kv[b] * d->Dh * (double)d->es * 2;
    c.dense_kv_bytes += (double)L * d->Hkv * d->Dh * (double)d->es * 2;
    c.visible_fraction += L ? vis[b] / ((double)L * d->Hq) / d->B : 0;
  }
  free(mark);
  free(kv);
  free(vis);
  return c;
}

/* ------------------------------------------------------------------ check */

static void decode_once(dec *d, dua_layout *l, int set, int with_lse) {
  dua_status st =
      dua_decode(d->ctx, d->cache, 0, l, NULL, d->seqs, &d->q[set], &d->out, with_lse ? &d->lse : NULL);
  if (st != DUA_SUCCESS)
    die_dua(d->ctx, st, "dua_decode");
}

static void check(dec *d, dua_layout *l, const char *variant, char *what, size_t what_size) {
  const options *o = d->o;
  const size_t qn = (size_t)d->B * d->Hq * d->T * d->Dh, ln = (size_t)d->B * d->Hq * d->T;
  dua_status st;
  if ((st = dua_buffer_fill_bytes(d->ob, 0, qn * d->es, 0xff)) != DUA_SUCCESS ||
      (st = dua_buffer_fill_bytes(d->lb, 0, ln * 4, 0xff)) != DUA_SUCCESS)
    die_dua(d->ctx, st, "dua_buffer_fill_bytes");
  decode_once(d, l, 0, 1);
  if ((st = dua_context_finish(d->ctx)) != DUA_SUCCESS)
    die_dua(d->ctx, st, "dua_context_finish");
  float *out = xmalloc(qn * 4), *lse = xmalloc(ln * 4);
  if (d->dtype == DUA_F16) {
    uint16_t *h = xmalloc(qn * 2);
    st = dua_buffer_read(d->ob, 0, qn * 2, h);
    for (size_t i = 0; i < qn; i++)
      out[i] = dua_half_to_float(h[i]);
    free(h);
  } else {
    st = dua_buffer_read(d->ob, 0, qn * 4, out);
  }
  if (st != DUA_SUCCESS || (st = dua_buffer_read(d->lb, 0, ln * 4, lse)) != DUA_SUCCESS)
    die_dua(d->ctx, st, "dua_buffer_read");
  long long nan = 0, bad = 0, compared = 0;
  for (size_t i = 0; i < qn; i++)
    nan += isnan(out[i]) != 0;
  for (size_t i = 0; i < ln; i++)
    nan += isnan(lse[i]) || (isinf(lse[i]) && lse[i] > 0);
  const double atol = o->atol >= 0 ? o->atol : (d->dtype == DUA_F16 ? 2e-3 : 1e-4);
  const double rtol = o->rtol >= 0 ? o->rtol : (d->dtype == DUA_F16 ? 4e-3 : 1e-3);
  const double scale = 1.0 / sqrt((double)d->Dh);
  double max_err = 0;
  char first[200] = "";
  double *s = xmalloc((size_t)d->n * sizeof(double)), *acc = xmalloc((size_t)d->Dh * sizeof(double));
  int *cols = xmalloc((size_t)d->n * sizeof(int));
  const int which[2] = {0, d->B - 1};
  for (int w = 0; w < (d->B > 1 ? 2 : 1); w++) {
    const int b = which[w], L = d->lens[b];
    for (int h = 0; h < d->Hq; h++)
      for (int i = 0; i < d->T; i++) {
        const int pos = L - d->T + i, hk = h / (d->Hq / d->Hkv);
        const float *qi = d->hq0 + (((size_t)b * d->Hq + h) * d->T + i) * d->Dh;
        const float *oi = out + (((size_t)b * d->Hq + h) * d->T + i) * d->Dh;
        const float li = lse[((size_t)b * d->Hq + h) * d->T + i];
        int cnt = 0;
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j <= pos; j++) {
          if (!dua_layout_visible(l, 0, h, pos, j))
            continue;
          const float *kj = d->hk + ((size_t)hk * d->n + j) * d->Dh;
          double dot = 0;
          for (int x = 0; x < d->Dh; x++)
            dot += (double)qi[x] * kj[x];
          s[cnt] = dot * scale;
          cols[cnt++] = j;
          mx = s[cnt - 1] > mx ? s[cnt - 1] : mx;
        }
        for (int x = 0; x < d->Dh; x++)
          acc[x] = 0;
        for (int t = 0; t < cnt; t++) {
          double p = exp(s[t] - mx);
          sum += p;
          const float *vj = d->hv + ((size_t)hk * d->n + cols[t]) * d->Dh;
          for (int x = 0; x < d->Dh; x++)
            acc[x] += p * vj[x];
        }
        for (int x = 0; x < d->Dh; x++) {
          double ref = cnt ? acc[x] / sum : 0.0, err = fabs(oi[x] - ref);
          int ok = cnt ? err <= atol + rtol * fabs(ref) : oi[x] == 0.0f;
          max_err = err > max_err ? err : max_err;
          compared++;
          if (!ok && bad++ == 0)
            snprintf(first, sizeof first, "seq %d head %d token %d d=%d: got %.7g, expected %.7g", b, h, i, x,
                     (double)oi[x], ref);
        }
        double rl = cnt ? mx + log(sum) : -INFINITY;
        int lok = cnt ? fabs(li - rl) <= atol + rtol * fabs(rl) : isinf(li) && li < 0;
        compared++;
        if (!lok && bad++ == 0)
          snprintf(first, sizeof first, "seq %d head %d token %d: lse %.7g, expected %.7g", b, h, i,
                   (double)li, rl);
      }
  }
  free(s);
  free(acc);
  free(cols);
  free(out);
  free(lse);
  if (nan || bad) {
    fprintf(stderr,
            "dua-bench: CHECK FAILED (%s, n=%d, %s): %lld NaN or unwritten, %lld of %lld values outside %g + "
            "%g |ref|; "
            "first: %s\n",
            variant, d->n, dtype_name(d->dtype), nan, bad, compared, atol, rtol, first);
    exit(1);
  }
  snprintf(what, what_size, "rows:%d", (d->B > 1 ? 2 : 1) * d->Hq * d->T);
  fprintf(stderr, "  check %-17s ok: %lld values, max |err| %.3g\n", variant, compared, max_err);
}

/* ------------------------------------------------------------------ timing and report */

typedef struct call_user {
  dec *d;
  dua_layout *l;
} call_user;

static void timed_call(void *user, int set) {
  call_user *u = user;
  decode_once(u->d, u->l, set, u->d->o->lse);
}

typedef struct row {
  const char *variant;
  int depth, extras; /* extras: the flags' shift, window and sink apply (not for the dense variant) */
  counts c;
  timing t;
  double dense_ms;
  double copy_same_ms; /* device time of a copy moving the call's bytes; -1 if not measured */
  char checked[48];
} row;

/* Bytes a call moves: the K/V it reads, Q, O and the LSE. */
static double call_bytes(const dec *d, const counts *c) {
  const double qo =
      2.0 * d->B * d->Hq * d->T * d->Dh * (double)d->es + (d->o->lse ? 4.0 * d->B * d->Hq * d->T : 0);
  return c->kv_bytes + qo;
}

static void report(dec *d, const row *r) {
  const options *o = d->o;
  const double bytes = call_bytes(d, &r->c), sec = r->t.ms * 1e-3, gbps = bytes / sec / 1e9;
  const double x_dense = r->dense_ms / r->t.ms, ideal = r->c.dense_kv_bytes / r->c.kv_bytes;
  int lmin = d->lens[0], lmax = d->lens[0];
  double lmean = 0;
  for (int b = 0; b < d->B; b++) {
    lmin = d->lens[b] < lmin ? d->lens[b] : lmin;
    lmax = d->lens[b] > lmax ? d->lens[b] : lmax;
    lmean += (double)d->lens[b] / d->B;
  }
  if (d->rows_printed++ == 0)
    fprintf(d->table,
            "%-17s %6s %3s %3s %3s %4s %4s %4s %5s %4s %4s %1s %4s %7s %9s %9s %8s %7s %7s %7s %6s %s\n",
            "variant", "n", "B", "H", "Hkv", "Dh", "page", "blk", "depth", "win", "sink", "T", "type",
            "visible", "kv_MB", "ms", "GB/s", "of_copy", "of_cp_n", "x_dense", "ideal", "check");
  char same[16] = "-";
  if (r->copy_same_ms > 0)
    snprintf(same, sizeof same, "%.1f%%", 100.0 * r->copy_same_ms / r->t.ms);
  fprintf(d->table,
          "%-17s %6d %3d %3d %3d %4d %4d %4d %5d %4d %4d %1d %4s %7.4f %9.2f %9.4f %8.1f %6.1f%% %7s %7.2f "
          "%6.2f %s\n",
          r->variant, d->n, d->B, d->Hq, d->Hkv, d->Dh, o->page, o->block, r->depth,
          r->extras ? o->window : 0, r->extras ? o->sink : 0, d->T, dtype_name(d->dtype),
          r->c.visible_fraction, r->c.kv_bytes / 1e6, r->t.ms, gbps, 100.0 * gbps / d->copy_gbs, same,
          x_dense, ideal, r->checked[0] ? r->checked : "-");
  FILE *f = d->json;
  if (f == NULL)
    return;
  fprintf(f, "{\"variant\": \"%s\", \"peer\": \"%s\", \"pass_\": \"decode\"", r->variant, r->variant);
  json_int(f, "n", d->n);
  json_int(f, "batch", d->B);
  json_int(f, "heads", d->Hq);
  json_int(f, "kv_heads", d->Hkv);
  json_int(f, "dim", d->Dh);
  json_int(f, "block", o->block);
  json_int(f, "page", o->page);
  json_int(f, "arity", o->arity);
  json_int(f, "depth", r->depth);
  json_int(f, "tree_depth", tree_depth((d->n + o->block - 1) / o->block, o->arity));
  json_int(f, "shift", r->extras ? o->shift : 0);
  json_int(f, "window", r->extras ? o->window : 0);
  json_int(f, "sink", r->extras ? o->sink : 0);
  json_int(f, "tokens", d->T);
  fprintf(f, ", \"ragged\": %s", o->ragged ? "true" : "false");
  json_int(f, "len_min", lmin);
  json_int(f, "len_max", lmax);
  json_num(f, "len_mean", lmean);
  json_str(f, "dtype", dtype_name(d->dtype));
  json_str(f, "page_order", o->page_order ? "shuffled" : "seq");
  fprintf(f, ", \"lse\": %s", o->lse ? "true" : "false");
  json_num(f, "visible_fraction", r->c.visible_fraction);
  json_num(f, "read_fraction", r->c.kv_bytes / r->c.dense_kv_bytes);
  json_num(f, "kv_bytes", r->c.kv_bytes);
  json_num(f, "dense_kv_bytes", r->c.dense_kv_bytes);
  json_num(f, "bytes", bytes);
  json_num(f, "ms", r->t.ms);
  json_num(f, "ms_min", r->t.ms_min);
  json_num(f, "wall_ms", r->t.wall_ms);
  json_int(f, "reps", r->t.reps);
  json_str(f, "timer", r->t.events ? "events" : "wall");
  json_int(f, "input_sets", d->nsets);
  json_num(f, "gbps", gbps);
  json_num(f, "kv_gb_per_s", r->c.kv_bytes / sec / 1e9);
  json_num(f, "dense_equiv_gb_per_s", r->c.dense_kv_bytes / sec / 1e9);
  json_num(f, "copy_gbps", d->copy_gbs);
  fprintf(f, ", \"copy_measured\": %s", d->copy_measured ? "true" : "false");
  json_num(f, "fraction_of_copy", gbps / d->copy_gbs);
  if (r->copy_same_ms > 0) {
    json_num(f, "copy_same_bytes_ms", r->copy_same_ms);
    json_num(f, "fraction_of_same_size_copy", r->copy_same_ms / r->t.ms);
  } else
    fprintf(f, ", \"copy_same_bytes_ms\": null, \"fraction_of_same_size_copy\": null");
  json_num(f, "speedup_vs_dense", x_dense);
  json_num(f, "ideal_speedup", ideal);
  if (r->checked[0])
    json_str(f, "checked", r->checked);
  else
    fprintf(f, ", \"checked\": null");
  json_str(f, "device", d->info.name);
  json_str(f, "platform", d->info.platform_name);
  json_str(f, "driver", d->info.driver_version);
  json_str(f, "dua_version", dua_version());
  fprintf(f, "}\n");
  fflush(f);
}

static void run_variant(dec *d, dua_layout *l, const char *variant, int depth, int extras, double dense_ms,
                        row *r) {
  memset(r, 0, sizeof *r);
  r->variant = variant;
  r->depth = depth;
  r->extras = extras;
  r->c = count_bytes(d, l);
  if (d->o->check)
    check(d, l, variant, r->checked, sizeof r->checked);
  call_user u = {d, l};
  r->t = time_calls(&d->clock, d->o, d->nsets, timed_call, &u);
  r->copy_same_ms = d->copy_measured && r->t.events ? copy_same_bytes_ms(d, call_bytes(d, &r->c)) : -1;
  r->dense_ms = dense_ms > 0 ? dense_ms : r->t.ms;
  fprintf(stderr, "  %-17s depth %d: %10.4f ms (%s, %d reps; wall %.4f ms), %.1f MB of K/V\n", variant, depth,
          r->t.ms, r->t.events ? "events" : "wall", r->t.reps, r->t.wall_ms, r->c.kv_bytes / 1e6);
}

/* ------------------------------------------------------------------ driver */

int bench_decode(const options *opt, dua_context *ctx, FILE *table, FILE *json) {
  options causal = *opt; /* decode is causal by construction: the layouts are made causal */
  causal.causal = 1;
  const options *o = &causal;
  dec d;
  memset(&d, 0, sizeof d);
  d.o = o;
  d.ctx = ctx;
  d.table = table;
  d.json = json;
  dua_status st = dua_context_device_info(ctx, &d.info);
  if (st != DUA_SUCCESS)
    die_dua(ctx, st, "dua_context_device_info");
  d.clock.ctx = ctx;
  d.clock.queue = dua_context_cl_queue(ctx);
  d.clock.events_ok = queue_profiles(d.clock.queue);
  d.B = o->batch, d.Hq = o->heads, d.Hkv = o->kv_heads, d.Dh = o->dim, d.T = o->tokens;
  if (o->block < 16 || o->block > 256 || (o->block & (o->block - 1))) {
    fprintf(stderr, "dua-bench: --block %d must be a power of two in 16..256\n", o->block);
    return 2;
  }
  d.copy_measured = o->copy_gbs <= 0;
  d.copy_gbs = d.copy_measured ? measure_copy(&d) : o->copy_gbs;
  d.lens = xmalloc((size_t)d.B * sizeof(int32_t));
  d.seqs = xmalloc((size_t)d.B * sizeof(int32_t));
  fprintf(d.table, "\ndua-bench on %s (%s, driver %s), pass decode, copy bandwidth %.1f GB/s (%s)\n",
          d.info.name, d.info.platform_name, d.info.driver_version, d.copy_gbs,
          d.copy_measured ? "measured" : "--copy-gbs");
  for (int ni = 0; ni < o->nn; ni++) {
    d.n = o->n[ni];
    uint64_t rs = o->seed * 31ull + (uint64_t)d.n;
    for (int b = 0; b < d.B; b++)
      d.lens[b] = o->ragged ? d.n / 2 + (int)(splitmix(&rs) % (uint64_t)(d.n - d.n / 2 + 1)) : d.n;
    const int nb = (d.n + o->block - 1) / o->block, D = tree_depth(nb, o->arity < 2 ? 2 : o->arity);
    for (int ti = 0; ti < o->ndtype; ti++) {
      d.dtype = o->dtype[ti];
      d.es = dua_dtype_size(d.dtype);
      build(&d);
      fprintf(stderr, "problem n=%d%s B=%d H=%d Hkv=%d Dh=%d page=%d blk=%d T=%d %s (tree depth %d)\n", d.n,
              o->ragged ? " (ragged)" : "", d.B, d.Hq, d.Hkv, d.Dh, o->page, o->block, d.T,
              dtype_name(d.dtype), D);
      double dense_ms = -1;
      if (!o->no_dense) {
        dua_layout *dense = make_layout(o, d.n, 1, d.Hq, NULL, 0);
        row r;
        run_variant(&d, dense, "dua_dense_decode", 0, 0, -1, &r);
        dense_ms = r.t.ms;
        report(&d, &r);
        dua_layout_destroy(dense);
      }
      int32_t *depths = xmalloc((size_t)d.Hq * sizeof(int32_t));
      for (int k = 0; k < (o->nhead_depths ? 1 : o->ndepth); k++) {
        resolve_depths(o, o->depth[k], D, depths);
        int uniform_depth = depths[0];
        for (int h = 1; h < d.Hq; h++)
          uniform_depth = depths[h] == depths[0] ? uniform_depth : -2;
        dua_layout *sparse = make_layout(o, d.n, 1, d.Hq, depths, 1);
        row r;
        run_variant(&d, sparse, "dua_sparse_decode", uniform_depth, 1, dense_ms, &r);
        report(&d, &r);
        dua_layout_destroy(sparse);
      }
      free(depths);
      release(&d);
    }
  }
  fprintf(d.table,
          "ms: median per call (%s); kv_MB: K/V bytes read (units holding a visible key); GB/s: (K/V read + "
          "Q + O) / "
          "ms; of_copy: of %.1f GB/s device copy; of_cp_n: a copy moving the call's bytes, device time / ms; "
          "x_dense: dua_dense_decode ms / ms; ideal: dense K/V bytes "
          "/ K/V "
          "bytes; depth -2 = per-head depths\n",
          d.clock.events_ok && o->use_events ? "device time from profiling markers" : "host wall clock",
          d.copy_gbs);
  free(d.lens);
  free(d.seqs);
  return 0;
}
