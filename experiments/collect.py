"""Gather a suite's run directories into tidy CSVs under ``results/SUITE/`` (ARCHITECTURE.md, Results).

* ``SCALE.csv``: one row per run of the suite (any seed): its run directory here, else the row already
  collected (on another machine, say: ``collect`` keeps it rather than erase it), in the order of the
  suite's specs, then by seed: the documented columns, then ``status`` (done / incomplete), ``paper_top1``
  and the suite's other tags (``row``, ``gpsa_layers``, ``intervention`` ...). Metrics are empty for
  incomplete runs. Suites with distilled runs also get ``teacher_sha256``: the digest of the teacher file
  the run actually read (from its ``env.json``), since the spec names the teacher file only and two files
  of one name are not one teacher.
* ``SCALE_curves.csv``: ``run, epoch, train_loss, lr, val_top1, val_top5, val_loss`` from ``metrics.jsonl``.
* ``SCALE_locality.csv``: ``run, epoch, layer, head, nonlocality, gate_sigma, centre_distance``; ``layer`` is
  the block index; gate_sigma and centre_distance exist for the GPSA blocks (the first ones) only.

A run belongs to a suite when its ``spec.json`` equals one of the suite's specs up to the seed, so shared runs
(``locality`` reuses ``main_table``'s) are collected by every suite that lists them.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from convit.spec import RunSpec
from experiments.common import run_name

__all__ = [
    "CURVE_COLUMNS",
    "LOCALITY_COLUMNS",
    "RUN_COLUMNS",
    "collect",
    "collected_done",
    "read_csv",
    "run_dir",
]

RUN_COLUMNS = [
    "suite", "scale", "run", "model", "variant", "dataset", "fraction", "num_classes", "img_size", "seed",
    "epochs", "top1", "top5", "loss", "params", "wall_time_s", "world_size",
]  # fmt: skip
CURVE_COLUMNS = ["run", "epoch", "train_loss", "lr", "val_top1", "val_top5", "val_loss"]
LOCALITY_COLUMNS = ["run", "epoch", "layer", "head", "nonlocality", "gate_sigma", "centre_distance"]
_TAG_SKIP = {"suite", "scale", "variant"}


def run_dir(workdir: str | Path, spec: RunSpec) -> Path:
    """``<workdir>/<home suite>/<scale>/<run name>``: the home suite is the spec's ``suite`` tag."""
    return Path(workdir) / str(spec.tags["suite"]) / str(spec.tags["scale"]) / run_name(spec)


def _homes(specs: list[RunSpec]) -> list[tuple[str, str]]:
    """The (home suite, scale) folders the runs of ``specs`` live in (shared runs live in their home's)."""
    return sorted({(str(s.tags["suite"]), str(s.tags["scale"])) for s in specs})


def _key(spec_dict: dict[str, Any]) -> str:
    return json.dumps({**spec_dict, "seed": 0}, sort_keys=True)


def _num_classes(spec: RunSpec) -> int | None:
    if spec.data.num_classes is not None:
        return spec.data.num_classes
    try:
        from convit.data import dataset_info

        return dataset_info(spec.data.name).num_classes
    except Exception:  # noqa: BLE001 - a dataset unknown to this checkout still gets a row
        return None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by a crash mid-write
    return rows


