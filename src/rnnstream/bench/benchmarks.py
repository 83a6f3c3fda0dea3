"""What each ``rnnstream bench BENCHMARK`` runs (its arguments: ``rnnstream.cli``): the benchmark's module,
imported when asked for, and its report printed."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rnnstream.model import StreamModel


def run_benchmark(args: argparse.Namespace) -> int:
    """Run the benchmark ``args.bench`` names; its exit status."""
    return _BENCHES[args.bench](args)


def _bench_seed(args: argparse.Namespace) -> int:
    from rnnstream.bench import seed as bench_seed

    text, agreed = bench_seed.run(args.length, args.window, args.png)
    print(text)
    return 0 if agreed else 1


def _bench_engine(args: argparse.Namespace) -> int:
    from rnnstream.bench import engine as bench_engine

    print(bench_engine.run(tuple(args.models), tuple(args.batches), args.threads, args.rounds,
                           backend=args.backend, keras=not args.no_keras, json_path=args.json,
                           png_path=args.png, device=args.device))
    return 0


def _bench_serve(args: argparse.Namespace) -> int:
    from rnnstream.bench import serve as bench_serve

    print(bench_serve.run(args.streams, args.seconds, tuple(args.models), tuple(args.protocols),
                          tuple(args.rates), args.pairs))
    return 0


def _bench_generate(args: argparse.Namespace) -> int:
    from rnnstream.bench import generate as bench_generate
    from rnnstream.demo import TEXT_MODEL, text_vocabulary
    from rnnstream.importers import load

    prompt = text_vocabulary().encode(bench_generate.PROMPT)
    print(bench_generate.run(load(TEXT_MODEL, backend=args.backend), prompt, tuple(args.streams), args.tokens))
    return 0


def _bench_ttft(args: argparse.Namespace) -> int:
    from rnnstream.bench import ttft as bench_ttft

    print(bench_ttft.run(tuple(args.clients), args.tokens, args.threads))
    return 0


def _bench_streams(args: argparse.Namespace) -> int:
    from rnnstream.bench import stream_pool as bench_streams

    model = _model_or_seed(args.model)
    redis_url = None if args.redis == "none" else args.redis
    print(f"{model.name}: Streams.step over every stream, one call per round")
    print(bench_streams.run(model, tuple(args.counts), redis_url, args.idle, args.seconds))
    return 0


def _bench_context(args: argparse.Namespace) -> int:
    from rnnstream.bench.context import report, time_per_step_by_context

    model = _model_or_seed(args.model)
    print(f"{model.name}: batch {args.batch}, median of {args.repeats} steps at each context length")
    print(report(time_per_step_by_context(model, args.batch, tuple(args.lengths), args.repeats)))
    return 0


def _bench_capacity(args: argparse.Namespace) -> int:
    from rnnstream.bench import capacity

    print(capacity.run(args.model, args.streams, args.seconds, args.topology, int(args.plan[0]), args.plan[1]))
    return 0


def _model_or_seed(path: str | None) -> StreamModel:
    """The model file at ``path``, or the bundled seed model."""
    from rnnstream.demo import SEED_MODEL
    from rnnstream.importers import load

    return load(path or SEED_MODEL)


def _bench_precision(args: argparse.Namespace) -> int:
    from rnnstream.bench import drift

    print(drift.run(tuple(args.models), args.steps))
    return 0


def _bench_prime(args: argparse.Namespace) -> int:
    from rnnstream.bench import prime as bench_prime

    print(bench_prime.report(bench_prime.run(args.steps, args.rounds)))
    return 0


_BENCHES: dict[str, Callable[[argparse.Namespace], int]] = {
    "seed": _bench_seed, "engine": _bench_engine, "serve": _bench_serve, "generate": _bench_generate,
    "ttft": _bench_ttft, "streams": _bench_streams, "context": _bench_context, "prime": _bench_prime,
    "precision": _bench_precision, "capacity": _bench_capacity,
}  # fmt: skip
"""Each benchmark of ``rnnstream bench`` → the function that runs it."""
