"""``--device auto|cpu|cuda``: where node models train.

The GPU test needs a CUDA GPU and is skipped, with the reason, elsewhere (CI has
none).  The CPU paths run everywhere.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests._inproc import cli_here
from tests._remote import ROOT

HAS_GPU = torch.cuda.is_available()


def _cluster(tmp_path, *flags, timeout=300):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "p2pfl.cli", "cluster", "-q", "--out", str(out),
                           *flags], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    summary = json.loads((out / "summary.json").read_text()) if proc.returncode == 0 else None
    return proc, summary


def test_auto_trains_on_the_cpu_without_a_gpu(tmp_path):
    if HAS_GPU:
        pytest.skip("this machine has a GPU: auto picks it (test_nodes_share_a_gpu)")
    proc, summary = _cluster(tmp_path, "--topology", "ring:4", "--rounds", "3")
    assert proc.returncode == 0, proc.stderr
    assert summary["devices"] == {"cpu": 4}


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused_before_any_node_starts(tmp_path):
    proc = cli_here("cluster", "-q", "--out", str(tmp_path / "run"), "--device", "cuda",
                    "--rounds", "2")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("p2pfl: error: device cuda (--device or a profile): torch "
                                   "sees no CUDA GPU on this machine (use auto or cpu)")
    assert not (tmp_path / "run" / "nodes.json").exists()


@pytest.mark.parametrize("value", ["gpu", "cuda:x", "cuda:"])
def test_bad_device_exits_2(tmp_path, value):
    proc = cli_here("cluster", "-q", "--out", str(tmp_path / "run"), "--device", value)
    assert proc.returncode == 2 and "--device must be auto, cpu, cuda or cuda:N" in proc.stderr


@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU (CI has none)")
def test_nodes_share_a_gpu_and_learn_as_on_the_cpu(tmp_path):
    flags = ["--topology", "ring:4", "--dataset", "mnist1d", "--model", "cnn", "--rounds", "10"]
    proc, gpu = _cluster(tmp_path / "gpu", "--device", "cuda", *flags)
    assert proc.returncode == 0, proc.stderr
    proc, cpu = _cluster(tmp_path / "cpu", "--device", "cpu", *flags)
    assert proc.returncode == 0, proc.stderr
    assert sum(gpu["devices"].values()) == 4 and all(d.startswith("cuda") for d in gpu["devices"])
    assert gpu["bytes_sent_total"] == cpu["bytes_sent_total"]  # frames: the same CPU bytes
    assert abs(gpu["accuracy_mean"] - cpu["accuracy_mean"]) < 0.05
