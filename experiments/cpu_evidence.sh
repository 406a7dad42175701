#!/usr/bin/env bash
# The cpu-scale evidence of issue 20, in the order the headline claims need it. Resumable: rerun the same
# command after a reboot or a new session and the launcher skips finished runs and resumes the others.
#
#   CONVIT_RUNS=$HOME/convit-runs CONVIT_DATA_ROOT=$HOME/convit-data \
#       nohup nice -n 10 bash experiments/cpu_evidence.sh > $HOME/convit-runs/cpu_evidence.log 2>&1 &
#
# Order: sample efficiency (T2-smallest and T2-shrink need f = 0.05 and f = 1: those four runs per seed go
# first, seed 0 then seed 1, two at a time). Seven of them make pairs; the eighth (ConViT-Ti f = 0.05 seed 1)
# trains in one single-thread lane, then that lane trains the f = 0.5 pair of seed 0, while the other core runs
# the gating-budget measurement (ConViT-Ti at f = 1 with 2x the images: does sigma(lambda) move by the gate's
# 0.1 with more training? experiments/cpu_budget.py) and then the f = 0.5 pair of seed 1. Then the other
# fractions, Table 3 at 10% data, then the masking tables (eval only: they read sample_efficiency's f = 1
# checkpoints) and locality (no training: the same runs' probes). Each launch collects its CSVs into results/
# when it ends; commit them after every batch (the budget run's:
# python experiments/cpu_budget.py --collect results/cpu_budget).
#
# Cost, measured on this 2-core machine with two runs side by side (~80 img/s each when nothing else runs):
# ~1.7 h per sample-efficiency run (5e5 images), ~8.5 h per seed for the suite; Table 3's Ti+ rows are
# slower per image (128 wide, half batch).
set -u
export CONVIT_RUNS
: "${CONVIT_RUNS:?set CONVIT_RUNS to a folder outside the checkout (run directories resume from there)}"
cd "$(dirname "$0")/.."
launch() { python experiments/launch.py "$@" --scale cpu --seeds 2 --parallel 2; }

# one thread each: the launcher sets OMP_NUM_THREADS only for --parallel > 1, and 2 + 1 threads on 2 cores fight
lane() { OMP_NUM_THREADS=1 python experiments/launch.py sample_efficiency --scale cpu --seeds 2 --parallel 1 "$@"; }

launch sample_efficiency --only 'convit-s0-*,deit-s0-*,*-f0.05-s0-*,*t-s1-*,deit-f0.05-s1-*'
(python experiments/cpu_budget.py --family convit --strength none --images 2; lane --only '*-f0.5-s1-*') &
lane --only 'convit-f0.05-s1-*'
lane --only '*-f0.5-s0-*'
wait
launch sample_efficiency
launch ablations --only 'table3-*-f0.1-*'
launch masking
launch locality
