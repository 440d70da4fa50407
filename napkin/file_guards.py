"""The files napkin reads and writes besides its specs: only regular files, never devices, FIFOs or kernel files.

``save_target`` is where ``--save FILE`` may write: a new path, or an existing regular file (through a symlink to
its regular target, which keeps the link). Devices, FIFOs, sockets, directories and anything under /dev, /proc
or /sys are refused, as is a name whose temporary sibling (``.NAME.xxxxxxxx.tmp``) would not fit the file system.
It runs before anything is measured and again just before writing.

``read_small_file`` reads ``--calibration`` and ``--mfu-from`` files with the spec files' guards: a regular
file, at most ``MAX_READ_BYTES``, read without blocking (a FIFO or ``/dev/stdin`` never hangs a command).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from napkin.errors import InputError

MAX_READ_BYTES = 64 * 2**20  # 64 MiB: a saved sweep of 10,000 shapes is ~10 MB; /dev/zero or a 3 GB file is refused
_KERNEL_TREES = ("/dev", "/proc", "/sys")  # device nodes and kernel interfaces: never a place for a result file
TEMP_EXTRA_CHARS = len(".") + len(".") + 8 + len(".tmp")  # tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _under_kernel_tree(real: Path) -> str | None:
    text = str(real)
    for tree in _KERNEL_TREES:
        if text == tree or text.startswith(tree + "/"):
            return tree
    return None


def save_target(path: str | Path, what: str = "--save") -> Path:
    """The regular file that writing ``path`` replaces (symlinks followed), or an InputError saying why not."""
    given = str(path)
    if not given or given.endswith("/"):
        raise InputError(f"{what} '{given}': give a file name")
    real = Path(os.path.realpath(given))  # a symlink is written through: its regular target is replaced
    tree = _under_kernel_tree(real)
    if tree is not None:
        shown = f"{given} (→ {real})" if str(real) != given else given
        raise InputError(f"{what} {shown}: napkin writes results only to regular files, never under {tree}; "
                         "give a file name such as result.json")
    try:
        st = os.stat(real)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise InputError(f"{what} {given}: cannot look at it: {e.strerror or e}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        shown = f"{given} (→ {real})" if str(real) != given else given
        raise InputError(f"{what} {shown} is {_kind(st.st_mode)}; napkin writes only to a regular file or a new "
                         "path (it would replace what is there)")
    parent = real.parent
    if not parent.is_dir():
        raise InputError(f"{what} {given}: there is no directory '{parent}' (create it first)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{what} {given}: the directory '{parent}' is not writable")
    if st is not None and not os.access(real, os.W_OK):
        raise InputError(f"{what} {given}: the file exists and is not writable")
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255  # the common limit (ext4, xfs, btrfs, tmpfs)
    longest = name_max - TEMP_EXTRA_CHARS
    if len(os.fsencode(real.name)) > longest:
        raise InputError(f"{what} {given}: the file name is {len(os.fsencode(real.name))} bytes; napkin writes a "
                         f"temporary .NAME.xxxxxxxx.tmp beside it first, so the name may be at most {longest} bytes "
                         "here")
    return real


def read_small_file(path: str | Path, expected: str, limit: int = MAX_READ_BYTES) -> str:
    """The text of a regular file of at most ``limit`` bytes; an InputError naming the file for anything else."""
    given = str(path)
    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once (then refused below) instead of waiting forever
        fd = os.open(given, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise InputError(f"cannot read '{given}': {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"'{given}' is {_kind(st.st_mode)}; expected {expected} (a regular file)")
        if st.st_size > limit:
            raise InputError(f"'{given}' is {st.st_size / 2**20:,.0f} MiB, far larger than {expected} (at most "
                             f"{limit // 2**20} MiB read); is it the right file?")
        data = bytearray()
        while len(data) <= limit:  # /proc files say 0 bytes: read up to the cap, whatever the size says
            chunk = os.read(fd, min(2**20, limit + 1 - len(data)))
            if not chunk:
                break
            data.extend(chunk)
        if len(data) > limit:
            raise InputError(f"'{given}' holds more than {limit // 2**20} MiB, far more than {expected}; is it the "
                             "right file?")
    except OSError as e:
        raise InputError(f"cannot read '{given}': {e.strerror or e}") from None
    finally:
        os.close(fd)
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"'{given}' is not a text file; expected {expected}") from None
