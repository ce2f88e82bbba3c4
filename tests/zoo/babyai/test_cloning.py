"""Behaviour cloning of the BabyAI bot (zoo/babyai/cloning.py, demos.py):
the bot's demonstrations, the allocation-vs-expert measures by hand, a run
end to end that beats the majority action, finished runs read back, and
one-line errors for bad options."""

import json
import os

import numpy as np
import pytest

from zoo.__main__ import main
from zoo.babyai.cloning import compare_with_expert, match_to_expert
from zoo.babyai.demos import collect_demonstrations, load_or_collect, successful_steps
from zoo.babyai.envs import NUM_ACTIONS

EXPERT = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1]])


def test_a_permuted_expert_table_matches_exactly():
    permutation = (2, 0, 1)  # learned column permutation[j] is expert column j
    learned = np.zeros(EXPERT.shape)
    learned[:, list(permutation)] = EXPERT
    assert match_to_expert(learned, EXPERT) == (0.0, permutation)
    # One wrong entry of nine: distance 1/9, whatever the columns' order.
    learned[0, 2] = 0.0
    distance, _ = match_to_expert(learned, EXPERT)
    assert distance == pytest.approx(1 / 9, abs=1e-6)
    with pytest.raises(ValueError, match="same"):
        match_to_expert(np.zeros((3, 2)), EXPERT)


def test_compare_with_expert_by_hand():
    layers = [np.array(EXPERT, float), np.full(EXPERT.shape, 0.5)]
    result = compare_with_expert(layers, EXPERT)
    # The mean of the two layers is 0.75 where the expert has 1, 0.25 elsewhere.
    assert result["expert_distance"] == pytest.approx(0.25)
    assert result["expert_agreement"] == 1.0
    assert result["expert_distance_layers"] == pytest.approx((0.0 + 0.5) / 2)
    assert result["reference_distances"] == {
        "uniform_0.5": 0.5, "all_ones": round(3 / 9, 4),
        # I overlaps the lower-triangular table on its 3 diagonal ones only.
        "identity": round(3 / 9, 4)}


def test_bot_demonstrations_are_successful_reproducible_and_split(tmp_path):
    demos = collect_demonstrations(["GoToObj", "GoToRedBallGrey"], episodes_per_level=3)
    assert demos["episode_success"].all() and len(demos["episode_success"]) == 6
    assert len(demos["actions"]) == demos["episode_lengths"].sum()
    assert demos["actions"].min() >= 0 and demos["actions"].max() < NUM_ACTIONS
    assert set(demos["task_ids"]) == {0, 1}
    assert demos["image"].shape[1:] == (7, 7, 3)
    again = collect_demonstrations(["GoToObj", "GoToRedBallGrey"], episodes_per_level=3)
    for key, value in demos.items():
        np.testing.assert_array_equal(again[key], value)
    other = collect_demonstrations(["GoToObj", "GoToRedBallGrey"], episodes_per_level=3,
                                   split="validation")
    assert not np.array_equal(other["image"][:5], demos["image"][:5])
    assert len(successful_steps(demos)["actions"]) == len(demos["actions"])

    path = str(tmp_path / "train.npz")
    first, cached = load_or_collect(path, ["GoToObj"], 2)
    assert not cached and os.path.exists(path)
    second, cached = load_or_collect(path, ["GoToObj"], 2)
    assert cached
    np.testing.assert_array_equal(second["actions"], first["actions"])


def run_cli(tmp_path, *options, capsys):
    main(["run", "babyai-bc", "--output-dir", str(tmp_path / "out"), "--verbose", "0",
          "--levels", "GoToObj,GoToRedBallGrey", "--episodes-per-level", "50",
          "--validation-episodes", "20", "--eval-episodes", "4", "--epochs", "6",
          "--batch-size", "16", "--learning-rate", "3e-3",
          *options])
    return json.loads(capsys.readouterr().out)["results"]


def test_end_to_end_beats_the_majority_action_and_reads_runs_back(tmp_path, capsys):
    results = run_cli(tmp_path, "--variants", "shared,polytropon", capsys=capsys)
    out = tmp_path / "out"
    for name in ("results.json", "results.md", "allocation.png",
                 "demos/train.npz", "demos/validation.npz"):
        assert os.path.exists(out / name), name
    for name in ("history.csv", "result.json", "preset/config.json"):
        assert os.path.exists(out / "shared" / "seed_0" / name), name
    assert results["bot_success"] == 1.0
    shared, polytropon = results["variants"]["shared"], results["variants"]["polytropon"]
    assert "expert_distance" not in shared
    assert np.asarray(
        polytropon["allocation_first_seed"]["mean_probabilities"]).shape == (2, 2)

    # Learning (can fail): the policies imitate the bot better than always
    actions = np.load(out / "demos" / "validation.npz")["actions"]
    majority = np.bincount(actions).max() / len(actions)
    # taking the bot's most frequent action (measured: majority 0.636;
    # shared / polytropon 0.886 / 0.757 on JAX, 0.751 / 0.776 on torch).
    for row in (shared, polytropon):
        assert row["validation_accuracy"] > majority + 0.08, (row, majority)

    again = run_cli(tmp_path, "--variants", "shared", capsys=capsys)
    assert again["variants"]["shared"] == shared  # read back, not retrained


@pytest.mark.parametrize("options, message", [
    (["--epochs", "0"], "positive integer"),
    (["--episodes-per-level", "-1"], "positive integer"),
    (["--variants", "modular"], "variants"),
    (["--levels", "GoToMoon"], "levels"),
    (["--variants", "shared,shared"], "repeats"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, options, message):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(tmp_path, *options, capsys=capsys)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
