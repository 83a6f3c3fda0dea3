"""The command line, run as a user runs it."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rnnstream.cli import main
from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rnnstream", *args], capture_output=True, text=True, timeout=300)


def test_demo_shows_flat_steps_and_equal_outputs() -> None:
    result = run_cli("demo")
    assert result.returncode == 0, result.stderr
    assert "recompute context" in result.stdout and "3,000" in result.stdout
    differences = [line.split()[-1] for line in result.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert differences and all(float(d) == 0.0 for d in differences)


def test_summary(capsys: pytest.CaptureFixture[str]) -> None:
    import rnnstream

    assert main(["summary", str(rnnstream.demo.SEED_MODEL)]) == 0
    assert "lstm2" in capsys.readouterr().out


def test_bench_context(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "context", "--lengths", "2", "5", "--repeats", "10", "--batch", "3"]) == 0
    out = capsys.readouterr().out
    assert "slowest / fastest" in out and "batch 3" in out


def test_bad_model_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.keras"
    path.write_text("nope")
    assert main(["summary", str(path)]) == 2
    assert "not a Keras model file" in capsys.readouterr().err


def test_serve_refuses_workers_without_a_shared_store(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--workers", "2"]) == 2
    assert "needs a shared store" in capsys.readouterr().err


def test_generate_prints_the_prompt_then_reproducible_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--steps", "60", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert main(["generate", "--steps", "60", "--seed", "3"]) == 0
    assert capsys.readouterr().out == first
    assert first.startswith("ROMEO.\n") and len(first) == len("ROMEO.\n") + 60 + 1


def test_generate_is_the_library_call(capsys: pytest.CaptureFixture[str]) -> None:
    import rnnstream

    vocab = rnnstream.demo.text_vocabulary()
    model = rnnstream.load(rnnstream.demo.TEXT_MODEL)
    ids = rnnstream.generate(model, vocab.encode("KING.\n"), max_tokens=40, temperature=0.5, top_k=10, seed=1)
    assert main(["generate", "--prompt", "KING.\\n", "--steps", "40", "--temperature", "0.5", "--top-k", "10",
                 "--seed", "1"]) == 0
    assert capsys.readouterr().out == "KING.\n" + vocab.decode(ids) + "\n"


def test_generate_with_a_model_file_and_no_vocabulary_prints_ids(capsys: pytest.CaptureFixture[str]) -> None:
    import rnnstream

    model = rnnstream.load(rnnstream.demo.TEXT_MODEL)
    greedy = list(rnnstream.generate(model, [30, 31], max_tokens=5, temperature=0))
    assert main(["generate", str(rnnstream.demo.TEXT_MODEL), "--prompt", "30 31", "--steps", "5",
                 "--temperature", "0"]) == 0
    assert capsys.readouterr().out.split() == ["30", "31", *map(str, greedy)]


def test_generate_refuses_characters_outside_the_vocabulary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--prompt", "naïve"]) == 2
    assert "not in this model's vocabulary" in capsys.readouterr().err


def test_forecast_prints_a_table_of_the_bundled_series(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["forecast", "--horizon", "8"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.strip()[:4].isdigit()]
    assert [r[0] for r in rows] == [f"2002-01-{d:02d}" for d in (5, 12, 19, 26)] + [
        f"2002-02-{d:02d}" for d in (2, 9, 16, 23)]
    assert all(360 < float(r[1]) < 385 for r in rows)


def test_forecast_from_a_past_date_with_a_cone_and_a_chart(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "co2.png"
    assert main(["forecast", "--start", "1998-01-01", "--horizon", "52", "--noise", "residual", "--paths", "50",
                 "--seed", "0", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "p5" in out and "p95" in out and "measured" in out and "rmse" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_forecast_with_a_model_that_cannot_feed_itself_back(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import rnnstream

    history = tmp_path / "history.csv"
    history.write_text("a,b,c,d\n" + "\n".join("0.1,0.2,0.3,0.4" for _ in range(5)) + "\n")
    assert main(["forecast", str(rnnstream.demo.SEED_MODEL), "--history", str(history)]) == 2
    assert "feedback" in capsys.readouterr().err


def test_bench_generate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "generate", "--streams", "1", "3", "--tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "tokens/s" in out and "Generation(StreamModel)" in out and "Generation(Streams memory://)" in out


# -- the whole command line, as a user runs it ------------------------------------------------------------------


def help_texts(path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """``rnnstream ... --help`` of every command and subcommand (``path``: the words that reach it), the root
    first: the tree walked through its public face, the help a user reads."""
    result = run_cli(*path, "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: rnnstream"), (path, result.stderr)
    yield path, result.stdout
    for name in subcommands(result.stdout):
        yield from help_texts((*path, name))


def sections(text: str) -> dict[str, list[str]]:
    """A --help text's sections ("positional arguments:", "options:") → their lines."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            current = found.setdefault(line, [])
        elif line.strip():
            current.append(line)
    return found