def _read_json(path: Path) -> dict[str, Any]:
    """A run's JSON file as a dict; {} when missing or unreadable (a run stopped before writing it)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def _write(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _cell(row.get(c)) for c in columns})
    tmp.replace(path)


def collect(suite: str, scale: str, specs: list[RunSpec], workdir: str | Path, results: str | Path) -> Path:
    """Write the three CSVs of ``suite`` at ``scale`` from the run directories of ``specs``, keeping the rows
    already in ``results`` of the suite's runs that this workdir does not hold.

    Why keep them: a suite's runs are often trained on several machines (or a machine that was replaced),
    and collecting on one of them must not erase what another one collected and committed. A kept row
    still has to be one of the suite's runs (its name is the run name of a spec at the row's seed), so a run
    whose spec changed (a new digest) drops out. A run directory here wins over a committed row of the same
    name unless only the committed one finished (the run is being trained again here). To forget a run,
    delete its rows from the CSVs.
    """
    order = {_key(s.to_dict()): i for i, s in reversed(list(enumerate(specs)))}
    found: list[tuple[int, int, str, RunSpec, Path]] = []
    for home, sc in _homes(specs):
        folder = Path(workdir) / home / sc
        if not folder.is_dir():
            continue
        for d in sorted(folder.iterdir()):
            spec_path = d / "spec.json"
            if not spec_path.is_file():
                continue
            try:
                spec = RunSpec.from_json(spec_path.read_text())
            except Exception:  # noqa: BLE001 - a foreign or corrupt directory is not ours to report
                continue
            index = order.get(_key(spec.to_dict()))
            if index is None:
                continue
            found.append((index, spec.seed, d.name, spec, d))

    runs: dict[str, dict[str, Any]] = {}
    curves: dict[str, list[dict[str, Any]]] = {}
    locality: dict[str, list[dict[str, Any]]] = {}
    rank: dict[str, tuple[int, int, str]] = {}
    tag_columns: list[str] = []
    for index, seed, name, spec, d in found:
        rank[name] = (index, seed, name)
        runs[name], curves[name], locality[name] = _from_run_dir(suite, scale, name, spec, d, tag_columns)

    out = Path(results) / suite
    committed_header, committed = read_csv(out / f"{scale}.csv")
    kept = set()
    names_at: dict[int, dict[str, int]] = {}  # seed -> {run name of a spec at that seed: spec index}
    for row in committed:
        name = row.get("run", "")
        if name in runs and (runs[name]["status"] == "done" or row.get("status") != "done"):
            continue  # here is newer, unless only the committed copy finished (a rerun in progress here)
        try:
            seed = int(row.get("seed", ""))
        except ValueError:
            continue
        if seed not in names_at:
            names_at[seed] = {}
            for i, spec in reversed(list(enumerate(specs))):
                names_at[seed][run_name(dataclasses.replace(spec, seed=seed))] = i
        index = names_at[seed].get(name)
        if index is not None:
            rank[name], runs[name] = (index, seed, name), row
            curves[name], locality[name] = [], []
            kept.add(name)
    if kept:
        for c in committed_header[len(RUN_COLUMNS) :]:
            if c not in ("status", "teacher_sha256") and c not in tag_columns:
                tag_columns.append(c)
        for table, path in ((curves, out / f"{scale}_curves.csv"), (locality, out / f"{scale}_locality.csv")):
            for row in read_csv(path)[1]:
                if row.get("run") in kept:
                    table.setdefault(row["run"], []).append(row)
        print(f"[collect] kept {len(kept)} run(s) of {out / f'{scale}.csv'} that {workdir} does not hold")

    names = sorted(runs, key=lambda n: rank[n])
    extra = ["status"] + sorted(tag_columns, key=lambda c: (c != "paper_top1", c))
    extra += ["teacher_sha256"] if any(runs[n].get("teacher_sha256") for n in names) else []
    _write(out / f"{scale}.csv", RUN_COLUMNS + extra, [runs[n] for n in names])
    _write(out / f"{scale}_curves.csv", CURVE_COLUMNS, [r for n in names for r in curves.get(n, [])])
    _write(out / f"{scale}_locality.csv", LOCALITY_COLUMNS, [r for n in names for r in locality.get(n, [])])
    return out / f"{scale}.csv"


def collected_done(results: str | Path, specs: list[RunSpec]) -> set[str]:
    """The names of those of ``specs`` whose row in ``results`` (their home suite's CSV) says done."""
    done: set[str] = set()
    for home, sc in _homes(specs):
        rows = read_csv(Path(results) / home / f"{sc}.csv")[1]
        done |= {r["run"] for r in rows if r.get("status") == "done"}
    return done & {run_name(s) for s in specs}


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of a CSV collected earlier (none when there is no such file)."""
    if not path.is_file():
        return [], []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _from_run_dir(
    suite: str, scale: str, name: str, spec: RunSpec, d: Path, tag_columns: list[str]
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """One run directory's row, curve rows and locality rows (``tag_columns`` gains its tags)."""
    result = _read_json(d / "result.json")
    row: dict[str, Any] = {
        "suite": suite,
        "scale": scale,
        "run": name,
        "model": spec.model.name,
        "variant": spec.tags.get("variant"),
        "dataset": spec.data.name,
        "fraction": spec.data.fraction,
        "num_classes": _num_classes(spec),
        "img_size": spec.data.img_size,
        "seed": spec.seed,
        "epochs": result.get("epochs", spec.recipe.epochs if spec.tags.get("task") != "eval" else 0),
        "status": "done" if result else "incomplete",
    }
    for key in ("top1", "top5", "loss", "params", "wall_time_s", "world_size"):
        row[key] = result.get(key)
    for key, value in spec.tags.items():
        if key in _TAG_SKIP:
            continue
        row[key] = value
        if key not in tag_columns:
            tag_columns.append(key)
    teacher = _read_json(d / "env.json").get("teacher")
    if isinstance(teacher, dict):
        row["teacher_sha256"] = teacher.get("sha256")
    curves, locality = [], []
    for m in _read_jsonl(d / "metrics.jsonl"):
        epoch = m.get("epoch")
        curves.append({"run": name, **{c: m.get(c) for c in CURVE_COLUMNS[1:]}, "epoch": epoch})
        nonloc = m.get("nonlocality") or []
        sigma = m.get("gate_sigma") or []
        dist = m.get("centre_distance") or []
        for layer in range(max(len(nonloc), len(sigma), len(dist))):
            heads = max(
                len(nonloc[layer]) if layer < len(nonloc) else 0,
                len(sigma[layer]) if layer < len(sigma) else 0,
                len(dist[layer]) if layer < len(dist) else 0,
            )
            for head in range(heads):
                locality.append(
                    {
                        "run": name,
                        "epoch": epoch,
                        "layer": layer,
                        "head": head,
                        "nonlocality": _at(nonloc, layer, head),
                        "gate_sigma": _at(sigma, layer, head),
                        "centre_distance": _at(dist, layer, head),
                    }
                )
    return row, curves, locality


def _at(table: list[Any], layer: int, head: int) -> Any:
    try:
        return table[layer][head]
    except (IndexError, TypeError):
        return None
