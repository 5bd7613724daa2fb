"""Optimizers and learning-rate schedules: fairseq's Adam recipe as an optax chain.

wav2vec 2.0 / HuBERT pretrain with Adam(β1=0.9, β2=0.98, eps=1e-6), decoupled weight decay 0.01,
global-norm clipping and either `polynomial_decay` (linear warmup, then decay to `end_lr`) or, for
fine-tuning, `tri_stage` (warmup / hold / exponential decay). See docs/reference.md and
fairseq/optim/lr_scheduler/{polynomial_decay,tri_stage}_schedule.py.

Which parameters train is a regex over their '/'-joined paths (`optim.trainable`); frozen ones get
`optax.set_to_zero()` through `optax.multi_transform`, so they hold no Adam moments (big_vision's
`('img/.*', None)` idea), which is what LoRA / ladder fine-tuning needs. Parameter groups with
their own learning rate (`optim.lr_groups`, e.g. Hyena's filter and positional embedding, as
safari's param groups) follow the same schedule, scaled by their lr over `optim.lr`.
"""
import math
import re

import jax
import jax.numpy as jnp
import optax

_OPTIM_FIELDS = ("name", "lr", "b1", "b2", "eps", "weight_decay", "no_decay", "clip_norm",
                 "grad_accum_steps", "trainable", "lr_groups")


def _check_fields(section, cfg, allowed):
  unknown = sorted(set(cfg.keys()) - set(allowed))
  if unknown:
    raise ValueError(f"Unknown {section} field(s) {unknown} for {section}.name={cfg['name']!r}; "
                     f"valid: {sorted(allowed)}.")


def _need(ok, msg):
  if not ok:
    raise ValueError(msg)


def warmup_poly(lr, total_steps, *, warmup_steps=0, power=1.0, end_lr=0.0):
  """fairseq `polynomial_decay`: linear warmup to `lr`, then (1 - progress)**power to `end_lr`.

  lr(t) = lr * t / warmup for t <= warmup; end_lr + (lr - end_lr) * (1 - (t - w) / (T - w))**power
  for warmup < t < T; end_lr from T on. `t` counts applied updates (optax's `count`).
  """
  # warmup_steps >= total_steps is allowed (a short debug run stays in warmup).
  _need(warmup_steps >= 0, f"schedule.warmup_steps must be >= 0, got {warmup_steps}.")
  _need(power > 0, f"schedule.power must be > 0, got {power}.")

  def schedule(count):
    t = jnp.asarray(count, jnp.float32)
    warm = lr * t / max(warmup_steps, 1)
    remaining = jnp.clip(1.0 - (t - warmup_steps) / max(total_steps - warmup_steps, 1),
                         0.0, 1.0)
    decay = end_lr + (lr - end_lr) * remaining**power
    return jnp.where(t <= warmup_steps, warm, decay)

  return schedule


def tri_stage(lr, total_steps, *, phase_ratio=(), warmup_steps=0, hold_steps=0, decay_steps=0,
              init_lr_scale=0.01, final_lr_scale=0.01):
  """fairseq `tri_stage`: linear warmup from init_lr_scale·lr, hold at lr, exponential decay.

  Phases are given either as `phase_ratio` (three fractions of total_steps, fairseq's default
  fine-tuning form) or as explicit `*_steps`. After the decay the rate stays at final_lr_scale·lr.
  """
  if phase_ratio:
    _need(len(phase_ratio) == 3 and abs(sum(phase_ratio) - 1.0) < 1e-6,
          f"schedule.phase_ratio must be 3 fractions summing to 1, got {tuple(phase_ratio)}.")
    warmup_steps, hold_steps, decay_steps = (int(total_steps * r) for r in phase_ratio)
  _need(min(warmup_steps, hold_steps, decay_steps) >= 0, "schedule.*_steps must be >= 0.")
  _need(0 < final_lr_scale <= 1, f"schedule.final_lr_scale must be in (0, 1], got "
        f"{final_lr_scale}.")
  init_lr = init_lr_scale * lr
  warmup_rate = (lr - init_lr) / warmup_steps if warmup_steps else 0.0
  decay_factor = -math.log(final_lr_scale) / decay_steps if decay_steps else 0.0

  def schedule(count):
    t = jnp.asarray(count, jnp.float32)
    hold_end = warmup_steps + hold_steps
    decay_end = hold_end + decay_steps
    return jnp.select(
        [t < warmup_steps, t < hold_end, t <= decay_end],
        [init_lr + warmup_rate * t, jnp.full_like(t, lr),
         lr * jnp.exp(-decay_factor * (t - hold_end))],
        final_lr_scale * lr)

  return schedule


