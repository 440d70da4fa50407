"""Generated hostile calibration / --mfu-from files and --save paths (issue 25 items 1, 6, 8): never a traceback,
never a hang, never a non-regular file replaced. Each input is tallied in conftest's FUZZ_TALLY."""

from __future__ import annotations

import copy
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_calibration_inputs import STEP, _allreduce, _gemm
from test_fuzz_cli import _check, _count, examples, run  # noqa: F401 - run is a fixture

from napkin.bench.saved import load_measurement, save_result
from napkin.errors import NapkinError
from napkin.file_guards import save_target

HOSTILE = [0, -1, -0.0, 1e-324, 1e308, -1e308, "NaN", "Infinity", "-Infinity", "fast", None, [], {}, True, False,
           10**40, "", "1e3", [1.0], {"x": 1}, 0.5, 2, 7e-6]
GEMM_FIELDS = [("timing", "stats", "median_s"), ("timing", "stats", "min_s"), ("timing", "stats", "iters"),
               ("timing", "flops_per_s"), ("timing", "flops"), ("timing", "shape", "m"), ("peak", "peak_flops_per_s"),
               ("mfu",), ("environment", "hardware"), ("timing", "dtype"), ("kind",), ("environment",), ("timing",)]
ALLREDUCE_FIELDS = [("rows", 0, "time_s"), ("rows", 1, "busbw_bytes_per_s"), ("rows", 1, "size_bytes"),
                    ("rows", 0, "count"), ("environment", "world_size"), ("environment", "device"), ("rows",),
                    ("rows", 1, "dtype"), ("iters",)]


def _set(doc, path, value):
    """doc at path = value, where an earlier edit has left the path (a list replaced by a number: no change)."""
    *head, last = path
    try:
        for key in head:
            doc = doc[key]
        doc[last] = value
    except (KeyError, IndexError, TypeError):
        pass


@examples(120)
@given(kind=st.sampled_from(["gemm", "allreduce"]), data=st.data())
def test_generated_measurement_files_are_refused_in_one_line(tmp_path_factory, fuzz_tally, run, kind,  # noqa: F811
                                                             data):
    base = _gemm() if kind == "gemm" else _allreduce()
    doc = json.loads(base.model_dump_json())
    fields = GEMM_FIELDS if kind == "gemm" else ALLREDUCE_FIELDS
    for _ in range(data.draw(st.integers(1, 3))):
        # a copy: the drawn list or dict would otherwise be shared, and a later edit could put it inside itself
        _set(doc, data.draw(st.sampled_from(fields)), copy.deepcopy(data.draw(st.sampled_from(HOSTILE))))
    path = tmp_path_factory.mktemp("m") / "m.json"
    path.write_text(json.dumps(doc))
    _check(fuzz_tally, run, *STEP, "--calibration", str(path))
    if kind == "gemm":
        _check(fuzz_tally, run, "train-time", "--gpus", "8", "--params", "8e9", "--tokens", "1T", "--mfu-from",
               str(path))


def _make(root: Path, kind: str) -> Path:
    """A path of one hostile kind under root (FIFOs, device nodes, links: never the machine's own /dev)."""
    p = root / "target"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "device":
        try:
            os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except OSError:
            os.mkfifo(p)  # not allowed here: a FIFO stands in
    elif kind == "dir":
        p.mkdir()
    elif kind == "regular":
        p.write_text("old")
    elif kind == "socket":
        import socket

        s = socket.socket(socket.AF_UNIX)
        s.bind(str(p))
        s.close()
    return p


@examples(60)
@given(kind=st.sampled_from(["fifo", "device", "dir", "regular", "socket", "new"]), links=st.integers(0, 3),
       suffix=st.sampled_from(["", "/", "/x", "a" * 300]))
def test_generated_save_paths_never_replace_what_is_not_a_regular_file(tmp_path_factory, fuzz_tally, kind, links,
                                                                       suffix):
    root = tmp_path_factory.mktemp("save")
    target = _make(root, kind)
    before = os.lstat(target).st_mode if os.path.lexists(target) else None
    path = target
    for n in range(links):  # a chain of symlinks to it
        link = root / f"link{n}"
        link.symlink_to(path)
        path = link
    given_path = str(path) + suffix
    ok = _count(fuzz_tally, save_result, _gemm(), given_path)
    if os.path.lexists(target) and before is not None and not stat.S_ISREG(before):
        assert stat.S_IFMT(os.lstat(target).st_mode) == stat.S_IFMT(before)  # never replaced
    if ok is None and kind in ("regular", "new") and suffix == "":
        assert load_measurement(target) == _gemm()  # a regular file or a new path, through any links, is written
    for n in range(links):
        assert (root / f"link{n}").is_symlink()  # links stay links


def test_save_target_refuses_with_input_errors_only(tmp_path):
    for p in ("", "/", "/proc", "/sys/x", "/dev/shm/x", str(tmp_path / "no" / "dir" / "x")):
        with pytest.raises(NapkinError):
            save_target(p)
