/* ptx_sm90a.c: turns the PTX that NVIDIA's OpenCL compiler returns for sm_90 into sm_90a PTX by uncommenting
 * the Hopper-only instructions a kernel carries as "// DUA_SM90A <instruction>" comments in its inline asm
 * (cl/nv_wgmma_ops.cl explains why). program.c builds the result again with clCreateProgramWithBinary. */
#include "runtime/context_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

char *dua_ptx_to_sm90a(const char *ptx, int *markers) {
  static const char mark[] = "// DUA_SM90A ", target[] = ".target sm_90";
  *markers = 0;
  const char *tp = strstr(ptx, target);
  if (!tp || isalnum((unsigned char)tp[sizeof target - 1])) /* sm_90 exactly ("sm_90, texmode..." is fine) */
    return NULL;
  char *out = malloc(strlen(ptx) + 2); /* one byte longer for the "a" */
  if (!out)
    return NULL;
  size_t o = 0;
  for (const char *p = ptx; *p;) {
    if (p == tp) {
      memcpy(out + o, ".target sm_90a", 14);
      o += 14, p += sizeof target - 1;
    } else if (strncmp(p, mark, sizeof mark - 1) == 0) {
      p += sizeof mark - 1;
      (*markers)++;
    } else {
      out[o++] = *p++;
    }
  }
  out[o] = '\0';
  return out;
}
