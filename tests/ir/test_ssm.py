"""Zero-order-hold discretization, checked against computations that do not use its formula.

For one complex mode a = x + iy, ZOH over a step dt gives
    A_bar = exp(a dt),   B_bar = (integral_0^dt exp(a s) ds) * b.
Written as real 2x2 blocks, both come out of one matrix exponential of the
augmented block matrix [[Ar, Br], [0, 0]] * dt (Van Loan): the top-left block
is exp(Ar dt) and the top-right block is (integral exp(Ar s) ds) Br.
"""

import math

import numpy as np
import pytest
from scipy.linalg import expm

from ssmc.ir.graph import Op
from ssmc.ir.ssm import discrete_params, shared_form, state_size, zoh_discretize


def as_block(z: complex) -> np.ndarray:
    """The real 2x2 matrix acting on (re, im) like multiplication by z."""
    return np.array([[z.real, -z.imag], [z.imag, z.real]])


def from_block(m: np.ndarray) -> complex:
    assert m[0, 0] == pytest.approx(m[1, 1], abs=1e-12) and m[1, 0] == pytest.approx(-m[0, 1], abs=1e-12)
    return complex(m[0, 0], m[1, 0])


def zoh_by_expm(dt: float, a: complex, b: complex) -> tuple[complex, complex]:
    aug = np.zeros((4, 4))
    aug[:2, :2] = as_block(a) * dt
    aug[:2, 2:] = as_block(b) * dt
    e = expm(aug)
    return from_block(e[:2, :2]), from_block(e[:2, 2:])


def zoh_by_quadrature(dt: float, a: complex, b: complex, n: int = 20001) -> complex:
    s = np.linspace(0.0, dt, n)
    f = np.exp(a * s)
    integral = (f[:-1] + f[1:]).sum() * (s[1] - s[0]) / 2
    return integral * b


def random_stable_ssm(seed: int, H: int = 3, M: int = 4):
    rng = np.random.default_rng(seed)
    log_dt = rng.uniform(np.log(1e-3), np.log(0.5), H)
    A = -np.exp(rng.uniform(-3, 1, (H, M))) + 1j * rng.uniform(-20, 20, (H, M))
    B = rng.standard_normal((H, M)) + 1j * rng.standard_normal((H, M))
    return log_dt, A, B


@pytest.mark.parametrize("seed", range(5))
def test_zoh_matches_the_matrix_exponential_of_the_real_block_form(seed):
    log_dt, A, B = random_stable_ssm(seed)
    A_bar, B_bar = zoh_discretize(log_dt, A, B)
    for h in range(A.shape[0]):
        for m in range(A.shape[1]):
            want_a, want_b = zoh_by_expm(math.exp(log_dt[h]), A[h, m], B[h, m])
            assert A_bar[h, m] == pytest.approx(want_a, rel=1e-10, abs=1e-13)
            assert B_bar[h, m] == pytest.approx(want_b, rel=1e-9, abs=1e-13)


@pytest.mark.parametrize("seed", range(3))
def test_zoh_input_coefficient_is_the_integral_of_the_impulse_response(seed):
    log_dt, A, B = random_stable_ssm(100 + seed, H=2, M=3)
    _, B_bar = zoh_discretize(log_dt, A, B)
    for h in range(A.shape[0]):
        for m in range(A.shape[1]):
            want = zoh_by_quadrature(math.exp(log_dt[h]), A[h, m], B[h, m])
            assert B_bar[h, m] == pytest.approx(want, rel=1e-6)


def test_zoh_by_hand_for_a_real_pole_halving_each_step():
    # a = -1, dt = ln 2: A_bar = 1/2 and integral_0^dt e^-s ds = 1 - 1/2 = 1/2
    A_bar, B_bar = zoh_discretize(
        np.array([math.log(math.log(2.0))]), np.array([[-1.0 + 0j]]), np.array([[2.0 - 4.0j]])
    )
    assert A_bar[0, 0] == pytest.approx(0.5, abs=1e-15)
    assert B_bar[0, 0] == pytest.approx(1.0 - 2.0j, abs=1e-15)


def test_zoh_by_hand_for_a_pure_rotation():
    # a = i*pi, dt = 1: A_bar = exp(i pi) = -1 and integral_0^1 e^{i pi s} ds = 2i/pi
    A_bar, B_bar = zoh_discretize(np.array([0.0]), np.array([[1j * math.pi]]), np.array([[1.0 + 0j]]))
    assert A_bar[0, 0] == pytest.approx(-1.0, abs=1e-15)
    assert B_bar[0, 0] == pytest.approx(2j / math.pi, abs=1e-15)