def constant(lr, total_steps, *, warmup_steps=0):
  """`lr`, after an optional linear warmup (lr * t / warmup_steps) over `warmup_steps`."""
  del total_steps
  _need(warmup_steps >= 0, f"schedule.warmup_steps must be >= 0, got {warmup_steps}.")
  return lambda count: lr * jnp.minimum(1.0, jnp.asarray(count, jnp.float32) /
                                        max(warmup_steps, 1) if warmup_steps else 1.0)


def noam(lr, total_steps, *, warmup_steps):
  """SpeechBrain's `NoamScheduler` without model_size (speechbrain/nnet/schedulers.py), as the
  BEST-RQ recipe uses it: lr(t) = lr * sqrt(w) * min(t ** -0.5, t * w ** -1.5), peaking at `lr`
  at t = w, then inverse square root decay.

  SpeechBrain calls the scheduler after each optimizer step (train.py on_fit_batch_end), so its
  first update runs at the optimizer's own lr and update k + 1 at noam(k): here count 0 (the
  first update) gives `lr` and count t >= 1 gives noam(t).
  """
  del total_steps
  _need(warmup_steps > 0, f"schedule.warmup_steps must be > 0 for noam, got {warmup_steps}.")

  def schedule(count):
    t = jnp.maximum(jnp.asarray(count, jnp.float32), 1.0)
    scaled = lr * warmup_steps ** 0.5 * jnp.minimum(t ** -0.5, t * warmup_steps ** -1.5)
    return jnp.where(jnp.asarray(count) == 0, lr, scaled)

  return schedule


def cosine(lr, total_steps, *, warmup_steps=0, end_lr=0.0):
  """fairseq `cosine` (t_mult 1, one period, warmup_init_lr = min_lr = end_lr; data2vec 2.0):
  linear end_lr -> lr over warmup_steps, then end_lr + (lr - end_lr)(1 + cos(pi t / P)) / 2 with
  t = count - warmup_steps and P = total_steps - warmup_steps: optax's warmup cosine schedule."""
  _need(0 <= warmup_steps < total_steps, f"schedule.warmup_steps={warmup_steps} must be in "
        f"[0, total_steps={total_steps}).")
  return optax.warmup_cosine_decay_schedule(end_lr, lr, warmup_steps, total_steps,
                                            end_value=end_lr)


SCHEDULES = {"warmup_poly": warmup_poly, "tri_stage": tri_stage, "constant": constant,
             "noam": noam, "cosine": cosine}
_SCHEDULE_FIELDS = {
    "warmup_poly": ("warmup_steps", "power", "end_lr"),
    "tri_stage": ("phase_ratio", "warmup_steps", "hold_steps", "decay_steps", "init_lr_scale",
                  "final_lr_scale"),
    "constant": ("warmup_steps",),
    "noam": ("warmup_steps",),
    "cosine": ("warmup_steps", "end_lr"),
}


