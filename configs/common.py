"""Shared pieces of the experiment configs: argument parsing and section builders.

Every config file is a Python module with `get_config(arg)`; see configs/wav2vec2/demo.py.
"""
import ml_collections as mlc

from jaxssl.data import batching


def parse_arg(arg, **defaults):
  """Parses `"k1=v1,k2=v2"` (or a bare `"runlocal"`) into a ConfigDict over `defaults`.

  Values are cast to the type of the default, so `:runlocal=True,size=large` works.
  """
  out = mlc.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"Unknown config argument {key!r}; valid: {sorted(defaults)}.")
    default = defaults[key]
    if not value:  # A bare key means True, as in `:runlocal`.
      value = True
    elif isinstance(default, bool):
      value = value.lower() in ("1", "true", "yes")
    elif default is not None:
      value = type(default)(value)
    out[key] = value
  return out


def data(name, *, data_dir="data/tfds", split="train", crop_samples=250_000, batch_size=8):
  """The `data` section: which TFDS dataset and how pretraining batches are made."""
  return mlc.ConfigDict(dict(
      name=name,                 # TFDS builder name: demo_corpus, librispeech, local_audio, ...
      data_dir=data_dir,         # TFDS data_dir holding the prepared array_record files.
      split=split,
      batch_size=batch_size,     # Global, in utterances.
      crop_samples=crop_samples, # Random fixed-length crop (pretraining): one static shape.
      min_samples=0,             # Utterances shorter than this are dropped (0: the receptive field).
      normalize=False,           # Per-utterance zero mean / unit variance (LARGE / XLS-R recipes).
      num_workers=0,             # grain worker processes per host (0: in the main process).
      # Data-efficiency strategies; each is off at its default.
      sampling=dict(name="uniform", alpha=1.0),            # "temperature": p_l ∝ (n_l/N)^alpha.
      # "crop_length": crops grow start_samples -> crop_samples over ramp_steps;
      # "max_duration": only utterances up to that length are drawn (whole, padded).
      curriculum=dict(name="", start_samples=0, ramp_steps=0),
      # fairseq's batching (max_tokens): > 0 gives about this much audio per update, from
      # dynamic_batch_buckets crop lengths, each batch cropped to its shortest (no padding).
      dynamic_batch_sec=0.0,
      dynamic_batch_multiple=8,  # Their global batch sizes are multiples of this (and of hosts).
      dynamic_batch_buckets=4,   # Crop lengths (= compiled shapes) of dynamic batching.
      # The global batch is this many fairseq per-GPU batches (distributed_world_size x
      # update_freq): dynamic batches fill each to dynamic_batch_sec / batch_groups, and the
      # equal-count mask trim and the quantizer's diversity loss run per group, as in fairseq.
      batch_groups=1,
      selection=dict(score_file="", keep_fraction=1.0),    # Keep the top-scored fraction.
  ))


def fairseq_batches(data, *, gpus, max_tokens, buckets=16):
  """Sets `data` (a `data()` section) to fairseq's pretraining batches.

  fairseq (RawAudioDataset without padding, batch_by_size under max_tokens) sorts utterances by
  length, fills each of `gpus` GPU batches with floor(max_tokens / length) of them and crops a
  batch to its shortest: about gpus x max_tokens samples per update and no padding. Here the
  global batch is `gpus` such groups (data.batch_groups, which the mask trim and the diversity
  loss also use), from `buckets` crop lengths that waste the least audio (data/batching.py);
  data.crop_samples stays fairseq's max_sample_size and data.batch_size becomes the batch of
  that longest crop (what --dry_run and jaxssl.aot compile).
  """
  data.dynamic_batch_sec = gpus * max_tokens / 16_000
  data.dynamic_batch_buckets = buckets
  data.batch_groups = gpus
  data.batch_size = batching.budget_batch_size(gpus * max_tokens, data.crop_samples,
                                               multiple=data.dynamic_batch_multiple, groups=gpus)
  return data


def mesh(data=-1, fsdp=1, tensor=1, rules=()):
  """The `mesh` section: sizes of the (data, fsdp, tensor) axes; -1 takes the remaining devices.

  `rules`: ((logical_name, mesh_axes), ...) overriding entries of
  training/partitioning.py's LOGICAL_AXIS_RULES, e.g. (("embed", None),) to stop FSDP.
  """
  return mlc.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor, rules=rules))


