"""Errors that reach the user as a clear message and exit code 2."""

from __future__ import annotations


class InputError(Exception):
    """Bad user input: a scenario, profile, override or data file.

    Parameters
    ----------
    problems : list of str
        One line per problem, each naming the file and the field (or byte offset)
        and what was expected.
    """

    exit_code = 2

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def naming(source: str, exc: InputError) -> InputError:
    """Return ``exc`` with ``source`` (the scenario file) in front of each of its lines.

    For errors raised by code that does not know the file (a partition, a dataset's
    options). Lines already starting with ``source``, and indented continuation lines,
    are kept as they are.
    """
    lines = [
        line if line.startswith((f"{source}:", " ")) else f"{source}: {line}"
        for line in exc.problems
    ]
    return InputError(lines)


class RuntimeFailure(Exception):
    """A failure of the compute runtime (a dead actor, a time-out), named precisely."""
