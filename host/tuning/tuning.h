/* tuning.h: the lookup chain for kernel parameters on a context (order documented in dua.h, "tuning"):
 * DUA_FWD_TILE, the context's override, the tuning database file (read once per context), compiled
 * per-vendor defaults, generic defaults. */
#ifndef DUA_TUNING_H
#define DUA_TUNING_H

#include "dua.h"
#include "tuning/fwd_params.h"

/* The forward tile for (head_dim, fp16, layout block) and its source (origin text, may be NULL). Fails
 * only for an invalid DUA_FWD_TILE (DUA_ERROR_INVALID_ARGUMENT) or when no tile fits (DUA_ERROR_UNSUPPORTED).
 */
dua_status dua_tuning_fwd(dua_context *ctx, int head_dim, int fp16, int layout_block, dua_fwd_params *out,
                          dua_tuning_source *source, char *origin, size_t origin_size);

#endif
