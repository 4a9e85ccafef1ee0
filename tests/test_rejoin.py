"""A neighbour that was silent, then answers again, is waited for again (issue 7, defect 3).

Real node processes: one is frozen with SIGSTOP long enough for its neighbours
to stop waiting for it, then resumed with SIGCONT.
"""

import json
import os
import signal
import time
from tests._forked import CLI, Forked

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rounds_written(out) -> int:
    try:
        with open(os.path.join(out, "metrics.jsonl")) as fh:
            return sum(1 for _ in fh) // 4
    except OSError:
        return 0


def test_a_frozen_neighbour_is_waited_for_again_once_it_answers(tmp_path):
    out = str(tmp_path / "run")
    proc = Forked(
        [*CLI, "cluster", "--topology", "ring:4", "--dataset",
         "digits", "--rounds", "1500", "--round-timeout", "0.3", "--eval-every", "50",
         "--no-consensus", "-q", "--out", out], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while _rounds_written(out) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        with open(os.path.join(out, "nodes.json")) as fh:
            pid = next(n["pid"] for n in json.load(fh) if n["id"] == 2)
        os.kill(pid, signal.SIGSTOP)  # its neighbours wait one time-out, then go on without it
        time.sleep(1.5)
        os.kill(pid, signal.SIGCONT)
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        recs = [json.loads(line) for line in fh]
    assert max(r["round"] for r in recs) == 1500
    for node in (1, 3):  # node 2's neighbours hear from it again, to the end
        heard = [r["neighbours_heard"] for r in sorted(recs, key=lambda r: r["round"])
                 if r["node"] == node]
        assert min(heard[-20:]) == 2, heard[-40:]
    with open(os.path.join(out, "summary.json")) as fh:
        assert json.load(fh)["failed_nodes"] == {}
