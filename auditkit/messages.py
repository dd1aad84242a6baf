"""How values from outside appear in one-line messages: non-printable characters escaped, long values elided.

Error, hint and warning lines quote paths, sample IDs and config values that come from users and files. A
value holding a line break, an ANSI escape or a bidirectional override (U+202E) would split the line,
recolour the terminal or reorder what it shows; a 100 kB ID would bury the message. :func:`shown` quotes
one value with every non-printable character escaped (``\\n``, ``\\x1b``, ``\\u202e``) and cuts the middle
of a long one, saying how long it was; :func:`one_line` does the same to a whole message and is the last
guard before an ``error:`` or ``hint:`` line is printed.
"""

from __future__ import annotations

import os

MAX_LINE = 300
"""The longest ``error:`` / ``hint:`` line the CLI prints, prefix included."""

VALUE_LIMIT = 60
"""Characters of one quoted value kept in a message; the rest is elided."""


def escaped(text: str) -> str:
    """``text`` with each non-printable character written as its Python escape (``\\n``, ``\\u202e``)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _cut(text: str, limit: int) -> tuple[str, str]:
    """The head (two thirds) and tail (one third) of ``text`` that fill ``limit`` characters."""
    head = max(limit * 2 // 3, 1)
    return text[:head], text[len(text) - max(limit - head, 1):]


def shown(value: object, *, limit: int = VALUE_LIMIT) -> str:
    """``value`` quoted for a message: ``'digits-0042'``, or ``'aaaa…aaa' (100,000 characters)`` when long.

    Non-printable characters come out escaped, as in ``repr``, so the value cannot break the line. A
    path is shown as its text; any other non-string (a number, a list from a config file) as its ``repr``,
    so ``5`` and ``'5'`` stay distinguishable.
    """
    if not isinstance(value, (str, os.PathLike)):
        text = repr(value)
        return text if len(text) <= limit else f"{escaped(text[:limit])}… ({len(text):,} characters)"
    text = os.fspath(value) if isinstance(value, os.PathLike) else value
    if len(text) <= limit:
        return repr(text)
    head, tail = _cut(text, limit)
    return f"{head + '…' + tail!r} ({len(text):,} characters)"


def bare(value: object, *, limit: int = VALUE_LIMIT) -> str:
    """``value`` unquoted when it is short and printable (an ID in a list), else :func:`shown`."""
    text = str(value)
    return text if len(text) <= limit and text.isprintable() else shown(text, limit=limit)


def one_line(text: str, *, limit: int = MAX_LINE) -> str:
    """``text`` escaped onto one line and, if longer than ``limit``, cut in the middle with a note."""
    text = escaped(text)
    if len(text) <= limit:
        return text
    # A message leads with what matters (the problem, then its details), so most of it is kept from the start;
    # 40 characters leave room for the note, whatever the count's digits.
    head, tail = text[: limit - 80], text[len(text) - 40:]
    return f"{head} … [{len(text) - len(head) - len(tail):,} characters cut] … {tail}"
