"""The ``rnnstream`` command line.

    rnnstream serve [MODEL ...]         serve models over HTTP (Open Inference Protocol v2) and WebSocket
    rnnstream demo                      stream the bundled seed model step by step in the terminal
    rnnstream summary MODEL             layers, state layout and parameters of a model file
    rnnstream generate [MODEL]          generate text token by token (default: the bundled Shakespeare model)
    rnnstream forecast [MODEL]          roll a forecast forward (default: the bundled CO2 forecaster)
    rnnstream bench context [MODEL]     time per step at context length 10, 1,000 and 10,000
    rnnstream bench streams [MODEL]     stream-steps/s by concurrent streams and store; bytes per stream
    rnnstream bench engine              time per step vs ONNX Runtime, PyTorch and Keras by batch size
    rnnstream bench seed                the seed blog's experiment: every Keras approach vs rnnstream
    rnnstream bench generate            tokens/s and per-token latency at 1 and 1,000 streams (text model)
    rnnstream bench ttft                time to first token and tokens/s through the server (SSE), 1 and 100 clients
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rnnstream.errors import RnnstreamError
from rnnstream.server.limits import LIMITS

if TYPE_CHECKING:
    from rnnstream.model import StreamModel


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnstream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="stream the bundled seed model step by step")
    serve = commands.add_parser("serve", help="serve models over HTTP and WebSocket")
    serve.add_argument("models", nargs="*", metavar="MODEL",
                       help="a .keras/.h5 file, 'seed', 'text', 'co2' (bundled), 'builtin:identity', "
                            "'builtin:large', or NAME=any of them (default: seed, text and co2)")
    serve.add_argument("--store", default="memory://", help="memory:// or redis://host:port/db (default %(default)s)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--model-repository", metavar="DIR",
                       help="serve the newest version of every model in DIR (Triton's layout: "
                            "DIR/NAME/VERSION/model.keras)")
    serve.add_argument("--grpc-port", type=int, default=8001,
                       help="Triton's gRPC protocol on this port of --host (0: no gRPC)")
    serve.add_argument("--max-batch", type=int, default=256, help="streams per engine call (default %(default)s)")
    serve.add_argument("--max-delay-ms", type=float, default=2.0,
                       help="longest wait for a batch to fill while another runs (default %(default)s)")
    serve.add_argument("--workers", type=int, default=1, help="server processes (needs a redis:// store)")
    serve.add_argument("--timeout", type=float, default=30.0, help="seconds a request may wait in the queue")
    serve.add_argument("--token", default=os.environ.get("RNNSTREAM_TOKEN"),
                       help="require 'Authorization: Bearer TOKEN' (default: $RNNSTREAM_TOKEN)")
    serve.add_argument("--max-streams", type=int, default=None,
                       help="live streams at most (shared by replicas on one Redis); more get 503 (default: no limit)")
    serve.add_argument("--ttl", type=float, default=None, help="seconds before an idle stream is forgotten")
    serve.add_argument("--threads", type=int, default=None,
                       help="engine threads per model (default: every core but one for models under 1M parameters, "
                       "which leaves the event loop a core; every core for heavier ones)")
    serve.add_argument("--allow-nonfinite", action="store_true",
                       help="accept NaN and ±Inf inputs (refused with a 400 by default)")
    for limit in LIMITS:
        serve.add_argument(limit.flag, type=int, default=limit.default,
                           help=f"{limit.what}; past it: {limit.answer} (default %(default)s)")
    summary = commands.add_parser("summary", help="describe a model file")
    summary.add_argument("model", help="a .keras or .h5 file")
    generate = commands.add_parser("generate", help="generate text, printing each token as it is sampled")
    generate.add_argument("model", nargs="?", help="a token model file (default: the bundled Shakespeare model)")
    generate.add_argument("--vocab", help="JSON {\"tokens\": [...]} of your model (without it: token ids)")
    generate.add_argument("--prompt", help="text to start from (default 'ROMEO.\\n'); ids without --vocab")
    generate.add_argument("--steps", type=int, default=400, help="tokens to generate (default %(default)s)")
    generate.add_argument("--temperature", type=float, default=0.8, help="0 is greedy (default %(default)s)")
    generate.add_argument("--top-k", type=int, default=None)
    generate.add_argument("--top-p", type=float, default=None)
    generate.add_argument("--seed", type=int, default=None, help="makes the output reproducible")
    generate.add_argument("--stop", action="append", default=[], help="a token that ends generation (repeatable)")
    forecast = commands.add_parser("forecast", help="forecast by feeding predictions back; table and PNG")
    forecast.add_argument("model", nargs="?", help="a model file whose output is its next input "
                          "(default: the bundled CO2 forecaster and series)")
    forecast.add_argument("--horizon", type=int, default=104, help="steps ahead (default %(default)s)")
    forecast.add_argument("--history", type=Path, help="CSV of your model's inputs, one row per step")
    forecast.add_argument("--start", help="bundled series: forecast from this date (default: after its end)")
    forecast.add_argument("--noise", help="σ of the noise fed back on scenario paths, or 'residual'")
    forecast.add_argument("--paths", type=int, default=None, help="scenario paths with --noise (default 100)")
    forecast.add_argument("--seed", type=int, default=None)
    forecast.add_argument("--png", type=Path, default=None, help="plot the forecast here")
    forecast.add_argument("--every", type=int, default=None, help="print every Nth row (default: about 26 rows)")
    bench = commands.add_parser("bench", help="benchmarks")
    benches = bench.add_subparsers(dest="bench", required=True)
    context = benches.add_parser("context", help="time per step against context length")
    context.add_argument("model", nargs="?", help="a .keras or .h5 file (default: the bundled seed model)")
    context.add_argument("--batch", type=int, default=10, help="streams stepped together (default 10)")
    context.add_argument("--lengths", type=int, nargs="+", default=[10, 1_000, 10_000])
    context.add_argument("--repeats", type=int, default=200, help="timed steps per length (median)")
    streams = benches.add_parser("streams", help="throughput of Streams by store and stream count")
    streams.add_argument("model", nargs="?", help="a .keras or .h5 file (default: the bundled seed model)")
    streams.add_argument("--counts", type=int, nargs="+", default=[1, 100, 1_000, 10_000])
    streams.add_argument("--redis", default="redis://127.0.0.1:6379/0",
                         help="Redis to measure (default %(default)s); 'none' skips it")
    streams.add_argument("--idle", type=int, default=1_000_000,
                         help="idle streams for the memory footprint (default %(default)s; 0 skips it)")
    streams.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    serve_bench = benches.add_parser("serve", help="load a real server over loopback: HTTP and WebSocket")
    serve_bench.add_argument("--streams", type=int, default=1000, help="concurrent streams (default %(default)s)")
    serve_bench.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    serve_bench.add_argument("--models", nargs="+", default=["identity", "seed", "large"])
    serve_bench.add_argument("--protocols", nargs="+", default=["http", "websocket", "grpc"],
                             choices=["http", "websocket", "grpc"])
    serve_bench.add_argument("--pairs", type=int, default=3,
                             help="alternating identity/seed closed-loop pairs for the seed / identity ratio "
                                  "(default %(default)s; 0: none)")
    serve_bench.add_argument("--rates", type=float, nargs="*", default=[1.0, 10.0],
                             help="steps/s per stream of the open-loop latency runs (default: 1 10; none: skip)")
    seed = benches.add_parser("seed", help="the seed blog's experiment, every approach timed")
    seed.add_argument("--length", type=int, default=200, help="steps (default %(default)s)")
    seed.add_argument("--window", type=int, default=20, help="context of the windowed approach")
    seed.add_argument("--png", type=Path, default=Path("bench-seed.png"), help="plots (default %(default)s)")
    generation = benches.add_parser("generate", help="tokens/s and per-token latency with the text model")
    generation.add_argument("--streams", type=int, nargs="+", default=[1, 1000])
    generation.add_argument("--tokens", type=int, default=200, help="tokens per stream (default %(default)s)")
    generation.add_argument("--backend", default="auto", help="rnnstream backend (default %(default)s)")
    ttft = benches.add_parser("ttft", help="time to first token through the server (SSE), with tokens/s")
    ttft.add_argument("--clients", type=int, nargs="+", default=[1, 100], help="concurrent clients per round")
    ttft.add_argument("--tokens", type=int, default=100, help="tokens per client (default %(default)s)")
    ttft.add_argument("--threads", type=int, default=None, help="the server's engine threads (default: every core)")
    engine = benches.add_parser("engine", help="time per step vs ONNX Runtime, PyTorch and Keras")
    engine.add_argument("--models", nargs="+", default=["seed", "large"], help="seed and/or built-in models")
    engine.add_argument("--batches", type=int, nargs="+", default=[1, 10, 256, 1024, 4096])
    engine.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for every engine")
    engine.add_argument("--rounds", type=int, default=7, help="timing rounds (median)")
    engine.add_argument("--backend", default="auto", help="rnnstream backend (default %(default)s)")
    engine.add_argument("--device", default=None, help="a torch device (cpu, cuda): backend 'torch' runs there, "
                        "and rnnstream's DeviceBatch on it is timed too")
    engine.add_argument("--no-keras", action="store_true", help="skip Keras (slow: ~50 ms per predict)")
    engine.add_argument("--json", type=Path, default=None, help="write the figures as JSON here")
    engine.add_argument("--png", type=Path, default=None, help="write a chart here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except RnnstreamError as exc:
        print(f"rnnstream: error: {exc}", file=sys.stderr)
        return 2


def _demo(args: argparse.Namespace) -> int:
    from rnnstream.demo.walkthrough import main as demo

    return demo()


def _serve(args: argparse.Namespace) -> int:
    from rnnstream.server.config import ServerConfig
    from rnnstream.server.main import serve

    config = ServerConfig(models=args.models, store=args.store, max_batch=args.max_batch,
                          max_delay_ms=args.max_delay_ms, timeout=args.timeout, token=args.token,
                          max_streams=args.max_streams, ttl=args.ttl, threads=args.threads,
                          allow_nonfinite=args.allow_nonfinite,
                          grpc_address=f"{args.host}:{args.grpc_port}" if args.grpc_port else None,
                          model_repository=args.model_repository,
                          **{limit.name: getattr(args, limit.name) for limit in LIMITS})
    return serve(config, args.host, args.port, args.workers)


def _generate(args: argparse.Namespace) -> int:
    from rnnstream.generation.commands import generate_command

    return generate_command(args.model, vocab_path=args.vocab, prompt=args.prompt, steps=args.steps,
                            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                            seed=args.seed, stop=args.stop)


def _forecast(args: argparse.Namespace) -> int:
    from rnnstream.generation.commands import forecast_command

    return forecast_command(args.model, horizon=args.horizon, history_path=args.history, start=args.start,
                            noise=args.noise, paths=args.paths, seed=args.seed, png=args.png,
                            every=args.every)


def _summary(args: argparse.Namespace) -> int:
    from rnnstream.importers import load

    print(load(args.model).summary())
    return 0


def _bench(args: argparse.Namespace) -> int:
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


def _model_or_seed(path: str | None) -> StreamModel:
    """The model file at ``path``, or the bundled seed model."""
    from rnnstream.demo import SEED_MODEL
    from rnnstream.importers import load

    return load(path or SEED_MODEL)


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": _demo, "serve": _serve, "generate": _generate, "forecast": _forecast, "summary": _summary,
    "bench": _bench,
}  # fmt: skip
"""Each command of ``rnnstream`` (see ``_parser``) → the function that runs it and gives the exit status."""
_BENCHES: dict[str, Callable[[argparse.Namespace], int]] = {
    "seed": _bench_seed, "engine": _bench_engine, "serve": _bench_serve, "generate": _bench_generate,
    "ttft": _bench_ttft, "streams": _bench_streams, "context": _bench_context,
}  # fmt: skip
"""Each benchmark of ``rnnstream bench`` → the function that runs it."""


if __name__ == "__main__":
    sys.exit(main())
