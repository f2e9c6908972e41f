#!/usr/bin/env python3
"""dyck_lm_floor.py: the Bayes floor of dua-train's dyck-lm task (host/train/task_dyck.c), the mean over
positions of the entropy of the next token given the whole prefix, by Monte Carlo over generated words.

Usage: python3 bench/dyck_lm_floor.py [--seq-len 1024] [--kinds 2] [--depth 16] [--words 400] [--seed 1]
                                      [--window W ...]
The generator is mirrored: at depth d with S - t - 1 positions left an opener is allowed iff d < m and
d + 1 <= S - t - 1, a closer iff d > 0; with both allowed, opener (kind uniform) or closer with probability
1/2 each. Given the prefix the model can know d and the open kinds, so the entropy of the next token is
0.5 ln(2k) + 0.5 ln 2 with both allowed, ln k with only an opener allowed, 0 with only the closer.

--window W adds, for each W, the floor of a predictor that knows the depth but sees only its last W tokens
(query position q = t - 1 sees q - W + 1 .. q): when the innermost open bracket lies before that, a closer's
kind is a coin flip (+ln k where a closer is forced, +0.5 ln k where an opener may also come). It bounds what
attention restricted to a window can reach; knowing the depth itself needs every earlier token."""
import argparse
import math
import random


def floor(seq_len, kinds, depth, words, seed, window=None):
    rng = random.Random(seed)
    m = min(depth, seq_len // 2)
    both = 0.5 * math.log(2 * kinds) + 0.5 * math.log(2)
    total, count = 0.0, 0
    for _ in range(words):
        d, stack = 0, []  # stack: positions of the open brackets
        for t in range(seq_len):
            can_open = d < m and d + 1 <= seq_len - t - 1
            can_close = d > 0
            if t > 0:  # token t is the target of position t - 1
                total += both if can_open and can_close else (math.log(kinds) if can_open else 0.0)
                unseen = window is not None and can_close and (t - 1) - stack[-1] >= window
                if unseen:
                    total += 0.5 * math.log(kinds) if can_open else math.log(kinds)
                count += 1
            opener = can_open and (not can_close or rng.random() < 0.5)
            if opener:
                stack.append(t)
            else:
                stack.pop()
            d += 1 if opener else -1
    return total / count


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--kinds", type=int, default=2)
    p.add_argument("--depth", type=int, default=16)
    p.add_argument("--words", type=int, default=400)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--window", type=int, nargs="*", default=[])
    a = p.parse_args()
    print(f"dyck-lm floor, S={a.seq_len} k={a.kinds} depth<={a.depth}: "
          f"{floor(a.seq_len, a.kinds, a.depth, a.words, a.seed):.4f} nats per token")
    for w in a.window:
        print(f"  seeing the last {w} tokens, depth known: "
              f"{floor(a.seq_len, a.kinds, a.depth, a.words, a.seed, w):.4f}")


if __name__ == "__main__":
    main()
