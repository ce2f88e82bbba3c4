"""`TaskReplayBuffer`: ring order, task-balanced sampling, atomic files.

The buffer is NumPy only, so these tests are the same under every backend.
Stored values encode (task, serial number) so that a test can tell which
transition a sampled or stored row is, and that its fields belong together.
"""

import os

import numpy as np
import pytest

from training import replay_buffer as replay_buffer_module
from training.replay_buffer import TaskReplayBuffer

OBS_DIM, ACT_DIM = 3, 2


def _transitions(task_ids, serials):
    """Transitions whose every field encodes (task, serial)."""
    task_ids = np.asarray(task_ids)
    code = (task_ids * 1000 + np.asarray(serials)).astype("float64")
    observations = code[:, None] + np.arange(OBS_DIM) * 0.125
    actions = -code[:, None] - np.arange(ACT_DIM) * 0.25
    rewards = code + 0.5
    next_observations = code[:, None] + 0.0625 + np.arange(OBS_DIM) * 0.125
    return observations, actions, rewards, next_observations, task_ids


def _decode(arrays):
    """(task, serial) codes of rows (-1 for a never written, all-zero row),
    checking that every field of a written row encodes the same code."""
    obs = np.asarray(arrays["observations"], "float64")
    act = np.asarray(arrays["actions"], "float64")
    rew = np.asarray(arrays["rewards"], "float64")
    nxt = np.asarray(arrays["next_observations"], "float64")
    empty = ~(obs.any(-1) | act.any(-1) | (rew != 0) | nxt.any(-1))
    code = np.where(empty, 0.0, obs[..., 0])
    written = ~empty
    np.testing.assert_array_equal(
        obs[written], code[written][:, None] + np.arange(OBS_DIM) * 0.125)
    np.testing.assert_array_equal(
        act[written], -code[written][:, None] - np.arange(ACT_DIM) * 0.25)
    np.testing.assert_array_equal(rew[written], code[written] + 0.5)
    np.testing.assert_array_equal(
        nxt[written], code[written][:, None] + 0.0625 + np.arange(OBS_DIM) * 0.125)
    return np.where(empty, -1, code.astype(np.int64))


class _ReferenceRing:
    """Python-list ring buffers, one per task, written one item at a time."""

    def __init__(self, num_tasks, capacity):
        self.capacity = capacity
        self.slots = [[None] * capacity for _ in range(num_tasks)]
        self.positions = [0] * num_tasks
        self.sizes = [0] * num_tasks
        self.history = [[] for _ in range(num_tasks)]  # every code, in order

    def add(self, task_ids, codes):
        for task, code in zip(task_ids, codes):
            self.slots[task][self.positions[task]] = code
            self.positions[task] = (self.positions[task] + 1) % self.capacity
            self.sizes[task] = min(self.sizes[task] + 1, self.capacity)
            self.history[task].append(code)


def _assert_matches_reference(buffer, reference):
    state = buffer.state_dict()
    codes = _decode(state)
    assert buffer.positions.tolist() == reference.positions
    assert buffer.sizes.tolist() == reference.sizes
    for task, slots in enumerate(reference.slots):
        size = reference.sizes[task]
        assert codes[task, :size].tolist() == slots[:size]
        # Oldest first: the ring read from its position is the last `size`
        # transitions ever added to the task, in order.
        start = reference.positions[task] if size == buffer.capacity_per_task else 0
        order = [(start + i) % buffer.capacity_per_task for i in range(size)]
        assert codes[task, order].tolist() == reference.history[task][-size:]
        assert np.all(codes[task, size:] == -1)  # never written


def _fill(buffer, rng, num_batches, batch_size, reference=None, serial=0,
          num_tasks=None):
    for _ in range(num_batches):
        task_ids = rng.integers(0, num_tasks or buffer.num_tasks, size=batch_size)
        serials = np.arange(serial, serial + batch_size)
        serial += batch_size
        buffer.add(*_transitions(task_ids, serials))
        if reference is not None:
            reference.add(task_ids.tolist(), (task_ids * 1000 + serials).tolist())
    return serial


