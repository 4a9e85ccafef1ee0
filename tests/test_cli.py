"""The command line: bad input gets one line and exit code 2, never a traceback."""

import json
import os
import subprocess
import sys

import pytest

from p2pfl.config import RunConfig
from p2pfl.config_files import from_sources, node_settings
from p2pfl.errors import ConfigError
from p2pfl.plan_nodes import own_tables
from tests._inproc import cli_here

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "p2pfl.cli", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "split.edgelist").write_text("0 1\n2 3\n")
    (d / "directed.graphml").write_text(
        '<?xml version="1.0"?><graphml xmlns="http://graphml.graphdrawing.org/xmlns">'
        '<graph edgedefault="directed"><node id="a"/><node id="b"/>'
        '<edge source="a" target="b"/></graph></graphml>')
    (d / "one.edgelist").write_text("0 0\n")
    (d / "garbage.graphml").write_text("<<<not xml")
    (d / "bad.toml").write_text("rounds = [")
    (d / "unknown.toml").write_text("roundz = 3\n")
    (d / "labels.npz").write_bytes(b"")  # not a zip
    return d


BAD = {
    "wrong flag": ["cluster", "--no-such-flag"],
    "missing subcommand": [],
    "bad int": ["cluster", "--rounds", "many"],
    "zero rounds": ["cluster", "--rounds", "0"],
    "unknown generator": ["cluster", "--topology", "hypercube:3"],
    "ring too small": ["cluster", "--topology", "ring:1"],
    "missing file": ["cluster", "--topology", "/nonexistent/graph.graphml"],
    "disconnected": ["cluster", "--topology", "{d}/split.edgelist"],
    "directed": ["cluster", "--topology", "{d}/directed.graphml"],
    "single node": ["cluster", "--topology", "{d}/one.edgelist"],
    "garbage file": ["cluster", "--topology", "{d}/garbage.graphml"],
    "erdos renyi disconnected": ["cluster", "--topology", "erdos_renyi:30:0.01:1"],
    "unknown dataset": ["cluster", "--dataset", "imagenet"],
    "unknown model": ["cluster", "--model", "transformer"],
    "unknown partition": ["cluster", "--partition", "zipf:2"],
    "unknown mixing": ["cluster", "--mixing", "magic"],
    "unknown mode": ["cluster", "--mode", "swarm"],
    "bad toml": ["cluster", "--config", "{d}/bad.toml"],
    "unknown toml key": ["cluster", "--config", "{d}/unknown.toml"],
    "missing config": ["cluster", "--config", "/nonexistent.toml"],
    "missing mnist dir": ["cluster", "--dataset", "mnist:/nonexistent"],
    "bad npz": ["cluster", "--dataset", "npz:{d}/labels.npz"],
    "plot missing dir": ["plot", "/nonexistent/run"],
    "bad codec": ["bench", "codecs", "--codec", "zip:3"],
}


def _bad_args(name, bad_files, tmp_path):
    args = [a.format(d=bad_files) for a in BAD[name]]
    if args and args[0] == "cluster":
        args += ["--out", str(tmp_path / "run"), "--rounds" if "--rounds" not in args else "",
                 "1" if "--rounds" not in args else ""]
        args = [a for a in args if a]
    return args


def _assert_one_line_exit_2(res):
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("p2pfl")


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_is_one_line_and_exit_2(name, bad_files, tmp_path):
    """In this process (the command's own code, :func:`p2pfl.cli.status`): an uncaught
    exception fails the test as a traceback would fail the command."""
    _assert_one_line_exit_2(cli_here(*_bad_args(name, bad_files, tmp_path)))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["wrong flag", "disconnected", "bad npz"])
def test_the_installed_command_exits_2_in_one_line(name, bad_files, tmp_path):
    """The same, from the command in a process of its own: argparse's refusal, a graph's
    and one found after torch is imported."""
    _assert_one_line_exit_2(run_cli(*_bad_args(name, bad_files, tmp_path)))


