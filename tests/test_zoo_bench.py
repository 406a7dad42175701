"""Table 1 columns (convit.zoo) against reference 1.4, and a smoke run of the benchmark (convit.bench).

Speed is measured by the benchmark command, never asserted here: these tests check counts, plumbing and
output formats on tiny inputs.
"""

from __future__ import annotations

import csv
import math

import pytest
import torch

from convit import bench, models, zoo

# reference 1.4: (params, params without head, GMACs full, GMACs without the attention matmuls)
REFERENCE = {
    "convit_tiny": (5_710_512, 5_517_512, 1.25, 1.08),
    "convit_tiny_plus": (9_972_912, 9_715_912, 2.13, 1.89),
    "convit_small": (27_777_322, 27_344_322, 5.75, 5.35),
    "convit_small_plus": (48_979_882, 48_402_882, 10.00, 9.47),
    "convit_base": (86_540_040, 85_771_040, 17.51, 16.80),
    "convit_base_plus": (153_134_856, 152_109_856, 30.74, 29.79),
    "deit_tiny": (5_717_416, 5.52e6, 1.25, 1.07),
    "deit_tiny_plus": (9_982_184, 9.73e6, 2.14, 1.90),
    "deit_small": (22_050_664, 21.67e6, 4.60, 4.24),
    "deit_small_plus": (49_000_744, 48.42e6, 10.04, 9.50),
    "deit_base": (86_567_656, 85.80e6, 17.56, 16.85),
    "deit_base_plus": (153_171_944, 152.15e6, 30.85, 29.90),
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", list(REFERENCE))
def test_params_and_macs_match_reference(name):
    params, no_head, gmacs, gmacs_no_attn = REFERENCE[name]
    row = zoo.measure(name, batch=None)  # meta-device counts, no throughput
    assert row.params == params
    assert row.params_no_head == pytest.approx(no_head, abs=5e3)
    assert row.gmacs == pytest.approx(gmacs, abs=0.01)
    assert row.gmacs_no_attn == pytest.approx(gmacs_no_attn, abs=0.01)
    assert row.paper_size_m == round(row.params_no_head / 1e6)  # the Size column's convention (reference 1.3)


@pytest.mark.parametrize("name", ["convit_tiny", "deit_tiny"])
def test_real_model_counts_equal_meta_counts_and_fast_flag_is_restored(name):
    torch.manual_seed(0)
    model = models.create(name)
    assert zoo.count_macs(model) == pytest.approx(zoo.count_macs(model.to("meta"), device="meta"), rel=1e-12)
    assert all(m.fast for m in model.modules() if isinstance(getattr(m, "fast", None), bool))


def test_zoo_main_prints_table_and_writes_csv(tmp_path, capsys):
    out = tmp_path / "zoo.csv"
    assert zoo.main(["--models", "deit_small,convit_small", "--no-throughput", "--csv", str(out)]) == 0
    text = capsys.readouterr().out
    assert "convit_small" in text and "5.35" in text and "4.24" in text and "paper FLOPs" in text
    rows = list(csv.DictReader(out.open()))
    assert [r["model"] for r in rows] == ["deit_small", "convit_small"]
    assert float(rows[1]["gmacs"]) == pytest.approx(5.75, abs=0.01)
    assert rows[1]["img_per_s"] == ""


def test_throughput_protocol_runs():
    model = models.create("deit_tiny", img_size=32, depth=2, num_classes=10)
    model.train()
    speed = zoo.throughput(model, 2, warmup=1, iters=2, img_size=32)
    assert speed > 0 and model.training


def test_bench_smoke(tmp_path, capsys, monkeypatch):
    def shallow(name, **kwargs):  # 2 blocks (ConViT: 1 GPSA + 1 MHSA) keep the smoke run to seconds
        extra = {"local_up_to_layer": 1} if "convit" in name else {}
        return bench.build(name, depth=2, **extra, **kwargs)

    monkeypatch.setattr(bench, "_build", shallow)
    out = tmp_path / "bench.csv"
    argv = ["--models", "convit_tiny,deit_tiny,timm:convit_tiny", "--img-size", "32", "--batch", "2"]
    argv += ["--rounds", "1", "--iters", "1", "--warmup", "1", "--device", "cpu", "--threads", "1"]
    argv += ["--csv", str(out)]
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    assert "convit_tiny / deit_tiny" in text and "convit_tiny / timm:convit_tiny" in text
    rows = {r["model"]: r for r in csv.DictReader(out.open())}
    assert set(rows) == {"convit_tiny", "deit_tiny", "timm:convit_tiny"}
    for row in rows.values():
        assert float(row["train_img_s"]) > 0 and float(row["infer_img_s"]) > 0
        assert float(row["activation_mb"]) > 0
    assert float(rows["deit_tiny"]["train_vs_deit_tiny"]) == 1.0
    assert "(IQR)" in text


def test_bench_ratios_are_paired_per_round():
    """A ratio is the median of per-round ratios: a machine that slows down for some rounds moves both
    models of those rounds, and the paired ratio stays put where a ratio of medians would not."""
    slow_rounds = [1.0, 1.0, 0.5, 0.5, 0.5]  # the machine halves its speed from round 3 on
    ours = bench.BenchResult("ours", 1, train=[9.0 * k for k in slow_rounds], infer=[1.0] * 5)
    # the reference is timed at a different moment of each round, when the slowdown has not begun yet
    ref = bench.BenchResult("ref", 1, train=[10.0 * k for k in (1.0, 1.0, 1.0, 0.5, 0.5)], infer=[2.0] * 5)
    ratios = bench.paired_ratios(ours, ref)
    assert ratios == pytest.approx([0.9, 0.9, 0.45, 0.9, 0.9])
    mid, q1, q3 = bench.ratio_summary(ratios)
    assert mid == pytest.approx(0.9) and q1 == pytest.approx(0.9) and q3 == pytest.approx(0.9)
    assert ours.train_median / ref.train_median == pytest.approx(0.45)  # what a ratio of medians says
    assert bench.ratio_summary(bench.paired_ratios(ours, ref, "infer"))[0] == pytest.approx(0.5)
    assert bench.ratio_summary([0.8, 1.0]) == (0.9, 0.9, 0.9)
    assert all(math.isnan(x) for x in bench.ratio_summary([]))


def test_activation_bytes_counts_saved_activations_not_weights():
    torch.manual_seed(0)
    model = models.create("deit_tiny", img_size=32, depth=2, num_classes=10)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    small = bench.activation_bytes(model, x[:2], y[:2])
    large = bench.activation_bytes(model, x, y)
    assert 0 < small < large < 3 * small  # grows with the batch; weights (~5 MB) are not included
    assert all(p.grad is None for p in model.parameters())


def test_bench_rejects_unknown_reference():
    with pytest.raises(SystemExit):
        bench.parse_args(["--models", "convit_tiny,deit_tiny", "--reference", "deit_small"])


@pytest.mark.parametrize("block", [0, 3])
def test_blocks_compile_without_graph_breaks(block):
    """GPSA (block 0) and MHSA (block 3) blocks trace into a single dynamo graph (train mode)."""
    model = models.create("convit_tiny", img_size=32, depth=4, local_up_to_layer=2, num_classes=10)
    n = 4 if block < 2 else 5
    x = torch.randn(2, n, model.embed_dim)
    breaks, reasons = bench.graph_breaks(model.blocks[block], x)
    assert breaks == 0, reasons


def test_compile_suffix_compiles_that_model_only(monkeypatch):
    """``NAME+compile`` times the compiled model next to the eager one (built, not run: inductor's C++
    build is minutes on 2 cores; the compiled blocks' tracing is covered by the graph-break test)."""
    import argparse

    assert bench.split_suffixes("convit_tiny+compile") == ("convit_tiny", {"compile"})
    assert bench.split_suffixes("timm:convit_tiny") == ("timm:convit_tiny", frozenset())
    monkeypatch.setattr(bench, "_build", lambda name, **kw: bench.build(name, depth=1, **kw))
    args = argparse.Namespace(img_size=32, drop_path=0.0, batch=2, dtype="fp32", compile=False)
    compiled = bench._Runner("deit_tiny+compile", args, torch.device("cpu"))
    eager = bench._Runner("deit_tiny", args, torch.device("cpu"))
    assert compiled.model is not compiled.eager and isinstance(compiled.model, torch._dynamo.OptimizedModule)
    assert eager.model is eager.eager
    assert compiled.result.name == "deit_tiny+compile" and compiled.result.params == eager.result.params


def test_content_only_suffix_switches_off_the_positional_path(monkeypatch, capsys):
    """``NAME+content-only`` (diagnosis) trains GPSA layers on their content attention alone: pos_proj and the
    gate get no gradient, and nothing else changes. A model without GPSA layers or an unknown suffix is a
    one-line usage error."""
    import argparse

    def small(name: str, **kw):
        local = {"local_up_to_layer": 1} if name.startswith("convit") else {}
        return bench.build(name, depth=2, **local, **kw)

    monkeypatch.setattr(bench, "_build", small)
    args = argparse.Namespace(img_size=32, drop_path=0.0, batch=2, dtype="fp32", compile=False)
    runner = bench._Runner("convit_tiny+content-only+compile", args, torch.device("cpu"))
    assert isinstance(runner.model, torch._dynamo.OptimizedModule)
    gpsa = runner.eager.blocks[0].attn
    assert gpsa.mask == "position" and runner.eager.blocks[1].attn.__class__.__name__ == "MHSA"
    plain = bench._Runner("convit_tiny", args, torch.device("cpu"))
    for r in (runner, plain):
        r.eager.train()
        torch.nn.functional.cross_entropy(r.eager(r.images), r.labels).backward()
    assert gpsa.pos_proj.weight.grad is None and gpsa.gating_param.grad is None
    assert gpsa.qk.weight.grad is not None
    assert plain.eager.blocks[0].attn.pos_proj.weight.grad is not None
    with pytest.raises(ValueError, match="GPSA"):
        bench._Runner("deit_tiny+content-only", args, torch.device("cpu"))
    with pytest.raises(SystemExit):
        bench.parse_args(["--models", "convit_tiny+fast,deit_tiny"])
    assert "unknown suffix" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("device", "needle"),
    [("foo", "unknown device 'foo'"), ("cuda" if not torch.cuda.is_available() else "cuda:99", "CUDA")],
)
def test_bench_device_errors_are_one_line(device, needle, capsys):
    """A device this machine does not have is a usage error (exit 2, one line), not a CUDA traceback."""
    with pytest.raises(SystemExit) as info:
        bench.parse_args(["--models", "deit_tiny", "--device", device])
    err = capsys.readouterr().err
    assert info.value.code == 2 and needle in err and "Traceback" not in err


def test_zoo_bad_model_or_device_is_one_line(capsys):
    for argv, needle in (
        (["--models", "convit_tiny,nope", "--no-throughput"], "unknown model(s) nope"),
        (["--device", "tpu", "--no-throughput"], "unknown device 'tpu'"),
    ):
        with pytest.raises(SystemExit) as info:
            zoo.main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and needle in err and "Traceback" not in err
