"""Writing output files safely: only onto regular files, never onto an input, atomically.

Every file ssmc writes (net.lava, reports, run outputs, exported scripts, microcode binaries) goes through
`write_files`: each is written to a temporary file in its own folder, flushed to disk, and renamed over the
destination only when all of them are complete, so a reader sees the old files or the whole new ones, and
a failure or an interrupt (Ctrl-C, SIGTERM) leaves no temporary file behind. An existing destination that
is not a regular file (a directory, a FIFO, a device such as /dev/null, a socket) is refused by name: a
rename would replace the device node itself. A symlinked destination is written through (its target is
replaced, the link stays).

Reading untrusted files (regular files only, bounded) is ssmc.data's job.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable

from ssmc import interrupts
from ssmc.errors import OutputFileError

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of(mode: int) -> str:
    """'a directory', 'a FIFO (named pipe)', ... for a non-regular st_mode; '' for a regular file."""
    return next((name for test, name in _KINDS if test(mode)), "" if stat.S_ISREG(mode) else "not a regular file")


def check_output(
    path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (), what: str = "output", example: str = ""
) -> str:
    """The real path to write `path` to, or an SsmcError saying why not: its folder is missing, it exists and
    is not a regular file, or it is one of `inputs` (the same file by any name: symlink, hard link, `./x`)."""
    name = os.fspath(path)
    if not name:
        raise OutputFileError(f"the {what} file name is empty")
    real = os.path.realpath(name)  # write through a symlink: replace its target, keep the link
    folder = os.path.dirname(real)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputFileError(f"{name}: cannot use as {what} ({e.strerror})") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        hint = (
            f"; give a file name such as {os.path.join(name, example)}"
            if stat.S_ISDIR(st.st_mode) and example
            else "; give a regular file name"
        )
        raise OutputFileError(
            f"{name}: is {kind_of(st.st_mode)}, not a regular file; refusing to write the {what} there{hint}"
        )
    if not os.path.isdir(folder):
        raise OutputFileError(f"{name}: folder {os.path.dirname(name) or folder} does not exist; create it first")
    for given in inputs:
        if given is None or st is None:
            continue
        try:
            same = os.path.samefile(given, real)
        except OSError:  # an input that does not exist cannot be overwritten
            continue
        if same:
            raise OutputFileError(
                f"{name}: is the input {os.fspath(given)}; writing the {what} there would destroy it; "
                "give another output name"
            )
    return real


def write_files(
    files: dict[str, bytes], inputs: Iterable[str | os.PathLike | None] = (), what: str = "output", example: str = ""
) -> None:
    """Write every (path -> bytes) atomically, all or nothing up to the final renames: each is checked
    (`check_output`), written to a temporary file beside it and fsynced; then all are renamed into place.
    Any failure, interrupt included, removes the temporary files; OSError becomes a one-line SsmcError."""
    inputs = [i for i in inputs if i is not None]
    targets = {path: check_output(path, inputs, what, example) for path in files}
    temps: list[str] = []
    try:
        staged = []
        for path, data in files.items():
            real = targets[path]
            try:
                fd, tmp = tempfile.mkstemp(
                    prefix=f".{os.path.basename(real)}.", suffix=".tmp", dir=os.path.dirname(real)
                )
            except OSError as e:
                raise OutputFileError(f"{path}: cannot write in {os.path.dirname(real)} ({e.strerror})") from None
            temps.append(tmp)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            staged.append((tmp, real, path))
        interrupts.check()  # a Ctrl-C some library swallowed still keeps the old files
        for tmp, real, path in staged:
            check_output(path, inputs, what, example)  # still a regular file (or nothing) just before the rename
            os.replace(tmp, real)
            temps.remove(tmp)
    except OSError as e:
        raise OutputFileError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        for tmp in temps:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def write_file(
    path: str | os.PathLike,
    data: bytes,
    inputs: Iterable[str | os.PathLike | None] = (),
    what: str = "output",
    example: str = "",
) -> None:
    """`write_files` for one file."""
    write_files({os.fspath(path): data}, inputs, what, example)
