#!/usr/bin/env python3
"""phase_clocks.py: where a work-group of dua's wgmma kernels spends its clocks, phase by phase, measured on the
GPU by the SM's own clock: the forward (cl/attn_fwd_mma.cl, two m-tiles) and the backward's two passes
(cl/attn_bwd_mma.cl, dQ and dK/dV).

  python3 bench/phase_clocks.py make DEST [fwd]  a copy of cl/ in DEST whose kernels read %clock (warp 0)
                                                 around each phase of their tile loop and printf the sums
  DUA_CL_DIR=$PWD/DEST dua-bench ... > log        (on the GPU machine; every launch prints its samples)
  python3 bench/phase_clocks.py summarize LOG... the mean clocks per work-group and per tile

A developer diagnostic (bench/NOTES-mma.md, sixteenth session): the reads cost time of their own (the forward
at dense N 8192 ran 3.74 ms instrumented against 2.99), so compare phases with each other, not with timings
of the plain kernels. Sampled work-groups: batch 0, head 0, every sixteenth tile from the fifth. Forward
phases of one key tile: the wait for K/V and the barrier; the next tile's bookkeeping and copies; S issued and
S0 waited for; m-tile 0's softmax; P0 V issued and S1 waited for; m-tile 1's softmax; P1 V and the wait for
all (layouts run with one m-tile, causal and few blocks, skip the last four). Backward phases of one tile:
the wait and barrier; the next tile and copies; the score products (S and dP, or S^T and dP^T) and their
wait; the softmax gradient and packing; the last products (dQ += dS K, or dV and dK) and their wait."""
import re
import shutil
import sys

PHASES = {
    'CLK': ['wait K/V + barrier', 'next tile + copies', 'S + wait S0', 'softmax 0', 'P0 V + wait S1', 'softmax 1',
            'P1 V + wait all'],
    'CLKQ': ['wait + barrier', 'next tile + copies', 'S, dP + wait', 'softmax grad + pack', 'dQ += dS K + wait'],
    'CLKKV': ['wait + barrier', 'next tile + copies', 'S^T, dP^T + wait', 'softmax grad + pack',
              'dV, dK + wait'],
}
PRINT = ('  if (tid == 0 && get_group_id(1) == 0 && get_group_id(2) == 0 && get_group_id(0) % 16 == 5)\n'
         '    printf("{tag} g=%d tiles=%u total=%u pro=%u loop=%u epi=%u ph={fmt}\\n", (int)get_group_id(0), '
         'n_tiles,\n           clk() - c_start, c_loop0 - c_start, c_prev - c_loop0, clk() - c_prev, {args});\n')
CLOCKS = ('  const uint c_start = clk();\n  uint ph[7] = {0, 0, 0, 0, 0, 0, 0}, c_prev = 0, c_loop0 = 0, n_tiles = 0;\n')


def printf_of(tag, n):
    return PRINT.format(tag=tag, fmt=','.join(['%u'] * n), args=', '.join(f'ph[{i}]' for i in range(n)))


def apply(path, edits):
    src = open(path).read()
    for old, new in edits:
        if src.count(old) != 1:
            sys.exit(f'{sys.argv[0]}: {path} changed, edit not applicable: {old[:70]!r}')
        src = src.replace(old, new)
    return src


def fwd_phase_edits(mark):
    """The edits that put mark(i) (a statement) at the end of the wgmma forward's key-loop phase i (PHASES['CLK']),
    for this tool and bench/wg_timeline.py."""
    return [
        ("every warp is done with tile j - 1's buffers */\n",
         "every warp is done with tile j - 1's buffers */\n    " + mark(0) + '\n'),
        ('    cp_commit();\n#endif\n#else\n', '    cp_commit();\n#endif\n    ' + mark(1) + '\n#else\n'),
        ('k_t, s[1], q_s + BN * HEAD_DIM, k_t EMU_ARGS);\n#endif\n',
         'k_t, s[1], q_s + BN * HEAD_DIM, k_t EMU_ARGS);\n#endif\n    ' + mark(2) + '\n'),
        ("      if (mt == 0) { /* O0 += P0 V runs while m-tile 1's softmax does; S1 is done on return */\n",
         "      if (mt == 0) { /* O0 += P0 V runs while m-tile 1's softmax does; S1 is done on return */\n"
         '        ' + mark(3) + " /* the two-m-tile TMA kernel's wait for V counts in P0 V */\n"),
        ('        wgmma_rs_nmajor_then_wait1(acc[0], pa[0], v_t, s[1] EMU_ARGS);\n      } else {\n'
         '        wgmma_rs_nmajor_then_wait0(acc[1], pa[1], v_t, acc[0], pa[0] EMU_ARGS);\n      }\n',
         '        wgmma_rs_nmajor_then_wait1(acc[0], pa[0], v_t, s[1] EMU_ARGS);\n        ' + mark(4) + '\n'
         '      } else {\n        ' + mark(5) + '\n'
         '        wgmma_rs_nmajor_then_wait0(acc[1], pa[1], v_t, acc[0], pa[0] EMU_ARGS);\n        ' + mark(6) +
         '\n      }\n'),
    ]


