"""Builds a small multilingual speech corpus offline, with eSpeak NG.

Eight languages, six synthetic speakers each (an eSpeak voice variant at a given
pitch and rate), sentences drawn from the hand-written word lists in
`jaxssl/data/text/<lang>.txt`, 16 kHz int16 WAV, and phone-level alignments taken
from the synthesizer's own phoneme events. It exists so that every part of the
pipeline (TFDS builder, pretraining, phone probes, CTC fine-tuning) can be run
end to end on a laptop without downloading anything.

  python -m jaxssl.data.demo_corpus --out=/tmp/demo_corpus --hours=1 --seed=0

Layout: `DIR/wav/<split>/<id>.wav`, `DIR/<split>.jsonl` (one utterance per line:
id, path, text, phones, phone_starts, phone_ends, speaker, language, num_samples,
sample_rate) and `DIR/meta.json`, which is written last and marks the build as
complete. Splits hold out whole speakers: in each language four speakers are
train, one dev and one test, and each "round" of 10 utterances per language gives
8 / 1 / 1 of them to train / dev / test (80/10/10). Utterance i is a pure
function of (seed, i), so a build is byte-identical for a seed whatever the
number of workers.

Variants for data-efficiency experiments (`demo_variants.py`): `--dirty_fraction=0.25` (a
labelled fraction of corrupted utterances) and `--language_hours=en:1.0,fr:0.1` (an imbalanced
multilingual build).
"""
import functools
import json
import math
import multiprocessing
import os
import pathlib
import shutil
import sys
import time
import wave
from typing import NamedTuple

from absl import flags
import numpy as np
import soxr
import tqdm

from jaxssl import constants
from jaxssl import cli
from jaxssl.data import corruptions
from jaxssl.data import demo_variants
from jaxssl.data import espeak

LANGUAGES = ("en", "es", "fr", "de", "it", "pt", "nl", "pl")
SPLITS = ("train", "dev", "test")
DEFAULT_HOURS = 1.0
FORMAT_VERSION = 1
TEXT_DIR = pathlib.Path(__file__).parent / "text"

_NUM_TRAIN_SPEAKERS = 4  # Per language; plus one dev and one test speaker.
_ROUND_PER_LANGUAGE = 10  # Slots 0-7: train speakers (2 each), 8: dev, 9: test.
_ROUND = _ROUND_PER_LANGUAGE * len(LANGUAGES)
_WORDS_PER_SENTENCE = (4, 12)
# (variant, pitch, words/minute). A language takes 6 consecutive entries from an
# offset of 3 * its index, so its speakers are distinct and the held-out voices
# differ from one language to the next.
_VOICE_POOL = (
    ("m1", 40, 165), ("f2", 60, 175), ("m3", 50, 150), ("f4", 70, 185),
    ("m5", 35, 170), ("f1", 55, 160), ("m7", 45, 190), ("f3", 65, 155),
    ("m2", 30, 180), ("f5", 75, 165), ("m4", 55, 200), ("m6", 40, 145),
)
DEFAULT_CORRUPTIONS = tuple(corruptions.CORRUPTIONS)


class Speaker(NamedTuple):
  """A synthetic speaker: one eSpeak variant at a fixed pitch and rate, one language."""
  id: str  # "<language>_<variant>_p<pitch>_r<rate>", e.g. "en_m3_p50_r150".
  language: str
  split: str
  variant: str
  pitch: int
  rate: int


def speakers(language):
  """The 6 speakers of `language`: 4 train, then 1 dev, then 1 test."""
  offset = 3 * LANGUAGES.index(language)
  split_of = ("train",) * _NUM_TRAIN_SPEAKERS + ("dev", "test")
  out = []
  for k, split in enumerate(split_of):
    variant, pitch, rate = _VOICE_POOL[(offset + k) % len(_VOICE_POOL)]
    out.append(Speaker(f"{language}_{variant}_p{pitch}_r{rate}", language, split,
                       variant, pitch, rate))
  return out


def load_words(language):
  """Word list of `language` (one word a line, '#' comments), in file order."""
  path = TEXT_DIR / f"{language}.txt"
  if not path.is_file():
    raise FileNotFoundError(f"No word list for language {language!r}: {path} is missing.")
  words = [w.strip() for w in path.read_text(encoding="utf-8").splitlines()]
  words = list(dict.fromkeys(w for w in words if w and not w.startswith("#")))
  if len(words) < 50:
    raise ValueError(f"{path}: only {len(words)} words; the demo corpus needs at least 50.")
  return words


