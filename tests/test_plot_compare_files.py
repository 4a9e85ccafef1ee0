"""``p2pfl plot A B --out DIR``: what its output folder holds when a file cannot be
written, and what compare.json says of a run that has no summary."""

import json
import shutil

import pytest

from tests._inproc import cli_here


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from p2pfl import run_cluster

    out = tmp_path_factory.mktemp("runs") / "gossip"
    run_cluster("ring:3", dataset="digits", rounds=3, quiet=True, out=str(out))
    return out


@pytest.mark.parametrize("blocked", ["compare.json", "compare_accuracy_vs_mb.png"])
def test_a_folder_in_the_way_of_a_comparison_file_is_one_line_and_nothing_written(
        tmp_path, run_dir, blocked):
    """Before: a folder named compare.json was a traceback (exit 1) after the three PNGs
    were written; one named as the second PNG left the first one new and the rest old."""
    out = tmp_path / "cmp"
    (out / blocked).mkdir(parents=True)
    res = cli_here("plot", str(run_dir), str(run_dir), "--out", str(out))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("p2pfl: error: cannot write "), lines
    assert sorted(p.name for p in out.iterdir()) == [blocked]  # nothing half done


def test_a_run_without_a_summary_shows_its_planned_rounds(tmp_path, run_dir):
    """A run still going, or whose launcher was killed, has config.json but no summary:
    compare.json gave its planned ``rounds`` as null, so only ``summary`` told that its
    ``final_round`` was not the last one planned."""
    live = tmp_path / "live"
    shutil.copytree(run_dir, live)
    (live / "summary.json").unlink()
    config = json.loads((live / "config.json").read_text())
    config["rounds"] = 50  # as a run killed at its 3rd round of 50 left it
    (live / "config.json").write_text(json.dumps(config))
    res = cli_here("plot", str(run_dir), str(live), "--out", str(tmp_path / "cmp"))
    assert res.returncode == 0, res.stderr
    table = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [(r["final_round"], r["rounds"], r["summary"]) for r in table] == [
        (3, 3, True), (3, 50, False)]


def test_a_run_stopped_mid_round_compares_with_all_it_sent(tmp_path, run_dir):
    """A run stopped after its last evaluated round (SIGTERM mid-round) records a partial
    round more: compare.json's mb_sent stopped at the evaluated round (92.53 MB against the
    summary's 92.65 MB in a helper's run)."""
    cut = tmp_path / "cut"
    shutil.copytree(run_dir, cut)
    summary = json.loads((cut / "summary.json").read_text())
    with open(cut / "metrics.jsonl", "a") as fh:  # round 4, under way when it stopped
        fh.write(json.dumps({"round": 4, "node": 0, "bytes_sent": 5_000_000,
                             "wall_s": 9.0}) + "\n")
    summary["bytes_sent_total"] += 5_000_000
    (cut / "summary.json").write_text(json.dumps(summary))
    res = cli_here("plot", str(run_dir), str(cut), "--out", str(tmp_path / "cmp"))
    assert res.returncode == 0, res.stderr
    table = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert table[1]["final_round"] == 3
    assert table[1]["mb_sent"] == pytest.approx(summary["bytes_sent_total"] / 1e6)
    assert table[0]["mb_sent"] == pytest.approx(table[1]["mb_sent"] - 5.0)

