"""The supervisor's merged log: every child's lines on one stream, each behind a fixed-width prefix.

``online    | {"event": "request", ...}`` — the name padded to the longest child name, coloured
per child when the stream is a terminal (``NO_COLOR`` turns colours off, ``FORCE_COLOR`` on).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TextIO

__all__ = ["LogOutput"]

_COLOURS = ("36", "32", "33", "35", "34", "96", "92", "93", "95", "94")
_RESET = "\x1b[0m"


class LogOutput:
    def __init__(
        self, names: Iterable[str], *, stream: TextIO | None = None, colour: bool | None = None
    ) -> None:
        self._stream = stream if stream is not None else sys.stdout
        names = ["cluster", *names]
        self._width = max(len(n) for n in names)
        if colour is None:
            if os.environ.get("NO_COLOR"):
                colour = False
            elif os.environ.get("FORCE_COLOR"):
                colour = True
            else:
                colour = self._stream.isatty()
        self._colour = colour
        self._broken = False
        self._codes = {name: _COLOURS[i % len(_COLOURS)] for i, name in enumerate(names)}
        self._codes["cluster"] = "1"  # the supervisor's own lines: bold

    def prefix(self, name: str) -> str:
        padded = f"{name:<{self._width}} |"
        if not self._colour:
            return padded
        return f"\x1b[{self._codes.get(name, '0')}m{padded}{_RESET}"

    def line(self, name: str, text: str) -> None:
        if self._broken:
            return
        try:
            self._stream.write(f"{self.prefix(name)} {text}\n")
            self._stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            # The reader went away (`make up | head`): keep supervising, stop writing.
            self._broken = True

    def say(self, text: str) -> None:
        """A line from the supervisor itself."""
        self.line("cluster", text)
