/* wg_timeline.c: when and where each work-group of one fp16 forward ran (a developer diagnostic,
 * bench/NOTES-mma.md twenty-eighth session). Run with DUA_CL_DIR set to a copy of cl/ made by `python3
 * bench/wg_timeline.py make DEST`, whose forward writes, instead of LSE rows row0 .. row0 + 19 of each row
 * tile, the work-group's SM, its start on the global timer and its clocks at the first key tile, the loop's
 * end and its own end. Runs the forward `reps` times on the same buffers (TMA from the third) and prints the
 * last call's records as CSV on stdout:
 *   b,h,row0,smid,gstart_ns,gdur_ns,c_first,c_loop,c_end,gid,c_kv_issued,c_q_issued,c_kv_landed,c_q_landed
 * (clocks from the work-group's start; 0: the mark was not reached), then, with `make --phases`, the key
 * loop's seven phases summed over the work-group's tiles and their count (0 without). Each call is finished
 * before the next, so that the tensor maps' read has completed by the third. WGT_DEBUG=1: the library's debug
 * log (which kernel each call ran) and each row tile's first words; WGT_EMULATE=1: the emulated wgmma and TMA
 * kernels (PoCL), to check this program and the edits of wg_timeline.py (with its clock reads replaced).
 * usage: dua_wg_timeline N DEPTH CAUSAL [BATCH HEADS REPS] */
#include "dua.h"
#include "runtime/context_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check(dua_status s, dua_context *ctx, const char *what) {
  if (s == DUA_SUCCESS)
    return 0;
  fprintf(stderr, "wg_timeline: %s: %s (%s)\n", what, dua_status_string(s),
          ctx ? dua_context_last_error(ctx) : "");
  return 1;
}

static void log_line(dua_log_level level, const char *message, void *user) {
  (void)user;
  if (level <= (getenv("WGT_DEBUG") ? DUA_LOG_DEBUG : DUA_LOG_INFO))
    fprintf(stderr, "dua: %s\n", message);
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s N DEPTH CAUSAL [BATCH HEADS REPS]\n", argv[0]);
    return 2;
  }
  const int n = atoi(argv[1]), depth = atoi(argv[2]), causal = atoi(argv[3]);
  const int batch = argc > 4 ? atoi(argv[4]) : 8, heads = argc > 5 ? atoi(argv[5]) : 8;
  const int reps = argc > 6 ? atoi(argv[6]) : 5, dh = 64, blk = 128;
  dua_context *ctx = NULL;
  dua_context_options opt;
  dua_context_options_init(&opt);
  opt.log = log_line;
  opt.log_level = DUA_LOG_DEBUG;
  if (check(dua_context_create(&opt, &ctx), NULL, "context"))
    return 1;
  if (getenv("WGT_EMULATE")) { /* checking this program on PoCL: the emulated wgmma and TMA kernels */
    ctx->info.nv_mma_f16 = ctx->info.nv_mma_tf32 = ctx->info.nv_wgmma = 1;
    ctx->tma_emulated = 1;
  }
  int32_t depths[256];
  for (int h = 0; h < heads && h < 256; h++)
    depths[h] = depth;
  dua_layout_desc d;
  memset(&d, 0, sizeof d);
  d.seq_len = n;
  d.block = blk;
  d.batch = batch;
  d.heads = heads;
  d.arity = 2;
  d.depths = depths;
  d.causal = causal;
  char err[256];
  dua_layout *layout = NULL;
  if (dua_layout_create(&d, &layout, err, sizeof err) != DUA_SUCCESS) {
    fprintf(stderr, "wg_timeline: layout: %s\n", err);
    return 1;
  }
  const size_t elems = (size_t)batch * heads * n * dh, rows = (size_t)batch * heads * n;
  uint16_t *host = malloc(elems * 2);
  float *lse = malloc(rows * 4);
  if (!host || !lse)
    return 1;
  srand(1);
  dua_buffer *buf[5];
  for (int i = 0; i < 5; i++) {
    const size_t bytes = i < 4 ? elems * 2 : rows * 4;
    if (check(dua_buffer_create(ctx, bytes, &buf[i]), ctx, "buffer"))
      return 1;
    if (i < 3) {
      for (size_t e = 0; e < elems; e++)
        host[e] = dua_float_to_half((float)rand() / RAND_MAX - 0.5f);
      if (check(dua_buffer_write(buf[i], 0, bytes, host), ctx, "write"))
        return 1;
    }
  }
  dua_tensor t[5];
  for (int i = 0; i < 4; i++)
    t[i] = dua_tensor_contiguous(buf[i], 0, DUA_F16, batch, heads, n, dh);
  t[4] = dua_tensor_contiguous(buf[4], 0, DUA_F32, batch, heads, n, 1);
  dua_attention_params p;
  dua_attention_params_init(&p);
  for (int r = 0; r < reps; r++) /* each call finished: the TMA maps' read completes before the next call */
    if (check(dua_attention_forward(ctx, layout, &p, &t[0], &t[1], &t[2], &t[3], &t[4]), ctx, "forward") ||
        check(dua_context_finish(ctx), ctx, "finish"))
      return 1;
  if (check(dua_buffer_read(buf[4], 0, rows * 4, lse), ctx, "read"))
    return 1;
  printf("b,h,row0,smid,gstart_ns,gdur_ns,c_first,c_loop,c_end,gid,c_kv_issued,c_q_issued,c_kv_landed,c_q_"
         "landed,ph0,ph1,ph2,ph3,ph4,ph5,ph6,tiles\n");
  long written = 0;
  for (int b = 0; b < batch; b++)
    for (int h = 0; h < heads; h++)
      for (int r0 = 0; r0 + 20 <= n; r0 += 64) { /* row tiles of 64 or 128 rows */
        uint32_t w[20];
        memcpy(w, lse + ((size_t)(b * heads + h) * n + r0), sizeof w);
        if (getenv("WGT_DEBUG"))
          fprintf(stderr, "%d %d %d: %08x %08x %08x\n", b, h, r0, w[0], w[1], w[3]);
        if ((w[0] >> 16) != 0x7e00u)
          continue; /* not written by the instrumented kernel */
        written++;
        printf("%d,%d,%d,%u,%llu", b, h, r0, w[0] & 0xffffu,
               (unsigned long long)w[1] | (unsigned long long)w[2] << 32);
        for (int i = 3; i < 20; i++)
          printf(",%u", w[i]);
        printf("\n");
      }
  fprintf(stderr, "wg_timeline: %ld work-group records\n", written);
  return written ? 0 : 1;
}
