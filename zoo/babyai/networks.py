"""The BabyAI policy of Polytropon's RL experiment, with skills on every
component: BabyAI's `bow_endpool_res` (Hui et al. 2020; Chevalier-Boisvert
et al. 2019), as in the paper's Section 3.2 and Appendix A.1.

    image (7, 7, 3) ints -> bag-of-words embedding (sum over the 3 channels)
      -> 2 x [conv 3x3, (BN), ReLU]
    mission tokens -> word embedding -> GRU (its last state: the instruction)
    x -> n x FiLM block: x + ReLU((BN)(conv(ReLU((BN)(conv x))) * gamma(instr)
                                       + beta(instr)))
      -> max over the 7 x 7 cells -> LSTM cell (memory; optional)
      -> actor: tanh dense 64 -> logits (7);  critic: tanh dense 64 -> value

Every layer with weights is a skill layer: its weights for an example of
task t are W0 + sum_s w[t, s] (M_s * D_s), with trainable base W0 (the
paper: "theta_0 and Phi are both ... learnable"), sparse deltas D_s under
fixed random masks M_s (90% sparse; `sft_sparsity=0` gives the dense-skill
ablation) and the allocation w of the variant (`VARIANTS`):

* "private": Z = I, one skill per task (num_skills = num_tasks);
* "shared": one skill for every task (Z = 1);
* "expert": Z fixed from the paper's level-to-skill table (Table 2,
  `EXPERT_SKILLS`);
* "polytropon": Z learned (Gumbel-sigmoid logits, their own learning rate
  through `training.ppo.ppo_optimizer(allocation_learning_rate=)`);
* "polytropon-dense": the same with dense skills (the Table 3 ablation).

NOTE 1 (embeddings as skill layers): a lookup table is a dense layer on a
  one-hot input, so the image's bag-of-words embedding (an `Embedding(3 *
  max_value, d)` summed over channels in BabyAI) is a bias-free
  `SkillLoRADense` on the multi-hot (7, 7, 3 * max_value) image, and the
  word embedding one on one-hot tokens: the same outputs, and the sparse
  skills apply to the table as to any kernel. MiniGrid's largest image
  value is 10 (object "agent"), so the tiny preset's `max_value=11` covers
  it; the paper preset keeps BabyAI's 147. Larger values give a zero
  embedding (one_hot's rule; not checked under jit).
NOTE 2 (recurrent cells): the GRU (Keras's reset_after form) and the LSTM
  cell are written here on two skill dense layers each (input and
  recurrent maps), unrolled over the mission's tokens; padding (id 0)
  keeps the state, as BabyAI's packed sequences do. The memory is
  [h, c] (2 x memory units), as BabyAI's.
NOTE 3 (batch norm): the paper preset has BabyAI's batch norms (shared
  across tasks: their scale and shift are not skill parameters); the tiny
  preset has none. Keras batch norm acts with its moving statistics (the
  acting policy runs in inference mode), where torch-ac acts in train
  mode with batch statistics.
NOTE 4 (initialisation): Keras's defaults (Glorot uniform, zero biases)
  for W0 (BabyAI's own init normalises Linear rows). The deltas Phi start
  nonzero, as the paper's ("Kaiming uniform"): U(-b, b) with b =
  1/sqrt(fan_in), torch's default Linear bound, where Keras's fan_in of a
  (skills, in, out) delta counts the skills too (b is sqrt(skills)
  smaller than torch's per-skill bound). With zero deltas the allocation
  logits get no gradient until the deltas have moved (the output does not
  depend on how zero deltas are mixed).
"""

import keras
import numpy as np
from keras import ops

from layers.skill_conv import SkillConv2D
from layers.skill_lora_dense import SkillLoRADense
from zoo.babyai.variants import (  # noqa: F401 (re-exported)
    EXPERT_SKILLS,
    VARIANTS,
    default_num_skills,
    expert_matrix,
    skill_arguments,
)

