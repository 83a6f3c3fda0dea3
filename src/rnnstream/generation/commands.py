"""``rnnstream generate`` and ``rnnstream forecast``: the command-line faces of generation.

``generate`` prints each token the moment it is sampled (the bundled Shakespeare model and its vocabulary
by default; a model of yours with ``--vocab``, or token ids without one). ``forecast`` prints a forecast
table (the bundled CO2 forecaster and series by default, or your model over a CSV history) and can plot
it to a PNG.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TextIO

import numpy as np

from rnnstream.errors import InputError, MissingDependencyError
from rnnstream.generation.api import generate
from rnnstream.generation.columns import Layout, Table, check_real_valued, feedback_pairs, read_table
from rnnstream.generation.engines import TokenModel
from rnnstream.generation.forecast import Forecast, forecast
from rnnstream.generation.vocab import Vocabulary
from rnnstream.importers import load
from rnnstream.model import StreamModel
from rnnstream.types import Array, FloatArray

DEFAULT_PROMPT = "ROMEO.\n"
QUANTILES = (0.05, 0.5, 0.95)


def generate_command(
    model_path: str | None,
    *,
    vocab_path: str | None,
    prompt: str | None,
    steps: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    seed: int | None,
    stop: list[str],
    out: TextIO | None = None,
) -> int:
    """Print ``prompt`` and then up to ``steps`` sampled tokens, each as soon as it exists."""
    from rnnstream.demo import TEXT_MODEL, text_vocabulary

    out = out or sys.stdout
    model = load(model_path or TEXT_MODEL)
    scores = TokenModel(model).vocabulary  # refuses a model that is not a token model, before any output
    vocab = Vocabulary.from_json(vocab_path) if vocab_path else text_vocabulary() if model_path is None else None
    if vocab is not None and len(vocab) != scores:
        raise InputError(f"--vocab {vocab_path} lists {len(vocab)} tokens but model {model.name!r} scores {scores}; "
                         "give the vocabulary it was trained with (token id i is tokens[i])")
    if vocab is not None:
        text = DEFAULT_PROMPT if prompt is None else prompt.replace("\\n", "\n")
        ids = vocab.encode(text)
        stops = [_one_token(vocab, s.replace("\\n", "\n")) for s in stop]
    else:
        if prompt is None:
            raise InputError("without --vocab, give the prompt as token ids: --prompt '3 14 15'")
        ids = _ids(prompt)
        stops = [_stop_id(s) for s in stop]
        text = prompt + " "
    tokens = generate(model, ids, max_tokens=steps, stop=stops, temperature=temperature, top_k=top_k,
                      top_p=top_p, seed=seed)  # checks the prompt and every option before anything is printed
    out.write(text)
    out.flush()
    for token in tokens:
        out.write(vocab.decode([token]) if vocab is not None else f"{token} ")
        out.flush()
    out.write("\n")
    return 0


def _one_token(vocab: Vocabulary, text: str) -> int:
    ids = vocab.encode(text)
    if len(ids) != 1:
        raise InputError(f"--stop {text!r}: a stop token is one character of the vocabulary")
    return ids[0]


def _stop_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(f"--stop {text!r}: without --vocab a stop token is a token id, e.g. --stop 0") from None


def _ids(prompt: str) -> list[int]:
    try:
        return [int(t) for t in prompt.replace(",", " ").split()]
    except ValueError:
        raise InputError(f"--prompt {prompt!r}: without --vocab the prompt is token ids, e.g. '3 14 15'") from None


def forecast_command(
    model_path: str | None,
    *,
    horizon: int,
    history_path: Path | None,
    start: str | None,
    noise: str | None,
    paths: int | None,
    seed: int | None,
    png: Path | None,
    every: int | None,
    feedback: list[str] | None = None,
    exogenous_path: Path | None = None,
    out: TextIO | None = None,
) -> int:
    """Forecast and print a table (every ``every``-th row); plot to ``png`` when given. With a model file,
    ``feedback`` and ``exogenous_path`` name the history's columns (see :mod:`rnnstream.generation.columns`)."""
    out = out or sys.stdout
    sigma: float | str | None = None if noise is None else noise if noise == "residual" else _float(noise)
    if model_path is None:
        if feedback is not None or exogenous_path is not None:
            raise InputError("the bundled CO2 forecaster feeds co2 back and computes its calendar itself; "
                             "--feedback and --exogenous are for your model (rnnstream forecast MODEL --history ...)")
        return _forecast_co2(horizon, start, sigma, paths, seed, png, every, out)
    if start is not None:
        raise InputError("--start picks a date of the bundled CO2 series; with your model, cut --history instead")
    if history_path is None:
        raise InputError("give the history to forecast from: --history FILE.csv (one row per step, one column "
                         "per input feature)")
    model = load(model_path)
    check_real_valued(model)
    table = read_table(history_path, "--history")
    layout = Layout(model, table.names)
    pairs = _feedback(model, layout, feedback)
    exogenous = _exogenous(layout, pairs, exogenous_path, horizon)
    result = forecast(model, layout.split(table.values), horizon, feedback=layout.feedback(pairs),
                      exogenous=exogenous, noise=sigma, paths=paths, seed=seed)
    labels = [_output_label(layout, pairs, o) for o in range(result.point.shape[1])]
    steps = np.arange(len(table.values) + 1, len(table.values) + horizon + 1)
    _print_table(out, [str(s) for s in steps], result, None, every, labels)
    if png is not None:
        fed = [c for c, o in pairs.items() if o == 0]  # the history of what output 0 forecasts
        past = table.values[:, fed[0]] if fed else np.full(len(table.values), np.nan, np.float32)
        _plot(png, np.arange(1, len(table.values) + 1), past, steps, result, None, model.name, ("step", labels[0]))
        out.write(f"wrote {png}\n")
    return 0


