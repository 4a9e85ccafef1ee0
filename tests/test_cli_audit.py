"""Values the command line took in silence, or took far too long to refuse: each is
one line and exit code 2 before any node (or key) is made."""

from __future__ import annotations

import os

import pytest

from p2pfl.config_files import from_sources
from p2pfl.errors import ConfigError
from tests._inproc import cli_here


def _one_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, (res.returncode, res.stderr)
    return lines[0]


def test_keys_for_more_nodes_than_a_run_can_have_are_refused_at_once(tmp_path):
    """``--nodes 100000000`` built a hundred million names and keys for minutes (a run
    has at most 16,384 nodes) before writing anything; it is refused, none written."""
    folder = tmp_path / "keys"
    line = _one_line(cli_here("keys", "generate", str(folder), "--nodes", "16385"))
    assert "--nodes must be at most 16384" in line
    line = _one_line(cli_here("keys", "generate", str(folder), "--labels",
                              ",".join(f"n{i}" for i in range(16385))))
    assert "at most 16384" in line
    assert not folder.exists()


def test_a_host_that_the_transport_does_not_bind_is_refused():
    """``--transport ipc --host 10.9.9.9`` ran over ipc sockets and wrote the host
    nobody bound into config.json, as --in-process would have had it refused."""
    with pytest.raises(ConfigError, match="--host is the tcp bind address"):
        from_sources(None, dict(transport="ipc", host="10.9.9.9"))
    assert from_sources(None, dict(transport="ipc")).host == "127.0.0.1"


@pytest.mark.parametrize("flag", ["--out", "--link"])
def test_an_empty_output_folder_or_link_is_refused_in_a_dry_run_too(flag):
    """``--out ''`` passed --dry-run and failed only at the launch ("cannot use output
    folder : No such file..."); ``--link ''`` emulated nothing, in silence."""
    line = _one_line(cli_here("cluster", "--dry-run", flag, ""))
    assert line == f"p2pfl: error: {flag} is empty"


def test_an_empty_link_table_in_a_config_file_is_no_link(tmp_path):
    """``link = {}`` in a config file stays what it was: no link, not an empty --link."""
    path = tmp_path / "run.toml"
    path.write_text("link = {}\n")
    assert from_sources(str(path), {}).link is None


def test_a_public_set_larger_than_half_the_training_set_is_refused():
    """``--public-size 100000`` on digits (1,438 training samples) ran with 719 public
    samples while config.json said 100000."""
    res = cli_here("cluster", "--dry-run", "--mode", "fd", "--nodes", "3",
                   "--public-size", "100000")
    assert "--public-size 100000: at most half of the training set (719" in _one_line(res)
    assert cli_here("cluster", "--dry-run", "-q", "--mode", "fd", "--nodes", "3",
                    "--public-size", "719").returncode == 0


@pytest.mark.parametrize("where", ["config", "profiles"])
def test_a_toml_file_with_a_byte_order_mark_is_read(tmp_path, where):
    """Windows editors write UTF-8 with a BOM: tomllib's "Invalid statement (at line 1,
    column 1)" pointed at a line that looks right."""
    path = tmp_path / "f.toml"
    text = "rounds = 3\n" if where == "config" else "[default]\nlr = 0.2\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    cfg = from_sources(str(path) if where == "config" else None,
                       {} if where == "config" else dict(profiles=str(path)))
    if where == "config":
        assert cfg.rounds == 3
    else:
        assert cfg.node_overrides["default"] == {"lr": 0.2}


def test_a_message_with_a_line_break_in_a_value_stays_one_line(tmp_path):
    """A path or spec with a newline in it split the error over two lines."""
    for flags in (["--config", "x\ny"], ["--compression", "x\ny"]):
        assert "x\\ny" in _one_line(cli_here("cluster", "--dry-run", *flags))
    assert not os.path.exists("x\ny")


