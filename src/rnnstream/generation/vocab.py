"""Vocabulary: characters ↔ token ids, for character-level text models.

The file format is JSON with a ``"tokens"`` list: token id ``i`` is the string ``tokens[i]``. The bundled
text model's vocabulary is ``rnnstream.demo.text_vocabulary()``.

>>> vocab = Vocabulary(["\\n", " ", "a", "b"])
>>> vocab.encode("ab a")
[2, 3, 1, 2]
>>> vocab.decode([3, 2, 0])
'ba\\n'
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from rnnstream.errors import InputError, ModelFileError


class Vocabulary:
    """Token id ``i`` ↔ the string ``tokens[i]`` (one character each for a character-level model)."""

    def __init__(self, tokens: Sequence[str]) -> None:
        tokens = list(tokens)
        if not tokens or not all(isinstance(t, str) and t for t in tokens):
            raise InputError("a vocabulary is a non-empty list of non-empty strings")
        if len(set(tokens)) != len(tokens):
            repeated = sorted({t for t in tokens if tokens.count(t) > 1})
            raise InputError(f"a vocabulary lists each token once; repeated: {repeated}")
        if any(len(t) != 1 for t in tokens):
            raise InputError("this vocabulary encodes text character by character: every token is one character")
        self.tokens = tokens
        self._ids = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> Vocabulary:
        """Read ``{"tokens": [...]}`` from ``path``."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            tokens = data["tokens"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelFileError(
                f"{path}: not a vocabulary file ({error}); expected JSON with a \"tokens\" list of characters"
            ) from None
        return cls(tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens)"

    def encode(self, text: str) -> list[int]:
        """The ids of ``text``'s characters; a character outside the vocabulary raises InputError."""
        unknown = sorted({c for c in text if c not in self._ids})
        if unknown:
            raise InputError(
                f"characters {unknown!r} are not in this model's vocabulary of {len(self)}; "
                f"use only {''.join(t for t in self.tokens if t.isprintable())!r} and newlines"
            )
        return [self._ids[c] for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of token ``ids``; an id outside the vocabulary raises InputError."""
        out = []
        for i in ids:
            if not 0 <= int(i) < len(self.tokens):
                raise InputError(f"token id {i} is outside this vocabulary (ids 0..{len(self) - 1})")
            out.append(self.tokens[int(i)])
        return "".join(out)
