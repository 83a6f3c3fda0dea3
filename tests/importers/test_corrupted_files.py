"""Corrupted and mutated model files: every importer path either loads the model or refuses it with an
RnnstreamError (never a raw ValueError, KeyError, TypeError...). Hypothesis mutates the bundled models'
Keras configs (values, keys, layer classes, shapes), their weight files (shapes, bytes) and ONNX files.

``RNNSTREAM_FUZZ_SCALE`` multiplies the number of cases (``make soak``).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnstream
from rnnstream.errors import RnnstreamError

SCALE = int(os.environ.get("RNNSTREAM_FUZZ_SCALE", "1"))
SETTINGS = settings(deadline=None, derandomize=SCALE == 1, database=None, suppress_health_check=list(HealthCheck))
MODELS = {"seed": rnnstream.demo.SEED_MODEL, "text": rnnstream.demo.TEXT_MODEL, "co2": rnnstream.demo.CO2_MODEL}
OUTCOMES: Counter[str] = Counter()

JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 300) | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children,
                                                                                       max_size=3), max_leaves=6)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indices) into a JSON value."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


@st.composite
def mutated_config(draw: st.DrawFn, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with one to three values replaced, deleted or nudged (shapes and sizes included)."""
    config = json.loads(json.dumps(config))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(paths(config)[1:]))
        parent = config
        for key in where[:-1]:
            parent = parent[key]
        old = parent[where[-1]]
        action = draw(st.sampled_from(["replace", "delete", "nudge"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[where[-1]]
        elif action == "nudge" and isinstance(old, int) and not isinstance(old, bool):
            parent[where[-1]] = old + draw(st.sampled_from([-old, -1, 1, 7]))
        else:
            parent[where[-1]] = draw(JSON)
    return config


def rewrite(source: str, target: Path, config: dict[str, Any] | None = None, weights: bytes | None = None) -> None:
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for item in original.namelist():
            data = original.read(item)
            if item == "config.json" and config is not None:
                data = json.dumps(config).encode()
            if item == "model.weights.h5" and weights is not None:
                data = weights
            copy.writestr(item, data)


def loads_or_refuses(path: Path) -> None:
    try:
        rnnstream.load(path)
        OUTCOMES["loaded"] += 1
    except RnnstreamError as error:
        OUTCOMES[type(error).__name__] += 1


@pytest.mark.parametrize("name", list(MODELS))
def test_mutated_keras_configs_load_or_are_refused(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    source = MODELS[name]
    with zipfile.ZipFile(source) as archive:
        config = json.loads(archive.read("config.json"))
    folder = tmp_path_factory.mktemp(name)

    @settings(SETTINGS, max_examples=150 * SCALE)
    @given(mutated_config(config))
    def check(mutated: dict[str, Any]) -> None:
        path = folder / "model.keras"
        rewrite(source, path, config=mutated)
        loads_or_refuses(path)

    check()


def resized(data: bytes, change: int, seed: int) -> bytes:
    """The weights file with one dataset given another shape (one more or fewer row), the rest as they were."""
    buffer = io.BytesIO(data)
    with h5py.File(buffer, "r+") as weights:
        names: list[str] = []
        weights.visititems(lambda key, node: names.append(key) if isinstance(node, h5py.Dataset) else None)
        key = names[seed % len(names)]
        old = weights[key][()]
        del weights[key]
        shape = (max(0, old.shape[0] + change), *old.shape[1:]) if old.ndim else (2,)
        weights[key] = np.zeros(shape, old.dtype)
    return buffer.getvalue()


@pytest.mark.parametrize("name", list(MODELS))
def test_weights_of_other_shapes_or_broken_bytes_are_refused(name: str, tmp_path: Path) -> None:
    source = MODELS[name]
    with zipfile.ZipFile(source) as archive:
        original = archive.read("model.weights.h5")

    @settings(SETTINGS, max_examples=40 * SCALE)
    @given(st.integers(-1, 1).filter(bool), st.integers(0, 10_000), st.integers(0, len(original)))
    def check(change: int, seed: int, cut: int) -> None:
        path = tmp_path / "model.keras"
        rewrite(source, path, weights=resized(original, change, seed))
        loads_or_refuses(path)
        rewrite(source, path, weights=original[:cut] + bytes(seed % 256 for _ in range(8)))
        loads_or_refuses(path)

    check()


@settings(SETTINGS, max_examples=60 * SCALE)
@given(st.binary(max_size=64), st.sampled_from([".keras", ".h5", ".onnx", ".pt"]))
def test_files_that_are_not_models_are_refused(tmp_path_factory: pytest.TempPathFactory, data: bytes,
                                                suffix: str) -> None:
    path = tmp_path_factory.mktemp("junk") / f"model{suffix}"
    path.write_bytes(data)
    with pytest.raises(RnnstreamError):
        rnnstream.load(path)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_mutated_onnx_graphs_load_or_are_refused(kind: str, tmp_path: Path) -> None:
    """An ONNX recurrent model with one attribute, initializer shape, input dimension or operator changed."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    from tests.importers.onnx_graphs import rnn_model

    base = onnx.load(rnn_model(tmp_path / "base.onnx", kind, seed=3))

    @settings(SETTINGS, max_examples=60 * SCALE)
    @given(st.sampled_from(["attribute", "initializer", "dimension", "op"]), st.integers(0, 10_000),
           st.integers(-3, 40), st.sampled_from(["Conv", "LSTM", "GRU", "Gather", "Relu", "", "Loop"]))
    def check(what: str, seed: int, value: int, op: str) -> None:
        model = onnx.ModelProto()
        model.CopyFrom(base)
        nodes = model.graph.node
        node = nodes[seed % len(nodes)]
        if what == "attribute" and node.attribute:
            attribute = node.attribute[seed % len(node.attribute)]
            node.attribute.remove(attribute)
            node.attribute.append(helper.make_attribute(attribute.name, value))
        elif what == "initializer" and model.graph.initializer:
            initializer = model.graph.initializer[seed % len(model.graph.initializer)]
            array = numpy_helper.to_array(initializer)
            resized = np.zeros((max(0, value), *array.shape[1:]) if array.ndim else (abs(value),), array.dtype)
            initializer.CopyFrom(numpy_helper.from_array(resized, initializer.name))
        elif what == "dimension":
            dims = model.graph.input[0].type.tensor_type.shape.dim
            dims[seed % len(dims)].dim_value = max(0, value)
        else:
            node.op_type = op
        path = tmp_path / "model.onnx"
        onnx.save(model, str(path))
        loads_or_refuses(path)

    check()


def test_zz_outcomes() -> None:
    print(dict(OUTCOMES))
