"""Are a wav2vec 2.0 model's targets phonetic? Phone purity and PNMI of its quantizer's codes.

  python experiments/2026-11-w2v2-demo-sweep/code_pnmi.py --checkpoints=/tmp/w2v2_sweep/base \
      --data_dir=data/tfds --split=dev

For each checkpoint, every frame of the split gets the codes its Gumbel quantizer picks at eval
time (the argmax of each group's logits on the unmasked CNN features: the contrastive targets),
and the frame's phone from the alignment (frame i centred at sample 320 i + 200); PNMI, phone
purity and cluster purity as in HuBERT §4.6 (jaxssl/clustering/metrics.py), for the joint code
and for each group. Prints a markdown table and writes it to --out if given.
"""
import os
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
# pylint: disable=g-import-not-at-top,wrong-import-position
from jaxssl.clustering import features
from jaxssl.clustering import metrics
from jaxssl.data import sources
from jaxssl.models import wav2vec2 as wav2vec2_model
from jaxssl.objectives import wav2vec2 as wav2vec2_objective

_CHECKPOINTS = flags.DEFINE_list("checkpoints", [], "Workdirs of wav2vec 2.0 runs.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data/tfds", "TFDS data_dir with demo_corpus.")
_SPLIT = flags.DEFINE_string("split", "dev", "Split with phone alignments.")
_OUT = flags.DEFINE_string("out", "", "Markdown output path ('' prints only).")


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


def code_quality(checkpoint, source):
  extractor = CodeExtractor(checkpoint)
  records = [source[i] for i in range(len(source))]
  codes = extractor([r["audio"] for r in records])
  phones = []
  for r, c in zip(records, codes):
    phones.extend(metrics.frame_phones(r["phones"], r["phone_starts"], r["phone_ends"], len(c),
                                       hop=extractor.framing.hop,
                                       offset=extractor.framing.center_offset))
  codes = np.concatenate(codes).astype(np.int64)
  g, v = extractor.config.quantizer.num_groups, extractor.config.quantizer.num_vars
  rows = {"joint": metrics.quality(phones, codes[:, 0], num_clusters=v ** g)}
  for i in range(g):
    rows[f"group {i}"] = metrics.quality(phones, codes[:, 1 + i], num_clusters=v)
  return rows


def main(argv):
  del argv
  source = sources.open_source("demo_corpus", data_dir=_DATA_DIR.value, split=_SPLIT.value)
  lines = [f"| checkpoint | codes | used | phone purity | cluster purity | PNMI ({_SPLIT.value}) |",
           "| --- | --- | --- | --- | --- | --- |"]
  for checkpoint in _CHECKPOINTS.value:
    for name, q in code_quality(checkpoint, source).items():
      lines.append(f"| {os.path.basename(os.path.normpath(checkpoint))} | {name} | "
                   f"{q['used_clusters']} | {q['phone_purity']:.3f} | {q['cluster_purity']:.3f} | "
                   f"{q['pnmi']:.3f} |")
      print(lines[-1], flush=True)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
  app.run(main)
