"""Topology files compressed with gzip or bzip2 (``g.edgelist.gz``, ``g.graphml.bz2``)
are read as networkx reads them, by the name; they were refused ("unsupported topology
file extension '.gz'").  A cut or false one is one line, exit 2."""

import bz2
import gzip
import json

import networkx as nx
import pytest

from p2pfl import topology as tp
from p2pfl.errors import TopologyError
from tests._inproc import cli_here


def _write(path, text: str) -> None:
    opener = gzip.open if path.suffix == ".gz" else bz2.open
    with opener(path, "wt", encoding="utf-8") as fh:
        fh.write(text)


@pytest.mark.parametrize("name", ["g.edgelist.gz", "g.txt.bz2", "g.adjlist.gz", "g.json.bz2",
                                  "g.graphml.gz", "g.gml.bz2"])
def test_a_compressed_file_reads_as_the_plain_one(tmp_path, name):
    graph = nx.cycle_graph(5)
    nx.set_edge_attributes(graph, {(0, 1): 0.5}, "weight")
    plain = tmp_path / name.rsplit(".", 1)[0]
    if plain.suffix in (".edgelist", ".txt"):
        text = "\ufeff" + "".join(f"{u} {v} {d}\n" for u, v, d in
                                  graph.edges(data="weight", default=1.0))  # BOM too
    elif plain.suffix == ".adjlist":
        text = "".join(line + "\n" for line in nx.generate_adjlist(graph))
    elif plain.suffix == ".json":
        text = json.dumps(nx.node_link_data(graph, edges="links"))
    elif plain.suffix == ".graphml":
        text = "".join(nx.generate_graphml(graph))
    else:
        text = "".join(line + "\n" for line in nx.generate_gml(graph))
    plain.write_text(text)
    _write(tmp_path / name, text)
    got, want = tp.load_topology(tmp_path / name), tp.load_topology(plain)
    assert list(got.nodes) == list(want.nodes) == [0, 1, 2, 3, 4]
    assert sorted(got.edges(data=True)) == sorted(want.edges(data=True))
    assert sorted(map(sorted, got.edges)) == sorted(map(sorted, graph.edges))


@pytest.mark.parametrize("name, content, fragment", [  # mtime=0: the same bytes, and test
    ("cut.edgelist.gz", gzip.compress(b"0 1\n1 2\n2 0\n", mtime=0)[:15],  # ids, in every
     "end-of-stream marker"),  # test worker (a timestamp in an id failed the collection)
    ("false.edgelist.gz", b"0 1\n", "Not a gzipped file"),
    ("false.json.bz2", b"{}", "Invalid data stream"),
    ("g.csv.gz", gzip.compress(b"0,1\n", mtime=0), "unsupported topology file extension"),
], ids=["cut", "false-gz", "false-bz2", "csv"])
def test_a_bad_compressed_file_is_one_error(tmp_path, name, content, fragment):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(TopologyError, match=fragment):
        tp.load_topology(tmp_path / name)


def test_a_cluster_runs_on_a_compressed_edge_list_and_a_cut_one_exits_2(tmp_path):
    path = tmp_path / "ring.edgelist.gz"
    _write(path, "0 1\n1 2\n2 3\n3 0\n")
    proc = cli_here("cluster", "--topology", str(path), "--dataset", "digits", "--rounds", "1",
                    "--in-process", "-q", "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["nodes"] == 4
    path.write_bytes(path.read_bytes()[:12])
    proc = cli_here("cluster", "--topology", str(path), "--out", str(tmp_path / "cut"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "cannot read topology file" in proc.stderr and not (tmp_path / "cut").exists()
