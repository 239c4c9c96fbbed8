"""Errors a user fixes (missing data or weights, an unsafe file, a bad config value); their one line is shown
as is at start-up, without the stack of the code that found them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hydra.errors import InstantiationException


class DataNotFoundError(FileNotFoundError):
    """A dataset root (or the files it should hold) is missing or empty; the message says what to put there."""


class MissingWeightsError(FileNotFoundError):
    """An expert's weights file is missing; the message names the file, where to get it and where to put it."""


class UnsafeCheckpointError(RuntimeError):
    """A file holds more than tensors and plain containers; it is refused before any of it runs."""


class ConfigError(ValueError):
    """Invalid config values, all listed at start-up."""


USER_ERRORS = (DataNotFoundError, MissingWeightsError, UnsafeCheckpointError, ConfigError)


@contextmanager
def plain_user_errors() -> Iterator[None]:
    """Re-raise the errors a user fixes without Hydra's InstantiationException wrapper, so their one line is
    what the user reads."""
    try:
        yield
    except InstantiationException as err:
        cause: BaseException | None = err
        while isinstance(cause, InstantiationException):
            cause = cause.__cause__
        if isinstance(cause, USER_ERRORS):
            raise cause from None
        raise
