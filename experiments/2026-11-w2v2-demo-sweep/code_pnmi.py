"""Are a wav2vec 2.0 model's targets phonetic? Phone purity and PNMI of its quantizer's codes.

  python experiments/2026-11-w2v2-demo-sweep/code_pnmi.py --checkpoints=/tmp/w2v2_sweep/base \
      --data_dir=data/tfds --split=dev

For each checkpoint, every frame of the split gets the codes its Gumbel quantizer picks at eval
time (the argmax of each group's logits on the unmasked CNN features: the contrastive targets),
and the frame's phone from the alignment (frame i centred at sample 320 i + 200); PNMI, phone
purity and cluster purity as in HuBERT §4.6 (jaxssl/clustering/metrics.py), for the joint code
and for each group. Prints a markdown table and writes it to --out if given.

With --attributes, a second table asks what else the joint code encodes: the share of each
frame attribute's entropy it explains, I(attribute; code) / H(attribute) (PNMI's definition with
the attribute in place of the phone), for voicing and F0 (librosa.pyin, 16 quantile bins of the
voiced frames + unvoiced), log energy (16 quantile bins) and speaker, beside the same numbers for
MFCC k-means with K = 128 fitted on the split's frames (every other 100 Hz MFCC frame, so the
frames are the code's).
"""
import os
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import librosa
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
# pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl.clustering import features
from jaxssl.clustering import minibatch as kmeans
from jaxssl.clustering import metrics
from jaxssl.data import sources
from jaxssl.models import wav2vec2 as wav2vec2_model
from jaxssl.objectives import wav2vec2 as wav2vec2_objective

_CHECKPOINTS = flags.DEFINE_list(
    "checkpoints", [], "wav2vec 2.0 runs: workdirs or ckpt/<step> dirs, each optionally "
    "NAME=PATH (default name: the directory's).")
_DATA_DIR = flags.DEFINE_string("data_dir", "data/tfds", "TFDS data_dir with demo_corpus.")
_SPLIT = flags.DEFINE_string("split", "dev", "Split with phone alignments.")
_OUT = flags.DEFINE_string("out", "", "Markdown output path ('' prints only).")
_ATTRIBUTES = flags.DEFINE_bool("attributes", False, "Also score voicing, F0, energy, speaker.")
ATTRIBUTES = ("phone", "voicing", "f0", "energy", "speaker")
_BINS = 16


class CodeExtractor(features.Extractor):
  """`extractor(audios) -> list of int [T_i, 1 + G]`: the joint code, then each group's."""

  def __init__(self, checkpoint):
    super().__init__("layer", checkpoint=checkpoint, layer=0)
    if self.config.objective.name != "wav2vec2":
      raise ValueError(f"{checkpoint}: objective {self.config.objective.name!r} has no quantizer.")
    self._represent = jax.jit(self._codes)

  def _codes(self, params, batch):
    valid = wav2vec2_objective.frame_valid(batch["valid"])
    encoder = wav2vec2_model.speech_encoder_from_config(self.config.model)()
    out = encoder.apply({"params": params["speech_encoder"]}, batch["audio"], valid=valid,
                        train=False)
    proj = params["quantizer"]["weight_proj"]["dense"]
    logits = out["features"].astype(jnp.float32) @ proj["kernel"] + proj["bias"]
    g, v = self.config.quantizer.num_groups, self.config.quantizer.num_vars
    per_group = jnp.argmax(logits.reshape(*logits.shape[:-1], g, v), -1)  # [B, T, G]
    joint = (per_group * v ** jnp.arange(g - 1, -1, -1)).sum(-1, keepdims=True)
    return jnp.concatenate([joint, per_group], -1), valid.sum(-1)


def extract_codes(checkpoint, records):
  """(int64 [N, 1 + G] codes of the records' concatenated frames, frames per record, extractor)."""
  extractor = CodeExtractor(checkpoint)
  codes = extractor([r["audio"] for r in records])
  return np.concatenate(codes).astype(np.int64), [len(c) for c in codes], extractor


def frame_phone_labels(records, lengths, framing):
  """[N] phone of every frame of the records (frame i centred at hop * i + center_offset)."""
  phones = []
  for r, t in zip(records, lengths):
    phones.extend(metrics.frame_phones(r["phones"], r["phone_starts"], r["phone_ends"], t,
                                       hop=framing.hop, offset=framing.center_offset))
  return np.asarray(phones)


def code_quality(codes, phones, quantizer):
  """Phone purity / cluster purity / PNMI of the joint code and of each group's code."""
  g, v = quantizer.num_groups, quantizer.num_vars
  rows = {"joint": metrics.quality(phones, codes[:, 0], num_clusters=v ** g)}
  for i in range(g):
    rows[f"group {i}"] = metrics.quality(phones, codes[:, 1 + i], num_clusters=v)
  return rows


