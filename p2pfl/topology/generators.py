"""Graph generators and ``NAME:ARG[:ARG...]`` spec parsing."""

from __future__ import annotations

import networkx as nx

from p2pfl.errors import TopologyError

__all__ = [
    "GENERATORS", "ring", "line", "complete", "star", "torus", "exponential",
    "erdos_renyi", "small_world", "random_regular", "barabasi_albert",
]


#: The most nodes a topology may have: four times the 4,096 in-process nodes that took
#: 5.3 GiB and 237 s on this 2-core machine.  Its mixing matrix is held by rows, but
#: its self-weights are summed as over dense rows, in O(n^2) time.
MAX_NODES = 16_384
#: The most edges: networkx holds each in Python dicts (about 150 bytes and 0.5 µs each
#: here), and every edge is a connection each way with a model on it every round.
#: complete:16384 asked for 134 M of them, some 22 GB, before any other check.
MAX_EDGES = 1 << 22

# The edges a generator spec makes (at most, for exponential), from its arguments in spec
# order, seed left out: checked before the graph is built, once the arguments are ones
# the generator takes (else it says what is wrong with them).  erdos_renyi's count is
# random: its mean, and the check takes five standard deviations above it.
_EDGES = {
    "ring": lambda n: n, "line": lambda n: n - 1, "complete": lambda n: n * (n - 1) // 2,
    "star": lambda n: n - 1, "torus": lambda r, c: 2 * r * c,
    "exponential": lambda n: n * max(1, (n - 1).bit_length()),
    "erdos_renyi": lambda n, p: p * n * (n - 1) / 2, "small_world": lambda n, k, p: n * k // 2,
    "random_regular": lambda d, n: d * n // 2, "barabasi_albert": lambda n, m: m * (n - m),
}
_TAKES = {  # the arguments each generator accepts (its own checks, below, say why not)
    "torus": lambda r, c: r >= 1 and c >= 1,
    "erdos_renyi": lambda n, p: n >= 2 and 0.0 <= p <= 1.0,
    "small_world": lambda n, k, p: 2 <= k < n,
    "random_regular": lambda d, n: 1 <= d < n,
    "barabasi_albert": lambda n, m: 1 <= m < n,
}


def _need(ok, message):
    if not ok:
        raise TopologyError(message)


def ring(n):
    """Cycle on ``n >= 2`` nodes (a single edge when ``n == 2``)."""
    _need(n >= 2, f"ring needs at least 2 nodes, got {n}")
    return nx.cycle_graph(n)


def line(n):
    """Path on ``n >= 2`` nodes."""
    _need(n >= 2, f"line needs at least 2 nodes, got {n}")
    return nx.path_graph(n)


def complete(n):
    """Complete graph on ``n >= 2`` nodes."""
    _need(n >= 2, f"complete needs at least 2 nodes, got {n}")
    return nx.complete_graph(n)


def star(n):
    """Star with ``n >= 2`` nodes in total; node 0 is the hub."""
    _need(n >= 2, f"star needs at least 2 nodes, got {n}")
    return nx.star_graph(n - 1)


def torus(rows, cols):
    """Two-dimensional periodic grid with ``rows * cols`` nodes.

    Node ``r * cols + c`` sits at row ``r``, column ``c``.  For
    ``rows, cols >= 3`` the graph is 4-regular; smaller sides give fewer
    distinct neighbours (no self-loops or parallel edges are created).
    """
    _need(rows >= 1 and cols >= 1,
          f"torus sides must be at least 1, got {rows}x{cols}")
    _need(rows * cols >= 2, f"torus needs at least 2 nodes, got {rows}x{cols}")
    G = nx.Graph()
    G.add_nodes_from(range(rows * cols))
    for r in range(rows):
        for c in range(cols):
            i = r * cols + c
            for j in (r * cols + (c + 1) % cols, ((r + 1) % rows) * cols + c):
                if j != i:
                    G.add_edge(i, j)
    return G


def exponential(n):
    """Exponential graph: node ``i`` is linked to ``i +- 2**k mod n`` for ``2**k < n``."""
    _need(n >= 2, f"exponential needs at least 2 nodes, got {n}")
    G = nx.Graph()
    G.add_nodes_from(range(n))
    hop = 1
    while hop < n:
        G.add_edges_from((i, (i + hop) % n) for i in range(n))
        hop *= 2
    return G


def _check_prob(name, p):
    _need(0.0 <= p <= 1.0, f"{name} probability P must be in [0, 1], got {p}")


def erdos_renyi(n, p, seed=0):
    """G(n, p) random graph; it may be disconnected (then validation fails)."""
    _need(n >= 2, f"erdos_renyi needs at least 2 nodes, got {n}")
    _check_prob("erdos_renyi", p)
    return nx.gnp_random_graph(n, p, seed=seed)


def small_world(n, k, p, seed=0):
    """Connected Watts-Strogatz graph: even-degree ``k`` ring lattice rewired with prob. ``p``."""
    _need(n >= 3, f"small_world needs at least 3 nodes, got {n}")
    _need(k >= 2 and k % 2 == 0, f"small_world K must be an even number >= 2, got {k}")
    _need(k < n, f"small_world K must be smaller than N, got K={k}, N={n}")
    _check_prob("small_world", p)
    try:
        return nx.connected_watts_strogatz_graph(n, k, p, tries=100, seed=seed)
    except nx.NetworkXError:
        raise TopologyError(
            f"small_world:{n}:{k}:{p} stayed disconnected after 100 tries; "
            "lower P or raise K") from None


