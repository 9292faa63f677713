"""The error families of undistro.

One base, families by area; each family also inherits the builtin it
resembles so callers may catch either. Foreign errors are translated into
these at the boundary, so the CLI can print one line and exit non-zero.
"""

from __future__ import annotations


class UndistroError(Exception):
    """Base of every error undistro raises on purpose."""

    exit_code = 1


class PolicyError(UndistroError, ValueError):
    """A policy cannot be loaded: one or more one-line problems."""

    exit_code = 2

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ValidationError(UndistroError, ValueError):
    """One field of one resource is wrong.

    ``field`` names the offending key; the loader adds the file and the
    resource id so that the printed line points at the exact spot.
    """

    exit_code = 2

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"field '{field}': {message}")


class StateError(UndistroError, OSError):
    """The state store cannot be opened or is inconsistent."""


class RunLockedError(StateError):
    """Another process holds the state directory's run lock (an ``apply``,
    the agent's run) and the caller chose not to wait for it."""


class UnrecordedRunError(StateError):
    """A run changed the machine but could not record it (journal,
    fingerprints) in the state store, a full disk say. ``summary`` is the
    engine's ``RunSummary`` of what the run did, for the caller to report."""

    def __init__(self, message: str, summary: object) -> None:
        super().__init__(message)
        self.summary = summary


class ApplyError(UndistroError, RuntimeError):
    """An action failed while converging a resource."""


class UsageError(UndistroError, ValueError):
    """The command line asks for something that cannot be done."""

    exit_code = 2


class KegError(UndistroError, RuntimeError):
    """A keg cannot be built, found, installed or put into a generation."""


class RecipeError(KegError, ValueError):
    """A recipe file is invalid; the message names the file and the field."""

    exit_code = 2


class ResolutionError(KegError):
    """No choice of versions and variants satisfies every requirement; the
    message gives the chain of requirements that collide."""


class SourceError(KegError, OSError):
    """A source archive cannot be fetched from any mirror, or none of the
    copies found has the SHA-256 the recipe names."""


class BuildError(KegError):
    """A build step failed; nothing was added to the store."""


class ArtifactError(KegError, ValueError):
    """An artifact or its manifest was refused: bad signature, untrusted key,
    wrong hash or an unsafe tarball. Nothing entered the store."""


class GenerationError(KegError):
    """A profile generation cannot be built, switched or found; the current
    generation is unchanged."""


class FleetError(UndistroError, RuntimeError):
    """The fleet cannot be reached or refused: Serf, peers, signatures."""


_QUOTED_MAX = 80
_LINE_MAX = 300


def clip_line(line: str) -> str:
    """One line a person can read, however long the values it quotes.

    A problem line quotes what it refuses, and what it refuses may be a
    3 MB string or a 4,000-character path: each quoted value and each
    unbroken run of characters is cut to ~80 characters with an ellipsis,
    the line to ~300, and newlines become spaces.
    """
    if len(line) <= _QUOTED_MAX and "\n" not in line:
        return line
    line = line.replace("\r", " ").replace("\n", " ")
    out: list[str] = []
    size, i, n = 0, 0, len(line)
    while i < n and size <= _LINE_MAX:
        c = line[i]
        if c == " ":
            end = i + 1
            token = c
        else:
            # A quoted value runs to its closing quote (C-speed find: a 3 MB
            # value costs milliseconds); anything else to the next space.
            end = line.find(c, i + 1) + 1 if c in "'\"" else 0
            if end <= 0:
                end = line.find(" ", i + 1)
                end = n if end < 0 else end
            token = line[i:end]
            if len(token) > _QUOTED_MAX:
                tail = token[-1] if token[-1] in "'\":" else ""
                token = token[: _QUOTED_MAX - 2] + "…" + tail
        out.append(token)
        size += len(token)
        i = end
    text = "".join(out)
    if len(text) > _LINE_MAX or i < n:
        text = text[: _LINE_MAX - 1] + "…"
    return text
