"""Byzantine-robust aggregation (issue 9): each rule on hand-made inputs with known answers,
its refusals, and FedAvg with two random workers on real node processes."""

import pytest
import torch

from p2pfl.errors import ConfigError
from p2pfl.strategies.robust import (centred_clip, coordinate_median, krum_scores, multi_krum,
                                     parse_aggregator, trimmed_mean)


def t(*v):
    return torch.tensor(v, dtype=torch.float32)


def test_coordinate_median_odd_and_even():
    ups = [t(1, 10), t(2, -5), t(100, 0)]
    assert torch.equal(coordinate_median(ups), t(2, 0))
    assert torch.equal(coordinate_median(ups + [t(3, 1)]), t(2.5, 0.5))


def test_trimmed_mean_drops_the_extremes_per_coordinate():
    ups = [t(1, 0), t(2, 0), t(3, 0), t(4, 0), t(1000, -1000)]
    assert torch.allclose(trimmed_mean(ups, 0.2), t(3, 0))  # drops 1 and 1000, 0 and -1000
    assert torch.allclose(trimmed_mean(ups, 0.0), t(202, -200))  # beta 0: the plain mean


def test_krum_scores_and_choice():
    ups = [t(0, 0), t(1, 0), t(0, 1), t(10, 10)]
    # n = 4, f = 1: each score sums the squared distances to its n - f - 2 = 1 nearest other
    assert torch.allclose(krum_scores(ups, 1), torch.tensor([1.0, 1.0, 1.0, 181.0],
                                                              dtype=torch.float64))
    assert torch.equal(multi_krum(ups, 1), t(0, 0))  # ties: the first
    assert torch.allclose(multi_krum(ups, 1, m=3), t(1 / 3, 1 / 3))


def test_centred_clipping_bounds_each_update_influence():
    honest = [t(1, 0), t(1, 0), t(1, 0)]
    out = centred_clip(honest + [t(1000, 0)], tau=1.0, start=torch.zeros(2), iterations=1)
    # v = 0 + mean(clip) = (1 + 1 + 1 + 1) / 4: the outlier counts as a step of norm tau
    assert torch.allclose(out, t(1, 0))
    out = centred_clip(honest, tau=10.0, start=torch.zeros(2), iterations=3)
    assert torch.allclose(out, t(1, 0))  # nothing clipped: the mean


@pytest.mark.parametrize("spec", ["", "nope", "median:1", "trimmed", "trimmed:0.5", "trimmed:x",
                                  "krum", "krum:-1", "krum:1.5", "multikrum:1", "multikrum:1:0",
                                  "clip:0", "clip:-1", "clip"])
def test_bad_aggregator_specs_are_refused(spec):
    with pytest.raises(ConfigError):
        parse_aggregator(spec)


def test_an_aggregator_call_dispatches_by_name():
    ups, w = [t(1, 1), t(3, 3), t(100, 100)], [1, 1, 2]
    assert torch.allclose(parse_aggregator("mean")(ups, w), t(51, 51))  # weighted by data size
    assert torch.equal(parse_aggregator("median")(ups, w), t(3, 3))
    clip = parse_aggregator("clip:1")
    first = clip(ups, w)
    # from 0, each of the L = 3 iterations moves v by at most tau
    assert clip.last is first and 0 < first.norm() <= 3 * 1.0 + 1e-6


@pytest.mark.parametrize("aggregator", ["median", "krum:2"])
def test_fedavg_survives_two_random_workers_with_a_robust_aggregator(tmp_path, aggregator):
    from p2pfl import run_cluster

    prof = tmp_path / "byz.toml"
    prof.write_text('[nodes.0]\nbehaviour = "random"\n[nodes.1]\nbehaviour = "random"\n')
    res = run_cluster(mode="fedavg", nodes=6, rounds=15, quiet=True, in_process=True,
                      profiles=str(prof), aggregator=aggregator, out=str(tmp_path / "run"))
    assert res.summary["accuracy_clean_mean"] > 0.9
    bad = run_cluster(mode="fedavg", nodes=6, rounds=15, quiet=True, in_process=True,
                      profiles=str(prof), out=str(tmp_path / "mean"))
    assert bad.summary["accuracy_clean_mean"] < 0.5  # the mean collapses, as before


def test_aggregator_is_refused_where_it_does_not_apply():
    from p2pfl.config import RunConfig
    from p2pfl.plan import plan

    with pytest.raises(ConfigError, match="server modes"):
        plan(RunConfig(topology="ring:4", aggregator="median"))
    with pytest.raises(ConfigError, match="fedavg and stc"):
        plan(RunConfig(mode="cfl", nodes=4, aggregator="median"))