def subcommands(text: str) -> list[str]:
    """The subcommands a --help text lists (argparse indents them by 4 under their metavar)."""
    return [m.group(1) for line in sections(text).get("positional arguments:", [])
            if (m := re.match(r"^    (\w+)\s", line + " "))]


def options(text: str, section: str = "options:") -> dict[str, str]:
    """Each option (or positional argument) of a --help text, by its invocation (``--store STORE``) → its
    description, wrapped lines joined."""
    found: dict[str, str] = {}
    invocation = ""
    for line in sections(text).get(section, []):
        if m := re.match(r"^  (\S+(?: \S+)*)(?:\s{2,}(.*))?$", line):
            invocation = m.group(1)
            found[invocation] = m.group(2) or ""
        else:
            found[invocation] += " " + line.strip()
    return found


@pytest.fixture(scope="module")
def every_help() -> dict[tuple[str, ...], str]:
    return dict(help_texts())


def test_every_option_of_every_command_is_described_with_its_default(every_help: dict[tuple[str, ...], str]) -> None:
    assert {" ".join(p) for p in every_help} >= {"serve", "export", "forecast", "bench serve", "bench engine"}
    gaps = []
    for path, text in every_help.items():
        for invocation, description in options(text).items():
            takes_a_value = re.search(r"-[\w-]+ \S", invocation) is not None
            if not description.strip():
                gaps.append(f"rnnstream {' '.join(path)} {invocation}: no description")
            elif takes_a_value and "default" not in description:
                gaps.append(f"rnnstream {' '.join(path)} {invocation}: does not say its default")
    assert gaps == []
    assert "(default 8000)" in options(every_help[("serve",)])["--port PORT"]


def test_every_model_argument_names_onnx(every_help: dict[tuple[str, ...], str]) -> None:
    described = [(path, help) for path, text in every_help.items()
                 for name, help in options(text, "positional arguments:").items() if name == "MODEL"]
    assert len(described) >= 8 and all(".onnx" in help for _, help in described), described


def test_the_docs_table_lists_every_command(every_help: dict[tuple[str, ...], str]) -> None:
    page = (ROOT / "docs" / "index.md").read_text()
    missing = [path for path in every_help
               if path and path != ("bench",) and f"`rnnstream {' '.join(path)}" not in page]
    assert missing == []


