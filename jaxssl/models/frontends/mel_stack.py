"""MelHuBERT's input: 10 ms log-mel frames, normalised, stacked in pairs to 20 ms frames.

Lin et al. 2022, "MelHuBERT: A simplified HuBERT on Mel spectrograms",
https://arxiv.org/abs/2211.09944 ; nervjack2/MelHuBERT (dataset.py, config_model_20ms.yaml).
There is no CNN: 40-d log-mel at 100 Hz, computed in the graph, either Kaldi's fbank as
MelHuBERT extracts it (`features="kaldi"`: `frontends.kaldi_fbank`, Hamming window,
pre-emphasis, whole frames only) or librosa's (`features="librosa"`: `frontends.mel.log_mel`,
Hann, Slaney mel, centred frames), is
normalised per utterance and every two consecutive frames are concatenated, [f_2t ; f_2t+1],
the odd tail padded with zeros, giving 80-d frames at 50 Hz: the CNN frontend's frame rate, so
the same span masking and 50 Hz targets apply. Normalisation per band: with `mean` and `std`
given, the training set's (MelHuBERT's; `jaxssl.feature_stats` computes them and the run's
config carries them), else each utterance's own over its real frames (cepstral mean and
variance normalisation, no statistics pass). Padded frames are zero. The module has no
parameters.
"""
import flax.linen as nn
import jax.numpy as jnp

from jaxssl.models.frontends import kaldi_fbank
from jaxssl.models.frontends import mel

HOP = 160  # 10 ms mel frames at 16 kHz.
FEATURES = ("librosa", "kaldi")


def mel_frames_for(num_samples, features: str = "librosa"):
  """10 ms log-mel frames of `num_samples` samples (ints or int arrays): 1 + S // 160 centred
  frames (librosa), or the whole 25 ms frames (Kaldi's snip_edges)."""
  if features == "kaldi":
    return kaldi_fbank.frames_for(num_samples)
  return 1 + num_samples // HOP


def frames_for(num_samples, stack: int = 2, features: str = "librosa"):
  """Stacked output frames of `num_samples` samples: ceil(mel frames / stack)."""
  return -(-mel_frames_for(num_samples, features) // stack)


class MelStack(nn.Module):
  """[B, S] audio -> [B, T, num_mels * stack] normalised stacked log-mel, T = frames_for(S)."""
  num_mels: int = 40
  stack: int = 2
  features: str = "librosa"  # Or "kaldi" (MelHuBERT's).
  normalize: bool = True
  mean: tuple = ()  # The training set's per-band statistics (`jaxssl.feature_stats`), if any.
  std: tuple = ()
  eps: float = 1e-5

  @nn.compact
  def __call__(self, audio, valid=None):
    """Args: audio [B, S] float; valid: optional [B, S] bool sample padding mask (the
    statistics are taken over the 10 ms frames of real audio only, and the others are zeroed).
    Returns [B, T, num_mels * stack] float32."""
    if self.features not in FEATURES:
      raise ValueError(f"model.frontend.features={self.features!r}: choose from {FEATURES}.")
    if self.features == "kaldi":
      feats = kaldi_fbank.fbank(audio, num_bins=self.num_mels)  # [B, T_mel, M]
    else:
      feats = mel.log_mel(audio, n_mels=self.num_mels)
    b, t_mel, m = feats.shape
    t = -(-t_mel // self.stack)
    lengths = mel_frames_for(valid.sum(-1) if valid is not None else jnp.full(
        (b,), audio.shape[1]), self.features)
    w = (jnp.arange(t_mel)[None] < lengths[:, None]).astype(feats.dtype)[..., None]
    if self.mean:
      if len(self.mean) != m or len(self.std) != m:
        raise ValueError(f"model.frontend.mean / std have {len(self.mean)} / {len(self.std)} "
                         f"bands; the frontend computes {m}.")
      mean, std = jnp.asarray(self.mean, feats.dtype), jnp.asarray(self.std, feats.dtype)
      feats = (feats - mean) / std * w
    elif self.normalize:
      n = jnp.maximum(w.sum(1, keepdims=True), 1.0)
      mean = (feats * w).sum(1, keepdims=True) / n
      var = (jnp.square(feats - mean) * w).sum(1, keepdims=True) / n
      feats = (feats - mean) * jnp.reciprocal(jnp.sqrt(var + self.eps)) * w
    feats = jnp.pad(feats, ((0, 0), (0, t * self.stack - t_mel), (0, 0)))
    # [B, T, stack, M] -> [B, T, stack * M]: [f_2t ; f_2t+1], MelHuBERT's concatenation order.
    return feats.reshape(b, t, self.stack * m)
