r"""Sample efficiency: Table 2, Fig. 2(a) and Fig. 11(c) (reference section 2).

Command::

    python experiments/launch.py sample_efficiency --scale {paper,reduced,cpu,smoke}

DeiT-S vs ConViT-S trained on the first floor(f x n_c) images of every class (sorted filenames, training
split only), f in {0.05, 0.1, 0.3, 0.5, 1}, for 300/f epochs (6000/3000/1000/600/300) so every run sees the
same number of images; warm-up stays at 5 epochs (see ``experiments.common`` for this and the other recorded
decisions). Top-1 of the final epoch on the full validation set.

Paper (Table 2; Fig. 2a gives 34.71 for DeiT-S at 5%)::

    f       DeiT-S top-1/top-5   ConViT-S top-1/top-5   gap top-1
    5%      34.8 / 57.8          47.8 / 70.7            37%
    10%     48.0 / 71.5          59.6 / 80.3            24%
    30%     66.1 / 86.0          73.7 / 90.7            12%
    50%     74.6 / 91.8          78.2 / 93.8             5%
    100%    79.9 / 95.0          81.4 / 95.8             2%

What to expect: the relative gain of ConViT over DeiT grows as f shrinks. At reduced and cpu scale the
absolute numbers are not the paper's; the *trend* (gain decreasing with f) is the claim under test.

Cost (``--dry-run`` prints the per-run estimate from FLOPs):

* paper: 10 runs x ~300 ImageNet epochs-equivalent each; ConViT-S ~5.75 GMAC, DeiT-S ~4.6 GMAC per image:
  ~1,350 V100-hours in total (``--dry-run``'s FLOP estimate: ~130 h per run, 16 GPUs for ~8 h each).
* reduced (Tiny-ImageNet, 64 px, patch 8, 100 x 1/f epochs, batch 256, one GPU): ~3 GPU-hours in total on
  an A100/H100-class GPU (10 runs, ~10^7 training images each at ~9-11 GFLOP; at ~9k-12k images/s that is
  about what 8 loader workers produce, so the estimate is the loader's: ``common.loader_hours``). 100
  epochs because Tiny-ImageNet has 100k images: the f = 0.05 run then has 5k images for 2000 epochs, the
  same image budget.
* cpu (CIFAR-10, 32 px, patch 4, ConViT-Ti vs DeiT-Ti head counts at half the per-head width, 96 wide,
  depth 6 = 4 GPSA + 2 MHSA, 10 x 1/f epochs, batch 64, ~7.8k steps and ~5e5 images per run, no
  Mixup/CutMix/RandAugment/erasing/repeated augmentation for either family; ``experiments.common`` says
  why): ``--dry-run`` estimates 0.86 h of the whole 2-core machine per run (its ``flops_per_s`` is fitted to
  the measured throughput); measured: ~75-80 img/s per run with two side by side and nothing else running
  on the first 2-core machine, i.e. ~1.7 h per run and ~8.6 h for the 10 with ``--parallel 2`` (tests or
  helpers beside them cut that to 7-50 img/s); ~140-185 img/s per run (~1 h) on the machine of 2026-12-02;
  one at a time at ~225 img/s (~40-48 min per run) on the third.
  Measured (seeds 0 / 1; every run committed): at f = 1 DeiT-Ti 67.73% / 66.67%, ConViT-Ti 70.82% / 71.00%; at
  f = 0.5 DeiT-Ti 66.15% / 65.17%, ConViT-Ti 70.30% / 69.02% (paired gap +4.00 [+2.09, +5.91]); at f = 0.3
  DeiT-Ti 64.38% / 63.81%, ConViT-Ti 68.78% / 68.73% (paired gap +4.66 [+1.36, +7.96]); at f = 0.1 DeiT-Ti
  56.98% / 59.18%, ConViT-Ti 65.14% / 63.57% (paired gap +6.28 [-17.68, +30.23]); at f = 0.05 DeiT-Ti 48.58% /
  48.93%, ConViT-Ti 57.90% / 56.93% (paired gap +8.66 points, 95% interval [+0.27, +17.05]; the paper's
  ConViT-S vs DeiT-S at 5%: 47.8 vs 34.8). Run it in the background with ``CONVIT_RUNS`` outside the checkout:
  a relaunch resumes; on a new machine ``--skip-collected`` trains only what ``results/`` lacks. (ConViT-Ti
  stands for ConViT-S: 9-head models cost ~2x more per image on a CPU.) The README's main job.
* smoke: seconds per run.
"""

from __future__ import annotations

from convit.spec import RunSpec
from experiments.common import check_scale, make_spec

SUITE = "sample_efficiency"
FRACTIONS = (0.05, 0.1, 0.3, 0.5, 1.0)

#: paper top-1 by (variant, fraction), Table 2.
PAPER_TOP1 = {
    ("deit", 0.05): 34.8, ("deit", 0.1): 48.0, ("deit", 0.3): 66.1, ("deit", 0.5): 74.6, ("deit", 1.0): 79.9,
    ("convit", 0.05): 47.8, ("convit", 0.1): 59.6, ("convit", 0.3): 73.7, ("convit", 0.5): 78.2,
    ("convit", 1.0): 81.4,
}  # fmt: skip


def specs(scale: str) -> list[RunSpec]:
    """DeiT-S and ConViT-S (or their scale's stand-ins) at each fraction, epochs x 1/f."""
    sc = check_scale(scale)
    out = []
    for family in ("deit", "convit"):
        for f in FRACTIONS:
            out.append(
                make_spec(
                    sc,
                    suite=SUITE,
                    variant=family,
                    family=family,
                    size="small",
                    fraction=f,
                    tags={"paper_top1": PAPER_TOP1[(family, f)]},
                )
            )
    return out
