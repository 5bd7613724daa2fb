"""Per-utterance scores for data selection (`data.selection`), and the score files they go to.

A score file is what `data.selection.score_file` reads (`sampling.read_scores`): '#' header lines
(the scorer, the direction, what the score is), then one `id<TAB>score` line per utterance.
`sampling.select_by_score` keeps the *highest* scores, exactly max(1, round(keep_fraction * N))
of them, ties broken by record order; so every scorer writes `sign * value`, with sign = -1 for
the measurements where lower is better (clipping, loss, perplexity), and the header says so.

Signal quality (librosa where it has the function):
  snr         estimated SNR in dB: frame powers (librosa.feature.rms, 25 ms frames, 10 ms hop);
              the noise power N is their 10th percentile over 0.91 (the 10th percentile of
              chi^2_400 / 400, so N is unbiased for white noise), the speech-plus-noise power S
              their 95th percentile, SNR = 10 log10((S - N) / N). A percentile form of the NIST
              STNR energy-histogram estimate (NIST Speech Quality Assurance package, `stnr`;
              noise level from the low end of the frame-energy distribution, signal level from
              its high end), i.e. the minimum-statistics idea of Martin (2001, IEEE TSAP 9(5)):
              the quietest frames are taken as noise only. Needs pauses (>= 10% of the frames):
              noise without pauses (music, babble) reads as a low SNR. Capped to [-20, 100] dB.
  activity    speech-activity ratio: the fraction of samples inside librosa.effects.split's
              non-silent intervals (frame RMS within `top_db`=40 dB of the utterance's peak
              frame), the peak being floored at -30 dBFS so that digital silence or a -80 dBFS
              hum is all inactive (no frame above -70 dBFS counts otherwise).
  clipping    the fraction of samples at or near full scale (|x| >= 0.99 of int16 full scale);
              lower is better, so score = -ratio.
Model based:
  loss        a pretrained upstream's pretraining loss on each whole utterance, in eval mode
              (no dropout), with a fixed mask / negatives draw (`--seed`); by default the main
              term (wav2vec 2.0's contrastive loss, HuBERT's masked prediction loss). Lower is
              kept (score = -loss): the utterances the model finds typical.
  perplexity  the perplexity of the utterance's k-means unit sequence under a unit bigram
              model fitted on the whole split, with add-k smoothing (k=1: Laplace), after
              collapsing repeated units (as unit language models do, GSLM,
              https://arxiv.org/abs/2102.01192); lower is kept. Lu et al. 2022
              (https://arxiv.org/abs/2204.01981) select pretraining data with n-gram models on
              discrete speech units; their contrastive score, log P_target - log P_general per
              unit, is `--target_split` (higher kept).
Baselines:
  length      duration in seconds, longest kept: Whetten et al. (https://arxiv.org/abs/2601.20896)
              find the longest 50% beats the full set at 24% less pretraining time.
  random      a uniform [0, 1) draw per utterance id, from (seed, id): the control every
              selection result is compared against.
"""
import hashlib
import math

import librosa
import numpy as np
import scipy.stats

from jaxssl import constants

SNR_RANGE_DB = (-20.0, 100.0)
SNR_FRAME = 400  # 25 ms at 16 kHz.
SNR_HOP = 160  # 10 ms.
SNR_NOISE_PERCENTILE = 10
SNR_SPEECH_PERCENTILE = 95
ACTIVITY_TOP_DB = 40.0
ACTIVITY_MIN_PEAK_DBFS = -30.0
CLIP_LEVEL = 0.99
_NOISE_QUANTILE = float(scipy.stats.chi2.ppf(SNR_NOISE_PERCENTILE / 100, SNR_FRAME) / SNR_FRAME)


class Scorer:
  """A score's name, meaning and direction: score = sign * value, higher kept."""

  def __init__(self, name, value, sign, source):
    self.name, self.value, self.sign, self.source = name, value, sign, source

  def header(self):
    keep = "highest value" if self.sign > 0 else "lowest value"
    return [f"scorer={self.name}", f"value={self.value}",
            f"score={'+' if self.sign > 0 else '-'}value (higher score kept: {keep} kept)",
            f"source={self.source}"]


