"""The experiment runner and the default synthetic experiment."""

import json

import keras
import numpy as np
import pytest

from zoo.__main__ import main
from zoo.tasks import make_synthetic_tasks


def test_list_names_the_default_experiment(capsys):
    assert main(["list"]) == 0
    assert "synthetic-multitask (default)" in capsys.readouterr().out


def test_default_experiment_learns_and_saves(tmp_path, capsys):
    out_dir = tmp_path / "run"
    assert main(["run", "--backend", keras.backend.backend(), "--epochs", "15",
                 "--samples-per-task", "256", "--verbose", "0",
                 "--output-dir", str(out_dir)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["experiment"] == "synthetic-multitask"
    results = report["results"]
    # The model beats predicting each task's mean target on held-out data.
    for task, mse in results["val_mse_per_task"].items():
        assert mse < 0.5 * results["val_mse_predicting_task_mean"][task]
    assert (out_dir / "model.keras").exists()
    assert len((out_dir / "history.csv").read_text().strip().splitlines()) == 16
    loaded = keras.saving.load_model(out_dir / "model.keras")
    assert loaded.num_tasks == 4


def test_unknown_experiment_is_a_clear_error():
    with pytest.raises(SystemExit):
        main(["run", "no-such-experiment"])


def test_synthetic_tasks_are_reproducible_and_validated():
    first = make_synthetic_tasks(num_tasks=3, samples_per_task=5, seed=1)
    second = make_synthetic_tasks(num_tasks=3, samples_per_task=5, seed=1)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert sorted(np.bincount(first[1]).tolist()) == [5, 5, 5]
    with pytest.raises(ValueError, match="num_tasks"):
        make_synthetic_tasks(num_tasks=0)


def test_task_conditioned_mlp_rejects_out_of_range_ids():
    from zoo.models import TaskConditionedMLP

    model = TaskConditionedMLP(num_tasks=2, output_dim=1)
    with pytest.raises(ValueError, match="out of range"):
        model((np.zeros((2, 3), "float32"), np.array([0, 2], "int32")))
