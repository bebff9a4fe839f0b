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


class RuntimeFailure(Exception):
    """A failure of the compute runtime (a dead actor, a time-out), named precisely."""
