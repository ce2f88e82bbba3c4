"""The `mt10` and `mint-push` experiments: a tiny budget end to end,
resume, bad options."""

import json

import keras
import pytest

import training.off_policy
from zoo.__main__ import main

TINY = ("--env-steps", "800", "--warmup-steps", "20", "--steps-per-epoch", "30",
        "--batch-per-task", "8", "--eval-episodes", "1", "--plot", "0",
        "--verbose", "0")


def run_mt10(tmp_path, capsys, *options):
    assert main(["run", "mt10", "--backend", keras.backend.backend(),
                 "--output-dir", str(tmp_path), *TINY, *options]) == 0
    return json.loads(capsys.readouterr().out)["results"]


def test_tiny_run_reports_success_per_task_and_resumes(tmp_path, capsys, monkeypatch):
    original = training.off_policy.EnvironmentStepper.on_train_batch_end

    def killed_in_second_epoch(self, batch, logs=None):
        original(self, batch, logs)
        if self.loop.env_steps == 20 + 30 + 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(training.off_policy.EnvironmentStepper,
                        "on_train_batch_end", killed_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_mt10(tmp_path, capsys, "--network", "mt-mh-sac")
    monkeypatch.setattr(training.off_policy.EnvironmentStepper,
                        "on_train_batch_end", original)
    result = run_mt10(tmp_path, capsys, "--network", "mt-mh-sac")
    assert result["env_steps"] == 800
    assert result["resumed_from_env_step"] == 10 * (20 + 30)
    assert 0.0 <= result["success_rate"] <= 1.0
    assert len(result["success_rate_per_task"]) == 10
    assert "Reach" in result["success_rate_per_task"]
    history = (tmp_path / "mt-mh-sac" / "history.csv").read_text().strip().splitlines()
    assert len(history) == 3 and "eval_success_rate" in history[0]
    assert (tmp_path / "mt-mh-sac" / "model.keras").exists()


@pytest.mark.parametrize("option, value, message", [
    ("--network", "soft-modular-huge", "argument --network"),
    ("--env-steps", "0", "argument --env-steps"),
    ("--env-steps", "100", "leaves no update after the warm-up"),
    ("--goals", "sometimes", "argument --goals"),
])
def test_bad_options_are_one_line_errors(tmp_path, option, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "mt10", "--backend", keras.backend.backend(),
              "--output-dir", "", *TINY, option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


PUSH_TINY = ("--num-goals", "12", "--num-envs", "3", "--goals-per-batch", "3",
             "--episode-length", "10", "--env-steps", "150", "--warmup-steps", "20",
             "--steps-per-epoch", "15", "--batch-per-goal", "4", "--eval-goals", "4",
             "--plot", "0", "--verbose", "0")


def run_push(capsys, output_dir, *options):
    assert main(["run", "mint-push", "--backend", keras.backend.backend(),
                 "--output-dir", str(output_dir), *PUSH_TINY, *options]) == 0
    return json.loads(capsys.readouterr().out)["results"]


def test_tiny_mint_push_run_reports_success_and_distance(tmp_path, capsys):
    """3 environments x 10-step episodes over 12 goals, 2 epochs of 15
    updates on 3 goals each; a finished run is read back, not retrained."""
    result = run_push(capsys, tmp_path, "--network", "mint-goal")
    assert result["env_steps"] == 150 and result["network"] == "mint-goal"
    assert 0.0 <= result["success_rate"] <= 1.0
    assert result["final_distance"] > 0 and result["initial_distance"] > 0
    assert result["eval_goals"] == 4 and result["num_goals"] == 12
    assert result["parameters"]["actor"] == 693_008  # the push/mint-goal preset
    history = (tmp_path / "mint-goal" / "history.csv").read_text().strip().splitlines()
    assert len(history) == 3 and "eval_final_distance" in history[0]
    assert (tmp_path / "mint-goal" / "model.keras").exists()
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["mint-goal"]["final_distance"] == result["final_distance"]
    assert "| mint-goal | 150 |" in (tmp_path / "results.md").read_text()
    assert run_push(capsys, tmp_path, "--network", "mint-goal") == result


@pytest.mark.parametrize("option, value, message", [
    ("--network", "mint", "argument --network"),
    ("--num-goals", "0", "argument --num-goals"),
    ("--goals-per-batch", "20", "--goals-per-batch 20 is more than --num-goals 12"),
    ("--eval-goals", "13", "--eval-goals 13 is more than --num-goals 12"),
    ("--episode-length", "501", "more than Meta-World's 500 steps"),
    ("--env-steps", "30", "leaves no update after the warm-up of 20 vector steps x 3"),
])
def test_bad_mint_push_options_are_one_line_errors(option, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "mint-push", "--backend", keras.backend.backend(),
              "--output-dir", "", *PUSH_TINY, option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
