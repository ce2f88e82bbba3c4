"""The experiment runner and the default synthetic experiment."""

import json

import keras
import numpy as np
import pytest

from zoo.__main__ import main
from zoo.tasks import make_synthetic_tasks


def test_list_names_the_default_experiment(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "hyperteacher (default)" in out
    assert "synthetic-multitask:" in out


def test_default_experiment_learns_and_saves(tmp_path, capsys):
    out_dir = tmp_path / "run"
    assert main(["run", "synthetic-multitask", "--backend",
                 keras.backend.backend(), "--epochs", "15",
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


@pytest.mark.parametrize("option, value", [
    ("--epochs", "-1"), ("--epochs", "0"), ("--batch-size", "abc"),
    ("--learning-rate", "-0.1"), ("--seed", "-3"), ("--num-tasks", "0"),
])
def test_out_of_range_option_is_a_usage_error(option, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "synthetic-multitask", option, value, "--output-dir", ""])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: expected" in err
    assert "Traceback" not in err


def test_missing_backend_names_the_extra(monkeypatch, capsys):
    """A backend that is not installed is one line naming the extra."""
    import importlib.util

    backend = keras.backend.backend()
    module = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}[backend]
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name == module else real_find_spec(name, *a))
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--backend", backend, "--output-dir", ""])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"pip install 'modular-zoo[{backend}]'" in err


def test_missing_experiment_extra_names_the_extra(monkeypatch, capsys):
    from zoo.experiments import synthetic_multitask

    monkeypatch.setattr(synthetic_multitask, "REQUIRES",
                        [("no_such_package_xyz", "rl")], raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "synthetic-multitask", "--backend",
              keras.backend.backend(), "--output-dir", ""])
    assert exit_info.value.code == 2
    assert "pip install 'modular-zoo[rl]'" in capsys.readouterr().err


@pytest.mark.slow
def test_default_experiment_full_run_reproduces_its_documented_result(
        tmp_path, capsys):
    """The README's synthetic run (30 epochs, 512 samples per task): every
    task's held-out MSE is below a fifth of the per-task-mean baseline."""
    assert main(["run", "synthetic-multitask", "--backend",
                 keras.backend.backend(), "--verbose", "0",
                 "--output-dir", str(tmp_path / "run")]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    for task, mse in results["val_mse_per_task"].items():
        assert mse < 0.2 * results["val_mse_predicting_task_mean"][task]


def test_synthetic_tasks_are_reproducible_and_validated():
    first = make_synthetic_tasks(num_tasks=3, samples_per_task=5, seed=1)
    second = make_synthetic_tasks(num_tasks=3, samples_per_task=5, seed=1)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert sorted(np.bincount(first[1]).tolist()) == [5, 5, 5]
    with pytest.raises(ValueError, match="num_tasks"):
        make_synthetic_tasks(num_tasks=0)


def test_task_conditioned_mlp_rejects_out_of_range_ids():
    from zoo.models import TaskConditionedMLP

    model = TaskConditionedMLP(num_tasks=2, output_dim=1)
    with pytest.raises(ValueError, match="out of range"):
        model((np.zeros((2, 3), "float32"), np.array([0, 2], "int32")))


def test_listing_experiments_imports_no_framework():
    """`python -m zoo list` (and building every experiment's options) must
    not import keras or TensorFlow: the backend is chosen afterwards."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from zoo.__main__ import _parser\n"
            "_parser()\n"
            "import zoo.mint, zoo.mint.experiments, zoo.hypernetworks.experiments\n"
            "loaded = [m for m in ('keras', 'tensorflow', 'jax', 'torch', "
            "'tensorflow_datasets', 'sklearn') if m in sys.modules]\n"
            "print(loaded)\n")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, check=True).stdout
    assert output.strip() == "[]"


def test_missing_data_is_one_line(monkeypatch, capsys):
    """An experiment whose data is missing ends with one line, exit 2."""
    from zoo.experiments import synthetic_multitask
    from zoo.extras import MissingDataError

    def no_data(args):
        raise MissingDataError("the data is not in DIR; get it with CMD")

    monkeypatch.setattr(synthetic_multitask, "run", no_data)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "synthetic-multitask", "--backend", keras.backend.backend(),
              "--output-dir", ""])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: the data is not in DIR; get it with CMD\n"
