/* ptx_sm90a.c: turns the PTX that NVIDIA's OpenCL compiler returns for sm_90 into sm_90a PTX by uncommenting
 * the Hopper-only instructions a kernel carries as "// DUA_SM90A <instruction>" comments in its inline asm
 * (cl/nv_wgmma_ops.cl explains why). program.c builds the result again with clCreateProgramWithBinary.
 *
 * The same rewrite turns "DUA_ENTRY_PARAM_<n>" inside an entry into the name PTX gives that kernel's
 * argument n ("<entry>_param_<n>"), so that an instruction can take the address of an argument in parameter
 * space (a TMA tensor map passed by value).
 *
 * A kernel may also cap its registers (as CUDA's __launch_bounds__ would; OpenCL has no such attribute and
 * NVIDIA's driver ignores -cl-nv-maxrregcount): "// DUA_MAXNREG <n>" in its body, n in 24..255, becomes the
 * ".maxnreg <n>" directive of its entry. dua_ptx_caps applies only that, for any target. */
#include "runtime/context_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Whether p starts a kernel's declaration: ".entry " first on its line, after at most ".visible " or
 * ".weak " (so an ".entry " inside a comment or an instruction is not one). */
static int entry_at(const char *ptx, const char *p) {
  static const char entry[] = ".entry ";
  if (strncmp(p, entry, sizeof entry - 1) != 0)
    return 0;
  const char *line = p;
  while (line > ptx && line[-1] != '\n')
    line--;
  while (*line == ' ' || *line == '\t')
    line++;
  if (strncmp(line, ".visible ", 9) == 0)
    line += 9;
  else if (strncmp(line, ".weak ", 6) == 0)
    line += 6;
  return line == p;
}

/* The register cap the kernel body [body, end) asks for, 0 for none (or a malformed one). */
static int body_maxnreg(const char *body, const char *end) {
  static const char mark[] = "// DUA_MAXNREG ";
  const char *p = strstr(body, mark);
  if (!p || (end && p >= end))
    return 0;
  char *stop = NULL;
  const long n = strtol(p + sizeof mark - 1, &stop, 10);
  return stop != p + sizeof mark - 1 && n >= 24 && n <= 255 ? (int)n : 0;
}

static const char target[] = ".target sm_90";

/* The ".target sm_90" directive of ptx, NULL when ptx targets anything else ("sm_90, texmode..." is fine;
 * sm_90a or sm_900 are not). */
static const char *sm90_target(const char *ptx) {
  const char *tp = strstr(ptx, target);
  return tp && !isalnum((unsigned char)tp[sizeof target - 1]) ? tp : NULL;
}

int dua_ptx_targets_sm90(const char *ptx) {
  return sm90_target(ptx) != NULL;
}

/* The caps (*caps counts them); to_sm90a: also the target and the DUA_SM90A lines (*markers). */
static char *rewrite(const char *ptx, int to_sm90a, int *markers, int *caps) {
  static const char mark[] = "// DUA_SM90A ", entry[] = ".entry ", param[] = "DUA_ENTRY_PARAM_";
  *markers = *caps = 0;
  const char *tp = to_sm90a ? sm90_target(ptx) : NULL;
  if (to_sm90a && !tp)
    return NULL;
  size_t entries = 0, longest = 0, params = 0;
  for (const char *e = strstr(ptx, entry); e; e = strstr(e + 1, entry)) {
    const size_t len = strcspn(e + sizeof entry - 1, "( \t\n");
    longest = len > longest ? len : longest;
    entries++;
  }
  for (const char *e = strstr(ptx, param); e; e = strstr(e + 1, param))
    params++;
  /* the "a"; "\n.maxnreg NNN\n" per entry; an entry's name and "_param_" per argument name */
  char *out = malloc(strlen(ptx) + 2 + entries * 16 + params * (longest + 7));
  if (!out)
    return NULL;
  size_t o = 0;
  const char *brace = NULL; /* the opening brace of the current entry's body, while its cap is pending */
  int cap = 0;
  const char *entry_name = NULL; /* the current entry's name, name_len characters */
  size_t name_len = 0;
  for (const char *p = ptx; *p;) {
    if (entry_at(ptx, p)) {
      entry_name = p + sizeof entry - 1;
      name_len = strcspn(entry_name, "( \t\n");
      /* the body opens at the first brace: a parameter list holds none */
      const char *body = strchr(p, '{');
      const char *next = body ? strstr(body, entry) : NULL;
      while (next && !entry_at(ptx, next))
        next = strstr(next + 1, entry);
      cap = body ? body_maxnreg(body, next) : 0;
      brace = body && cap ? body : NULL;
    }
    if (p == brace) {
      o += (size_t)sprintf(out + o, "%s.maxnreg %d\n", o && out[o - 1] != '\n' ? "\n" : "", cap);
      brace = NULL;
      (*caps)++;
    }
    if (p == tp) {
      memcpy(out + o, ".target sm_90a", 14);
      o += 14, p += sizeof target - 1;
    } else if (to_sm90a && strncmp(p, mark, sizeof mark - 1) == 0) {
      p += sizeof mark - 1;
      (*markers)++;
    } else if (to_sm90a && entry_name && strncmp(p, param, sizeof param - 1) == 0) {
      memcpy(out + o, entry_name, name_len);
      o += name_len;
      memcpy(out + o, "_param_", 7);
      o += 7, p += sizeof param - 1;
    } else {
      out[o++] = *p++;
    }
  }
  out[o] = '\0';
  return out;
}

char *dua_ptx_to_sm90a(const char *ptx, int *markers) {
  int caps = 0;
  return rewrite(ptx, 1, markers, &caps);
}

char *dua_ptx_caps(const char *ptx, int *caps) {
  int markers = 0;
  return rewrite(ptx, 0, &markers, caps);
}