def test_ring_overwrite_order_matches_python_reference():
    buffer = TaskReplayBuffer(3, 5, OBS_DIM, ACT_DIM)
    reference = _ReferenceRing(3, 5)
    rng = np.random.default_rng(0)
    serial = 0
    for step in range(12):  # batches of varied sizes, several tasks each
        size = [1, 4, 7, 2][step % 4]
        serial = _fill(buffer, rng, 1, size, reference, serial)
        _assert_matches_reference(buffer, reference)
    assert min(reference.sizes) == 5  # every task wrapped around
    assert max(len(h) for h in reference.history) > 10


def test_batch_with_more_than_capacity_of_one_task_keeps_the_last():
    buffer = TaskReplayBuffer(2, 4, OBS_DIM, ACT_DIM)
    reference = _ReferenceRing(2, 4)
    buffer.add(*_transitions([0, 1, 0], [0, 1, 2]))
    reference.add([0, 1, 0], [0, 1001, 2])
    task_ids = [0] * 11 + [1] * 2
    rng = np.random.default_rng(3)
    order = rng.permutation(len(task_ids))
    task_ids = np.array(task_ids)[order]
    serials = np.arange(10, 10 + len(task_ids))
    buffer.add(*_transitions(task_ids, serials))
    reference.add(task_ids.tolist(), (task_ids * 1000 + serials).tolist())
    _assert_matches_reference(buffer, reference)


def test_mixed_task_add_sizes_and_len():
    buffer = TaskReplayBuffer(4, 3, OBS_DIM, ACT_DIM)
    buffer.add(*_transitions([2, 0, 2, 2, 2], [0, 1, 2, 3, 4]))
    assert buffer.sizes.tolist() == [1, 0, 3, 0]
    assert buffer.positions.tolist() == [1, 0, 1, 0]
    assert len(buffer) == buffer.total_size == 4
    codes = _decode(buffer.state_dict())
    assert codes[2].tolist() == [2004, 2002, 2003]  # 2000 overwritten
    assert codes[0, 0] == 1
    buffer.sizes[:] = 0  # a copy: the buffer is not changed
    assert len(buffer) == 4
    buffer.add(*_transitions(np.zeros(0, int), np.zeros(0, int)))  # empty batch
    assert len(buffer) == 4


