"""A node whose own training leaves its model non-finite (an --lr far too high) stops
with "diverged" as its reason, in every mode and with every codec, and the run says so
at its end, quiet or not.  Before: uncompressed gossip sent the model to be dropped
(the run ended at 0.10, exit 0), a codec refused it (every node failed with "qsgd
cannot encode non-finite values", exit 1), FedAvg's coordinator counted it undecodable
(exit 0 in silence)."""

import json

import pytest

import p2pfl
from tests._inproc import cli_here

REASON = "diverged: the model is not finite after local training (a lower --lr?)"


def _profile(tmp_path) -> str:
    path = tmp_path / "lr.toml"
    path.write_text("[nodes.2]\nlr = 1e30\n")
    return str(path)


@pytest.mark.parametrize("options", [dict(algorithm="dpsgd"), dict(compression="qsgd:4"),
                                     dict(mode="fedavg")], ids=["gossip", "qsgd", "fedavg"])
def test_a_node_that_diverges_stops_with_that_reason_and_the_others_finish(tmp_path, options):
    res = p2pfl.run_cluster("ring:5", dataset="digits", rounds=6, quiet=True, in_process=True,
                            profiles=_profile(tmp_path), out=str(tmp_path / "run"), **options)
    summary = res.summary
    assert summary["diverged_nodes"] == ["2"]
    assert summary["failed_nodes"] == {"2": REASON}
    assert "undecodable" not in summary["dropped"]  # nothing non-finite was sent
    assert summary["accuracy_mean"] > 0.5  # the others' (2's last 0.10 is left out)


def _cli(tmp_path, *flags):
    return cli_here("cluster", "--topology", "ring:4", "--dataset", "digits", "--rounds", "3",
                    "--in-process", "-q", "--out", str(tmp_path / "run"), *flags)


def test_a_quiet_run_still_warns_that_a_node_diverged(tmp_path):
    proc = _cli(tmp_path, "--profiles", _profile(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{tmp_path / 'run'}\n"  # a quiet run prints its folder
    assert proc.stderr.strip().splitlines() == [
        "warning: 1 of 4 nodes diverged (2: their models went non-finite in local training; "
        "a lower --lr?) and stopped; the accuracy is the others'"]


def test_a_run_whose_every_node_diverged_exits_1_and_says_why(tmp_path):
    proc = _cli(tmp_path, "--lr", "1e30", "--compression", "qsgd:4")
    assert proc.returncode == 1
    assert f"every node failed (node 0: {REASON})" in proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["diverged_nodes"] == ["0", "1", "2", "3"]


def test_the_end_warnings_tell_diverged_from_failed_and_undecodable_from_slow_links():
    from p2pfl.run_warnings import end_warnings

    summary = {"mode": "gossip", "nodes": 8, "failed_nodes": {"1": REASON, "5": "killed"},
               "diverged_nodes": ["1"], "misses_total": 10, "messages_sent_total": 16,
               "dropped": {"undecodable": 9}}
    lines = end_warnings(summary)
    assert lines[0].startswith("warning: 1 of 8 nodes diverged (1: ")
    assert lines[1].startswith("warning: 1 of 8 nodes failed (5; ")
    assert "undecodable: models non-finite or corrupt" in lines[2]
    summary.update(dropped={}, failed_nodes={}, diverged_nodes=[])
    assert end_warnings(summary) == ["warning: 10 neighbours' models missed their round (as "
                                     "many as half the messages sent): a --link too slow "
                                     "for --round-timeout?"]
