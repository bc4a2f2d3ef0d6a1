"""Errors the trainer reports as one line and a distinct exit code.

The exit codes are part of the trainer's contract with the operator: a signal
(128+N) is retried; a crash (1) is not, and neither are 2 and 3, which the same
input would meet again.
"""

EXIT_CONFIG = 2
EXIT_DATA = 3


class TrainerError(Exception):
    """An error caused by the user's input, reported without a stack trace."""

    exit_code = 1


class ConfigError(TrainerError):
    """Bad options, a missing or inconsistent dataset, an incompatible checkpoint.

    Every process of a job meets the same ones, so only local rank 0 prints them.
    """

    exit_code = EXIT_CONFIG


class RankConfigError(ConfigError):
    """A configuration error that only some processes meet: each of them prints it."""


class DataError(TrainerError):
    """A sample that cannot be read while training (a corrupt or unreadable image)."""

    exit_code = EXIT_DATA
