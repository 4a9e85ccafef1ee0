"""What the run benchmarks share: a run's records, a checkout's commit, and a results
file of entries that a re-run of the same case replaces (written atomically)."""

from __future__ import annotations

import json
import os
import subprocess


def records(out: str) -> list:
    """The complete lines of ``out``/metrics.jsonl so far (none before it exists)."""
    try:
        with open(os.path.join(out, "metrics.jsonl")) as fh:
            return [json.loads(line) for line in fh if line.endswith("\n")]
    except OSError:
        return []


def coordinator_rounds(recs: list) -> int:
    """The rounds a server run's coordinator has recorded, in ``recs``."""
    return sum(r.get("role") == "coordinator" for r in recs)


def commit_of(tree: str, dirty: bool = False) -> str:
    """The short commit a checkout is at; with ``dirty``, and ``+`` after it when a
    tracked file has uncommitted changes."""
    def git(*args) -> str:
        return subprocess.run(["git", *args], cwd=tree, text=True,
                              capture_output=True).stdout
    changed = dirty and git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short", "HEAD").strip() + ("+" if changed else "")


def round_span(recs: list, first: int, last: int) -> tuple[float, dict]:
    """Seconds from the end of round ``first`` to the end of round ``last`` (a round
    ends with its last node's ``wall_s``), and each node's ``process_cpu_s`` spent
    between its records of those two rounds."""
    end, cpu = {}, {}
    for r in recs:
        end[r["round"]] = max(end.get(r["round"], 0.0), r["wall_s"])
        cpu[(r["node"], r["round"])] = r["process_cpu_s"]
    nodes = {n for n, _ in cpu}
    return end[last] - end[first], {n: cpu[(n, last)] - cpu[(n, first)] for n in nodes}


def save_entry(path: str, entry: dict, key: tuple) -> None:
    """Add ``entry`` to the JSON list at ``path``, replacing those equal on ``key``."""
    old = []
    if os.path.exists(path):
        with open(path) as fh:
            old = json.load(fh)
    old = [e for e in old if tuple(e.get(k) for k in key) != tuple(entry[k] for k in key)]
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(old + [entry], fh, indent=1)
    os.replace(tmp, path)


def tree_args(doc: str, repeats: int = 3):
    """``--tree TREE`` (a checkout whose code to measure; this one by default, made
    absolute) and ``--repeats N``, for a benchmark that compares commits."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--tree", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--repeats", type=int, default=repeats)
    args = ap.parse_args()
    args.tree = os.path.abspath(args.tree)
    return args


def write_results(name: str, data: dict) -> None:
    """``data`` as ``benchmarks/results/NAME``, written atomically; says where."""
    from p2pfl.atomic import write_json_atomic

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", name)
    write_json_atomic(path, data)
    print(f"wrote {path}")


def save_by_commit(name: str, commit: str, entry: dict) -> None:
    """Set ``benchmarks/results/NAME`` (a JSON object keyed by commit) at ``commit`` to
    ``entry``, keeping the other commits' entries; written atomically."""
    from p2pfl.atomic import write_json_atomic

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", name)
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        data = {}
    data[commit] = entry
    write_json_atomic(path, data)


def spread(values: list) -> tuple:
    """(median, least, most) of ``values``: the middle one of an odd count, the upper
    middle of an even one (a measured value, never an average of two)."""
    ordered = sorted(values)
    return ordered[len(ordered) // 2], ordered[0], ordered[-1]


def summarize(path: str, tree: str, runs: list, what: str, case: dict,
              extra: dict | None = None) -> None:
    """Print the median and spread of ``runs``' ``seconds`` (``what`` says of what), and
    save ``{tree, commit, **case, **extra, median_s, runs}`` to ``path``, replacing the
    entry of the same tree, commit and ``case``."""
    commit = commit_of(tree)
    mid, lo, hi = spread([r["seconds"] for r in runs])
    said = ", ".join(f"{k} {v}" for k, v in case.items())
    print(f"{commit}{f' ({said})' if said else ''}: {what} {mid:.2f} s (median of "
          f"{len(runs)}, {lo:.2f}-{hi:.2f})")
    entry = {"tree": tree, "commit": commit, **case, **(extra or {}), "median_s": mid,
             "runs": runs}
    save_entry(path, entry, ("tree", "commit", *case))


def end_all(procs) -> None:
    """Kill each process of ``procs`` that still runs (resumed first, if it was stopped),
    and reap it."""
    import signal

    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
        p.wait()


def run_paused(proc, out: str, label, ready, pause: float) -> None:
    """The run ``proc`` (writing to ``out``) to its end, with node ``label`` stopped
    (SIGSTOP) for ``pause`` seconds once ``ready(records)``; RuntimeError with its stderr
    if it fails."""
    import signal
    import time

    try:
        while not ready(records(out)):
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read())
            time.sleep(0.02)
        with open(os.path.join(out, "nodes.json")) as fh:
            pid = next(n["pid"] for n in json.load(fh) if n["label"] == label)
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(pause)
        finally:
            os.kill(pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    if proc.returncode != 0:
        raise RuntimeError(err)


def repeat_cases(prefix: str, args, cases: dict, out: str) -> dict:
    """Run each of ``cases`` (name -> ``run(tree, work)``, returning a dict) ``args.repeats``
    times on the code of ``args.tree``, in a scratch folder, printing each result; save
    the entry (tree, commit, results by case) in ``out``, replacing one of the same tree
    and commit."""
    import shutil
    import tempfile

    work = tempfile.mkdtemp(prefix=prefix)
    entry = {"tree": args.tree, "commit": commit_of(args.tree, dirty=True), "cases": {}}
    try:
        for name, run in cases.items():
            results = entry["cases"].setdefault(name, [])
            for _ in range(args.repeats):
                results.append(run(args.tree, work))
                print(name, json.dumps(results[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save_entry(out, entry, ("tree", "commit"))
    return entry
