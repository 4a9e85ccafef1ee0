"""Several node profile files in one run (``--profiles a.toml b.toml``, a shell glob, or a
list in a config file): each sets keys of its own, and a key two of them set is refused."""

from __future__ import annotations

import json

from p2pfl.config_files import from_sources
from tests._inproc import cli_here

LIARS = "[nodes.0]\nbehaviour = \"random\"\n"
LINKS = "[default]\nlr = 0.05\n[nodes.1]\nlink = \"latency_ms=5\"\n"


def _files(tmp_path, **texts) -> dict:
    paths = {}
    for name, text in texts.items():
        paths[name] = tmp_path / f"{name}.toml"
        paths[name].write_text(text)
    return paths


def test_several_profile_files_are_merged(tmp_path):
    """``--profiles nodes/*.toml`` was "unrecognized arguments": one file only."""
    f = _files(tmp_path, liars=LIARS, links=LINKS)
    res = cli_here("cluster", "--topology", "ring:4", "--dry-run",
                   "--profiles", str(f["liars"]), str(f["links"]))
    assert res.returncode == 0, res.stderr
    record = json.loads(res.stdout)
    assert record["profiles"] == [str(f["liars"]), str(f["links"])]
    assert record["node_overrides"] == {"default": {"lr": 0.05}, "nodes": {
        "0": {"behaviour": "random"}, "1": {"link": "latency_ms=5"}}}


def test_a_key_two_profile_files_set_is_refused_naming_both(tmp_path):
    f = _files(tmp_path, liars=LIARS, flips="[nodes.0]\nbehaviour = \"sign_flip\"\n")
    res = cli_here("cluster", "--topology", "ring:4", "--dry-run",
                   "--profiles", str(f["liars"]), str(f["flips"]))
    assert res.returncode == 2 and res.stderr.strip() == (
        f"p2pfl: error: {f['liars']} and {f['flips']} both set [nodes.0] behaviour; "
        "set it in one of them")


def test_a_config_file_lists_profile_files_beside_it(tmp_path):
    """Relative to the config file's folder, as a single file is."""
    _files(tmp_path, liars=LIARS, links=LINKS)
    run = tmp_path / "run.toml"
    run.write_text('topology = "ring:4"\nprofiles = ["liars.toml", "links.toml"]\n')
    cfg = from_sources(str(run))
    assert cfg.profiles == (str(tmp_path / "liars.toml"), str(tmp_path / "links.toml"))
    assert cfg.node_overrides["nodes"]["0"] == {"behaviour": "random"}
    run.write_text('topology = "ring:4"\nprofiles = []\n')
    res = cli_here("cluster", "--config", str(run), "--dry-run")
    assert res.returncode == 2
    assert "profiles must be a file or a list of files, got []" in res.stderr


def test_an_error_of_a_node_names_every_profile_file(tmp_path):
    f = _files(tmp_path, liars=LIARS, bad="[nodes.2]\nlr = -1\n")
    res = cli_here("cluster", "--topology", "ring:4", "--dry-run",
                   "--profiles", str(f["liars"]), str(f["bad"]))
    assert res.returncode == 2
    assert f"node 2 ({f['liars']}, {f['bad']}): lr must be positive" in res.stderr
