"""The bundled character-level text model: Embedding(76, 64) → GRU(256) → Dense(76) logits, trained on
eight plays of Shakespeare (public domain; source and licence in ``DATA.md`` beside this file).

>>> vocab = text_vocabulary()
>>> len(vocab), vocab.decode(vocab.encode("To be, or not to be"))
(76, 'To be, or not to be')
"""

from __future__ import annotations

from pathlib import Path

from rnnstream.generation.vocab import Vocabulary

DIRECTORY = Path(__file__).parent
TEXT_MODEL = DIRECTORY / "shakespeare_char.keras"
TEXT_VOCABULARY = DIRECTORY / "shakespeare_char.json"


def text_vocabulary() -> Vocabulary:
    """The text model's vocabulary: token id ``i`` is the character ``tokens[i]``."""
    return Vocabulary.from_json(TEXT_VOCABULARY)
