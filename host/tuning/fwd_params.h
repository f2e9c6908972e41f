/* fwd_params.h: tile parameters of the portable forward kernel, and where they come from. One place for
 * them, so the autotuner and its database can feed the same struct later. */
#ifndef DUA_FWD_PARAMS_H
#define DUA_FWD_PARAMS_H

#include "dua.h"

typedef struct dua_fwd_params {
  int block_m;   /* query rows per work-group (divides the layout block, or equals it) */
  int block_n;   /* keys per inner step (divides the layout block) */
  int threads_m; /* work-group is threads_m x threads_n */
  int threads_n;
} dua_fwd_params;

/* Local memory (bytes) the forward kernel uses with these parameters, its optional arrays included. */
size_t dua_fwd_local_bytes(const dua_fwd_params *p, int head_dim);

/* Checks parameters against the kernel's divisibility rules and the device's limits; 0 if usable. */
int dua_fwd_params_valid(const dua_fwd_params *p, int head_dim, int layout_block, const dua_device_info *dev);

/* Device-aware defaults for (head_dim, layout block). Always returns valid parameters when one exists. */
dua_fwd_params dua_fwd_params_default(int head_dim, int layout_block, const dua_device_info *dev);

#endif
