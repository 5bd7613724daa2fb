"""Which records each training step reads: samplers, curricula and data selection.

Every function here is a pure function of (seed, step) and the dataset
metadata, never of what earlier steps did, so a run resumes from a step number
alone and every host computes the same global batch without talking to the
others. Multilingual temperature sampling follows XLSR / XLS-R
(https://arxiv.org/abs/2006.13979): language l is drawn with
p_l ∝ (n_l / N)^alpha, where n_l is the *audio duration* of language l (the
papers count hours), so alpha=1 reproduces the natural mix and alpha -> 0
flattens it towards uniform over languages.
"""
import json
import math
import os

import numpy as np

# First entry of every SeedSequence, so the random streams never collide.
_STREAM_EPOCH = 11
_STREAM_TEMPERATURE = 12


def language_probs(durations, alpha):
  """Temperature-scaled language probabilities p_l ∝ (n_l / N)^alpha.

  Args:
    durations: [L] amount of audio per language (samples or seconds; only
      ratios matter). Languages with 0 audio get probability 0.
    alpha: temperature exponent >= 0 (1: natural mix, 0: uniform over the
      languages present).

  Returns:
    [L] float64 probabilities summing to 1.
  """
  n = np.asarray(durations, np.float64)
  if alpha < 0:
    raise ValueError(f"data.sampling.alpha must be >= 0, got {alpha}.")
  if n.ndim != 1 or n.sum() <= 0:
    raise ValueError(f"Need a 1-D array of language durations with a positive sum, got {n}.")
  present = n > 0
  p = np.zeros_like(n)
  p[present] = (n[present] / n.sum()) ** alpha
  return p / p.sum()


class UniformSampler:
  """Uniform sampling without replacement, in epochs.

  Each pool (a set of record indices, named by an int key) has an endless
  stream made of one random permutation per epoch; step t with batch size B
  reads stream positions [t*B, (t+1)*B). While B and the pool stay fixed, every
  record is seen exactly once per epoch.
  """

  def __init__(self, seed):
    self.seed = seed
    self._perms = {}  # (key, epoch) -> permutation; a tiny cache, see `_perm`.

  def _perm(self, key, pool, epoch):
    # A 300k-record permutation costs ~5 ms, so keep the last few. grain may
    # call this from several threads: work on a local, never re-read the dict.
    perm = self._perms.get((key, epoch))
    if perm is None:
      rng = np.random.default_rng([_STREAM_EPOCH, self.seed, key, epoch])
      perm = pool[rng.permutation(len(pool))]
      if len(self._perms) > 8:
        self._perms.clear()
      self._perms[(key, epoch)] = perm
    return perm

  def weights(self, indices):
    """Every record is as likely as any other."""
    return np.ones(len(indices))

  def sample(self, step, batch_size, key, pool, *, weighted=False):
    """Returns [batch_size] record indices from `pool` (int64 [N]) for `step`."""
    del weighted  # Uniform over records either way.
    n = len(pool)
    pos = step * batch_size + np.arange(batch_size, dtype=np.int64)
    epochs, within = np.divmod(pos, n)
    out = np.empty(batch_size, np.int64)
    for epoch in np.unique(epochs):  # A batch spans at most a few epochs.
      sel = epochs == epoch
      out[sel] = self._perm(key, pool, int(epoch))[within[sel]]
    return out


class TemperatureSampler:
  """Multilingual sampling: a language per slot, then a record uniformly within that language
  (independently per step), so that the training stream's language mix is p_l.

  p_l comes from the languages' audio in `records` (the records trained on). A step draws from
  a pool of them (all of them, a curriculum's short ones, or a dynamic-batching length bucket):
  - a pool the step is given (`weighted=False`): languages with p_l renormalised over the
    languages present in the pool, so every step's mix is p_l;
  - a bucket drawn at random in proportion to its resampled mass (`weighted=True`, see
    `weights`): languages with p_l x (the pool's share of the language's records), which is
    fairseq's resample-then-batch: summed over buckets the mix is p_l, and each language keeps
    its own length distribution.
  """

  def __init__(self, seed, language, durations, alpha, records=None):
    """Args: seed; language: int [N] language id of every record; durations: [N] record
    lengths (samples); alpha: see `language_probs`; records: the indices trained on (default
    all)."""
    self.seed = seed
    self.alpha = alpha
    self._language = np.asarray(language)
    durations = np.asarray(durations, np.float64)
    records = np.arange(len(self._language)) if records is None else np.asarray(records)
    num = int(self._language.max()) + 1 if len(self._language) else 1
    langs = self._language[records]
    self.language_probs = language_probs(
        np.bincount(langs, weights=durations[records], minlength=num), alpha)
    self._counts = np.bincount(langs, minlength=num)
    self._groups = {}  # pool key -> (probs [L], records sorted by language, starts, counts)

  def weights(self, indices):
    """Relative chance of drawing each record in `indices` under the resampled mix: p_l over
    the language's record count, scaled to mean 1 over the records trained on."""
    lang = self._language[np.asarray(indices)]
    per_record = self.language_probs / np.maximum(self._counts, 1)
    return per_record[lang] * self._counts.sum()

  def _group(self, key, pool, weighted):
    group = self._groups.get(key)
    if group is None:
      langs = self._language[pool]
      counts = np.bincount(langs, minlength=len(self._counts))
      if weighted:
        p = self.language_probs * counts / np.maximum(self._counts, 1)
      else:
        p = np.where(counts > 0, self.language_probs, 0.0)
      if p.sum() <= 0:
        raise ValueError(f"Sampling pool {key} holds no record of a language with p_l > 0.")
      order = np.argsort(langs, kind="stable")
      starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
      group = (p / p.sum(), pool[order], starts, counts)
      self._groups[key] = group
    return group

  def probs(self, key, pool, *, weighted=False):
    """[L] language probabilities used for `pool`."""
    return self._group(key, pool, weighted)[0]

  def sample(self, step, batch_size, key, pool, *, weighted=False):
    """Returns [batch_size] record indices from `pool` (int64 [N]) for `step`."""
    probs, records, starts, counts = self._group(key, pool, weighted)
    rng = np.random.default_rng([_STREAM_TEMPERATURE, self.seed, key, step])
    langs = rng.choice(len(probs), size=batch_size, p=probs)
    within = (rng.random(batch_size) * counts[langs]).astype(np.int64)
    return records[starts[langs] + within]


