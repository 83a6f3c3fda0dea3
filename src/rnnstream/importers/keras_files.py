"""Read a Keras model file into its config and a per-layer weight lookup, without Keras.

- Keras 3 ``.keras``: a zip with ``config.json``, ``metadata.json`` and ``model.weights.h5`` (or
  ``.npz``). Weights of the model's layer i sit under ``layers/<snake_case class name, made unique>``;
  newer files also name the layer in a ``name`` attribute, which wins when present.
- Legacy ``.h5`` (tf.keras 2 and Keras 3's legacy writer): ``model_config`` JSON in the root
  attributes; weights under ``model_weights/<layer name>`` in the order of ``weight_names``.

Nothing is ever unpickled or executed.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from rnnstream.errors import ModelFileError
from rnnstream.types import Array

ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

WeightLookup = Callable[[str], list[Array]]
"""Layer name → its weights, in Keras order (trainable, then non-trainable)."""


@dataclass(frozen=True)
class KerasSource:
    """A model's config (``{"class_name", "config"}``), its weights and the Keras major that wrote it."""

    model_config: dict[str, Any]
    weights: WeightLookup
    keras_major: int
    description: str


def _major(version: Any, where: str) -> int:
    text = version.decode() if isinstance(version, bytes) else str(version)
    match = re.match(r"\s*(\d+)\.", text)
    if not match:
        raise ModelFileError(f"{where}: cannot read the Keras version {text!r}")
    return int(match.group(1))


def _snake_case(name: str) -> str:
    """Keras' ``naming.to_snake_case``, which names weight groups in ``.keras`` files."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()
    return name


def _unique_snake(class_names: list[str]) -> list[str]:
    """Keras' names for the objects of a list, by class: ``lstm_cell``, ``gru_cell``, ``lstm_cell_1``, …"""
    names: list[str] = []
    used: dict[str, int] = {}
    for class_name in class_names:
        snake = _snake_case(class_name)
        used[snake] = used.get(snake, -1) + 1
        names.append(f"{snake}_{used[snake]}" if used[snake] else snake)
    return names


def _vars_in(group: h5py.Group, cells: list[str] | None = None) -> list[Array]:
    """A layer's own ``vars/0..n``, then its children's (``cell/``, ``layer/``) in name order; the groups
    of a ``cells/`` list (StackedRNNCells) in the list's order, ``cells`` (Keras names names by class, so
    their name order is not the list's)."""
    arrays: list[Array] = []
    if "vars" in group:
        own = group["vars"]
        arrays += [np.asarray(own[k]) for k in sorted(own.keys(), key=int)]
    for key in sorted(k for k in group if k != "vars"):
        child = group[key]
        if not isinstance(child, h5py.Group):
            continue
        if key == "cells" and cells is not None:
            arrays += [a for name in cells if name in child for a in _vars_in(child[name])]
        else:
            arrays += _vars_in(child, cells)
    return arrays


def _stacked_cells(config: dict[str, Any]) -> dict[str, list[str]]:
    """Layer name → the weight group names of its StackedRNNCells' cells, in the cells' order."""
    found: dict[str, list[str]] = {}
    for entry in config.get("config", {}).get("layers", []):
        cell = (entry.get("config") or {}).get("cell")
        if isinstance(cell, dict) and cell.get("class_name") == "StackedRNNCells":
            cells = (cell.get("config") or {}).get("cells") or []
            found[_layer_name(entry)] = _unique_snake([str(c.get("class_name", "")) for c in cells])
    return found


