"""The argument parser every glmlab command uses: errors on one line, no usage block.

A user who mistypes a flag reads ``PROG: error: MESSAGE`` and nothing else (exit status 2); the
full usage is one ``--help`` away.
"""

from __future__ import annotations

import argparse


class ArgsError(ValueError):
    """A training argument or input that cannot be used; the message is one line."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``PROG: error: MESSAGE``, exit status 2 (no usage block)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")