def _feedback(model: StreamModel, layout: Layout, feedback: list[str] | None) -> dict[int, int]:
    """``--feedback`` as ``{history column: output column}``; without it, every column fed from the output
    column of its index when the output is as wide as the history, else an error that says what to give."""
    n_out = model.output_specs[0].shape[0] if model.output_specs[0].shape else 0
    if feedback is not None:
        pairs = feedback_pairs(feedback, layout.names)
        for column, output in pairs.items():
            if output >= n_out:
                raise InputError(f"--feedback: column {layout.names[column]!r} from output column {output}; the "
                                 f"model's output columns are 0..{n_out - 1}")
        return pairs
    if n_out == len(layout.names):
        return {c: c for c in range(n_out)}
    raise InputError(f"say which outputs feed which history columns (--feedback): the model's output has {n_out} "
                     f"columns and the history {len(layout.names)} {layout.names}, so the output cannot simply "
                     f"become the next input. E.g. --feedback {layout.names[0]} (output 0 feeds column "
                     f"{layout.names[0]!r}); the other columns' future values come from --exogenous FILE.csv")


def _exogenous(layout: Layout, pairs: dict[int, int], path: Path | None, horizon: int) -> dict[str, FloatArray] | None:
    """The future values of the columns not fed back, from ``--exogenous`` (None when every column is fed)."""
    wanted = layout.exogenous_names(pairs)
    if path is None:
        if not wanted:
            return None
        if horizon > 1:
            raise InputError(f"columns {wanted} are not fed back: give their future values, --exogenous FILE.csv "
                             f"(a header row naming them, then one row per forecast time: {horizon - 1} or more)")
        return layout.exogenous(Table(wanted, np.zeros((1, len(wanted)), np.float32), True), pairs, horizon)
    if not wanted:
        raise InputError("every column is fed back (--feedback); --exogenous values would have nowhere to go")
    return layout.exogenous(read_table(path, "--exogenous"), pairs, horizon)


def _output_label(layout: Layout, pairs: dict[int, int], output: int) -> str:
    """Output ``output``'s column in the table: the name of the history column it feeds, else its index."""
    fed = [layout.names[c] for c, o in sorted(pairs.items()) if o == output]
    return fed[0] if fed else f"forecast[{output}]"


