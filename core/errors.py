"""What counts as the user's mistake.

Every error a user can cause (a bad setting, text, CSV row, file or model folder) is a
``SentenceLabError`` whose message says what to change. The CLI and the app show those as they
are; anything else that goes wrong is a bug: logged with its traceback and reported as an
internal error. Each class also derives from the built-in error it refines, so
``except ValueError`` keeps working for callers that used it.
"""

from __future__ import annotations


class SentenceLabError(Exception):
    """Base of every error that is the user's to fix; the message is written for them."""


class ConfigError(SentenceLabError, ValueError):
    """A setting out of range, or a choice that is not one of the valid ones (they are listed)."""


class EncoderLoadError(ConfigError):
    """An encoder name or folder that does not load here (missing, not a model, or it needs a download)."""

    def __init__(self, name: str, reason: str) -> None:
        self.name, self.reason = name, reason
        super().__init__(f"cannot load the encoder {name!r} here: {reason}")


class DivergedError(SentenceLabError, ArithmeticError):
    """A training run whose loss or weights stopped being finite numbers: nothing of it is kept."""


class TextError(SentenceLabError, ValueError):
    """A text that cannot be embedded: empty, invisible characters only, or not valid Unicode."""


class NotTextError(TextError, TypeError):
    """A value given where a text (str) was expected."""


class DataError(SentenceLabError, ValueError):
    """Bad input data. ``problems`` lists every problem found, each naming its row and column."""

    MAX_SHOWN = 10  # problems spelled out in the message; the rest are counted

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source, self.problems = source, problems
        shown = "; ".join(problems[:self.MAX_SHOWN])
        more = f" (and {len(problems) - self.MAX_SHOWN} more)" if len(problems) > self.MAX_SHOWN else ""
        super().__init__(f"{source}: {shown}{more}")


class ModelFolderError(SentenceLabError, ValueError):
    """A folder that cannot be loaded as a Sentence Lab model: unsafe, tampered with, or inconsistent."""


class MissingFileError(SentenceLabError, FileNotFoundError):
    """A file or folder the user named is not there."""


class FolderExistsError(SentenceLabError, FileExistsError):
    """Saving would replace a file or folder that is not ours."""


class NotWritableError(SentenceLabError, PermissionError):
    """A place to save to that cannot be written (no permission, or a file where a folder must go)."""