def test_topology_command_prints_spectral_gap():
    res = run_cli("topology", "torus:4x4")
    assert res.returncode == 0
    gap = float(res.stdout.split("spectral gap")[1].split()[0].strip(","))
    assert abs(gap - 0.40) < 1e-3


def test_self_loop_is_ignored_with_a_warning(tmp_path):
    f = tmp_path / "loop.edgelist"
    f.write_text("0 1\n1 2\n2 0\n1 1\n")
    res = run_cli("topology", str(f))
    assert res.returncode == 0 and "self-loop" in res.stdout


def test_a_codec_the_bench_tensors_overflow_is_one_line_and_exit_2():
    """`bench codecs --codec quant:1e-9` was a CodecError traceback, exit 1 (an audit):
    the spec is valid, but its levels for the bench's Gaussian tensor overflow int32."""
    res = cli_here("bench", "codecs", "--codec", "quant:1e-9")
    assert (res.returncode, res.stdout) == (2, "")
    assert res.stderr == ("p2pfl: error: quant:1e-9 cannot encode the bench's 'gauss' "
                          "tensor: quant:1e-9 levels overflow int32; use a larger step\n")


def test_bench_json_prints_the_json_lines_its_help_says(monkeypatch):
    """The help said "print JSON instead of a table"; the output is one object a line."""
    import torch

    from p2pfl.compression import bench

    tensors = {"a": torch.ones(64), "b": torch.arange(32.0)}
    monkeypatch.setattr(bench, "standard_tensors", lambda: tensors)
    res = cli_here("bench", "codecs", "--codec", "none", "--json")
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert res.returncode == 0 and [(r["codec"], r["tensor"]) for r in rows[:2]] == [
        ("none", "a"), ("none", "b")]
    text = " ".join(cli_here("bench", "--help").stdout.split())
    assert "--json print JSON lines (one object a row) instead of a table" in text


def test_boolean_flags_override_the_config_file_both_ways(tmp_path):
    """in_process = true or consensus = false in a file could not be undone by a flag."""
    from p2pfl.cli import build_parser

    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text("in_process = true\nconsensus = false\nsecure = true\n")
    args = build_parser().parse_args(["cluster", "--config", str(cfg_file), "--no-in-process",
                                      "--consensus", "--no-secure"])
    flags = {k: getattr(args, k) for k in ("in_process", "consensus", "secure")}
    assert flags == {"in_process": False, "consensus": True, "secure": False}
    cfg = from_sources(str(cfg_file), flags)
    assert (cfg.in_process, cfg.consensus, cfg.secure) == (False, True, False)


def test_toml_config_and_flag_override(tmp_path):
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text('topology = "line:3"\nrounds = 2\nlr = 0.1\nlocal-steps = 3\n')
    cfg = from_sources(str(cfg_file), {"rounds": 5})
    assert (cfg.topology, cfg.rounds, cfg.lr, cfg.local_steps) == ("line:3", 5, 0.1, 3)
    with pytest.raises(ConfigError):
        from_sources(None, {"lr": -1.0})


def test_node_profiles_set_per_node_options(tmp_path):
    prof = tmp_path / "p.toml"
    prof.write_text('[default]\nlocal_steps = 7\n[nodes."lab-a"]\nlr = 0.2\ndata_share = 3\n'
                    '[nodes.2]\nmodel = "cnn"\n')
    cfg = from_sources(None, {"profiles": str(prof)})
    own = own_tables(cfg, ["lab-a", "y", "x"])
    a = node_settings(cfg, own[0], "lab-a")
    assert (a["lr"], a["data_share"], a["local_steps"]) == (0.2, 3, 7)
    assert node_settings(cfg, own[2], "x")["model"] == "cnn"
    assert node_settings(cfg, own[1], "y")["lr"] == RunConfig().lr
    prof.write_text('[nodes.a]\nwarp = 9\n')
    with pytest.raises(ConfigError, match=r"\[nodes.a\] sets unknown node option"):
        from_sources(None, {"profiles": str(prof)})