def wav2vec2_model(variant, **overrides):
  """The `model` section of a wav2vec 2.0 / HuBERT encoder: a size variant plus switches.

  Sizes live in jaxssl/models/variants.py; any field given here overrides the variant. The
  frontend is any of jaxssl/models/frontends (cnn, mel, mel_stack).
  """
  m = mlc.ConfigDict(dict(
      variant=variant,            # "demo", "tiny", "base", "large" (see models/variants.py).
      frontend=dict(name="cnn", mode="default", conv_bias=False, feature_grad_mult=0.1),
      feature_layer_norm=True,    # LayerNorm over the frontend features (MelHuBERT: none).
      mask_token="learned",       # "learned" embedding after the projection; "zeros": MelHuBERT.
      mixer=dict(name="mha"),
      layer_norm_first=False,     # False: post-LN (BASE); True: pre-LN + final LN (LARGE).
      # "transformer" or "conformer" (models/conformer.py: SpeechBrain's pre-norm Conformer layer
      # around model.mixer; always pre-LN + final LN, layer_norm_first does not apply).
      block="transformer",
      conformer=dict(kernel_size=31, activation="swish"),  # "gelu" in SpeechBrain's BEST-RQ.
      dropout_rate=0.1,
      attention_dropout_rate=0.1,
      activation_dropout_rate=0.0,
      input_dropout_rate=0.1,     # On the projected CNN features (fairseq dropout_input).
      feature_dropout_rate=0.1,   # On the unmasked features fed to the quantizer.
      layerdrop_rate=0.05,
      final_dim=0,                # 0: the variant's.
      scan_layers=False,
      remat=False,
      dtype="float32",            # Compute dtype; params stay float32.
  ))
  m.update(overrides)
  return m


def wav2vec2_sections(c, *, num_vars=320, temp=(2.0, 0.5, 0.999995), num_negatives=100,
                      feature_penalty_weight=10.0):
  """Sets the `masking`, `quantizer` and `objective` sections of a wav2vec 2.0 recipe
  (fairseq's defaults: p=0.65, span 10, G=2 codebooks, logit temperature 0.1, diversity 0.1)."""
  c.masking = dict(prob=0.65, span=10, min_spans=2)
  c.quantizer = dict(num_groups=2, num_vars=num_vars, temp=temp)
  c.objective = dict(name="wav2vec2", num_negatives=num_negatives, cross_sample_negatives=0,
                     logit_temp=0.1, diversity_weight=0.1,
                     feature_penalty_weight=feature_penalty_weight,
                     # Loss and accuracy per language of the training data (XLS-R); the run
                     # fills `languages` with their names when it starts.
                     per_language_metrics=False, languages=())


def adamw(*, lr, weight_decay=0.01, clip_norm=0.0, b1=0.9, b2=0.98, eps=1e-6, trainable=".*",
          no_decay="", lr_groups=()):
  """The `optim` section: fairseq's Adam (β2 0.98, eps 1e-6) with decoupled weight decay.

  `trainable` is a regex fullmatched against '/'-joined param paths; the rest stay frozen (and
  hold no Adam moments). `no_decay`: a regex of paths with no weight decay ("" decays all).
  `lr_groups`: (regex, lr) pairs, parameters with their own learning rate (same schedule).
  `grad_accum_steps` splits each global batch into that many microbatches.
  """
  return mlc.ConfigDict(dict(name="adamw", lr=lr, b1=b1, b2=b2, eps=eps,
                             weight_decay=weight_decay, no_decay=no_decay, clip_norm=clip_norm,
                             grad_accum_steps=1, trainable=trainable, lr_groups=lr_groups))


def distributed(coordinator=""):
  """The `distributed` section: "" = one process; "auto" = jax.distributed.initialize() on a
  TPU pod (the coordinator is discovered); "host:port" = explicit, with num_processes and
  process_id (e.g. two CPU processes on one machine)."""
  return mlc.ConfigDict(dict(coordinator=coordinator, num_processes=1, process_id=0))


def ckpt(every_steps=5_000, keep=3, init_from=""):
  """The `ckpt` section: orbax checkpoints every `every_steps`, keep the last `keep`."""
  return mlc.ConfigDict(dict(every_steps=every_steps, keep=keep, init_from=init_from,
                             async_save=True))


def shrink_for_cpu(c):
  """A few steps of a tiny model on tiny crops: what tests and `:runlocal` run."""
  c.total_steps = 4
  c.log_every_steps = 2
  c.data.batch_size = 8
  c.data.crop_samples = 8_000
  c.data.dynamic_batch_sec = 0.0  # Fixed tiny crops; grouped rows stay (2 groups of 4).
  c.data.batch_groups = min(c.data.batch_groups, 2)
  c.model.variant = "tiny"
  c.ckpt.every_steps = 2
  if "warmup_steps" in c.schedule:
    c.schedule.warmup_steps = 1