SCORERS = {
    "snr": Scorer("snr", "estimated SNR in dB (frame-power percentiles P95 vs P10)", +1,
                  "NIST SPQA stnr-style energy percentiles"),
    "activity": Scorer("activity", "fraction of samples in librosa.effects.split(top_db=40) "
                       "intervals", +1, "librosa.effects.split"),
    "clipping": Scorer("clipping", "fraction of samples with |x| >= 0.99 full scale", -1,
                       "digital clipping at int16 full scale"),
    "loss": Scorer("loss", "per-utterance pretraining loss of the upstream (eval mode)", -1,
                   "the upstream's own objective"),
    "perplexity": Scorer("perplexity", "unit-bigram perplexity (add-k, repeats collapsed)", -1,
                         "Lu et al. 2022, arXiv 2204.01981"),
    "contrastive": Scorer("contrastive", "mean log P_target - log P_general per unit (bigrams)",
                          +1, "Lu et al. 2022, arXiv 2204.01981"),
    "length": Scorer("length", "duration in seconds", +1, "Whetten et al., arXiv 2601.20896"),
    "random": Scorer("random", "uniform [0, 1) draw from (seed, id)", +1, "control"),
}


def _float(audio):
  x = np.asarray(audio)
  if x.dtype == np.int16:
    return x.astype(np.float32) / 32768.0
  return x.astype(np.float32)


def snr_db(audio):
  """Estimated SNR in dB of int16 (or float in [-1, 1]) audio; see the module docstring."""
  y = _float(audio)
  if len(y) < SNR_FRAME:
    y = np.pad(y, (0, SNR_FRAME - len(y)))
  power = librosa.feature.rms(y=y, frame_length=SNR_FRAME, hop_length=SNR_HOP,
                              center=False)[0].astype(np.float64) ** 2
  floor = 10 ** (-120 / 10)  # -120 dBFS: below int16's dither.
  # The 10th percentile of a noise frame's power sits below its mean: for white Gaussian noise
  # the frame power is chi^2 with SNR_FRAME degrees of freedom (over SNR_FRAME), so divide by
  # that distribution's 10th percentile (0.91), which makes P10 unbiased for such noise.
  noise = max(float(np.percentile(power, SNR_NOISE_PERCENTILE)) / _NOISE_QUANTILE, floor)
  total = float(np.percentile(power, SNR_SPEECH_PERCENTILE))
  if total <= floor:  # Digital silence: no signal at all.
    return SNR_RANGE_DB[0]
  snr = 10 * math.log10(max(total - noise, floor) / noise)
  return float(np.clip(snr, *SNR_RANGE_DB))


def activity_ratio(audio, top_db=ACTIVITY_TOP_DB):
  """Fraction of samples librosa.effects.split finds non-silent; see the module docstring."""
  y = _float(audio)
  if not len(y):
    return 0.0
  min_peak = 10 ** (ACTIVITY_MIN_PEAK_DBFS / 20)
  intervals = librosa.effects.split(y, top_db=top_db, frame_length=SNR_FRAME,
                                    hop_length=SNR_HOP,
                                    ref=lambda rms: max(float(np.max(rms)), min_peak))
  return float(sum(int(e) - int(s) for s, e in intervals) / len(y))


def clipping_ratio(audio, level=CLIP_LEVEL):
  """Fraction of samples with |x| >= level * full scale (int16: 32768 * level)."""
  y = np.abs(_float(audio))
  return float(np.mean(y >= level)) if len(y) else 0.0


def length_seconds(num_samples):
  return float(num_samples) / constants.SAMPLE_RATE


def random_score(utt_id, seed):
  """Uniform [0, 1) from sha256(seed, id): independent of record order and of other ids."""
  digest = hashlib.sha256(f"{int(seed)}\t{utt_id}".encode()).digest()
  return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def collapse_repeats(units):
  """[1, 1, 2, 2, 1] -> [1, 2, 1]."""
  u = np.asarray(units)
  if not len(u):
    return u
  return u[np.concatenate([[True], u[1:] != u[:-1]])]


