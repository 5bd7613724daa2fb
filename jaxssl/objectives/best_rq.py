"""The BEST-RQ objective: masked prediction of a frozen random-projection quantizer's codes.

Chiu et al. 2022, https://arxiv.org/abs/2202.01855 , as SpeechBrain's open recipe implements it
(Whetten et al. 2024, https://arxiv.org/abs/2405.04296; speechbrain/speechbrain commit 9c826ef):
recipes/LibriSpeech/self-supervised-learning/BEST-RQ/{hparams/BEST-RQ.yaml, train.py},
speechbrain/lobes/models/BESTRQ.py (`compute_mask`, `brq_mask_collate_fn`) and
speechbrain/nnet/quantisers.py (`RandomProjectionQuantizer`). One step:

  f = normalised 80-d fbank, zero-padded to a multiple of 4 frames and stacked by 4: [B, T, 320]
      at 40 ms (`frontends.fbank_conv.stacked_fbank`);
  targets_t = argmax_k cos(f_t P, c_k): P [320, 16] Xavier-uniform, codebook c [8192, 16] drawn
      N(0, 1) then l2-normalised; both frozen (quantisers.py: buffers, never trained);
  masked 40 ms frames of f are replaced by N(0, 0.1) noise (train.py: `feats[:, mask, :] =
      noise`, noise_mean 0, noise_std 0.1), f -> conv frontend -> Linear 640 -> d -> encoder
      (SpeechBrain: a Conformer) -> Linear d -> 8192 -> cross-entropy on the masked frames
      (F.cross_entropy's mean over every masked frame of the batch).

The mask (BESTRQ.py `compute_mask`): one mask for the whole batch (here per data.batch_groups
block: SpeechBrain's per-GPU batch), from the shortest utterance's L fbank frames:
n = max(1, floor(mask_prob * L + u)), u ~ U[0, 1), chunk starts drawn without replacement from
the multiples of mask_length = 4 below L (`randperm(L // 4) * 4`), each chunk 4 fbank frames,
which is exactly one stacked 40 ms frame (mask_idx = mask[::4] // 4 in train.py). mask_prob is
the probability of *starting* a chunk: 0.15 x 4 = 60% of the shortest utterance's frames.
Targets come from the clean features (the quantizer runs before the noise replaces them).

The quantizer is objective state (`init_state`): built from `objective.quantizer_seed` alone
(the same on every host and every run with that seed), checkpointed with the train state and
never updated (`update_state` keeps it); it holds no optimizer moments and gets no gradient.
A loss called without state (tests, tools) rebuilds it from the seed: the same arrays.
"""
import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl.models import frontends
from jaxssl.models import layers
from jaxssl.models import wav2vec2 as wav2vec2_model
from jaxssl.models.frontends import fbank_conv
from jaxssl.training import objective as objective_lib

QUANTIZER_KEY = "quantizer"


def make_quantizer(seed: int, input_dim: int = 320, code_dim: int = 16, num_codes: int = 8192):
  """The frozen random projection and codebook: {"projection": [input_dim, code_dim],
  "codebook": [num_codes, code_dim]} float32, a pure function of `seed`.

  quantisers.py: P = nn.init.xavier_uniform_ (U(+-sqrt(6 / (in + out)))), CB = F.normalize(
  torch.randn(cb_vocab, cb_dim)) (rows l2-normalised, eps 1e-12).
  """
  k_p, k_c = jax.random.split(jax.random.PRNGKey(seed))
  proj = nn.initializers.xavier_uniform()(k_p, (input_dim, code_dim), jnp.float32)
  codes = jax.random.normal(k_c, (num_codes, code_dim), jnp.float32)
  codes = codes / jnp.maximum(jnp.linalg.norm(codes, axis=-1, keepdims=True), 1e-12)
  return {"projection": proj, "codebook": codes}


