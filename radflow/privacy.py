"""Keeping PHI where it may be: private local files, and exceptions scrubbed before they leave.

An unexpected exception (pydicom's, the operating system's, a library's) may carry PHI in
its message: file paths under the inbox hold patient names, pydicom quotes header values.
Anything raised out of a task ends up in Prefect's database, its logs and the UI, so a
stage's unexpected exception is replaced by a `ScrubbedError` that names the stage, the
exception's class and a hash of the input; the original traceback goes to a private file
(mode 600, folder 700) under the worker's cache, which holds raw files (PHI) anyway.
`RadflowError`s pass: their messages are radflow's own words, written without PHI.
"""

from __future__ import annotations

import datetime as dt
import errno
import functools
import os
import re
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from radflow.errors import RadflowError
from radflow.keys import sha256_bytes, short_id

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
ERROR_LOG_DIR = "errors"

F = TypeVar("F", bound=Callable[..., Any])


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner can enter (created, or tightened if it exists)."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    # mkdir's mode passes through the umask and is ignored for a folder that exists.
    os.chmod(path, PRIVATE_DIR_MODE)
    return path


def write_private(path: Path, text: str) -> None:
    """Write `path` (mode 600, in a folder of mode 700), never through a symlink."""
    private_dir(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), PRIVATE_FILE_MODE)  # O_CREAT's mode applies to new files only
        f.write(text)


class ScrubbedError(RadflowError):
    """An unexpected exception of a stage, its message and traceback left in a private log."""

    def __init__(self, stage: str, error_class: str, input_id: str, log_name: str) -> None:
        self.stage = stage
        self.error_class = error_class
        self.input_id = input_id
        self.log_name = log_name
        where = (
            f"RADFLOW_CACHE_DIR/{ERROR_LOG_DIR}/{log_name} on the worker"
            if log_name
            else "not kept (the private log could not be written)"
        )
        super().__init__(
            f"{stage} failed with {error_class} on input {input_id}; "
            f"its message may hold PHI and is withheld; the traceback is {where}",
            hint="read the private log on the worker (it may hold PHI)",
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Prefect pickles a failed task's exception; Exception's default rebuilds from args.
        return (type(self), (self.stage, self.error_class, self.input_id, self.log_name))


def error_class_name(err: BaseException) -> str:
    """The exception's class, and for an OS error the system's own words for its number
    ("OSError (ENOSPC: No space left on device)"): what a user acts on, and nothing the
    failing call was given (its message and file name may hold PHI)."""
    cls = type(err)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__name__}"
    code = err.errno if isinstance(err, OSError) else None
    if isinstance(code, int) and code in errno.errorcode:
        name += f" ({errno.errorcode[code]}: {os.strerror(code)})"
    return name


def failure_cause(err: BaseException) -> str:
    """What made a study fail, for its delivery's summary: the stage and the class of a scrubbed
    error ("features: OSError"), the class of any other; never a message."""
    if isinstance(err, ScrubbedError):
        return f"{err.stage}: {err.error_class}"
    return error_class_name(err)


# ScrubbedError's own message, as Prefect hands it back when only the text came home (a task
# that failed on a Dask worker: its state's message, not the exception).
_SCRUBBED_MESSAGE = re.compile(
    r"([\w-]+) failed with (.+?) on input [\w-]+; its message may hold PHI and is withheld"
)


def scrubbed_cause(text: str) -> str | None:
    """`failure_cause` of the ScrubbedError whose message is in `text`; None when none is."""
    found = _SCRUBBED_MESSAGE.search(text)
    return f"{found[1]}: {found[2]}" if found else None


def scrub(stage: str, input_key: str, err: BaseException, cache_dir: Path | None) -> ScrubbedError:
    """The PHI-free stand-in for `err`; its full traceback goes to the private log under
    `cache_dir` (none when it is None or cannot be written: the error must still be raised)."""
    input_id = short_id(input_key) if input_key else "none"
    text = "".join(traceback.format_exception(err))
    name = f"{stage}-{input_id}-{sha256_bytes(text.encode())[:12]}.log"
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    try:
        if cache_dir is None:
            raise FileNotFoundError("no cache folder")
        write_private(cache_dir / ERROR_LOG_DIR / name, f"{stamp} {stage} {input_id}\n{text}")
    except OSError:
        name = ""
    return ScrubbedError(stage, error_class_name(err), input_id, name)


def first_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The call's first argument as text: the input whose hash names the failure (and the run)."""
    if args:
        return str(args[0])
    return str(next(iter(kwargs.values()))) if kwargs else ""


def _or_none(cache_dir: Callable[[], Path]) -> Path | None:
    try:
        return cache_dir()
    except Exception:
        return None


def scrub_exceptions(stage: str, cache_dir: Callable[[], Path]) -> Callable[[F], F]:
    """Decorate a stage call so that nothing it raises can carry PHI out.

    A `RadflowError` passes with its chain cut (it may have been raised while handling an
    exception that holds PHI, and a traceback prints that one too); any other exception is
    replaced by `scrub(...)`, raised `from None`."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except RadflowError as err:
                err.__cause__ = err.__context__ = None
                err.__suppress_context__ = True
                raise
            except Exception as err:
                scrubbed = scrub(stage, first_input(args, kwargs), err, _or_none(cache_dir))
            # Raised outside the handler: the original is neither the cause nor the context.
            raise scrubbed from None

        return wrapper  # type: ignore[return-value]

    return decorate
