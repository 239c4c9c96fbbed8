"""Errors a user fixes by getting or preparing data; their one line is shown as is at start-up."""

from __future__ import annotations


class DataNotFoundError(FileNotFoundError):
    """A dataset root (or the files it should hold) is missing or empty; the message says what to put there."""