def utterance_plan(seed, index):
  """What utterance `index` says and who says it: (speaker, text, synth_seed).

  A pure function of (seed, index): the layout in rounds fixes language and
  speaker, and an RNG keyed by both fixes the words.
  """
  j = index % _ROUND
  language = LANGUAGES[j // _ROUND_PER_LANGUAGE]
  slot = j % _ROUND_PER_LANGUAGE
  spk = speakers(language)
  if slot < 2 * _NUM_TRAIN_SPEAKERS:
    speaker = spk[slot % _NUM_TRAIN_SPEAKERS]
  else:  # Slot 8 -> the dev speaker, 9 -> the test speaker.
    speaker = spk[_NUM_TRAIN_SPEAKERS + slot - 2 * _NUM_TRAIN_SPEAKERS]
  rng = np.random.default_rng([seed, index])
  words = _words(language)
  num_words = int(rng.integers(_WORDS_PER_SENTENCE[0], _WORDS_PER_SENTENCE[1] + 1))
  text = " ".join(words[int(i)] for i in rng.integers(0, len(words), num_words))
  text = text[0].upper() + text[1:] + "."
  return speaker, text, int(rng.integers(0, 2**31 - 1))


@functools.cache
def _words(language):
  return tuple(load_words(language))


def synthesize_utterance(seed, index):
  """Renders utterance `index` at 16 kHz.

  Returns:
    (record, samples): the jsonl record and the [N] int16 samples.
  """
  speaker, text, synth_seed = utterance_plan(seed, index)
  audio, rate, phones = espeak.synthesize(
      text, voice=speaker.language, variant=speaker.variant, rate=speaker.rate,
      pitch=speaker.pitch, seed=synth_seed)
  # Resample in float: soxr's int16 output path dithers with a random generator,
  # which made a few files differ from build to build.
  resampled = soxr.resample(audio.astype(np.float32), rate, constants.SAMPLE_RATE)
  samples = np.clip(np.rint(resampled), -32768, 32767).astype(np.int16)
  n = len(samples)
  # Integer rounding of the boundaries (monotone, so order and disjointness survive).
  scale = lambda s: min(n, (s * constants.SAMPLE_RATE + rate // 2) // rate)
  phones = [(p, scale(s), scale(e)) for p, s, e in espeak.normalize_phones(phones)]
  phones = [p for p in phones if p[2] > p[1]]
  if not phones:
    raise RuntimeError(f"espeak produced no phones for utterance {index}: {text!r}")
  utt_id = f"{speaker.id}_{index:06d}"
  record = {
      "id": utt_id, "path": f"wav/{speaker.split}/{utt_id}.wav", "text": text,
      "phones": [p[0] for p in phones], "phone_starts": [p[1] for p in phones],
      "phone_ends": [p[2] for p in phones], "speaker": speaker.id,
      "language": speaker.language, "num_samples": n, "sample_rate": constants.SAMPLE_RATE,
  }
  return record, samples


def _synthesize_star(args):
  return synthesize_utterance(*args)


def _write_wav(path, samples):
  # The stdlib writer has no timestamps or tags: same samples, same bytes.
  with wave.open(str(path), "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(constants.SAMPLE_RATE)
    w.writeframes(samples.astype("<i2").tobytes())


def _is_complete(out, seed, hours, variant):
  try:
    meta = json.loads((out / "meta.json").read_text())
  except (OSError, ValueError):
    return None
  same = (meta.get("format_version"), meta.get("seed"), meta.get("hours")) == (
      FORMAT_VERSION, seed, hours)
  same = same and all(meta.get(k) == variant.get(k) for k in demo_variants.KEYS)
  if same and all((out / f"{s}.jsonl").is_file() for s in SPLITS):
    return meta
  return None


def _clear_previous(out):
  """Removes what an earlier (different or interrupted) build wrote, nothing else."""
  (out / "meta.json").unlink(missing_ok=True)
  for split in SPLITS:
    (out / f"{split}.jsonl").unlink(missing_ok=True)
    shutil.rmtree(out / "wav" / split, ignore_errors=True)


def _round_indices(round_no, languages):
  """Utterance indices of round `round_no` for `languages` (all: the round's 80, in order)."""
  return [round_no * _ROUND + LANGUAGES.index(lang) * _ROUND_PER_LANGUAGE + s
          for lang in languages for s in range(_ROUND_PER_LANGUAGE)]


def _synthesize_rounds(out, seed, groups, num_workers):
  """Writes rounds of utterances until each group has its target; returns the tallies.

  Args:
    groups: [(languages, target samples, whole_rounds)]. The balanced corpus is one group of
      every language, stopped at a whole round; a `language_hours` build has one group per
      language, each stopped at the first utterance that reaches its target (after one round).

  Returns:
    (utterances per split, samples per split, phone inventory, total samples,
     {"+".join(group languages): utterances made}).
  """
  writers = {s: open(out / f"{s}.jsonl.tmp", "w", encoding="utf-8") for s in SPLITS}
  counts = dict.fromkeys(SPLITS, 0)
  split_samples = dict.fromkeys(SPLITS, 0)
  inventory = set()
  total = 0
  made_counts = {}
  pool = None
  if num_workers > 1:
    # spawn: the parent may run JAX threads, which fork() would copy mid-flight.
    pool = multiprocessing.get_context("spawn").Pool(num_workers)
  bar = tqdm.tqdm(total=round(sum(g[1] for g in groups) / constants.SAMPLE_RATE),
                  unit="s audio", desc="demo corpus",
                  bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} s audio "
                             "[{elapsed}<{remaining}, {rate_fmt}]")
  try:
    for languages, target, whole_rounds in groups:
      round_size = _ROUND_PER_LANGUAGE * len(languages)
      group_total = made = 0
      while made == 0 or group_total < target:
        # ~2.9 s per utterance is the measured mean; a batch short of the target
        # only costs one more (small) batch, an overshoot is cut at the round.
        batch = max(1, math.ceil((target - group_total) /
                                 (2.9 * constants.SAMPLE_RATE * round_size)))
        first = made // round_size
        jobs = [(seed, i) for r in range(first, first + batch)
                for i in _round_indices(r, languages)]
        results = (pool.imap(_synthesize_star, jobs, chunksize=4) if pool
                   else map(_synthesize_star, jobs))
        for record, samples in results:
          split = record["path"].split("/")[1]
          _write_wav(out / record["path"], samples)
          writers[split].write(json.dumps(record, ensure_ascii=False) + "\n")
          counts[split] += 1
          split_samples[split] += record["num_samples"]
          inventory.update(record["phones"])
          group_total += record["num_samples"]
          made += 1
          bar.update(record["num_samples"] / constants.SAMPLE_RATE)
          bar.total = max(bar.total, math.ceil(bar.n))  # The last round may overshoot.
          # The stop decision is taken per whole round, or per utterance after the first round.
          at_stop_point = made % round_size == 0 if whole_rounds else made >= round_size
          if at_stop_point and group_total >= target:
            break
      total += group_total
      made_counts["+".join(languages)] = made
  finally:
    bar.close()
    if pool:
      pool.terminate()
    for f in writers.values():
      f.close()
  for split in SPLITS:
    os.replace(out / f"{split}.jsonl.tmp", out / f"{split}.jsonl")
  return counts, split_samples, inventory, total, made_counts


def build(out_dir, *, hours=DEFAULT_HOURS, seed=0, num_workers=None, language_hours=None,
          dirty_fraction=0.0, corruption_kinds=DEFAULT_CORRUPTIONS):
  """Synthesizes the demo corpus into `out_dir` (see the module docstring).

  Generation runs in whole rounds (10 utterances per language) until the audio
  reaches `hours`; at least one round is always made, so even a tiny build has
  every language and speaker in its split.

  Args:
    out_dir: output directory, created if needed.
    hours: target amount of audio, all splits together (ignored with `language_hours`).
    seed: seeds the sentences (and espeak's breath noise); non-negative int.
    num_workers: synthesis processes; defaults to os.cpu_count(). 1 runs inline.
    language_hours: {language: hours} for an imbalanced build: only these languages, each
      synthesized in its own rounds (one at least) and stopped at the first utterance that
      reaches its hours (all splits together). Utterance i is the same as in the balanced build.
    dirty_fraction: fraction of each split's utterances corrupted (`demo_variants.corrupt`).
    corruption_kinds: names from `corruptions.CORRUPTIONS`, assigned in turn.

  Returns:
    The meta.json dict, plus "build_seconds" and "skipped" (True when `out_dir`
    already held a complete build with the same seed and hours).
  """
  if language_hours is not None:
    language_hours = demo_variants.check_language_hours(language_hours, LANGUAGES)
    hours = sum(language_hours.values())
  if not hours > 0:
    raise ValueError(f"--hours must be positive, got {hours}.")
  hours = float(hours)  # 1 and 1.0 must give the same meta.json.
  dirty_fraction = float(dirty_fraction)
  corruption_kinds = list(corruption_kinds)
  variant = {}  # Only non-default options go to meta.json, so balanced clean metas stay as is.
  if language_hours is not None:
    variant["language_hours"] = language_hours
  if dirty_fraction > 0:
    variant.update(dirty_fraction=dirty_fraction, corruptions=corruption_kinds)
  if not isinstance(seed, int) or seed < 0:
    raise ValueError(f"--seed must be a non-negative int, got {seed!r}.")
  corruptions.choose(0, dirty_fraction, corruption_kinds, seed)  # Checks both flags.
  num_workers = num_workers or os.cpu_count() or 1
  out = pathlib.Path(out_dir)
  t0 = time.time()
  meta = _is_complete(out, seed, hours, variant)
  if meta is not None:
    print(f"{out}: complete demo corpus for seed={seed}, hours={hours}; nothing to do.")
    return {**meta, "build_seconds": time.time() - t0, "skipped": True}
  for lang in LANGUAGES:
    _words(lang)  # Fail on a bad word list before starting any worker.
  _clear_previous(out)
  for split in SPLITS:
    (out / "wav" / split).mkdir(parents=True, exist_ok=True)
  to_samples = lambda h: h * 3600 * constants.SAMPLE_RATE
  if language_hours is None:
    groups = [(LANGUAGES, to_samples(hours), True)]
  else:
    groups = [((lang,), to_samples(h), False) for lang, h in language_hours.items()]
  counts, split_samples, inventory, total, made = _synthesize_rounds(
      out, seed, groups, num_workers)
  languages = [lang for group, _, _ in groups for lang in group]
  if language_hours is not None:
    variant["language_utterances"] = {lang: made[lang] for lang in languages}
  if dirty_fraction > 0:
    variant["corruption_counts"] = demo_variants.corrupt(
        out, seed, dirty_fraction, corruption_kinds, splits=SPLITS, write_wav=_write_wav)
  language_samples = dict.fromkeys(languages, 0)
  for split in SPLITS:
    with open(out / f"{split}.jsonl", encoding="utf-8") as f:
      for line in f:
        record = json.loads(line)
        language_samples[record["language"]] += record["num_samples"]
  meta = {
      "format_version": FORMAT_VERSION, "seed": seed, "hours": hours,
      "sample_rate": constants.SAMPLE_RATE,
      "engine": {"name": "espeak-ng", "version": espeak.version(),
                 "sample_rate": espeak.sample_rate()},
      "languages": languages,
      "speakers": {s: [p.id for lang in languages for p in speakers(lang) if p.split == s]
                   for s in SPLITS},
      "speaker_info": {p.id: p._asdict() for lang in languages for p in speakers(lang)},
      "num_rounds": math.ceil(max(made.values()) / (_ROUND_PER_LANGUAGE * len(groups[0][0]))),
      "counts": counts,
      "seconds": {s: split_samples[s] / constants.SAMPLE_RATE for s in SPLITS},
      "total_seconds": total / constants.SAMPLE_RATE,
      "phone_inventory": sorted(inventory),
      **variant,
  }
  if language_hours is not None:
    meta["language_seconds"] = {k: v / constants.SAMPLE_RATE for k, v in language_samples.items()}
  with open(out / "meta.json.tmp", "w", encoding="utf-8") as f:
    json.dump(meta, f, ensure_ascii=False, indent=1)
  os.replace(out / "meta.json.tmp", out / "meta.json")
  elapsed = time.time() - t0
  seconds = total / constants.SAMPLE_RATE
  print(f"{out}: {sum(counts.values())} utterances, {seconds / 3600:.3f} h in "
        f"{elapsed:.1f} s ({seconds / elapsed:.0f}x real time).")
  return {**meta, "build_seconds": elapsed, "skipped": False}


def main(argv):
  del argv
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  language_hours = None
  try:
    if FLAGS.language_hours:
      if FLAGS["hours"].present:
        raise ValueError("--hours and --language_hours exclude each other: --language_hours "
                         "sets the hours of each language.")
      language_hours = demo_variants.parse_language_hours(FLAGS.language_hours, LANGUAGES)
    build(FLAGS.out, hours=FLAGS.hours, seed=FLAGS.seed, num_workers=FLAGS.num_workers,
          language_hours=language_hours, dirty_fraction=FLAGS.dirty_fraction,
          corruption_kinds=FLAGS.corruptions)
  except ValueError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  # Flags are defined here, not at import: the TFDS builder and tests import this
  # module next to other flag-defining modules (--seed would clash).
  flags.DEFINE_string("out", None, "Output directory.", required=True)
  flags.DEFINE_float("hours", DEFAULT_HOURS, "Hours of audio, all splits together.")
  flags.DEFINE_integer("seed", 0, "Seed of the sentences and breath noise.")
  flags.DEFINE_integer("num_workers", None, "Synthesis processes; default os.cpu_count().")
  flags.DEFINE_string("language_hours", "", "Imbalanced build: 'lang:hours,...' (e.g. "
                      "en:1.0,fr:0.1); only these languages, each with its own hours. "
                      "Excludes --hours.")
  flags.DEFINE_float("dirty_fraction", 0.0, "Dirty build: this fraction of each split's "
                     "utterances is corrupted (exactly floor(fraction * N + 0.5)), labelled in "
                     "the manifest's 'corruption' field.")
  flags.DEFINE_list("corruptions", list(DEFAULT_CORRUPTIONS), "Corruption kinds of a dirty "
                    f"build, assigned in turn; from {list(DEFAULT_CORRUPTIONS)}.")
  cli.run(main)
