"""Sample IDs that differ from a dataset's only in how they are written: normalization, look-alike letters.

A request typed, pasted or exported through other software can name ``café`` decomposed (``e`` + U+0301)
where the dataset holds it composed (NFC), ``digits-００４２`` in fullwidth digits (which NFKC folds), or
``dіgits-0042`` with a Cyrillic ``і`` that looks exactly like the Latin ``i`` (Unicode's confusables table
of UTS #39, as shipped by the ``confusable_homoglyphs`` package), or carry an invisible character such as a
zero-width space. Such an ID is still not the dataset's ID, and a request is only ever resolved by exact
IDs; this module only finds the ID the request most likely meant, for the hint.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Container, Iterable, Sequence

from auditkit.messages import shown

_CHECKED = 1000
"""Unknown IDs examined for a hint; the request is refused either way."""


@functools.lru_cache(maxsize=4096)
def _ascii_twin(char: str) -> str:
    """The ASCII character ``char`` looks like (Unicode's confusables), ``""`` for an invisible one, else itself."""
    if char.isascii():
        return char
    if unicodedata.category(char) == "Cf":  # zero-width spaces and joiners, bidi marks, the BOM
        return ""
    from confusable_homoglyphs import confusables  # a 1 MB table, loaded only on this error path

    for entry in confusables.is_confusable(char, greedy=True) or []:
        for glyph in entry["homoglyphs"]:
            if len(glyph["c"]) == 1 and glyph["c"].isascii() and glyph["c"].isprintable():
                return glyph["c"]
    return char


def skeleton(text: str) -> str:
    """``text`` in NFKC, invisible characters dropped and each look-alike character replaced by its ASCII twin."""
    return "".join(_ascii_twin(c) for c in unicodedata.normalize("NFKC", text))


def _describe(chars: Iterable[str]) -> str:
    named = [f"U+{ord(c):04X} {unicodedata.name(c, 'unnamed')}" for c in dict.fromkeys(chars) if not c.isascii()]
    return ", ".join(named[:2]) + (", …" if len(named) > 2 else "")


def _difference(requested: str, intended: str) -> str:
    """In what way two IDs that look alike differ, for the hint."""
    chars = [c for c in requested if c not in intended] + [c for c in intended if c not in requested]
    if unicodedata.normalize("NFC", requested) == unicodedata.normalize("NFC", intended):
        kind = "Unicode normalization (composed vs decomposed characters)"
    elif unicodedata.normalize("NFKC", requested) == unicodedata.normalize("NFKC", intended):
        kind = "compatibility characters such as fullwidth digits (NFKC)"
    else:
        kind = "look-alike or invisible characters"
    described = _describe(chars)
    return f"{kind}: {described}" if described else kind


def likely_intended(unknown: Sequence[str], known: Container[str] & Iterable[str]) -> str | None:
    """A hint naming the dataset ID the first of ``unknown`` most likely meant, or ``None``.

    Args:
        unknown: requested IDs the dataset does not hold, in request order.
        known: every ID of the dataset (a dict or set: membership is tested, and it is iterated once, only
            when it holds IDs written with non-ASCII characters).
    """
    matches: list[tuple[str, str]] = []
    index: dict[str, str] | None = None
    for requested in unknown[:_CHECKED]:
        forms = (unicodedata.normalize("NFC", requested), unicodedata.normalize("NFKC", requested), skeleton(requested))
        intended = next((form for form in forms if form != requested and form in known), None)
        if intended is None:
            if index is None:  # the dataset's own non-ASCII IDs, by skeleton (e.g. Cyrillic IDs typed in Latin)
                index = {skeleton(i): i for i in known if not i.isascii()}
            intended = index.get(skeleton(requested))
        if intended is not None:
            matches.append((requested, intended))
    if not matches:
        return None
    requested, intended = matches[0]
    more = f"; {len(matches) - 1} more look like dataset IDs too" if len(matches) > 1 else ""
    return (f"did you mean {shown(intended, limit=40)}? The request's {shown(requested, limit=40)} differs from it only "
            f"in {_difference(requested, intended)}{more}")
