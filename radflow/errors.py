"""The errors radflow raises on purpose.

Messages name what was wrong and where, in one line, and never carry PHI: they end up
in Prefect's database, in logs and on a terminal.
"""

from __future__ import annotations


class RadflowError(Exception):
    """Base of every error radflow raises on purpose; `hint` says what to do about it."""

    hint: str = ""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint

    def __reduce__(self) -> tuple[type[RadflowError], tuple[str, ...]]:
        return (type(self), (str(self), self.hint))


class ConfigError(RadflowError):
    """A setting is missing or wrong."""

    def __init__(self, setting: str, problem: str, hint: str = "") -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"setting {setting}: {problem}", hint)

    def __reduce__(self) -> tuple[type[RadflowError], tuple[str, ...]]:
        # Prefect pickles a failed task's exception; the default would call __init__(message).
        return (type(self), (self.setting, self.problem, self.hint))


class QuarantineError(RadflowError):
    """An input cannot be processed; it is set aside with a record, and the run goes on."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)

    def __reduce__(self) -> tuple[type[RadflowError], tuple[str, ...]]:
        return (type(self), (self.reason, self.detail))


def too_many_voxels(voxels: int, max_voxels: int, what: str = "declared") -> QuarantineError:
    """The one refusal of every reader (DICOM, NIfTI, NRRD, MetaImage) whose header asks for
    more voxels than `RADFLOW_MAX_SERIES_VOXELS`, before any voxel is read."""
    return QuarantineError(
        "declared pixel data too large",
        f"{voxels} voxels {what}, the limit is {max_voxels} (RADFLOW_MAX_SERIES_VOXELS)",
    )


class NotFoundError(RadflowError):
    """Something the user named (a folder, a key, a champion model) does not exist."""
