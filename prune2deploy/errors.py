"""The one exception family of prune2deploy and the exit codes the CLI maps them to."""
from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USER = 2
EXIT_GATE = 3


class P2DError(Exception):
    """Base class of every error prune2deploy raises on purpose."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and its hint on one line, as the CLI prints it."""
        text = " ".join(self.message.split())
        if self.hint:
            text += f" (hint: {' '.join(self.hint.split())})"
        return text


class UserError(P2DError):
    """Bad input: a file, a flag, a shape. The user can fix it; exit code 2."""

    exit_code = EXIT_USER


class VerificationError(UserError):
    """The exported model disagrees with torch beyond the tolerance."""


class MissingDependency(UserError):
    """An optional library (TensorRT, transformers, a CUDA device) is needed for what was asked."""


class GateFailed(P2DError):
    """A release gate (issue: CI gates) was not met; exit code 3."""

    exit_code = EXIT_GATE


def user_error(message: str, hint: str | None = None) -> UserError:
    """Build a UserError; written `raise user_error(...)` at the call site."""
    return UserError(message, hint)