def quantize(x, quantizer):
  """Codes of [..., input_dim] features: argmax_k cos(x P, c_k) (= SpeechBrain's argmin of the
  l2 distance between unit vectors; a zero x P gives code 0 in both). Returns int32 [...]."""
  proj = jax.lax.stop_gradient(quantizer["projection"])
  codes = jax.lax.stop_gradient(quantizer["codebook"])
  hp = jax.lax.Precision.HIGHEST  # TF32 / bf16 passes would flip near-ties of the argmax.
  z = jnp.matmul(x.astype(jnp.float32), proj, precision=hp)
  z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  return jnp.argmax(jnp.matmul(z, codes.T, precision=hp), axis=-1).astype(jnp.int32)


def chunk_mask(rng, fbank_lengths, num_frames: int, *, prob: float, chunk: int = 4,
               groups: int = 1):
  """BESTRQ.py `compute_mask` on 40 ms frames, one mask per block of rows.

  Args:
    rng: PRNG key.
    fbank_lengths: int [B], real 10 ms fbank frames of each row.
    num_frames: T, the stacked (chunk-frame) length of the batch.
    prob: mask_prob (probability of a fbank frame starting a chunk).
    chunk: mask_length in fbank frames (= the stacking factor).
    groups: consecutive blocks of rows that each share one mask (data.batch_groups).

  Returns:
    bool [B, T]: True on masked stacked frames; every row of a block has the same ones, all
    inside the block's shortest row.
  """
  b = fbank_lengths.shape[0]
  if b % groups:
    raise ValueError(f"batch of {b} rows does not split into data.batch_groups={groups}.")
  shortest = fbank_lengths.reshape(groups, b // groups).min(axis=1)  # [G]
  k_num, k_perm = jax.random.split(rng)
  u = jax.random.uniform(k_num, (groups,))
  count = jnp.maximum(1, jnp.floor(prob * shortest + u).astype(jnp.int32))
  avail = shortest // chunk  # Chunk starts 0, 4, ..., below L (randperm(L // 4) * 4).
  idx = jnp.arange(num_frames)[None]
  scores = jnp.where(idx < avail[:, None], jax.random.uniform(k_perm, (groups, num_frames)),
                     jnp.inf)
  rank = jnp.argsort(jnp.argsort(scores, axis=1), axis=1)
  chosen = (rank < count[:, None]) & (idx < avail[:, None])
  return jnp.repeat(chosen, b // groups, axis=0)


class BestRqModel(nn.Module):
  """SpeechEncoder (frontend fed with the given stacked features) -> Linear d -> num_codes."""
  speech_encoder: Callable[..., nn.Module]
  num_codes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, audio, *, valid, audio_valid=None, train: bool):
    out = self.speech_encoder(name="speech_encoder")(audio, valid=valid, audio_valid=audio_valid,
                                                     train=train)
    # speechbrain.nnet.linear.Linear(d_model -> cb_vocab): torch's default init, with bias.
    logits = layers.Dense(self.num_codes, axes=("embed", "vocab"), dtype=self.dtype,
                          kernel_init=layers.torch_linear_init, name="final_proj")(out["x"])
    return dict(logits=logits, x=out["x"], hidden=out["hidden"])


@dataclasses.dataclass(frozen=True)
class BestRqObjective(objective_lib.Objective):
  """Model + loss (see the module docstring). batch: "audio" [B, S] float, "valid" [B, S] bool."""
  config: Any

  def __post_init__(self):
    fe = self.config.model.frontend
    if fe.name != "fbank_conv":
      raise ValueError(f"objective.name='best_rq' masks and quantizes stacked fbank frames: set "
                       f"model.frontend.name='fbank_conv' (got {fe.name!r}).")
    obj = self.config.objective
    want = fe.get("stack", 4) * fe.get("num_mels", 80)
    if obj.input_dim != want:
      raise ValueError(f"objective.input_dim={obj.input_dim} must be model.frontend.stack x "
                       f"num_mels = {want} (the stacked frames the quantizer reads).")

  @property
  def frontend_cfg(self):
    return self.config.model.frontend

  def model(self, features=None, train=False):
    m = self.config.model
    enc = wav2vec2_model.speech_encoder_from_config(m)
    if features is not None or train:
      make = enc.keywords["make_frontend"]
      enc = functools.partial(enc, make_frontend=functools.partial(make, features=features,
                                                                   train=train))
    return BestRqModel(speech_encoder=enc, num_codes=self.config.objective.num_codes,
                       dtype=jnp.dtype(m.dtype))

  def quantizer(self, state=None):
    """The objective state's quantizer, or (no state) the same arrays rebuilt from the seed."""
    if state and QUANTIZER_KEY in state:
      return state[QUANTIZER_KEY]
    obj = self.config.objective
    return make_quantizer(obj.quantizer_seed, obj.input_dim, obj.code_dim, obj.num_codes)

  def frame_valid(self, valid_samples):
    return frontends.frame_valid(self.frontend_cfg, valid_samples)

  def init(self, rng, batch):
    valid = self.frame_valid(batch["valid"])
    rngs = dict(zip(("params", "dropout", "layerdrop"), jax.random.split(rng, 3)))
    return self.model(train=True).init(rngs, batch["audio"], valid=valid,
                                       audio_valid=batch["valid"], train=True)["params"]

  def init_state(self, params):
    del params
    return {QUANTIZER_KEY: self.quantizer()}

  def features(self, batch):
    """(clean stacked fbank [B, T, 320], real fbank frames [B]) of a batch."""
    fe = self.frontend_cfg
    feats = fbank_conv.stacked_fbank(batch["audio"], batch["valid"],
                                     n_mels=fe.get("num_mels", 80), stack=fe.get("stack", 4))
    return feats, fbank_conv.fbank_frames_for(batch["valid"].sum(-1))

  def draw_mask(self, rng, fbank_lengths, num_frames):
    m = self.config.masking
    return chunk_mask(rng, fbank_lengths, num_frames, prob=m.prob,
                      chunk=self.frontend_cfg.get("stack", 4),
                      groups=self.config.data.get("batch_groups", 1))

  def corrupt(self, rng, feats, masked):
    """Masked frames -> N(noise_mean, noise_std) noise; the others untouched."""
    obj = self.config.objective
    noise = obj.noise_mean + obj.noise_std * jax.random.normal(rng, feats.shape, feats.dtype)
    return jnp.where(masked[..., None], noise, feats)

  def loss(self, params, batch, rng, *, step, train: bool = True, state=None):
    del step
    k_mask, k_noise, k_drop, k_ld = jax.random.split(rng, 4)
    feats, fb_lengths = self.features(batch)
    valid = self.frame_valid(batch["valid"])
    targets = quantize(feats, self.quantizer(state))
    masked = self.draw_mask(k_mask, fb_lengths, feats.shape[1]) & valid
    noisy = self.corrupt(k_noise, feats, masked)
    out = self.model(features=noisy, train=train).apply(
        {"params": params}, batch["audio"], valid=valid, audio_valid=batch["valid"],
        train=train, rngs={"dropout": k_drop, "layerdrop": k_ld})
    logits = out["logits"].astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, -1)
    ce = -jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]
    w = masked.astype(jnp.float32)
    n = jnp.maximum(w.sum(), 1.0)
    loss = (ce * w).sum() / n
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    counts = jnp.zeros((self.config.objective.num_codes,), jnp.float32).at[
        targets.reshape(-1)].add(w.reshape(-1))
    p = counts / n
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    metrics = dict(loss_masked=loss, accuracy_masked=(correct * w).sum() / n,
                   masked_fraction=w.sum() / jnp.maximum(valid.sum(), 1),
                   target_perplexity=jnp.exp(entropy),
                   target_codes_used=(counts > 0).sum().astype(jnp.float32))
    return loss, metrics

  def represent(self, params, batch):
    """Frozen-upstream features: (x [B, T, D], hidden tuple of L+1 [B, T, D], valid [B, T])."""
    return wav2vec2_model.represent(self.config.model, params["speech_encoder"], batch)
