"""`StepState`: the values a training step reads and returns.

Its own module so that the backend adapter (`training.backend`) and
`StepModel` (`training.step_model`) both import it and the core stays a
straight line: state -> backend -> step_model.
"""

from typing import NamedTuple


class StepState(NamedTuple):
    """Values (native tensors) of everything a step may read or update.

    A step is a function `(state, data) -> (logs, new_state)`: it builds a
    new `StepState` (`state._replace(...)`) and never changes the tensors of
    the one it received. Inside `fit` on torch and TensorFlow an entry may
    be the variable's own tensor, or the variable itself, when the step
    donates its state (`StepModel.donate_state`, backend NOTE 6).

    Args:
        trainable: List, values of `model.trainable_variables`.
        non_trainable: List, values of `model.non_trainable_variables`
            (BatchNorm statistics, seed generators...).
        optimizer: List, values of `model.optimizer.variables` (empty in a
            test step).
        metrics: List, values of `model.metrics_variables`.

    Example:

    >>> state = StepState(trainable=[ops.ones((2,))], non_trainable=[],
    ...                   optimizer=[], metrics=[])
    >>> new_state = state._replace(trainable=[2.0 * t for t in state.trainable])
    >>> ops.convert_to_numpy(new_state.trainable[0]).tolist()
    [2.0, 2.0]
    >>> ops.convert_to_numpy(state.trainable[0]).tolist()
    [1.0, 1.0]
    """

    trainable: list
    non_trainable: list
    optimizer: list
    metrics: list
