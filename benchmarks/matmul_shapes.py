"""How fast this CPU multiplies the default model's matrices, bf16 against fp32, in one run.

    .venv/bin/python benchmarks/matmul_shapes.py [--tokens 256,512,1024] [--reference-size 2048]

For SmolLM2-135M's linear layers (hidden 576, MLP 1536, key/value 192) at M tokens per step: GFLOP/s
of the forward product and of the two backward products (input gradient, weight gradient), in
bfloat16 and float32; and a 2048^3 product as the machine's reference rate. The training step's
matrix time is bounded by these shape rates, not by the 2048^3 peak. Run it alone: wall times depend
on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import time

import torch

SHAPES = ((576, 1536), (1536, 576), (576, 576), (576, 192))  # (in, out): gate/up, down, q/o, k/v


def rate(fn, flops: float, repeat: int = 20) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return flops * repeat / (time.perf_counter() - start) / 1e9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", default="256,512,1024", help="M values (tokens per step)")
    ap.add_argument("--reference-size", type=int, default=2048, help="side of the square reference product")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for dtype in (torch.bfloat16, torch.float32):
        n = args.reference_size
        a = torch.randn(n, n, dtype=dtype)
        print(f"{str(dtype)[6:]:9s} {n}^3 reference: {rate(lambda: a @ a, 2 * n ** 3, 5):6.0f} GFLOP/s")
    print("| tokens | in x out | dtype | forward | input grad | weight grad |")
    print("|---|---|---|---|---|---|")
    for m in (int(x) for x in args.tokens.split(",")):
        for k, n in SHAPES:
            for dtype in (torch.bfloat16, torch.float32):
                x, w, g = (torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype),
                           torch.randn(m, n, dtype=dtype))
                flops = 2 * m * k * n
                cells = [rate(lambda: torch.nn.functional.linear(x, w), flops), rate(lambda: g @ w, flops),
                         rate(lambda: g.t() @ x, flops)]
                print(f"| {m} | {k} x {n} | {str(dtype)[6:]} | " + " | ".join(f"{c:.0f}" for c in cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
