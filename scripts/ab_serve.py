"""A/B the server between two source trees: closed-loop throughput in alternating pairs, medians and spreads.

    .venv/bin/python scripts/ab_serve.py /path/to/baseline/src --pairs 3 --seconds 5

Each run is ``rnnstream bench serve``'s closed loop (1,000 streams, batching on); run A is the baseline tree
(its ``src`` on PYTHONPATH, with its compiled kernel built in place: ``python setup.py build_ext --inplace``
in that tree), run B this checkout. A and B alternate, so the machine's drift between minutes falls on both.
"""

from __future__ import annotations

import argparse
import os
import statistics

from rnnstream.bench.serve import measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baseline", help="the baseline tree's src directory")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--baseline-grpc", action="store_true",
                        help="the baseline takes --grpc-port (releases from the one that added gRPC)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--models", nargs="+", default=["identity", "seed"])
    parser.add_argument("--protocols", nargs="+", default=["http", "websocket"])
    args = parser.parse_args()
    for protocol in args.protocols:
        for model in args.models:
            a, b = [], []
            for _ in range(args.pairs):
                os.environ["PYTHONPATH"] = args.baseline
                a.append(measure(model, protocol, "on", args.streams, args.seconds,
                                 grpc_flag=args.baseline_grpc).steps_per_second)
                del os.environ["PYTHONPATH"]
                b.append(measure(model, protocol, "on", args.streams, args.seconds).steps_per_second)
                print(f"{protocol} {model}: A {a[-1]:,.0f}  B {b[-1]:,.0f}  B/A {b[-1] / a[-1]:.3f}", flush=True)
            ratios = [y / x for x, y in zip(a, b, strict=True)]
            print(f"{protocol} {model}: A median {statistics.median(a):,.0f} ({min(a):,.0f}-{max(a):,.0f}), "
                  f"B median {statistics.median(b):,.0f} ({min(b):,.0f}-{max(b):,.0f}); B/A per pair "
                  f"{', '.join(f'{r:.3f}' for r in ratios)}, median {statistics.median(ratios):.3f}", flush=True)


if __name__ == "__main__":
    main()
