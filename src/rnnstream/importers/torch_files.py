"""What a PyTorch file is, told without torch: TorchScript archives are zips of a particular layout."""

from __future__ import annotations

import zipfile
from pathlib import Path


def is_torchscript(path: Path) -> bool:
    """A zip with ``*/constants.pkl`` and ``*/code/``: what torch.jit.save writes (torch.save does not).

    >>> is_torchscript(Path(__file__))
    False
    """
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)
