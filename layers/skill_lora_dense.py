"""Polytropon skill adapters: `SkillLoRADense` and `SkillLoRAEinsumDense`.

Paper: E. M. Ponti, A. Sordoni, Y. Bengio, S. Reddy, "Combining Parameter-
efficient Modules for Task-level Generalisation" (Polytropon), EACL 2023
(papers/polytropon-combining-modular-skills.txt). Reference implementations:
the authors' `mttl` code and Hugging Face PEFT's `poly` tuner.

Every adapted layer owns a task-skill allocation matrix Z (logits, shape
(num_tasks, num_splits * num_skills)) and an inventory of skills Phi. The
parameters used for task i are the frozen base parameters plus the average
of the skills active for task i (paper Eq. 3). Skills are low-rank (LoRA,
NLP experiments) or sparse (SFT, RL experiments).

NOTE 1 (paper Eq. 4 vs code): Eq. 4 reads W0 + z^T A B. Like the reference
  code we mix the A's and the B's separately and multiply the mixtures,
  delta W = scale * (sum_s w_s A_s)(sum_s w_s B_s), not sum_s w_s A_s B_s.
NOTE 2 (layout): PEFT stores A as (splits, skills, in/splits, r). We store
  `lora_a` as (splits, skills, r, in/splits) (the gradient of A is 2-5x
  faster on CPU in this layout); `lora_b` is (splits, skills, r,
  out/splits) as in PEFT. Transpose the last two axes of PEFT's A to load it.
NOTE 3 (splits, as in PEFT): the input features are cut into num_splits
  contiguous chunks and chunk q is multiplied by split q's mixed A; the rank-r
  intermediates of all chunks are SUMMED (not kept per split), and output
  chunk q is that sum times split q's mixed B.
NOTE 4 (scale): scale = 1/r (reference) or lora_alpha/r when `lora_alpha` is
  given. It multiplies the rank-r intermediate, not the full output (the
  same number, fewer multiplications).
NOTE 5 (inference): the paper gives only the training relaxation (Eq. 2);
  as in the reference code inference uses sigmoid(logit) without
  temperature or noise. `gumbel_noise=False` switches the noise off in
  training too (as in the multi-head routing follow-up).
NOTE 6 (noise): the relaxed-Bernoulli noise is drawn per example (as in
  PEFT), the uniform clipped to [eps, 1 - eps] (float32 eps, like torch's
  clamp_probs).
NOTE 7 (discreteness): paper Eq. 5 writes the mean normalised entropy while
  its text says a binary matrix scores 1 and an all-0.5 matrix 0; we follow
  the text: 1 - mean binary entropy in bits. Usage (Eq. 7) with one skill is
  0/0; we return 1.0 (a one-category distribution is perfectly balanced).
  Rows of the metrics are (task, split) pairs.
NOTE 8 (Task-MoE): softmax over skills per split, keep the top_k largest
  probabilities and renormalise them to sum to 1 (GShard-style top-k);
  no noise, no load-balancing loss (routing is per task, not per token).
NOTE 9 (HyperFormer): the paper draws the equivalence between a linear
  hypernetwork on a task embedding and the skill inventory; "hyper" is
  exactly that: a learned continuous task embedding e_t (num_splits *
  num_skills values, N(0, 1/num_skills) so the generated A has LoRA's
  scale) generates A_t = sum_j e_tj A_j and B_t = sum_j e_tj B_j (no
  sigmoid, no normalisation). HyperFormer's MLP task projector and
  bottleneck adapters are not reproduced (the paper too uses LoRA for it).
  As with LoRA's B = 0 start, the embeddings get gradients once B moves.
NOTE 10 (SFT): the mask is random (as in the paper, not LT-SFT's
  magnitude-based selection), drawn once from `mask_seed` with NumPy so it
  is identical on every backend, with exactly round((1 - sparsity) * in *
  out) ones per skill. Deltas start at zero and have no scale. Splits mix
  the rows of the deltas in chunks, like A in LoRA.
NOTE 11 (few-shot): `add_tasks` appends logit rows at 0 (p = 0.5) for
  "learned" and "moe", embedding rows N(0, 1/num_skills) for "hyper" and
  rows given by the caller for "fixed"; "private" cannot grow (it would need
  new skills). Re-compile and rebuild the optimizer after adding tasks.

NOTE 12 (speed): the low-rank path has two layouts, the same sums (outputs
  equal to float rounding, and exactly at initialisation, B = 0), chosen per
  backend in `_rank_first`:
  - torch (eager CPU): the rank-r intermediate is (batch, r, m) (m = the
    flattened middle axes), and the two batched matmuls carry hand-written
    gradients (`_rank_first_matmuls`) in which every product has the rank
    as its short axis and writes a contiguous result; torch's own
    derivatives give the input gradient transposed (a strided full-size
    add) plus one slow skinny product. SkillLoRADense's bias b0 enters the
    second matmul as one more rank row (ones times b0): one full-size add
    fewer. Together they halve the adapter's share of a training step.
  - XLA (JAX, TensorFlow) and the inference-only backends: the plain
    einsums with a (batch, ..., r) intermediate, which XLA compiles 4-11%
    faster than the torch layout.
  The tests run both layouts on every backend, first and second order.
  Measurements in benchmarks/README.md.

Task ids: the call is `layer(inputs, task)`, `task` integer ids (batch,) of
any integer dtype, checked by `layers.task_inputs.check_task_inputs` (one
clear ValueError for a wrong kind or shape, a batch that differs from the
inputs' batch, or out-of-range ids where their values are concrete). Under
jit ids cannot be checked: an out-of-range id selects an all-zero allocation row (wrong
outputs, no error; `layers/layers_backend.py` NOTE 2). When the call gets
`task=None`, the ids set by the innermost `task_context(...)` are used (for
code paths such as KerasHub's generate() that call sublayers directly);
under jit such ids become constants of the traced function.

The allocation (modes, logits, noise, metrics, `add_tasks`, task ids,
`task_context`) and the SFT masks are written once in
layers/skill_allocation.py and shared with `SkillConv2D`
(layers/skill_conv.py); the names `task_context`, `current_task_ids` and
`skill_allocation_metrics` stay importable from this module.
"""