@pytest.mark.parametrize("storage_dtype", ["float32", "float64"])
def test_sample_has_k_per_task_drawn_from_that_task_only(storage_dtype):
    num_tasks, capacity, k = 4, 6, 9
    buffer = TaskReplayBuffer(num_tasks, capacity, OBS_DIM, ACT_DIM,
                              dtype=storage_dtype)
    reference = _ReferenceRing(num_tasks, capacity)
    rng = np.random.default_rng(1)
    for serial in range(0, 40, 4):  # tasks 0-2 wrap around
        task_ids = rng.integers(0, 3, size=4)
        serials = np.arange(serial, serial + 4)
        buffer.add(*_transitions(task_ids, serials))
        reference.add(task_ids.tolist(), (task_ids * 1000 + serials).tolist())
    # Task 3 gets two transitions: a partly filled region.
    buffer.add(*_transitions([3, 3], [900, 901]))
    reference.add([3, 3], [3900, 3901])
    assert buffer.sizes.tolist() == [capacity] * 3 + [2]

    batch = buffer.sample(k, np.random.default_rng(2))
    assert sorted(batch) == ["actions", "next_observations", "observations",
                             "rewards", "task_ids"]
    assert batch["observations"].shape == (num_tasks * k, OBS_DIM)
    assert batch["next_observations"].shape == (num_tasks * k, OBS_DIM)
    assert batch["actions"].shape == (num_tasks * k, ACT_DIM)
    assert batch["rewards"].shape == (num_tasks * k,)
    for key in ("observations", "actions", "rewards", "next_observations"):
        assert batch[key].dtype == np.float32
    assert batch["task_ids"].dtype == np.int32
    np.testing.assert_array_equal(batch["task_ids"],
                                  np.repeat(np.arange(num_tasks), k))
    codes = _decode(batch)
    for task in range(num_tasks):
        task_codes = codes[task * k:(task + 1) * k]
        assert np.all(task_codes // 1000 == task)
        stored = set(reference.history[task][-reference.sizes[task]:])
        assert set(task_codes.tolist()) <= stored
    # Same generator state, same batch; the buffer is not changed by sampling.
    again = buffer.sample(k, np.random.default_rng(2))
    for key in batch:
        np.testing.assert_array_equal(batch[key], again[key])
    _assert_matches_reference(buffer, reference)


def _chi_square(counts):
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


def test_sampling_is_roughly_uniform_over_filled_part():
    # Task 0: partly filled (7 of 16 slots); task 1: full after wrapping.
    buffer = TaskReplayBuffer(2, 16, OBS_DIM, ACT_DIM)
    buffer.add(*_transitions([0] * 7, range(7)))
    buffer.add(*_transitions([1] * 40, range(40)))
    rng = np.random.default_rng(5)
    batch = buffer.sample(16_000, rng)
    codes = _decode(batch).reshape(2, -1)
    partial = np.bincount(codes[0], minlength=7)
    assert codes.min() >= 0  # never an unfilled slot (decoded as -1)
    assert len(partial) == 7 and partial.min() > 0
    full = np.bincount(codes[1] - 1000 - 24, minlength=16)
    assert codes[1].min() == 1024 and len(full) == 16  # only the last 16
    # Chi-square with 6 and 15 degrees of freedom; p < 1e-6 beyond these.
    assert _chi_square(partial) < 40
    assert _chi_square(full) < 55
    # Not trivially uniform: a biased sampler (always slot 0) would fail.
    assert _chi_square(np.array([16_000] + [0] * 15)) > 55


def test_sample_raises_for_empty_task():
    buffer = TaskReplayBuffer(3, 4, OBS_DIM, ACT_DIM)
    with pytest.raises(ValueError, match=r"tasks \[0, 1, 2\] have no transition"):
        buffer.sample(2, np.random.default_rng(0))
    buffer.add(*_transitions([0, 2], [0, 1]))
    with pytest.raises(ValueError, match=r"tasks \[1\] have no transition"):
        buffer.sample(2, np.random.default_rng(0))
    buffer.add(*_transitions([1], [2]))
    assert len(buffer.sample(2, np.random.default_rng(0))["rewards"]) == 6


def test_sample_of_a_subset_of_tasks_draws_distinct_filled_tasks():
    buffer = TaskReplayBuffer(6, 8, OBS_DIM, ACT_DIM)
    buffer.add(*_transitions([0, 2, 3, 5] * 2, range(8)))  # tasks 1, 4 empty
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(50):
        batch = buffer.sample(3, rng, tasks_per_batch=2)
        tasks = batch["task_ids"]
        assert len(tasks) == 6 and len(set(tasks[:3])) == 1 and len(set(tasks[3:])) == 1
        assert tasks[0] < tasks[3]  # two distinct tasks, task by task
        seen.update(tasks.tolist())
        codes = _decode(batch)
        np.testing.assert_array_equal(codes // 1000, tasks)  # rows of their task
    assert seen == {0, 2, 3, 5}
    with pytest.raises(ValueError, match="only 4 tasks have transitions"):
        buffer.sample(3, rng, tasks_per_batch=5)
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="tasks_per_batch"):
            buffer.sample(3, rng, tasks_per_batch=bad)


def test_sample_argument_checks():
    buffer = TaskReplayBuffer(1, 4, OBS_DIM, ACT_DIM)
    buffer.add(*_transitions([0], [0]))
    with pytest.raises(ValueError, match="Generator"):
        buffer.sample(2, np.random.RandomState(0))
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="batch_per_task"):
            buffer.sample(bad, np.random.default_rng(0))


def _buffer_with_data(seed=0, num_tasks=3, capacity=5):
    """Tasks 0 and 1 wrapped around; the last task partly filled."""
    buffer = TaskReplayBuffer(num_tasks, capacity, OBS_DIM, ACT_DIM)
    serial = _fill(buffer, np.random.default_rng(seed), 6, 3,
                   num_tasks=num_tasks - 1)
    buffer.add(*_transitions([num_tasks - 1] * 2, [serial, serial + 1]))
    return buffer, serial + 2


