"""The Python API as a demanding script or notebook uses it: arguments of the wrong type,
callbacks that raise what no ``except Exception`` catches, a graph object next to a
config file, reading a run's models back."""

from __future__ import annotations

import os

import pytest

import p2pfl
from p2pfl.errors import ConfigError


@pytest.mark.parametrize("config", [{"rounds": 2}, 3.5, b"run.toml", "pipe"])
def test_a_config_that_is_not_a_path_is_refused_and_no_descriptor_is_touched(config):
    """An int was opened as a file descriptor: read, then closed (config=True closed the
    caller's stdout); a dict raised a bare TypeError."""
    r, w = os.pipe()
    os.write(w, b"rounds = 2\n")
    os.close(w)
    try:
        with pytest.raises(ConfigError, match="config must be the path of a TOML file"):
            p2pfl.plan_cluster("ring:3", config=r if config == "pipe" else config, quiet=True)
        os.fstat(r)  # still open
        assert os.read(r, 100) == b"rounds = 2\n"  # and not read
    finally:
        os.close(r)