def random_regular(d, n, seed=0):
    """Random ``d``-regular graph on ``n`` nodes (``n * d`` even, ``1 <= d < n``)."""
    _need(n >= 2, f"random_regular needs at least 2 nodes, got {n}")
    _need(1 <= d < n, f"random_regular degree D must be in [1, N-1], got D={d}, N={n}")
    _need(n * d % 2 == 0, f"random_regular needs N*D even, got D={d}, N={n}")
    return nx.random_regular_graph(d, n, seed=seed)


def barabasi_albert(n, m, seed=0):
    """Barabasi-Albert preferential attachment graph (``1 <= m < n``)."""
    _need(n >= 2, f"barabasi_albert needs at least 2 nodes, got {n}")
    _need(1 <= m < n, f"barabasi_albert M must be in [1, N-1], got M={m}, N={n}")
    return nx.barabasi_albert_graph(n, m, seed=seed)


#: Generator name -> function.  Spec strings are ``NAME:ARG[:ARG...]``.
GENERATORS = {f.__name__: f for f in (ring, line, complete, star, torus, exponential,
                                       erdos_renyi, small_world, random_regular,
                                       barabasi_albert)}

#: Time-varying topologies' specs and their argument (built by schedule_specs.py).
SCHEDULE_SPECS = {"one_peer_exponential": "N", "one_peer": "FILE.json", "dynamic": "FILE.json"}

# Argument placeholders of each spec; a trailing "SEED" is optional.
_SPEC_ARGS = {
    "ring": "N", "line": "N", "complete": "N", "star": "N", "torus": "RxC",
    "exponential": "N", "erdos_renyi": "N:P:SEED", "small_world": "N:K:P:SEED",
    "random_regular": "D:N:SEED", "barabasi_albert": "N:M:SEED",
}


def _usage(name):
    args = _SPEC_ARGS[name].replace(":SEED", "[:SEED]")
    return f"{name}:{args}"


def _parse_arg(name, placeholder, text):
    text = text.strip()
    try:
        if placeholder == "P":
            return float(text)
        if placeholder == "RxC":
            rows, cols = text.lower().split("x")
            return int(rows), int(cols)
        return int(text)
    except ValueError:
        kind = {"P": "a number", "RxC": "of the form RxC (e.g. 4x4)"}
        raise TopologyError(
            f"{name}: {placeholder} must be {kind.get(placeholder, 'an integer')}, "
            f"got {text!r}") from None


def _check_size(spec, name, placeholders, values):
    """The node count a spec asks for, before the graph is built: ``ring:10000000``
    built for minutes (and ``ring:`` of 2**64 overflowed) before the count was checked."""
    if placeholders[0] == "RxC" and min(values[:2]) < 1:
        return  # torus says what is wrong with its sides
    n = values[0] * values[1] if placeholders[0] == "RxC" else values[placeholders.index("N")]
    _need(n <= MAX_NODES, f"{spec.strip()} has {n} nodes; at most {MAX_NODES} are supported")
    given = values[:len(values) if placeholders[0] == "RxC" else len(placeholders) - (
        placeholders[-1] == "SEED")]
    if not _TAKES.get(name, lambda n: n >= 2)(*given):
        return
    edges = _EDGES[name](*given)
    if name == "erdos_renyi":  # binomial: N pairs, each an edge with probability P
        p, pairs = given[1], given[0] * (given[0] - 1) / 2
        high = edges + 5 * (pairs * p * (1 - p)) ** 0.5
        _need(high <= MAX_EDGES, f"{spec.strip()} has about {edges:,.0f} edges, and by "
              f"chance up to {high:,.0f}; at most {MAX_EDGES:,} are supported")
        return
    _need(edges <= MAX_EDGES, f"{spec.strip()} has {edges:,} edges; at most {MAX_EDGES:,} "
          "are supported")


def _from_spec(spec, seed):
    name, *args = spec.strip().split(":")
    name = name.strip().lower().replace("-", "_")
    if name not in GENERATORS:
        raise TopologyError(
            f"unknown topology {spec!r}: not a file and not a generator; "
            f"generators: {', '.join(_usage(g) for g in GENERATORS)}; time-varying: "
            f"{', '.join(f'{g}:{arg}' for g, arg in SCHEDULE_SPECS.items())}")
    placeholders = _SPEC_ARGS[name].split(":")
    random = placeholders[-1] == "SEED"
    if len(args) not in (len(placeholders), len(placeholders) - random):
        raise TopologyError(f"{name} spec takes {_usage(name)}, got {spec!r}")
    values = [_parse_arg(name, ph, a) for ph, a in zip(placeholders, args)]
    if placeholders[0] == "RxC":
        values = list(values[0])
    _check_size(spec, name, placeholders, values)
    if random and len(args) < len(placeholders):
        values.append(0 if seed is None else int(seed))
    return GENERATORS[name](*values)
