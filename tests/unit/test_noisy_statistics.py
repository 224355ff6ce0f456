"""The model creator on data owners' noisy statistics (model_creator/noisy_statistics.py).

AdaSSP's rule (λ = max(0, τ − λ_min)) on matrices whose noise is known, the probe that learns the
noisy objective from d + 1 gradients, and a whole private run: owners' encrypted replies from
their releases, decrypted and summed, give the AdaSSP solution of the summed releases, and a
model creator restarted mid-run continues to the same coefficients.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest

from common.protocol.messages import PrivacyDeclaration, TrainingOptions, ciphertexts_under
from common.protocol.scales import unscaled_coefficients
from coordinator.policy import aggregate
from data_owner.accounting import rho_for
from data_owner.affine import EncryptedAffineMap
from data_owner.release import NoisyRelease, exact_blocks
from model_creator.config import ModelCreatorSettings
from model_creator.noisy_statistics import FAILURE_PROBABILITY, NoiseModel, probe_statistics, solve_adassp
from model_creator.solvers import StatisticsProbe
from model_creator.training import TrainingRequest, TrainingRun

SETTINGS = ModelCreatorSettings(default_features=["x1", "x2"], default_label="y", test_data=None)
BOUNDS = {"x1": [-4.0, 4.0], "x2": [-4.0, 4.0], "y": [-20.0, 20.0]}


def declaration(gram_std: float) -> PrivacyDeclaration:
    return PrivacyDeclaration(epsilon=1.0, delta=1e-5, rho=0.03, epsilon_at_delta=1.0, mechanism="test",
                              quantum_bits=20, noise_std={"gram": gram_std, "moment": 1.0, "moments": 1.0})


def noise_model(gram_std: float, dimension: int = 3) -> NoiseModel:
    return NoiseModel(gram_std, np.eye(dimension), 1.0)


def test_a_well_conditioned_matrix_far_above_the_noise_is_solved_as_it_is():
    matrix = np.diag([100.0, 200.0, 300.0])
    vector = np.array([100.0, 400.0, 900.0])
    solved = solve_adassp(matrix, vector, noise_model(1.0))
    assert solved.strength == 0.0 and solved.min_eigenvalue == pytest.approx(200.0)
    np.testing.assert_allclose(solved.coefficients, [1.0, 2.0, 3.0])


def test_indefinite_feature_directions_are_lifted_to_tau_and_the_intercept_is_left_alone():
    matrix = np.array([[400.0, 0.0, 0.0], [0.0, 2.0, 3.0], [0.0, 3.0, 2.0]])
    noise = noise_model(0.5)
    assert noise.tau == pytest.approx(0.5 * math.sqrt(3 * math.log(2 * 9 / FAILURE_PROBABILITY)))
    solved = solve_adassp(matrix, np.ones(3), noise)
    assert solved.min_eigenvalue == pytest.approx(-1.0) and not solved.intercept_penalised
    assert solved.strength == pytest.approx(noise.tau + 1.0)
    lifted = matrix + solved.strength * np.diag([0.0, 1.0, 1.0])
    assert np.linalg.eigvalsh(lifted[1:, 1:])[0] == pytest.approx(noise.tau)
    np.testing.assert_allclose(lifted @ solved.coefficients, np.ones(3))


def test_when_the_intercept_row_is_what_the_noise_broke_every_direction_is_lifted():
    matrix = np.array([[-5.0, 1.0, 0.0], [1.0, 50.0, 0.0], [0.0, 0.0, 60.0]])
    noise = noise_model(0.5)
    solved = solve_adassp(matrix, np.ones(3), noise)
    assert solved.intercept_penalised
    assert solved.min_eigenvalue == pytest.approx(np.linalg.eigvalsh(matrix)[0])
    lifted = matrix + solved.strength * np.eye(3)
    assert np.linalg.eigvalsh(lifted)[0] == pytest.approx(noise.tau)
    np.testing.assert_allclose(lifted @ solved.coefficients, np.ones(3))


def test_the_regularisation_is_isotropic_in_the_centred_frame_of_the_bounds():
    lift = np.array([[1.0, 0.0, 0.0], [5.0, 10.0, 0.0], [-300.0, 0.0, 1000.0]])
    noise = NoiseModel(2.0, lift, 0.25)
    normalised = np.diag([900.0, -1.0, 3.0])
    matrix = 0.25 * lift @ normalised @ lift.T
    vector = np.array([1.0, 2.0, 3.0])
    solved = solve_adassp(matrix, vector, noise)
    assert solved.min_eigenvalue == pytest.approx(-1.0)
    penalty = 0.25 * solved.strength * lift @ np.diag([0.0, 1.0, 1.0]) @ lift.T
    np.testing.assert_allclose((matrix + penalty) @ solved.coefficients, vector, rtol=1e-9)
    np.testing.assert_allclose(noise.penalty(1.0), 0.25 * lift @ lift.T)


def test_the_probe_asks_zero_then_each_unit_vector_and_recovers_the_objective():
    matrix = np.array([[4.0, 1.0], [1.0, 3.0]])
    vector = np.array([1.0, 2.0])
    seen = []
    probe = StatisticsProbe(2, 8, 4, lambda gradients: seen.append(gradients) or [0, 0])
    queries = []
    while not probe.done:
        queries.append(list(probe.query))
        point = np.array(probe.query, dtype=float) / 2**8
        probe.observe(list(matrix @ point - vector), 10)
    assert queries == [[0, 0], [256, 0], [0, 256]]
    recovered_matrix, recovered_vector = probe_statistics([[float(g) for g in gs] for gs in seen[0]])
    np.testing.assert_allclose(recovered_matrix, matrix)
    np.testing.assert_allclose(recovered_vector, vector)
    assert probe.stop_reason.startswith("exact on the noisy statistics")


def owners_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.uniform(-3, 3, size=(200, 2))
    return features, features @ [1.5, -2.0] + 0.5 + rng.normal(scale=0.1, size=200)


def private_run(small_key) -> TrainingRun:
    request = TrainingRequest.of(TrainingOptions(bounds=BOUNDS), SETTINGS)
    return TrainingRun("dp-job", request, small_key, SETTINGS, None)


def test_a_private_run_solves_the_summed_releases_with_adassp_and_resumes_after_a_restart(small_key):
    run = private_run(small_key)
    spec = run.spec
    releases = [NoisyRelease.draw(exact_blocks(spec, *owners_data(seed)), rho_for(50.0, 1e-5), 50.0, 1e-5)
                for seed in range(3)]
    maps = []
    for release in releases:
        encoded = release.encoded(spec)
        maps.append(EncryptedAffineMap.of_encoded(spec, encoded.matrix, encoded.offset, encoded.row_count, "owner"))
    privacy = {f"owner_{i}": release.declaration for i, release in enumerate(releases)}
    public_key = small_key.public_key
    restarted = None
    while not run.done:
        order = run.round_order()
        weights = ciphertexts_under(order.encrypted_weights, public_key, "weights", spec.dimension)
        replies = [statistics.evaluate(public_key, weights, spec) for statistics in maps]
        run.absorb(aggregate(public_key.nsquare, replies), sorted(privacy), {}, privacy)
        if run.round == 2 and restarted is None:
            restarted = private_run(small_key)
            restarted.restore(json.loads(json.dumps(run.state())))
            run.close()
            run = restarted
    assert run.round == spec.dimension + 1
    # The expected answer, from the releases directly (what the owners' ledgers hold).
    matrix = sum(np.array(m.matrix, dtype=float) for m in maps) / 2**spec.data_frac_bits
    vector = sum(np.array(m.offset, dtype=float) for m in maps) / 2**spec.gradient_frac_bits
    expected = solve_adassp(matrix, vector, NoiseModel.of(spec, privacy))
    coefficients = list(run.coefficients().values())
    # The bounds give the job its scales: the statistics are in scaled units, the model is not.
    assert spec.feature_scales == (-2, -2) and spec.label_scale == -4
    unscaled = unscaled_coefficients(spec.feature_scales, spec.label_scale, list(map(Fraction, expected.coefficients)))
    np.testing.assert_allclose(coefficients, [float(c) for c in unscaled], rtol=1e-9)
    # At ε = 50 on 600 rows the model is close to the truth it was drawn from.
    np.testing.assert_allclose(coefficients, [0.5, 1.5, -2.0], atol=0.5)
    report = run.result()["privacy"]
    assert sorted(report["data_owners"]) == sorted(privacy)
    assert report["data_owners"]["owner_0"]["epsilon"] == 50.0 and report["data_owners"]["owner_0"]["delta"] == 1e-5
    assert report["regularisation"]["lambda"] == pytest.approx(expected.strength)
    assert report["regularisation"]["gram_noise_std"] == pytest.approx(
        math.sqrt(sum(d.noise_std["gram"] ** 2 for d in privacy.values())))
    run.close()


def test_a_first_order_private_run_converges_to_the_fully_regularised_noisy_objective(small_key):
    """Adam on the noisy statistics plus a·τ·L Lᵀ: the minimiser of that quadratic, in closed form."""
    request = TrainingRequest.of(
        TrainingOptions(bounds=BOUNDS, optimizer="adam", learning_rate=0.05, max_rounds=3000, tolerance=1e-7), SETTINGS
    )
    run = TrainingRun("dp-adam", request, small_key, SETTINGS, None)
    spec = run.spec
    releases = [NoisyRelease.draw(exact_blocks(spec, *owners_data(seed)), rho_for(5.0, 1e-5), 5.0, 1e-5)
                for seed in range(2)]
    encoded = [release.encoded(spec) for release in releases]
    maps = [EncryptedAffineMap.of_encoded(spec, e.matrix, e.offset, e.row_count, "owner") for e in encoded]
    privacy = {f"owner_{i}": release.declaration for i, release in enumerate(releases)}
    public_key = small_key.public_key
    while not run.done:
        order = run.round_order()
        weights = ciphertexts_under(order.encrypted_weights, public_key, "weights", spec.dimension)
        run.absorb(aggregate(public_key.nsquare, [m.evaluate(public_key, weights, spec) for m in maps]),
                   sorted(privacy), {}, privacy)
    noise = NoiseModel.of(spec, privacy)
    matrix = sum(np.array(m.matrix, dtype=float) for m in maps) / 2**spec.data_frac_bits
    vector = sum(np.array(m.offset, dtype=float) for m in maps) / 2**spec.gradient_frac_bits
    expected = np.linalg.solve(matrix + noise.penalty(noise.tau), vector)
    unscaled = unscaled_coefficients(spec.feature_scales, spec.label_scale, list(map(Fraction, expected)))
    np.testing.assert_allclose(list(run.coefficients().values()), [float(c) for c in unscaled], rtol=1e-3, atol=1e-4)
    report = run.result()["privacy"]["regularisation"]
    assert report["lambda"] == pytest.approx(noise.tau) and report["intercept_penalised"]
    run.close()


def test_without_declarations_the_run_stays_exact(small_key):
    run = private_run(small_key)
    run._protect({})
    assert run.noise is None and type(run.optimizer).__name__ == "ConjugateDirections"
    run.close()


def test_differential_privacy_appearing_mid_run_is_refused(small_key):
    run = private_run(small_key)
    run.optimizer.rounds = 1
    with pytest.raises(Exception, match="turned differential privacy on during the job"):
        run._protect({"owner_0": declaration(1.0)})
    run.close()
