"""``p2pfl plot A B --out DIR``: what its output folder holds when a file cannot be
written, and what compare.json says of a run that has no summary."""

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