def test_profile_key_names_one_node_label_first(tmp_path):
    """With labels 1..4, [nodes.1] applied to the node labelled 1 and, by its id, to the
    node labelled 2 too: one attacker became two."""
    prof = tmp_path / "p.toml"
    prof.write_text('[nodes.1]\nbehaviour = "sign_flip"\n')
    cfg = from_sources(None, {"profiles": str(prof)})
    assert [bool(t) for t in own_tables(cfg, [1, 2, 3, 4])] == [True, False, False, False]
    assert [bool(t) for t in own_tables(cfg, ["a", "b"])] == [False, True]  # by id
    prof.write_text('[nodes.a]\nlr = 0.2\n[nodes.0]\nlr = 0.3\n')
    cfg = from_sources(None, {"profiles": str(prof)})
    with pytest.raises(ConfigError, match=r"\[nodes.a\] and \[nodes.0\] both name node 'a'"):
        own_tables(cfg, ["a", "b"])


@pytest.mark.parametrize("text, message", [
    ("nodes = 5\n", r"\[nodes\] must be a table"),
    ("default = 3\n", r"\[default\] must be a table"),
    ("[nodes]\n0 = 5\n", r"\[nodes.0\] must be a table"),
])
def test_profile_sections_must_be_tables(tmp_path, text, message):
    """Each crashed with AttributeError or TypeError (exit 1)."""
    prof = tmp_path / "p.toml"
    prof.write_text(text)
    with pytest.raises(ConfigError, match=message):
        from_sources(None, {"profiles": str(prof)})


def test_config_file_options(tmp_path):
    """A [p2pfl] table silently dropped the top-level keys; only profiles was read
    relative to the config's folder; the same option twice kept the later one."""
    (tmp_path / "p2pfl_tbl.toml").write_text('rounds = 5\n[p2pfl]\nmodel = "logreg"\n')
    with pytest.raises(ConfigError, match="rounds outside the \\[p2pfl\\] table"):
        from_sources(str(tmp_path / "p2pfl_tbl.toml"), {})
    (tmp_path / "twice.toml").write_text('local-steps = 2\nlocal_steps = 3\n')
    with pytest.raises(ConfigError, match="same option"):
        from_sources(str(tmp_path / "twice.toml"), {})
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "sq.edgelist").write_text("0 1\n1 2\n2 3\n3 0\n")
    (sub / "run.toml").write_text('topology = "sq.edgelist"\nrounds = 1\n'
                                  'availability = "gone.json"\n')
    cfg = from_sources(str(sub / "run.toml"), {})
    assert cfg.topology == str(sub / "sq.edgelist")
    assert cfg.availability == "gone.json"  # not beside the config: as given


def test_cluster_from_config_file_end_to_end(tmp_path):
    cfg_file = tmp_path / "run.toml"
    out = tmp_path / "out"
    cfg_file.write_text(f'topology = "ring:3"\nrounds = 2\nout = "{out}"\nquiet = true\n')
    res = run_cli("cluster", "--config", str(cfg_file), "--rounds", "3")
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 3 and summary["nodes"] == 3
    assert json.loads((out / "config.json").read_text())["rounds"] == 3
    res = run_cli("plot", str(out))
    assert res.returncode == 0 and (out / "accuracy_vs_mb.png").exists()


def test_a_cluster_on_arrays_of_ones_own(tmp_path):
    """``npz:FILE``: the digits as 1×8×8 images in a file of one's own, a 2-D CNN."""
    import numpy as np

    from p2pfl.data import load_dataset

    ds = load_dataset("digits")
    np.savez(tmp_path / "images.npz", x_train=ds.x_train.reshape(-1, 1, 8, 8),
             y_train=ds.y_train.astype(np.uint8), x_test=ds.x_test.reshape(-1, 1, 8, 8),
             y_test=ds.y_test)
    out = tmp_path / "run"
    res = run_cli("cluster", "--topology", "ring:3", "--dataset", f"npz:{tmp_path}/images.npz",
                  "--model", "cnn:8-8", "--rounds", "6", "--local-steps", "6", "-q", "--out",
                  str(out))
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accuracy_min"] > 0.5, summary["accuracy_per_round"]  # chance: 0.1


