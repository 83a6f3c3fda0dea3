"""Triton's perf_analyzer against rnnstream: HTTP and gRPC streaming, sequences of ``--sequence-length`` steps.

    .venv/bin/python scripts/perf_analyzer.py [--concurrency 100] [--sequence-length 20] [--seconds 3]

perf_analyzer is Triton's own load tool (C++). The last tritonclient wheels that carry it are 2.44 and
older (``data/bin/perf_analyzer``); it links Debian's ``libb64-0d`` and ``libcudart.so.12`` (from the
``nvidia-cuda-runtime-cu12`` wheel) even without a GPU. This script fetches both wheels into
``.venv/perf_analyzer/`` once (``make perf-analyzer`` installs libb64 first), starts ``rnnstream serve
seed`` on free ports, and runs perf_analyzer over HTTP and over gRPC with ``--streaming``: it reads the
model's configuration (max_batch_size, sequence_batching) and drives sequences with start, end and ids,
as it would drive Triton.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from rnnstream.bench.serve import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[1]
HOME = ROOT / ".venv" / "perf_analyzer"
WHEELS = ("tritonclient==2.44.0", "nvidia-cuda-runtime-cu12>=12,<13")


def install() -> tuple[Path, Path]:
    """perf_analyzer and the folder of libcudart.so.12, fetched and unpacked once."""
    binary = next(HOME.glob("**/bin/perf_analyzer"), None)
    cudart = next(HOME.glob("**/libcudart.so.12"), None)
    if binary is None or cudart is None:
        HOME.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(HOME),
                        *WHEELS], check=True)
        for wheel in HOME.glob("*.whl"):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(HOME / wheel.stem)
        binary = next(HOME.glob("**/bin/perf_analyzer"))
        cudart = next(HOME.glob("**/libcudart.so.12"))
    binary.chmod(0o755)
    return binary, cudart.parent


def measure(binary: Path, libraries: Path, arguments: list[str]) -> str:
    """perf_analyzer's summary lines for one run."""
    run = subprocess.run([str(binary), *arguments], capture_output=True, text=True, timeout=600,
                         env={"LD_LIBRARY_PATH": str(libraries), "PATH": "/usr/bin:/bin"})
    if run.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed: {run.stdout[-2000:]}{run.stderr[-2000:]}")
    wanted = r"(Request count|Sequence count|Throughput|p50 latency|p99 latency|Avg latency)"
    return "\n".join(line for line in run.stdout.splitlines() if re.search(wanted, line))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--sequence-length", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=3.0, help="perf_analyzer's measurement window")
    args = parser.parse_args()
    binary, libraries = install()
    port, grpc_port = free_port(), free_port()
    server = subprocess.Popen([sys.executable, "-m", "rnnstream", "serve", "seed", "--port", str(port),
                               "--grpc-port", str(grpc_port), "--max-batch", "1024", "--max-delay-ms", "2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    common = ["-m", "seed", "--sequence-length", str(args.sequence_length), "--concurrency-range",
              str(args.concurrency), "--measurement-interval", str(int(args.seconds * 1000))]
    try:
        wait_ready(f"http://127.0.0.1:{port}", server)
        for name, transport in (("HTTP", ["-u", f"127.0.0.1:{port}", "-i", "http"]),
                                ("gRPC streaming", ["-u", f"127.0.0.1:{grpc_port}", "-i", "grpc", "--streaming"])):
            print(f"perf_analyzer, {name}, {args.concurrency} sequences at once of {args.sequence_length} steps:")
            print(measure(binary, libraries, [*transport, *common]), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
