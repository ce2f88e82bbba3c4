"""`TaskReplayBuffer`: one ring buffer per task for multi-task off-policy RL.

Multi-task SAC on Meta-World (MT10: 10 tasks, one vector environment per
task, observation 39 floats (+ a one-hot of the task when asked for), action
4) trains on task-balanced batches: the same number of transitions from every
task's buffer at every update (Soft Modularization's official code; see
`/work/shared/notes/reference-facts.md`). The buffer is plain NumPy: it lives
on the host next to the environments, and a batch goes to the accelerator
once per update, whatever the Keras backend.

NOTE 1 (no done / terminal array): Meta-World episodes never terminate, they
  only truncate at 500 steps, so every stored transition bootstraps from its
  `next_observation` (the official SAC uses no done mask either). At an
  autoreset the vector env returns the first observation of the next episode;
  the caller must store `info["final_obs"]` (the true next observation of the
  last step) as `next_observation` instead. A terminating environment would
  need a `terminals` array; none is kept here.
NOTE 2 (layout): one region per task, arrays of shape
  `(num_tasks, capacity_per_task, ...)`. A task's writes go to slot
  `position[task]`, which then advances modulo the capacity, so the filled
  part of a region is always slots `[0, size[task])`, and once a region is
  full the oldest transition is overwritten first. Several transitions of one
  `add` may share a task; they are written in their order in the batch (if a
  batch holds more transitions of a task than the capacity, only the last
  `capacity_per_task` of them remain, as with writing them one by one).
NOTE 3 (all or nothing): `add` checks the whole batch (shapes, dtypes, task
  ids, finite values after the cast to the storage dtype: a float64 value too
  large for float32 would become inf) before writing anything, so a batch that
  raises leaves the buffer as it was.
NOTE 4 (sampling): `sample(k, rng)` draws, for every task, `k` slots
  uniformly with replacement from the task's filled part, with one
  `rng.integers` call for all tasks (the same `rng` state gives the same
  batch). The batch is ordered task by task: rows `[t * k, (t + 1) * k)`
  belong to task `t`, so per-task losses are a reshape to `(num_tasks, k)`.
  Floats are returned as float32 (copies) and task ids as int32, whatever the
  storage dtype.
NOTE 5 (files): `save` writes `state_dict()` with `np.savez` (uncompressed;
  only numeric and fixed-width string arrays, no pickled objects) to a
  temporary file in the target's directory, fsyncs it and `os.replace`s the
  target, so a kill during a save leaves either the old file or the new one,
  never a truncated one. The file is written to `path` exactly as given (no
  `.npz` is appended). `load` reads with `allow_pickle=False`.
NOTE 6 (memory): the arrays are allocated with `np.zeros` at construction;
  MT10 with a million transitions per task and a 49-float observation takes
  10 * 1e6 * (2 * 49 + 4 + 1) * 4 bytes = 4.1 GB in float32.
"""

import os
import tempfile

import numpy as np

_FORMAT_VERSION = 1
_CONFIG_KEYS = ("num_tasks", "capacity_per_task", "observation_dim",
                "action_dim")
_DATA_KEYS = ("observations", "actions", "rewards", "next_observations")