@keras.saving.register_keras_serializable(package="modular_zoo")
class BabyAIPolicy(keras.Model):
    """BabyAI's `bow_endpool_res` with Polytropon skills (module docstring).

    Args:
        num_tasks: number of levels (task ids index them).
        num_skills: size of the skill inventory.
        allocation, expert_matrix, sft_sparsity, temperature, seed: the
            skill layers' arguments (`skill_arguments` gives them per
            variant).
        num_actions: 7 in BabyAI.
        vocabulary_size: mission token ids are in [0, vocabulary_size).
        max_value: image values are in [0, max_value) (NOTE 1).
        image_embedding: size of the image's bag-of-words embedding.
        width: channels of the convolutions and FiLM blocks.
        film_blocks: number of residual FiLM blocks (BabyAI: 2).
        instruction_units: word embedding and GRU size.
        memory_units: LSTM size (0: no memory, feedforward).
        head_units: hidden units of the actor and critic.
        batch_norm: BabyAI's batch norms (NOTE 3).
        mask_seed: seed of the first skill layer's masks (each layer adds
            its index).
        skill_initializer: initializer of the deltas (default: NOTE 4).

    Call: `policy((observations, task_ids))` -> `(logits, values)`, or with
    memory `policy((observations, task_ids, memory))` -> `(logits, values,
    memory)`; observations {"image": int (batch, 7, 7, 3), "mission": int
    (batch, tokens)} (`zoo.babyai.prepare_observations`).

    Example:

    >>> policy = BabyAIPolicy(**skill_arguments("polytropon", ["GoToObj", "GoToLocal"]),
    ...                       vocabulary_size=28, max_value=11, image_embedding=8,
    ...                       width=8, film_blocks=1, instruction_units=8,
    ...                       memory_units=0)
    >>> observations = {"image": np.zeros((3, 7, 7, 3), "int32"),
    ...                 "mission": np.ones((3, 9), "int32")}
    >>> logits, values = policy((observations, np.array([0, 1, 1])))
    >>> tuple(logits.shape), tuple(values.shape)
    ((3, 7), (3, 1))
    """

    def __init__(self, num_tasks, num_skills, allocation="learned", expert_matrix=None,
                 sft_sparsity=0.9, temperature=1.0, seed=0, num_actions=7,
                 vocabulary_size=28, max_value=147, image_embedding=128, width=128,
                 film_blocks=2, instruction_units=128, memory_units=128, head_units=64,
                 batch_norm=True, mask_seed=0, skill_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks, self.num_skills = int(num_tasks), int(num_skills)
        self.allocation, self.expert_matrix = allocation, expert_matrix
        self.sft_sparsity, self.temperature = float(sft_sparsity), float(temperature)
        self.seed, self.mask_seed = seed, int(mask_seed)
        self.num_actions, self.vocabulary_size = int(num_actions), int(vocabulary_size)
        self.max_value, self.image_embedding = int(max_value), int(image_embedding)
        self.width, self.film_blocks = int(width), int(film_blocks)
        self.instruction_units = int(instruction_units)
        self.memory_units, self.head_units = int(memory_units), int(head_units)
        self.batch_norm = bool(batch_norm)
        self.skill_initializer = keras.initializers.get(
            skill_initializer or keras.initializers.VarianceScaling(
                1.0 / 3.0, mode="fan_in", distribution="uniform"))  # NOTE 4
        for name in ("num_actions", "vocabulary_size", "max_value", "image_embedding",
                     "width", "instruction_units", "head_units"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}.")
        if self.film_blocks < 0 or self.memory_units < 0:
            raise ValueError("film_blocks and memory_units must be >= 0.")
        self._skill_layers = []

        self.image_table = self._dense(image_embedding, use_bias=False, name="image_bow")
        self.image_convs = [self._conv(f"image_conv_{i}") for i in range(2)]
        self.word_table = self._dense(instruction_units, use_bias=False, name="word_embedding")
        self.gru_input = self._dense(3 * instruction_units, name="gru_input")
        self.gru_recurrent = self._dense(3 * instruction_units, name="gru_recurrent")
        self.film = []
        for block in range(self.film_blocks):
            self.film.append({
                "conv_1": self._conv(f"film_{block}_conv_1"),
                "conv_2": self._conv(f"film_{block}_conv_2"),
                "gamma": self._dense(width, name=f"film_{block}_gamma"),
                "beta": self._dense(width, name=f"film_{block}_beta"),
            })
        self.norms = {}
        if self.batch_norm:
            names = ["image_conv_0", "image_conv_1"] + [
                f"film_{block}_{which}" for block in range(self.film_blocks)
                for which in ("norm_1", "norm_2")]
            self.norms = {name: keras.layers.BatchNormalization(name=name + "_bn")
                          for name in names}
        if self.memory_units:
            self.lstm_input = self._dense(4 * memory_units, name="lstm_input")
            self.lstm_recurrent = self._dense(4 * memory_units, name="lstm_recurrent")
        self.actor_hidden = self._dense(head_units, activation="tanh", name="actor_hidden")
        self.actor_logits = self._dense(num_actions, name="actor_logits")
        self.critic_hidden = self._dense(head_units, activation="tanh", name="critic_hidden")
        self.critic_value = self._dense(1, name="critic_value")

    # -- Construction. -----------------------------------------------------------
    def _skill_kwargs(self):
        return dict(num_tasks=self.num_tasks, num_skills=self.num_skills,
                    allocation=self.allocation, expert_matrix=self.expert_matrix,
                    sft_sparsity=self.sft_sparsity, temperature=self.temperature,
                    seed=self.seed, mask_seed=self.mask_seed + len(self._skill_layers),
                    skill_initializer=self.skill_initializer, trainable_base=True)

    def _dense(self, units, name, use_bias=True, activation=None):
        layer = SkillLoRADense(units, adapter="sft", use_bias=use_bias,
                               activation=activation, name=name, **self._skill_kwargs())
        self._skill_layers.append(layer)
        return layer

    def _conv(self, name):
        layer = SkillConv2D(self.width, 3, padding="same", name=name, **self._skill_kwargs())
        self._skill_layers.append(layer)
        return layer

    @property
    def skill_layers(self):
        """Every skill layer, in the order of the network."""
        return list(self._skill_layers)

    @property
    def memory_size(self):
        """Size of the recurrent memory [h, c] (0 without memory)."""
        return 2 * self.memory_units

    @property
    def recurrent(self):
        return self.memory_units > 0

    def allocation_probabilities(self):
        """Per skill layer (by name) its (num_tasks, num_splits, num_skills) allocation
        probabilities (inference allocation)."""
        return {layer.name: np.asarray(ops.convert_to_numpy(
            layer.allocation_probabilities())) for layer in self._skill_layers}

    # -- Forward. -----------------------------------------------------------------
    def _norm(self, name, x, training):
        return self.norms[name](x, training=training) if self.batch_norm else x

    def _instruction(self, mission, task_ids, training):
        tokens = ops.cast(mission, "int32")
        if len(tokens.shape) != 2:
            raise ValueError(f"BabyAIPolicy needs missions of shape (batch, tokens); "
                             f"got {tuple(tokens.shape)}.")
        words = self.word_table(ops.one_hot(tokens, self.vocabulary_size), task_ids,
                                training=training)
        inputs = self.gru_input(words, task_ids, training=training)  # all steps at once
        units = self.instruction_units
        state = ops.zeros((ops.shape(tokens)[0], units), words.dtype)
        for step in range(tokens.shape[1]):  # NOTE 2 (at most 9 tokens)
            x_z, x_r, x_h = ops.split(inputs[:, step], 3, axis=-1)
            h_z, h_r, h_h = ops.split(
                self.gru_recurrent(state, task_ids, training=training), 3, axis=-1)
            update = ops.sigmoid(x_z + h_z)
            reset = ops.sigmoid(x_r + h_r)
            candidate = ops.tanh(x_h + reset * h_h)
            new_state = update * state + (1.0 - update) * candidate
            present = ops.expand_dims(ops.cast(tokens[:, step] > 0, state.dtype), -1)
            state = present * new_state + (1.0 - present) * state
        return state

    def _image(self, image, task_ids, training):
        image = ops.cast(image, "int32")
        if len(image.shape) != 4 or tuple(image.shape[1:]) != (7, 7, 3):
            raise ValueError(f"BabyAIPolicy needs images of shape (batch, 7, 7, 3); "
                             f"got {tuple(image.shape)}.")
        offsets = ops.convert_to_tensor(np.arange(3, dtype="int32") * self.max_value)
        multi_hot = ops.sum(ops.one_hot(image + offsets, 3 * self.max_value), axis=-2)
        x = self.image_table(multi_hot, task_ids, training=training)  # NOTE 1
        for index, conv in enumerate(self.image_convs):
            x = ops.relu(self._norm(f"image_conv_{index}",
                                    conv(x, task_ids, training=training), training))
        return x

    def _film(self, x, instruction, task_ids, training):
        for block, layers in enumerate(self.film):
            h = ops.relu(self._norm(f"film_{block}_norm_1",
                                    layers["conv_1"](x, task_ids, training=training),
                                    training))
            h = layers["conv_2"](h, task_ids, training=training)
            gamma = layers["gamma"](instruction, task_ids, training=training)
            beta = layers["beta"](instruction, task_ids, training=training)
            h = h * gamma[:, None, None, :] + beta[:, None, None, :]
            x = x + ops.relu(self._norm(f"film_{block}_norm_2", h, training))
        return x

    def _lstm(self, features, memory, task_ids, training):
        hidden, cell = ops.split(memory, 2, axis=-1)
        gates = (self.lstm_input(features, task_ids, training=training)
                 + self.lstm_recurrent(hidden, task_ids, training=training))
        in_gate, forget_gate, cell_gate, out_gate = ops.split(gates, 4, axis=-1)
        cell = ops.sigmoid(forget_gate) * cell + ops.sigmoid(in_gate) * ops.tanh(cell_gate)
        hidden = ops.sigmoid(out_gate) * ops.tanh(cell)
        return hidden, ops.concatenate([hidden, cell], axis=-1)

    def call(self, inputs, training=False):
        if len(inputs) == 3:
            observations, task_ids, memory = inputs
        else:
            (observations, task_ids), memory = inputs, None
        if (memory is None) == self.recurrent:
            raise ValueError(
                "BabyAIPolicy with memory_units > 0 is called with (observations, "
                "task_ids, memory), without memory with (observations, task_ids); "
                f"memory_units={self.memory_units}, got {len(inputs)} inputs.")
        if not isinstance(observations, dict) or not {"image", "mission"} <= set(
                observations):
            raise ValueError("BabyAIPolicy observations are a dict with 'image' and "
                             "'mission' (zoo.babyai.prepare_observations).")
        task_ids = ops.cast(task_ids, "int32")
        instruction = self._instruction(observations["mission"], task_ids, training)
        x = self._film(self._image(observations["image"], task_ids, training),
                       instruction, task_ids, training)
        features = ops.max(x, axis=(1, 2))  # BabyAI's 7x7 max-pool
        if memory is not None:
            features, memory = self._lstm(features, ops.cast(memory, features.dtype),
                                          task_ids, training)
        logits = self.actor_logits(self.actor_hidden(features, task_ids, training=training),
                                   task_ids, training=training)
        values = self.critic_value(self.critic_hidden(features, task_ids, training=training),
                                   task_ids, training=training)
        return (logits, values) if memory is None else (logits, values, memory)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_tasks=self.num_tasks, num_skills=self.num_skills,
            allocation=self.allocation, expert_matrix=self.expert_matrix,
            sft_sparsity=self.sft_sparsity, temperature=self.temperature, seed=self.seed,
            num_actions=self.num_actions, vocabulary_size=self.vocabulary_size,
            max_value=self.max_value, image_embedding=self.image_embedding,
            width=self.width, film_blocks=self.film_blocks,
            instruction_units=self.instruction_units, memory_units=self.memory_units,
            head_units=self.head_units, batch_norm=self.batch_norm,
            mask_seed=self.mask_seed,
            skill_initializer=keras.initializers.serialize(self.skill_initializer))
        return config