def make_sampler(sampling_cfg, *, seed, language, durations, records=None):
  """Builds the sampler named by `data.sampling.name` ("uniform" | "temperature")."""
  name = sampling_cfg.name
  if name == "uniform":
    return UniformSampler(seed)
  if name == "temperature":
    return TemperatureSampler(seed, language, durations, sampling_cfg.alpha, records)
  raise ValueError(f"Unknown data.sampling.name {name!r}; choose from ['temperature', 'uniform'].")


def curriculum_length(step, *, final_samples, start_samples, ramp_steps, num_shapes=4):
  """Length curriculum: a linear ramp from start to final, rounded up to a grid.

  The ramp is quantised to multiples of final_samples / num_shapes so the model
  compiles at most `num_shapes` input shapes over the whole run.

  Args:
    step: training step (>= 0).
    final_samples: length reached at `ramp_steps` (the data.crop_samples).
    start_samples: length at step 0 (before rounding up).
    ramp_steps: steps of the linear ramp (> 0).
    num_shapes: size of the grid of allowed lengths.

  Returns:
    int length in samples, one of final_samples * k // num_shapes, k=1..num_shapes.
  """
  frac = min(step / ramp_steps, 1.0)
  target = start_samples + (final_samples - start_samples) * frac
  k = min(max(math.ceil(target * num_shapes / final_samples - 1e-9), 1), num_shapes)
  return final_samples * k // num_shapes


def read_scores(score_file):
  """Reads `id<TAB>score` lines (TSV; '#' lines are comments, e.g. the header
  `python -m jaxssl.score` writes) or a JSON object {id: score}.

  Returns:
    dict id -> float score.
  """
  try:
    with open(score_file, encoding="utf-8") as f:
      text = f.read()
  except OSError as e:
    raise ValueError(f"data.selection.score_file {score_file!r} is unreadable: {e}.") from None
  try:
    if score_file.endswith(".json"):
      return {str(k): float(v) for k, v in json.loads(text).items()}
    scores = {}
    for line in text.splitlines():
      if line.strip() and not line.startswith("#"):
        key, score = line.rstrip("\n").split("\t")
        scores[key] = float(score)
    return scores
  except (ValueError, AttributeError) as e:
    raise ValueError(f"data.selection.score_file {score_file!r} is malformed (expected "
                     f"'id<TAB>score' lines or a JSON object): {e}.") from None


def select_by_score(ids, score_file, keep_fraction):
  """Data selection: keeps the records with the highest scores.

  Args:
    ids: [N] record ids (str).
    score_file: TSV or JSON file (see `read_scores`) with a score for every id.
    keep_fraction: fraction in (0, 1] of records to keep; exactly
      max(1, round(keep_fraction * N)) are kept, ties broken by record order.

  Returns:
    int64 [K] kept record indices, sorted ascending.
  """
  if not 0 < keep_fraction <= 1:
    raise ValueError(f"data.selection.keep_fraction must be in (0, 1], got {keep_fraction}.")
  if not os.path.exists(score_file):
    raise ValueError(f"data.selection.score_file {score_file!r} does not exist.")
  scores = read_scores(score_file)
  missing = [i for i in ids if i not in scores]
  if missing:
    raise ValueError(f"data.selection.score_file {score_file!r} has no score for {len(missing)} "
                     f"of {len(ids)} records, e.g. {missing[:5]}.")
  values = np.array([scores[i] for i in ids], np.float64)
  keep = max(1, round(keep_fraction * len(ids)))
  order = np.argsort(-values, kind="stable")
  return np.sort(order[:keep]).astype(np.int64)
