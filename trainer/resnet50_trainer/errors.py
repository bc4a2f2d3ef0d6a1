"""Errors the trainer reports as one line and a distinct exit code.

Their exit codes, and what the operator makes of them, are the contract's
(contract.EXIT_CLASSES).
"""

import os
import stat
from pathlib import Path

from resnet50_trainer.contract import EXIT_ACCESS, EXIT_CONFIG, EXIT_CRASH, EXIT_DATA


class TrainerError(Exception):
    """An error caused by the user's input, reported without a stack trace."""

    exit_code = EXIT_CRASH


class ConfigError(TrainerError):
    """Bad options, a missing or inconsistent dataset, an incompatible checkpoint.

    Every process of a job meets the same ones, so only local rank 0 prints them.
    """

    exit_code = EXIT_CONFIG


class RankConfigError(ConfigError):
    """A configuration error that only some processes meet: each of them prints it."""


class AccessError(ConfigError):
    """A dataset or checkpoint path that this process's user may not read or write."""

    exit_code = EXIT_ACCESS


def access_error(what: str, path: Path, need: str, exc: OSError) -> AccessError:
    """`what` PATH is not NEED-able by this uid, with the owner and mode of the first
    existing directory on its way (the one to fix) and how to fix it."""
    uid, gid = os.getuid(), os.getgid()
    where = path
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        st = where.stat()
        owner = (f"; {where} is owned by uid {st.st_uid} gid {st.st_gid}, "
                 f"mode {stat.S_IMODE(st.st_mode):04o}")
    except OSError:
        owner = ""
    return AccessError(
        f"{what} {path} is not {need} by uid {uid} gid {gid} ({exc.strerror}){owner}: "
        f"make it {need} by uid {uid} (e.g. chown -R {uid}:{gid} on the storage), or use "
        f"a volume type that applies the pod's fsGroup (most PersistentVolumes; not hostPath)")


class DataError(TrainerError):
    """A sample that cannot be read while training (a corrupt or unreadable image)."""

    exit_code = EXIT_DATA
