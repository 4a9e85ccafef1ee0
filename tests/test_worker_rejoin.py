"""A server-mode worker restarted mid-round is sent the round's instruction again: its
old process got it, the new one waited for the next round's, and the coordinator waited
the round's whole time-out for its reply (5.2 s at --round-timeout 5 for a worker back in
about 2.8 s)."""

from tests.test_restart import _cluster, _kill_when, _records, _summary


def test_a_restarted_worker_does_not_cost_the_round_its_time_out(tmp_path):
    out = str(tmp_path / "run")
    proc = _cluster(out, "--mode", "fedavg", "--nodes", "3", "--rounds", "30",
                    "--round-timeout", "30")
    try:
        _kill_when(out, 1, lambda recs: sum(r["role"] == "coordinator" for r in recs) >= 5,
                   proc)
        assert proc.wait(timeout=240) == 0
    finally:
        proc.kill()
    s, recs = _summary(out), _records(out)
    assert s["restarts"] == 1 and s["failed_nodes"] == {}
    walls = [r["wall_s"] for r in sorted((r for r in recs if r["role"] == "coordinator"),
                                         key=lambda r: r["round"])]
    assert max(b - a for a, b in zip(walls, walls[1:])) < 20.0  # a restart, not 30 s
    assert len({r["node"] for r in recs if r.get("final")}) == 3
