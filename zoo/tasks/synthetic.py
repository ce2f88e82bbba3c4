"""A small synthetic multi-task regression problem that needs no download.

Every task shares a nonlinear feature map and has its own affine read-out:

    h = tanh(x W_shared),    y_k = h A_k + c_k,    x ~ N(0, I)

so a model must share what is common and specialise per task. Tasks differ
in their full matrices A_k, which a diagonal (FiLM-like) modulation cannot
express but a per-task matrix (MINT) can.
"""

import numpy as np


def make_synthetic_tasks(
    num_tasks=4,
    input_dim=8,
    output_dim=4,
    hidden_dim=16,
    samples_per_task=256,
    noise=0.01,
    seed=0,
):
    """Returns `(features, task_ids, targets)` as NumPy arrays.

    Args:
        num_tasks: number of tasks.
        input_dim, output_dim, hidden_dim: sizes of x, y and the shared h.
        samples_per_task: examples drawn per task (the batch is shuffled, so
            every batch mixes tasks).
        noise: standard deviation of Gaussian noise added to y.
        seed: NumPy seed; the same seed gives the same tasks and data.

    Returns:
        features (N, input_dim) float32, task_ids (N,) int32 and targets
        (N, output_dim) float32, N = num_tasks * samples_per_task.

    Example:
    >>> x, task, y = make_synthetic_tasks(num_tasks=3, samples_per_task=10)
    >>> x.shape, task.shape, y.shape
    ((30, 8), (30,), (30, 4))
    """
    if num_tasks < 1 or samples_per_task < 1:
        raise ValueError(
            "num_tasks and samples_per_task must be >= 1; got "
            f"{num_tasks} and {samples_per_task}."
        )
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(input_dim, hidden_dim)) / np.sqrt(input_dim)
    readouts = rng.normal(size=(num_tasks, hidden_dim, output_dim))
    offsets = rng.normal(size=(num_tasks, output_dim))
    total = num_tasks * samples_per_task
    task_ids = rng.permutation(np.repeat(np.arange(num_tasks), samples_per_task))
    features = rng.normal(size=(total, input_dim))
    hidden = np.tanh(features @ shared)
    targets = np.einsum("nh,nho->no", hidden, readouts[task_ids]) + offsets[task_ids]
    targets += noise * rng.normal(size=targets.shape)
    return (
        features.astype("float32"),
        task_ids.astype("int32"),
        targets.astype("float32"),
    )