# Names and values the plan checks before any node process starts (issue 7).
PLAN_REFUSES = {
    "--compression bogus": (["--compression", "bogus"], "valid stages"),
    "--algorithm nope": (["--algorithm", "nope"], "valid: auto, choco, deepsqueeze, dpsgd"),
    "--mode nope": (["--mode", "nope"], "valid: gossip, fedavg, stc, cfl, fd, cfd"),
    "--partition nope:3": (["--partition", "nope:3"], "valid: iid"),
    "--mixing nope": (["--mixing", "nope"], "valid: metropolis"),
    "--start-timeout -5": (["--start-timeout", "-5"], "start-timeout"),
    "--round-timeout 0": (["--round-timeout", "0"], "round-timeout"),
    "--lost-after nan": (["--lost-after", "nan", "--listen", "tcp://127.0.0.1:*"],
                         "--lost-after must be positive and finite (seconds), got nan"),
    "--round-timeout inf": (["--round-timeout", "inf"],
                            "--round-timeout must be positive and finite (seconds), got inf"),
    "--cpu-policy fast": (["--cpu-policy", "fast"], "unknown cpu_policy 'fast'; valid: "
                          "batch, normal"),
    "--lost-after without --listen": (["--lost-after", "5"], "--lost-after is how long a "
                                      "remote node's connection may be down; it needs --listen"),
    "--target-accuracy 7": (["--target-accuracy", "7"], "target-accuracy"),
    "--participation 0": (["--mode", "fedavg", "--participation", "0"], "participation"),
    "bad k scope": (["--compression", "stc:0.01:layer"], "tensor or global"),
    "stc downstream codec": (["--mode", "stc", "--compression-down", "zip"], "valid stages"),
    "unknown profile key": (["--profiles", "{d}/key.toml"], "valid:"),
    "bad profile value": (["--profiles", "{d}/value.toml"], "lr"),
    "bad profile behaviour": (["--profiles", "{d}/behaviour.toml"], "valid: honest"),
    "bad profile codec": (["--profiles", "{d}/codec.toml"], "valid stages"),
    "link value": (["--link", "up_mbps=fast"], "up_mbps must be a number"),
    "link key": (["--link", "bandwidth=3"], "valid: up_mbps"),
    "link range": (["--link", "loss=1.5"], "loss"),
    "profile link key": (["--profiles", "{d}/link.toml"], "valid: up_mbps"),
    "slowdown below 1": (["--slowdown", "0.5"], "slowdown"),
    # options of other modes are refused, not ignored
    "stc cache in fedavg": (["--mode", "fedavg", "--stc-cache", "3"],
                            "--stc-cache applies to --mode stc, not to --mode fedavg"),
    "participation in gossip": (["--participation", "0.5"], "applies to --mode fedavg|stc"),
    "gamma in a server mode": (["--mode", "fedavg", "--gamma", "0.5"], "applies to gossip"),
    "gamma without CHOCO": (["--gamma", "0.5"], "the consensus step size of CHOCO and DeepSqueeze"),
    "fd bits in stc": (["--mode", "stc", "--fd-bits", "2"], "applies to --mode fd|cfd"),
    "alternating factors downstream": (["--mode", "stc", "--compression-down",
                                        "powersgd:2:alternate"], "broadcast and cached"),
    "powersgd third argument": (["--compression", "powersgd:2:half"], "'alternate'"),
    "fd coder in gossip": (["--fd-coder", "cabac"], "applies to --mode fd|cfd"),
    "unknown fd coder": (["--mode", "cfd", "--fd-coder", "zip"], "valid: packed, cabac"),
    "fd coder on float labels": (["--mode", "fd", "--fd-coder", "cabac"], "--fd-bits"),
    "temporal labels without deltas": (["--mode", "cfd", "--fd-delta", "off", "--fd-coder",
                                        "cabac:temporal"], "needs --fd-delta on"),
    "deltas of float labels": (["--mode", "fd", "--fd-delta", "on"],
                               "--fd-delta on codes the changes of quantised soft labels"),
    "cfd of float labels": (["--mode", "cfd", "--fd-bits", "0"], "which is --mode fd"),
    "compression in cfl": (["--mode", "cfl", "--compression", "topk:0.1"], "uncompressed"),
    "compression-down in fedavg": (["--mode", "fedavg", "--compression-down", "stc:0.1"],
                                   "applies to --mode stc"),
    "profile codec in a server mode": (["--mode", "stc", "--profiles", "{d}/worker.toml"],
                                       "every worker uses the run's codec"),
}


