"""Every layer's hidden states for audio files: the s3prl upstream contract, as a CLI and library.

  python -m jaxssl.extract --checkpoint=ckpts/w2v2_base --input=utt.wav --output=feats.npz
  python -m jaxssl.extract --checkpoint=workdir/w2v2 --input=list.txt --output=feats.npz

s3prl's upstreams return all hidden states (the Transformer's input and every block's output,
L+1 of them, the last one after the final LayerNorm in pre-LN models) and their frame rate, and
probes learn a softmax-weighted sum over them (https://arxiv.org/abs/2105.01051). `load` builds
an `Upstream` from any jaxssl checkpoint (converted, or a training workdir of wav2vec 2.0, HuBERT,
MelHuBERT, BEST-RQ or data2vec 2.0, whose student encoder is read from its local_encoder/ and
encoder/ params); `extract` runs it over waveforms; the CLI reads a file or a list of files (one
path per line, relative to the list, or a fairseq .tsv manifest whose first line is the root
directory) and writes one .npz: `hidden_00000` ... [L+1, T_i, D] float32, `paths`, `num_frames`,
`frame_rate`, `sample_rate`. Waveforms are normalised per utterance when the checkpoint's config
says so (data.normalize: the LARGE / XLS-R and data2vec 2.0 recipes).
"""
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from jaxssl import constants
from jaxssl import cli
from jaxssl.data import audio as audio_lib
from jaxssl.evaluation import finetune_objectives
from jaxssl.interop import ConversionError
from jaxssl.interop import native
from jaxssl.models import frontends
from jaxssl.models import variants
from jaxssl.training import checkpointing

_AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".sph")


class Upstream:
  """A frozen jaxssl speech encoder: audio -> all hidden states.

  Attributes:
    config: the checkpoint's config.
    encoder: the SpeechEncoder module (wav2vec 2.0's, or `models.data2vec2.SpeechEncoder`).
    params: its params.
    num_hidden: L + 1 hidden states.
    frame_rate: frames per second (50 for the CNN frontend).
    normalize: whether waveforms are standardised per utterance before encoding.

  Padding a batch leaves every utterance's valid frames unchanged, with every frontend: the
  group-norm CNN (BASE) and the mel frontends take their statistics over valid frames only.
  """

  def __init__(self, config, params):
    make_encoder, rename = finetune_objectives.upstream_encoder(config)
    encoder_params = speech_encoder_params(params, rename)
    if encoder_params is None:
      names = sorted({theirs.split("/")[0] for _, theirs in rename} or {"speech_encoder"})
      raise ConversionError(f"the checkpoint's params have no {' / '.join(map(repr, names))} "
                            f"(top level: {sorted(params)}).")
    try:
      self.encoder = make_encoder(config.model)()
    except ValueError as e:
      raise ConversionError(f"cannot build the checkpoint's encoder: {e}") from None
    self.config, self.params = config, encoder_params
    self.num_hidden = variants.get(config.model.variant).num_layers + 1
    self.normalize = bool(config.get("data", {}).get("normalize", False))
    self.frame_rate = constants.SAMPLE_RATE / frontends.hop(config.model.frontend)
    self._jitted = jax.jit(self.hidden_states)

  def hidden_states(self, params, audio, valid_samples):
    """Pure and jittable: ([L+1, B, T, D] hidden states, [B, T] bool frame mask).

    Args:
      params: `self.params` (or fine-tuned replacements).
      audio: [B, S] float waveform at 16 kHz (normalised already if `self.normalize`).
      valid_samples: [B, S] bool, True on real samples (right padding).
    """
    valid = frontends.frame_valid(self.config.model.frontend, valid_samples)
    out = self.encoder.apply({"params": params}, audio, valid=valid, audio_valid=valid_samples,
                             train=False)
    return jnp.stack(out["hidden"]), valid

  def __call__(self, audio, valid_samples):
    return self._jitted(self.params, jnp.asarray(audio, jnp.float32), jnp.asarray(valid_samples))


def speech_encoder_params(params, rename=()):
  """The SpeechEncoder's params in a checkpoint's `params`: params["speech_encoder"], after
  reading the checkpoint's prefixes back through `rename` ((prefix in a fine-tuning model, prefix
  in the checkpoint) pairs: `finetune_objectives.upstream_encoder`; data2vec 2.0: local_encoder/*
  and encoder/*, its decoder left out). None if there are none."""
  back = tuple((theirs, ours) for ours, theirs in rename)
  return checkpointing.rename_params(params, back).get("speech_encoder")


def load(checkpoint):
  """An `Upstream` from a jaxssl checkpoint directory, training workdir or step directory."""
  config, params = native.load(checkpoint)
  return Upstream(config, params)


