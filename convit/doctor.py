"""Preflight: can this machine (or this SLURM profile) run a suite? ``python -m convit.doctor [SUITE] ...``.

Before a researcher spends GPU-days, one command checks what would otherwise fail hours in, or never fail
and only be slow: the torch build (CUDA runtime, arch list) against the NVIDIA driver and the visible GPUs'
compute capability, bf16, nccl, the datasets the suite needs, the profile's CPUs per task against the
DataLoader workers + 1, its GPUs per node against the scale's, its time limit (and requeues) against the
estimate, and whether the run and results folders are writable. Each finding is one line; the exit status
is 1 when any is a blocker, 0 otherwise (2 for a usage error).

Where it runs matters. Targeting SLURM (``--profile``), the GPUs of the machine doctor runs on (a login
node) are informational: the compute nodes decide, and the job itself refuses unusable GPUs in one line
(:mod:`convit.distributed`). Targeting this machine (``--cluster local``, the default without a profile),
a suite at a GPU scale (paper, reduced) without a usable GPU is a blocker.

``launch.py ... --check`` calls :func:`check` with the launch's own arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convit import distributed

__all__ = ["BLOCK", "INFO", "OK", "WARN", "Finding", "check", "main"]

OK, INFO, WARN, BLOCK = "ok", "info", "warn", "BLOCK"
#: compute capability of the GPUs a scale's cost model names (``Scale.device``)
_COSTED_ON = {"V100": (7, 0), "A100": (8, 0), "H100": (9, 0)}
_REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Finding:
    """One line of the report: ``level`` (ok, info, warn, BLOCK), what it is about, and what was found."""

    level: str
    topic: str
    text: str

    @property
    def blocker(self) -> bool:
        return self.level == BLOCK

    def __str__(self) -> str:
        return f"{self.level:5s} {self.topic}: {self.text}"


# ------------------------------------------------------------------------------------------------ machine
def _machine(facts: distributed.CudaFacts, *, need_gpu: bool, login_node: bool) -> list[Finding]:
    """torch build, driver, each visible GPU (capability vs arch list, bf16), nccl."""
    out: list[Finding] = []
    # locally, a GPU that is there but unusable stops training even at a CPU scale (convit.distributed
    # refuses to fall back silently); on a login node the compute nodes decide
    present = facts.available or bool(facts.devices)
    fail = INFO if login_node else BLOCK if need_gpu or present else INFO
    where = "login node: " if login_node else ""
    if facts.runtime is None:
        out.append(Finding(fail if need_gpu else INFO, "torch", f"{facts.torch_version}: a CPU-only build"))
    else:
        archs = " ".join(facts.arch_list) or "none"
        out.append(
            Finding(OK, "torch", f"{facts.torch_version}, CUDA runtime {facts.runtime}, arch list {archs}")
        )
    problem = distributed.cuda_problem(facts=facts)
    if facts.driver is not None:
        out.append(Finding(INFO, "driver", f"{where}NVIDIA driver for CUDA up to {facts.driver}"))
    for i, (name, cap) in enumerate(facts.devices):
        entry = distributed.kernel_for(cap, facts.arch_list)
        kernels = f"kernels {entry}" if entry else "no kernels in this build"
        bf16 = "bf16" if cap >= (8, 0) else "no native bf16"
        out.append(
            Finding(
                OK if entry else fail,
                "gpu",
                f"{where}GPU {i} {name}, capability {cap[0]}.{cap[1]}, {kernels}, {bf16}",
            )
        )
    if problem is None:
        out.append(Finding(OK, "cuda", f"{where}{len(facts.devices)} usable GPU(s)"))
    elif facts.devices or facts.driver is not None or need_gpu:
        out.append(Finding(fail, "cuda", where + problem))
    else:
        out.append(Finding(INFO, "cuda", "no NVIDIA GPU on this machine: CPU only"))
    import torch.distributed as dist

    nccl = dist.is_available() and dist.is_nccl_available()
    if facts.runtime is not None:
        out.append(
            Finding(OK if nccl else fail, "nccl", "available" if nccl else "this torch build has no nccl")
        )
    return out


# ------------------------------------------------------------------------------------------------ suite
def _load_specs(suite: str, scale: str) -> list[Any]:
    if str(_REPO) not in sys.path:  # experiments/ lives beside the package, not inside it
        sys.path.insert(0, str(_REPO))
    from experiments import load_suite

    return list(load_suite(suite).specs(scale))


def _data(specs: Sequence[Any], data_root: str | Path | None) -> list[Finding]:
    from convit import data

    names = sorted({s.data.name for s in specs})
    try:
        root = data.resolve_data_root(data_root)
    except data.DataError as exc:
        return [Finding(BLOCK, "data", f"{exc} (needed: {', '.join(names)})")]
    out = []
    for name in names:
        try:
            ready = data.is_prepared(name, root)
        except data.DataError as exc:
            out.append(Finding(BLOCK, "data", str(exc)))
            continue
        how = "--from /path/to/imagenet" if name == "imagenet" else "[--archives DIR]"
        out.append(
            Finding(OK, "data", f"{name} prepared under {root}")
            if ready
            else Finding(
                BLOCK, "data", f"{name} not prepared under {root}: python -m convit.data prepare {name} {how}"
            )
        )
    return out


def _resources(specs: Sequence[Any], scale: Any, facts: distributed.CudaFacts, cluster: str) -> list[Finding]:
    """GPUs the scale asks for against this machine (local target) or the profile (SLURM)."""
    gpu_scale = "cpu" not in scale.device.lower()
    nodes = max(s.resources.nodes for s in specs)
    gpus = max(s.resources.gpus_per_node for s in specs)
    out = []
    cap = next((c for key, c in _COSTED_ON.items() if key in scale.device), None)
    if gpu_scale and cap is not None and distributed.kernel_for(cap, facts.arch_list) is None:
        out.append(
            Finding(
                WARN,
                "torch",
                f"scale {scale.name} is costed on {scale.device} (capability {cap[0]}.{cap[1]}), which this "
                f"torch build has no kernels for: on such GPUs install a build whose arch list covers "
                f"sm_{cap[0]}{cap[1]} (README, Installing)",
            )
        )
    if cluster == "slurm":
        return out
    if nodes > 1:
        out.append(
            Finding(BLOCK, "gpus", f"scale {scale.name} needs {nodes} nodes: use --cluster slurm --profile")
        )
    usable = distributed.cuda_problem(facts=facts) is None
    if gpu_scale and not usable:
        out.append(
            Finding(
                BLOCK,
                "gpus",
                f"scale {scale.name} is costed on {scale.device} and this machine has "
                "no usable GPU: run it on SLURM (--cluster slurm --profile FILE) or pick scale cpu",
            )
        )
    elif usable and len(facts.devices) < gpus:
        out.append(
            Finding(
                WARN,
                "gpus",
                f"runs ask for {gpus} GPU(s) per node, {len(facts.devices)} visible: "
                "they run on fewer (same global batch, more accumulation)",
            )
        )
    amp_bf16 = any(s.recipe.amp == "bf16" for s in specs)
    if usable and amp_bf16 and any(cap < (8, 0) for _, cap in facts.devices):
        out.append(
            Finding(WARN, "bf16", "runs use bf16 autocast and a visible GPU has no native bf16 (< 8.0)")
        )
    return out


def _profile(specs: Sequence[Any], scale: Any, profile: Any, flops: float) -> list[Finding]:
    """The profile against the runs: CPUs per task, GPUs per node, time limit x attempts vs the estimate."""
    from convit import jobs
    from experiments.common import estimate_hours, run_name

    out = []
    need = jobs.cpus_needed([jobs.TrainJob(s, ".") for s in specs])
    if profile.cpus_per_gpu < need:
        out.append(
            Finding(
                BLOCK,
                "cpus",
                f"{profile.source} gives {profile.cpus_per_gpu} CPU(s) per task; the "
                f"runs use {need - 1} DataLoader workers and need {need} (workers + 1)",
            )
        )
    else:
        out.append(Finding(OK, "cpus", f"{profile.cpus_per_gpu} CPU(s) per task >= {need} (workers + 1)"))
    gpus = max(s.resources.gpus_per_node for s in specs)
    if profile.gpus_per_node == 0:
        level = BLOCK if "cpu" not in scale.device.lower() else INFO
        out.append(
            Finding(
                level, "gpus", f"{profile.source} has no GPUs; scale {scale.name} is costed on {scale.device}"
            )
        )
    elif profile.gpus_per_node < gpus:
        out.append(
            Finding(
                BLOCK,
                "gpus",
                f"runs ask for {gpus} GPUs per node, {profile.source} has {profile.gpus_per_node}",
            )
        )
    else:
        out.append(Finding(OK, "gpus", f"{gpus} GPU(s) per node <= the profile's {profile.gpus_per_node}"))
    if profile.timeout_min is None:
        out.append(Finding(INFO, "time", "the profile sets no time limit: the partition's default applies"))
        return out
    attempts = profile.max_requeues + 1
    allowed_h = profile.timeout_min * attempts / 60
    worst, worst_h = None, 0.0
    for spec in specs:
        wall_h = estimate_hours(spec, flops) / (spec.resources.nodes * spec.resources.gpus_per_node)
        if wall_h > worst_h:
            worst, worst_h = spec, wall_h
    if worst is not None and worst_h > allowed_h:
        out.append(
            Finding(
                BLOCK,
                "time",
                f"{run_name(worst)} needs ~{worst_h:.1f} h on {scale.device}; the "
                f"profile allows {profile.timeout_min} min x {attempts} attempts = {allowed_h:.1f} h "
                "(raise max_requeues)",
            )
        )
    elif worst is not None:
        jobs_needed = int(worst_h * 60 // profile.timeout_min) + 1
        out.append(
            Finding(
                OK,
                "time",
                f"longest run ~{worst_h:.1f} h: {jobs_needed} job(s) of {profile.timeout_min} "
                f"min, {attempts} allowed",
            )
        )
    return out


def _writable(label: str, folder: str | Path) -> Finding:
    """Whether a file can be created in ``folder`` (or, if it does not exist yet, in its nearest parent)."""
    path = Path(folder).expanduser().absolute()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return Finding(BLOCK, "folders", f"{label} {path}: {probe} is not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".convit-doctor-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return Finding(BLOCK, "folders", f"{label} {path} is not writable ({exc.strerror or exc})")
    made = "" if probe == path else f" (created on first use under {probe})"
    return Finding(OK, "folders", f"{label} {path} writable{made}")


# ------------------------------------------------------------------------------------------------ entry
def check(
    suite: str | None = None,
    scale: str = "cpu",
    profile: str | Path | Any | None = None,
    workdir: str | Path = "runs",
    results: str | Path = "results",
    *,
    data_root: str | Path | None = None,
    cluster: str | None = None,
    facts: distributed.CudaFacts | None = None,
) -> list[Finding]:
    """Every finding for running ``suite`` at ``scale`` (machine-only checks when ``suite`` is None).

    ``profile``: a YAML path or a loaded :class:`convit.jobs.Profile`; ``cluster`` defaults to ``slurm`` with
    a profile and ``local`` without. ``facts`` (tests) stands in for this process's CUDA facts.
    Never raises for a user mistake: an unknown suite or scale, a bad profile, is a blocker finding.
    """
    from convit import jobs

    cluster = cluster or ("slurm" if profile is not None else "local")
    facts = distributed.cuda_facts() if facts is None else facts
    out: list[Finding] = []
    loaded = None
    if isinstance(profile, (str, Path)):
        try:
            loaded = jobs.load_profile(profile)
        except jobs.ProfileError as exc:
            out.append(Finding(BLOCK, "profile", str(exc)))
    else:
        loaded = profile
    if cluster == "slurm" and profile is None:
        out.append(
            Finding(
                BLOCK, "profile", "--cluster slurm needs --profile FILE (see slurm/profiles/example.yaml)"
            )
        )
    specs, sc = [], None
    if suite is not None:
        try:
            specs = _load_specs(suite, scale)
            from experiments.common import get_scale

            sc = get_scale(scale)
        except ValueError as exc:  # SuiteError, ScaleError
            out.append(Finding(BLOCK, "suite", str(exc)))
        else:
            out.append(Finding(OK, "suite", f"{suite} at scale {scale}: {len(specs)} run(s)"))
    need_gpu = sc is not None and "cpu" not in sc.device.lower()
    out += _machine(facts, need_gpu=need_gpu, login_node=cluster == "slurm")
    if specs and sc is not None:
        out += _data(specs, data_root)
        out += _resources(specs, sc, facts, cluster)
        if loaded is not None:
            out += _profile(specs, sc, loaded, sc.flops_per_s)
    out.append(_writable("runs", workdir))
    out.append(_writable("results", results))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m convit.doctor [SUITE] [--scale S] [--profile FILE] [--cluster local|slurm] ...``"""
    parser = argparse.ArgumentParser(prog="python -m convit.doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", nargs="?", help="a suite of experiments/ (omit: check the machine only)")
    parser.add_argument("--scale", default="cpu", help="paper, reduced, cpu or smoke (default cpu)")
    parser.add_argument(
        "--profile", help="SLURM profile YAML (slurm/profiles/*.yaml): check it, target SLURM"
    )
    parser.add_argument(
        "--cluster", choices=("local", "debug", "slurm"), help="default: slurm with --profile"
    )
    parser.add_argument(
        "--workdir", default=os.environ.get("CONVIT_RUNS", "runs"), help="run directories root"
    )
    parser.add_argument("--results", default="results", help="collected CSVs root (default ./results)")
    parser.add_argument("--data-root", help="prepared datasets (default $CONVIT_DATA_ROOT)")
    args = parser.parse_args(argv)
    findings = check(
        args.suite,
        args.scale,
        args.profile,
        args.workdir,
        args.results,
        data_root=args.data_root,
        cluster=args.cluster,
    )
    for finding in findings:
        print(finding)
    blockers = sum(f.blocker for f in findings)
    print(f"{blockers} blocker(s)" if blockers else "no blockers")
    return 1 if blockers else 0


if __name__ == "__main__":
    sys.exit(main())
