"""The Python entry point: ``p2pfl.run_cluster(graph, **options)``.

plan → launch → rounds → summary: the options are read, the plan resolves and
validates everything before any process starts (:mod:`p2pfl.plan`), the
launcher runs the nodes, and the records and summary are written to the run
folder.  The CLI's ``p2pfl cluster`` is a thin layer over it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import tempfile
import threading
import time
from typing import TYPE_CHECKING

import numpy as np

from .addresses import check_run_addresses
from .config import RunConfig
from .config_files import named_by_file, with_sources
from . import signals
from .errors import ClusterError, UsageError
from .metrics import MetricsSink, write_json_atomic
from .model_files import remove_stale
from .plot import RUN_PNGS
from .progress import Progress
from .result import Result
from .round_end import RoundEnd
from .run_warnings import end_warnings
from .summary import run_summary

if TYPE_CHECKING:
    from .plan import Plan

__all__ = ["run_cluster", "plan_cluster", "Result", "execute"]


#: What an earlier run left in the folder and this one must not be taken for: a summary
#: (a run ending without its own would show the other's), a checkpoint (a
#: coordinator restarted before its first one would resume the other run), the node
#: table (a start that fails before any join would leave the other's) and the plots of
#: ``p2pfl plot`` (they would show the other run).
STALE_FILES = ("summary.json", "checkpoint.msgpack", "nodes.json") + RUN_PNGS
#: What a run writes in its folder (each must be a file it can write).
RUN_FILES = ("config.json", "metrics.jsonl", "nodes.json", "summary.json")


def _raise_if_failed(summary: dict, out: str, result) -> None:
    """ClusterError where the run could not finish: its coordinator failed (no round
    completes without it), or every node (in a server mode every worker) failed."""
    failed = summary.get("failed_nodes") or {}
    if summary.get("mode") != "gossip" and "coordinator" in failed:
        raise ClusterError(f"the coordinator failed; the run did not finish its rounds "
                           f"({failed['coordinator']}); results in {out}", result)
    workers = {k: v for k, v in failed.items() if k != "coordinator"}
    if workers and len(workers) == summary.get("nodes"):  # nodes: the workers there
        who, reason = next(iter(workers.items()))
        noun = "node" if summary.get("mode") == "gossip" else "worker"
        raise ClusterError(f"every {noun} failed ({noun} {who}: {reason}); results in {out}",
                           result)


def _out_dir(cfg: RunConfig) -> str:
    """The run folder, without an earlier run's :data:`STALE_FILES`; without ``out``, a
    new folder under ``runs/`` (two runs in one second get two)."""
    out = cfg.out
    try:
        if out is None:
            stem = os.path.join("runs", time.strftime("%Y%m%d-%H%M%S") + f"-{cfg.mode}")
            os.makedirs("runs", exist_ok=True)
            for k in range(1, 1000):
                out = stem if k == 1 else f"{stem}-{k}"
                try:
                    os.mkdir(out)
                    break
                except FileExistsError:
                    continue
        if os.path.exists(out) and not os.path.isdir(out):
            raise UsageError(f"cannot use output folder {out}: it is a file, not a folder")
        os.makedirs(out, exist_ok=True)
        for name in STALE_FILES:
            if os.path.exists(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
        remove_stale(out)  # models/node-ID.pt of an earlier run
        taken = [n for n in RUN_FILES if os.path.isdir(os.path.join(out, n))]
        if taken:
            raise UsageError(f"cannot use output folder {out}: {taken[0]} there is a folder")
        fd, probe = tempfile.mkstemp(dir=out, prefix=".p2pfl-probe-")  # writable?
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        where = out if out is not None else "runs"
        raise UsageError(f"cannot use output folder {where}: {exc.strerror or exc}") from None
    return out


def run_cluster(graph=None, *, config: str | None = None, on_round=None, **options) -> Result:
    """Run a gossip cluster over ``graph`` and return its :class:`Result`.

    Parameters
    ----------
    graph : networkx.Graph, str or None
        The topology: a graph, a file path or a generator spec such as
        ``"ring:8"``.  ``None`` takes ``topology`` from the options.
    config : str, optional
        A TOML file of options; keyword options override it.
    on_round : callable, optional
        Called as ``on_round(round, records)`` in the calling thread for each
        complete round, with a copy of that round's records as ``metrics.jsonl``
        has them: in gossip one a node, every node still running having recorded
        it; in a server mode the coordinator's, and the workers' that came before
        it.  It runs between the launcher's handling of messages (a Ctrl-C or
        SIGTERM stops the run in it too), and for the last rounds once the run is
        over.  Returning ``True`` (numpy's too) stops the run after that round, as
        ``target_accuracy`` does (``summary.json``: ``stop_requested_at_round``).
        An exception it raises, ``SystemExit`` included, stops the run too, and is
        raised again once the summary is written (``on_round_error``).
    **options
        Any option of :class:`~p2pfl.config.RunConfig` (the CLI's flags).
        ``model`` may also be any ``torch.nn.Module`` that maps a batch of
        the dataset's inputs to class logits; every node starts from a copy
        of its weights.

    Examples
    --------
    >>> import networkx as nx, p2pfl
    >>> res = p2pfl.run_cluster(nx.cycle_graph(4), rounds=3, quiet=True)  # doctest: +SKIP
    >>> res.summary["accuracy_mean"]  # doctest: +SKIP
    """
    if on_round is not None and not callable(on_round):
        raise UsageError(f"on_round must be a function of (round, records), got "
                         f"{type(on_round).__name__}")
    return _resolved(graph, config, options,
                     lambda p, t0: execute(p, t0=t0, on_round=on_round))


def plan_cluster(graph=None, *, config: str | None = None, **options):
    """Resolve and validate a run as :func:`run_cluster` would, and start nothing.

    Returns the :class:`~p2pfl.plan.Plan`: the frozen node specs (``specs``), the
    record that ``config.json`` would hold (``record``) and the lines a run prints at
    its start (``info``).  Raises what :func:`run_cluster` raises for bad options,
    before any process starts; it writes no file.  The plan is to look at: a model
    that is a module of yours is not kept for it, so run it with :func:`run_cluster`.
    """
    return _resolved(graph, config, options, lambda p, t0: p)


def _resolved(graph, config, options: dict, then):
    """``then(plan, t0)`` for the run that ``graph``, ``config`` and ``options`` give."""
    if graph is not None and options.get("topology") is not None:
        raise UsageError("a graph and topology= both give the topology; give one of them")
    if isinstance(graph, (str, os.PathLike)):
        options["topology"], graph = os.fspath(graph), None
    if options.get("model") is None:
        options.pop("model", None)  # the default, as for every other option
    module = options.get("model")
    if not isinstance(module, str) and module is not None:  # a torch.nn.Module of the user's
        from .models import register_module, release_module

        options["model"] = register_module(module)
    t0 = time.monotonic()
    try:
        cfg, sources = with_sources(config, options, graph=graph is not None)
        try:
            check_run_addresses(cfg)  # before the plan, the run folder or any process
            from .plan import plan  # after the options are checked: a bad flag costs no torch

            p = plan(cfg, graph)  # config.json says where its options came from
        except UsageError as exc:  # a value the file set is named by the file, not a flag
            named = named_by_file(exc, config, sources["file"])
            if named is exc:
                raise
            raise named from None
        return then(dataclasses.replace(p, record=dict(p.record, sources=sources)), t0)
    finally:  # forked nodes hold their own copy; the launcher keeps none after the run
        if not isinstance(module, str) and module is not None:
            release_module(options["model"])


def _with_checkpoint(p: Plan, out: str) -> Plan:
    """The coordinator checkpoints into the run folder (``checkpoint.msgpack``) where a
    new process of it can resume from it: under ``--restart``, or with ``--listen``,
    where a remote coordinator may be started again by hand.  Otherwise it writes none:
    two fsyncs of the whole state a round bought nothing (a full disk failed the run)."""
    if p.closer is None or (p.config.restart == "no" and not p.config.listen):
        return p
    path = os.path.abspath(os.path.join(out, "checkpoint.msgpack"))
    specs = tuple(dataclasses.replace(s, server=dataclasses.replace(s.server, checkpoint=path))
                  if s.id == p.closer else s for s in p.specs)
    return dataclasses.replace(p, specs=specs)


def _backend(cfg, log):
    """The placement backend of ``--backend ray``; None: processes of this machine."""
    if cfg.backend != "ray":
        return None
    from .ray_backend import RayBackend

    return RayBackend(cfg.ray_address, cfg.host, cfg.node_cpus, cfg.node_gpus, log=log,
                      forward_output=not cfg.quiet)


def execute(p: Plan, *, t0: float | None = None, on_round=None) -> Result:
    """Launch a plan's nodes, stream their records to the run folder, write summary.json.

    One direction for every mode: plan → launch → rounds → summary.  ``on_round``: the
    caller's, as :func:`run_cluster` takes it.  ``t0``
    (``time.monotonic()``) is when the run began, for ``wall_s``.
    """
    from .cluster import Launcher

    cfg, t0 = p.config, time.monotonic() if t0 is None else t0
    _check_modules(p)
    out = _out_dir(cfg)
    p = _with_checkpoint(p, out)
    progress = Progress(cfg.rounds, quiet=cfg.quiet)
    for line in p.info:
        progress.info(line)
    ends = RoundEnd(progress, nodes=len(p.specs), server=p.closer is not None,
                    target=cfg.target_accuracy, on_round=on_round,
                    stop=lambda: launcher.request_stop(), sent=lambda: sink.bytes_sent)

    halted = []  # a metrics.jsonl write failed while the run went on: it is stopped

    def on_write_error(exc):
        if not launcher.stopping:  # not ending already (its last rounds, a signal, ...)
            halted.append(exc)
            launcher.request_stop()

    try:  # before any node starts: a full disk is a usage error, as a folder not writable
        write_json_atomic(os.path.join(out, "config.json"), p.record)
        sink = MetricsSink(out, [s.id for s in p.specs], on_round=ends, closer=p.closer,
                           rounds=cfg.rounds, on_write_error=on_write_error)
    except OSError as exc:
        raise UsageError(f"cannot use output folder {out}: {exc.strerror or exc}") from None

    def on_message(handle, msg):
        if msg is None or msg.kind in ("bye", "error"):
            # a bye because the run is ending early: the rounds after it are not whole
            sink.node_gone(handle.id, stopped=msg is not None and msg.kind == "bye"
                           and launcher.stopping)
        elif msg.kind == "metrics":  # held records, the last one's model in a frame
            records = msg.meta.get("records")
            if not isinstance(records, list) or not records:
                return
            vec = np.frombuffer(msg.frames[0], "<f4") if msg.frames else None
            for i, rec in enumerate(records):
                if isinstance(rec, dict):
                    sink.add(rec, vec if i == len(records) - 1 else None)

    launcher = Launcher(list(p.specs), out, in_process=cfg.in_process, scheme=cfg.transport,
                        host=cfg.host, start_timeout=cfg.start_timeout,
                        round_timeout=cfg.round_timeout, on_message=on_message,
                        lost_after=cfg.lost_after,
                        log=progress.info, notice=progress.notice, between=ends.run_due,
                        listen=cfg.listen, closer=p.closer,
                        restarts=p.restarts, on_restart=lambda h: h.id == p.closer or
                        sink.node_paused(h.id), keys=p.keys, procs=cfg.procs or 1,
                        backend=_backend(cfg, progress.info))
    interrupted, refused = None, False
    try:
        with _signals_unwind() as launcher.watch_signals:
            nodes = launcher.run()
            ends.run_due(ended=True)  # the last rounds' on_round
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the summary of what was done
        interrupted, nodes = exc, launcher.nodes
    except UsageError:  # refused before any node started (a Ray cluster too small, ...)
        refused = True
        raise
    finally:
        sink.close()
        progress.close()
        if refused:  # no run happened: none of its files is left (an earlier run's summary,
            # checkpoint and node table went as the folder was taken)
            for name in ("config.json", "metrics.jsonl"):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(out, name))
        elif any(h.pid is not None for h in launcher.nodes.values()):  # some joined
            launcher.write_nodes_json()  # interrupted too: no node is left "ready" there
    summary = run_summary(p, sink, nodes, time.monotonic() - t0, launcher.control_bytes,
                          launcher.dropped)
    summary.update(ends.summary())
    summary["interrupted"] = interrupted is not None
    if cfg.save_models:
        summary["models_saved"] = saved = launcher.models_saved
        expected = sum(s.role != "coordinator" for s in p.specs)
        if saved < expected:  # each missing one's output says why (failed, not sendable)
            progress.info(f"models saved for {saved} of {expected} nodes "
                          f"({os.path.join(out, 'models')})")
    lost = sink.write_error or launcher.write_error
    summary["write_error"] = _os_error_text(lost) if lost else None
    summarised = True
    try:
        write_json_atomic(os.path.join(out, "summary.json"), summary)
    except OSError as exc:  # the caller's copy says so
        lost, summarised = lost or exc, False
        summary["write_error"] = _os_error_text(lost)
    if interrupted is not None:  # the command still says where the summary is
        interrupted.out_dir, interrupted.quiet = (out if summarised else None), cfg.quiet
        raise interrupted
    if ends.error is not None:
        raise ends.error
    result = Result(summary, out, cfg)
    if lost is not None:
        raise ClusterError(_unwritten(out, lost, bool(halted), summarised, sink.written),
                           result)
    _raise_if_failed(summary, out, result)
    for line in end_warnings(summary):
        progress.info(line)
    if summary["accuracy_mean"] is not None:
        progress.info(f"accuracy mean {summary['accuracy_mean']:.4f} (min "
                      f"{summary['accuracy_min']:.4f}) | {summary['bytes_sent_total'] / 1e6:.2f}"
                      f" MB sent | {summary['wall_s']:.1f} s")
    progress.info(f"results in {out}")
    return result


def _check_modules(p: Plan) -> None:
    """A plan of :func:`plan_cluster` does not keep a module of the caller's: run, its
    nodes would fail one by one (``unknown model 'custom:0'``)."""
    from .models import CUSTOM

    if any(s.learn.model.startswith("custom:") and s.learn.model not in CUSTOM
           for s in p.specs):
        raise UsageError("the plan's model is a module of yours, which plan_cluster does not "
                         "keep: run it with run_cluster(model=module, ...)")


def _os_error_text(exc: OSError) -> str:
    return f"{exc.filename or 'a file'}: {exc.strerror or exc}"


def _unwritten(out: str, exc: OSError, stopped: bool, summarised: bool, written: int) -> str:
    """Why a run's results are not all written: what failed, whether the run was
    stopped for it, and what the folder holds."""
    stopped_for = "; the run was stopped" if stopped else ""
    have = "summary.json and " if summarised else ""
    return (f"cannot write the run's results ({_os_error_text(exc)}){stopped_for}; {out} "
            f"holds {have}at least the first {written} records")


@contextlib.contextmanager
def _signals_unwind():
    """SIGTERM and Ctrl-C unwind a run (nodes stopped, a summary written), in the main
    thread, where nobody else handles them: :mod:`~p2pfl.signals`, so that a signal
    is not lost where Python cannot raise.  The old handlers are put back."""
    ours = {signal.SIGTERM: (signal.SIG_DFL, signals.handler),
            signal.SIGINT: (signal.default_int_handler, signals.handler)}
    old: dict = {}
    if threading.current_thread() is not threading.main_thread():
        yield False  # signals reach the main thread only: this run does not watch them
        return
    try:
        for sig, free in ours.items():
            if signal.getsignal(sig) in free:
                old[sig] = signal.getsignal(sig)
                signal.signal(sig, signals.handler)
        yield bool(old)
    except KeyboardInterrupt as exc:
        mine = signals.standing_for(exc) if old else exc
        if mine is exc:
            raise
        raise mine from None
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if old:
            signals.clear()