import functools
import math

import keras
import numpy as np
from keras import ops

from layers.layers_backend import prefers_rank_first_matmuls
from layers.skill_allocation import (  # noqa: F401 (re-exported names)
    _EPS,
    ALLOCATIONS,
    _SkillAllocation,
    check_sft_sparsity,
    current_task_ids,
    draw_sft_masks,
    skill_allocation_metrics,
    task_context,
)
from layers.task_inputs import positive_int

ADAPTERS = ("lora", "sft")

def _kaiming_uniform_sqrt5(fan_in):
    # PyTorch nn.Linear / PEFT: kaiming_uniform_(a=sqrt(5)) -> U(+-1/sqrt(fan_in)).
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def _letters(pool, count):
    if count > len(pool):
        raise ValueError(f"Too many axes ({count}) for the einsum equations.")
    return pool[:count]


@functools.lru_cache(maxsize=None)
def _rank_first_matmuls():
    """The two batched matmuls of the rank-first layout (NOTE 12).

    `project(a, x) = a x^T`: (batch, r, n), (batch, m, n) -> (batch, r, m);
    `expand(h, b) = h^T b`: (batch, r, m), (batch, r, o) -> (batch, m, o).
    Their gradients are the textbook ones, written out so that every product
    has the rank as its short axis and produces a contiguous result (torch's
    own derivatives of these products give the input gradient transposed,
    which costs a strided full-size add, and one slow skinny product). Each
    gradient uses only the function's own inputs and the upstream gradient,
    so higher-order derivatives stay exact. Built on first use:
    `ops.custom_gradient` exists only on the differentiable backends.
    """

    def upstream_of(args, upstream):
        # Keras passes the upstream gradient by keyword on torch and
        # positionally on JAX and TensorFlow.
        if upstream is None:
            (upstream,) = args
        return upstream

    @ops.custom_gradient
    def project(a, x):
        def grad(*args, upstream=None):
            upstream = upstream_of(args, upstream)
            return (ops.matmul(upstream, x),
                    ops.matmul(ops.transpose(upstream, (0, 2, 1)), a))

        return ops.matmul(a, ops.transpose(x, (0, 2, 1))), grad

    @ops.custom_gradient
    def expand(h, b):
        def grad(*args, upstream=None):
            upstream = upstream_of(args, upstream)
            return (ops.matmul(b, ops.transpose(upstream, (0, 2, 1))),
                    ops.matmul(h, upstream))

        return ops.matmul(ops.transpose(h, (0, 2, 1)), b), grad

    return project, expand


