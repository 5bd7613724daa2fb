"""A tiny LibriSpeech + Libri-light `librispeech_finetuning` source tree of generated flacs."""
import os

from tests.data import corpus_fixtures as fx

WORDS = ("HELLO WORLD", "THE QUICK BROWN FOX", "READ A BOOK")


def _chapter(d, spk, chap, n, start, *, words=WORDS):
  """n flacs + trans.txt in d; returns {uid: text}."""
  out, lines = {}, []
  for u in range(n):
    uid = f"{spk}-{chap}-{u:04d}"
    text = words[(start + u) % len(words)]
    fx.write(os.path.join(d, f"{uid}.flac"), fx.tone(1600 + 160 * u, seed=start + u))
    lines.append(f"{uid} {text}")
    out[uid] = text
  with open(os.path.join(d, f"{spk}-{chap}.trans.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return out


def make(root, *, finetuning_at="beside", eval_splits=("dev-other", "test-clean", "test-other"),
         words=WORDS):
  """LibriSpeech/<eval splits> and librispeech_finetuning/{1h/0..5,9h}/{clean,other}.

  Args:
    root: the folder to fill (the builder's source).
    finetuning_at: "beside" LibriSpeech/, "inside" it, or None for no fine-tuning folder.
    eval_splits: LibriSpeech split folders to write (2 speakers x 1 chapter x 2 utterances).
    words: transcripts cycle through these.

  Returns:
    {split: {uid: text}} with the fine-tuning splits' expected members under train_10min,
    train_1h and train_10h.
  """
  out, k = {}, 0
  for split in eval_splits:
    name = split.replace("-", "_")
    out[name] = {}
    for spk in ("1272", "2277"):
      d = os.path.join(root, "LibriSpeech", split, spk, f"{k}")
      out[name].update(_chapter(d, spk, f"{k}", 2, k, words=words))
      k += 1
  if finetuning_at is None:
    return out
  base = os.path.join(root, "LibriSpeech" if finetuning_at == "inside" else "",
                      "librispeech_finetuning")
  folds = {}
  for fold in range(6):
    folds[fold] = {}
    for quality, spk in (("clean", f"{100 + fold}"), ("other", f"{200 + fold}")):
      d = os.path.join(base, "1h", str(fold), quality, spk, f"{10 + fold}")
      folds[fold].update(_chapter(d, spk, f"{10 + fold}", 1 + fold % 2, fold, words=words))
  nine = {}
  for quality, spk in (("clean", "300"), ("other", "400")):
    nine.update(_chapter(os.path.join(base, "9h", quality, spk, "77"), spk, "77", 2, 5,
                         words=words))
  out["train_10min"] = dict(folds[0])
  out["train_1h"] = {u: t for f in folds.values() for u, t in f.items()}
  out["train_10h"] = dict(out["train_1h"], **nine)
  return out