def make_schedule(schedule_cfg, lr, total_steps):
  """Builds `count -> learning rate` from the `schedule` section (`name` plus its kwargs)."""
  name = schedule_cfg["name"]
  if name not in SCHEDULES:
    raise ValueError(f"Unknown schedule.name {name!r}; choose from {sorted(SCHEDULES)}.")
  _check_fields("schedule", schedule_cfg, ("name",) + _SCHEDULE_FIELDS[name])
  kwargs = {k: v for k, v in dict(schedule_cfg).items() if k != "name"}
  return SCHEDULES[name](lr, total_steps, **kwargs)


def param_path(path):
  """'/'-joined dict keys of a tree path: ('encoder', 'layer_00', 'kernel') -> 'encoder/...'.

  Attribute keys (the `.value` of a flax `Partitioned` box) are skipped, so boxed and unboxed
  trees give the same paths.
  """
  parts = []
  for k in path:
    if isinstance(k, jax.tree_util.DictKey):
      parts.append(str(k.key))
    elif isinstance(k, jax.tree_util.SequenceKey):
      parts.append(str(k.idx))
  return "/".join(parts)


def trainable_labels(trainable):
  """A labels function for `optax.multi_transform`: 'train' where the regex fullmatches."""
  pattern = re.compile(trainable)

  def labels(params):
    out = jax.tree_util.tree_map_with_path(
        lambda p, _: "train" if pattern.fullmatch(param_path(p)) else "freeze", params)
    if "train" not in jax.tree.leaves(out):
      raise ValueError(f"optim.trainable={trainable!r} matches no parameter; paths look like "
                       f"{param_path(jax.tree_util.tree_flatten_with_path(params)[0][0][0])!r}.")
    return out

  return labels


def decay_mask(no_decay):
  """An optax `mask` callable: True (decayed) where the regex does not fullmatch the param path;
  None for "" (everything decayed, and the optimizer state keeps its unmasked structure)."""
  if not no_decay:
    return None
  pattern = re.compile(no_decay)
  return lambda params: jax.tree_util.tree_map_with_path(
      lambda p, _: not pattern.fullmatch(param_path(p)), params)


