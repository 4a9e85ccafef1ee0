"""--local-steps 0: the exchange alone, for transport and scale benchmarks (issue 10)."""

from __future__ import annotations

import pytest

import p2pfl
from p2pfl.errors import ConfigError


def test_exchange_only_sends_every_round_and_never_trains_or_evaluates(tmp_path):
    res = p2pfl.run_cluster("ring:4", local_steps=0, rounds=6, in_process=True, quiet=True,
                            out=str(tmp_path))
    s, recs = res.summary, res.metrics
    assert len(recs) == 4 * 6 and s["misses_total"] == 0
    assert all(r["loss"] is None and r["accuracy"] is None for r in recs)
    assert s["accuracy_mean"] is None
    # every node sent a full model to each of its 2 neighbours every round
    assert all(r["bytes_sent"] == recs[0]["bytes_sent"] > 4 * s["num_params"] * 2
               for r in recs)


def test_a_node_that_trains_still_does_when_only_another_does_not(tmp_path):
    prof = tmp_path / "p.toml"
    prof.write_text("[nodes.0]\nlocal_steps = 0\n")
    res = p2pfl.run_cluster("ring:4", rounds=3, in_process=True, quiet=True,
                            profiles=str(prof), out=str(tmp_path / "run"))
    losses = {r["node"]: r["loss"] for r in res.metrics if r["round"] == 3}
    assert losses[0] is None and all(losses[i] > 0 for i in (1, 2, 3))
    assert res.summary["accuracy_mean"] > 0


def test_exchange_only_is_refused_in_server_modes():
    from p2pfl.config import RunConfig

    with pytest.raises(ConfigError, match="exchange only"):
        RunConfig(mode="fedavg", local_steps=0)
