"""Run members that send what no honest node sends: the run goes on, and counts it.

Real processes over TCP: a listening launcher, honest ``p2pfl node`` processes, and one
``p2pfl node`` whose process patches what it sends before it starts (the patch stands
for a buggy or hostile build of p2pfl).  What must hold: the launcher does not crash on
a malformed record or bye (it did: no summary.json was written), and a worker's update
too large for float32 sums does not fail the coordinator (it did, and the whole run).
"""

import json
import subprocess
import sys
import textwrap
import time

from p2pfl.addresses import free_port, listening
from tests._remote import ROOT
from tests._forked import CLI, Forked

#: Sends, as node 1: a record whose round is text (round 2), a record of node 0 (round
#: 3), a model frame of 3 bytes (round 4), a final model (--save-models) whose tensors
#: all have one name, and a bye whose counters are malformed.
BAD_REPORTS = """
    import msgpack

    from p2pfl.transport import endpoint

    send = endpoint.Endpoint.send

    def bad(self, peer, kind, round=0, **fields):
        if kind == "weights":
            d = msgpack.unpackb(fields["frames"][0])
            d["names"] = ["w"] * len(d["names"])
            fields["frames"] = [msgpack.packb(d), *fields["frames"][1:]]
        meta = dict(fields.get("meta") or {})
        records = meta.get("records") or []
        if kind == "metrics":  # records may travel several to a message
            meta["records"] = [dict(r, round="two") if r["round"] == 2 else
                               dict(r, node=0) if r["round"] == 3 else r for r in records]
            if records[-1]["round"] == 4:
                fields.update(frames=[b"abc"], shapes=[], dtypes=[])  # passes the wire
        elif kind == "bye":
            meta.update(dropped={"x": "y"}, misses="many", bytes_sent=True)
        if kind in ("metrics", "bye"):
            fields["meta"] = meta
        return send(self, peer, kind, round, **fields)

    endpoint.Endpoint.send = bad
"""

#: A server-mode worker whose every update is 3e38 on every entry: finite, but the
#: coordinator's mean plus its residual overflowed float32.
HUGE_UPDATES = """
    import torch

    from p2pfl.algorithms.base import Packet
    from p2pfl.compression import make_codec
    from p2pfl.strategies import upstream

    def huge(self, rnd, delta, learner, base):
        self.replied = rnd
        codec = make_codec("stc:1.0+golomb", shapes=getattr(self.codec, "codec",
                                                             self.codec).shapes)
        return Packet(self.codec.name, codec.encode(torch.full_like(delta, 3.0e38)),
                      meta={"n": learner.num_samples})

    upstream.UpEncoder.packet = huge
"""


