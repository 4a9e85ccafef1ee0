"""Results that cannot be written (a full disk), told apart from a failed run.

The launcher runs under a file-size limit (RLIMIT_FSIZE; Python ignores SIGXFSZ, so a
write past it fails with EFBIG as a write to a full disk fails with ENOSPC), which
needs neither root nor a filesystem of its own.  Before, a write that failed mid-run
was a traceback from the launcher, with no summary.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

from tests._remote import ROOT


def _run_under_limit(out, limit: int, *flags) -> tuple[subprocess.CompletedProcess, float]:
    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    t = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "p2pfl.cli", "cluster", "--dataset", "digits",
                          "-q", "--out", str(out), *flags], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, preexec_fn=limited)
    return res, time.monotonic() - t


def test_metrics_that_cannot_be_written_stop_the_run_with_one_line(tmp_path):
    out = tmp_path / "run"
    res, took = _run_under_limit(out, 48_000, "--topology", "ring:4", "--rounds", "100000")
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"p2pfl: error: cannot write the run's results ({out}/metrics.jsonl: File too large);"
        f" the run was stopped; {out} holds summary.json and at least the first "), lines
    assert took < 60  # stopped, not 100,000 rounds
    summary = json.loads((out / "summary.json").read_text())
    assert summary["write_error"] == f"{out}/metrics.jsonl: File too large"
    assert summary["failed_nodes"] == {} and summary["node_processes"] == 4
    written = int(lines[0].rsplit("first ", 1)[1].split()[0])
    text = (out / "metrics.jsonl").read_text()
    assert text.endswith("\n")  # the write that failed is taken back: no torn last line
    whole = [json.loads(line) for line in text.splitlines()]
    assert 4 * 10 < written <= len(whole)  # what the sink counted is in the file
    # the figures go on past the file: every record that arrived counts in the summary
    assert summary["bytes_sent_total"] >= sum(r["bytes_sent"] for r in whole)


def test_a_run_folder_without_room_for_its_config_is_refused_before_any_node(tmp_path):
    out = tmp_path / "run"
    res, _ = _run_under_limit(out, 256, "--topology", "ring:4", "--rounds", "2")
    assert res.returncode == 2
    assert res.stderr.strip() == f"p2pfl: error: cannot use output folder {out}: File too large"
    assert not (out / "nodes.json").exists()


def test_model_files_that_cannot_be_written_end_the_run_with_one_line(tmp_path):
    """torch.save's own errors on a full disk are RuntimeErrors naming no file: the
    launcher's shutdown ended in a traceback, with no summary."""
    out = tmp_path / "run"
    res, _ = _run_under_limit(out, 20_000, "--topology", "ring:4", "--rounds", "2",
                              "--save-models")
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"p2pfl: error: cannot write the run's results ({out}/models/node-"), lines
    assert "the run was stopped" not in lines[0]  # the run had ended
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models_saved"] == 0 and summary["write_error"].endswith(": File too large")
    assert list((out / "models").iterdir()) == []  # no partial file


def test_a_summary_that_cannot_be_written_is_said_in_the_result(tmp_path, monkeypatch):
    import errno

    import pytest

    import p2pfl
    from p2pfl import api

    real = api.write_json_atomic

    def full_disk(path, obj):
        if path.endswith("summary.json"):
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(path, obj)

    monkeypatch.setattr(api, "write_json_atomic", full_disk)
    out = tmp_path / "run"
    with pytest.raises(p2pfl.ClusterError, match="summary.json: No space left on device"):
        try:
            p2pfl.run_cluster("ring:3", rounds=2, quiet=True, out=str(out))
        except p2pfl.ClusterError as exc:
            assert exc.result.summary["write_error"] == (
                f"{out}/summary.json: No space left on device")
            raise
    assert not (out / "summary.json").exists()