class UnitBigram:
  """A bigram model over units 0..K-1 plus sentence boundaries, with add-k smoothing.

  Each sequence u_1..u_n is read as <s> u_1 .. u_n </s>; the n + 1 transitions are counted.
  P(b | a) = (c(a, b) + k) / (c(a) + k * (K + 1)): K units plus </s> can follow any context
  (units or <s>), and c(a) counts a as a context.
  """

  def __init__(self, num_units, k=1.0):
    if num_units < 1 or k <= 0:
      raise ValueError(f"UnitBigram needs num_units >= 1 and k > 0, got {num_units}, {k}.")
    self.num_units, self.k = int(num_units), float(k)
    # Contexts 0..K-1 units, K = <s>; outcomes 0..K-1 units, K = </s>.
    self.counts = np.zeros((self.num_units + 1, self.num_units + 1), np.float64)

  def _pairs(self, units):
    u = np.asarray(units, np.int64)
    if len(u) and (u.min() < 0 or u.max() >= self.num_units):
      raise ValueError(f"Unit ids must be in [0, {self.num_units}), got "
                       f"[{u.min()}, {u.max()}].")
    context = np.concatenate([[self.num_units], u])
    outcome = np.concatenate([u, [self.num_units]])
    return context, outcome

  def fit(self, sequences):
    for units in sequences:
      context, outcome = self._pairs(units)
      np.add.at(self.counts, (context, outcome), 1.0)
    return self

  def log_probs(self, units):
    """Natural-log probabilities of the n + 1 transitions of `units`."""
    context, outcome = self._pairs(units)
    total = self.counts.sum(axis=1)
    return np.log((self.counts[context, outcome] + self.k) /
                  (total[context] + self.k * (self.num_units + 1)))

  def perplexity(self, units):
    return float(np.exp(-np.mean(self.log_probs(units))))


def unit_perplexities(sequences, num_units, *, k=1.0, dedup=True):
  """Perplexity of each sequence under a UnitBigram fitted on all of them."""
  seqs = [collapse_repeats(s) if dedup else np.asarray(s) for s in sequences]
  model = UnitBigram(num_units, k).fit(seqs)
  return [model.perplexity(s) for s in seqs]


def contrastive_unit_scores(sequences, target_sequences, num_units, *, k=1.0, dedup=True):
  """Lu et al.'s contrastive data selection on units: per-transition mean of
  log P_target - log P_general, bigrams fitted on the target and on the scored pool."""
  prep = lambda ss: [collapse_repeats(s) if dedup else np.asarray(s) for s in ss]
  seqs, target = prep(sequences), prep(target_sequences)
  general = UnitBigram(num_units, k).fit(seqs)
  in_domain = UnitBigram(num_units, k).fit(target)
  return [float(np.mean(in_domain.log_probs(s) - general.log_probs(s))) for s in seqs]


def write_score_file(path, ids, values, scorer, *, info=()):
  """Writes a score file: '#' header lines, then `id<TAB>sign*value` per utterance.

  Args:
    path: output .tsv path.
    ids: N utterance ids.
    values: N measurements (the scorer's `value`, before the sign).
    scorer: a `Scorer` (or a key of SCORERS).
    info: more 'key=value' strings for the header (dataset, split, flags).
  """
  scorer = SCORERS[scorer] if isinstance(scorer, str) else scorer
  if len(ids) != len(values):
    raise ValueError(f"{len(ids)} ids but {len(values)} values.")
  bad = [i for i in ids if "\t" in str(i) or "\n" in str(i) or str(i).startswith("#")]
  if bad:
    raise ValueError(f"Utterance ids cannot hold tabs or newlines or start with '#': {bad[:3]}.")
  with open(path, "w", encoding="utf-8") as f:
    for line in list(scorer.header()) + list(info):
      f.write(f"# {line}\n")
    for utt_id, value in zip(ids, values):
      f.write(f"{utt_id}\t{scorer.sign * float(value) + 0.0!r}\n")
