"""Network namespaces as hosts (issue 10): every node, and the launcher, in a namespace
of its own, wired by veth pairs to a bridge in a hub namespace.

Nothing can share loopback, ipc or inproc by accident: a namespace has its own
(down) loopback, and each node is a separate `p2pfl node` process reachable only at
its bridge address.  The test makes and removes its namespaces itself; it needs
root (CAP_NET_ADMIN) and iproute2, and is skipped with the reason otherwise.
"""

import json
import os
import secrets
import shutil
import subprocess
import sys

import pytest

from tests._remote import run_to_the_end

NODES = 4


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (the ip command)"
    probe = f"p2pfl-probe-{secrets.token_hex(3)}"
    res = _ip("netns", "add", probe, check=False)
    if res.returncode != 0:
        return f"cannot create a network namespace here: {res.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


WHY = _why_not()


@pytest.fixture
def hosts():
    """{name: ip} of NODES + 1 namespaces (the launcher's first) on one bridge."""
    tag = secrets.token_hex(2)
    subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}"
    hub, made = f"p2pfl-hub-{tag}", []
    names = [f"p2pfl-{tag}-{k}" for k in range(NODES + 1)]
    try:
        _ip("netns", "add", hub)
        made.append(hub)
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "link", "set", "br0", "up")
        out = {}
        for k, ns in enumerate(names):
            _ip("netns", "add", ns)
            made.append(ns)
            here, there = f"v{tag}h{k}", f"v{tag}n{k}"
            _ip("link", "add", here, "type", "veth", "peer", "name", there)
            _ip("link", "set", here, "netns", hub)
            _ip("link", "set", there, "netns", ns)
            _ip("-n", hub, "link", "set", here, "master", "br0", "up")
            address = f"{subnet}.{k + 1}"
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", there)
            _ip("-n", ns, "link", "set", there, "up")
            out[ns] = address
        yield out
    finally:
        for ns in made:  # removing a namespace removes its veth ends too
            _ip("netns", "del", ns, check=False)


def _in(ns, *args):
    return ["ip", "netns", "exec", ns, sys.executable, "-m", "p2pfl.cli", *args]


@pytest.mark.skipif(WHY is not None, reason=WHY or "")
def test_a_cluster_of_namespaces_runs_over_the_bridge(hosts, tmp_path):
    (launcher_ns, launcher_ip), *nodes = hosts.items()
    addr = f"tcp://{launcher_ip}:5555"
    out = tmp_path / "run"
    run_to_the_end(_in(launcher_ns, "cluster", "--topology", f"ring:{NODES}", "--rounds", "5",
                       "--listen", addr, "-q", "--out", str(out)),
                   [_in(ns, "node", "--connect", addr, "--id", str(k), "--host", ip)
                    for k, (ns, ip) in enumerate(nodes)], timeout=180, same_host=False)
    rows = json.loads((out / "nodes.json").read_text())
    # each node is reachable only at its own namespace's bridge address
    assert sorted(r["address"].split("//")[1].rsplit(":", 1)[0] for r in rows) == \
        sorted(ip for _, ip in nodes)
    s = json.loads((out / "summary.json").read_text())
    assert s["failed_nodes"] == {} and s["misses_total"] == 0
    assert s["accuracy_mean"] > 0.5
    assert s["wire_bytes_total"] > s["bytes_sent_total"] > 0
