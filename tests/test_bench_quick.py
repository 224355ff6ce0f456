"""The benchmark suite's quick correctness path: every variant of a round decrypts numpy's gradient.

No timing is asserted here (this machine's cores are shared); ``./run_bench.sh`` measures.
"""

from __future__ import annotations

import pytest

from bench.federation import GradientMismatch, KeyMaterial, check_gradient, make_federation
from bench.ours import OursRound
from bench.products import OwnerProductsRound
from bench.services import ratios
from bench.suite import VARIANTS, check_variants
from data_owner.multiexp import PARALLEL_MIN_MULTIPLICATIONS


@pytest.fixture(scope="module")
def keys(small_key) -> KeyMaterial:
    return KeyMaterial.from_private_key(small_key)


def test_every_variant_decrypts_numpys_gradient(keys: KeyMaterial) -> None:
    errors = check_variants(keys, dimension=4, rows_per_owner=12, owners=3)

    assert set(errors) == set(VARIANTS)
    assert all(error <= 1e-6 for error in errors.values())


def test_the_owners_product_split_over_processes_is_still_exact(keys: KeyMaterial) -> None:
    federation = make_federation(dimension=40, rows_per_owner=50, owners=2, seed=3)
    round_ = OursRound(keys, federation, workers=2)
    try:
        assert round_.maps[0].plan.multiplications >= PARALLEL_MIN_MULTIPLICATIONS
        round_.refill()
        measurement = round_.run_round()
    finally:
        round_.close()

    check_gradient("ours-mp", measurement.gradient, federation)
    assert round_.pool_misses == 0


def test_the_owners_products_alone_sum_to_numpys_gradient(keys: KeyMaterial) -> None:
    federation = make_federation(dimension=5, rows_per_owner=20, owners=3, seed=4)
    round_ = OwnerProductsRound(keys, federation)
    try:
        measurement = round_.run_round()
    finally:
        round_.close()

    check_gradient("owner-products", measurement.gradient, federation)
    assert len(measurement.owner_seconds) == 3 and min(measurement.owner_seconds) > 0
    assert measurement.critical_path == pytest.approx(max(measurement.owner_seconds))
    assert measurement.reply_ciphertexts == round_.spec.reply_ciphertexts()


def test_the_services_ratios_name_every_target() -> None:
    product = {
        job: {"round_seconds": seconds, "job_seconds": seconds * rounds, "rounds": rounds}
        for job, seconds, rounds in [
            ("gd-standard", 0.5, 10),
            ("gd-djn", 0.4, 10),
            ("exact-standard", 0.5, 11),
            ("exact-djn", 0.4, 11),
            ("one-shot-djn", 2.0, 1),
        ]
    }
    baselines = {"owner-products": {"round_seconds": 0.25}, "phe-gram": {"round_seconds": 3.0},
                 "tenseal-ckks": {"round_seconds": 0.3}}

    (row,) = ratios([{"key_bits": 2048, "dimension": 50, "product": product, "baselines": baselines}])

    assert row["phe-gram/gd-djn round"] == pytest.approx(7.5)
    assert row["one phe-gram round/one-shot-djn job"] == pytest.approx(1.5)
    assert row["phe-gram exact job/exact-standard job"] == pytest.approx(3.0 * 11 / 5.5)
    assert row["phe-gram exact job/exact-djn job"] == pytest.approx(3.0 * 11 / 4.4)
    assert row["phe-gram round/owner products (ceiling)"] == pytest.approx(12.0)
    assert row["owner-products/gd-djn round"] == pytest.approx(0.625)
    assert "owner-products round/one-shot-djn job" not in row


def test_a_wrong_gradient_fails_loudly() -> None:
    federation = make_federation(dimension=3, rows_per_owner=5, owners=2, seed=0)

    with pytest.raises(GradientMismatch, match="differs from numpy"):
        check_gradient("broken", federation.reference_gradient() * (1 + 1e-4), federation)
