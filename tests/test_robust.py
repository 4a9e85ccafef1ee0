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
    with pytest.raises(ConfigError, match="fedavg, stc and cfl"):
        plan(RunConfig(mode="fd", nodes=4, aggregator="median"))
    with pytest.raises(ConfigError, match="centred clipping"):
        plan(RunConfig(mode="cfl", nodes=4, aggregator="clip:1"))
    assert plan(RunConfig(mode="cfl", nodes=4, aggregator="median")).specs


@pytest.mark.parametrize("behaviour", ["sign_flip", "alie"])
@pytest.mark.parametrize("mode", ["fd", "cfd"])
def test_an_update_attack_is_refused_where_soft_labels_are_sent(tmp_path, mode, behaviour):
    """fd and cfd send soft labels, which neither attack shapes: a sign_flip worker
    was accepted there and sent honest soft labels (fd: every figure as an honest run's)."""
    from p2pfl.config_files import from_sources
    from p2pfl.plan import plan

    def planned():
        return plan(from_sources(None, {"mode": mode, "nodes": 4, "profiles": str(prof)}))

    prof = tmp_path / "p.toml"
    prof.write_text(f'[nodes.0]\nbehaviour = "{behaviour}"\n')
    with pytest.raises(ConfigError, match=f"behaviour {behaviour} shapes model updates"):
        planned()
    prof.write_text('[nodes.0]\nbehaviour = "random"\n[nodes.1]\nbehaviour = "noisy"\n'
                    '[nodes.2]\nbehaviour = "label_flip"\n[nodes.3]\nbehaviour = "silent"\n')
    assert planned().specs


def test_normclip_scales_each_update_to_the_median_norm_then_averages():
    ups, w = [t(3, 4), t(0, 1), t(0, 2), t(0, 100)], [1, 1, 1, 1]  # norms 5, 1, 2, 100
    # median of the norms (torch: the lower middle) is 2: 5 -> 2, 1 stays, 2 stays, 100 -> 2
    expected = (t(1.2, 1.6) + t(0, 1) + t(0, 2) + t(0, 2)) / 4
    assert torch.allclose(parse_aggregator("normclip")(ups, w), expected)
    assert torch.allclose(parse_aggregator("normclip")(ups, [2, 0, 0, 0]), t(1.2, 1.6))


def test_cfl_combines_cluster_updates_with_its_aggregator():
    from p2pfl.strategies.cfl import split_criterion

    honest = [t(1, 0), t(1, 0.1), t(1, -0.1)]
    huge = honest + [t(-1000, 0)]
    assert split_criterion(huge, parse_aggregator("mean"))[0] > 200  # the outlier dominates
    assert split_criterion(huge)[0] < 1.1  # normclip, the default, sees the honest ones
    assert split_criterion(huge, parse_aggregator("median"))[0] == pytest.approx(1.0)


def test_a_server_mode_alie_worker_sends_mean_minus_z_std_of_its_own_probes():
    from p2pfl.algorithms.attacks import alie_z
    from p2pfl.strategies.fedavg import ALIE_PROBES
    from tests._strategy_ctx import client

    class ProbingLearner:  # each local training moves the model by a different step
        num_params, num_samples, _node_id = 3, 10, 0

        def __init__(self):
            self.flat, self.calls = torch.zeros(3), 0

        def get_flat(self):
            return self.flat.clone()

        def set_flat(self, x):
            self.flat = x.clone()

        def train(self):
            self.calls += 1
            self.flat = self.flat + torch.tensor([1.0, float(self.calls), -float(self.calls)])
            return 0.0

    learner = ProbingLearner()
    worker = client("fedavg", learner, "alie", compression="none")
    assert worker.alie_z == alie_z(4, 1) == 0.0  # 4 workers, one colluder: z = 0
    assert alie_z(10, 2) > 0.25  # 10 workers, 2 colluders
    worker.alie_z = 1.5
    base = torch.tensor([5.0, 5.0, 5.0])
    worker.apply(1, worker_packet(base))
    worker.fit()
    sent = worker.update()
    probes = torch.stack([torch.tensor([1.0, k, -k]) for k in range(1, ALIE_PROBES + 1)])
    z = 1.5
    assert learner.calls == ALIE_PROBES and torch.equal(learner.flat, base)
    assert torch.allclose(sent, probes.mean(0) - z * probes.std(0))


def worker_packet(model):
    from p2pfl.strategies.base import dense_packet

    return dense_packet(model)


BEHAVIOURS_TOML = "".join(f'[nodes.{i}]\nbehaviour = "{b}"\n' for i, b in enumerate(
    ["random", "label_flip", "noisy", "sign_flip", "alie", "silent"]))


@pytest.mark.parametrize("mode", ["gossip", "fedavg"])
def test_every_behaviour_runs_in_both_modes(tmp_path, mode):
    from p2pfl import run_cluster

    prof = tmp_path / "all.toml"
    prof.write_text(BEHAVIOURS_TOML)
    where = {"topology": "complete:8"} if mode == "gossip" else {"mode": mode, "nodes": 8,
                                                                  "aggregator": "median"}
    res = run_cluster(**where, rounds=4, quiet=True, in_process=True, round_timeout=1.0,
                      robust="clip:0.5" if mode == "gossip" else "none",
                      profiles=str(prof), out=str(tmp_path / "run"))
    s = res.summary
    silent = [r for r in res.metrics if r.get("node") == 5 and r.get("bytes_sent")]
    assert s["failed_nodes"] == {} and silent == []  # the silent one sends nothing
    assert s["accuracy_mean_honest"] is not None  # 6 of 8 lie: robustness is tested above
    for node in range(5):  # every other Byzantine node did send, every round
        sent = [r for r in res.metrics if r.get("node") == node and r.get("bytes_sent")]
        assert len(sent) == 4, node
    if mode != "gossip":
        assert sorted(s["behaviours"].values()) == sorted(
            ["random", "label_flip", "noisy", "sign_flip", "alie", "silent"])


def test_trimmed_mean_counts_exactly():
    ups = [t(float(i * i), 0) for i in range(100)]
    # 0.29 · 100 is 28.999... in floats: 29 are dropped each way, not 28
    kept = [i * i for i in range(29, 71)]
    assert torch.allclose(trimmed_mean(ups, 0.29), t(sum(kept) / len(kept), 0))


@pytest.mark.parametrize("options, warned", [
    (dict(mode="stc", aggregator="median"), "keep 0.01 of their entries"),
    (dict(mode="fedavg", compression="topk:0.02+golomb", aggregator="trimmed:0.25"),
     "keep 0.02 of their entries"),
    (dict(mode="fedavg", compression="topk:0.1", aggregator="median"), None),
    (dict(mode="stc", aggregator="krum:2"), None),
    (dict(mode="fedavg", aggregator="median"), None)])
def test_a_median_of_very_sparse_updates_is_warned_of(options, warned):
    """STC's updates (1 % of entries) under a coordinate-wise median reached 0.59 with no
    Byzantine worker, against 0.94 with the mean, and nothing said so."""
    import p2pfl

    p = p2pfl.plan_cluster(None, nodes=8, dataset="digits", rounds=1, **options)
    lines = [line for line in p.info if "barely learns" in line]
    assert (warned in lines[0]) if warned else not lines, lines
