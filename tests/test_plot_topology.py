"""`p2pfl topology SPEC --png FILE`: a graph's edges by weight, a schedule's phases."""

import json

import pytest

from p2pfl.plot_topology import MAX_DRAWN_NODES, panels
from p2pfl.topology import build
from tests._inproc import cli_here

pytest.importorskip("matplotlib", reason="drawing needs the plot extra (matplotlib)")

PNG = b"\x89PNG\r\n\x1a\n"


def test_a_graphs_panel_is_its_edges_with_their_weights():
    [(title, edges, directed)] = panels(build("ring:4"))
    assert not directed and title == ""
    assert sorted((u, v) for u, v, _ in edges) == [(0, 1), (0, 3), (1, 2), (2, 3)]
    assert all(w == pytest.approx(1 / 3) for _, _, w in edges)  # Metropolis on a ring


def test_a_schedules_panels_are_its_phases_arrows_or_lines(tmp_path):
    parts = panels(build("one_peer_exponential:8"))
    assert [t for t, _, _ in parts] == ["phase 1 (rounds 1, 4, ...)",
                                       "phase 2 (rounds 2, 5, ...)",
                                       "phase 3 (rounds 3, 6, ...)"]
    for k, (_, arrows, directed) in enumerate(parts[:2]):
        assert directed and sorted(arrows) == sorted(((i - (1 << k)) % 8, i, 0.5)
                                                     for i in range(8))
    _, lines, directed = parts[2]  # i hears i - 4 = i + 4: a symmetric phase, lines
    assert not directed and sorted(lines) == [(i, i + 4, 0.5) for i in range(4)]
    path = tmp_path / "idle.json"
    path.write_text(json.dumps({"sources": [[1, 0, 2, 3], [0, 1, 3, 2], [2, 3, 0, 1]]}))
    idle = panels(build(f"one_peer:{path}"))
    assert idle[1][1:] == ([(2, 3, 0.5)], False)  # 0 and 1 idle: nothing drawn


@pytest.mark.parametrize("spec, flags", [("ring:8", []), ("one_peer_exponential:16", []),
                                         ("torus:4x4", ["--layout", "circular"]),
                                         ("one_peer_exponential:8", ["--layout", "spring"])])
def test_the_command_writes_a_png_and_says_where(tmp_path, spec, flags):
    out = tmp_path / "sub" / "t.png"
    proc = cli_here("topology", spec, "--png", str(out), *flags)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == str(out) and "nodes" in lines[0]
    data = out.read_bytes()
    assert data.startswith(PNG) and len(data) > 5000


@pytest.mark.parametrize("args, words", [
    (["ring:8", "--png", "{out}", "--layout", "radial"], "unknown layout 'radial'"),
    (["ring:8", "--layout", "spring"], "give --png FILE too"),
    ([f"ring:{MAX_DRAWN_NODES + 1}", "--png", "{out}"], "would be a blot"),
    (["ring:8", "--png", "{out}.svg"], "name the file *.png"),  # it wrote PNG bytes there
    (["ring:8", "--png", "/proc/t.png"], "cannot write /proc/t.png"),  # printed, then failed
])
def test_what_cannot_be_drawn_is_one_line_and_exit_2(tmp_path, args, words):
    out = tmp_path / "t.png"
    proc = cli_here("topology", *(a.format(out=out) for a in args))
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr
    assert not out.exists() and not out.with_suffix(".png.svg").exists()
