#!/usr/bin/env python3
"""wg_timeline.py: when and where each work-group of dua's wgmma forward runs (a developer diagnostic,
bench/NOTES-mma.md twenty-eighth session).

  python3 bench/wg_timeline.py make DEST [SRC] [--phases]   a copy of cl/ (or SRC) in DEST whose forward (TMA or one m-tile builds)
                                              writes each work-group's SM, global-timer start and clocks at
                                              its first key tile, loop end and end into LSE rows row0..row0+7
  DUA_CL_DIR=$PWD/DEST dua_wg_timeline N DEPTH CAUSAL [B H REPS] > CSV   (on the GPU machine)
  python3 bench/wg_timeline.py summarize CSV...   phases per work-group, and how often an SM's work-groups
                                                  are all outside their key loop at once

The two-m-tile cp.async build fills its 48 KB of local memory: it is not instrumented (its records are
missing; the TMA build from the third call on is)."""
import csv
import shutil
import sys

from phase_clocks import apply, fwd_phase_edits  # bench/phase_clocks.py

ON = '(DUA_WG_TIMELINE && (DUA_TMA || MT == 1) && !DUA_MMA_EMULATE)'


def make(dest, src='cl', phases=False):
    shutil.copytree(src, dest)
    path = f'{dest}/attn_fwd_mma.cl'
    edits = [
        ('  EMU_LOCALS\n',
         '  EMU_LOCALS\n#define DUA_WG_TIMELINE 1\n#if ' + ON + '\n'
         '  __local ulong wgt[18]; /* global timer at the start; clocks at the start, first tile, loop end, marks;\n'
         '                          key-loop phase sums, tiles, the last phase clock */\n'
         '  if (get_local_id(0) == 0) {\n'
         '    ulong g_, c_;\n'
         '    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g_)::"memory");\n'
         '    asm volatile("mov.u64 %0, %%clock64;" : "=l"(c_)::"memory");\n'
         '    wgt[0] = g_;\n    wgt[1] = c_;\n    for (int i_ = 2; i_ < 18; i_++)\n      wgt[i_] = 0;\n  }\n'
         '#define WGT_MARK(i) do { if (get_local_id(0) == 0 && wgt[i] == 0) { ulong c_; '
         'asm volatile("mov.u64 %0, %%clock64;" : "=l"(c_)::"memory"); wgt[i] = c_; } } while (0)\n'
         '#define WGT_PHASE(k) do { if (get_local_id(0) == 0) { ulong c_; '
         'asm volatile("mov.u64 %0, %%clock64;" : "=l"(c_)::"memory"); if ((k) >= 0) wgt[8 + (k)] += c_ - wgt[17]; '
         'wgt[17] = c_; } } while (0)\n'
         '#define WGT_TILE() do { if (get_local_id(0) == 0) wgt[16]++; } while (0)\n'
         '#else\n#define WGT_MARK(i)\n#define WGT_PHASE(k)\n#define WGT_TILE()\n#endif\n'),
        # marks: 4 first K/V copy issued, 5 Q copies issued, 6 first K/V landed, 7 Q landed
        ('                   hk, b);\n#else\n  if (first_copied)\n',
         '                   hk, b);\n  WGT_MARK(4);\n#else\n  if (first_copied)\n'),
        ('    /* committed with K(0) and V(0): one round trip to memory before the first tile */\n',
         '    /* committed with K(0) and V(0): one round trip to memory before the first tile */\n  WGT_MARK(5);\n'),
        ('    tma_phases ^= 1u << stage;\n    if (q_pending) { /* and, at the first tile, Q */\n      CP_WAIT(0);\n',
         '    tma_phases ^= 1u << stage;\n    WGT_MARK(6);\n    if (q_pending) { /* and, at the first tile, Q */\n      CP_WAIT(0);\n      WGT_MARK(7);\n'),
        ("    barrier(CLK_LOCAL_MEM_FENCE); /* ... for every warp, and every warp is done with tile j - 1's buffers */\n",
         "    barrier(CLK_LOCAL_MEM_FENCE); /* ... for every warp, and every warp is done with tile j - 1's buffers */\n"
         '    WGT_MARK(2);\n'),
        ('#if DUA_TMA && DUA_MMA_EMULATE\n',
         '  WGT_MARK(3);\n#if DUA_TMA && DUA_MMA_EMULATE\n'),
    ]
    if phases:  # the key loop's phases, as phase_clocks.py's, summed per work-group (work-item 0's clock)
        edits += [
            ('  int stage = 0; /* STAGES 2: the buffers of tile j */\n',
             '  int stage = 0; /* STAGES 2: the buffers of tile j */\n  WGT_PHASE(-1);\n'),
        ] + fwd_phase_edits(lambda i: f'WGT_PHASE({i});' + ('\n    WGT_TILE();' if i == 0 else ''))
    src = apply(path, edits)
    end = src.index('\n}\n', src.index('void\ndua_attn_fwd_mma(')) + 1  # the kernel's closing brace
    tail = ('#if ' + ON + '\n'
            '  barrier(CLK_GLOBAL_MEM_FENCE | CLK_LOCAL_MEM_FENCE);\n'
            '  if (tid == 0 && has_lse && writes && row0 + 20 <= shape.n_tokens) {\n'
            '    ulong g_, c_;\n    uint sm_;\n'
            '    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g_)::"memory");\n'
            '    asm volatile("mov.u64 %0, %%clock64;" : "=l"(c_)::"memory");\n'
            '    asm volatile("mov.u32 %0, %%smid;" : "=r"(sm_));\n'
            '    __global uint *at = (__global uint *)(lse + aux_offsets.s0 + b * lse_strides.s0 + h * lse_strides.s1);\n'
            '    const uint rec[20] = {0x7e000000u | sm_, (uint)wgt[0], (uint)(wgt[0] >> 32), (uint)(g_ - wgt[0]),\n'
            '                         wgt[2] ? (uint)(wgt[2] - wgt[1]) : 0u, (uint)(wgt[3] - wgt[1]), (uint)(c_ - wgt[1]),\n'
            '                         get_group_id(0) + get_num_groups(0) * (get_group_id(1) + get_num_groups(1) * get_group_id(2)),\n'
            '                         wgt[4] ? (uint)(wgt[4] - wgt[1]) : 0u, wgt[5] ? (uint)(wgt[5] - wgt[1]) : 0u,\n'
            '                         wgt[6] ? (uint)(wgt[6] - wgt[1]) : 0u, wgt[7] ? (uint)(wgt[7] - wgt[1]) : 0u,\n'
            '                         (uint)wgt[8], (uint)wgt[9], (uint)wgt[10], (uint)wgt[11], (uint)wgt[12],\n'
            '                         (uint)wgt[13], (uint)wgt[14], (uint)wgt[16]};\n'
            '    for (int i = 0; i < 20; i++)\n'
            '      at[(row0 + i) * lse_strides.s2] = rec[i];\n'
            '  }\n#endif\n')
    src = src[:end] + tail + src[end:]
    open(path, 'w').write(src)


