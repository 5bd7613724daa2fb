"""`evaluation.finetune.finetune` with a PEFT method, end to end on the in-memory tone corpus."""
import os

import jax
import numpy as np
import pytest

from configs.finetune import ctc_demo
from jaxssl import pretrained
from jaxssl.evaluation import finetune
from jaxssl.training import checkpointing
from tests.evaluation import random_run
from tests.evaluation import tone_corpus


@pytest.mark.slow  # ~40 s of CPU: three compiles of the model on 8 devices.
def test_adalora_finetune_reports_ranks_and_saves_a_merged_plain_model(tmp_path):
  config = pretrained.load_config("configs/wav2vec2/demo.py:runlocal")
  run = str(tmp_path / "pretrained")
  saved = random_run.save(config, run)  # Random weights of the right shapes.

  c = ctc_demo.get_config("runlocal,peft=adalora")
  with c.unlocked():
    c.upstream, c.upstream_arch = run, "configs/wav2vec2/demo.py:runlocal"
    c.eval_every_steps = 4
  out = str(tmp_path / "tuned")
  results = finetune.finetune(c, out, source_fn=tone_corpus.source_fn(16, 8))
  report = results["peft"]
  assert 0 < report["trainable_params"] < report["total_params"] / 5
  assert sum(report["final_ranks"].values()) <= c.peft.init_r * len(report["final_ranks"])
  # The saved model is merged: no "peft" entry, the CNN untouched, attention q changed.
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          {"speech_encoder": saved["speech_encoder"]})
  tuned, load = checkpointing.load_params(os.path.join(out, "model"), abstract)
  assert not load["missing"]
  tuned, pre = jax.device_get((tuned["speech_encoder"], saved["speech_encoder"]))
  jax.tree.map(np.testing.assert_array_equal, tuned["feature_extractor"],
               pre["feature_extractor"])
  jax.tree.map(np.testing.assert_array_equal, tuned["encoder"]["layer_00"]["ffn"],
               pre["encoder"]["layer_00"]["ffn"])
