# The README's two commands: `make run` (the main job, a real small experiment on this machine) and
# `make test` (the test suite). Both install what they need first, so they work on a fresh machine.
#
# Machine facts come from the environment, never from the code:
#   CONVIT_DATA_ARCHIVES  folder with the offline dataset archives (our machines: ../shared/datasets)
#   CONVIT_DATA_ROOT      where prepared datasets live (default here: ./data, git-ignored)
#   CONVIT_RUNS           where run directories live (default: ./runs, git-ignored)

PYTHON ?= python3
export CONVIT_DATA_ARCHIVES ?= $(abspath ../shared/datasets)
export CONVIT_DATA_ROOT ?= $(abspath data)
SUITE ?= sample_efficiency
SCALE ?= cpu
# local runs at once: two one-thread runs use 2 cores better than one two-thread run (~2x vs ~1.45x)
PARALLEL ?= 2

.PHONY: install run test slurm slurm-multinode lint bench-gpu gpu-check

install:
	$(PYTHON) -m pip install -q -e ".[dev]"

run: install
	$(PYTHON) -m convit.data prepare cifar10
	$(PYTHON) experiments/launch.py $(SUITE) --scale $(SCALE) --parallel $(PARALLEL)

# The SLURM integration tests need a real single-node cluster; slurm/cluster.sh starts one (root, Debian).
# Where it cannot start (a laptop without root), those tests skip with a reason; CI (CI=true) requires it.
slurm:
	@if [ "$$CI" = "true" ]; then bash slurm/cluster.sh start; \
	else bash slurm/cluster.sh start || echo "SLURM test cluster not started: SLURM tests will be skipped"; fi

# The 2-node tests (tests/test_slurm_multinode.py) need slurm/multinode.sh's cluster: two slurmd, each in its own
# network namespace (root, Linux), independent of the single-node one. The same rule: skipped, or required in CI.
slurm-multinode:
	@if [ "$$CI" = "true" ]; then bash slurm/multinode.sh start; \
	else bash slurm/multinode.sh start || echo "2-node SLURM test cluster not started: its tests will be skipped"; fi

test: install slurm slurm-multinode
	$(PYTHON) -m pytest -q -ra

lint:
	$(PYTHON) -m ruff check . && $(PYTHON) -m ruff format --check .

# Issue 6's GPU measurements in one go (a CUDA GPU; ~10 min): the paired ratios and peak memory against the
# targets (ConViT-S >= 0.80x DeiT-S and >= 1.5x timm's convit_small in training, peak training memory <= 1.15x
# DeiT-S; torch.compile no slower). The CSVs land in results/bench/.
BENCH_GPU = $(PYTHON) -m convit.bench --device cuda --dtype bf16 --batch 128 --rounds 10
bench-gpu: install
	mkdir -p results/bench
	$(BENCH_GPU) --models convit_small,deit_small,timm:convit_small --csv results/bench/gpu-small.csv
	$(BENCH_GPU) --models convit_tiny,deit_tiny,timm:convit_tiny --csv results/bench/gpu-tiny.csv
	$(BENCH_GPU) --models convit_small+compile,convit_small,deit_small+compile,deit_small \
		--reference convit_small,deit_small --csv results/bench/gpu-small-compile.csv

# Issue 15's GPU acceptance check (one CUDA GPU, < 8 min): bf16 and fp16 smoke training (finite loss, checkpoint,
# resume, NaN guard), eval-only, torch.compile on/off, the benchmark targets above, the loader at the reduced
# scale; report in results/bench/gpu-check.md (+ .json), each step pass / fail / skip with its numbers.
# ARCHIVES: a folder with fixtures/ (and tiny-imagenet-200/ for the loader step). No install prerequisite: a GPU
# machine may be offline, and the check runs from the working tree.
ARCHIVES ?= $(CONVIT_DATA_ARCHIVES)
gpu-check:
	$(PYTHON) -m convit.gpucheck --device cuda --archives $(ARCHIVES) --out results/bench
