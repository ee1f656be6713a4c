"""The project's own errors share one base, so the command line's front door can tell a mistake
it should explain in one line (a missing artifact, a bad recipe, an unreadable data set) from a bug
that needs its traceback."""

from __future__ import annotations


class FrameWatchError(Exception):
    """A problem with the user's input or environment; the message says what to do."""