def lr_groups(groups, base_lr):
  """Scales the updates of parameter groups with their own learning rate.

  Args:
    groups: (regex, lr) pairs over '/'-joined param paths; the first that fullmatches a path
      sets its lr. A torch param group's lr scales its whole AdamW step (the decoupled decay
      too) and the scheduler scales every group alike, so multiplying the updates by
      lr / base_lr is the same.
    base_lr: `optim.lr`.

  Returns:
    An `optax.GradientTransformation` (stateless); identity for no groups.
  """
  if not groups:
    return optax.identity()
  rules = []
  for rule in groups:
    if len(rule) != 2 or not isinstance(rule[0], str) or not rule[1] > 0:
      raise ValueError(f"optim.lr_groups entries are (regex, lr > 0) pairs; got {rule!r}.")
    rules.append((re.compile(rule[0]), float(rule[1]) / base_lr))

  def factor(path):
    name = param_path(path)
    return next((f for pattern, f in rules if pattern.fullmatch(name)), 1.0)

  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map_with_path(lambda p, u: u * factor(p), updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(optim_cfg, schedule_cfg, total_steps):
  """Builds the optimizer from the `optim` and `schedule` config sections.

  Args:
    optim_cfg: `name` ("adamw"), lr, b1, b2, eps, weight_decay, no_decay (regex of param paths
      without weight decay, e.g. r".*bias"; "" or absent: none), clip_norm (0: off),
      grad_accum_steps (read by the train step), trainable (regex over param paths, default ".*"),
      lr_groups ((regex, lr) pairs: those params' own learning rate, see `lr_groups`).
    schedule_cfg: `name` in SCHEDULES plus that schedule's fields.
    total_steps: number of updates the run makes (the decay horizon).

  Returns:
    (tx, lr_schedule): an `optax.GradientTransformation` and `count -> lr`.
  """
  if optim_cfg["name"] != "adamw":
    raise ValueError(f"Unknown optim.name {optim_cfg['name']!r}; choose from ['adamw'].")
  _check_fields("optim", optim_cfg, _OPTIM_FIELDS)
  _need(optim_cfg["lr"] > 0, f"optim.lr must be > 0, got {optim_cfg['lr']}.")
  _need(optim_cfg.get("clip_norm", 0.0) >= 0, "optim.clip_norm must be >= 0 (0: off).")
  _need(total_steps > 0, f"total_steps must be > 0, got {total_steps}.")
  lr_schedule = make_schedule(schedule_cfg, optim_cfg["lr"], total_steps)
  clip = optim_cfg.get("clip_norm", 0.0)
  # Clipping sits inside the trainable branch, so the clip norm is over trained params only.
  train_tx = optax.chain(
      optax.clip_by_global_norm(clip) if clip > 0 else optax.identity(),
      # optax.adamw decays decoupled from the gradient (p -= lr * wd * p), as fairseq's Adam.
      optax.adamw(lr_schedule, b1=optim_cfg.get("b1", 0.9), b2=optim_cfg.get("b2", 0.98),
                  eps=optim_cfg.get("eps", 1e-6), weight_decay=optim_cfg.get("weight_decay", 0.0),
                  mask=decay_mask(optim_cfg.get("no_decay", ""))),
      lr_groups(optim_cfg.get("lr_groups", ()), optim_cfg["lr"]))
  trainable = optim_cfg.get("trainable", ".*")
  tx = optax.multi_transform({"train": train_tx, "freeze": optax.set_to_zero()},
                             trainable_labels(trainable))
  return tx, lr_schedule


def delayed(inner, num_steps: int):
  """`inner` whose updates are zero, and whose state stays untouched, for `num_steps` calls."""
  if num_steps <= 0:
    return inner

  def init(params):
    return (jnp.zeros((), jnp.int32), inner.init(params))

  def update(updates, state, params=None):
    count, inner_state = state
    new_updates, new_inner = inner.update(updates, inner_state, params)
    frozen = count < num_steps

    def pick(a, b):
      return jax.tree.map(lambda x, y: jnp.where(frozen, x, y), a, b)

    return (pick(jax.tree.map(jnp.zeros_like, new_updates), new_updates),
            (count + 1, pick(inner_state, new_inner)))

  return optax.GradientTransformation(init, update)


def make_finetune_optimizer(optim_cfg, schedule_cfg, total_steps, *, heads,
                            freeze_encoder_steps=0):
  """Adam + schedule with three groups: the output layers `heads` (top-level param names),
  the encoder (updates and moments held for `freeze_encoder_steps`, as fairseq's Adam skips
  parameters without gradients) and the frozen rest (`optim.trainable`, e.g. the CNN).

  The learning rate follows the global step in every group (fairseq's scheduler counts
  updates, not a group's). With freeze_encoder_steps 0 the updates equal `make_optimizer`'s.

  Returns:
    (tx, lr_schedule).
  """
  lr_schedule = make_schedule(schedule_cfg, optim_cfg.lr, total_steps)

  def branch(delay):
    adam = optax.chain(optax.scale_by_adam(b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps),
                       optax.add_decayed_weights(optim_cfg.weight_decay))
    return optax.chain(delayed(adam, delay), optax.scale_by_learning_rate(lr_schedule))

  trainable = trainable_labels(optim_cfg.trainable)

  def labels(params):
    def group(path, label):
      if label == "freeze":
        return label
      return "head" if param_path(path).split("/")[0] in heads else "encoder"
    return jax.tree_util.tree_map_with_path(group, trainable(params))

  groups = {"head": branch(0), "encoder": branch(freeze_encoder_steps),
            "freeze": optax.set_to_zero()}
  clip = optim_cfg.get("clip_norm", 0.0)
  tx = optax.chain(optax.clip_by_global_norm(clip) if clip > 0 else optax.identity(),
                   optax.multi_transform(groups, labels))
  return tx, lr_schedule