def _assert_same_state(a, b):
    state_a, state_b = a.state_dict(), b.state_dict()
    assert sorted(state_a) == sorted(state_b)
    for key in state_a:
        assert state_a[key].dtype == state_b[key].dtype, key
        np.testing.assert_array_equal(state_a[key], state_b[key], err_msg=key)


def test_save_load_round_trip_then_continue(tmp_path):
    buffer, serial = _buffer_with_data()
    # Some regions wrapped, some not: positions differ from sizes.
    assert np.any((buffer.sizes == 5) & (buffer.positions != 0))
    assert buffer.sizes[2] == buffer.positions[2] == 2
    path = tmp_path / "replay.npz"
    buffer.save(path)
    loaded = TaskReplayBuffer.load(path)
    _assert_same_state(buffer, loaded)
    assert (loaded.num_tasks, loaded.capacity_per_task, loaded.observation_dim,
            loaded.action_dim, loaded.dtype) == (3, 5, OBS_DIM, ACT_DIM,
                                                 np.dtype("float32"))
    # Continue adding to both: same contents as if never saved.
    for target in (buffer, loaded):
        _fill(target, np.random.default_rng(7), 4, 3, serial=serial)
    _assert_same_state(buffer, loaded)
    a = buffer.sample(8, np.random.default_rng(9))
    b = loaded.sample(8, np.random.default_rng(9))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    # load_state_dict into an existing buffer with the same config.
    fresh = TaskReplayBuffer(3, 5, OBS_DIM, ACT_DIM)
    fresh.load_state_dict(buffer.state_dict())
    _assert_same_state(buffer, fresh)


def test_saved_file_has_no_objects_and_loads_without_pickle(tmp_path):
    buffer, _ = _buffer_with_data()
    path = tmp_path / "replay.buffer"  # used as given: no ".npz" appended
    buffer.save(str(path))
    assert os.listdir(tmp_path) == ["replay.buffer"]
    with np.load(path, allow_pickle=False) as data:
        assert not any(data[key].dtype == object for key in data.files)
        np.testing.assert_array_equal(data["positions"], buffer.positions)
        np.testing.assert_array_equal(data["sizes"], buffer.sizes)
        np.testing.assert_array_equal(data["observations"], buffer.observations)
        assert str(data["dtype"]) == "float32"
        assert int(data["capacity_per_task"]) == 5


@pytest.mark.parametrize("change", [
    {"num_tasks": 4}, {"capacity_per_task": 6}, {"observation_dim": OBS_DIM + 1},
    {"action_dim": ACT_DIM + 1}, {"dtype": "float64"}])
def test_loading_state_of_other_config_raises(tmp_path, change):
    buffer, _ = _buffer_with_data()
    path = tmp_path / "replay.npz"
    buffer.save(path)
    config = dict(num_tasks=3, capacity_per_task=5, observation_dim=OBS_DIM,
                  action_dim=ACT_DIM, dtype="float32")
    other = TaskReplayBuffer(**{**config, **change})
    before = other.state_dict()
    name = next(iter(change))
    with np.load(path, allow_pickle=False) as data:
        with pytest.raises(ValueError, match=f"another config.*{name}"):
            other.load_state_dict(data)
    _assert_same_state(other, TaskReplayBuffer(**{**config, **change}))
    assert all(np.array_equal(before[k], v) for k, v in other.state_dict().items())


def test_load_state_dict_rejects_inconsistent_state():
    buffer, _ = _buffer_with_data()
    state = buffer.state_dict()
    bad_states = [
        {k: v for k, v in state.items() if k != "positions"},
        {**state, "positions": state["positions"] + 5},
        {**state, "sizes": state["sizes"] + 1 + 5},
        {**state, "observations": state["observations"][:, :4]},
        {**state, "rewards": state["rewards"].astype("float64")},
        {**state, "format_version": np.array(99)},
    ]
    positions = state["positions"].copy()  # task 2 is partly filled: its
    positions[2] += 1  # position must equal its size
    bad_states.append({**state, "positions": positions})
    fresh = TaskReplayBuffer(3, 5, OBS_DIM, ACT_DIM)
    for bad in bad_states:
        with pytest.raises(ValueError):
            fresh.load_state_dict(bad)
    assert len(fresh) == 0