def make(dest, passes='all'):
    shutil.copytree('cl', dest)
    path = f'{dest}/attn_fwd_mma.cl'
    src = open(path).read()
    edits = [
        ('} dua_fwd_shape;\n',
         '} dua_fwd_shape;\ninline uint clk(void) {\n  uint c;\n'
         '  asm volatile("mov.u32 %0, %%clock;" : "=r"(c) :: "memory");\n  return c;\n}\n'),
        ('g = lane >> 2, t = lane & 3;\n',
         'g = lane >> 2, t = lane & 3;\n' + CLOCKS +
         '#define PH(i) do { const uint c_ = clk(); ph[i] += c_ - c_prev; c_prev = c_; } while (0)\n'),
        ('  while (have) {\n', '  c_loop0 = c_prev = clk();\n  while (have) {\n    n_tiles++;\n'),
    ] + fwd_phase_edits(lambda i: f'PH({i});')
    src = apply(path, edits)
    end = src.index('\n}\n', src.index('void\ndua_attn_fwd_mma(')) + 1  # the forward kernel's closing brace
    open(path, 'w').write(src[:end] + printf_of('CLK', 7) + src[end:])
    if passes == 'fwd':
        return
    # the backward's two passes (built after attn_fwd_mma.cl: clk() and PH come from there)
    path = f'{dest}/attn_bwd_mma.cl'
    loop = '  int stage = 0; /* BWD_STAGES 2: the buffers of tile j */\n  while (have) {\n'
    src = apply(path, [
        ('    __global const int *list_indices) {\n', '    __global const int *list_indices) {\n' + CLOCKS),
        ('    __global const int *tlist_full, __global const int *tlist_indices) {\n',
         '    __global const int *tlist_full, __global const int *tlist_indices) {\n' + CLOCKS),
        (loop + '    __local ushort *k_t', '  c_loop0 = c_prev = clk();\n' + loop + '    n_tiles++;\n    __local ushort *k_t'),
        (loop + '    __local ushort *q_t', '  c_loop0 = c_prev = clk();\n' + loop + '    n_tiles++;\n    __local ushort *q_t'),
        ('    staged_tile_ready();\n    tile_pos nxt = cur;\n', '    staged_tile_ready();\n    PH(0);\n    tile_pos nxt = cur;\n'),
        ('    staged_tile_ready();\n    const float4 lane_st =\n',
         '    staged_tile_ready();\n    PH(0);\n    const float4 lane_st =\n'),
        ('    cp_commit();\n    /* unmasked tiles per work-group, as the wgmma forward',
         '    cp_commit();\n    PH(1);\n    /* unmasked tiles per work-group, as the wgmma forward'),
        ('    cp_commit();\n    /* unmasked tiles per work-group, as the dq pass',
         '    cp_commit();\n    PH(1);\n    /* unmasked tiles per work-group, as the dq pass'),
        ('    mma_rows_x_tiles(s, qa, k_t, dp, ga, v_t, STILES EMU_ARGS);\n',
         '    mma_rows_x_tiles(s, qa, k_t, dp, ga, v_t, STILES EMU_ARGS);\n    PH(2);\n'),
        ('    mma_acc_tile(acc, dsa, k_t EMU_ARGS); /* dQ += dS K */\n',
         '    PH(3);\n    mma_acc_tile(acc, dsa, k_t EMU_ARGS); /* dQ += dS K */\n    PH(4);\n'),
        ('do_t + c0 * V_PITCH, KV_COLS / 8 EMU_ARGS);\n', 'do_t + c0 * V_PITCH, KV_COLS / 8 EMU_ARGS);\n      PH(2);\n'),
        ('      wgmma_rs_nmajor_pair(dv_acc, pa, do_t, dk_acc, dsa, q_t EMU_ARGS);\n',
         '      PH(3);\n      wgmma_rs_nmajor_pair(dv_acc, pa, do_t, dk_acc, dsa, q_t EMU_ARGS);\n      PH(4);\n'),
    ])
    dq_end = src.index('\n}\n', src.index('void dua_attn_bwd_dq_mma(')) + 1  # the kernel's closing brace
    end = src.rindex('}')
    src = src[:dq_end] + printf_of('CLKQ', 5) + src[dq_end:end] + printf_of('CLKKV', 5) + '}\n'
    open(path, 'w').write(src)


def summarize(paths):
    for path in paths:
        rows = []
        for line in open(path):
            m = re.match(r'(CLK\w*) g=\d+ tiles=(\d+) total=(\d+) pro=(\d+) loop=(\d+) epi=(\d+) ph=([\d,]+)',
                         line)
            if m:
                rows.append((m.group(1), [int(x) for x in m.groups()[1:6]] + [int(x) for x in m.group(7).split(',')]))
        if not rows:
            print(f'{path}: no CLK lines')
        for tag in PHASES:
            sel = [r for t, r in rows if t == tag]
            if not sel:
                continue
            avg = [sum(r[i] for r in sel) / len(sel) for i in range(len(sel[0]))]
            tiles = max(avg[0], 1)
            print(f'{path} {tag}: {len(sel)} work-groups, {avg[0]:.1f} tiles each; clocks: total {avg[1]:.0f}, '
                  f'prologue {avg[2]:.0f}, loop {avg[3]:.0f} ({avg[3] / tiles:.0f} per tile), epilogue {avg[4]:.0f}')
            print('  per tile: ' + ', '.join(f'{name} {avg[5 + i] / tiles:.0f}' for i, name in enumerate(PHASES[tag])))


if __name__ == '__main__':
    if len(sys.argv) in (3, 4) and sys.argv[1] == 'make':
        make(*sys.argv[2:])
    elif len(sys.argv) >= 3 and sys.argv[1] == 'summarize':
        summarize(sys.argv[2:])
    else:
        sys.exit(__doc__)
