"""The `mt10` experiment: a tiny budget end to end, resume, bad options."""

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
])
def test_bad_options_are_one_line_errors(tmp_path, option, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "mt10", "--backend", keras.backend.backend(),
              "--output-dir", "", *TINY, option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