# ---------------------------------------------------------------------------
# Shared machinery.
# ---------------------------------------------------------------------------
class _SkillAdapter(_SkillAllocation):
    """The adapter (LoRA or SFT skills) shared by the two public layers.

    The allocation (modes, logits, mixing weights, metrics, `add_tasks`,
    task ids) is `layers.skill_allocation._SkillAllocation`, shared with
    `SkillConv2D`. Subclasses define `_adapted_output(inputs, weights)`
    (the frozen layer plus `_skill_output`) and `compute_output_shape`, and
    set `self._in_dims`, `self._out_dims` (feature axes contracted /
    produced by the base kernel) before calling `_build_skills()`.
    """

    def __init__(
        self,
        num_tasks,
        num_skills,
        rank=None,
        num_splits=1,
        allocation="learned",
        adapter="lora",
        temperature=1.0,
        gumbel_noise=True,
        lora_alpha=None,
        top_k=2,
        expert_matrix=None,
        sft_sparsity=0.9,
        mask_seed=0,
        seed=None,
        logits_initializer=None,
        skill_initializer="zeros",
        skill_regularizer=None,
        **kwargs,
    ):
        super().__init__(num_tasks, num_skills, num_splits=num_splits,
                         allocation=allocation, **kwargs)
        if adapter not in ADAPTERS:
            raise ValueError(f"adapter must be one of {ADAPTERS}; got {adapter!r}.")
        self.adapter = adapter
        if adapter == "lora":
            if rank is None:
                raise ValueError(
                    "adapter='lora' needs `rank`, the LoRA rank r (an integer "
                    ">= 1).")
            self.rank = positive_int(rank, "rank")
        else:
            # Sparse skills are full-size masked deltas: a rank (or a LoRA
            # scale) given with them would be silently ignored, so refuse it.
            for name, value in (("rank", rank), ("lora_alpha", lora_alpha)):
                if value is not None:
                    raise ValueError(
                        f"`{name}` is a LoRA argument; adapter='sft' (sparse "
                        f"skills) does not use it: leave it None; got {value!r}.")
            self.rank = None
        self._check_allocation_arguments(
            temperature, gumbel_noise, top_k, expert_matrix, seed,
            logits_initializer)
        self.lora_alpha = None if lora_alpha is None else float(lora_alpha)
        self.sft_sparsity = check_sft_sparsity(sft_sparsity)
        self.mask_seed = int(mask_seed)
        self._rank_first = prefers_rank_first_matmuls()  # NOTE 12
        self.skill_initializer = keras.initializers.get(skill_initializer)
        if adapter == "lora" and keras.initializers.serialize(
                self.skill_initializer) != keras.initializers.serialize(
                keras.initializers.get("zeros")):
            raise ValueError(
                "skill_initializer is the SFT deltas' initializer; LoRA skills "
                "start with B = 0 (adapter='lora'): leave it 'zeros'.")
        self.skill_regularizer = keras.regularizers.get(skill_regularizer)

    # -- configuration ----------------------------------------------------
    @property
    def scale(self):
        """LoRA scale: 1/r, or lora_alpha/r (NOTE 4); None for "sft"."""
        if self.rank is None:
            return None
        return (1.0 if self.lora_alpha is None else self.lora_alpha) / self.rank

    def _skill_config(self):
        config = self._allocation_config()
        config.update({
            "rank": self.rank,
            "adapter": self.adapter,
            "lora_alpha": self.lora_alpha,
            "sft_sparsity": self.sft_sparsity,
            "mask_seed": self.mask_seed,
            "skill_initializer": keras.initializers.serialize(
                self.skill_initializer),
            "skill_regularizer": keras.regularizers.serialize(
                self.skill_regularizer),
        })
        return config

    # -- weights -----------------------------------------------------------
    def _build_skills(self):
        in_features = int(np.prod(self._in_dims))
        out_features = int(np.prod(self._out_dims))
        self.in_features, self.out_features = in_features, out_features
        splits = self.num_splits
        if in_features % splits or out_features % splits:
            raise ValueError(
                f"num_splits={splits} must divide in_features={in_features} "
                f"and out_features={out_features}.")
        self._build_allocation()
        if self.adapter == "lora":
            # NOTE 2: A is (splits, skills, r, in/splits), PEFT's is transposed.
            self.lora_a = self.add_weight(
                name="lora_a",
                shape=(splits, self.num_skills, self.rank, in_features // splits),
                initializer=_kaiming_uniform_sqrt5(in_features // splits),
                regularizer=self.skill_regularizer)
            self.lora_b = self.add_weight(
                name="lora_b",
                shape=(splits, self.num_skills, self.rank, out_features // splits),
                initializer="zeros", regularizer=self.skill_regularizer)
        else:
            self.sft_deltas = self.add_weight(
                name="sft_deltas",
                shape=(self.num_skills, in_features, out_features),
                initializer=self.skill_initializer,
                regularizer=self.skill_regularizer)
            self.sft_masks = self.add_weight(
                name="sft_masks",
                shape=(self.num_skills, in_features, out_features),
                initializer=keras.initializers.Constant(self._draw_masks()),
                trainable=False)

    def _draw_masks(self):
        # NOTE 10: NumPy, so that masks agree on every backend.
        return draw_sft_masks(self.num_skills,
                              (self.in_features, self.out_features),
                              self.sft_sparsity, self.mask_seed)

    # -- forward -----------------------------------------------------------
    def _check_inputs(self, inputs):
        need = len(self._in_dims) + 1
        if len(inputs.shape) < need:
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape (batch, ..., "
                f"{', '.join(map(str, self._in_dims))}); got {tuple(inputs.shape)}.")
        trailing = tuple(inputs.shape[-len(self._in_dims):])
        if any(a is not None and a != b for a, b in zip(trailing, self._in_dims)):
            raise ValueError(
                f"{type(self).__name__} expects inputs whose last axes are "
                f"{self._in_dims}; got shape {tuple(inputs.shape)}.")

    def compute_output_spec(self, inputs, task=None, training=None):
        # The symbolic call (functional models) checks the task like `call`
        # does, so a bad task fails where the model is built.
        self._check_inputs(inputs)
        self._task_ids(inputs, task)
        return keras.KerasTensor(
            self.compute_output_shape(tuple(inputs.shape)),
            dtype=self.compute_dtype)

    def call(self, inputs, task=None, training=None):
        self._check_inputs(inputs)
        task_ids = self._task_ids(inputs, task)
        weights = self.allocation_weights(task_ids, training=bool(training))
        return self._adapted_output(inputs, weights)

    def _skill_output(self, inputs, weights, bias=None):
        """The adapter's contribution plus `bias`, shape (batch, ..., *out_dims)."""
        mid = _letters("cefgh", len(inputs.shape) - 1 - len(self._in_dims))
        ins = _letters("ijkl", len(self._in_dims))
        outs = _letters("opuvw", len(self._out_dims))
        weights = ops.cast(weights, self.compute_dtype)
        if self.adapter == "lora":
            # Per-example mixed A (batch, r, in) and B (batch, r, out): the
            # A's and B's are mixed separately (NOTE 1) and the split chunks
            # of A concatenate along the input features (NOTE 3).
            mixed_a = ops.einsum("bqs,qsrd->brqd", weights, self.lora_a)
            mixed_a = ops.reshape(mixed_a, (-1, self.rank) + self._in_dims)
            mixed_b = ops.einsum("bqs,qsro->brqo", weights, self.lora_b)
            mixed_b = ops.reshape(mixed_b, (-1, self.rank) + self._out_dims)
            scale = ops.cast(self.scale, mixed_a.dtype)  # NOTE 4
            if not self._rank_first:  # NOTE 12: the layout XLA prefers
                low_rank = ops.einsum(
                    f"b{mid}{ins},br{ins}->b{mid}r", inputs, mixed_a) * scale
                delta = ops.einsum(
                    f"b{mid}r,br{outs}->b{mid}{outs}", low_rank, mixed_b)
                return delta if bias is None else delta + bias
            # NOTE 12: the layout torch prefers, on flat (batch, m, n) views.
            project, expand = _rank_first_matmuls()
            batch = ops.shape(inputs)[0]
            flat_inputs = ops.reshape(inputs, (batch, -1, self.in_features))
            mixed_a = ops.reshape(mixed_a, (batch, self.rank, self.in_features))
            mixed_b = ops.reshape(mixed_b, (batch, self.rank, self.out_features))
            low_rank = project(mixed_a, flat_inputs) * scale  # (batch, r, m)
            if bias is not None:  # one more rank row: ones times b0
                ones = ops.ones_like(low_rank[:, :1])
                low_rank = ops.concatenate([low_rank, ones], axis=1)
                bias = ops.broadcast_to(
                    ops.reshape(ops.cast(bias, mixed_b.dtype), (1, 1, -1)),
                    (batch, 1, self.out_features))
                mixed_b = ops.concatenate([mixed_b, bias], axis=1)
            delta = expand(low_rank, mixed_b)  # (batch, m, out)
            leading = tuple(ops.shape(inputs))[:len(inputs.shape) - len(self._in_dims)]
            return ops.reshape(delta, leading + self._out_dims)
        # SFT: per-input-feature weights (batch, in, skills), NOTE 10.
        feature_weights = ops.repeat(
            weights, self.in_features // self.num_splits, axis=1)
        feature_weights = ops.reshape(
            feature_weights, (-1,) + self._in_dims + (self.num_skills,))
        deltas = ops.reshape(
            self.sft_masks * self.sft_deltas,
            (self.num_skills,) + self._in_dims + self._out_dims)
        weighted = ops.einsum(
            f"b{mid}{ins},b{ins}s->b{mid}s{ins}", inputs, feature_weights)
        delta = ops.einsum(f"b{mid}s{ins},s{ins}{outs}->b{mid}{outs}", weighted, deltas)
        return delta if bias is None else delta + bias

    def _delta_kernel(self, task_id):
        """Flat (in, out) delta of one task at inference allocation."""
        if self.allocation == "learned":
            probs = ops.sigmoid(self.skill_logits[task_id])
            probs = ops.reshape(probs, (self.num_splits, self.num_skills))
            weights = probs / (ops.sum(probs, axis=-1, keepdims=True) + _EPS)
        else:
            weights = self.allocation_weights(
                ops.convert_to_tensor([task_id], "int32"))[0]
        weights = ops.cast(weights, "float32")
        if self.adapter == "lora":
            mixed_a = ops.einsum("qs,qsrd->rqd", weights, self.lora_a)
            mixed_b = ops.einsum("qs,qsro->rqo", weights, self.lora_b)
            mixed_a = ops.reshape(mixed_a, (self.rank, self.in_features))
            mixed_b = ops.reshape(mixed_b, (self.rank, self.out_features))
            return self.scale * ops.matmul(ops.transpose(mixed_a), mixed_b)
        row_weights = ops.repeat(
            ops.transpose(weights), self.in_features // self.num_splits, axis=1)
        return ops.einsum("si,sio->io", row_weights, self.sft_masks * self.sft_deltas)


# ---------------------------------------------------------------------------
# Public layers.
# ---------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="modular_zoo")
class SkillLoRADense(_SkillAdapter):
    """A frozen Dense layer plus Polytropon skills (paper Eqs. 2-4).

    For an example of task t, with the layer's allocation logits Z:

        training:  z = sigmoid((Z_t + log u - log(1 - u)) / tau), u ~ U(0, 1)
        inference: z = sigmoid(Z_t)                              (NOTE 5)
        w_q = z_q / (sum_s z_qs + 1e-12)                         (per split q)
        y_q = act(x W0 + b0 + scale * (sum_p x_p A_p^mix) B_q^mix)_q
        A_p^mix = sum_s w_ps A_ps,  B_q^mix = sum_s w_qs B_qs    (NOTE 1)

    where x_p is the p-th chunk of the input features and y_q the q-th chunk
    of the outputs (NOTE 3), and scale = lora_alpha / r (NOTE 4). With
    `adapter="sft"` the skills are masked full-size deltas (NOTE 10):
    y = act(x (W0 + sum_s w_s (M_s * D_s)) + b0). The other allocations
    replace w: Z = I ("private"), Z = 1 ("shared"), a fixed 0/1 matrix
    ("fixed"), a top-k softmax ("moe", NOTE 8) or a linear hypernetwork on
    task embeddings ("hyper", NOTE 9). At initialisation (B = 0, deltas 0)
    the layer equals its frozen base exactly.

    Args:
        units: Positive integer, dimensionality of the output space.
        num_tasks: Positive integer, number of tasks (rows of Z).
        num_skills: Positive integer, size of the skill inventory.
        rank: Positive integer, the LoRA rank r. Required with
            `adapter="lora"`; must be None with `adapter="sft"`, whose skills
            are not low-rank.
        num_splits: Positive integer dividing the input and output features,
            the number of feature chunks with their own allocation (NOTE 3).
        activation: Activation function applied to the output, as in
            `Dense` (default None).
        use_bias: Boolean, whether the frozen base has a bias b0.
        trainable_base: Boolean, train W0 and b0 too (default False: frozen).
        kernel_initializer: Initializer for W0 (unless copied with
            `from_dense`).
        bias_initializer: Initializer for b0.
        allocation: String, one of "learned" (default), "private", "shared",
            "fixed", "moe" or "hyper".
        adapter: String, "lora" (default) or "sft".
        temperature: Float > 0, the Gumbel-sigmoid temperature tau.
        gumbel_noise: Boolean, whether training adds the relaxation noise
            (default True; NOTE 5).
        lora_alpha: Float or None, scale = lora_alpha / r (None: 1 / r);
            LoRA only.
        top_k: Positive integer, skills kept per split by "moe".
        expert_matrix: 0/1 array (num_tasks, num_skills), the task-skill
            matrix of "fixed" (and only of "fixed").
        sft_sparsity: Float in [0, 1), fraction of zeros in each SFT mask.
        mask_seed: Integer, seed of the NumPy-drawn SFT masks.
        seed: Integer or None, seed of the relaxation noise and of the
            "hyper" embeddings.
        logits_initializer: Initializer for Z (default U(-1e-3, 1e-3)).
        skill_initializer: Initializer for the SFT deltas (default "zeros":
            the layer starts as its base; Polytropon's BabyAI runs drew
            them nonzero). LoRA skills always start with B = 0.
        skill_regularizer: Regularizer for the skill parameters.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Float tensor (batch, ..., in_features).
        task: Integer task ids (batch,) in [0, num_tasks), any integer
            dtype; None takes the ids of the innermost `task_context`.
        training: Boolean or None; True draws the Gumbel-sigmoid noise
            ("learned" with `gumbel_noise=True`).

    Input shape:
        N-D tensor with shape `(batch_size, ..., in_features)`.

    Output shape:
        N-D tensor with shape `(batch_size, ..., units)`.

    Example:

    >>> layer = SkillLoRADense(8, num_tasks=3, num_skills=4, rank=2)
    >>> x = np.random.rand(5, 7, 16).astype("float32")
    >>> task = np.array([0, 1, 2, 0, 1], "uint8")
    >>> y = layer(x, task, training=True)
    >>> tuple(y.shape)
    (5, 7, 8)
    >>> base = ops.matmul(x, layer.kernel) + layer.bias  # B = 0 at init
    >>> bool(np.array_equal(ops.convert_to_numpy(y), ops.convert_to_numpy(base)))
    True
    >>> sparse = SkillLoRADense(8, num_tasks=3, num_skills=4, adapter="sft")
    >>> tuple(sparse(x, task).shape)
    (5, 7, 8)
    """

    _name_prefix = "skill_lora_dense"  # not Keras's "skill_lo_ra_dense"

    def __init__(
        self,
        units,
        num_tasks,
        num_skills,
        rank=None,
        num_splits=1,
        activation=None,
        use_bias=True,
        trainable_base=False,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(num_tasks, num_skills, rank, num_splits, **kwargs)
        self.units = positive_int(units, "units")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.trainable_base = bool(trainable_base)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(
                "SkillLoRADense expects inputs of shape (batch, ..., "
                f"in_features) with a known in_features; got {input_shape}.")
        self._in_dims = (int(input_shape[-1]),)
        self._out_dims = (self.units,)
        self.kernel = self.add_weight(
            name="kernel", shape=(input_shape[-1], self.units),
            initializer=self.kernel_initializer, trainable=self.trainable_base)
        self.bias = (self.add_weight(
            name="bias", shape=(self.units,), initializer=self.bias_initializer,
            trainable=self.trainable_base) if self.use_bias else None)
        self._build_skills()

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.units,)

    def _adapted_output(self, inputs, weights):
        outputs = ops.matmul(inputs, self.kernel)
        outputs = outputs + self._skill_output(inputs, weights, bias=self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    # -- export --------------------------------------------------------------
    def merged_kernel(self, task_id):
        """W0 + delta for one task (inference allocation), shape (in, units)."""
        task_id = self._check_task_id(task_id)
        return ops.cast(self.kernel, "float32") + self._delta_kernel(task_id)

    def to_dense(self, task_id):
        """A plain Dense equal to this layer at inference for `task_id`."""
        dense = keras.layers.Dense(
            self.units, activation=self.activation, use_bias=self.use_bias,
            dtype=self.dtype_policy)
        dense.build((None, self.in_features))
        dense.kernel.assign(self.merged_kernel(task_id))
        if self.use_bias:
            dense.bias.assign(self.bias)
        return dense

    @classmethod
    def from_dense(cls, dense, num_tasks, num_skills, rank=None, **kwargs):
        """A SkillLoRADense whose frozen base is a copy of a built Dense."""
        if not dense.built:
            raise ValueError("from_dense needs a built Dense layer.")
        layer = cls(
            dense.units, num_tasks, num_skills, rank,
            activation=dense.activation, use_bias=dense.use_bias, **kwargs)
        in_features = dense.kernel.shape[0]
        layer.build((None, in_features))
        layer.kernel.assign(dense.kernel)
        if dense.use_bias:
            layer.bias.assign(dense.bias)
        return layer

    def get_config(self):
        config = super().get_config()
        config.update(self._skill_config())
        config.update({
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "trainable_base": self.trainable_base,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(
                self.bias_initializer),
        })
        return config


@keras.saving.register_keras_serializable(package="modular_zoo")
class SkillLoRAEinsumDense(_SkillAdapter):
    """Polytropon skills around a frozen `keras.layers.EinsumDense`.

    The wrapped layer's kernel axes split into contracted axes (the trailing
    axes of the input) and produced axes (the trailing axes of the output);
    flattening each group gives standard LoRA, in = prod(contracted),
    out = prod(produced):

        y = einsum_dense(x) + reshape(scale * (flat(x) A_mix) B_mix)

    with A_mix, B_mix exactly as in `SkillLoRADense` (splits, allocation
    modes and the "sft" adapter included). For MultiHeadAttention's q/k/v
    ("abc,cde->abde", kernel (d, heads, head_dim)) in = d and
    out = heads * head_dim; for its output projection ("abcd,cde->abe",
    kernel (heads, head_dim, d)) in = heads * head_dim and out = d. The
    wrapped layer is frozen (its `trainable` set to False); at
    initialisation (B = 0, deltas 0) the wrapper equals it exactly.

    Args:
        einsum_dense: A `keras.layers.EinsumDense` without activation (or
            its serialized config), the layer to wrap.
        num_tasks: Positive integer, number of tasks.
        num_skills: Positive integer, size of the skill inventory.
        rank: Positive integer, the LoRA rank (None with `adapter="sft"`).
        num_splits: Positive integer dividing in and out (NOTE 3).
        **kwargs: The other skill arguments of `SkillLoRADense`
            (`allocation`, `adapter`, `temperature`, `gumbel_noise`,
            `lora_alpha`, `top_k`, `expert_matrix`, `sft_sparsity`,
            `mask_seed`, `seed`, `logits_initializer`, `skill_initializer`,
            `skill_regularizer`)
            and base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Float tensor, the wrapped layer's input.
        task: Integer task ids (batch,) in [0, num_tasks), any integer
            dtype; None takes the ids of the innermost `task_context`.
        training: Boolean or None; True draws the Gumbel-sigmoid noise.

    Input shape:
        The wrapped layer's input shape, e.g. `(batch_size, seq, d)`.

    Output shape:
        The wrapped layer's output shape, e.g. `(batch_size, seq, heads,
        head_dim)`.

    Example:

    >>> query = keras.layers.EinsumDense("abc,cde->abde", (None, 2, 4))
    >>> layer = SkillLoRAEinsumDense(query, num_tasks=2, num_skills=3, rank=2)
    >>> y = layer(np.ones((1, 5, 6), "float32"), np.array([1]))
    >>> tuple(y.shape)
    (1, 5, 2, 4)
    >>> layer.compute_output_shape((None, 5, 6))
    (None, 5, 2, 4)
    """

    _name_prefix = "skill_lora_einsum_dense"

    def __init__(self, einsum_dense, num_tasks, num_skills, rank=None,
                 num_splits=1, **kwargs):
        super().__init__(num_tasks, num_skills, rank, num_splits, **kwargs)
        if isinstance(einsum_dense, dict):
            einsum_dense = keras.saving.deserialize_keras_object(einsum_dense)
        if not isinstance(einsum_dense, keras.layers.EinsumDense):
            raise ValueError(
                "SkillLoRAEinsumDense wraps a keras.layers.EinsumDense; got "
                f"{type(einsum_dense).__name__}.")
        if einsum_dense.activation not in (None, keras.activations.linear):
            raise ValueError(
                "SkillLoRAEinsumDense needs an EinsumDense without activation.")
        self.einsum_dense = einsum_dense
        self.einsum_dense.trainable = False
        self._num_in_axes = self._count_contracted_axes(einsum_dense.equation)

    @staticmethod
    def _count_contracted_axes(equation):
        spec = equation.replace(" ", "")
        if "..." in spec or "->" not in spec or "," not in spec:
            raise ValueError(f"Unsupported EinsumDense equation {equation!r}.")
        inputs_spec, rest = spec.split(",")
        kernel_spec, output_spec = rest.split("->")
        contracted = "".join(a for a in kernel_spec if a in inputs_spec)
        produced = "".join(a for a in kernel_spec if a in output_spec)
        if (kernel_spec != contracted + produced
                or not inputs_spec.endswith(contracted)
                or not output_spec.endswith(produced)
                or inputs_spec[:-len(contracted)]
                != output_spec[:-len(produced)]):
            raise ValueError(
                "SkillLoRAEinsumDense needs an equation whose kernel is "
                "(contracted input axes..., produced output axes...) with the "
                "contracted axes trailing the input and the produced axes "
                f"trailing the output, e.g. 'abc,cde->abde'; got {equation!r}.")
        return len(contracted)

    def build(self, input_shape):
        if not self.einsum_dense.built:
            self.einsum_dense.build(input_shape)
        kernel_shape = tuple(int(d) for d in self.einsum_dense.kernel.shape)
        self._in_dims = kernel_shape[:self._num_in_axes]
        self._out_dims = kernel_shape[self._num_in_axes:]
        self._build_skills()

    def compute_output_shape(self, input_shape):
        # The equation keeps the leading axes and replaces the contracted
        # axes by the produced ones (checked in __init__). EinsumDense's own
        # compute_output_shape reports None for axes its output_shape leaves
        # None, even where the input shape is known.
        input_shape = tuple(input_shape)
        if not self.einsum_dense.built:
            self.einsum_dense.build(input_shape)
        kernel_shape = tuple(int(d) for d in self.einsum_dense.kernel.shape)
        return (input_shape[:len(input_shape) - self._num_in_axes]
                + kernel_shape[self._num_in_axes:])

    def _adapted_output(self, inputs, weights):
        outputs = self.einsum_dense(inputs)
        return outputs + ops.cast(
            self._skill_output(inputs, weights), outputs.dtype)

    def merged_kernel(self, task_id):
        """The wrapped kernel plus one task's delta, in the kernel's shape."""
        task_id = self._check_task_id(task_id)
        delta = ops.reshape(self._delta_kernel(task_id),
                            self._in_dims + self._out_dims)
        return ops.cast(self.einsum_dense.kernel, "float32") + delta

    def get_config(self):
        config = super().get_config()
        config.update(self._skill_config())
        config["einsum_dense"] = keras.saving.serialize_keras_object(
            self.einsum_dense)
        return config