def extract(upstream, waveforms, *, batch_size=8, bucket_samples=constants.SAMPLE_RATE):
  """All hidden states of each waveform.

  Args:
    upstream: an `Upstream`.
    waveforms: sequence of [S_i] float arrays at 16 kHz, long enough for one frame (CNN: 400
      samples; raw: normalised here when the checkpoint's config asks for it).
    batch_size: utterances per call when padding is exact (layer-norm feature encoder).
    bucket_samples: padded lengths are multiples of this, so few shapes get compiled.

  Returns:
    list of [L+1, T_i, D] float32 numpy arrays, T_i = frontends.frames_for(S_i), in input order.
  """
  frontend = upstream.config.model.frontend
  waves = []
  for i, w in enumerate(waveforms):
    w = np.asarray(w, np.float32).reshape(-1)
    if frontends.frames_for(frontend, w.size) < 1:
      raise ConversionError(f"waveform {i}: {w.size} samples give no frame of frontend "
                            f"{frontend.name!r} (the CNN needs {variants.RECEPTIVE_FIELD}).")
    waves.append(audio_lib.normalize(w) if upstream.normalize else w)
  order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
  groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
  out = [None] * len(waves)
  for group in groups:
    longest = max(len(waves[i]) for i in group)
    s = -(-longest // bucket_samples) * bucket_samples
    audio = np.zeros((len(group), s), np.float32)
    valid = np.zeros((len(group), s), bool)
    for row, i in enumerate(group):
      audio[row, :len(waves[i])], valid[row, :len(waves[i])] = waves[i], True
    hidden, _ = upstream(audio, valid)
    hidden = np.asarray(hidden)
    for row, i in enumerate(group):
      out[i] = np.ascontiguousarray(hidden[:, row, :frontends.frames_for(frontend, len(waves[i]))])
  return out


def read_input_list(path):
  """An audio file -> [path]; a list file -> its paths (relative ones resolved against the
  list's directory); a fairseq .tsv manifest -> root-joined paths. Errors name file and line."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ConversionError(f"--input={path}: no such file.")
  if path.lower().endswith(_AUDIO_EXTENSIONS):
    return [path]
  with open(path, encoding="utf-8", errors="replace") as f:
    lines = [(n, line.rstrip("\n")) for n, line in enumerate(f, 1)]
  root = os.path.dirname(os.path.abspath(path))
  if path.endswith(".tsv") and lines and os.path.isdir(lines[0][1].strip()):
    root, lines = lines[0][1].strip(), lines[1:]
  out = []
  for n, line in lines:
    entry = line.split("\t")[0].strip()
    if not entry or entry.startswith("#"):
      continue
    full = entry if os.path.isabs(entry) else os.path.join(root, entry)
    if not os.path.isfile(full):
      raise ConversionError(f"{path} line {n}: no such audio file {entry!r}.")
    out.append(full)
  if not out:
    raise ConversionError(f"{path}: lists no audio files (one path per line).")
  return out


def extract_files(checkpoint, input_path, output, *, batch_size=8):
  """The CLI's work: load, read every listed file, extract, write the .npz. Returns its path."""
  paths = read_input_list(input_path)
  upstream = load(checkpoint)
  waves = []
  for p in paths:
    try:
      waves.append(audio_lib.to_float(audio_lib.load_audio(p, target_rate=constants.SAMPLE_RATE)))
    except audio_lib.BadAudio as e:
      raise ConversionError(f"cannot read audio: {e}") from None
  hidden = extract(upstream, waves, batch_size=batch_size)
  arrays = {f"hidden_{i:05d}": h for i, h in enumerate(hidden)}
  arrays.update(paths=np.asarray(paths), num_frames=np.asarray([h.shape[1] for h in hidden]),
                frame_rate=np.float64(upstream.frame_rate),
                sample_rate=np.int64(constants.SAMPLE_RATE))
  output = os.fspath(output)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  tmp = output + ".partial.npz"  # np.savez appends .npz to names without it.
  np.savez(tmp, **arrays)
  os.replace(tmp, output)
  return output


def _define_flags():
  # Defined only when run as a script: jaxssl.convert and the trainer own --input / --config.
  flags.DEFINE_string("checkpoint", None, "jaxssl checkpoint or workdir.")
  flags.DEFINE_string("input", None, "An audio file, or a text file listing them.")
  flags.DEFINE_string("output", None, "The .npz to write.")
  flags.DEFINE_integer("batch_size", 8, "Utterances per forward pass.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if not (f.checkpoint and f.input and f.output):
    raise app.UsageError("--checkpoint, --input and --output are required.")
  logging.set_verbosity(logging.ERROR)  # orbax's read-only-manager warnings are noise here.
  try:
    out = extract_files(f.checkpoint, f.input, f.output, batch_size=f.batch_size)
  except ConversionError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(out)


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
