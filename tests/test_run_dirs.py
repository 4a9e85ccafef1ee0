"""The ipc folders of launchers killed outright are swept by the next launcher (600 piled up
in /tmp in a day of test runs)."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import tempfile
import time

from p2pfl import run_dirs
from p2pfl.procfs import start_ticks
from p2pfl.run_dirs import OWNER, sweep_stale


def _folder(root, name: str, owner: str | None) -> str:
    path = os.path.join(root, run_dirs.PREFIX + name)
    os.mkdir(path)
    if owner is not None:
        with open(os.path.join(path, OWNER), "w") as fh:
            fh.write(owner)
    return path


def test_only_folders_whose_owner_is_gone_are_swept(tmp_path):
    done = subprocess.Popen(["true"])
    done.wait()  # its id names no process now (ids are not reused this soon)
    me = f"{os.getpid()} {start_ticks(os.getpid())}\n"
    gone = _folder(tmp_path, "gone", f"{done.pid} 12345\n")
    reused = _folder(tmp_path, "reused", f"{os.getpid()} 1\n")  # our id, another start
    alive = _folder(tmp_path, "alive", me)
    older = _folder(tmp_path, "older", None)  # an older version's: no owner named
    other = tmp_path / "not-p2pfl"
    other.mkdir()
    assert sweep_stale(str(tmp_path)) == 2
    assert not os.path.exists(gone) and not os.path.exists(reused)
    assert os.path.exists(alive) and os.path.exists(older) and other.exists()


def _launch(tmp: str, out: str) -> None:
    from tests._inproc import cli_here

    tempfile.tempdir = tmp
    cli_here("cluster", "--topology", "ring:2", "--rounds", "100000", "--in-process",
             "-q", "--out", out)


def test_a_killed_launchers_folder_goes_at_the_next_launch(tmp_path):
    tmp, out = tempfile.mkdtemp(prefix="rd"), tmp_path / "run"  # short: sockets go there
    proc = mp.get_context("fork").Process(target=_launch, args=(tmp, str(out)))
    proc.start()
    try:
        deadline = time.monotonic() + 60
        while not ((out / "nodes.json").exists() and os.listdir(tmp)
                   and os.path.exists(os.path.join(tmp, os.listdir(tmp)[0], OWNER))):
            assert proc.is_alive() and time.monotonic() < deadline, os.listdir(tmp)
            time.sleep(0.05)
        left = os.listdir(tmp)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    try:
        assert os.listdir(tmp) == left  # a killed launcher cannot remove it
        old, tempfile.tempdir = tempfile.tempdir, tmp
        try:
            made = run_dirs.make_run_dir()
        finally:
            tempfile.tempdir = old
        assert os.listdir(tmp) == [os.path.basename(made)]
    finally:
        shutil.rmtree(tmp)


def test_a_temporary_folder_too_long_for_sockets_is_not_used(tmp_path):
    """A long TMPDIR failed every node at its bind ("ipc path ... is longer than 107
    characters"), after the launch; /tmp is used instead."""
    long = tmp_path / ("x" * 60)
    long.mkdir()
    old, tempfile.tempdir = tempfile.tempdir, str(long)
    try:
        made = run_dirs.make_run_dir()
    finally:
        tempfile.tempdir = old
    try:
        assert os.path.dirname(made) == "/tmp"
        assert len(made) + len("/p2pfl-4194304-16383-0123abcd-ctl.sock") <= 107
    finally:
        shutil.rmtree(made)
