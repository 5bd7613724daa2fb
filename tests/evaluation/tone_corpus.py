"""A tiny labelled corpus in memory for the evaluation tests: phones are tones, speakers pitch.

Every utterance concatenates phones of 0.1 s; phone p is a tone at FREQS[p] scaled by its
speaker's pitch factor, so a probe on MFCCs can learn phones (CTC), speakers and languages (each
language draws from its own half of the phone inventory). Text spells the phones as letters, a
space after every second phone, for the character (ASR) task. All utterances have the same
length, so the eval loader makes a single bucket (one compile per probe). Each speaker also hums
a steady tone of its own, which mean-pooled features can pick up.
"""
import numpy as np

PHONES = ("a", "e", "i", "o", "u", "y")
FREQS = (300.0, 500.0, 800.0, 1200.0, 1700.0, 2300.0)
LANG_PHONES = {"en": (0, 1, 2, 3), "fr": (2, 3, 4, 5)}
SPEAKERS = {"s0": 1.0, "s1": 1.15, "s2": 0.85, "s3": 1.3}  # Pitch factors.
HUMS = {"s0": 3000.0, "s1": 4000.0, "s2": 5000.0, "s3": 6000.0}  # A steady "voice" tone.
PHONE_SAMPLES = 1600
PHONES_PER_UTT = 6


class ToneSource:
  """The `sources.Source` interface (len, [i], __getitems__, metadata) over generated records."""

  def __init__(self, num_records, *, seed=0, speakers=tuple(SPEAKERS), with_phones=True):
    rng = np.random.default_rng(seed)
    self.records = []
    for i in range(num_records):
      spk = speakers[i % len(speakers)]
      lang = ("en", "fr")[(i // len(speakers)) % 2]
      phones = rng.choice(LANG_PHONES[lang], PHONES_PER_UTT)
      t = np.arange(PHONE_SAMPLES) / 16000.0
      audio = np.concatenate([
          0.3 * np.sin(2 * np.pi * FREQS[p] * SPEAKERS[spk] * t) for p in phones])
      audio += 0.1 * np.sin(2 * np.pi * HUMS[spk] * np.arange(len(audio)) / 16000.0)
      audio += 0.01 * rng.standard_normal(len(audio))
      letters = [PHONES[p] for p in phones]
      text = " ".join("".join(letters[j:j + 2]) for j in range(0, len(letters), 2))
      self.records.append(dict(
          audio=np.round(audio * 32767).astype(np.int16), id=f"u{seed}_{i:04d}", text=text,
          phones=" ".join(letters) if with_phones else "", speaker=spk, language=lang,
          num_samples=len(audio)))

  def __len__(self):
    return len(self.records)

  def __repr__(self):
    return f"ToneSource({len(self)})"

  def __getitem__(self, i):
    return dict(self.records[int(i)])

  def __getitems__(self, keys):
    return [self[k] for k in keys]

  def metadata(self):
    return {k: np.asarray([r[k] for r in self.records]) for k in
            ("id", "num_samples", "language", "speaker")}


def source_fn(num_train=32, num_eval=8):
  """`split -> ToneSource` for probing.run / finetune.finetune (eval splits use other seeds)."""
  sizes = {"train": (num_train, 0), "dev": (num_eval, 1), "test": (num_eval, 2)}
  cache = {}

  def get(split):
    if split not in cache:
      n, seed = sizes[split]
      cache[split] = ToneSource(n, seed=seed)
    return cache[split]

  return get
