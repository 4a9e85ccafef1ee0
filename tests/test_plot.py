"""Tests for p2pfl.plot: run-folder plots and benchmark curves."""

import json
import os
import sys

import pytest

from p2pfl.errors import UsageError
from p2pfl.plot import MB_PNG, ROUND_PNG, TIME_PNG, plot_curves, plot_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path, min_bytes=2000):
    assert os.path.isfile(path)
    with open(path, "rb") as fh:
        data = fh.read()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes


def _no_temp_files(folder):
    return not [f for f in os.listdir(folder) if f.startswith(".tmp-")]


def _write_run(folder, records, summary=None):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "metrics.jsonl"), "w") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
    if summary is not None:
        with open(os.path.join(folder, "summary.json"), "w") as fh:
            json.dump(summary, fh)


def _gossip_records(nodes=3, rounds=5):
    """``nodes`` x ``rounds`` records; accuracy is only measured on odd rounds."""
    out = []
    for r in range(1, rounds + 1):
        for n in range(nodes):
            acc = None if r % 2 == 0 else 0.1 + 0.15 * r + 0.01 * n
            out.append({"round": r, "node": n, "label": f"node-{n}", "accuracy": acc,
                        "bytes_sent": 40_000 * (n + 1), "bytes_received": 50_000})
    return out


def test_plot_run_writes_three_pngs(tmp_path):
    run = tmp_path / "run"
    _write_run(run, _gossip_records(),
               {"mode": "gossip", "nodes": 3, "accuracy_mean": 0.87,
                "accuracy_per_round": [[1, 0.26], [3, 0.56], [5, 0.86]]})
    paths = plot_run(str(run))
    assert paths == [str(run / ROUND_PNG), str(run / MB_PNG), str(run / TIME_PNG)]
    for path in paths:
        _assert_png(path)
    assert _no_temp_files(run)


def test_plot_run_overwrites_and_tolerates_partial_input(tmp_path):
    run = tmp_path / "run"
    _write_run(run, _gossip_records())  # no summary.json (run in progress)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"round": 6, "node": 0, "accur')  # truncated last line
    plot_run(run)
    first = (run / ROUND_PNG).stat().st_size
    plot_run(run)
    assert (run / ROUND_PNG).stat().st_size == first
    _assert_png(run / MB_PNG)


def test_plot_run_server_mode_skips_coordinator(tmp_path):
    run = tmp_path / "run"
    records = _gossip_records(nodes=4, rounds=4)
    for r in range(1, 5):
        records.append({"round": r, "node": "coordinator", "label": "coordinator",
                        "accuracy": 0.2 * r, "bytes_sent": 10**6, "bytes_received": 10**5})
        records.append({"round": r, "node": 99, "role": "coordinator", "label": "srv",
                        "accuracy": None, "bytes_sent": 10**6, "bytes_received": 0})
    _write_run(run, records, {"mode": "fedavg", "nodes": 4, "accuracy_mean": 0.8,
                              "accuracy_per_round": [[1, 0.2], [2, 0.4], [4, 0.8]]})
    for path in plot_run(run):
        _assert_png(path)


def test_plot_run_many_nodes_no_node_legend(tmp_path):
    run = tmp_path / "run"
    _write_run(run, _gossip_records(nodes=20, rounds=3), {"mode": "gossip", "nodes": 20})
    for path in plot_run(run):
        _assert_png(path)


