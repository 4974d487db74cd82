"""Noise schedules and the v / eps / x0 conversions, against closed forms (METHOD.md section 3)."""

from __future__ import annotations

import math

import pytest
import torch

from cmmd.diffusion.parameterization import (
    eps_from_v,
    eps_from_x0,
    prediction_target,
    q_sample,
    v_from_eps,
    velocity_target,
    x0_from_eps,
    x0_from_prediction,
    x0_from_v,
)
from cmmd.diffusion.schedules import append_dims, cosine_alpha_bar, linear_alpha_bar, make_schedule


def _f(u: float, s: float = 0.008) -> float:
    return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2


def test_cosine_endpoints_and_closed_form():
    N = 1000
    ab = cosine_alpha_bar(N)
    assert ab.shape == (N,) and ab.dtype == torch.float64
    assert 1 - 1e-4 < ab[0] < 1
    assert ab[-1] < 1e-8
    # Telescoping product: alpha_bar[n] = f((n+1)/N) / f(0) until the clipped last beta.
    for n in (0, 1, 499, N - 2):
        assert ab[n].item() == pytest.approx(_f((n + 1) / N) / _f(0), rel=1e-10)
    assert ab[-1].item() == pytest.approx(ab[-2].item() * (1 - 0.999), rel=1e-12)


def test_linear_endpoints_and_closed_form():
    ab = linear_alpha_bar(1000)
    assert ab.shape == (1000,) and ab.dtype == torch.float64
    assert ab[0].item() == 1 - 1e-4
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    assert ab[-1].item() == pytest.approx(math.prod(1 - b for b in betas), rel=1e-9)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
@pytest.mark.parametrize("N", [1000, 50])
def test_strictly_decreasing_in_unit_interval(kind, N):
    sched = make_schedule(kind, N)
    ab = sched.alpha_bar
    assert sched.num_steps == N and sched.kind == kind
    assert bool((ab[1:] < ab[:-1]).all())
    assert bool((ab > 0).all()) and bool((ab < 1).all())


def test_make_schedule_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown noise schedule"):
        make_schedule("quadratic", 10)  # type: ignore[arg-type]


def test_alpha_bar_at_integer_float_and_midpoint():
    sched = make_schedule("cosine", 1000)
    n = torch.tensor([0, 5, 999])
    assert torch.equal(sched.alpha_bar_at(n), sched.alpha_bar[n])
    assert torch.equal(sched.alpha_bar_at(n.float()), sched.alpha_bar[n])  # integer-valued floats exact
    mid = sched.alpha_bar_at(torch.tensor([10.5]))
    geometric = (sched.alpha_bar[10] * sched.alpha_bar[11]).sqrt()
    assert mid.item() == pytest.approx(geometric.item(), rel=1e-12)


def test_append_dims_broadcasts_batch_values():
    values = torch.arange(3.0)
    assert append_dims(values, 5).shape == (3, 1, 1, 1, 1)
    assert append_dims(values, 1).shape == (3,)


@pytest.mark.parametrize("shape", [(4, 3, 2, 5, 5), (4, 80, 7), (4,)])
def test_conversions_invert_each_other(shape):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    ab = torch.tensor([1 - 1e-4, 0.7, 0.1, 2.4e-9], dtype=torch.float64)
    x_n = q_sample(x0, eps, ab)
    v = velocity_target(x0, eps, ab)
    ab_b = append_dims(ab, len(shape))
    torch.testing.assert_close(x_n, ab_b.sqrt() * x0 + (1 - ab_b).sqrt() * eps, rtol=0, atol=1e-15)
    torch.testing.assert_close(v, ab_b.sqrt() * eps - (1 - ab_b).sqrt() * x0, rtol=0, atol=1e-15)
    torch.testing.assert_close(x0_from_v(x_n, v, ab), x0, rtol=0, atol=1e-12)
    torch.testing.assert_close(eps_from_v(x_n, v, ab), eps, rtol=0, atol=1e-12)
    torch.testing.assert_close(v_from_eps(x_n[:3], eps[:3], ab[:3]), v[:3], rtol=0, atol=1e-12)
    torch.testing.assert_close(x0_from_eps(x_n[:3], eps[:3], ab[:3]), x0[:3], rtol=0, atol=1e-12)
    torch.testing.assert_close(eps_from_x0(x_n[1:], x0[1:], ab[1:]), eps[1:], rtol=0, atol=1e-12)
    # (x_n, v) is a rotation of (x0, eps): per-sample squared norms are preserved.
    dims = tuple(range(1, len(shape)))
    lhs = (x_n**2 + v**2).sum(dim=dims) if dims else x_n**2 + v**2
    rhs = (x0**2 + eps**2).sum(dim=dims) if dims else x0**2 + eps**2
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=0)


def test_prediction_dispatch_and_dtype():
    x0 = torch.randn(2, 3, 4)
    eps = torch.randn(2, 3, 4)
    ab = torch.tensor([0.3, 0.9], dtype=torch.float64)
    x_n = q_sample(x0, eps, ab)
    assert x_n.dtype == torch.float32
    assert torch.equal(prediction_target("eps", x0, eps, ab), eps)
    torch.testing.assert_close(x0_from_prediction("v", x_n, prediction_target("v", x0, eps, ab), ab), x0)
    torch.testing.assert_close(x0_from_prediction("eps", x_n, eps, ab), x0)
    with pytest.raises(ValueError, match="unknown prediction"):
        prediction_target("x0", x0, eps, ab)  # type: ignore[arg-type]
