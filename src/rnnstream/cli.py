"""The ``rnnstream`` command line.

MODEL is a model file: .keras or .h5 (Keras), or .onnx. Each command's options: rnnstream COMMAND --help.

    rnnstream serve [MODEL ...]         serve models over HTTP (Open Inference Protocol v2), WebSocket and gRPC
    rnnstream demo                      stream the bundled seed model step by step in the terminal
    rnnstream cluster-demo [MODEL]      HAProxy → 3 replicas → Redis Cluster (3 masters + replicas) on this machine
    rnnstream summary MODEL             layers, state layout and parameters of a model file
    rnnstream export MODEL -o F.onnx    write the model's step as ONNX (inputs + state → outputs + new state)
    rnnstream generate [MODEL]          generate text token by token (default: the bundled Shakespeare model)
    rnnstream forecast [MODEL]          roll a forecast forward (default: the bundled CO2 forecaster)
    rnnstream bench context [MODEL]     time per step at context length 10, 1,000 and 10,000
    rnnstream bench streams [MODEL]     stream-steps/s by concurrent streams and store; bytes per stream
    rnnstream bench serve [MODEL ...]   a real server under load over loopback: throughput, p50/p99 latency
    rnnstream bench engine              time per step vs ONNX Runtime, PyTorch and Keras by batch size
    rnnstream bench precision [MODEL]   bf16, int8 weights against fp32: largest difference over 10,000 steps
    rnnstream bench capacity [MODEL]    server and Redis CPU per step, plain and durable: the capacity model's inputs
    rnnstream bench seed                the seed blog's experiment: every Keras approach vs rnnstream
    rnnstream bench generate            tokens/s and per-token latency at 1 and 1,000 streams (text model)
    rnnstream bench prime               a 1,000-step history as one request vs 1,000 single-step requests (HTTP)
    rnnstream bench ttft                time to first token and tokens/s through the server (SSE), 1 and 100 clients
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rnnstream.bench.benchmarks import run_benchmark
from rnnstream.errors import RnnstreamError
from rnnstream.onnx_export import STATE_LAYOUTS
from rnnstream.precision import PRECISIONS
from rnnstream.server.limits import LIMITS

MODEL_FILE = "a model file: .keras or .h5 (Keras), .onnx"
SERVED_MODEL = (f"{MODEL_FILE}; 'seed', 'text', 'co2' (bundled); 'builtin:identity', 'builtin:large'; or NAME=any "
                "of them")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnstream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("demo", help="stream the bundled seed model step by step")
    cluster = commands.add_parser("cluster-demo", help="HAProxy, 3 replicas and a 6-node Redis Cluster on this machine")
    cluster.add_argument("model", nargs="?", default="seed", metavar="MODEL", help=f"{SERVED_MODEL} (default: seed)")
    cluster.add_argument("--port", type=int, default=8080, help="HAProxy's port (default %(default)s)")
    cluster.add_argument("--durable", type=int, default=1, help="replicas each write waits for (default %(default)s)")
    add_serve_arguments(commands.add_parser("serve", help="serve models over HTTP, WebSocket and gRPC"))
    summary = commands.add_parser("summary", help="describe a model: layers, state layout, parameters")
    summary.add_argument("model", metavar="MODEL", help=MODEL_FILE)
    export = commands.add_parser("export", help="write a model's step as ONNX (state in, new state out)")
    export.add_argument("model", metavar="MODEL", help=MODEL_FILE)
    export.add_argument("-o", "--output", type=Path, default=None, metavar="FILE.onnx",
                        help="where to write it (default: MODEL's stem + '_step.onnx', in this folder)")
    export.add_argument("--state", choices=STATE_LAYOUTS, default=STATE_LAYOUTS[0],
                        help="'row': one state [B, S] tensor in and new_state out, rnnstream's State rows; 'parts': "
                             "one tensor per layer's h / c, [1, B, units] (default %(default)s)")
    generate = commands.add_parser("generate", help="generate text, printing each token as it is sampled")
    generate.add_argument("model", nargs="?", metavar="MODEL",
                          help=f"a token model, {MODEL_FILE} (default: the bundled Shakespeare model)")
    generate.add_argument("--vocab", metavar="FILE.json",
                          help="JSON {\"tokens\": [...]} of your model (default: none, the prompt and output are "
                               "token ids; the bundled model's vocabulary without MODEL)")
    generate.add_argument("--prompt", help="text to start from; token ids such as '3 14 15' without --vocab "
                                           "(default 'ROMEO.\\n' for the bundled model)")
    generate.add_argument("--steps", type=int, default=400, help="tokens to generate (default %(default)s)")
    generate.add_argument("--temperature", type=float, default=0.8,
                          help="sampling temperature; 0 is greedy (default %(default)s)")
    generate.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens "
                                                                  "(default: all)")
    generate.add_argument("--top-p", type=float, default=None,
                          help="sample among the likeliest tokens whose probabilities add up to p (default: all)")
    generate.add_argument("--seed", type=int, default=None,
                          help="makes the output reproducible (default: a fresh seed each run)")
    generate.add_argument("--stop", action="append", default=[], metavar="TOKEN",
                          help="a token (a character, or an id without --vocab) that ends generation; repeatable "
                               "(default: none)")
    forecast = commands.add_parser("forecast", help="forecast by feeding predictions back; table and PNG")
    forecast.add_argument("model", nargs="?", metavar="MODEL",
                          help=f"a forecaster, {MODEL_FILE} (default: the bundled CO2 forecaster and series)")
    forecast.add_argument("--horizon", type=int, default=104, help="steps ahead (default %(default)s)")
    forecast.add_argument("--history", type=Path, metavar="FILE.csv",
                          help="with MODEL: its inputs, one row per step, one column per feature (its inputs' "
                               "features side by side), a header row naming the columns optional (default: none)")
    forecast.add_argument("--feedback", nargs="+", metavar="COLUMN[=OUTPUT]",
                          help="history columns (by name or index) the forecast feeds back, from output column "
                               "OUTPUT (default: the column's place in this list); without it the output feeds the "
                               "whole input when as wide")
    forecast.add_argument("--exogenous", type=Path, metavar="FILE.csv",
                          help="future values of the columns not fed back, one row per forecast time, a header "
                               "row naming them (default: none; needed when a column is not fed back)")
    forecast.add_argument("--start", help="bundled series: forecast from this date, e.g. 1998-01-01 "
                                          "(default: after its end)")
    forecast.add_argument("--noise", help="σ of the noise fed back on scenario paths, or 'residual': the history's "
                                          "one-step errors (default: none, the point forecast only)")
    forecast.add_argument("--paths", type=int, default=None, help="scenario paths with --noise (default 100)")
    forecast.add_argument("--seed", type=int, default=None, help="the noise's seed (default: a fresh one)")
    forecast.add_argument("--png", type=Path, default=None, metavar="FILE.png",
                          help="plot the forecast here; .svg or .pdf by the suffix (default: no plot)")
    forecast.add_argument("--every", type=int, default=None, help="print every Nth row (default: about 26 rows)")
    bench = commands.add_parser("bench", help="benchmarks")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    context = benches.add_parser("context", help="time per step against context length")
    context.add_argument("model", nargs="?", metavar="MODEL", help=f"{MODEL_FILE} (default: the bundled seed model)")
    context.add_argument("--batch", type=int, default=10, help="streams stepped together (default %(default)s)")
    context.add_argument("--lengths", type=int, nargs="+", default=[10, 1_000, 10_000],
                         help="context lengths (steps already taken) to time at (default: 10 1000 10000)")
    context.add_argument("--repeats", type=int, default=200,
                         help="timed steps per length, of which the median (default %(default)s)")
    streams = benches.add_parser("streams", help="throughput of Streams by store and stream count")
    streams.add_argument("model", nargs="?", metavar="MODEL", help=f"{MODEL_FILE} (default: the bundled seed model)")
    streams.add_argument("--counts", type=int, nargs="+", default=[1, 100, 1_000, 10_000],
                         help="concurrent streams to time (default: 1 100 1000 10000)")
    streams.add_argument("--redis", default="redis://127.0.0.1:6379/0",
                         help="Redis to measure (default %(default)s); 'none' skips it")
    streams.add_argument("--idle", type=int, default=1_000_000,
                         help="idle streams for the memory footprint (default %(default)s; 0 skips it)")
    streams.add_argument("--seconds", type=float, default=1.5, help="time per measurement (default %(default)s)")
    serve_bench = benches.add_parser("serve", help="load a real server over loopback: HTTP, WebSocket and gRPC")
    serve_bench.add_argument("models", nargs="*", metavar="MODEL", default=["identity", "seed", "large"],
                             help="'identity', 'seed', 'large' (2 × LSTM(512)), or any MODEL of rnnstream serve "
                                  f"with one real-valued input: {SERVED_MODEL} (default: identity seed large)")
    serve_bench.add_argument("--streams", type=int, default=1000, help="concurrent streams (default %(default)s)")
    serve_bench.add_argument("--seconds", type=float, default=5.0, help="time per measurement (default %(default)s)")
    serve_bench.add_argument("--protocols", nargs="+", default=["http", "websocket", "grpc"],
                             choices=["http", "websocket", "grpc"], help="transports to load (default: all three)")
    serve_bench.add_argument("--pairs", type=int, default=3,
                             help="alternating identity/seed closed-loop pairs for the seed / identity ratio "
                                  "(default %(default)s; 0: none)")
    serve_bench.add_argument("--rates", type=float, nargs="*", default=[1.0, 10.0],
                             help="steps/s per stream of the open-loop latency runs (default: 1 10; none: skip)")
    seed = benches.add_parser("seed", help="the seed blog's experiment, every approach timed")
    seed.add_argument("--length", type=int, default=200, help="steps (default %(default)s)")
    seed.add_argument("--window", type=int, default=20,
                      help="context of the windowed approach, in steps (default %(default)s)")
    seed.add_argument("--png", type=Path, default=Path("bench-seed.png"), help="plots (default %(default)s)")
    generation = benches.add_parser("generate", help="tokens/s and per-token latency with the text model")
    generation.add_argument("--streams", type=int, nargs="+", default=[1, 1000],
                            help="concurrent generating streams to time (default: 1 1000)")
    generation.add_argument("--tokens", type=int, default=200, help="tokens per stream (default %(default)s)")
    generation.add_argument("--backend", default="auto", help="rnnstream backend (default %(default)s)")
    ttft = benches.add_parser("ttft", help="time to first token through the server (SSE), with tokens/s")
    ttft.add_argument("--clients", type=int, nargs="+", default=[1, 100],
                      help="concurrent clients per round (default: 1 100)")
    ttft.add_argument("--tokens", type=int, default=100, help="tokens per client (default %(default)s)")
    ttft.add_argument("--threads", type=int, default=None, help="the server's engine threads (default: every core)")
    prime = benches.add_parser("prime", help="a history as one request vs one request per step, over HTTP")
    prime.add_argument("--steps", type=int, default=1000, help="steps of the history (default %(default)s)")
    prime.add_argument("--rounds", type=int, default=5, help="timed rounds, of which the median (default %(default)s)")
    capacity = benches.add_parser("capacity", help="the capacity model's inputs: server and Redis CPU per step")
    capacity.add_argument("model", nargs="?", default="seed", metavar="MODEL", help=f"{SERVED_MODEL} (default: seed)")
    capacity.add_argument("--streams", type=int, default=200, help="concurrent streams (default %(default)s)")
    capacity.add_argument("--seconds", type=float, default=3.0, help="time per measurement (default %(default)s)")
    capacity.add_argument("--topology", action="store_true", help="also HAProxy and 3 replicas vs one replica")
    capacity.add_argument("--plan", type=float, nargs=2, default=[100_000, 1.0], metavar=("STREAMS", "RATE"),
                          help="apply the model to STREAMS streams at RATE steps/s each (default: 100000 1)")
    precision = benches.add_parser("precision", help="bf16, int8 weights against fp32 over 10,000 free-running steps")
    precision.add_argument("models", nargs="*", metavar="MODEL", default=["seed", "text", "co2"],
                           help=f"bundled models (seed, text, co2) or {MODEL_FILE} (default: the bundled ones)")
    precision.add_argument("--steps", type=int, default=10_000, help="steps per model (default %(default)s)")
    engine = benches.add_parser("engine", help="time per step vs ONNX Runtime, PyTorch and Keras")
    engine.add_argument("--models", nargs="+", default=["seed", "large"],
                        help="'seed' and/or built-in models ('large', 'identity') (default: seed large)")
    engine.add_argument("--batches", type=int, nargs="+", default=[1, 10, 256, 1024, 4096],
                        help="batch sizes to time (default: 1 10 256 1024 4096)")
    engine.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for every engine (default: every core, %(default)s)")
    engine.add_argument("--rounds", type=int, default=7,
                        help="timing rounds, of which the median (default %(default)s)")
    engine.add_argument("--backend", default="auto", help="rnnstream backend (default %(default)s)")
    engine.add_argument("--device", default=None, help="a torch device (cpu, cuda): backend 'torch' runs there, "
                        "and rnnstream's DeviceBatch on it is timed too (default: none)")
    engine.add_argument("--no-keras", action="store_true", help="skip Keras (slow: ~50 ms per predict)")
    engine.add_argument("--json", type=Path, default=None, help="write the figures as JSON here (default: none)")
    engine.add_argument("--png", type=Path, default=None, help="write a chart here (default: none)")
    return parser


def add_serve_arguments(serve: argparse.ArgumentParser) -> None:
    """The options of ``rnnstream serve``."""
    serve.add_argument("models", nargs="*", metavar="MODEL", help=f"{SERVED_MODEL} (default: seed, text and co2)")
    serve.add_argument("--store", default="memory://", help="memory:// or redis://host:port/db (default %(default)s)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="the interface to listen on (default %(default)s, this machine only; 0.0.0.0: all)")
    serve.add_argument("--port", type=int, default=8000, help="HTTP and WebSocket port (default %(default)s)")
    serve.add_argument("--model-repository", metavar="DIR",
                       help="serve the newest version of every model in DIR (Triton's layout: "
                            "DIR/NAME/VERSION/model.keras, .h5 or .onnx) (default: none)")
    serve.add_argument("--grpc-port", type=int, default=8001,
                       help="Triton's gRPC protocol on this port of --host (default %(default)s; 0: no gRPC)")
    serve.add_argument("--max-batch", type=int, default=256, help="streams per engine call (default %(default)s)")
    serve.add_argument("--max-delay-ms", type=float, default=2.0,
                       help="longest wait for a batch to fill while another runs (default %(default)s)")
    serve.add_argument("--workers", type=int, default=1,
                       help="server processes; more than 1 needs a redis:// store (default %(default)s)")
    serve.add_argument("--timeout", type=float, default=30.0,
                       help="seconds a request may wait in the queue (default %(default)s)")
    serve.add_argument("--token", default=os.environ.get("RNNSTREAM_TOKEN"),
                       help="require 'Authorization: Bearer TOKEN' (default: $RNNSTREAM_TOKEN, else none)")
    serve.add_argument("--max-streams", type=int, default=None,
                       help="live streams at most (shared by replicas on one Redis); more get 503 (default: no limit)")
    serve.add_argument("--ttl", type=float, default=None,
                       help="seconds before an idle stream is forgotten (default: kept until it ends)")
    serve.add_argument("--threads", type=int, default=None,
                       help="engine threads per model (default: every core but one for models under 1M parameters, "
                       "which leaves the event loop a core; every core for heavier ones)")
    serve.add_argument("--allow-nonfinite", action="store_true",
                       help="accept NaN and ±Inf inputs (refused with a 400 by default)")
    serve.add_argument("--precision", default="fp32", choices=PRECISIONS, help="weight matrices as trained (fp32), "
                       "as bfloat16 (bf16-dot: AVX512_BF16 only) or int8 (AVX512_VNNI or AVX2); the state stays "
                       "float32 (default %(default)s)")
    for limit in LIMITS:
        serve.add_argument(limit.flag, type=int, default=limit.default,
                           help=f"{limit.what}; past it: {limit.answer} (default %(default)s)")


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
                          allow_nonfinite=args.allow_nonfinite, precision=args.precision,
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
                            every=args.every, feedback=args.feedback, exogenous_path=args.exogenous)


def _export(args: argparse.Namespace) -> int:
    from rnnstream.importers import load
    from rnnstream.onnx_export import build_step_graph, export_onnx, step_signature

    model = load(args.model)
    path = args.output if args.output is not None else Path(f"{Path(args.model).stem}_step.onnx")
    export_onnx(model, path, state=args.state)
    print(f"wrote {path}: the step of {model.name!r}, state as {args.state}")
    print(f"  {step_signature(build_step_graph(model, state=args.state))}")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from rnnstream.importers import load

    print(load(args.model).summary())
    return 0


def _cluster_demo(args: argparse.Namespace) -> int:
    import tempfile

    from rnnstream.cluster.topology import run_demo

    with tempfile.TemporaryDirectory(prefix="rnnstream-cluster-") as folder:
        return run_demo(Path(folder), args.model, args.durable, args.port)


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": _demo, "serve": _serve, "generate": _generate, "forecast": _forecast, "summary": _summary,
    "export": _export, "bench": run_benchmark, "cluster-demo": _cluster_demo,
}  # fmt: skip
"""Each command of ``rnnstream`` (see ``_parser``) → the function that runs it and gives the exit status."""


if __name__ == "__main__":
    sys.exit(main())
