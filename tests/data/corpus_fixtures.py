"""Tiny on-disk corpora in each builder's source layout, plus broken audio files.

Every generator returns the labels it wrote, keyed by utterance id, so tests
can compare what `open_source` reads back with what went in.
"""
import hashlib
import json
import os
import pathlib

import numpy as np
import soundfile as sf


def tone(n, *, rate=16000, freq=440.0, seed=0, amp=0.3):
  """[n] int16: a sine plus a little noise (deterministic)."""
  t = np.arange(n) / rate
  rng = np.random.default_rng(seed)
  x = amp * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(n)
  return np.round(x * 32767).astype(np.int16)


def write(path, x, rate=16000, **kwargs):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  sf.write(path, x, rate, **kwargs)
  return path


def write_truncated(path, n=4000):
  """A WAV whose data chunk is cut in half: the header still claims n samples."""
  write(path, tone(n))
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2])
  return path


def write_garbage(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(b"RIFF\x00\x00not really audio" * 10)
  return path


def demo_corpus(root, *, n=3, bad=True):
  """The `jaxssl.data.demo_corpus` layout: <split>.jsonl + wavs/. Returns {id: row}."""
  rows = {}
  for s, split in enumerate(("train", "dev")):
    lines = []
    for i in range(n):
      uid = f"{split}_{i}"
      num = 1600 + 320 * i
      write(os.path.join(root, "wavs", f"{uid}.wav"), tone(num, seed=10 * s + i), subtype="PCM_16")
      row = {"id": uid, "path": f"wavs/{uid}.wav", "text": f"hello {i}",
             "phones": ["h", "ə", "l", "oʊ"], "phone_starts": [0, 400, 800, 1200],
             "phone_ends": [400, 800, 1200, num], "speaker": f"spk{i % 2}",
             "language": "en" if i % 2 == 0 else "fr", "num_samples": num, "sample_rate": 16000}
      rows[uid] = row
      lines.append(json.dumps(row, ensure_ascii=False))
    if bad and split == "train":
      write(os.path.join(root, "wavs", "short.wav"), tone(200))
      write_garbage(os.path.join(root, "wavs", "corrupt.wav"))
      lines += [json.dumps({"id": "short", "path": "wavs/short.wav"}),
                json.dumps({"id": "corrupt", "path": "wavs/corrupt.wav"}),
                json.dumps({"id": "late", "path": "wavs/train_0.wav", "phones": ["a"],
                            "phone_starts": [0], "phone_ends": [99999]}),
                "{not json"]
    with open(os.path.join(root, f"{split}.jsonl"), "w", encoding="utf-8") as f:
      f.write("\n".join(lines) + "\n")
  return rows


def librispeech(root, *, bad=True):
  """LibriSpeech/<split>/<spk>/<chap>/ flacs + trans.txt. Returns {id: (split, text, audio)}."""
  out = {}
  for k, split in enumerate(("dev-clean", "train-clean-100")):
    for spk, chap in (("84", f"12112{k}"), ("174", f"5056{k}")):
      d = os.path.join(root, "LibriSpeech", split, spk, chap)
      lines = []
      for u in range(2):
        uid = f"{spk}-{chap}-{u:04d}"
        x = tone(2000 + 100 * u, seed=int(spk) + u)
        write(os.path.join(d, f"{uid}.flac"), x)
        lines.append(f"{uid} HELLO WORLD {u}")
        out[uid] = (split.replace("-", "_"), f"HELLO WORLD {u}", x)
      if bad and split == "dev-clean" and spk == "84":
        write(os.path.join(d, f"{spk}-{chap}-0099.flac"), tone(2000))  # No transcript.
        write(os.path.join(d, f"{spk}-{chap}-0098.flac"), np.zeros((0,), np.int16))
        lines.append(f"{spk}-{chap}-0098 EMPTY FILE")
      with open(os.path.join(d, f"{spk}-{chap}.trans.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
  return out


def mls(root, language="german", *, bad=True):
  """mls_<language>/<split>/transcripts.txt + audio/<spk>/<book>/*.flac. Returns {id: ...}."""
  out = {}
  for k, split in enumerate(("train", "dev")):
    d = os.path.join(root, f"mls_{language}", split)
    lines = []
    for u in range(2):
      spk, book = "1234", f"56{k}"
      uid = f"{spk}_{book}_{u:06d}"
      x = tone(1800 + 50 * u, seed=u)
      write(os.path.join(d, "audio", spk, book, f"{uid}.flac"), x)
      lines.append(f"{uid}\thallo welt {u}")
      out[uid] = (split, f"hallo welt {u}", x)
    if bad and split == "train":
      lines.append("1234_560_000099\tfehlende datei")  # Audio file missing.
      lines.append("malformed line without tab")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "transcripts.txt"), "w") as f:
      f.write("\n".join(lines) + "\n")
  return out


def common_voice(root, lang="fr", *, ext="mp3", bad=True):
  """<lang>/{train,dev,test}.tsv + clips/. Returns {id: (split, sentence, client_id)}."""
  out = {}
  d = os.path.join(root, lang)
  header = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment"
  for split in ("train", "dev", "test"):
    lines = [header]
    for u in range(2):
      uid = f"common_voice_{lang}_{split}_{u}"
      fmt = {"mp3": "MP3", "wav": "WAV"}[ext]
      write(os.path.join(d, "clips", f"{uid}.{ext}"), tone(8000, seed=u), format=fmt)
      sentence = f'Bonjour "{split}" {u}'
      lines.append(f"client{u}\t{uid}.{ext}\t{sentence}\t2\t0\t\t\t\t{lang}\t")
      out[uid] = (split, sentence, f"client{u}")
    if bad and split == "train":
      lines.append(f"client9\tmissing_clip.{ext}\tperdu\t2\t0\t\t\t\t{lang}\t")
    with open(os.path.join(d, f"{split}.tsv"), "w") as f:
      f.write("\n".join(lines) + "\n")
  return out


def tree_hash(root):
  """sha256 over the relative paths and bytes of every file below `root`."""
  h = hashlib.sha256()
  for p in sorted(pathlib.Path(root).rglob("*")):
    if p.is_file():
      h.update(str(p.relative_to(root)).encode())
      h.update(p.read_bytes())
  return h.hexdigest()
