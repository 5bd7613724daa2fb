"""The XLS-R recipe end to end: its data opens MLS's "all" build, and its per-language metrics
are named after the languages of the training data (none for languages it does not have)."""
import json
import os

import numpy as np
import pytest

from configs.wav2vec2 import xlsr
from jaxssl import pretrain
from jaxssl.data import build
from jaxssl.data import mix
from jaxssl.data import sources
from tests.data import corpus_fixtures as fx


def test_per_language_metrics_are_named_after_the_training_data(tmp_path):
  src = sources.SyntheticSource(24, seed=0, min_samples=8_000, max_samples=12_000,
                                languages=("sw", "en", "fr"))
  c = xlsr.get_config("demo,runlocal")
  with c.unlocked():
    c.data.name, c.total_steps, c.log_every_steps = "synthetic", 2, 1
  out = pretrain.train_and_evaluate(c, str(tmp_path), source=src)
  langs = sorted(k.split("/")[1] for k in out if k.startswith("train/lang_")
                 and k.endswith("/loss"))
  assert langs == ["lang_en", "lang_fr", "lang_sw"]
  assert all(np.isfinite(out[f"train/{lang}/loss"]) for lang in langs)
  with open(os.path.join(tmp_path, "config.json")) as f:
    assert json.load(f)["objective"]["languages"] == ["en", "fr", "sw"]


def test_the_recipe_opens_mls_all(tmp_path):
  """The shipped config opens MLS built with --config=all and names its languages."""
  fx.mls(str(tmp_path / "src"), "german", bad=False)
  fx.mls(str(tmp_path / "src"), "french", bad=False)
  build.build("multilingual_librispeech", source=str(tmp_path / "src"),
              data_dir=str(tmp_path / "tfds"), config="all", num_workers=1, show_progress=False)
  c = xlsr.get_config()
  assert c.data.sampling.name == "temperature" and c.data.sampling.alpha == 0.5
  assert c.objective.per_language_metrics and not c.objective.languages
  with c.unlocked():
    c.data.data_dir = str(tmp_path / "tfds")
  filled = pretrain.with_data_facts(c)
  assert filled.objective.languages == ("de", "fr")


def test_mls_and_common_voice_mix_into_one_local_audio_corpus(tmp_path):
  """jaxssl.data.mix lists each corpus with its own builder into one manifest that local_audio
  builds: both languages, every utterance, texts (quotes included) and namespaced ids kept."""
  fx.mls(str(tmp_path / "mls"), "german", bad=False)
  cv = fx.common_voice(str(tmp_path / "cv"), "fr", ext="wav", bad=False)
  manifest = str(tmp_path / "mix.tsv")
  counts = mix.write_manifest(manifest, [
      mix.parse_corpus(f"multilingual_librispeech:all:{tmp_path / 'mls'}"),
      mix.parse_corpus(f"common_voice::{tmp_path / 'cv' / 'fr'}")])
  assert counts == {("multilingual_librispeech", "de"): 4, ("common_voice", "fr"): 6}
  build.build("local_audio", source=manifest, data_dir=str(tmp_path / "tfds"), config="xlsr_mix",
              num_workers=1, show_progress=False)
  src = sources.open_source("local_audio/xlsr_mix", data_dir=tmp_path / "tfds", split="train")
  records = {src[i]["id"]: src[i] for i in range(len(src))}
  assert {r["language"] for r in records.values()} == {"de", "fr"}
  uid = [k for k, v in cv.items() if v[0] == "train"][0]
  assert records[f"common_voice/{uid}"]["text"] == cv[uid][1]  # 'Bonjour "train" 0'
  assert records[f"common_voice/{uid}"]["speaker"] == f"common_voice/{cv[uid][2]}"
  with pytest.raises(ValueError, match="NAME:CONFIG:SOURCE"):
    mix.parse_corpus("common_voice")
