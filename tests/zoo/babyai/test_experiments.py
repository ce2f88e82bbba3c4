"""The babyai PPO experiment (zoo/babyai/experiments.py): its metrics on
hand-made episode records, a run end to end through the runner (files,
resume of a finished run, per-level results), a short run on a real level
that beats the random policy, and one-line errors for bad options."""

import json
import os

import numpy as np
import pytest

from zoo.__main__ import main
from zoo.babyai.experiments import curve_points, level_curve, level_metrics


def records(rows):
    return np.asarray(rows, np.float64)


def test_level_metrics_by_hand():
    # Level 0 episodes end at frames 10, 20, 30, 40 with success 0, 1, 1, 1;
    # level 1 has one failed episode.
    episodes = records([[10, 0, 0, 0, 5], [15, 1, 0, 0, 9], [20, 0, 1, .9, 4],
                        [30, 0, 1, .9, 3], [40, 0, 1, .8, 6]])
    frames, rolling = level_curve(episodes, 0, window=2)
    np.testing.assert_array_equal(frames, [10, 20, 30, 40])
    np.testing.assert_allclose(rolling, [0, .5, 1, 1])
    metrics = level_metrics(episodes, 0, total_frames=50, window=2, threshold=0.9)
    assert metrics["frames_to_0.9"] == 30 and metrics["episodes_to_0.9"] == 3
    assert metrics["success_rate"] == 1.0 and metrics["episodes"] == 4
    # Area: 0 over [0, 20), .5 over [20, 30), 1 over [30, 50): 25 / 50.
    assert metrics["success_auc"] == pytest.approx(0.5)
    never = level_metrics(episodes, 1, total_frames=50, window=2)
    assert never["frames_to_0.9"] is None and never["success_rate"] == 0.0
    empty = level_metrics(episodes, 2, total_frames=50)
    assert empty["episodes"] == 0 and empty["success_rate"] is None


def test_curve_points_use_the_rolling_window():
    episodes = records([[10, 0, 0, 0, 5], [20, 0, 1, 1, 4], [30, 0, 1, 1, 3]])
    # Sampled at frames 5, 10, ..., 30: 0 before the first episode ends.
    grid, values = curve_points(episodes, 0, 30, points=6)
    np.testing.assert_array_equal(grid, [5, 10, 15, 20, 25, 30])
    np.testing.assert_allclose(values, [0, 0, 0, 0.5, 0.5, 2 / 3])


def run_cli(tmp_path, *options, capsys=None):
    main(["run", "babyai", "--output-dir", str(tmp_path / "out"), "--verbose", "0",
          "--levels", "GoToObj,GoToLocal", "--num-envs", "4", "--rollout-steps", "20",
          "--minibatch-size", "40", "--update-epochs", "1", *options])
    return json.loads(capsys.readouterr().out)["results"]


def test_end_to_end_writes_results_and_reads_finished_runs_back(tmp_path, capsys):
    results = run_cli(tmp_path, "--variants", "shared,polytropon", "--frames", "160",
                      capsys=capsys)
    assert results["levels"] == ["GoToObj", "GoToLocal"]
    run = results["runs"]["polytropon"][0]
    assert run["frames"] == 160 and set(run["levels"]) == {"GoToObj", "GoToLocal"}
    probabilities = np.asarray(run["allocation"]["mean_probabilities"])
    assert probabilities.shape == (2, 4)  # GoToLocal's expert set has 4 skills
    assert "allocation" not in results["runs"]["shared"][0]
    out = tmp_path / "out"
    for name in ("results.json", "results.md", "curves.csv", "curves.png",
                 "allocation.png"):
        assert os.path.exists(out / name), name
    for name in ("episodes.csv", "history.csv", "model.keras", "result.json",
                 "preset/config.json"):
        assert os.path.exists(out / "shared" / "seed_0" / name), name
    episodes = (out / "shared" / "seed_0" / "episodes.csv").read_text().splitlines()
    assert episodes[0] == "frames,level,success,return,length"
    assert len(episodes) - 1 == results["runs"]["shared"][0]["episodes"]
    # A finished run is read back, not retrained.
    again = run_cli(tmp_path, "--variants", "shared", "--frames", "160", capsys=capsys)
    assert again["runs"]["shared"] == results["runs"]["shared"]


@pytest.mark.parametrize("options, message", [
    (["--frames", "0"], "positive integer"),
    (["--frames", "-5"], "positive integer"),
    (["--variants", "modular"], "variants"),
    (["--levels", "GoToMoon"], "levels"),
    (["--frames", "40"], "less than one rollout"),
    (["--minibatch-size", "33"], "does not divide"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, options, message):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(tmp_path, *options, capsys=capsys)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.slow  # 19,200 frames: 118 s on torch under load (./test.sh --slow)
def test_short_run_on_a_real_level_beats_the_random_policy(tmp_path, capsys):
    # GoToObj: the random policy succeeds in 22% of episodes (reference-facts).
    main(["run", "babyai", "--output-dir", "", "--verbose", "0", "--levels", "GoToObj",
          "--variants", "shared", "--frames", "19200", "--num-envs", "16"])
    result = json.loads(capsys.readouterr().out)["results"]
    success = result["per_level"]["shared"]["GoToObj"]["success_rate"]
    assert success > 0.4, success


def test_killed_run_resumes_from_its_last_rollout(tmp_path, monkeypatch, capsys):
    import keras

    from zoo.runs import RunDirectory

    class Kill(keras.callbacks.Callback):  # as the third rollout begins
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    original = RunDirectory.callbacks
    monkeypatch.setattr(RunDirectory, "callbacks",
                        lambda self, backup=True: [*original(self, backup), Kill()])
    options = ("--variants", "shared", "--frames", "320")  # 4 rollouts of 80 frames
    with pytest.raises(KeyboardInterrupt):
        run_cli(tmp_path, *options, capsys=capsys)
    saved = np.load(tmp_path / "out" / "shared" / "seed_0" / "episodes.npy")
    monkeypatch.setattr(RunDirectory, "callbacks", original)
    run = run_cli(tmp_path, *options, capsys=capsys)["runs"]["shared"][0]
    assert run["resumed_from_env_step"] == 160 and run["frames"] == 320
    episodes = np.loadtxt(tmp_path / "out" / "shared" / "seed_0" / "episodes.csv",
                          delimiter=",", skiprows=1, usecols=(0, 2))
    # The episodes finished before the checkpoint are kept, in order.
    assert len(saved) and np.all(saved[:, 0] <= 160)
    np.testing.assert_array_equal(episodes[:len(saved)], saved[:, [0, 2]])
    assert np.all(np.diff(episodes[:, 0]) >= 0)
