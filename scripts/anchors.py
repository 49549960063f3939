"""Where a safeguard mutant applies: its anchor text, found inside one named definition.

An anchor pinned to a whole file by exact text breaks on every reformatting and forces code to
keep its words. Here an anchor is looked for only inside the function or class it names
(`within="SqliteBackend.checkpoint"`, found with the `ast` module wherever it moves in the
file), and whitespace is free: the anchor's tokens match with any spaces or line breaks
between them. It must occur exactly once in that definition; the error says which one.
"""

from __future__ import annotations

import ast
import itertools
import re
from dataclasses import dataclass


class AnchorError(ValueError):
    pass


def definition_span(source: str, qualname: str) -> tuple[int, int]:
    """Character offsets of the definition `qualname` ("Class.method", "function", or
    "outer.inner" for a nested function) in `source`, decorators included."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def find(body: list[ast.stmt], names: list[str]) -> ast.AST | None:
        for node in body:
            if (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                    and node.name == names[0]):
                return node if len(names) == 1 else find(node.body, names[1:])
        return None

    node = find(tree.body, qualname.split("."))
    if node is None:
        raise AnchorError(f"no definition {qualname!r}")
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    assert node.end_lineno is not None
    return starts[first - 1], starts[node.end_lineno]


def pattern(anchor: str) -> re.Pattern[str]:
    """The anchor's tokens (words, and each other character) with any whitespace between
    them: a line wrapped inside brackets, or spaces around an operator, still match. Two
    words need some whitespace between them, as Python does."""
    tokens = re.findall(r"\w+|\S", anchor)
    parts = [re.escape(tokens[0])] if tokens else []
    for before, token in itertools.pairwise(tokens):
        words = re.fullmatch(r"\w+", before) and re.fullmatch(r"\w+", token)
        parts += [r"\s+" if words else r"\s*", re.escape(token)]
    return re.compile("".join(parts))


@dataclass(frozen=True)
class Match:
    start: int
    end: int


def locate(source: str, anchor: str, within: str | None, path: str = "") -> Match:
    low, high = definition_span(source, within) if within else (0, len(source))
    found = [m for m in pattern(anchor).finditer(source, low, high)]
    where = f"{path}:{within}" if within else path
    if len(found) != 1:
        raise AnchorError(f"the anchor occurs {len(found)} times in {where}, not once:\n"
                          f"{anchor.strip()}")
    return Match(found[0].start(), found[0].end())


def replace(source: str, anchor: str, new: str, within: str | None, path: str = "") -> str:
    """`source` with the anchor replaced by `new`. Whitespace `new` shares with the anchor's
    start and end is kept from the code instead (the anchor's indentation, which the code may
    have changed)."""
    match = locate(source, anchor, within, path)
    lead = len(anchor) - len(anchor.lstrip())
    trail = len(anchor) - len(anchor.rstrip())
    body = new
    if lead and body[:lead] == anchor[:lead]:
        body = body[lead:]
    if trail and body.endswith(anchor[len(anchor) - trail:]):
        body = body[:len(body) - trail]
    return source[:match.start] + body + source[match.end:]
