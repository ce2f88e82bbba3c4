"""The `mint-offline` and `mint-cifar100` experiments of the runner."""

import json

import keras
import numpy as np
import pytest

from zoo.__main__ import main


def run_offline(tmp_path, capsys, *options):
    argv = ["run", "mint-offline", "--backend", keras.backend.backend(),
            "--verbose", "0", "--output-dir", str(tmp_path), *options]
    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out[out.index("{\n"):]), out


def test_mint_beats_multi_head_on_permuted_digits(tmp_path, capsys):
    """The offline benchmark's claim: with a per-task pixel permutation, a
    shared trunk with task heads (1-fc) cannot undo the permutations, Mint's
    per-task matrices can re-map the features of the shared first layer.
    Measured with the preset (10 epochs, ~2,000 steps; 3 seeds, JAX):
    1-fc 0.883 +/- 0.006, Mint 0.911 +/- 0.009 (docs/results.md). Two seeds
    here; the margin is about two standard deviations of the difference."""
    report, printed = run_offline(tmp_path, capsys, "--models", "1-fc,mint",
                                  "--seeds", "2")
    results = report["results"]
    assert results["mint"]["test_accuracy_mean"] > 0.85
    assert (results["mint"]["test_accuracy_mean"]
            > results["1-fc"]["test_accuracy_mean"] + 0.01)
    # The printed tables: one row per model, then one per task.
    assert "| mint | " in printed and "| 9 | " in printed
    assert (tmp_path / "digits" / "mint" / "seed_0" / "model.keras").exists()
    assert (tmp_path / "results.md").exists()


def test_cross_stitch_and_independent_train_and_resume(tmp_path, capsys):
    report, _ = run_offline(tmp_path, capsys, "--models",
                            "cross-stitch,independent", "--seeds", "1",
                            "--epochs", "2", "--num-tasks", "4")
    for model in ("cross-stitch", "independent"):
        result = report["results"][model]
        assert result["test_accuracy_mean"] > 0.6, (model, result)  # chance 0.2
        assert len(result["per_task_accuracy"]) == 4
    # A finished run is read back, not retrained; its saved model predicts
    # what the result says.
    run_dir = tmp_path / "digits" / "independent" / "seed_0"
    saved = json.loads((run_dir / "result.json").read_text())
    again, _ = run_offline(tmp_path, capsys, "--models", "independent",
                           "--seeds", "1", "--epochs", "2", "--num-tasks", "4")
    assert again["results"]["independent"]["test_accuracy_mean"] == saved["test_accuracy"]
    assert len((run_dir / "history.csv").read_text().strip().splitlines()) == 3


def test_interrupted_run_resumes_from_its_last_epoch(tmp_path, capsys):
    """A run killed after its first epoch restarts from the backup: the
    history continues at epoch 1 (BackupAndRestore) and ends at 2 epochs."""

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    original_fit = keras.Model.fit

    def fit_once_interrupted(self, *args, callbacks=None, **kwargs):
        return original_fit(self, *args, callbacks=list(callbacks) + [Interrupt()],
                            **kwargs)

    options = ("--models", "mint", "--seeds", "1", "--epochs", "2",
               "--num-tasks", "3")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keras.Model, "fit", fit_once_interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_offline(tmp_path, capsys, *options)
    run_dir = tmp_path / "digits" / "mint" / "seed_0"
    assert not (run_dir / "result.json").exists()
    report, _ = run_offline(tmp_path, capsys, *options)
    epochs = [line.split(",")[0] for line in
              (run_dir / "history.csv").read_text().strip().splitlines()[1:]]
    assert epochs == ["0", "1"]
    assert report["results"]["mint"]["epochs"] == 2


def test_output_dir_of_another_configuration_is_refused(tmp_path, capsys):
    """A finished run is not read back for another configuration (here
    another number of epochs): one line, exit 2, nothing mixed."""
    options = ("--models", "1-fc", "--seeds", "1", "--num-tasks", "2")
    run_offline(tmp_path, capsys, *options, "--epochs", "1")
    with pytest.raises(SystemExit) as exit_info:
        run_offline(tmp_path, capsys, *options, "--epochs", "2")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "holds a run with another configuration (differs in training)" in err


def test_single_task_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "mint-offline", "--backend", keras.backend.backend(),
              "--num-tasks", "1", "--models", "cross-stitch", "--output-dir", ""])
    assert exit_info.value.code == 2
    assert "--num-tasks must be >= 2" in capsys.readouterr().err


@pytest.mark.parametrize("experiment, option, value", [
    ("mint-offline", "--epochs", "-1"),
    ("mint-offline", "--seeds", "0"),
    ("mint-offline", "--models", "mint,routing"),
    ("mint-offline", "--learning-rate", "0"),
    ("mint-cifar100", "--preset", "digits"),
    ("mint-cifar100", "--batch-size", "-5"),
])
def test_out_of_range_options_are_usage_errors(experiment, option, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", experiment, option, value, "--output-dir", ""])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and "Traceback" not in err


def test_cifar100_without_the_data_says_how_to_get_it(tmp_path, capsys):
    """One line on stderr naming the data_dir and the command, exit 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "mint-cifar100", "--backend", keras.backend.backend(),
              "--data-dir", str(tmp_path / "empty"), "--output-dir", "",
              "--epochs", "1", "--models", "mint"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "tfds build cifar100" in err and str(tmp_path / "empty") in err
    assert "Traceback" not in err


def test_cifar100_runs_on_mock_data(tmp_path, capsys):
    """The CIFAR-100 path end to end on tfds mock data (random labels, so
    only the mechanics are checked: a per-task table of 20 tasks)."""
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=64):
        assert main(["run", "mint-cifar100", "--backend", keras.backend.backend(),
                     "--models", "mint,1-fc", "--epochs", "1", "--batch-size", "32",
                     "--skip-label-check",
                     "--verbose", "0", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    results = json.loads(out[out.index("{\n"):])["results"]
    assert sorted(results) == ["1-fc", "mint"]
    assert len(results["mint"]["per_task_accuracy"]) == 20
    from zoo.mint.presets import from_preset

    assert (results["mint"]["parameters"]
            == from_preset("cifar100_small", model="mint").count_params())
    assert np.isfinite(results["mint"]["test_accuracy_mean"])
