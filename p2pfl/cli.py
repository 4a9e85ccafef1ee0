"""The ``p2pfl`` command: ``cluster``, ``node``, ``keys``, ``topology``, ``plot``, ``bench``.

Every user error (a wrong flag, an unreadable file, a disconnected graph, an
unknown dataset) prints one line to stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys

from . import signals
from .errors import ClusterError, UsageError

__all__ = ["main", "build_parser"]

# (flag, type, help) for every option that `cluster` and the TOML file share.
CLUSTER_OPTIONS = [
    ("mode", str, "gossip (default), fedavg, stc, cfl, fd or cfd"),
    ("topology", str, "generator spec (ring:8, torus:4x4, ...), graph file, or a schedule "
                      "that changes every round (one_peer_exponential:N, one_peer:FILE.json, "
                      "dynamic:FILE.json); in server modes its nodes are the workers "
                      "(default ring:8, unless a server mode gives --nodes)"),
    ("nodes", int, "number of worker nodes in server modes"),
    ("rounds", int, "communication rounds (default 30)"),
    ("seed", int, "random seed for data, partition, initial model and random graphs "
                  "without their own SEED"),
    ("dataset", str, "digits, mnist1d, synthetic[:C:D], mnist:PATH, cifar10:PATH, npz:FILE "
     "(x_train, y_train, x_test, y_test arrays of your own)"),
    ("data_dir", str, "folder of the mnist or cifar10 files (for --dataset mnist or cifar10 "
     "without :PATH)"),
    ("partition", str, "iid, dirichlet:ALPHA, shards:S or groups:K"),
    ("model", str, "mlp[:H1-H2...], cnn[:C1-C2...] or logreg"),
    ("device", str, "where nodes train: auto (a GPU when there is one, default), cpu, cuda "
     "or cuda:N; several nodes may share a GPU"),
    ("local_steps", int, "local SGD steps per round (default 2 in gossip, 10 in server modes; "
     "0: exchange only, no training or evaluation)"),
    ("local_epochs", int, "local epochs per round (overrides --local-steps when > 0)"),
    ("batch_size", int, "mini-batch size"),
    ("lr", float, "learning rate (default 0.1 in gossip, 0.05 in server modes)"),
    ("momentum", float, "SGD momentum"),
    ("weight_decay", float, "L2 weight decay"),
    ("algorithm", str, "gossip rule: auto, dpsgd, choco, deepsqueeze or gossip-learning"),
    ("schedule", str, "sync (rounds with a barrier, default) or async (gossip only)"),
    ("mixing", str, "mixing weights: metropolis (default), uniform, weight or attr:NAME "
     "(weighted by the edge attribute weight or NAME of a graph file)"),
    ("compression", str, "codec spec for gossip messages and fedavg/stc updates, e.g. "
     "stc:0.01+golomb (default none: uncompressed; in --mode stc, stc:0.01+golomb, which "
     "none means there too)"),
    ("error_feedback", str, "auto, on or off"),
    ("gamma", float, "consensus step size of CHOCO and DeepSqueeze, one for every node "
     "(default: by the codec, the smallest of the nodes' codecs': min(1, 2p) for topk, stc "
     "or sbc keeping a fraction p, p for randk, 0.3 for sign, terngrad and powersgd, 0.2 "
     "for qsgd, 1 for fp16, bf16, quant, dq and uniform; --dry-run shows it)"),
    ("participation", float, "reporting fraction in server modes"),
    ("robust", str, "gossip: none, clip[:TAU] (ClippedGossip), trimmed:BETA (BRIDGE-T)"),
    ("aggregator", str, "fedavg/stc: mean, median, trimmed:BETA, krum:F, multikrum:F:M, "
     "clip:TAU, normclip (auto: mean); cfl: the same but clip (auto: normclip)"),
    ("compression_down", str, "server-to-worker codec (auto: as --compression for stc)"),
    ("stc_cache", int, "STC: global updates cached for catch-up (default 10)"),
    ("filter_scaling", str, "stc, fedavg: on sends a scale factor per conv filter with each "
     "sparse update (Becking et al.); default off"),
    ("cfl_eps1", float, "CFL: split when the mean update norm is below this"),
    ("cfl_eps2", float, "CFL: ... and the largest update norm is above this"),
    ("cfl_warmup", int, "CFL: rounds a cluster trains before it may split"),
    ("public_size", int, "FD/CFD: size of the public distillation set, held out of the "
     "training set (at most half of it; default 200)"),
    ("distill_steps", int, "FD/CFD: distillation steps per round (default 5)"),
    ("fd_bits", int, "FD/CFD: soft-label bits (0: float32, fd only; default fd 0, cfd 1)"),
    ("fd_delta", str, "FD/CFD: delta-code soft labels: auto (on for cfd), on or off"),
    ("fd_coder", str, "FD/CFD: soft-label frames: packed (default), cabac, or cabac:temporal "
     "(deltas coded with contexts conditioned on the previous labels; needs delta coding)"),
    ("transport", str, "tcp (default), ipc or inproc"),
    ("host", str, "address nodes bind for tcp (default 127.0.0.1; with --backend ray, the "
     "IP Ray knows each host by)"),
    ("backend", str, "local (node processes here, default) or ray (Ray actors on a Ray "
     "cluster; the ray extra: pip install -e '.[ray]' in a checkout)"),
    ("ray_address", str, "with --backend ray: a running Ray cluster, HOST:PORT or auto "
     "(default: start Ray here)"),
    ("node_cpus", float, "with --backend ray: CPUs each node asks Ray for (default: an equal "
     "share of the cluster, at most 1)"),
    ("node_gpus", float, "with --backend ray: GPUs each node asks Ray for (default 0)"),
    ("procs", int, "with --in-process: host processes for the node actors (default: the cores)"),
    ("listen", str, "bind the launcher here (tcp://HOST:PORT, PORT 1-65535 or * for any "
     "free one) and wait for remote nodes"),
    ("keys", str, "CURVE key folder from `p2pfl keys generate` (implies --secure)"),
    ("round_timeout", float, "seconds to wait for neighbours each round"),
    ("start_timeout", float, "seconds to wait for the cluster to start"),
    ("lost_after", float, "with --listen: seconds a remote node's connection may be down "
     "before it has failed (default 10)"),
    ("cpu_policy", str, "batch (default) or normal: the Linux scheduling policy of the node "
     "processes (batch: fewer preemptions, for throughput)"),
    ("eval_every", int, "evaluate every N rounds"),
    ("target_accuracy", float, "stop all nodes once the nodes' mean test accuracy (gossip) "
     "or the coordinator's global, cluster or ensemble accuracy (server modes) reaches this"),
    ("profiles", str, "node profile TOML file(s) (per-node options); of several, each "
     "sets its own keys"),
    ("link", str, "emulated uplink of every node: up_mbps=X,latency_ms=X,jitter_ms=X,loss=P"),
    ("slowdown", float, "local work of every node takes this many times as long (1 to 1000)"),
    ("churn", str, "ON_S:OFF_S[:SEED]: exponential online/offline periods for every node"),
    ("availability", str, "CSV trace of node,offline_start_s,offline_end_s"),
    ("restart", str, "no or on-failure[:N]: restart a node process that died (N times, 3)"),
    ("out", str, "output folder (default runs/TIMESTAMP-MODE)"),
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _defaults() -> dict:
    """RunConfig's plain defaults by option, for the help (None: set by the mode, or
    unset); the flags themselves default to None, so that a config file can set them."""
    import dataclasses

    from .config import RunConfig

    return {f.name: f.default for f in dataclasses.fields(RunConfig)
            if isinstance(f.default, (int, float, str)) and not isinstance(f.default, bool)}


def _add_cluster(sub) -> None:
    p = sub.add_parser("cluster", help="run a local cluster of nodes",
                       description="Spawn a local cluster over a topology and run it.")
    p.add_argument("--config", help="TOML file with options; flags override it")
    defaults = _defaults()
    for name, typ, text in CLUSTER_OPTIONS:
        if "default" not in text and defaults.get(name) is not None:
            text += f" (default {defaults[name]})"
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None,
                       help=text, **({"nargs": "+", "metavar": "FILE"} if name == "profiles"
                                     else {}))
    p.add_argument("--in-process", dest="in_process", action="store_const", const=True,
                   help="host the nodes as actors of a few processes (--procs), over ipc; "
                        "with --transport inproc, as threads of this process")
    p.add_argument("--secure", dest="secure", action="store_const", const=True,
                   help="CurveZMQ on every socket; only the run's keys are admitted")
    p.add_argument("--no-consensus", dest="consensus", action="store_const", const=False,
                   help="gossip: do not send models to the launcher for the consensus distance")
    p.add_argument("--save-models", dest="save_models", action="store_const", const=True,
                   help="write each node's final model to OUT/models/node-ID.pt (a state "
                        "dict: model.load_state_dict(torch.load(path, weights_only=True)))")
    p.add_argument("-q", "--quiet", dest="quiet", action="store_const", const=True,
                   help="no progress output; the run folder alone is printed, on "
                        "stdout (DIR=$(p2pfl cluster -q ...))")
    p.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="resolve and check everything, print the resolved configuration "
                        "(config.json's content) on stdout, and start nothing")
    # the other way of each, to override a config file's setting
    p.add_argument("--no-in-process", dest="in_process", action="store_const", const=False,
                   help="one process a node (the default), over a config file's in_process")
    p.add_argument("--no-secure", dest="secure", action="store_const", const=False,
                   help="no CurveZMQ (the default), over a config file's secure")
    p.add_argument("--consensus", dest="consensus", action="store_const", const=True,
                   help="send models for the consensus distance (the default), over a "
                        "config file's consensus = false")
    p.add_argument("--no-save-models", dest="save_models", action="store_const", const=False,
                   help="save no models (the default), over a config file's save_models")
    p.add_argument("--no-quiet", dest="quiet", action="store_const", const=False,
                   help="progress output (the default), over a config file's quiet = true")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="p2pfl", description="Peer-to-peer gossip learning over ZeroMQ.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"p2pfl {__version__}")
    # a metavar: a missing subcommand is named by its choices, not by its attribute
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                metavar="{" + ",".join(COMMANDS) + "}")
    _add_cluster(sub)
    p = sub.add_parser("node", help="run one node that joins a launcher (multi-host)")
    p.add_argument("--connect", required=True, help="the launcher's address, tcp://HOST:PORT")
    p.add_argument("--id", type=int, help="this node's id in the topology (with --key: "
                   "its name in keys.toml when that is a number)")
    p.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    p.add_argument("--advertise", help="host name or IPv4 address (no tcp://, no port) that "
                   "peers use to reach this node (default with --host 0.0.0.0: this host's "
                   "address on its route to the launcher)")
    p.add_argument("--key", help="this node's secret key file (CURVE; keys.toml beside it)")
    p.add_argument("--start-timeout", dest="start_timeout", type=float, default=60.0,
                   help="seconds to wait for the launcher's config and start (default 60)")
    p.add_argument("--lost-after", dest="lost_after", type=float, default=None,
                   help="seconds without word from the launcher, or with the connection "
                        "to it down, before this node gives up (default: 4 start time-outs "
                        "without word, 10 s down)")
    p = sub.add_parser("keys", help="CURVE keys for multi-host secure runs")
    ksub = p.add_subparsers(dest="keys_command", required=True, parser_class=_Parser,
                            metavar="{generate}")
    k = ksub.add_parser("generate", help="write key pairs and keys.toml into a new folder")
    k.add_argument("folder")
    who = k.add_mutually_exclusive_group(required=True)
    who.add_argument("--nodes", type=int, help="keys for node ids 0..N-1")
    who.add_argument("--labels", help="comma-separated node labels of the topology")
    p = sub.add_parser("topology", help="describe a topology and its mixing matrix")
    p.add_argument("spec", help="generator spec, graph file or schedule "
                   "(one_peer_exponential:N, one_peer:FILE.json, dynamic:FILE.json)")
    p.add_argument("--mixing", default="metropolis",
                   help="metropolis (default), uniform, weight or attr:NAME")
    p.add_argument("--png", help="also draw it into this PNG file (edges as wide as their "
                   "weight; a schedule: one panel a phase)")
    p.add_argument("--layout", default="auto",
                   help="with --png: auto (circular for schedules, spring otherwise), "
                   "circular or spring")
    p = sub.add_parser("plot", help="write PNG plots of a run folder, or compare runs",
                       description="One run folder: its plots, written into it. Two or "
                       "more with --out DIR: one line a run (accuracy against round, "
                       "MB sent by all nodes and wall time) and compare.json, in DIR.")
    p.add_argument("run_dir", nargs="+")
    p.add_argument("--out", help="with two run folders or more: where the comparison goes")
    p = sub.add_parser("bench", help="benchmarks",
                       description="codecs: bits per parameter, relative error, speed and "
                       "the ratio to the levels' entropy, of a fresh encoder's first message "
                       "on a few test tensors (what a stream's later messages save, with "
                       "cabac:temporal or powersgd:R:alternate, does not show)")
    p.add_argument("what", choices=["codecs"], metavar="{codecs}")
    p.add_argument("--json", action="store_true",
                   help="print JSON lines (one object a row) instead of a table")
    p.add_argument("--codec", action="append", dest="codecs", metavar="SPEC",
                   help="a codec spec to measure (repeatable; default: the standard set)")
    return parser


def _cmd_cluster(args) -> int:
    from .api import run_cluster

    options = {name: getattr(args, name) for name, _, _ in CLUSTER_OPTIONS}
    for name in ("in_process", "consensus", "quiet", "secure", "save_models"):
        options[name] = getattr(args, name)
    options = {k: v for k, v in options.items() if v is not None}

    if args.dry_run:
        return _dry_run(args.config, options)
    try:
        result = run_cluster(config=args.config, **options)
    except ClusterError as exc:  # nodes that never joined, all failed, a dead coordinator:
        print(f"p2pfl: error: {_one_line(exc)}", file=sys.stderr)  # a runtime failure
        return 1
    if result.config.quiet:
        print(result.out_dir)  # the one line a quiet run prints: where its results are
    return 0


def _dry_run(config, options: dict) -> int:
    """``p2pfl cluster --dry-run``: the plan's start lines on stderr (unless quiet),
    its resolved configuration as JSON on stdout."""
    from .api import plan_cluster
    from .metrics import json_text

    p = plan_cluster(config=config, **options)
    if not p.config.quiet:
        for line in p.info:
            print(line, file=sys.stderr)
        kind = p.config.mode if p.closer is None else f"{p.config.mode}, with a coordinator"
        print(f"dry run: {len(p.specs)} nodes ({kind}), {p.config.rounds} rounds; "
              "nothing was started or written", file=sys.stderr)
    sys.stdout.write(json_text(p.record))  # config.json's bytes
    return 0


def _one_line(exc) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _cmd_node(args) -> int:
    from .addresses import address_towards, check_advertise, check_host, tcp_address
    from .spec import MAX_INT

    launcher_host, _ = tcp_address(args.connect, "--connect")
    for flag, value in (("--start-timeout", args.start_timeout),
                        ("--lost-after", args.lost_after)):
        if value is not None and not 0 < value < float("inf"):  # NaN fails too
            raise UsageError(f"{flag} must be positive and finite (seconds), got {value}")
    check_host(args.host)
    advertise = args.advertise
    if advertise is not None:
        check_advertise(advertise)
    if advertise is None and args.host in ("0.0.0.0", "*"):  # not an address to reach
        advertise = address_towards(launcher_host)  # the one its launcher's host can reach
    from .worker import serve

    node_id, security = args.id, None
    if args.key is not None:
        from .keys import node_security

        node_id, security = node_security(args.key, args.id)
    elif node_id is None:
        raise UsageError("p2pfl node needs --id (or --key, whose name gives the id)")
    if not 0 <= node_id <= MAX_INT:  # a run's ids are 0..N-1; a key's name may give it
        raise UsageError(f"--id must be in [0, {MAX_INT}], got {node_id}")

    def report(reason: str) -> None:
        print(f"p2pfl: error: node {node_id}: {_one_line(reason)}", file=sys.stderr)

    import zmq

    ctx = zmq.Context()
    try:
        status = serve(args.connect, node_id, ctx=ctx, scheme="tcp", host=args.host,
                       advertise=advertise, security=security,
                       start_timeout=args.start_timeout, lost_after=args.lost_after,
                       report=report)
    finally:  # what the node sent last (its bye, or why it failed) leaves before exit
        ctx.term()
    # a signal whose exception a destructor swallowed while the run ended anyway (the
    # launcher's stop came first): the exit says it all the same
    signals.check()
    return status


def _cmd_keys(args) -> int:
    from .keys import generate_keys
    from .topology.generators import MAX_NODES

    if args.nodes is not None:
        if args.nodes < 1:
            raise UsageError(f"--nodes must be >= 1, got {args.nodes}")
        if args.nodes > MAX_NODES:  # a run has no more: 10^8 names and keys took minutes
            raise UsageError(f"--nodes must be at most {MAX_NODES} (a run's most nodes), "
                             f"got {args.nodes}")
        names = [str(i) for i in range(args.nodes)]
    else:
        names = [n.strip() for n in args.labels.split(",") if n.strip()]
        if len(names) > MAX_NODES:
            raise UsageError(f"--labels names {len(names)} nodes; a run has at most "
                             f"{MAX_NODES}")
    written = generate_keys(args.folder, names)
    print(f"wrote {len(written)} files to {args.folder}: secret keys (*.key_secret, mode 0600) "
          f"stay on their host; keys.toml is public")
    return 0


def _cmd_topology(args) -> int:
    from .plot_topology import LAYOUTS, draw_topology
    from .topology import build, count, describe

    if args.png is None and args.layout != "auto":
        raise UsageError("--layout is for drawing: give --png FILE too")
    if args.layout not in LAYOUTS:  # before a large graph is built
        raise UsageError(f"unknown layout {args.layout!r}; valid: {', '.join(LAYOUTS)}")
    if args.png is not None and not args.png.lower().endswith(".png"):
        raise UsageError(f"--png writes a PNG image; name the file *.png, not {args.png!r}")
    topo = build(args.spec, scheme=args.mixing)
    drawn = None
    if args.png is not None:  # drawn first: a file it cannot write fails before any print
        gap = topo.spectral_gap
        drawn = draw_topology(topo, args.png, args.layout, title=f"{args.spec}: "
                              f"{count(topo.n, 'node')}, "
                              f"{count(topo.graph.number_of_edges(), 'edge')}, spectral gap "
                              f"{'?' if gap is None else f'{gap:.4g}'}")
    print(describe(topo))
    if list(topo.labels) != list(range(topo.n)):  # the ids `p2pfl node --id` takes
        shown = ", ".join(f"{label}={i}" for i, label in enumerate(topo.labels[:12]))
        print(f"node ids: {shown}" + (f", ... ({topo.n} in all)" if topo.n > 12 else ""))
    for w in topo.warnings:
        print(f"warning: {w}")
    if drawn is not None:
        print(drawn)
    return 0


def _cmd_plot(args) -> int:
    from .plot import plot_run
    from .plot_compare import compare_runs

    if len(args.run_dir) > 1 and args.out is None:
        raise UsageError("comparing runs needs --out DIR, the folder for the comparison")
    if len(args.run_dir) == 1 and args.out is not None:
        raise UsageError("--out is for a comparison of two run folders or more; one run's "
                         "plots go into its folder")
    paths = plot_run(args.run_dir[0]) if len(args.run_dir) == 1 else \
        compare_runs(args.run_dir, args.out)
    for path in paths:
        print(path)
    return 0


def _cmd_bench(args) -> int:
    from .compression import make_codec
    from .compression.bench import run_codec_bench
    from .compression.errors import CodecError

    for spec in args.codecs or ():
        make_codec(spec)  # an unknown codec is a one-line usage error before any work
    try:
        run_codec_bench(args.codecs, json=args.json)
    except CodecError as exc:  # a codec the bench's tensors overflow (quant:1e-9): the
        raise UsageError(str(exc)) from None  # user's spec to change, as a bad one is
    return 0


COMMANDS = {"cluster": _cmd_cluster, "node": _cmd_node, "keys": _cmd_keys,
            "topology": _cmd_topology,
            "plot": _cmd_plot, "bench": _cmd_bench}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # Ctrl-C and SIGTERM both run the launcher's clean shutdown.  SIGINT is set
    # explicitly: a shell starts background jobs with it ignored, and Python then
    # would not turn it into KeyboardInterrupt.
    signal.signal(signal.SIGINT, signals.handler)
    signal.signal(signal.SIGTERM, signals.handler)
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:  # one line, whatever a value in it holds (a path's newline)
        print("p2pfl: error: " + str(exc).replace("\r", "\\r").replace("\n", "\\n"),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # 128 + the signal, as a shell reports it
        signum = getattr(exc, "signum", signal.SIGINT)
        what = "terminated" if signum == signal.SIGTERM else "interrupted"
        out = getattr(exc, "out_dir", None)  # a cluster's summary of what was done
        print(f"p2pfl: {what}" + ("; all nodes stopped" if args.command == "cluster" else "")
              + (f"; results so far in {out}" if out else ""), file=sys.stderr)
        if out and getattr(exc, "quiet", False):
            with contextlib.suppress(OSError):  # a reader gone with the signal
                print(out)  # a quiet run's one line on stdout, as when it ends by itself
        return 128 + int(signum)
    except BrokenPipeError:
        os._exit(1)


def status(argv=None) -> int:
    """:func:`main`'s exit status, argparse's own exits (``--help``, ``--version``, a bad
    flag: 2) included; what the ``p2pfl`` command exits with."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)


def entry() -> None:
    """The ``p2pfl`` command: :func:`status`, then leave without the interpreter's teardown.

    By then the launcher has stopped every node, closed its sockets, removed its
    temporary files and written its results atomically, so nothing is left for
    exit handlers to do; tearing down an interpreter that loaded torch took 0.5–1 s
    of every run here (BENCHMARKS.md, start-up).  ``main`` itself returns normally,
    for callers in Python.
    """
    code = status()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
