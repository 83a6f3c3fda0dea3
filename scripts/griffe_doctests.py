"""A griffe extension for the API reference (mkdocs.yml): make rnnstream's docstrings read well as Markdown.

The docstrings are prose with doctest examples and no ``Examples:`` heading, so griffe would pass a
``>>>`` line to Markdown as it is, where it reads as a nested quote. This wraps each doctest (from its
first ``>>>`` line to the next blank line, as doctest reads it) in a ``pycon`` fence and drops the
``# doctest:`` directives, which say how to compare, not what the example does. Sphinx roles
(``:class:`~rnnstream.State` ``) become code spans (``State``): Markdown has no roles, and a link
would need every target on a page of the reference.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

DIRECTIVE = re.compile(r"\s*# doctest:.*$")
ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")


def plain_roles(text: str) -> str:
    """Sphinx roles as code spans; ``~`` keeps the last part of the name, as Sphinx shows it.

    >>> plain_roles("see :class:`~rnnstream.State` and :mod:`rnnstream.server.app`")
    'see `State` and `rnnstream.server.app`'
    """
    return ROLE.sub(lambda m: "`" + (m[2].rsplit(".", 1)[-1] if m[1] else m[2]) + "`", text)


def fence_doctests(text: str) -> str:
    """``text`` with each doctest fenced as ``pycon``; code already fenced is left alone.

    >>> fence_doctests("Adds.\\n\\n>>> 1 + 1  # doctest: +SKIP\\n2\\n\\nDone.").splitlines()
    ['Adds.', '', '```pycon', '>>> 1 + 1', '2', '```', '', 'Done.']
    """
    out: list[str] = []
    fenced = in_doctest = False
    indent = ""
    for line in text.splitlines():
        stripped = line.strip()
        if in_doctest and not stripped:
            out.append(indent + "```")
            in_doctest = False
        elif not in_doctest and stripped.startswith("```"):
            fenced = not fenced
        elif not in_doctest and not fenced and stripped.startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            out.append(indent + "```pycon")
            in_doctest = True
        out.append(DIRECTIVE.sub("", line) if in_doctest else line)
    if in_doctest:
        out.append(indent + "```")
    return "\n".join(out)


class FenceDoctests(griffe.Extension):
    """Fences every loaded object's doctests and plains its roles before its docstring is parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(plain_roles(obj.docstring.value))
