"""The one text check: what may be embedded, and the words for what may not.

Any Unicode is fine (emoji, right-to-left scripts, combining marks, control characters);
refused are non-strings, texts with no visible character (empty, spaces, zero-width or
control characters only) and unpaired surrogates, which are not Unicode text at all.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Callable, Sequence

from .errors import NotTextError, TextError

# Unicode categories that show nothing: spaces and line/paragraph separators, control and format
# characters (zero-width space, joiners, BOM, direction marks).
INVISIBLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})
_SURROGATE = re.compile("[\ud800-\udfff]")  # half of a UTF-16 pair: never valid on its own


def is_blank(text: str) -> bool:
    """True when ``text`` shows nothing: empty, or only spaces, control and zero-width characters."""
    return all(unicodedata.category(c) in INVISIBLE_CATEGORIES for c in text)


def text_problem(text: object) -> str | None:
    """Why ``text`` cannot be embedded, as the end of a sentence ("is empty: ..."), or None when it can."""
    if not isinstance(text, str):
        return f"is {type(text).__name__}, expected str"
    surrogate = _SURROGATE.search(text)
    if surrogate:
        return (f"has an unpaired surrogate (U+{ord(surrogate.group()):04X} at character {surrogate.start() + 1}), "
                "which is not valid Unicode text")
    if is_blank(text):
        return "is empty: it has no visible character, only spaces or invisible ones"
    return None


def check_texts(texts: Sequence[object], name: Callable[[int], str] = lambda i: f"texts[{i}]") -> None:
    """Raise for the first text that cannot be embedded, naming it: ``name(index)`` + its problem.

    A non-string raises NotTextError (a TypeError); any other problem TextError (a ValueError).
    """
    for i, text in enumerate(texts):
        problem = text_problem(text)
        if problem:
            kind = NotTextError if not isinstance(text, str) else TextError
            raise kind(f"{name(i)} {problem}")
