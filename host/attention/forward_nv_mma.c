/* forward_nv_mma.c: NVIDIA tensor-core (inline-PTX mma.sync) forward. Not written yet: every call falls back
 * to the portable kernel. */
#include "attention/forward_internal.h"

dua_status dua_forward_nv_mma(dua_context *ctx, const dua_fwd_call *call) {
  (void)ctx;
  (void)call;
  return DUA_ERROR_UNSUPPORTED;
}