def _run(tmp_path, patch: str, hostile: int, nodes: int, *flags) -> tuple:
    """Launcher, honest nodes and the patched one; (launcher status, its stderr, summary)."""
    port = free_port()
    addr = f"tcp://127.0.0.1:{port}"
    out = tmp_path / "run"
    launcher = Forked([*CLI, "cluster", *flags, "--dataset", "digits", "--listen", addr, "-q",
                       "--out", str(out)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    node = [*CLI, "node", "--connect", addr, "--host", "127.0.0.1"]
    script = textwrap.dedent(patch) + textwrap.dedent(f"""
        from p2pfl.cli import main
        raise SystemExit(main({node[3:] + ["--id", str(hostile)]!r}))
    """)
    procs = []
    try:
        deadline = time.monotonic() + 60
        while not listening(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        procs = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT,
                                  stderr=subprocess.DEVNULL) if i == hostile
                 else Forked(node + ["--id", str(i)], cwd=ROOT, stderr=subprocess.DEVNULL)
                 for i in range(nodes)]
        _, err = launcher.communicate(timeout=120)
    finally:
        for p in [launcher, *procs]:
            p.kill()
    return launcher.returncode, err, json.loads((out / "summary.json").read_text())


def test_malformed_reports_are_dropped_and_counted_and_the_run_ends_with_a_summary(tmp_path):
    status, err, s = _run(tmp_path, BAD_REPORTS, 1, 3, "--topology", "ring:3",
                          "--rounds", "6", "--save-models")
    assert status == 0, err
    assert s["failed_nodes"] == {} and s["launcher_dropped"]["bad_report"] >= 7, s
    assert s["models_saved"] == 2  # the others' models are saved, node 1's is dropped
    assert sorted(p.name for p in (tmp_path / "run" / "models").iterdir()) == \
        ["node-0.pt", "node-2.pt"]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    rounds = sorted(r["round"] for r in records if r["node"] == 1)
    assert rounds == [1, 4, 5, 6] and sum(r["node"] == 0 for r in records) == 6
    assert s["dropped"].get("x") is None  # the bye's malformed fields were left out...
    assert s["bytes_sent_counted_by_nodes"] > 0  # ...and its well-formed ones kept


def test_a_worker_whose_updates_overflow_float32_sums_is_refused_not_fatal(tmp_path):
    status, err, s = _run(tmp_path, HUGE_UPDATES, 1, 3, "--mode", "stc", "--nodes", "2",
                          "--rounds", "4", "--round-timeout", "5")
    assert status == 0, err
    assert s["failed_nodes"] == {}, s["failed_nodes"]
    assert s["dropped"]["undecodable"] >= 4  # each of the 4 rounds' huge update
    assert s["replies_failed"]["nonfinite"] >= 4  # and why, which "undecodable" hid
    accuracy = [a for _, a in s["global_accuracy_per_round"]]
    assert max(accuracy[1:]) > accuracy[0]  # the honest worker's updates still move it


def test_a_report_keeps_its_well_formed_parts_only():
    from p2pfl.reports import checked_final, checked_records

    rec = {"round": 3, "node": 1, "bytes_sent": 10, "bytes_received": 5, "accuracy": 0.5}
    bad = [dict(rec, round=True), dict(rec, node=2), dict(rec, accuracy="high"),
           dict(rec, bytes_sent=1.5), {1: 2}, "text"]
    good, vector, dropped = checked_records({"records": [*bad, rec]}, [bytes(8)], 1)
    assert good == [rec] and vector is not None and dropped == len(bad)
    assert checked_records({"records": [rec, bad[0]]}, [bytes(8)], 1)[1:] == (None, 2)
    assert checked_records({"records": [rec]}, [bytes(6)], 1)[1:] == (None, 1)
    assert checked_records({"records": "all"}, [], 1) == ([], None, 1)
    final, dropped = checked_final({"node": 1, "bytes_sent": 7, "dropped": {"x": "y"},
                                    "misses": [[0, 2]], "sent_per_peer": [[0]],
                                    "strategy": []}, 1)
    assert final == {"node": 1, "bytes_sent": 7, "misses": [[0, 2]]} and dropped == 3
    assert checked_final({"node": 0, "bytes_sent": 7}, 1) == ({}, 1)  # another's bye
    deep: list = []
    for _ in range(1000):  # msgpack carries it; JSON could not write it (RecursionError)
        deep = [deep]
    assert checked_records({"records": [dict(rec, label=deep)]}, [], 1) == ([], None, 1)
    final, dropped = checked_final({"node": 1, "extra": 1, "strategy": {"failed_nodes": {}},
                                    "role": "coordinator"}, 1)
    assert final == {"node": 1, "role": "coordinator"} and dropped == 2
    for signal in ([], {}, "SIGKILL", 2):  # a bye of a node stopped by a signal names it
        assert checked_final({"node": 1, "signal": signal}, 1) == ({"node": 1}, 1)
    assert checked_final({"node": 1, "signal": "SIGTERM"}, 1) == (
        {"node": 1, "signal": "SIGTERM"}, 0)