def _named(checkpoint):
  """"NAME=PATH" or "PATH" -> (NAME, PATH); the default name is PATH's last directory."""
  name, sep, path = checkpoint.partition("=")
  return (name, path) if sep else (os.path.basename(os.path.normpath(checkpoint)), checkpoint)


def _quantile_bins(x, num_bins=_BINS):
  return np.searchsorted(np.quantile(x, np.linspace(0, 1, num_bins + 1)[1:-1]), x)


def frame_attributes(records, lengths, framing, phones):
  """Per-frame labels of every record (frame i centred at framing.hop * i + center_offset).

  Returns:
    dict of [N] label arrays over the concatenated frames: phone (`phones`), voicing (0/1), f0
    (0 = unvoiced, 1..16 quantile bins of the voiced frames), energy (log mean square of the
    frame's 400 samples, 16 quantile bins), speaker.
  """
  hop, half = framing.hop, framing.center_offset
  out = {k: [] for k in ("f0", "energy", "speaker")}
  for r, t in zip(records, lengths):
    audio = r["audio"].astype(np.float32) / 32768.0
    # pyin frames of 1,024 samples centred where the code's frames are centred.
    padded = np.pad(audio, (512 - half, 1024))
    f0, voiced, _ = librosa.pyin(padded, fmin=60, fmax=500, sr=16_000, frame_length=1024,
                                 hop_length=hop, center=False)
    out["f0"].append(np.nan_to_num(f0[:t]) * voiced[:t])
    frames = librosa.util.frame(np.pad(audio, (0, 2 * half)), frame_length=2 * half,
                                hop_length=hop)[:, :t]
    out["energy"].append(np.log(1e-8 + np.mean(frames ** 2, axis=0)))
    out["speaker"].extend([r["speaker"]] * t)
  f0 = np.concatenate(out["f0"])
  voiced = f0 > 0
  f0_bins = np.zeros(len(f0), np.int64)
  f0_bins[voiced] = 1 + _quantile_bins(f0[voiced])
  return dict(phone=phones, voicing=voiced.astype(np.int64), f0=f0_bins,
              energy=_quantile_bins(np.concatenate(out["energy"])),
              speaker=np.asarray(out["speaker"]))


def mfcc_clusters(records, lengths, num_clusters=128):
  """k-means labels of the records' MFCCs at the code's frame rate (frame i = MFCC frame 2i)."""
  points = []
  for r, t in zip(records, lengths):
    m = features.mfcc(r["audio"])[::2][:t]
    points.append(np.pad(m, ((0, t - len(m)), (0, 0)), mode="edge"))
  points = np.concatenate(points)
  fitted = kmeans.fit(points, num_clusters, seed=0)
  return np.asarray(kmeans.predict(points, fitted.centroids)[0])


def attribute_table(named_codes, records, lengths, framing, phones):
  """Markdown rows: I(attribute; clusters) / H(attribute) for MFCC k-means and each joint code."""
  labels = frame_attributes(records, lengths, framing, phones)
  rows = [("MFCC k-means K=128", mfcc_clusters(records, lengths))]
  rows += [(f"{label} joint code", codes[:, 0]) for label, codes in named_codes]
  lines = ["| clusters | used | " + " | ".join(ATTRIBUTES) + " |",
           "| --- " * (len(ATTRIBUTES) + 2) + "|"]
  for name, clusters in rows:
    shares = [metrics.quality(labels[a], clusters)["pnmi"] for a in ATTRIBUTES]
    lines.append(f"| {name} | {len(np.unique(clusters))} | "
                 + " | ".join(f"{x:.3f}" for x in shares) + " |")
    print(lines[-1], flush=True)
  return lines


def main(argv):
  del argv
  source = sources.open_source("demo_corpus", data_dir=_DATA_DIR.value, split=_SPLIT.value)
  records = [source[i] for i in range(len(source))]
  lines = [f"| checkpoint | codes | used | phone purity | cluster purity | PNMI ({_SPLIT.value}) |",
           "| --- | --- | --- | --- | --- | --- |"]
  named_codes, phones = [], None
  for label, checkpoint in map(_named, _CHECKPOINTS.value):
    codes, lengths, extractor = extract_codes(checkpoint, records)
    if phones is None:  # Every checkpoint frames the audio alike.
      framing = extractor.framing
      phones = frame_phone_labels(records, lengths, framing)
    for name, q in code_quality(codes, phones, extractor.config.quantizer).items():
      lines.append(f"| {label} | {name} | "
                   f"{q['used_clusters']} | {q['phone_purity']:.3f} | {q['cluster_purity']:.3f} | "
                   f"{q['pnmi']:.3f} |")
      print(lines[-1], flush=True)
    named_codes.append((label, codes))
  if _ATTRIBUTES.value:
    lines += ["", f"What the joint code encodes ({_SPLIT.value}): I(attribute; clusters) / "
              "H(attribute).", ""]
    lines += attribute_table(named_codes, records, lengths, framing, phones)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
  app.run(main)
