"""Import HF transformers / fairseq wav2vec 2.0 and HuBERT checkpoints into jaxssl, export to HF.

  python -m jaxssl.convert --from=hf --input=wav2vec2-base/ --output=ckpts/w2v2_base
  python -m jaxssl.convert --from=fairseq --input=hubert_base_ls960.pt --output=ckpts/hubert_base
  python -m jaxssl.convert --to=hf --input=ckpts/w2v2_base --output=hf/w2v2_base

Import writes a jaxssl checkpoint directory (config.json + orbax params, see interop/native.py)
usable as `ckpt.init_from` and by `jaxssl.extract`; export writes a transformers folder
(config.json + model.safetensors + preprocessor_config.json) that `Wav2Vec2Model` /
`Wav2Vec2ForPreTraining` / `HubertModel.from_pretrained` load. Nothing from the input files is
executed (safetensors; PyTorch files through weights-only unpickling), and an unsupported
architecture or a missing, unexpected or misshapen tensor stops the conversion with an error that
names it. wav2vec 2.0: https://arxiv.org/abs/2006.11477 , HuBERT: https://arxiv.org/abs/2106.07447
"""
import json
import os
import shutil
import sys

from absl import app
from absl import flags
from absl import logging
import numpy as np

from jaxssl import cli
from jaxssl.interop import ConversionError
from jaxssl.interop import fairseq
from jaxssl.interop import hf
from jaxssl.interop import layout
from jaxssl.interop import native

_READERS = {"hf": hf.read, "fairseq": fairseq.read}


def import_checkpoint(source, path, output, *, overwrite=False):
  """Converts a transformers folder or fairseq checkpoint into a jaxssl checkpoint.

  Args:
    source: "hf" or "fairseq".
    path: the transformers model folder, or the fairseq .pt file.
    output: the jaxssl checkpoint directory to write.
    overwrite: replace `output` if it exists.

  Returns:
    A report dict: family, variant, layer_norm_first, mode, heads, num_params, notes (dropped
    heads, filled tensors), output.

  Raises:
    ConversionError: naming the file, key or config field that prevents the conversion.
  """
  if source not in _READERS:
    raise ConversionError(f"--from={source!r}: choose from {sorted(_READERS)}.")
  spec, tensors, notes = _READERS[source](path)
  config = native.config_from_spec(spec)
  flat = layout.to_jaxssl(tensors, spec, source, native.param_shapes(config, spec),
                          source=os.fspath(path))
  native.save(output, config, native.nest(flat, config), overwrite=overwrite)
  return _report(spec, config, flat, notes, output)


def export_hf(checkpoint, output, *, overwrite=False):
  """Writes a jaxssl checkpoint (converted or trained) as a transformers model folder.

  HuBERT's pretraining heads have no transformers class and are left out (reported in notes).

  Args:
    checkpoint: a jaxssl checkpoint directory, training workdir or step directory.
    output: the transformers folder to write.
    overwrite: replace `output` if it exists.

  Returns:
    The report dict (see `import_checkpoint`).
  """
  config, params = native.load(checkpoint)
  flat = native.flatten(params, config)
  spec = native.spec_from_config(config, flat)
  notes = []
  if spec.family == "hubert" and spec.heads:
    notes.append("HuBERT final_proj / label_embs left out: transformers has no HuBERT "
                 "pretraining model")
    flat = {k: v for k, v in flat.items() if k.startswith(layout.ENCODER + "/")}
    spec = native.spec_from_config(config, flat)
  tensors = layout.from_jaxssl(flat, spec, "hf")
  out = os.path.abspath(os.fspath(output))
  if os.path.exists(out) and not overwrite:
    raise ConversionError(f"--output={output}: already exists (pass --overwrite to replace).")
  tmp = out + ".partial"
  shutil.rmtree(tmp, ignore_errors=True)
  hf.write(tmp, spec, tensors, config)
  if os.path.exists(out):
    shutil.rmtree(out)
  os.replace(tmp, out)
  return _report(spec, config, flat, notes, output)


def _report(spec, config, flat, notes, output):
  variant = config.model.variant
  return dict(family=spec.family, variant=variant if isinstance(variant, str) else
              dict(variant), layer_norm_first=spec.layer_norm_first, mode=spec.mode,
              heads=spec.heads, num_params=int(sum(np.size(v) for v in flat.values())),
              notes=notes, output=os.fspath(output))


def _define_flags():
  # Defined only when run as a script: jaxssl.extract and the trainer own --input / --config.
  flags.DEFINE_enum("from", None, ["hf", "fairseq", "jaxssl"],
                    "Input format: a transformers folder, a fairseq .pt, or a jaxssl checkpoint "
                    "(with --to=hf).")
  flags.DEFINE_enum("to", "jaxssl", ["jaxssl", "hf"], "Output format.")
  flags.DEFINE_string("input", None, "Input folder or file.")
  flags.DEFINE_string("output", None, "Output directory.")
  flags.DEFINE_bool("overwrite", False, "Replace --output if it exists.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if not f.input or not f.output:
    raise app.UsageError("--input and --output are required.")
  source = f["from"].value or ("jaxssl" if f.to == "hf" else None)
  logging.set_verbosity(logging.ERROR)  # orbax's read-only-manager warnings are noise here.
  try:
    if f.to == "hf":
      if source != "jaxssl":
        raise ConversionError(f"--to=hf exports a jaxssl checkpoint; got --from={source}.")
      report = export_hf(f.input, f.output, overwrite=f.overwrite)
    else:
      if source not in _READERS:
        raise ConversionError("--from=hf or --from=fairseq is required to import.")
      report = import_checkpoint(source, f.input, f.output, overwrite=f.overwrite)
  except ConversionError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(json.dumps(report))


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