def test_save_is_atomic_when_interrupted(tmp_path, monkeypatch):
    buffer, _ = _buffer_with_data()
    path = tmp_path / "replay.npz"
    buffer.save(path)
    original = path.read_bytes()

    def savez_then_die(file, **arrays):
        file.write(b"PK\x03\x04 half of a zip")
        raise KeyboardInterrupt  # a kill in the middle of the write

    buffer.add(*_transitions([0], [555]))
    monkeypatch.setattr(replay_buffer_module.np, "savez", savez_then_die)
    with pytest.raises(KeyboardInterrupt):
        buffer.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == original
    assert os.listdir(tmp_path) == ["replay.npz"]  # no temporary file left
    loaded = TaskReplayBuffer.load(path)
    assert 555 not in _decode(loaded.state_dict()).tolist()


def test_add_rejects_bad_input_and_writes_nothing():
    buffer = TaskReplayBuffer(3, 4, OBS_DIM, ACT_DIM)
    buffer.add(*_transitions([0, 1], [0, 1]))
    before = buffer.state_dict()
    obs, act, rew, nxt, ids = _transitions([0, 2], [5, 6])

    def bad(pattern, **change):
        args = dict(observations=obs, actions=act, rewards=rew,
                    next_observations=nxt, task_ids=ids)
        args.update(change)
        with pytest.raises(ValueError, match=pattern):
            buffer.add(**args)

    bad(r"observations must have shape \(2, 3\), got \(2, 4\)",
        observations=np.zeros((2, 4)))
    bad(r"next_observations must have shape \(2, 3\), got \(3,\)",
        next_observations=np.zeros(3))
    bad(r"actions must have shape \(2, 2\), got \(1, 2\)", actions=act[:1])
    bad(r"rewards must have shape \(2,\), got \(2, 1\)", rewards=rew[:, None])
    bad(r"task_ids must have shape \(n,\), got \(2, 1\)", task_ids=ids[:, None])
    bad(r"task_ids must be in \[0, 3\), got \[3\]", task_ids=np.array([0, 3]))
    bad(r"task_ids must be in \[0, 3\), got \[-1\]", task_ids=np.array([-1, 0]))
    bad("task_ids must be integers", task_ids=np.array([0.0, 1.0]))
    bad("task_ids must be integers", task_ids=np.array([True, False]))
    bad("observations must hold real numbers", observations=obs.astype(complex))
    bad("actions must hold real numbers", actions=np.array([["a", "b"]] * 2))
    bad("rewards must hold real numbers", rewards=np.array([True, False]))
    for key, value in (("observations", obs), ("actions", act),
                       ("rewards", rew), ("next_observations", nxt)):
        for poison in (np.nan, np.inf, -np.inf):
            broken = value.copy()
            broken.reshape(len(ids), -1)[1, -1] = poison
            bad(rf"{key} has non-finite values .* rows \[1\]", **{key: broken})
    # Finite in float64 but inf once stored as float32.
    huge = rew.copy()
    huge[0] = 1e300
    bad(r"rewards has non-finite values.*float32", rewards=huge)
    after = buffer.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    buffer.add(obs, act, rew, nxt, ids)  # the good batch still goes in
    assert buffer.sizes.tolist() == [2, 1, 1]


@pytest.mark.parametrize("kwargs", [
    dict(num_tasks=0), dict(capacity_per_task=-1), dict(observation_dim=2.5),
    dict(action_dim=True), dict(dtype="int32"), dict(dtype="not a dtype")])
def test_constructor_rejects_bad_config(kwargs):
    config = dict(num_tasks=2, capacity_per_task=3, observation_dim=OBS_DIM,
                  action_dim=ACT_DIM)
    with pytest.raises(ValueError):
        TaskReplayBuffer(**{**config, **kwargs})
