"""`training.value_and_grad` on every backend: values, nesting, stop_gradient,
its errors, and no recorded graph at the top level on torch (NOTE 2)."""

import keras
import numpy as np
import pytest
from keras import ops

from tests.harness import current_backend
from training import value_and_grad


def _np(t):
    return keras.ops.convert_to_numpy(t)


def test_gradient_of_a_quadratic_over_a_dict_of_tensors():
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(3, 3)).astype("float32")
    params = {"w": ops.convert_to_tensor(rng.normal(size=3).astype("float32")),
              "unused": ops.ones((2,))}

    def loss_fn(p):
        return ops.sum(ops.matmul(ops.convert_to_tensor(matrix), p["w"]) ** 2)

    value, grads = value_and_grad(loss_fn)(params)
    w = _np(params["w"])
    np.testing.assert_allclose(_np(value), np.sum((matrix @ w) ** 2), rtol=1e-5)
    np.testing.assert_allclose(_np(grads["w"]), 2 * matrix.T @ (matrix @ w), rtol=1e-5)
    np.testing.assert_array_equal(_np(grads["unused"]), np.zeros(2))


def test_aux_outputs_are_returned_untouched():
    def loss_fn(w, scale):
        return ops.sum(w * scale), {"doubled": w * 2.0}

    (value, aux), grad = value_and_grad(loss_fn, has_aux=True)(ops.ones(3), 4.0)
    assert float(_np(value)) == 12.0
    np.testing.assert_allclose(_np(aux["doubled"]), [2.0, 2.0, 2.0])
    np.testing.assert_allclose(_np(grad), [4.0, 4.0, 4.0])


def _maml_problem():
    """Inner loss 0.5 w'Aw + b'w, one SGD step, outer loss 0.5 |Cw' - d|^2."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4, 4))
    hessian = (a @ a.T / 4 + np.eye(4)).astype("float32")
    b = rng.normal(size=4).astype("float32")
    c = rng.normal(size=(3, 4)).astype("float32")
    d = rng.normal(size=3).astype("float32")
    w = rng.normal(size=4).astype("float32")
    return hessian, b, c, d, w, 0.1


def _outer_loss_fn(hessian, b, c, d, lr, first_order):
    def inner_loss(w):
        return 0.5 * ops.sum(w * ops.matmul(hessian, w)) + ops.sum(b * w)

    def outer_loss(w):
        _, inner_grad = value_and_grad(inner_loss)(w)
        if first_order:
            inner_grad = ops.stop_gradient(inner_grad)
        fast_w = w - lr * inner_grad
        residual = ops.matmul(c, fast_w) - d
        return 0.5 * ops.sum(residual**2)

    return outer_loss


@pytest.mark.parametrize("first_order", [False, True])
def test_gradient_through_one_inner_sgd_step(first_order):
    hessian, b, c, d, w, lr = _maml_problem()
    outer_loss = _outer_loss_fn(
        *(ops.convert_to_tensor(t) for t in (hessian, b, c, d)), lr, first_order
    )
    value, grad = value_and_grad(outer_loss)(ops.convert_to_tensor(w))

    fast_w = w - lr * (hessian @ w + b)
    residual = c @ fast_w - d
    np.testing.assert_allclose(_np(value), 0.5 * residual @ residual, rtol=1e-5)
    if first_order:  # d/dw' only: the stop-gradient formula
        expected = c.T @ residual
    else:  # chain rule through w' = w - lr (Aw + b): Jacobian I - lr A
        expected = (np.eye(4) - lr * hessian).T @ c.T @ residual
    np.testing.assert_allclose(_np(grad), expected, rtol=1e-4, atol=1e-5)
    # The two variants differ on this problem, so each check can fail.
    assert np.abs(lr * hessian @ c.T @ residual).max() > 1e-3


def test_gradient_of_gradient_wrt_outer_parameters_of_nested_levels():
    # d/dx of (d/dy (x*y)^2 at y=3) = d/dx (2 x^2 * 3) = 12 x
    def inner(y, x):
        return ops.sum((x * y) ** 2)

    def outer(x):
        _, dy = value_and_grad(inner)(ops.convert_to_tensor([3.0]), x)
        return ops.sum(dy)

    _, dx = value_and_grad(outer)(ops.convert_to_tensor([2.0]))
    np.testing.assert_allclose(_np(dx), [24.0], rtol=1e-6)


@pytest.mark.parametrize(
    "has_aux, output, message",
    [
        (True, "scalar", r"has_aux=True .* pair \(value, aux\); it returned"),
        (True, "triple", r"pair \(value, aux\); it returned a tuple of length 3"),
        (False, "vector", r"must be a tensor of shape \(\); got .* shape \(3,\)"),
        (False, "pair", r"shape \(\).*pass has_aux=True"),
    ],
)
def test_misuse_raises_a_clear_value_error(has_aux, output, message):
    def fn(w):
        total = ops.sum(w**2)
        return {
            "scalar": total,
            "triple": (total, w, w),
            "vector": w**2,
            "pair": (total, w),
        }[output]

    with pytest.raises(ValueError, match=message):
        value_and_grad(fn, has_aux=has_aux)(ops.ones(3))


@pytest.mark.skipif(current_backend() != "torch",
                    reason="torch only: JAX and TensorFlow record no graph "
                    "outside a transformation/tape")
def test_top_level_torch_gradient_records_no_graph(monkeypatch):
    import torch

    calls = []
    grad = torch.autograd.grad

    def spy(*args, **kwargs):
        calls.append(kwargs.get("create_graph", False))
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", spy)

    def loss_fn(w):  # a gradient 3 w^2 that depends on w
        return ops.sum(w**3), {"cube": w**3}

    w = ops.convert_to_tensor(np.array([1.0, 2.0], "float32"))
    (value, aux), dw = value_and_grad(loss_fn, has_aux=True)(w)
    assert calls == [False]  # NOTE 2: no create_graph at the top level
    for name, tensor in (("value", value), ("aux", aux["cube"]), ("grad", dw)):
        assert tensor.grad_fn is None and not tensor.requires_grad, name
    np.testing.assert_allclose(_np(dw), [3.0, 12.0])

    # Nested: the inner gradient keeps its graph for the outer level.
    def outer(w):
        _, inner_grad = value_and_grad(lambda v: ops.sum(v**3))(w)
        assert inner_grad.requires_grad
        return ops.sum(inner_grad)

    calls.clear()
    _, d_outer = value_and_grad(outer)(w)
    assert calls == [True, False]
    np.testing.assert_allclose(_np(d_outer), [6.0, 12.0])
