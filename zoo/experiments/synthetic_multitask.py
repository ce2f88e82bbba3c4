"""Default experiment: a synthetic multi-task regression trained with fit.

Trains `TaskConditionedMLP` (a `StepModel`, so through the project's
training core) on `make_synthetic_tasks` and reports the held-out mean
squared error per task next to the error of predicting each task's mean
target. Interrupted runs resume from `--output-dir` (BackupAndRestore).
"""

import os

DESCRIPTION = (
    "Synthetic multi-task regression (no download): a task-conditioned MLP "
    "trained with model.fit through the training core."
)


def add_arguments(parser):
    from zoo.__main__ import positive_float, positive_int

    parser.add_argument("--num-tasks", type=positive_int, default=4)
    parser.add_argument("--samples-per-task", type=positive_int, default=512)
    parser.add_argument("--epochs", type=positive_int, default=30)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--learning-rate", type=positive_float, default=3e-3)


def run(args):
    import keras
    import numpy as np

    from zoo.models import TaskConditionedMLP
    from zoo.tasks import make_synthetic_tasks

    keras.utils.set_random_seed(args.seed)
    features, task_ids, targets = make_synthetic_tasks(
        num_tasks=args.num_tasks,
        samples_per_task=args.samples_per_task,
        seed=args.seed,
    )
    split = int(0.8 * len(features))
    train = ((features[:split], task_ids[:split]), targets[:split])
    val_x = (features[split:], task_ids[split:])
    val_y = targets[split:]

    model = TaskConditionedMLP(num_tasks=args.num_tasks, output_dim=targets.shape[-1])
    model((features[:1], task_ids[:1]))  # built, so BackupAndRestore can restore it
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate), loss="mse"
    )
    callbacks = []
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        callbacks += [
            keras.callbacks.BackupAndRestore(os.path.join(args.output_dir, "backup")),
            keras.callbacks.CSVLogger(
                os.path.join(args.output_dir, "history.csv"), append=True
            ),
        ]
    history = model.fit(
        *train,
        validation_data=(val_x, val_y),
        epochs=args.epochs,
        batch_size=args.batch_size,
        callbacks=callbacks,
        verbose=args.verbose,
    )
    predictions = model.predict(val_x, batch_size=256, verbose=0)
    per_task_mse, per_task_mean_baseline = {}, {}
    for task in range(args.num_tasks):
        in_task = val_x[1] == task
        train_mean = train[1][train[0][1] == task].mean(axis=0)
        per_task_mse[task] = float(np.mean((predictions[in_task] - val_y[in_task]) ** 2))
        per_task_mean_baseline[task] = float(np.mean((train_mean - val_y[in_task]) ** 2))
    if args.output_dir:
        model.save(os.path.join(args.output_dir, "model.keras"))
    return {
        "final_train_loss": float(history.history["loss"][-1]),
        "final_val_loss": float(history.history["val_loss"][-1]),
        "val_mse_per_task": per_task_mse,
        "val_mse_predicting_task_mean": per_task_mean_baseline,
    }
