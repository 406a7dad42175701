"""RunSpec: exact JSON round trip, strict parsing, validation, content digest."""

from __future__ import annotations

import dataclasses

import pytest

from convit.spec import DataSpec, ModelSpec, RecipeSpec, RunSpec, SpecError


def _example() -> RunSpec:
    return RunSpec(
        model=ModelSpec("convit_tiny", {"patch_size": 4, "locality_strength": 0.5}),
        data=DataSpec("cifar10", fraction=0.05, img_size=32),
        recipe=RecipeSpec(epochs=7, batch_size=64, base_lr=4e-4, clip_grad=1.0),
        seed=3,
        tags={"suite": "sample_efficiency", "scale": "cpu"},
    )


def test_json_round_trip_is_exact() -> None:
    spec = _example()
    again = RunSpec.from_json(spec.to_json())
    assert again == spec
    assert again.to_json() == spec.to_json()
    assert isinstance(again.recipe.base_lr, float) and again.recipe.clip_grad == 1.0


def test_digest_changes_with_any_field() -> None:
    spec = _example()
    assert spec.digest() == RunSpec.from_json(spec.to_json()).digest()
    changed = dataclasses.replace(spec, data=dataclasses.replace(spec.data, fraction=0.1))
    assert changed.digest() != spec.digest()


def test_unknown_key_is_refused() -> None:
    data = _example().to_dict()
    data["recipe"]["lerning_rate"] = 1.0
    with pytest.raises(SpecError, match="lerning_rate"):
        RunSpec.from_dict(data)


def test_wrong_type_is_refused() -> None:
    data = _example().to_dict()
    data["recipe"]["epochs"] = "many"
    with pytest.raises(SpecError, match="recipe.epochs"):
        RunSpec.from_dict(data)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_fraction_outside_unit_interval(fraction: float) -> None:
    with pytest.raises(SpecError, match="fraction"):
        DataSpec("cifar10", fraction=fraction)


def test_peak_lr_linear_scaling() -> None:
    assert RecipeSpec().peak_lr() == pytest.approx(1e-3)  # 5e-4 x 1024 / 512
    assert RecipeSpec(batch_size=512, base_lr=4e-4).peak_lr() == pytest.approx(4e-4)