@pytest.mark.parametrize("name", sorted(PLAN_REFUSES))
def test_the_plan_refuses_bad_values_before_any_node_starts(name, tmp_path, capsys):
    from p2pfl.cli import main

    (tmp_path / "key.toml").write_text('[nodes.1]\nwarp = 9\n')
    (tmp_path / "value.toml").write_text('[nodes.1]\nlr = "fast"\n')
    (tmp_path / "behaviour.toml").write_text('[nodes.2]\nbehaviour = "sneaky"\n')
    (tmp_path / "codec.toml").write_text('[nodes.0]\ncompression = "zip:9"\n')
    (tmp_path / "link.toml").write_text('[nodes.0.link]\nspeed = 3\n')
    (tmp_path / "worker.toml").write_text('[nodes.1]\ncompression = "topk:0.1"\n')
    args, expected = PLAN_REFUSES[name]
    out = tmp_path / "run"
    argv = ["cluster", "--topology", "ring:4", "--rounds", "1", "--out", str(out), "-q",
            *[a.format(d=tmp_path) for a in args]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("p2pfl: error:") and expected in err[0], err
    assert not out.exists()  # nothing was launched: the run folder was never made


@pytest.mark.parametrize("names", [[1], ["a", "a"], ["x" * 300], [""], "abc"])
def test_a_node_spec_with_a_bad_codec_table_is_refused(names):
    import msgpack

    from p2pfl.plan import plan
    from p2pfl.roles import node_spec

    spec = plan(from_sources(None, {"topology": "ring:4", "compression": "sign"})).specs[0]
    wire = msgpack.unpackb(msgpack.packb(spec.to_wire()), strict_map_key=False)
    wire["runtime"]["codec_names"] = names
    with pytest.raises(ConfigError, match="codec_names"):
        node_spec(wire)


def test_the_plan_resolves_every_option_into_frozen_specs_that_survive_the_wire():
    import dataclasses

    import msgpack

    from p2pfl.plan import plan
    from p2pfl.roles import node_spec

    gossip = plan(from_sources(None, {"topology": "ring:4", "compression": "stc:0.05+golomb"}))
    assert {s.rule for s in gossip.specs} == {"choco"}
    assert gossip.specs[0].options.gamma == pytest.approx(0.1)  # resolved: 2p for STC
    assert gossip.specs[0].learn.momentum_mode == "quasi-global"
    signed = plan(from_sources(None, {"topology": "ring:4", "compression": "sign"}))
    assert signed.specs[0].learn.momentum_mode == "local"
    server = plan(from_sources(None, {"mode": "stc", "nodes": 3, "error_feedback": "off"}))
    coord = server.specs[-1]
    assert coord.role == "coordinator" and server.closer == coord.id
    assert coord.options.codec_up == "stc:0.01+golomb"  # STC's default codec
    assert not coord.options.error_feedback_up and not coord.options.error_feedback_down
    # every node holds the run's codec table (names sent as their index)
    assert {s.runtime.codec_names for s in gossip.specs} == {("stc:0.05+golomb",)}
    assert {s.runtime.codec_names for s in server.specs} == {("stc:0.01+golomb",)}
    assert plan(from_sources(None, {"topology": "ring:4"})).specs[0].runtime.codec_names == ()
    for spec in gossip.specs + server.specs:
        with pytest.raises(dataclasses.FrozenInstanceError):
            spec.rule = "other"
        wire = msgpack.unpackb(msgpack.packb(spec.to_wire()), strict_map_key=False)
        assert node_spec(wire) == spec
    bad = gossip.specs[0].to_wire()
    bad["learn"]["lr"] = -1.0
    with pytest.raises(ConfigError, match="lr"):
        node_spec(bad)


def test_stc_error_feedback_follows_the_one_switch():
    from _strategy_ctx import client

    from p2pfl.compression import ErrorFeedback

    class Learner:
        num_samples, _node_id = 1, 0

        def get_flat(self):
            import torch

            return torch.zeros(10)

    assert isinstance(client("stc", Learner(), error_feedback="auto").up.codec, ErrorFeedback)
    assert not isinstance(client("stc", Learner(), error_feedback="off").up.codec, ErrorFeedback)


def test_server_modes_are_the_registered_strategies():
    from p2pfl.config import SERVER_MODES
    from p2pfl.strategies import STRATEGIES

    assert SERVER_MODES == tuple(STRATEGIES)


def test_a_bad_option_is_refused_before_torch_is_imported():
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "p2pfl.cli", "cluster",
                        "--rounds", "0"], cwd=ROOT, text=True, capture_output=True, timeout=120)
    assert r.returncode == 2
    imported = [line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines()
                if line.startswith("import time:")]
    assert "p2pfl.config" in imported and "torch" not in imported


