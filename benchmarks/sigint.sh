#!/usr/bin/env bash
# How often a Ctrl-C is ignored: SIGINT an inproc ring:8 cluster N times, each once its
# first round is written, and count the runs still alive 10 s later.
#     bash benchmarks/sigint.sh [TREE] [N]     (TREE: a checkout, default .; its .venv is
#                                              used if it has one, else the python on PATH)
# Prints "stopped_by_first_sigint=K ignored=M". Runs in /tmp/p2pfl-sigint.
set -u
tree=${1:-.}; n=${2:-12}; out=/tmp/p2pfl-sigint
cd "$tree" || exit 2
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
lost=0; ok=0
for _ in $(seq 1 "$n"); do
  rm -rf "$out"
  python -m p2pfl.cli cluster --in-process --transport inproc --topology ring:8 \
      --rounds 50000 -q --out "$out" 2>/dev/null & p=$!
  while [ ! -s "$out/metrics.jsonl" ]; do sleep 0.2; done; sleep 1
  kill -INT $p
  for _ in $(seq 1 100); do kill -0 $p 2>/dev/null || break; sleep 0.1; done
  if kill -0 $p 2>/dev/null; then lost=$((lost+1)); kill -TERM $p; else ok=$((ok+1)); fi
  wait $p
done
echo "tree=$tree stopped_by_first_sigint=$ok ignored=$lost"
