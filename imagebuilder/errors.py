"""The project's error types; each carries the exit code the CLI returns for it."""

from __future__ import annotations


class ImageBuilderError(Exception):
    """Base of every error the tool reports to a user; exit code 1 unless a subclass says otherwise."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class InputError(ImageBuilderError):
    """Bad input the user can fix: a recipe, a commands file, a command-line value. Exit code 2."""

    exit_code = 2


class RecipeError(InputError):
    """A recipe problem at a known place: rendered as `FILE:LINE: key 'KEY': MESSAGE`."""

    def __init__(self, file: str, line: int | None, key: str | None, problem: str):
        self.file, self.line, self.key, self.problem = file, line, key, problem
        where = f"{file}:{line}" if line else file
        text = f"{where}: key '{key}': {problem}" if key else f"{where}: {problem}"
        super().__init__(one_line(text))


def one_line(text: str) -> str:
    """text with control characters (newlines, terminal escapes) written as escapes: a recipe's values
    are echoed in errors, and an error is one line that cannot rewrite the user's terminal."""
    return "".join(c if " " <= c != "\x7f" else repr(c)[1:-1] for c in text)


class HostError(ImageBuilderError):
    """The environment is not fit to build (missing tool, libvirtd down, no space). Exit code 1."""


class BuildError(ImageBuilderError):
    """A stage of the build failed. Exit code 1."""


class SourceError(BuildError):
    """A base image could not be fetched or verified."""


class GuestError(BuildError):
    """A libguestfs operation failed; names the operation or step."""


class VirtError(BuildError):
    """A libvirt operation failed; carries libvirt's message."""


class Interrupted(ImageBuilderError):
    """The build was stopped by SIGINT or SIGTERM. Exit code 130."""

    exit_code = 130


EXIT_BUILT = 3
"""Exit code of `build --if-changed` after building a new image (0 means nothing changed)."""