def test_a_dry_run_prints_the_resolved_configuration_and_starts_nothing(tmp_path):
    out = tmp_path / "run"
    res = cli_here("cluster", "--topology", "torus:3x3", "--compression", "topk:0.1",
                   "--rounds", "7", "--out", str(out), "--dry-run")
    assert res.returncode == 0, res.stderr
    record = json.loads(res.stdout)
    assert record["rounds"] == 7 and record["resolved"]["nodes"] == 9
    assert record["resolved"]["algorithm"] == "choco"  # what the codec implies, resolved
    assert res.stderr.splitlines()[-1] == ("dry run: 9 nodes (gossip), 7 rounds; nothing was "
                                           "started or written")
    assert not out.exists()
    plain = json.loads(cli_here("cluster", "--topology", "ring:4", "--dry-run").stdout)
    by_node = plain["resolved"]["options"]["by_node"]
    assert [g["options"]["error_feedback"] for g in by_node] == [False]  # nothing to keep
    bad = cli_here("cluster", "--topology", "ring:4", "--model", "transformer", "--dry-run")
    assert bad.returncode == 2 and bad.stdout == "" and "unknown model" in bad.stderr


def test_a_quiet_run_prints_its_folder_alone(tmp_path):
    """Quiet from the file as from -q: stdout is the run folder (a script's
    DIR=$(p2pfl cluster -q)), stderr is empty; without it, stdout stays empty."""
    (tmp_path / "run.toml").write_text('quiet = true\ntopology = "ring:2"\nrounds = 1\n')
    out = tmp_path / "quiet"
    res = cli_here("cluster", "--config", str(tmp_path / "run.toml"), "--out", str(out))
    assert (res.returncode, res.stdout, res.stderr) == (0, f"{out}\n", "")
    loud = cli_here("cluster", "--topology", "ring:2", "--rounds", "1", "--out",
                    str(tmp_path / "loud"))
    assert loud.returncode == 0 and loud.stdout == ""
    assert loud.stderr.splitlines()[-1] == f"results in {tmp_path / 'loud'}"


def test_a_config_file_removed_during_the_run_is_not_read_again(tmp_path):
    """The run's configuration is resolved once: a file removed once the run has begun
    does not turn its end into an error (it was read again, after the run, for -q)."""
    import time

    conf = tmp_path / "run.toml"
    conf.write_text('topology = "ring:2"\nrounds = 30\nquiet = true\n')
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "p2pfl.cli", "cluster", "--config",
                             str(conf), "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    conf.unlink()
    stdout, stderr = proc.communicate(timeout=120)
    assert (proc.returncode, stdout) == (0, f"{out}\n"), stderr