def test_zoh_poles_of_a_stable_system_lie_inside_the_unit_circle():
    log_dt, A, B = random_stable_ssm(7, H=8, M=16)
    A_bar, _ = zoh_discretize(log_dt, A, B)
    assert np.all(np.abs(A_bar) < 1)


def test_zoh_returns_complex128_of_shape_h_by_m_from_float32_inputs():
    log_dt, A, B = random_stable_ssm(3, H=2, M=5)
    A_bar, B_bar = zoh_discretize(log_dt.astype(np.float32), A.astype(np.complex64), B.astype(np.complex64))
    assert A_bar.dtype == np.complex128 and B_bar.dtype == np.complex128
    assert A_bar.shape == (2, 5) and B_bar.shape == (2, 5)


def test_discrete_params_reads_either_form_as_complex128():
    log_dt, A, B = random_stable_ssm(11, H=2, M=2)
    cont = Op("s", "s4d", attrs={"form": "continuous", "modes": 2}, params={"log_dt": log_dt, "A": A, "B": B})
    a_c, b_c = discrete_params(cont)
    want_a, want_b = zoh_by_expm(math.exp(log_dt[1]), A[1, 0], B[1, 0])
    assert a_c[1, 0] == pytest.approx(want_a, rel=1e-10)
    assert b_c[1, 0] == pytest.approx(want_b, rel=1e-9)

    stored_a = np.array([[0.5 + 0.25j, -0.125j]], np.complex64)
    stored_b = np.array([[1 + 0j, 2 - 1j]], np.complex64)
    disc = Op("s", "s4d", attrs={"form": "discrete", "modes": 2}, params={"A_bar": stored_a, "B_bar": stored_b})
    a_d, b_d = discrete_params(disc)
    assert a_d.dtype == np.complex128 and b_d.dtype == np.complex128
    assert a_d.tolist() == [[0.5 + 0.25j, -0.125j]]
    assert b_d.tolist() == [[1 + 0j, 2 - 1j]]


def test_modes_shared_by_all_channels_discretize_with_a_step_per_mode():
    rng = np.random.default_rng(3)
    log_dt = rng.uniform(np.log(1e-3), np.log(0.5), 3)
    A = -np.exp(rng.uniform(-3, 1, 3)) + 1j * rng.uniform(-20, 20, 3)
    B = rng.standard_normal((3, 2)) + 1j * rng.standard_normal((3, 2))  # [P, H]
    op = Op(
        "s",
        "s4d",
        attrs={"form": "continuous", "modes": 3, "mixing": "dense"},
        params={"log_dt": log_dt, "A": A, "B": B, "C": np.zeros((2, 3), np.complex64)},
    )
    A_bar, B_bar = discrete_params(op)
    assert A_bar.shape == (3,) and B_bar.shape == (3, 2)
    for p in range(3):
        for h in range(2):
            want_a, want_b = zoh_by_expm(math.exp(log_dt[p]), A[p], B[p, h])
            assert A_bar[p] == pytest.approx(want_a, rel=1e-10)
            assert B_bar[p, h] == pytest.approx(want_b, rel=1e-9, abs=1e-12)
    assert state_size(op) == 3


def test_a_per_channel_layer_is_the_block_structured_case_of_the_shared_form():
    A_bar = np.array([[0.5 + 0.125j, 0.25j], [-0.5, 0.125]], np.complex64)
    B_bar = np.array([[1 + 1j, 2], [3, 4 - 1j]], np.complex64)
    C = np.array([[5, 6j], [7, 8]], np.complex64)
    op = Op(
        "s",
        "s4d",
        attrs={"form": "discrete", "modes": 2},
        params={"A_bar": A_bar, "B_bar": B_bar, "C": C, "D": np.zeros(2, np.float32)},
    )
    a, b, c = shared_form(op)
    assert a.tolist() == [0.5 + 0.125j, 0.25j, -0.5, 0.125]  # mode p = h * M + m
    assert b.tolist() == [[1 + 1j, 0], [2, 0], [0, 3], [0, 4 - 1j]]
    assert c.tolist() == [[5, 6j, 0, 0], [0, 0, 7, 8]]
    assert state_size(op) == 4
