"""A module's weights as its ``forward`` computes them: plain parameters, weight-normalised or pruned ones.

Some of PyTorch's utilities replace a parameter by a tensor computed before each call, and rnnstream reads
the tensor they compute, at load:

- ``torch.nn.utils.parametrizations.weight_norm`` (a parametrization holding ``original0`` = g and
  ``original1`` = v) and the legacy ``torch.nn.utils.weight_norm`` (parameters ``weight_g`` and ``weight_v``,
  and a forward pre-hook) both give ``w = g · v / ‖v‖``, the norm taken over every axis of v on which g
  has size 1 (every axis but ``dim``, the output channels by default; all of them for ``dim=None``). The
  classic TCN (Bai et al.) wraps every ``Conv1d`` in it.
- ``torch.nn.utils.prune`` (parameter ``weight_orig``, buffer ``weight_mask``): ``w = orig · mask``.

The tensor a legacy pre-hook left on the module (``module.weight``) is what its last call computed, stale
after training or ``load_state_dict``: it is never read. Other parametrizations and hooks
(``spectral_norm``, ``orthogonal``, one's own) are refused with the way to bake them into a parameter.

>>> import torch
>>> conv = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv1d(2, 3, 2))
>>> module_class(conv).__name__, tuple(effective(conv, "weight").shape)
('Conv1d', (3, 2, 2))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.nn.utils import parametrize

from rnnstream.errors import UnsupportedLayerError

WEIGHT_NORM = ("torch.nn.utils.parametrizations", "_WeightNorm")
"""weight_norm's parametrization, recognised by module and class name (nothing private is imported)."""

Compute = Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor]
"""A weight from the two tensors it is computed from, and its name (for errors)."""

PARAMETRIZATIONS: dict[tuple[str, str], tuple[str, Compute]] = {
    WEIGHT_NORM: ("parametrizations.weight_norm", lambda g, v, name: weight_norm(g, v, name)),
}
"""The parametrizations read (``torch.nn.utils.parametrize``), by module and class name: what the docs call
them, and how the weight is computed from ``original0`` and ``original1``."""

HOOKS: dict[str, tuple[str, str, Compute]] = {
    "weight_norm": ("_g", "_v", lambda g, v, name: weight_norm(g, v, name)),
    "prune": ("_orig", "_mask", lambda orig, mask, name: orig.detach() * mask.detach()),
}
"""Forward pre-hooks that compute ``<name>`` from two tensors of the module, ``<name><suffix>``, and how."""


def computed() -> list[str]:
    """What computes the weights read: the legacy hooks (``torch.nn.utils.<name>``), then the parametrizations.

    >>> computed()
    ['weight_norm', 'prune', 'parametrizations.weight_norm']
    """
    return [*HOOKS, *(called for called, _ in PARAMETRIZATIONS.values())]


def module_class(module: Any) -> type:
    """The class of ``module`` that the importer's tables know: a parametrized module's own class
    (``torch.nn.utils.parametrize`` subclasses it as ``Parametrized<Class>``)."""
    cls = type(module)
    return cls.__mro__[1] if parametrize.is_parametrized(module) else cls


def effective(module: Any, name: str) -> torch.Tensor | None:
    """``module.<name>`` as forward computes it (None where the module has none, e.g. ``bias=False``)."""
    parameters = dict(module.named_parameters(recurse=False))
    buffers = dict(module.named_buffers(recurse=False))
    if parametrize.is_parametrized(module, name):
        return _parametrized(module, name)
    if name in parameters or name in buffers:
        plain: torch.Tensor = parameters[name] if name in parameters else buffers[name]
        return plain
    tensors = {**buffers, **parameters}
    for first, second, compute in HOOKS.values():
        if name + first in tensors and name + second in tensors:
            return compute(tensors[name + first], tensors[name + second], name)
    value = getattr(module, name, None)
    if isinstance(value, torch.Tensor):
        found = sorted(k for k in (*parameters, *buffers) if k.startswith(f"{name}_"))
        raise UnsupportedLayerError(
            f"its {name!r} is not a parameter but a tensor set on the module (by a forward pre-hook such as "
            f"torch.nn.utils.spectral_norm's{', from ' + ', '.join(found) if found else ''}): it is recomputed at "
            "every call, so the value it holds now may be stale, and rnnstream reads weight_norm and prune hooks "
            "only. Remove the hook so that it is a parameter (e.g. torch.nn.utils.remove_spectral_norm(module))"
        )
    return None


def _parametrized(module: Any, name: str) -> torch.Tensor:
    chain = module.parametrizations[name]
    kinds = [(type(p).__module__, type(p).__name__) for p in chain]
    if len(kinds) != 1 or kinds[0] not in PARAMETRIZATIONS:
        raise UnsupportedLayerError(
            f"its {name!r} is computed by the parametrizations {[k[1] for k in kinds]} "
            "(torch.nn.utils.parametrize); rnnstream reads weight_norm only. Bake them into the parameter first: "
            f"torch.nn.utils.parametrize.remove_parametrizations(module, {name!r})"
        )
    _, compute = PARAMETRIZATIONS[kinds[0]]
    return compute(chain.original0, chain.original1, name)


def weight_norm(g: torch.Tensor, v: torch.Tensor, name: str) -> torch.Tensor:
    """``g · v / ‖v‖``, the norm over the axes on which ``g`` has size 1 (all of them for a scalar g).

    >>> weight_norm(torch.tensor([[2.0], [1.0]]), torch.tensor([[3.0, 4.0], [1.0, 0.0]]), "weight")
    tensor([[1.2000, 1.6000],
            [1.0000, 0.0000]])
    """
    if g.dim() not in (0, v.dim()) or any(a not in (1, b) for a, b in zip(g.shape, v.shape, strict=False)):
        raise UnsupportedLayerError(
            f"its weight-normalised {name!r} has g of shape {tuple(g.shape)}, which does not fit v of shape "
            f"{tuple(v.shape)}: g must have v's size on one axis (dim) and 1 on every other"
        )
    axes = [k for k in range(v.dim()) if g.dim() == 0 or g.shape[k] == 1]
    with torch.no_grad():
        v64 = v.detach().to(torch.float64)
        norm = torch.linalg.vector_norm(v64, dim=axes, keepdim=True) if axes else v64.abs()  # (1, .., O, .., 1)
        return (v64 * (g.detach().to(torch.float64) / norm)).to(torch.float32)