@pytest.fixture(scope="module")
def sensors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A multivariate Keras forecaster: input ``sensors`` (temp, load, hour) → LSTM(8) → Dense(2) per step,
    random non-trivial weights, saved as ``sensors.keras``."""
    keras = pytest.importorskip("keras")
    from tests.zoo import randomize

    inp = keras.layers.Input((None, 3), name="sensors")
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.LSTM(8, return_sequences=True)(inp)))
    randomize(model, seed=4)
    path = tmp_path_factory.mktemp("sensors") / "sensors.keras"
    model.save(path)
    return path


def write_csv(path: Path, header: list[str] | None, rows: np.ndarray) -> Path:
    lines = ([",".join(header)] if header else []) + [",".join(f"{v:.9g}" for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def table_rows(out: str) -> np.ndarray:
    return np.array([[float(v) for v in line.split()[1:]] for line in out.splitlines() if line.strip()[:1].isdigit()])


def test_forecast_a_multivariate_model_feeding_named_columns_back(sensors: Path, tmp_path: Path) -> None:
    import rnnstream

    rng = np.random.default_rng(0)
    history, future = rng.normal(size=(50, 3)).astype(np.float32), rng.normal(size=(7, 1)).astype(np.float32)
    write_csv(tmp_path / "past.csv", ["temp", "load", "hour"], history)
    write_csv(tmp_path / "hours.csv", ["hour"], future)
    result = run_cli("forecast", str(sensors), "--history", str(tmp_path / "past.csv"), "--feedback", "load=1",
                     "temp=0", "--exogenous", str(tmp_path / "hours.csv"), "--horizon", "7", "--every", "1",
                     "--png", str(tmp_path / "chart.svg"))
    assert result.returncode == 0, result.stderr
    expected = rnnstream.forecast(rnnstream.load(sensors), history, 7, feedback={0: 0, 1: 1}, exogenous=future)
    assert "temp" in result.stdout.splitlines()[0] and "load" in result.stdout.splitlines()[0]
    np.testing.assert_allclose(table_rows(result.stdout), expected.point, atol=1e-3)
    svg = (tmp_path / "chart.svg").read_text()  # the x axis is time, the y axis what output 0 forecasts
    x_axis, y_axis = svg.split('id="matplotlib.axis_1"')[1].split('id="matplotlib.axis_2"')
    assert "<!-- step -->" in x_axis and "<!-- temp -->" in y_axis.split("</g>\n  </g>")[0]


def test_forecast_columns_by_index_without_a_header(tmp_path: Path) -> None:
    import rnnstream

    model = rnnstream.load(rnnstream.demo.SEED_MODEL)  # 4 features in, 1 out
    rng = np.random.default_rng(1)
    history, future = rng.random((30, 4), np.float32), rng.random((5, 3), np.float32)
    result = run_cli("forecast", str(rnnstream.demo.SEED_MODEL), "--history",
                     str(write_csv(tmp_path / "h.csv", None, history)), "--feedback", "0", "--exogenous",
                     str(write_csv(tmp_path / "x.csv", None, future)), "--horizon", "6", "--every", "1")
    assert result.returncode == 0, result.stderr
    expected = rnnstream.forecast(model, history, 6, feedback={0: 0}, exogenous=future)
    np.testing.assert_allclose(table_rows(result.stdout), expected.point, atol=1e-3)


@pytest.mark.parametrize(("flags", "message"), [
    ([], "--feedback temp"),
    (["--feedback", "temp", "load"], "columns ['hour'] are not fed back: give their future values, --exogenous"),
    (["--feedback", "pressure"], "no column 'pressure'; the history's columns are ['temp', 'load', 'hour']"),
    (["--feedback", "temp=x"], "after '=' comes an output column's index"),
    (["--feedback", "temp", "load", "--exogenous", "EXO"], "--exogenous gives columns ['day']; the columns not fed "
                                                           "back are ['hour']"),
    (["--feedback", "temp", "load", "hour=0", "--exogenous", "EXO"], "every column is fed back"),
    (["--feedback", "temp=5", "--exogenous", "EXO"], "output columns are 0..1"),
])
def test_forecast_refusals_say_which_flag_to_fix(sensors: Path, tmp_path: Path, flags: list[str],
                                                 message: str) -> None:
    past = write_csv(tmp_path / "past.csv", ["temp", "load", "hour"], np.ones((5, 3)))
    exogenous = write_csv(tmp_path / "exo.csv", ["day"], np.ones((5, 1)))
    result = run_cli("forecast", str(sensors), "--history", str(past), "--horizon", "3",
                     *[str(exogenous) if f == "EXO" else f for f in flags])
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""


def test_forecast_of_the_bundled_model_refuses_feedback() -> None:
    result = run_cli("forecast", "--feedback", "co2")
    assert result.returncode == 2 and "--feedback and --exogenous are for your model" in result.stderr


def test_forecast_of_a_token_model_or_from_a_binary_file_says_so(sensors: Path) -> None:
    import rnnstream

    result = run_cli("forecast", str(rnnstream.demo.TEXT_MODEL), "--history", str(rnnstream.demo.TEXT_MODEL))
    assert result.returncode == 2 and "real-valued inputs" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("forecast", str(sensors), "--history", str(rnnstream.demo.TEXT_MODEL))
    assert result.returncode == 2 and "is not a text file" in result.stderr and "Traceback" not in result.stderr


def test_generate_checks_the_model_before_printing_anything() -> None:
    import rnnstream

    result = run_cli("generate", str(rnnstream.demo.SEED_MODEL), "--prompt", "1 2", "--steps", "3")
    assert result.returncode == 2 and result.stdout == ""
    assert "token generation needs a model with one input of token ids" in result.stderr


def test_generate_checks_the_vocabulary_and_prompt_before_printing_anything(tmp_path: Path) -> None:
    import rnnstream

    short = tmp_path / "vocab.json"
    short.write_text(json.dumps({"tokens": list("abc")}))
    result = run_cli("generate", str(rnnstream.demo.TEXT_MODEL), "--vocab", str(short), "--prompt", "ab")
    assert result.returncode == 2 and result.stdout == ""
    assert "lists 3 tokens but model 'shakespeare_char' scores 76" in result.stderr
    for flags, message in ((["--prompt", "1 999"], "prompt token 999"), (["--prompt", "1", "--stop", "x"], "--stop")):
        result = run_cli("generate", str(rnnstream.demo.TEXT_MODEL), *flags)
        assert result.returncode == 2 and result.stdout == "" and message in result.stderr, result.stderr


def test_export_writes_the_step_onnx_runtime_runs(sensors: Path, tmp_path: Path) -> None:
    import rnnstream

    ort = pytest.importorskip("onnxruntime")
    model = rnnstream.load(sensors)
    for layout in ("row", "parts"):
        path = tmp_path / f"{layout}.onnx"
        result = run_cli("export", str(sensors), "-o", str(path), "--state", layout)
        assert result.returncode == 0 and f"wrote {path}" in result.stdout, result.stderr
        expected = r"state \[B, 16\]" if layout == "row" else r"lstm[._\w]*\.h \[1, B, 8\]"  # Keras numbers layers
        assert re.search(expected, result.stdout.replace("lstm_", "lstm.")), result.stdout
    session = ort.InferenceSession(str(tmp_path / "row.onnx"), providers=["CPUExecutionProvider"])
    x, state = np.random.default_rng(2).normal(size=(5, 3)).astype(np.float32), model.initial_state(5)
    _, state = model.step(x, state)
    y, new_state = model.step(x, state)
    got = session.run(None, {"sensors": x, "state": np.asarray(state.rows)})
    np.testing.assert_allclose(got[0], y, atol=1e-5)
    np.testing.assert_allclose(got[1], np.asarray(new_state.rows), atol=1e-5)


def test_export_names_its_default_file_and_refuses_what_it_cannot(sensors: Path, tmp_path: Path) -> None:
    import rnnstream

    result = subprocess.run([sys.executable, "-m", "rnnstream", "export", str(sensors)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and (tmp_path / "sensors_step.onnx").is_file(), result.stderr
    refused = run_cli("export", str(rnnstream.demo.TEXT_MODEL), "-o", str(tmp_path / "text.onnx"))
    assert refused.returncode == 2 and "takes token ids" in refused.stderr and "Traceback" not in refused.stderr
    assert run_cli("export", str(sensors), "--state", "columns").returncode == 2  # argparse: not a choice


def test_bench_serve_takes_model_files(sensors: Path, tmp_path: Path) -> None:
    result = run_cli("bench", "serve", str(sensors), "--streams", "4", "--seconds", "0.3", "--protocols", "http",
                     "websocket", "--rates", "--pairs", "0")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("sensors ")]
    assert {(r[1], r[2]) for r in rows} == {("http", "on"), ("http", "off"), ("websocket", "on"),
                                             ("websocket", "off")}


@pytest.mark.parametrize(("models", "message"), [
    (["my_model.keras"], "cannot read my_model.keras"),
    (["TEXT"], "one real-valued input (B, F) per step; model 'shakespeare_char' has chars"),
    (["seed", "seed=builtin:identity"], "two share a name"),
])
def test_bench_serve_refuses_models_it_cannot_drive_before_starting(models: list[str], message: str) -> None:
    import rnnstream

    result = run_cli("bench", "serve", *[str(rnnstream.demo.TEXT_MODEL) if m == "TEXT" else m for m in models])
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_serve_with_a_token_prints_a_curl_that_works_when_pasted() -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "rnnstream", "serve", "builtin:identity", "--token", "it's s3cret",
                               "--port", str(port), "--grpc-port", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:  # on a thread, so that a silent server fails the test instead of hanging it
            for line in server.stdout or []:
                lines.put(line)

        threading.Thread(target=read, daemon=True).start()
        line = ""
        while not line.startswith("curl"):  # the start-up banner, then the example requests
            line = lines.get(timeout=60).strip()
        assert "Authorization: Bearer" in line
        for _ in range(600):  # the server prints its examples, then starts listening
            pasted = subprocess.run(["bash", "-c", line + " -w ' %{http_code}'"], capture_output=True, text=True)
            if pasted.stdout.endswith(" 200"):
                break
            time.sleep(0.1)
        assert pasted.stdout.endswith(" 200"), pasted.stdout
        assert json.loads(pasted.stdout.removesuffix(" 200"))["outputs"][0]["data"] == [0, 0, 0, 0]
    finally:
        server.terminate()
        server.wait(timeout=30)
