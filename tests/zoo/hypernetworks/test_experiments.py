"""The hypernetwork experiments on the runner, presets and metrics."""

import json

import keras
import numpy as np
import pytest

from zoo.__main__ import main
from zoo.hypernetworks.metrics import linear_decodability
from zoo.hypernetworks.presets import (
    MODELS,
    TASKS,
    from_preset,
    get_preset,
    preset_names,
    save_to_preset,
)

TINY = ["--outer-steps", "4", "--eval-every", "2", "--meta-batch", "4",
        "--support-shots", "8", "--query-shots", "8", "--eval-tasks", "6",
        "--verbose", "0", "--plot", "0"]


def _run(capsys, *argv):
    assert main(["run", *argv, "--backend", keras.backend.backend()]) == 0
    out = capsys.readouterr().out
    return json.loads(out[out.index("{\n"):])


def test_hyperteacher_results_hold_what_scripts_read(tmp_path, capsys):
    report = _run(capsys, "hyperteacher", "--models", "linear-hnet,anil",
                  "--supports", "compositional,non_compositional", *TINY,
                  "--output-dir", str(tmp_path))
    results = report["results"]
    assert set(results) == {"compositional", "non_compositional"}
    for support in results.values():
        assert set(support) == {"linear-hnet", "anil"}
        for result in support.values():
            assert result["outer_steps"] == 4
            for key in ("train_accuracy", "test_accuracy", "ood_accuracy"):
                assert 0.0 <= result[key] <= 1.0
            assert result["test_ood_gap"] == pytest.approx(
                result["test_accuracy"] - result["ood_accuracy"], abs=1e-3)
            assert np.isfinite(result["decodability_r2"])
    table = (tmp_path / "results.md").read_text()
    assert table.count("| compositional |") == 2
    run_dir = tmp_path / "compositional" / "linear-hnet"
    history = (run_dir / "history.csv").read_text().splitlines()
    assert "ood_accuracy" in history[0] and len(history) == 3  # 2 epochs
    # A finished run is read back, not retrained.
    saved = json.loads((run_dir / "result.json").read_text())["result"]
    again = _run(capsys, "hyperteacher", "--models", "linear-hnet",
                 "--supports", "compositional", *TINY,
                 "--output-dir", str(tmp_path))
    assert again["results"]["compositional"]["linear-hnet"] == saved
    assert len((run_dir / "history.csv").read_text().splitlines()) == 3


def test_interrupted_run_resumes_from_its_last_epoch(tmp_path, capsys,
                                                     monkeypatch):
    """A run killed after its first epoch restarts from that epoch's backup,
    with the weights it had then; its history holds each epoch once."""
    seen = {}

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen["interrupted"] = [np.array(w) for w in self.model.get_weights()]
            raise KeyboardInterrupt

    class Resumed(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):  # after BackupAndRestore's
            seen["resumed"] = [np.array(w) for w in self.model.get_weights()]

    original_fit = keras.Model.fit
    extra = [Interrupt()]
    monkeypatch.setattr(keras.Model, "fit", lambda self, *a, callbacks=(), **k:
                        original_fit(self, *a, callbacks=list(callbacks) + extra,
                                     **k))
    args = ["teacher-student", *TINY, "--output-dir", str(tmp_path),
            "--supports", "connected"]
    with pytest.raises(KeyboardInterrupt):
        main(["run", *args, "--backend", keras.backend.backend()])
    extra[:] = [Resumed()]
    report = _run(capsys, *args)
    for before, after in zip(seen["interrupted"], seen["resumed"], strict=True):
        np.testing.assert_array_equal(before, after)
    history = (tmp_path / "connected" / "linear-hnet" / "history.csv")
    assert len(history.read_text().splitlines()) == 3  # header + 2 epochs
    result = report["results"]["connected"]["linear-hnet"]
    assert result["outer_steps"] == 4
    assert -1.0 <= result["module_alignment"] <= 1.0


@pytest.mark.parametrize("option, value", [
    ("--outer-steps", "-1"), ("--outer-steps", "0"), ("--models", "resnet"),
    ("--supports", "diagonal"), ("--eval-tasks", "x"), ("--meta-batch", "0"),
])
def test_bad_options_are_usage_errors(option, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "hyperteacher", option, value, "--output-dir", ""])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and "Traceback" not in err


@pytest.mark.parametrize("experiment", ["grid-goals", "grid-preferences"])
def test_grid_world_experiments_run(experiment, capsys):
    report = _run(capsys, experiment, "--models", "maml", *TINY,
                  "--support-shots", "1", "--query-shots", "1",
                  "--output-dir", "")
    result = report["results"]["compositional"]["maml"]
    assert 0.0 <= result["ood_accuracy"] <= 1.0


def test_every_preset_builds_and_the_paper_defaults_are_kept():
    names = preset_names()
    assert len(names) == len(TASKS) * len(MODELS) * 2
    paper = get_preset("hyperteacher/anil/paper")
    assert paper["network"]["hidden_units"] == 512
    assert paper["inner"]["inner_steps"] == 100
    assert get_preset("hyperteacher/maml/paper")["network"]["hidden_units"] == 384
    assert get_preset("hyperteacher/linear-hnet/paper")["data"]["meta_batch"] == 128
    for name in names:
        assert get_preset(name)["model"] in MODELS
    with pytest.raises(ValueError, match="Unknown preset"):
        get_preset("hyperteacher/resnet")


def test_save_to_preset_round_trip(tmp_path):
    model = from_preset("hyperteacher/nonlinear-hnet", output_dim=8, loss="kl",
                        input_shape=(16,), hidden_units=8)
    rng = np.random.default_rng(0)
    batch = {"support_inputs": rng.uniform(-1, 1, (2, 5, 16)).astype("float32"),
             "support_targets": np.full((2, 5, 8), 1 / 8, "float32"),
             "query_inputs": rng.uniform(-1, 1, (2, 3, 16)).astype("float32"),
             "query_targets": np.full((2, 3, 8), 1 / 8, "float32")}
    save_to_preset(model, tmp_path / "preset", input_shape=(16,))
    loaded = from_preset(str(tmp_path / "preset"))
    assert loaded.network.hidden_units == 8
    np.testing.assert_allclose(loaded.adapt(batch).query_predictions,
                               model.adapt(batch).query_predictions, atol=1e-5)
    with pytest.raises(ValueError, match="output_dim"):
        from_preset("hyperteacher/maml")


def test_linear_decodability_scores_readable_and_unreadable_latents():
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(120, 4))
    readable = np.concatenate([latents @ rng.normal(size=(4, 6)),
                               rng.normal(size=(120, 3)) * 0.01], axis=1)
    assert linear_decodability(readable[:80], latents[:80], readable[80:],
                               latents[80:]) > 0.95
    noise = rng.normal(size=(120, 6))
    assert linear_decodability(noise[:80], latents[:80], noise[80:],
                               latents[80:]) < 0.2
    with pytest.raises(ValueError, match="matching"):
        linear_decodability(noise[:5], latents[:4], noise, latents)