def summarize(paths):
    for path in paths:
        rows = [{k: int(v) for k, v in r.items()} for r in csv.DictReader(open(path))]
        if not rows:
            print(f'{path}: no records')
            continue
        n = len(rows)
        hz = sum(r['c_end'] for r in rows) / max(1, sum(r['gdur_ns'] for r in rows))  # clocks per ns
        mean = lambda k: sum(r[k] for r in rows) / n
        pro, loop, end = mean('c_first'), mean('c_loop'), mean('c_end')
        print(f'{path}: {n} work-groups, SM clock {hz:.2f} GHz; clocks per work-group: prologue + first wait '
              f'{pro:.0f}, key loop {loop - pro:.0f}, epilogue {end - loop:.0f}, total {end:.0f} '
              f'({(end - (loop - pro)) / end * 100:.1f}% outside the loop)')
        med = lambda k: sorted(r[k] for r in rows)[n // 2]
        if 'c_q_landed' in rows[0]:
            print(f'  prologue marks (median clocks from the start): first K/V copy issued {med("c_kv_issued")}, '
                  f'Q copies issued {med("c_q_issued")}, first K/V landed {med("c_kv_landed")}, Q landed '
                  f'{med("c_q_landed")}, first tile begins {med("c_first")}')
        if rows[0].get('tiles', 0):
            names = ['wait K/V + barrier', 'next tile + copies', 'S + wait S0', 'softmax 0', 'P0 V + wait S1',
                     'softmax 1', 'P1 V + wait all']
            tiles = sum(r['tiles'] for r in rows)
            print('  key loop per tile (work-item 0): ' + ', '.join(
                f'{nm} {sum(r[f"ph{i}"] for r in rows) / tiles:.0f}' for i, nm in enumerate(names)))
        t0 = min(r['gstart_ns'] for r in rows)
        t1 = max(r['gstart_ns'] + r['gdur_ns'] for r in rows)
        print(f'  launch span {(t1 - t0) / 1e3:.1f} us (global timer)')
        # per SM: time with k work-groups inside their key loop (global-timer instants from the clocks)
        by_sm = {}
        for r in rows:
            s = r['gstart_ns'] - t0
            a = s + r['c_first'] / hz
            b = s + r['c_loop'] / hz
            e = s + r['gdur_ns']
            by_sm.setdefault(r['smid'], []).append((s, a, b, e))
        occ_loop = {}
        occ_any = {}
        total = 0.0
        for sm, recs in by_sm.items():
            ev = []
            for s, a, b, e in recs:
                ev += [(a, 0, 1), (b, 0, -1), (s, 1, 1), (e, 1, -1)]
            ev.sort()
            inl = alive = 0
            last = ev[0][0]
            for tm, kind, d in ev:
                dt = tm - last
                occ_loop[inl] = occ_loop.get(inl, 0) + dt
                occ_any[alive] = occ_any.get(alive, 0) + dt
                total += dt
                last = tm
                if kind == 0:
                    inl += d
                else:
                    alive += d
        fmt = lambda occ: ', '.join(f'{k}: {v / total * 100:.1f}%' for k, v in sorted(occ.items()))
        print(f'  SM time by work-groups in their key loop: {fmt(occ_loop)}')
        print(f'  SM time by work-groups resident:          {fmt(occ_any)}')
        starts = sorted(r['gstart_ns'] - t0 for r in rows)
        print(f'  work-groups per SM: {n / len(by_sm):.1f} on {len(by_sm)} SMs; first start spread '
              f'{starts[min(len(starts) - 1, len(by_sm) * 3 - 1)] / 1e3:.2f} us for the first {len(by_sm) * 3}')


if __name__ == '__main__':
    if 3 <= len(sys.argv) <= 5 and sys.argv[1] == 'make':
        args = [a for a in sys.argv[2:] if a != '--phases']
        make(*args, phases='--phases' in sys.argv)
    elif len(sys.argv) >= 3 and sys.argv[1] == 'summarize':
        summarize(sys.argv[2:])
    else:
        sys.exit(__doc__)