def _forecast_co2(horizon: int, start: str | None, sigma: float | str | None, paths: int | None,
                  seed: int | None, png: Path | None, every: int | None, out: TextIO) -> int:
    from rnnstream.demo import CO2_MODEL, co2_series, forecast_co2, forecast_dates

    series = co2_series()
    at = len(series.values) if start is None else series.index(start)
    if at < 3:
        raise InputError(f"--start {start}: the forecast needs some history; start after {series.dates[2]}")
    result = forecast_co2(load(CO2_MODEL), series, start=at, horizon=horizon, noise=sigma, paths=paths, seed=seed)
    dates = forecast_dates(series, at, horizon)
    known = series.values[at : at + horizon]
    out.write(f"CO2 at Mauna Loa (ppm), weekly: {horizon} weeks forecast from {series.dates[at - 1]}\n")
    _print_table(out, [str(d) for d in dates], result, known, every)
    if len(known):
        rmse = float(np.sqrt(np.mean((result.point[: len(known), 0] - known) ** 2)))
        out.write(f"error over the {len(known)} weeks with a measurement: rmse {rmse:.2f} ppm\n")
    if png is not None:
        past = max(0, at - 5 * 52)
        _plot(png, series.dates[past : at + len(known)], series.values[past : at + len(known)], dates, result,
              at - past, "CO2 at Mauna Loa, weekly", ("date", "CO2 (ppm)"))
        out.write(f"wrote {png}\n")
    return 0


def _print_table(out: TextIO, times: list[str], result: Forecast, known: Array | None, every: int | None,
                 labels: list[str] | None = None) -> None:
    """The forecast, one row per ``every`` times (and the last); ``labels``: each output column's heading."""
    H, n_out = result.point.shape
    every = every or max(1, math.ceil(H / 26))
    cone = result.paths.shape[0] > 1
    q = result.quantiles(QUANTILES) if cone else None
    labels = labels or ["forecast" if n_out == 1 else f"forecast[{o}]" for o in range(n_out)]
    header = f"{'time':>12}" + "".join(f"  {label:>12}" for label in labels)
    if cone:
        header += "".join(f"  {f'p{round(100 * p)}':>8}" for p in QUANTILES)
    if known is not None:
        header += f"  {'measured':>9}"
    out.write(header + "\n")
    for k in range(H):
        if k % every and k != H - 1:
            continue
        line = f"{times[k]:>12}" + "".join(f"  {result.point[k, o]:>12.3f}" for o in range(n_out))
        if q is not None:
            line += "".join(f"  {q[j, k, 0]:>8.2f}" for j in range(len(QUANTILES)))
        if known is not None:
            line += f"  {known[k]:>9.2f}" if k < len(known) else f"  {'':>9}"
        out.write(line + "\n")


def _plot(png: Path, t_past: Array, y_past: Array, t_future: Array, result: Forecast, actual_from: int | None,
          title: str, axes: tuple[str, str]) -> None:
    """Output 0's history, forecast and cone (and the measured values past ``actual_from``); ``axes``: the
    labels of the x axis (time) and the y axis (the forecast quantity)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("--png needs matplotlib: pip install matplotlib") from None
    figure, ax = plt.subplots(figsize=(9, 4.5))
    observed = slice(None, actual_from)
    ax.plot(t_past[observed], y_past[observed], color="0.2", lw=1, label="history")
    if actual_from is not None and actual_from < len(t_past):
        ax.plot(t_past[actual_from:], y_past[actual_from:], color="0.55", lw=1, label="measured (not seen)")
    if result.paths.shape[0] > 1:
        low, high = result.quantiles([0.05, 0.95])[:, :, 0]
        ax.fill_between(t_future, low, high, color="tab:orange", alpha=0.25, label="90% of paths")
    ax.plot(t_future, result.point[:, 0], color="tab:orange", lw=1.5, label="forecast")
    ax.set_title(title)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(png, dpi=110)
    plt.close(figure)


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"--noise is a number (σ) or 'residual', got {text!r}") from None