def test_plan_cluster_gives_the_frozen_node_specs_without_starting_any(tmp_path):
    import dataclasses

    import p2pfl

    p = p2pfl.plan_cluster("ring:5", rounds=3, lr=0.05, out=str(tmp_path / "run"))
    assert [s.id for s in p.specs] == [0, 1, 2, 3, 4]
    assert all(s.learn.lr == 0.05 and len(s.neighbours) == 2 for s in p.specs)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.specs[0].id = 9
    assert not (tmp_path / "run").exists()


def test_the_help_gives_each_plain_default():
    """Defaults that were only in the code (momentum 0.9 is not plain SGD) are in the
    help, read from RunConfig; the flags themselves stay unset for a config file."""
    text = " ".join(cli_here("cluster", "--help").stdout.split())  # argparse wraps lines
    text = text.split("options:", 1)[1]  # past the usage line
    for flag, default in (("--momentum MOMENTUM", "0.9"), ("--batch-size BATCH_SIZE", "32"),
                          ("--seed SEED", "0"), ("--round-timeout ROUND_TIMEOUT", "10.0"),
                          ("--cfl-eps1 CFL_EPS1", "0.6"), ("--partition PARTITION", "iid")):
        after = text.split(flag, 1)[1].split(" --", 1)[0]
        assert f"(default {default})" in after, (flag, after)
    assert "(default ring:8" in text.split("--topology TOPOLOGY", 1)[1]
    assert RunConfig().momentum == 0.9  # the help's figure is the code's


def test_no_quiet_undoes_a_config_files_quiet(tmp_path):
    (tmp_path / "run.toml").write_text('quiet = true\ntopology = "ring:2"\nrounds = 1\n')
    res = cli_here("cluster", "--config", str(tmp_path / "run.toml"), "--no-quiet",
                   "--out", str(tmp_path / "run"))
    assert res.returncode == 0 and res.stdout == ""
    assert res.stderr.splitlines()[-1] == f"results in {tmp_path / 'run'}"


@pytest.mark.parametrize("args, named", [((), "{cluster,node,keys,topology,plot,bench}"),
                                         (("keys",), "{generate}"), (("bench",), "{codecs}")])
def test_a_missing_subcommand_is_named_by_its_choices(args, named):
    res = cli_here(*args)
    assert res.returncode == 2
    assert res.stderr.endswith(f"error: the following arguments are required: {named}\n")


def test_topology_counts_read_as_english(tmp_path):
    res = cli_here("topology", "line:2")
    assert res.returncode == 0 and res.stdout.startswith("2 nodes, 1 edge, degree")
    res = cli_here("topology", "star:5", "--mixing", "weight")  # no edge has a weight
    assert res.returncode == 0 and res.stdout.splitlines()[1] == (
        "warning: no edge has a weight: --mixing weight counts each as 1, which is the "
        "metropolis matrix")
    graph = tmp_path / "w.edgelist"
    graph.write_text("0 1 {'weight': 2}\n1 2 {'weight': 1}\n")
    res = cli_here("topology", str(graph), "--mixing", "weight")
    assert res.returncode == 0 and "warning" not in res.stdout and "node ids" not in res.stdout
    graph.write_text("0 1 {'bw': 2000}\n1 2 {'bw': 1000}\n2 3\n")  # one edge without
    res = cli_here("topology", str(graph), "--mixing", "attr:bw")  # it: 1 of 2000 is ~0
    assert res.returncode == 0 and res.stdout.splitlines()[1] == (
        "warning: 1 of 3 edges have no bw: each counts as 1 (--mixing attr:bw)"), res.stdout
    labelled = tmp_path / "abc.edgelist"  # the ids a labelled node's --id takes
    labelled.write_text("a b\nb c\n")
    lines = cli_here("topology", str(labelled)).stdout.splitlines()
    assert lines[1] == "node ids: a=0, b=1, c=2", lines
