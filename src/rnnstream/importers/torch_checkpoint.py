"""What ``from_torch`` is given besides a plain module: wrappers around it, and checkpoint files.

Wrappers that only forward to the module they hold are unwrapped before tracing (:func:`unwrap`):
``torch.compile``'s result (its one child ``_orig_mod``), ``nn.DataParallel`` and
``nn.parallel.DistributedDataParallel`` (their ``.module``). A TorchScript module is refused: its
``forward`` is compiled TorchScript, which torch.fx cannot trace.

A checkpoint (:func:`load_checkpoint`) is read with ``torch.load(weights_only=True)``, so no code in
it runs. It is a ``state_dict``, or a training checkpoint: a dict holding one under a key of
:data:`STATE_KEYS`. Keys saved from a wrapper (``module.``, ``_orig_mod.``) lose that prefix. Every
key and shape is checked before anything is loaded.

>>> STATE_KEYS[:2], WRAPPER_PREFIXES
(('model_state_dict', 'state_dict'), ('module.', '_orig_mod.'))
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnstream.errors import ModelFileError, UnsupportedLayerError
from rnnstream.importers.torch_files import is_torchscript

STATE_KEYS = ("model_state_dict", "state_dict", "model", "model_state", "net")
"""Keys of a training checkpoint dict that may hold the model's ``state_dict``, in the order tried."""

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""Key prefixes that ``nn.DataParallel`` / DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) add."""

_COMPILED = ("torch._dynamo.eval_frame", "OptimizedModule")
"""torch.compile's wrapper, recognised by module and class name (nothing private is imported)."""


def unwrap(module: Any) -> tuple[Any, list[str]]:
    """The module a wrapper holds (repeatedly), and the wrappers taken off, outermost first.

    >>> inner = torch.nn.Linear(2, 2)
    >>> unwrap(torch.nn.DataParallel(inner)) == (inner, ["nn.DataParallel"])
    True
    """
    taken: list[str] = []
    while True:
        if isinstance(module, torch.jit.ScriptModule):
            raise UnsupportedLayerError(
                f"{type(module).__name__} is a TorchScript module (torch.jit.script / torch.jit.trace): its forward "
                "is compiled TorchScript, which torch.fx cannot trace. Pass the nn.Module itself: build the "
                "original class and load the scripted module's weights into it (module.load_state_dict("
                "scripted.state_dict()) fits, the keys are the same)"
            )
        if isinstance(module, nn.DataParallel | nn.parallel.DistributedDataParallel):
            taken.append(f"nn.{type(module).__name__}")
            module = module.module
        elif (type(module).__module__, type(module).__name__) == _COMPILED:
            children = dict(module.named_children())
            if set(children) != {"_orig_mod"}:
                raise UnsupportedLayerError(f"a torch.compile'd module with children {sorted(children)} is not read")
            taken.append("torch.compile")
            module = children["_orig_mod"]
        else:
            return module, taken


def load_checkpoint(module: Any, path: Path) -> str:
    """Load a checkpoint into ``module`` after checking every key and shape; what was read, in words."""
    state = _read(path)
    where = ""
    if isinstance(state, Mapping) and not _all_tensors(state):
        key = next((k for k in STATE_KEYS if isinstance(state.get(k), Mapping) and _all_tensors(state[k])), None)
        if key is None:
            raise ModelFileError(
                f"checkpoint {str(path)!r} is a dict without a state_dict: its keys are "
                f"{sorted(map(str, state))[:12]}, and none of {list(STATE_KEYS)} holds a dict of tensors. "
                "Save the weights with torch.save({'model_state_dict': module.state_dict(), ...}, path)"
            )
        state, where = state[key], f"[{key!r}]"
    if not isinstance(state, Mapping):
        raise ModelFileError(
            f"checkpoint {str(path)!r} holds a {type(state).__name__}, not a state_dict of tensors; "
            "save it with torch.save(module.state_dict(), path)"
        )
    state, removed = _strip_prefixes(dict(state), set(module.state_dict()))
    _check(module, path, state)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:  # e.g. a dtype torch cannot copy into the parameter
        raise ModelFileError(f"checkpoint {str(path)!r} cannot be loaded into {type(module).__name__}: {e}") from None
    return path.name + where + "".join(f" (prefix {p!r} removed)" for p in removed)


def _read(path: Path) -> Any:
    if not path.exists():
        raise ModelFileError(f"checkpoint {str(path)!r} does not exist")
    if is_torchscript(path):
        raise ModelFileError(
            f"checkpoint {str(path)!r} is a TorchScript archive (torch.jit.save): compiled code, not a state_dict. "
            "Build the module's class, load the archive's weights into it (torch.jit.load(path).state_dict() "
            "fits it) and pass that module, or save module.state_dict() and pass it as checkpoint="
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... for files it cannot read safely
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = (f"a pickled Python object ({found.group(1)}), e.g. a whole module saved with torch.save(module)"
                if found else f"what it cannot read ({type(e).__name__}: {str(e)[:200]})")  # fmt: skip
        raise ModelFileError(
            f"checkpoint {str(path)!r} cannot be read with torch.load(weights_only=True): it holds "
            f"{what}; rnnstream never unpickles code. "
            "Save the weights with torch.save(module.state_dict(), path) and pass the module with checkpoint=path"
        ) from None


def _all_tensors(state: Mapping[Any, Any]) -> bool:
    return bool(state) and all(isinstance(v, torch.Tensor) for v in state.values())


def _strip_prefixes(state: dict[str, Any], expected: set[str]) -> tuple[dict[str, Any], list[str]]:
    """Take off wrapper prefixes that every key has and the module's keys do not."""
    removed: list[str] = []
    while set(state) != expected:
        prefix = next((p for p in WRAPPER_PREFIXES if all(str(k).startswith(p) for k in state)), None)
        if prefix is None or any(k.startswith(prefix) for k in expected):
            break
        state = {str(k)[len(prefix) :]: v for k, v in state.items()}
        removed.append(prefix)
    return state, removed


def _check(module: Any, path: Path, state: dict[str, Any]) -> None:
    expected = module.state_dict()
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"checkpoint {str(path)!r} holds values that are not tensors; it is not a state_dict")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelFileError(
            f"checkpoint {str(path)!r} does not fit {type(module).__name__}: missing keys {missing}, "
            f"unexpected keys {unexpected}"
        )
    wrong = [f"{k}: {tuple(state[k].shape)}, expected {tuple(expected[k].shape)}"
             for k in sorted(expected) if tuple(state[k].shape) != tuple(expected[k].shape)]  # fmt: skip
    if wrong:
        raise ModelFileError(f"checkpoint {str(path)!r} has mis-shaped weights: {'; '.join(wrong)}")