def test_many_nodes_are_drawn_as_their_spread(tmp_path):
    """Above MAX_NODE_LINES nodes, a band from each round's lowest to highest accuracy
    and one from the 10th to the 90th percentile, not a line per node."""
    from p2pfl.plot import MAX_NODE_LINES, _draw_nodes, _figure

    n = MAX_NODE_LINES + 1
    lines = [([1, 2, 3], [0.1 + n_ / 1000, 0.5, 0.9 - n_ / 1000], str(n_)) for n_ in range(n)]
    spread = ([1, 2, 3], [[ys[i] for _, ys, _ in lines] for i in range(3)])
    fig, ax = _figure()
    _draw_nodes(ax, lines, spread, n)
    assert not ax.lines and len(ax.collections) == 2
    outer = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert outer.min() == pytest.approx(0.1) and outer.max() == pytest.approx(0.9)
    inner = ax.collections[1].get_paths()[0].vertices[:, 1]
    assert 0.1 < inner.min() and inner.max() < 0.9
    assert ax.get_legend_handles_labels()[1] == [f"{n} nodes, min–max",
                                                 f"{n} nodes, 10–90th percentile"]
    fig, ax = _figure()
    _draw_nodes(ax, lines[:MAX_NODE_LINES], spread, MAX_NODE_LINES)
    assert len(ax.lines) == MAX_NODE_LINES and not ax.collections
    run = tmp_path / "run"
    _write_run(run, _gossip_records(nodes=n, rounds=3), {"mode": "gossip", "nodes": n})
    for path in plot_run(run):
        _assert_png(path)


def test_plot_run_without_traffic_uses_linear_axis(tmp_path):
    run = tmp_path / "run"
    records = [dict(rec, bytes_sent=0) for rec in _gossip_records(nodes=2, rounds=3)]
    _write_run(run, records)
    for path in plot_run(run):
        _assert_png(path)