def _positive_int(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class TaskReplayBuffer:
    """Task-balanced replay buffer: one ring buffer per task (NumPy).

    Args:
        num_tasks: Number of tasks (10 for Meta-World MT10).
        capacity_per_task: Transitions kept per task; when a task's region is
            full its oldest transition is overwritten (NOTE 2).
        observation_dim: Length of an observation vector (39, or 39 +
            num_tasks with the one-hot).
        action_dim: Length of an action vector (4 for Meta-World).
        dtype: Floating storage dtype (default "float32"). `sample` always
            returns float32.

    Example:

    >>> buffer = TaskReplayBuffer(num_tasks=2, capacity_per_task=2,
    ...                           observation_dim=3, action_dim=1)
    >>> buffer.add(observations=np.zeros((3, 3)), actions=np.zeros((3, 1)),
    ...            rewards=np.array([0.0, 1.0, 2.0]),
    ...            next_observations=np.ones((3, 3)),
    ...            task_ids=np.array([0, 1, 1]))
    >>> buffer.sizes.tolist(), len(buffer)
    ([1, 2], 3)
    >>> buffer.add(np.zeros((1, 3)), np.zeros((1, 1)), np.array([3.0]),
    ...            np.ones((1, 3)), task_ids=np.array([1]))  # overwrites 1.0
    >>> batch = buffer.sample(4, np.random.default_rng(0))
    >>> batch["task_ids"].tolist()
    [0, 0, 0, 0, 1, 1, 1, 1]
    >>> batch["observations"].shape, batch["rewards"].dtype
    ((8, 3), dtype('float32'))
    >>> batch["rewards"][:4].tolist()
    [0.0, 0.0, 0.0, 0.0]
    >>> set(batch["rewards"][4:].tolist()) <= {2.0, 3.0}
    True
    """

    def __init__(self, num_tasks, capacity_per_task, observation_dim,
                 action_dim, dtype="float32"):
        self.num_tasks = _positive_int("num_tasks", num_tasks)
        self.capacity_per_task = _positive_int("capacity_per_task",
                                               capacity_per_task)
        self.observation_dim = _positive_int("observation_dim",
                                             observation_dim)
        self.action_dim = _positive_int("action_dim", action_dim)
        try:
            self.dtype = np.dtype(dtype)
        except TypeError as error:
            raise ValueError(f"dtype must be a floating dtype, got {dtype!r}"
                             ) from error
        if not np.issubdtype(self.dtype, np.floating):
            raise ValueError(
                f"dtype must be a floating dtype, got {self.dtype.name}")
        shape = (self.num_tasks, self.capacity_per_task)
        self.observations = np.zeros(shape + (self.observation_dim,),
                                     self.dtype)
        self.actions = np.zeros(shape + (self.action_dim,), self.dtype)
        self.rewards = np.zeros(shape, self.dtype)
        self.next_observations = np.zeros(shape + (self.observation_dim,),
                                          self.dtype)
        # Next slot to write, and number of filled slots, of every task.
        self.positions = np.zeros(self.num_tasks, np.int64)
        self._sizes = np.zeros(self.num_tasks, np.int64)

    # ----------------------------------------------------------------- sizes
    @property
    def sizes(self):
        """Transitions stored per task, an int64 array of shape (num_tasks,)."""
        return self._sizes.copy()

    @property
    def total_size(self):
        """Transitions stored over all tasks."""
        return int(self._sizes.sum())

    def __len__(self):
        return self.total_size

    def __repr__(self):
        return (f"TaskReplayBuffer(num_tasks={self.num_tasks}, "
                f"capacity_per_task={self.capacity_per_task}, "
                f"observation_dim={self.observation_dim}, "
                f"action_dim={self.action_dim}, dtype='{self.dtype.name}', "
                f"sizes={self._sizes.tolist()})")

    # ------------------------------------------------------------------- add
    def _checked_floats(self, name, value, shape):
        value = np.asarray(value)
        if value.dtype == np.bool_ or not (
                np.issubdtype(value.dtype, np.floating)
                or np.issubdtype(value.dtype, np.integer)):
            raise ValueError(f"{name} must hold real numbers (float or int), "
                             f"got dtype {value.dtype}")
        if value.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, "
                             f"got {value.shape}")
        with np.errstate(over="ignore"):  # NOTE 3: check after the cast.
            value = value.astype(self.dtype)
        if not np.all(np.isfinite(value)):
            rows = np.unique(np.nonzero(~np.isfinite(value))[0])
            raise ValueError(
                f"{name} has non-finite values (nan or inf, possibly from "
                f"the cast to {self.dtype.name}) in rows {rows.tolist()}")
        return value

    def add(self, observations, actions, rewards, next_observations,
            task_ids):
        """Appends a batch of transitions to their tasks' ring buffers.

        Args:
            observations: (n, observation_dim) array.
            actions: (n, action_dim) array.
            rewards: (n,) array.
            next_observations: (n, observation_dim) array, the true next
                observation (`info["final_obs"]` at an autoreset, NOTE 1).
            task_ids: (n,) integer array, each in [0, num_tasks); several
                transitions may share a task (NOTE 2).

        Raises:
            ValueError: a shape, dtype or task id is wrong, or a value is not
                finite. Nothing is written then (NOTE 3).
        """
        task_ids = np.asarray(task_ids)
        if task_ids.ndim != 1:
            raise ValueError(f"task_ids must have shape (n,), "
                             f"got {task_ids.shape}")
        if task_ids.dtype == np.bool_ or not np.issubdtype(task_ids.dtype,
                                                           np.integer):
            raise ValueError(f"task_ids must be integers, "
                             f"got dtype {task_ids.dtype}")
        bad = (task_ids < 0) | (task_ids >= self.num_tasks)
        if np.any(bad):
            raise ValueError(
                f"task_ids must be in [0, {self.num_tasks}), got "
                f"{np.unique(task_ids[bad]).tolist()}")
        n = task_ids.shape[0]
        values = {
            "observations": self._checked_floats(
                "observations", observations, (n, self.observation_dim)),
            "actions": self._checked_floats(
                "actions", actions, (n, self.action_dim)),
            "rewards": self._checked_floats("rewards", rewards, (n,)),
            "next_observations": self._checked_floats(
                "next_observations", next_observations,
                (n, self.observation_dim)),
        }
        capacity = self.capacity_per_task
        for task in np.unique(task_ids):
            rows = np.flatnonzero(task_ids == task)  # batch order (NOTE 2)
            count = len(rows)
            slots = (self.positions[task] + np.arange(count)) % capacity
            # Only the last `capacity` writes survive; dropping the others
            # keeps every slot written once (fancy assignment with repeated
            # indices has no guaranteed order).
            rows, slots = rows[-capacity:], slots[-capacity:]
            for key in _DATA_KEYS:
                getattr(self, key)[task, slots] = values[key][rows]
            self.positions[task] = (self.positions[task] + count) % capacity
            self._sizes[task] = min(self._sizes[task] + count, capacity)

    # ---------------------------------------------------------------- sample
    def sample(self, batch_per_task, rng, tasks_per_batch=None):
        """A task-balanced batch: `batch_per_task` transitions of every task,
        or of `tasks_per_batch` tasks drawn without replacement among those
        holding data (MINT's goal-conditioned pushing: 9 of 200 goals per
        update).

        Args:
            batch_per_task: Positive int, transitions drawn per task,
                uniformly with replacement from the task's filled part.
            rng: `np.random.Generator`.
            tasks_per_batch: None (every task) or a positive int.

        Returns:
            Dict with "observations" (n * k, observation_dim), "actions"
            (n * k, action_dim), "rewards" (n * k,), "next_observations"
            (n * k, observation_dim), all float32, and "task_ids" (n * k,)
            int32, ordered task by task (NOTE 4); n is the number of tasks
            sampled.

        Raises:
            ValueError: some task has no transition yet (every task), or
                fewer than `tasks_per_batch` tasks have.
        """
        batch_per_task = _positive_int("batch_per_task", batch_per_task)
        if not isinstance(rng, np.random.Generator):
            raise ValueError("rng must be a numpy Generator "
                             f"(np.random.default_rng(seed)), got {type(rng)}")
        if tasks_per_batch is None:
            empty = np.flatnonzero(self._sizes == 0)
            if len(empty):
                raise ValueError(
                    f"cannot sample a task-balanced batch: tasks "
                    f"{empty.tolist()} have no transition yet (sizes "
                    f"{self._sizes.tolist()})")
            chosen = np.arange(self.num_tasks)
        else:
            tasks_per_batch = _positive_int("tasks_per_batch", tasks_per_batch)
            filled = np.flatnonzero(self._sizes > 0)
            if len(filled) < tasks_per_batch:
                raise ValueError(
                    f"cannot sample {tasks_per_batch} tasks: only "
                    f"{len(filled)} tasks have transitions yet")
            chosen = np.sort(rng.choice(filled, tasks_per_batch, replace=False))
        slots = rng.integers(0, self._sizes[chosen, None],
                             size=(len(chosen), batch_per_task))
        tasks = np.repeat(chosen, batch_per_task)
        slots = slots.reshape(-1)
        batch = {key: getattr(self, key)[tasks, slots].astype(np.float32)
                 for key in _DATA_KEYS}
        batch["task_ids"] = tasks.astype(np.int32)
        return batch

    # ----------------------------------------------------------------- state
    def state_dict(self):
        """Everything the buffer holds, as a dict of NumPy arrays (copies).

        Numeric and fixed-width string arrays only, so it saves with
        `np.savez` and loads with `allow_pickle=False` (NOTE 5).
        """
        state = {"format_version": np.array(_FORMAT_VERSION, np.int64),
                 "dtype": np.array(self.dtype.name)}
        for key in _CONFIG_KEYS:
            state[key] = np.array(getattr(self, key), np.int64)
        for key in _DATA_KEYS:
            state[key] = getattr(self, key).copy()
        state["positions"] = self.positions.copy()
        state["sizes"] = self._sizes.copy()
        return state

    def load_state_dict(self, state):
        """Replaces the contents with `state` (from `state_dict` or a file).

        Raises:
            ValueError: `state` misses a key, or its config (num_tasks,
                capacity, dims, dtype), shapes, positions or sizes do not
                fit this buffer. Nothing is changed then.
        """
        missing = [key for key in ("format_version", "dtype") + _CONFIG_KEYS
                   + _DATA_KEYS + ("positions", "sizes") if key not in state]
        if missing:
            raise ValueError(f"replay buffer state misses keys {missing}")
        version = int(np.asarray(state["format_version"]))
        if version != _FORMAT_VERSION:
            raise ValueError(f"replay buffer state has format version "
                             f"{version}, expected {_FORMAT_VERSION}")
        expected = {key: getattr(self, key) for key in _CONFIG_KEYS}
        expected["dtype"] = self.dtype.name
        got = {key: int(np.asarray(state[key])) for key in _CONFIG_KEYS}
        got["dtype"] = str(np.asarray(state["dtype"]))
        if got != expected:
            diff = {key: f"{got[key]} (expected {expected[key]})"
                    for key in expected if got[key] != expected[key]}
            raise ValueError(f"replay buffer state was saved with another "
                             f"config: {diff}")
        arrays = {}
        for key in _DATA_KEYS:
            value = np.asarray(state[key])
            target = getattr(self, key)
            if value.shape != target.shape or value.dtype != target.dtype:
                raise ValueError(
                    f"state[{key!r}] must be {target.dtype.name} of shape "
                    f"{target.shape}, got {value.dtype} of {value.shape}")
            arrays[key] = value
        positions = np.asarray(state["positions"])
        sizes = np.asarray(state["sizes"])
        for key, value in (("positions", positions), ("sizes", sizes)):
            if value.shape != (self.num_tasks,) or not np.issubdtype(
                    value.dtype, np.integer):
                raise ValueError(f"state[{key!r}] must be integers of shape "
                                 f"({self.num_tasks},), got {value.dtype} of "
                                 f"{value.shape}")
        capacity = self.capacity_per_task
        # NOTE 2: a region that is not full was filled from slot 0, so its
        # next slot is its size.
        valid = ((sizes >= 0) & (sizes <= capacity) & (positions >= 0)
                 & (positions < capacity)
                 & ((sizes == capacity) | (positions == sizes)))
        if not np.all(valid):
            raise ValueError(
                f"replay buffer state has inconsistent positions "
                f"{positions.tolist()} and sizes {sizes.tolist()} for "
                f"capacity {capacity}")
        for key in _DATA_KEYS:
            getattr(self, key)[...] = arrays[key]
        self.positions[...] = positions
        self._sizes[...] = sizes

    def save(self, path):
        """Writes `state_dict()` to `path` with `np.savez`, atomically.

        NOTE 5: a temporary file in the same directory, fsynced, then
        `os.replace`; `path` is used as given (no `.npz` appended).
        """
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        handle, temp_path = tempfile.mkstemp(
            dir=directory, prefix=f".{os.path.basename(path)}.",
            suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                np.savez(file, **self.state_dict())
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp_path, path)
        except BaseException:
            if os.path.exists(temp_path):
                os.remove(temp_path)
            raise
        try:  # Make the rename itself durable (POSIX); best effort.
            directory_handle = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(directory_handle)
        except OSError:
            pass
        finally:
            os.close(directory_handle)

    @classmethod
    def load(cls, path):
        """A buffer built from a file written by `save` (no pickle)."""
        with np.load(os.fspath(path), allow_pickle=False) as data:
            if "dtype" not in data or any(key not in data
                                          for key in _CONFIG_KEYS):
                raise ValueError(f"{path} is not a saved TaskReplayBuffer "
                                 f"(keys {sorted(data.files)})")
            buffer = cls(**{key: int(data[key]) for key in _CONFIG_KEYS},
                         dtype=str(data["dtype"]))
            buffer.load_state_dict(data)
        return buffer
