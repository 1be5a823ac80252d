"""Property tests over every bijection: invertibility and log-determinants against jax.jacobian."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import perturb

from jaxhep.bijections import (Affine, BoxToReal, Chain, Coupling, Invert, LULinear, MaskedAutoregressive,
                               Permutation, SplineTransformer, Stacked, alternating_mask)
from jaxhep.compilation import filter_jit

DIM, COND = 3, 2


def _registry():
    k = jax.random.split(jax.random.key(0), 8)
    return {
        "affine": Affine(jnp.array([0.5, -1.0, 2.0]), jnp.array([0.5, 2.0, 1.5])),
        "permutation": Permutation([2, 0, 1]),
        "lu_linear": perturb(LULinear(DIM), k[0]),
        "coupling_affine": perturb(Coupling(DIM, alternating_mask(DIM, True), COND, "affine", 16, key=k[1]), k[2]),
        "coupling_spline": perturb(Coupling(DIM, alternating_mask(DIM, False), COND, "spline", 16, num_bins=6,
                                             key=k[3]), k[4]),
        "coupling_spline_nflows": perturb(Coupling(DIM, alternating_mask(DIM, True), COND, "spline", 16, num_bins=6,
                                                    layout="nflows", key=k[6]), k[7]),
        "coupling_spline_spare_slots": perturb(Coupling(DIM, [False, True, False], COND, "spline", 16, num_bins=6,
                                                         slots=3, key=k[2]), k[5]),
        "made_affine": perturb(MaskedAutoregressive(DIM, COND, "affine", 16, key=k[5]), k[6]),
        "made_spline": perturb(MaskedAutoregressive(DIM, COND, "spline", 16, num_bins=5, key=k[7]), k[0], 0.2),
        "unconditional_made": perturb(MaskedAutoregressive(DIM, 0, "affine", 16, key=k[2]), k[3]),
        "box": BoxToReal(jnp.array([-1.0, 0.0, -jnp.inf]), jnp.array([2.0, jnp.inf, 3.0])),
        "chain": Chain([perturb(Coupling(DIM, alternating_mask(DIM, True), COND, "spline", 16, key=k[5]), k[1]),
                        Permutation([1, 2, 0]), perturb(LULinear(DIM), k[7])]),
        # Odd DIM: the layers with one transformed dimension carry a spare slot (slots=2).
        "stacked": Stacked([Chain([perturb(Coupling(DIM, alternating_mask(DIM, i % 2 == 0), COND, "spline", 16,
                                                      num_bins=4, slots=2, key=kk), kk), perturb(LULinear(DIM), kk)])
                            for i, kk in enumerate(jax.random.split(k[3], 3))]),
        "invert": Invert(perturb(Coupling(DIM, alternating_mask(DIM, True), COND, "affine", 16, key=k[6]), k[4])),
    }


REGISTRY = _registry()


def _points(name, key, n=8):
    x = jax.random.normal(key, (n, DIM)) * 1.5
    if name == "box":  # points inside the box's domain
        u = jax.random.uniform(key, (n, DIM), minval=0.05, maxval=0.95)
        x = jnp.stack([-1 + 3 * u[:, 0], 4 * u[:, 1], 3 - 4 * u[:, 2]], axis=1)
    return x


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_inverse_of_forward_is_identity(name):
    bij = REGISTRY[name]
    x = _points(name, jax.random.key(1))
    c = jax.random.normal(jax.random.key(2), (x.shape[0], COND))
    y, ld = jax.vmap(bij.transform_and_log_det)(x, c)
    x_back, ld_inv = jax.vmap(bij.inverse_and_log_det)(y, c)
    np.testing.assert_allclose(x_back, x, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(ld_inv, -ld, atol=1e-4, rtol=1e-5)
    # The map must do something: identity maps would pass the inversion test trivially.
    assert float(jnp.max(jnp.abs(y - x))) > 1e-2


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_log_det_matches_jacobian(name):
    bij = REGISTRY[name]
    x = _points(name, jax.random.key(3), n=4)
    c = jax.random.normal(jax.random.key(4), (4, COND))

    @jax.jit
    @jax.vmap
    def check(xi, ci):
        y, ld = bij.transform_and_log_det(xi, ci)
        jac = jax.jacobian(lambda v: bij.transform_and_log_det(v, ci)[0])(xi)
        _, ld_inv = bij.inverse_and_log_det(y, ci)
        jac_inv = jax.jacobian(lambda v: bij.inverse_and_log_det(v, ci)[0])(y)
        return ld, jnp.linalg.slogdet(jac)[1], ld_inv, jnp.linalg.slogdet(jac_inv)[1]

    ld, ld_ref, ld_inv, ld_inv_ref = check(x, c)
    np.testing.assert_allclose(ld, ld_ref, atol=5e-4, rtol=1e-4)
    np.testing.assert_allclose(ld_inv, ld_inv_ref, atol=5e-4, rtol=1e-4)


def test_autoregressive_structure():
    """Output i of a MADE bijection depends on inputs <= i only (lower-triangular Jacobian)."""
    bij = REGISTRY["made_spline"]
    jac = jax.jit(jax.jacobian(lambda v: bij.transform(v, jnp.ones(COND))))(jnp.array([0.3, -0.7, 1.1]))
    np.testing.assert_allclose(jnp.triu(jac, 1), 0.0, atol=1e-7)
    assert float(jnp.abs(jac[2, 0])) > 0


def test_conditioning_changes_the_map():
    bij = REGISTRY["coupling_spline"]
    x = jnp.array([0.2, -0.4, 0.9])
    assert float(jnp.max(jnp.abs(bij.transform(x, jnp.zeros(COND)) - bij.transform(x, jnp.ones(COND))))) > 1e-3


@pytest.mark.parametrize("dim", [1, 3])
@pytest.mark.parametrize("transformer", ["affine", "spline"])
def test_every_made_output_depends_on_the_condition(dim, transformer):
    # Including the first, which sees no input: a one-dimensional conditional MAF used to
    # ignore its condition.
    bij = perturb(MaskedAutoregressive(dim, COND, transformer, 16, num_bins=5, key=jax.random.key(1)),
                  jax.random.key(2), 0.2)
    x = jnp.linspace(-0.5, 0.5, dim)
    jac_c = jax.jacobian(lambda c: bij.transform(x, c))(jnp.array([0.3, -0.2]))
    assert np.all(np.max(np.abs(np.asarray(jac_c)), axis=1) > 1e-3)
    jac = jax.jacobian(lambda v: bij.transform(v, jnp.ones(COND)))(x)
    np.testing.assert_allclose(jnp.triu(jac, 1), 0.0, atol=1e-7)


def test_spline_inverse_has_finite_gradients_in_the_tails():
    spline = SplineTransformer(6, 3.0)
    params = 0.5 * jax.random.normal(jax.random.key(3), (6, 3 * 6 + 1))
    y = jnp.array([-5.0, -3.5, -3.0, 3.0, 3.5, 5.0])  # all on or beyond the bound: identity there

    def f(y, p):
        x, ld = spline.inverse(y, p)
        return jnp.sum(x ** 2 + ld)

    gy, gp = jax.grad(f, (0, 1))(y, params)
    np.testing.assert_allclose(gy, 2 * y, rtol=1e-6)
    np.testing.assert_array_equal(gp, 0.0)
    # (A spline flow's `sample` runs this inverse on base draws, of which those beyond the bound
    # gave NaN gradients to everything differentiated through sampling.)


def test_conditional_bijections_check_their_condition():
    x = jnp.zeros(DIM)
    for name in ("coupling_spline", "made_affine"):
        bij = REGISTRY[name]
        with pytest.raises(ValueError, match="got None"):
            bij.transform(x)
        with pytest.raises(ValueError, match=rf"shape \({COND},\), got shape \(3,\)"):
            bij.transform(x, jnp.zeros(3))
        with pytest.raises(ValueError, match=rf"shape \({COND},\)"):
            eqx.filter_jit(lambda b, y, c: b.inverse(y, c))(bij, x, jnp.zeros((4, COND)))


def test_box_maps_into_support_and_flags_domain():
    box = REGISTRY["box"]
    y = jax.random.normal(jax.random.key(5), (1000, DIM)) * 5
    x = jax.vmap(box.inverse)(y)
    assert bool(jnp.all(jax.vmap(box.in_domain)(x)))
    assert not bool(box.in_domain(jnp.array([2.5, 1.0, 0.0])))
    # Far out in y the inverse's gradients stay finite (an exp that overflowed in a branch
    # jnp.where discards gave NaN gradients, in every dimension of that kind).
    for y in ([100.0, 0.0, 0.0], [-100.0, 0.0, 0.0], [0.0, -100.0, 0.0], [0.0, 0.0, 100.0]):
        grads = jax.grad(lambda v: jnp.sum(box.inverse(v)) + box.inverse_and_log_det(v)[1])(jnp.array(y))
        assert bool(jnp.all(jnp.isfinite(grads))), (y, grads)


def test_box_resolves_both_ends_in_float64(x64):
    """Within 1e-7 of the upper bound the map was clipped (u <= 1 - 1e-7) even in float64: not
    invertible there, and its log-det off by several nats."""
    box = BoxToReal(jnp.zeros(1), jnp.ones(1))
    for x in (1e-9, 1 - 1e-9):
        y, ld = box.transform_and_log_det(jnp.array([x]))
        exact = np.log(x) - np.log1p(-x)
        np.testing.assert_allclose(float(y[0]), exact, rtol=1e-9)
        np.testing.assert_allclose(float(ld), -np.log(x) - np.log1p(-x), rtol=1e-9)
        np.testing.assert_allclose(float(box.inverse(y)[0]), x, rtol=1e-12)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="permutation"):
        Permutation([0, 0, 1])
    with pytest.raises(ValueError, match="mask"):
        Coupling(3, [False, False, False], key=jax.random.key(0))
    with pytest.raises(ValueError, match="transformer"):
        Coupling(3, [True, False, False], transformer="cubic", key=jax.random.key(0))
    for slots in (1, 4, 2.0):
        with pytest.raises(ValueError, match="slots"):
            Coupling(3, [True, True, False], slots=slots, key=jax.random.key(0))
    with pytest.raises(ValueError, match="share dim"):
        Chain([Permutation([0, 1]), Permutation([0, 1, 2])])
    with pytest.raises(ValueError, match="low < high"):
        BoxToReal(jnp.array([1.0]), jnp.array([0.0]))
    # Spline settings are checked where the spline is made, not at its first call.
    for bound in (0.0, -3.0, float("inf"), float("nan"), True, "3"):
        with pytest.raises(ValueError, match="bound must be a positive finite number"):
            SplineTransformer(bound=bound)
        with pytest.raises(ValueError, match="bound must be a positive finite number"):
            Coupling(3, [True, False, False], transformer="spline", bound=bound, key=jax.random.key(0))
    for bins in (0, 2.5, True):
        with pytest.raises(ValueError, match="num_bins must be a positive integer"):
            SplineTransformer(num_bins=bins)
    with pytest.raises(ValueError, match="backend"):
        SplineTransformer(backend="torch")
    with pytest.raises(ValueError, match="style"):
        SplineTransformer(style="torch")
    with pytest.raises(ValueError, match="backend='distrax'"):
        SplineTransformer(backend="distrax", style="nflows")
    with pytest.raises(ValueError, match="layout"):
        Coupling(3, [True, False, False], layout="sbi", key=jax.random.key(0))
    with pytest.raises(ValueError, match="transformer must be 'spline'"):
        Coupling(3, [True, False, False], transformer="affine", layout="nflows", key=jax.random.key(0))
    for width in (0, 2.5):
        with pytest.raises(ValueError, match="width"):
            MaskedAutoregressive(3, 2, width=width, key=jax.random.key(0))


def test_support_bounds_of_each_kind_of_support():
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    from jaxhep.bijections.support import support_bounds

    class Bounded:  # all support_bounds reads of a prior
        def __init__(self, support):
            self.support = support

    cases = [
        (dist.Normal(jnp.zeros(2)).to_event(1), [-np.inf, -np.inf], [np.inf, np.inf]),
        (dist.Uniform(jnp.array([0.0, -1.0]), jnp.array([1.0, 2.0])).to_event(1), [0.0, -1.0], [1.0, 2.0]),
        (dist.Exponential(jnp.ones(2)).to_event(1), [0.0, 0.0], [np.inf, np.inf]),
        (Bounded(constraints.independent(constraints.greater_than(jnp.array([1.0, 2.0])), 1)), [1.0, 2.0],
         [np.inf, np.inf]),
        (Bounded(constraints.independent(constraints.less_than(jnp.array([1.0, 2.0])), 1)), [-np.inf, -np.inf],
         [1.0, 2.0]),
    ]
    for prior, low, high in cases:
        lo, hi = support_bounds(prior, 2)
        np.testing.assert_array_equal(lo, low)
        np.testing.assert_array_equal(hi, high)
    with pytest.raises(ValueError, match="not a box"):
        support_bounds(dist.Dirichlet(jnp.ones(2)), 2)


def test_stacked_equals_chain_of_its_layers():
    """Stacked computes what every layer takes from the condition for all layers before its loop;
    values and gradients (parameters, inputs, condition) are those of the layers in a Chain."""
    st = REGISTRY["stacked"]
    x = _points("stacked", jax.random.key(6))
    c = jax.random.normal(jax.random.key(7), (x.shape[0], COND))

    @filter_jit
    def run(args, chain):
        def apply(args, direction):
            st, x, c = args
            bij = Chain([st.layer(i) for i in range(st.num_layers)]) if chain else st
            return jax.vmap(getattr(bij, direction))(x, c)

        def scalar(args):
            y, ld = apply(args, "transform_and_log_det")
            return jnp.sum(jnp.sin(y)) + jnp.sum(ld)

        return (apply(args, "transform_and_log_det"), apply(args, "inverse_and_log_det"),
                eqx.filter_grad(scalar)(args))

    ours, chained = run((st, x, c), False), run((st, x, c), True)
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(chained), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert float(jnp.max(jnp.abs(ours[2][2]))) > 1e-3  # the condition's gradient is not trivially zero


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_spline_matches_distrax(direction):
    """The batched spline and distrax's RationalQuadraticSpline are the same map."""
    ours, ref = SplineTransformer(8, 3.0, "jaxhep"), SplineTransformer(8, 3.0, "distrax")
    params = jax.random.normal(jax.random.key(7), (2000, 25))
    v = 2.5 * jax.random.normal(jax.random.key(8), (2000,))  # about 20% fall in the linear tails
    y1, l1 = getattr(ours, direction)(v, params)
    y2, l2 = getattr(ref, direction)(v, params)
    np.testing.assert_allclose(y1, y2, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(l1, l2, atol=2e-4, rtol=1e-4)


def test_coupling_spare_slots_change_nothing():
    # A layer with spare slots computes transformer parameters for pass-through dimensions and
    # discards them: with the used rows of its output layer equal to those of the layer without
    # spares, the two maps agree, and the pass-through dimensions are copied exactly.
    key = jax.random.key(3)
    plain = perturb(Coupling(4, [False, True, False, True], COND, "spline", 16, num_bins=5, key=key), key)
    spare = Coupling(4, [False, True, False, True], COND, "spline", 16, num_bins=5, slots=4, key=key)
    used = plain.conditioner.final.weight.shape[0]
    noise = jax.random.normal(jax.random.key(4), spare.conditioner.final.weight.shape)
    weight = noise.at[:used].set(plain.conditioner.final.weight)
    bias = jnp.ones(spare.conditioner.final.bias.shape).at[:used].set(plain.conditioner.final.bias)
    spare = eqx.tree_at(lambda c: (c.conditioner.initial, c.conditioner.blocks, c.conditioner.final.weight,
                                   c.conditioner.final.bias),
                        spare, (plain.conditioner.initial, plain.conditioner.blocks, weight, bias))
    x = jax.random.normal(jax.random.key(5), (16, 4)) * 1.5
    c = jax.random.normal(jax.random.key(6), (16, COND))
    y_plain, ld_plain = jax.vmap(plain.transform_and_log_det)(x, c)
    y_spare, ld_spare = jax.vmap(spare.transform_and_log_det)(x, c)
    np.testing.assert_allclose(y_spare, y_plain, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ld_spare, ld_plain, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(y_spare[:, [0, 2]], x[:, [0, 2]])
    assert float(jnp.max(jnp.abs(y_spare[:, [1, 3]] - x[:, [1, 3]]))) > 1e-2


def test_nflows_spline_parameterisation_in_closed_form():
    """nflows' spline (sbi's NSF): 3K - 1 raw numbers; zero logits give equal bins, zero slope
    numbers give inner slopes 1e-3 + log 2 (no offset), and the boundary slopes are one. The
    logits are divided by logit_scale. (experiments/benchmarks/check_sbi_layout.py compares the
    whole network with nflows itself.)"""
    from jaxhep.bijections.rqs import spline_knots

    K, B = 4, 3.0
    spline = SplineTransformer(K, B, style="nflows", logit_scale=5.0)
    assert spline.num_params == 3 * K - 1 and SplineTransformer(K, B).num_params == 3 * K + 1
    x_pos, y_pos, slopes = spline_knots(jnp.zeros((1, 3 * K - 1)), B, "nflows", 5.0)
    np.testing.assert_allclose(x_pos[0], np.linspace(-B, B, K + 1), atol=1e-6)
    np.testing.assert_allclose(y_pos[0], np.linspace(-B, B, K + 1), atol=1e-6)
    np.testing.assert_allclose(slopes[0], [1.0] + [1e-3 + np.log(2.0)] * (K - 1) + [1.0], rtol=1e-6)
    # Logits p with scale s are logits p / s with scale 1; the slope numbers are not scaled.
    raw = jax.random.normal(jax.random.key(3), (5, 3 * K - 1)) * 4
    scaled = raw.at[:, :2 * K].divide(5.0)
    for a, b in zip(spline_knots(raw, B, "nflows", 5.0), spline_knots(scaled, B, "nflows", 1.0)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # The smallest bin is 1e-3 of the interval: one huge logit leaves the others at that size.
    x_pos, _, _ = spline_knots(jnp.array([[1e4, 0.0, 0.0, 0.0] + [0.0] * (2 * K - 1)]), B, "nflows", 1.0)
    np.testing.assert_allclose(np.diff(np.asarray(x_pos[0]))[1:], 1e-3 * 2 * B, rtol=1e-4)
    # Inside: the rational-quadratic map of the middle bin at zero parameters (equal bins, slopes
    # d at both knots of an inner bin): g(xi) = y0 + h (s xi^2 + d xi (1 - xi)) / (s + (2d - 2s) xi (1 - xi)), s = 1.
    d, h, xi = 1e-3 + np.log(2.0), 2 * B / K, 0.3
    v = -B + h + xi * h  # in the second bin, whose knots are both inner
    y, _ = spline.forward(jnp.array([v]), jnp.zeros((1, 3 * K - 1)))
    t = xi * (1 - xi)
    np.testing.assert_allclose(y[0], -B + h + h * (xi**2 + d * t) / (1 + (2 * d - 2) * t), rtol=1e-5)