def _read_keras_v3(path: Path, data: bytes) -> KerasSource:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = set(archive.namelist())
        if "config.json" not in names:
            raise ModelFileError(f"{path} is a zip but not a Keras model: it has no config.json")
        config = json.loads(archive.read("config.json"))
        metadata = json.loads(archive.read("metadata.json")) if "metadata.json" in names else {}
        if "model.weights.h5" in names:
            weights_file: Any = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
        elif "model.weights.npz" in names:
            raise ModelFileError(f"{path}: weights stored as model.weights.npz are not supported; re-save as .keras")
        else:
            raise ModelFileError(f"{path} has no model.weights.h5: the archive holds {sorted(names)}")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, KeyError) as exc:
        raise ModelFileError(f"{path} is not a readable .keras archive ({exc}); is it truncated?") from None
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: config.json is not valid JSON ({exc})") from None
    major = _major(metadata.get("keras_version", "3.0"), str(path))
    layer_groups = _v3_layer_groups(config, weights_file)
    stacked = _stacked_cells(config)

    def lookup(layer_name: str) -> list[Array]:
        group_path = layer_groups.get(layer_name)
        if group_path is None or group_path not in weights_file:
            return []
        return _vars_in(weights_file[group_path], stacked.get(layer_name))

    return KerasSource(config, lookup, major, f"Keras {metadata.get('keras_version', '3')} .keras file {path.name}")


def _v3_layer_groups(config: dict[str, Any], weights: h5py.File) -> dict[str, str]:
    """Layer name → weight group path, by the ``name`` attribute when present, else by Keras' naming rule."""
    layers = config.get("config", {}).get("layers", [])
    snakes = _unique_snake([str(entry.get("class_name", "")) for entry in layers])
    groups = {_layer_name(entry): f"layers/{snake}" for entry, snake in zip(layers, snakes, strict=True)}
    if "layers" in weights:
        for key, group in weights["layers"].items():
            named = group.get("vars")
            name = named.attrs.get("name") if named is not None else None
            if name is not None:
                groups[name.decode() if isinstance(name, bytes) else str(name)] = f"layers/{key}"
    return groups


def _layer_name(entry: dict[str, Any]) -> str:
    return str(entry.get("name") or entry.get("config", {}).get("name", ""))


def _chunked_attr(attrs: Any, name: str) -> list[str]:
    """Read an attribute Keras may split into ``name0``, ``name1``, … when it is long."""
    if name in attrs:
        values = list(attrs[name])
    else:
        values, i = [], 0
        while f"{name}{i}" in attrs:
            values += list(attrs[f"{name}{i}"])
            i += 1
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _read_legacy_h5(path: Path, data: bytes) -> KerasSource:
    try:
        f = h5py.File(io.BytesIO(data), "r")
        raw_config = f.attrs.get("model_config")
        if raw_config is None:
            raise ModelFileError(
                f"{path} holds weights but no architecture (no model_config): it was written by "
                "save_weights(). Save the whole model with model.save('model.keras') instead"
            )
        config = json.loads(raw_config.decode() if isinstance(raw_config, bytes) else raw_config)
        major = _major(f.attrs.get("keras_version", "2.0"), str(path))
        weights_root = f.get("model_weights", f)
    except (OSError, KeyError) as exc:
        raise ModelFileError(f"{path} is not a readable Keras HDF5 file ({exc}); is it truncated?") from None
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: model_config is not valid JSON ({exc})") from None

    def lookup(layer_name: str) -> list[Array]:
        if layer_name not in weights_root:
            return []
        group = weights_root[layer_name]
        arrays = []
        for weight_name in _chunked_attr(group.attrs, "weight_names"):
            if weight_name not in group:
                raise ModelFileError(f"{path}: layer {layer_name!r} lists weight {weight_name!r} but it is missing")
            arrays.append(np.asarray(group[weight_name]))
        return arrays

    return KerasSource(config, lookup, major, f"Keras {major} .h5 file {path.name}")


def read_keras_file(path: Path) -> KerasSource:
    """Read a ``.keras`` or legacy ``.h5`` model file."""
    if path.is_dir():
        raise ModelFileError(
            f"{path} is a directory (a TensorFlow SavedModel?); rnnstream reads .keras and .h5 files: "
            "save the model with model.save('model.keras')"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if data.startswith(ZIP_MAGIC):
        return _read_keras_v3(path, data)
    if data.startswith(HDF5_MAGIC):
        return _read_legacy_h5(path, data)
    raise ModelFileError(
        f"{path} is not a Keras model file: it is neither a .keras zip archive nor an HDF5 .h5 file "
        f"(it starts with {data[:8]!r})"
    )
