"""Eval-only jobs (``experiments/evaluate.py``): the engine's numbers, one device, atomic files.

Real runs on the CIFAR-10 fixture: the engine trains a tiny ConViT, then the eval job evaluates its final
checkpoint through the launcher's own ``eval_spec``; a 2-process gloo evaluation shares the validation set.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from convit import checkpoint, train
from convit.spec import DataSpec, ModelSpec, ProbeSpec, RecipeSpec, ResourceSpec, RunSpec
from experiments import evaluate as evaluate_mod
from experiments import main_table, masking
from experiments.common import eval_spec, is_eval

TINY = {"patch_size": 8, "depth": 2, "local_up_to_layer": 1, "num_heads": 4, "head_dim": 8}


def train_spec() -> RunSpec:
    """One epoch (6 steps at batch 32) with bf16 asked for: fp32 on this CPU, in training and evaluation."""
    return RunSpec(
        model=ModelSpec("convit_tiny", dict(TINY)),
        data=DataSpec("cifar10-fixture", img_size=32),
        recipe=RecipeSpec(epochs=1, warmup_epochs=1.0, batch_size=32, amp="bf16", repeated_aug=False),
        resources=ResourceSpec(workers=1),
        probes=ProbeSpec(every=0),
        tags={"suite": "test", "scale": "smoke", "variant": "tiny"},
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fixture_data_root) -> Path:
    workdir = tmp_path_factory.mktemp("trained") / "run"
    train.run(train_spec(), workdir, data_root=fixture_data_root, device="cpu")
    return workdir


def test_eval_job_reproduces_the_engines_last_validation_exactly(tmp_path, trained, fixture_data_root):
    last = json.loads((trained / "metrics.jsonl").read_text().splitlines()[-1])
    spec = eval_spec(train_spec(), suite="test", variant="tiny-eval", checkpoint="run:tiny")
    workdir = tmp_path / "eval"
    result = evaluate_mod.EvalJob(spec, workdir, trained / checkpoint.CHECKPOINT, fixture_data_root)()
    # one evaluation function, one batch size, one precision rule: the same numbers, bit for bit on CPU
    assert (result["top1"], result["top5"], result["loss"]) == (
        last["val_top1"],
        last["val_top5"],
        last["val_loss"],
    )
    assert json.loads((workdir / "result.json").read_text()) == result
    assert json.loads((workdir / "spec.json").read_text()) == spec.to_dict()
    env = json.loads((workdir / "env.json").read_text())
    assert env["numerics"]["amp"]["used"] == "none" and env["world_size"] == 1
    assert sorted(p.name for p in workdir.iterdir()) == ["env.json", "result.json", "spec.json"]  # no temps
    again = evaluate_mod.evaluate(spec, workdir, trained / checkpoint.CHECKPOINT, fixture_data_root)
    assert again == result  # done: read back, not re-evaluated
    with pytest.raises(RuntimeError, match="holds another spec"):
        evaluate_mod.evaluate(replace(spec, seed=1), workdir, trained / checkpoint.CHECKPOINT)


def test_eval_entries_ask_for_one_device_at_every_scale():
    """At paper scale the masking and released-weights entries inherited 2 nodes x 8 GPUs from their training
    spec: 16 tasks, each running the whole evaluation. Elsewhere nothing changes (same digests)."""
    for module in (masking, main_table):
        for scale in ("paper", "reduced", "cpu", "smoke"):
            for spec in module.specs(scale):
                if is_eval(spec):
                    assert (spec.resources.nodes, spec.resources.gpus_per_node) == (1, 1), spec.tags
    base = main_table.train_spec("paper", "convit", "base")
    assert (base.resources.nodes, base.resources.gpus_per_node) == (2, 8)
    entry = eval_spec(base, suite="x", variant="v", checkpoint="run:v")
    assert (entry.resources.nodes, entry.resources.gpus_per_node) == (1, 1)
    assert replace(entry.resources, nodes=2, gpus_per_node=8) == base.resources  # only the device count
    small = main_table.train_spec("cpu", "convit", "tiny")
    assert eval_spec(small, suite="x", variant="v", checkpoint="run:v").resources == small.resources


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _eval_worker(rank: int, port: int, spec_json: str, workdir: str, ckpt: str, root: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    os.environ["LOCAL_RANK"] = str(rank)
    writes: list[str] = []
    real = checkpoint.write_text_atomic

    def recording(path, text):
        writes.append(Path(path).name)
        return real(path, text)

    checkpoint.write_text_atomic = recording  # every JSON of the run directory goes through it
    result = evaluate_mod.evaluate(RunSpec.from_json(spec_json), workdir, ckpt, root, device="cpu")
    Path(workdir, f"rank{rank}.json").write_text(json.dumps({"result": result, "writes": writes}))


@pytest.mark.slow
def test_several_tasks_share_one_evaluation_and_rank_0_writes(tmp_path, trained, fixture_data_root):
    spec = eval_spec(train_spec(), suite="test", variant="tiny-eval", checkpoint="run:tiny")
    single = evaluate_mod.evaluate(spec, tmp_path / "one", trained / checkpoint.CHECKPOINT, fixture_data_root)
    workdir = tmp_path / "two"
    mp.start_processes(
        _eval_worker,
        args=(
            _free_port(),
            spec.to_json(),
            str(workdir),
            str(trained / "checkpoint.pth"),
            str(fixture_data_root),
        ),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    ranks = [json.loads((workdir / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["writes"] == ["spec.json", "env.json", "result.json"] and ranks[1]["writes"] == []
    for got in (r["result"] for r in ranks):
        assert got["world_size"] == 2
        assert (got["top1"], got["top5"]) == (single["top1"], single["top5"])  # each image counted once
        assert got["loss"] == pytest.approx(single["loss"], rel=1e-6)
    assert json.loads((workdir / "result.json").read_text()) == ranks[0]["result"]


def test_json_files_are_replaced_whole(tmp_path):
    path = tmp_path / "result.json"
    checkpoint.write_json_atomic(path, {"a": 1})
    checkpoint.write_json_atomic(path, {"b": [1, 2]})
    assert json.loads(path.read_text()) == {"b": [1, 2]} and path.read_text().endswith("\n")
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_the_engine_forks_its_eval_workers_once(tmp_path, fixture_data_root, monkeypatch):
    """Three evaluations with a loader worker: the validation loader starts its worker processes once (it
    used to be rebuilt, forking ``workers`` processes, at every evaluation)."""
    from torch.utils.data import dataloader

    started: list[int] = []
    real_init = dataloader._MultiProcessingDataLoaderIter.__init__

    def counting_init(self, loader):
        started.append(loader.num_workers)  # each multi-process iterator forks num_workers processes
        real_init(self, loader)

    monkeypatch.setattr(dataloader._MultiProcessingDataLoaderIter, "__init__", counting_init)
    spec = replace(
        train_spec(),
        data=DataSpec("cifar10-fixture", img_size=32, fraction=0.5),
        recipe=replace(train_spec().recipe, epochs=3),
    )
    train.run(spec, tmp_path / "run", data_root=fixture_data_root, device="cpu")
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert all("val_top1" in json.loads(line) for line in lines) and len(lines) == 3
    assert started == [1, 1]  # the training loader and the validation loader, once each