def test_config_json_says_which_options_came_from_the_file_and_which_from_flags(tmp_path):
    """config.json held the resolved values only: not the --config file, nor which of its
    values a flag replaced, so a run's folder did not say how it was asked for."""
    import json

    path = tmp_path / "run.toml"
    path.write_text('topology = "ring:4"\nrounds = 7\nlr = 0.3\n')
    res = cli_here("cluster", "--dry-run", "-q", "--config", str(path), "--rounds", "2",
                   "--seed", "3")
    assert res.returncode == 0, res.stderr
    record = json.loads(res.stdout)
    assert (record["rounds"], record["lr"], record["seed"]) == (2, 0.3, 3)
    assert record["sources"] == {"config_file": str(path), "file": ["lr", "topology"],
                                 "flags": ["quiet", "rounds", "seed"]}
    res = cli_here("cluster", "--dry-run", "-q", "--topology", "ring:4")
    assert json.loads(res.stdout)["sources"] == {"config_file": None, "file": [],
                                                 "flags": ["quiet", "topology"]}


def test_no_consensus_in_a_server_mode_is_refused():
    """Only gossip nodes send their models for the consensus distance: --no-consensus in
    a server mode changed nothing, without a word."""
    with pytest.raises(ConfigError, match="--no-consensus applies to gossip, not to --mode"):
        from_sources(None, dict(mode="fedavg", nodes=3, consensus=False))
    assert from_sources(None, dict(mode="fedavg", nodes=3, consensus=True)).consensus
    assert not from_sources(None, dict(consensus=False)).consensus


@pytest.mark.parametrize("table, said", [
    ("model = 5", "model must be a name, got 5"),
    ('model = "transformer"', "unknown model 'transformer'"),
    ("compression = 3", "compression must be a codec spec string, got 3"),
    ('compression = "zzz"', "unknown codec stage 'zzz'")])
def test_a_profiles_bad_model_or_codec_names_the_node_and_the_file(tmp_path, table, said):
    """They named neither: 'model must be a name, got 5' (the CLI audit)."""
    profiles = tmp_path / "nodes.toml"
    profiles.write_text(f"[nodes.2]\n{table}\n")
    line = _one_line(cli_here("cluster", "--topology", "ring:4", "--dry-run",
                              "--profiles", str(profiles)))
    assert line.startswith(f"p2pfl: error: node 2 ({profiles}): "), line
    assert said in line


@pytest.mark.parametrize("table", ["[default]\ndata_share = inf", "[nodes.0]\ndata_share = inf",
                                   "[default]\ndata_share = nan", "[nodes.3]\ndata_share = 0"])
def test_a_share_that_is_not_a_positive_finite_number_is_refused_naming_its_node(tmp_path,
                                                                                   table):
    """``[default] data_share = inf`` ran with equal shares in silence, while the same for
    one node was refused (the CLI audit)."""
    profiles = tmp_path / "nodes.toml"
    profiles.write_text(table + "\n")
    line = _one_line(cli_here("cluster", "--topology", "ring:4", "--dry-run",
                              "--profiles", str(profiles)))
    assert f"({profiles}): data_share must be a positive, finite number, got " in line


@pytest.mark.parametrize("toml, flags, said", [
    ("lr = nan\n", (), "{f}: lr must be positive"),
    ("stc_cache = 5\n", (), "{f}: stc_cache applies to --mode stc"),
    ("rounds = 5\n", ("--lr", "nan"), "--lr must be positive"),  # the flag's own: a flag
    # found by the plan, not the config's own checks
    ('compression = "bogus"\n', (), "{f}: compression bogus: unknown codec stage"),
    ('mode = "fedavg"\naggregator = "krum:9"\n', (), "{f}: aggregator krum:9 needs"),
    ('compression = "bogus"\n', ("--compression", "nope"), "--compression nope: unknown"),
])
def test_a_config_files_bad_value_names_the_file_and_its_key(tmp_path, toml, flags, said):
    """``lr = nan`` in the file said "--lr must be positive": a flag the user never gave
    (the CLI audit)."""
    path = tmp_path / "run.toml"
    path.write_text(toml)
    line = _one_line(cli_here("cluster", "--config", str(path), "--dry-run", *flags))
    assert line.startswith("p2pfl: error: " + said.format(f=path)), line
