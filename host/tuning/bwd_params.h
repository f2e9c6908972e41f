/* bwd_params.h: tile parameters of the portable backward kernels (cl/attn_bwd.cl), from one place. */
#ifndef DUA_BWD_PARAMS_H
#define DUA_BWD_PARAMS_H

#include "dua.h"

typedef struct dua_bwd_params {
  int block_m;   /* query rows per tile (dQ pass; query chunk of the dK/dV pass) */
  int block_n;   /* key rows per tile (dK/dV pass; key chunk of the dQ pass) */
  int threads_m; /* work-group is threads_m x threads_n */
  int threads_n;
} dua_bwd_params;

/* Local memory (bytes) of the larger of the two passes, their optional arrays included. */
size_t dua_bwd_local_bytes(const dua_bwd_params *p, int head_dim);
int dua_bwd_params_valid(const dua_bwd_params *p, int head_dim, int layout_block, const dua_device_info *dev);
dua_bwd_params dua_bwd_params_default(int head_dim, int layout_block, const dua_device_info *dev);

#endif
