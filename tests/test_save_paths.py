"""Issue 25 items 1-2: --save writes only a regular file (or a new path), and it writes before printing.

Every odd path is made in a temporary directory (a FIFO, a character device node, symlinks); nothing here touches
the machine's own /dev: these tests may run as root, where replacing /dev/null would succeed.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from napkin.bench.models import MatmulBenchResult
from napkin.bench.saved import load_measurement, save_result
from napkin.errors import InputError
from napkin.file_guards import TEMP_EXTRA_CHARS, read_small_file, save_target

torch = pytest.importorskip("torch")

from napkin.bench.matmul import GemmBench, bench_matmul  # noqa: E402

QUICK_CLI = ["--device", "cpu", "--warmup-ms", "5", "--iters", "5"]


@pytest.fixture(scope="module")
def result() -> MatmulBenchResult:
    return bench_matmul(size=16, device="cpu", warmup_s=0.001, iters=3, peak=1e12)


def _device_node(tmp_path):
    """A character device node like /dev/null (1, 3), made in tmp_path; skipped where mknod is not allowed."""
    node = tmp_path / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError) as e:
        pytest.skip(f"cannot make a device node here: {e}")
    return node


def test_a_fifo_is_refused_and_left_a_fifo(tmp_path, result):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="is a FIFO.*regular file or a new path"):
        save_result(result, fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no temporary file left


def test_a_device_node_is_refused_and_left_a_device(tmp_path, result):
    node = _device_node(tmp_path)
    with pytest.raises(InputError, match="is a character device"):
        save_result(result, node)
    assert stat.S_ISCHR(os.lstat(node).st_mode)


def test_a_symlink_to_a_device_or_fifo_is_refused_and_stays_a_link(tmp_path, result):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "stdout"  # as /dev/stdout is a link to a pipe or terminal
    link.symlink_to(fifo)
    with pytest.raises(InputError, match=r"stdout \(→ .*pipe\) is a FIFO"):
        save_result(result, link)
    assert link.is_symlink() and stat.S_ISFIFO(os.stat(link).st_mode)


def test_a_symlinked_file_is_written_through_and_keeps_its_link(tmp_path, result):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    save_result(result, link)
    assert link.is_symlink() and os.readlink(link) == str(target)  # still a link, to the same file
    assert load_measurement(target) == result  # the target holds the new measurement
    dangling = tmp_path / "next.json"
    dangling.symlink_to(tmp_path / "created.json")
    save_result(result, dangling)  # a link to a new path: the new path is created, the link kept
    assert dangling.is_symlink() and load_measurement(tmp_path / "created.json") == result


def test_directories_and_kernel_trees_are_refused(tmp_path, result):
    with pytest.raises(InputError, match="is a directory"):
        save_result(result, tmp_path)
    for path in ("/proc/self/comm", "/sys/kernel/napkin-test.json"):
        with pytest.raises(InputError, match="never under /(proc|sys)"):
            save_target(path)
    link = tmp_path / "into-proc"
    link.symlink_to("/proc/self/environ")
    with pytest.raises(InputError, match="never under /proc"):
        save_target(link)


def test_a_name_too_long_for_its_temporary_file_is_refused_first(tmp_path, result):
    longest = os.pathconf(tmp_path, "PC_NAME_MAX") - TEMP_EXTRA_CHARS
    ok = tmp_path / ("a" * (longest - 5) + ".json")
    save_result(result, ok)
    assert load_measurement(ok) == result
    with pytest.raises(InputError, match=f"may be at most {longest} bytes"):
        save_target(tmp_path / ("b" * (longest - 4) + ".json"))


@pytest.mark.parametrize("kind", ["fifo", "device", "symlink-to-fifo", "long-name", "proc"])
def test_the_cli_refuses_each_before_measuring(cli, monkeypatch, tmp_path, kind):
    monkeypatch.setattr(GemmBench, "time", lambda self, shape: pytest.fail("measured before checking the path"))
    if kind == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)
    elif kind == "device":
        path = _device_node(tmp_path)
    elif kind == "symlink-to-fifo":
        os.mkfifo(tmp_path / "pipe")
        path = tmp_path / "link"
        path.symlink_to(tmp_path / "pipe")
    elif kind == "long-name":
        path = tmp_path / ("c" * 250)
    else:
        path = "/proc/self/napkin.json"
    r = cli("bench-matmul", *QUICK_CLI, "--size", "16", "--save", str(path))
    assert r.exit_code == 2 and r.stderr.startswith("napkin: error: --save ") and len(r.stderr.splitlines()) == 1, \
        r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_the_measurement_is_saved_before_it_is_printed(cli, monkeypatch, tmp_path):
    from napkin import render

    def closed_stdout(*a, **kw):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(render, "show", closed_stdout)
    out = tmp_path / "m.json"
    cli("bench-matmul", *QUICK_CLI, "--size", "16", "--peak", "1T", "--save", str(out))
    assert load_measurement(out).timing.shape.m == 16  # written although printing failed


def test_a_closed_pipe_does_not_lose_the_save(tmp_path):
    """`napkin bench-matmul ... --save F | head -n 1`: the real pipe, in a real process."""
    out = tmp_path / "m.json"
    cmd = [sys.executable, "-m", "napkin", "bench-matmul", *QUICK_CLI, "--size", "16", "--peak", "1T", "--save",
           str(out)]
    p = subprocess.run(" ".join(f"'{c}'" for c in cmd) + " | head -c 1 >/dev/null", shell=True, timeout=120,
                       capture_output=True, text=True)
    assert "Traceback" not in p.stderr, p.stderr
    assert load_measurement(out).timing.shape.m == 16


@pytest.mark.parametrize("kind", ["fifo", "device", "big", "dir"])
def test_calibration_and_mfu_from_read_only_small_regular_files(tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)  # no writer: a plain open() would block forever
        match = "is a FIFO"
    elif kind == "device":
        path = _device_node(tmp_path)
        match = "is a character device"
    elif kind == "big":
        path = tmp_path / "sparse.json"
        with open(path, "wb") as f:
            f.truncate(3 * 2**30)  # 3 GB, sparse: costs no disk
        match = "far larger than"
    else:
        path = tmp_path
        match = "is a directory"
    with pytest.raises(InputError, match=match):
        read_small_file(path, "a measurement")
    with pytest.raises(InputError, match=match):
        load_measurement(path)
