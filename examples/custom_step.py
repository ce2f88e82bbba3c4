"""A custom training step written once, run on the backend in KERAS_BACKEND.

    KERAS_BACKEND=torch python examples/custom_step.py

The step trains a regression model with an L1 loss through
`training.value_and_grad` and `StepModel.apply_gradients`, and donates its
state (`donate_state = True`, see docs/architecture.md).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from training import StepModel, StepState, value_and_grad  # noqa: E402


class L1Model(StepModel):
    # The step reads neither state.trainable nor state.optimizer after its
    # one apply_gradients call, so fit's top-level step on torch and
    # TensorFlow may update the variables in place (no copies).
    donate_state = True

    def compute_train_step(self, state, data):
        x, y = data

        def loss_fn(trainable):
            y_pred, non_trainable = self.stateless_call(
                trainable, state.non_trainable, x, training=True
            )
            return keras.ops.mean(keras.ops.abs(y_pred - y)), non_trainable

        (loss, non_trainable), grads = value_and_grad(loss_fn, has_aux=True)(
            state.trainable
        )
        trainable, optimizer = self.apply_gradients(state, grads)
        return {"l1": loss}, StepState(trainable, non_trainable, optimizer, state.metrics)


def main():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-1.0], [2.0], [0.5]]) + 1.0).astype("float32")
    inputs = keras.Input((4,))
    model = L1Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    history = model.fit(x, y, batch_size=64, epochs=20, verbose=0)
    print(f"backend {keras.backend.backend()}: L1 loss "
          f"{history.history['l1'][0]:.3f} -> {history.history['l1'][-1]:.3f}")


if __name__ == "__main__":
    main()