def test_plot_run_missing_folder(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        plot_run(str(tmp_path / "nope"))


def test_plot_run_missing_metrics(tmp_path):
    with pytest.raises(UsageError, match="cannot read"):
        plot_run(str(tmp_path))


@pytest.mark.parametrize("text", ["", "\n\n", "not json\n", "[1, 2]\n"])
def test_plot_run_empty_metrics(tmp_path, text):
    (tmp_path / "metrics.jsonl").write_text(text)
    with pytest.raises(UsageError, match="no metrics records"):
        plot_run(str(tmp_path))
    assert not (tmp_path / ROUND_PNG).exists()


def test_plot_run_without_any_accuracy_says_so(tmp_path):
    """An exchange-only run (--local-steps 0) records no accuracy: no empty PNGs."""
    records = [dict(rec, accuracy=None) for rec in _gossip_records()]
    _write_run(tmp_path, records, {"mode": "gossip", "nodes": 3, "accuracy_per_round": []})
    with pytest.raises(UsageError, match="no round recorded a test accuracy"):
        plot_run(str(tmp_path))
    assert not (tmp_path / ROUND_PNG).exists()


def test_usage_error_is_one_line(tmp_path):
    with pytest.raises(UsageError) as info:
        plot_run(str(tmp_path))
    assert "\n" not in str(info.value)


def test_missing_matplotlib(tmp_path, monkeypatch):
    run = tmp_path / "run"
    _write_run(run, _gossip_records())
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(UsageError, match="pip install matplotlib"):
        plot_run(run)
    with pytest.raises(UsageError, match="pip install matplotlib"):
        plot_curves({"a": ([1, 2], [0.1, 0.2])}, tmp_path / "c.png", "x", "y")


def test_plot_curves_logx(tmp_path):
    path = tmp_path / "bench" / "acc_vs_mb.png"
    series = {
        "gossip ring": ([0.0, 0.5, 1.0, 2.0, 4.0], [0.1, 0.3, 0.5, 0.7, 0.8]),
        "gossip top-k": ([0.1, 0.2, 0.4, 0.8], [0.1, 0.35, None, 0.75]),
    }
    out = plot_curves(series, path, "MB sent", "accuracy", logx=True, title="compare")
    assert out == str(path)
    _assert_png(path)
    assert _no_temp_files(path.parent)


def test_a_series_with_no_point_on_a_log_axis_says_so_in_the_legend(tmp_path, monkeypatch):
    """A run that sent 0 MB was missing from compare_accuracy_vs_mb.png while its legend
    entry stood, as if its line were hidden under another."""
    import p2pfl.plot as plot

    figures = []
    monkeypatch.setattr(plot, "_save", lambda fig, path: figures.append(fig) or path)
    plot_curves({"sent": ([0.5, 1.0], [0.3, 0.6]), "silent": ([0.0, 0.0], [0.1, 0.1])},
                tmp_path / "c.png", "MB", "accuracy", logx=True)
    labels = figures[0].axes[0].get_legend_handles_labels()[1]
    assert labels == ["sent", "silent (no point on this axis)"]


def test_plot_curves_linear_and_errors(tmp_path):
    path = tmp_path / "lin.png"
    plot_curves({"a": ([1, 2, 3], [0.2, 0.4, 0.6])}, str(path), "round", "accuracy")
    _assert_png(path)
    with pytest.raises(UsageError):
        plot_curves({}, path, "x", "y")
    with pytest.raises(UsageError, match="x values"):
        plot_curves({"a": ([1, 2], [0.1])}, path, "x", "y")
    with pytest.raises(UsageError, match="pair"):
        plot_curves({"a": 5}, path, "x", "y")


def test_the_global_line_of_a_server_run_is_the_global_models():
    """It plotted accuracy_per_round, the workers' mean (one round behind); an FD run's
    ensemble was labelled 'global model'; without summary.json (a live or killed run)
    there was no line at all, although the coordinator's records hold it."""
    from p2pfl.run_records import global_curve as _global_curve

    coord = [{"round": r, "node": 4, "role": "coordinator", "global_accuracy": a}
             for r, a in ((1, 0.5), (2, 0.7))]
    summary = {"mode": "fedavg", "accuracy_per_round": [[1, 0.2], [2, 0.4]],
               "global_accuracy_per_round": [[1, 0.5], [2, 0.7]]}
    assert _global_curve(summary, coord) == ([1, 2], [0.5, 0.7], "global model")
    assert _global_curve({}, coord) == ([1, 2], [0.5, 0.7], "global model")
    summary = {"mode": "cfd", "accuracy_per_round": [[1, 0.2]],
               "ensemble_accuracy_per_round": [[1, 0.6]]}
    assert _global_curve(summary, coord) == ([1], [0.6], "ensemble (public set)")
    assert _global_curve({"mode": "gossip", "accuracy_per_round": [[1, 0.2]]}, []) is None


def test_every_record_of_a_round_counts_its_bytes(tmp_path):
    """A run stopped early writes round N twice (its record, then the final one); only
    the last one's bytes were counted, so the MB curve ended short."""
    from p2pfl.run_records import node_series as _series

    recs = [{"round": 1, "node": 0, "accuracy": 0.5, "bytes_sent": 1_000_000},
            {"round": 2, "node": 0, "accuracy": 0.6, "bytes_sent": 1_000_000},
            {"round": 2, "node": 0, "accuracy": 0.7, "bytes_sent": 500_000, "final": True}]
    _, rounds, acc, mb, _ = _series(recs)
    assert mb[0] == [1.0, 2.5] and acc[0][2] == 0.7


def test_damaged_records_and_a_file_for_a_folder(tmp_path, capsys):
    """An unhashable node id was a TypeError traceback; one byte that is not UTF-8
    made the whole file unreadable; a file was said not to exist.  The lines left out
    are said (they were left out silently)."""
    folder = tmp_path / "run"
    _write_run(folder, _gossip_records() + [{"round": 1, "node": [1], "accuracy": 0.5}])
    with open(folder / "metrics.jsonl", "ab") as fh:
        fh.write(b'{"round": 6, "node": 0, "accur\xff')
    capsys.readouterr()
    assert len(plot_run(str(folder))) == 3
    n = len(_gossip_records())
    assert capsys.readouterr().err == (f"p2pfl: warning: {folder / 'metrics.jsonl'}: skipped 2 "
                                       f"line(s) that are not a record, line {n + 1} the first\n")
    whole = folder / "metrics.jsonl"
    whole.write_text("".join(line + "\n" for line in whole.read_text(errors="replace")
                             .splitlines()[:n])
                     + '{"round": 6, "no')  # a run killed mid-line
    plot_run(str(folder))
    assert capsys.readouterr().err.endswith(f"line {n + 1} the first (the last line, torn: "
                                            "a run in progress or killed?)\n")
    with pytest.raises(UsageError, match="is not a folder"):
        plot_run(str(folder / "metrics.jsonl"))


def test_bench_measures_stateful_codecs():
    """A temporal or alternating codec's third message refers to its second, which the
    bench's decoder had not seen: TemporalGap, a traceback, and no row at all."""
    import torch

    from p2pfl.compression.bench import bench_one

    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    for spec in ("quant:0.01+cabac:temporal", "powersgd:2:alternate"):
        row = bench_one(spec, "m", x)
        assert row["bits_per_param"] > 0 and row["rel_l2"] < 1.0


def test_runs_compared_byte_for_byte(tmp_path):
    """``p2pfl plot A B --out DIR``: a gossip run and a fedavg run of the same data, one
    line each; the table's megabytes are every node's bytes sent, as in the summary."""
    import subprocess

    from p2pfl import run_cluster

    gossip = run_cluster("ring:4", dataset="digits", rounds=3, quiet=True,
                         out=str(tmp_path / "gossip"))
    server = run_cluster(mode="fedavg", nodes=4, dataset="digits", rounds=3, quiet=True,
                         out=str(tmp_path / "fedavg"))
    res = subprocess.run([sys.executable, "-m", "p2pfl.cli", "plot", str(tmp_path / "gossip"),
                          str(tmp_path / "fedavg"), "--out", str(tmp_path / "cmp")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for name in ("compare_accuracy_vs_round.png", "compare_accuracy_vs_mb.png",
                 "compare_accuracy_vs_time.png"):
        _assert_png(tmp_path / "cmp" / name)
    table = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [row["mode"] for row in table] == ["gossip", "fedavg"]
    for row, s in zip(table, (gossip.summary, server.summary)):
        assert row["mb_sent"] * 1e6 == pytest.approx(s["bytes_sent_total"], abs=1)
    assert table[0]["final_accuracy"] == gossip.summary["accuracy_per_round"][-1][1]
    assert table[1]["final_accuracy"] == server.summary["global_accuracy_per_round"][-1][1]
    import shutil  # a gossip run with no summary yet (still going, or its launcher killed)

    shutil.copytree(tmp_path / "gossip", tmp_path / "live")
    (tmp_path / "live" / "summary.json").unlink()
    from p2pfl.plot_compare import compare_runs

    compare_runs([str(tmp_path / "live"), str(tmp_path / "fedavg")], str(tmp_path / "cmp2"))
    live = json.loads((tmp_path / "cmp2" / "compare.json").read_text())[0]
    assert live["final_accuracy"] == pytest.approx(table[0]["final_accuracy"])
    # a run that did not finish as planned says so (compare.json hid it: only its
    # final_round told); the finished ones say they did
    assert [(r["rounds"], r["failed_nodes"], r["interrupted"], r["summary"])
            for r in table] == [(3, [], False, True)] * 2
    assert live["summary"] is False
    from tests._inproc import cli_here

    for args, message in ((["plot", str(tmp_path / "gossip"), str(tmp_path / "fedavg")],
                           "needs --out"),
                          (["plot", str(tmp_path / "gossip"), "--out", str(tmp_path / "x")],
                           "two run folders or more")):
        res = cli_here(*args)
        assert res.returncode == 2 and message in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_compared_megabytes_of_a_slow_link_count_what_left_after_the_last_record(tmp_path):
    """A message behind an emulated link counts when it leaves the uplink, and a node's
    last models left after its last record: compare.json said 0.328 MB of a run whose
    summary said 0.347 MB (31 % less on a lossy ring)."""
    from p2pfl import run_cluster
    from p2pfl.plot_compare import run_curve

    s = run_cluster("ring:3", dataset="digits", rounds=2, quiet=True, link="up_mbps=1",
                    out=str(tmp_path / "slow")).summary
    curve = run_curve(str(tmp_path / "slow"))
    assert curve["mb"][-1] * 1e6 == pytest.approx(s["bytes_sent_total"], abs=1)
