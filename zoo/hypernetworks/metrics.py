"""Metrics of the meta-learning experiments beyond query loss and accuracy.

`linear_decodability`: how linearly the ground-truth task latents can be
read out of the adapted fast parameters (paper Section 5 / Figure 4;
authors' `callbacks.py`): a ridge regression (l2 = 1, with intercept) is fit
from the adapted fast parameters of in-distribution tasks to their latents,
and scored by R^2 on OOD tasks.

NOTE 1 (official code): the authors solve each latent coordinate's ridge
  problem with 10 conjugate-gradient iterations and regularise the
  intercept too. Here the exact solution in dual form (n_tasks x n_tasks,
  so MAML's tens of thousands of fast parameters cost nothing) with an
  unregularised intercept (centred data). R^2 is averaged over the latent
  coordinates that vary on the OOD tasks.
"""

import numpy as np


def flatten_fast_params(fast_params):
    """List of (T, ...) arrays -> (T, total) float64 features."""
    return np.concatenate(
        [np.asarray(p, np.float64).reshape(len(p), -1) for p in fast_params],
        axis=1,
    )


def linear_decodability(train_features, train_latents, ood_features,
                        ood_latents, l2=1.0):
    """R^2 on OOD tasks of a ridge regression features -> latents.

    Args:
        train_features: (n, f) adapted fast parameters of training-family
            tasks (or a list of (n, ...) arrays, flattened).
        train_latents: (n, k) their ground-truth latents.
        ood_features, ood_latents: the same for held-out tasks.
        l2: Ridge strength (1.0, the authors').

    Returns:
        The mean R^2 over latent coordinates that vary on the OOD tasks
        (1: perfectly decodable; <= 0: no better than the mean).

    Example:

    >>> rng = np.random.default_rng(0)
    >>> latents = rng.normal(size=(200, 3))
    >>> features = latents @ rng.normal(size=(3, 10))
    >>> r2 = linear_decodability(features[:150], latents[:150],
    ...                          features[150:], latents[150:], l2=1e-6)
    >>> round(r2, 4)
    1.0
    """
    if isinstance(train_features, (list, tuple)):
        train_features = flatten_fast_params(train_features)
    if isinstance(ood_features, (list, tuple)):
        ood_features = flatten_fast_params(ood_features)
    x = np.asarray(train_features, np.float64)
    y = np.asarray(train_latents, np.float64)
    x_ood = np.asarray(ood_features, np.float64)
    y_ood = np.asarray(ood_latents, np.float64)
    if len(x) != len(y) or len(x_ood) != len(y_ood) or len(x) < 2:
        raise ValueError(
            "linear_decodability needs matching (n, f) features and (n, k) "
            f"latents with n >= 2; got {x.shape}, {y.shape}, {x_ood.shape}, "
            f"{y_ood.shape}."
        )
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    # NOTE 1: dual ridge, w = X^T (X X^T + l2 I)^-1 Y.
    dual = np.linalg.solve(xc @ xc.T + l2 * np.eye(len(xc)), yc)
    predictions = (x_ood - x_mean) @ (xc.T @ dual) + y_mean
    residual = ((y_ood - predictions) ** 2).sum(0)
    total = ((y_ood - y_ood.mean(0)) ** 2).sum(0)
    varies = total > 1e-12
    if not varies.any():
        return float("nan")
    return float(np.mean(1.0 - residual[varies] / total[varies]))
