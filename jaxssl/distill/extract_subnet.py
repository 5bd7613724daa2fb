"""Extracts one subnet of a trained LightHuBERT supernet as a standalone checkpoint.

  python -m jaxssl.distill.extract_subnet --supernet=workdir/distill_demo/supernet \
      --subnet=default \
      --output=workdir/distill_demo/subnet_default

--subnet is "largest", "smallest", "default" (the search space's, docs/reference.md) or explicit
"embed=640,heads=10,ffn_ratio=4.0,depth=12" (the same heads and FFN ratio in every layer); any
subnet of the space, cut by the reference's slicing (supernet.py). The output (config.json +
ckpt/0) is a probe upstream (`--config.upstream=<output>`) or a teacher.
"""
import json

from absl import app
from absl import flags

from jaxssl import cli
from jaxssl import pretrained
from jaxssl.distill import objective as objective_lib
from jaxssl.distill import student as student_lib
from jaxssl.distill import supernet


def parse_subnet(spec, space):
  """A `student.Subnet` from a name or "embed=..,heads=..,ffn_ratio=..,depth=..".

  Raises:
    ValueError: an unknown name or malformed spec.
  """
  named = {"largest": space.largest, "smallest": space.smallest,
           "default": space.default_subnet}
  if spec in named:
    return named[spec]
  try:
    kv = dict(item.split("=", 1) for item in spec.split(","))
    return student_lib.Subnet.uniform(int(kv["embed"]), int(kv["heads"]),
                                      float(kv["ffn_ratio"]), int(kv["depth"]), space.head_dim)
  except (KeyError, ValueError):
    raise ValueError(f"--subnet={spec!r}: use one of {sorted(named)} or "
                     "'embed=640,heads=10,ffn_ratio=4.0,depth=12'.") from None


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.supernet or not f.output:
    raise app.UsageError("--supernet and --output are required.")
  config = pretrained.load_config(f.supernet)
  if config.get("objective", {}).get("name") != "lighthubert":
    raise app.UsageError(f"--supernet={f.supernet!r}: its config.json's objective is not "
                         "'lighthubert'; it is not a LightHuBERT supernet run.")
  space = supernet.get_space(config.lighthubert.space)
  subnet = parse_subnet(f.subnet, space)
  _, params = supernet.extract(f.supernet, subnet, f.output, overwrite=f.overwrite)
  print(json.dumps(dict(output=f.output, subnet=subnet.to_dict(),
                        params_without_heads=objective_lib.num_params(params, heads=False))))


if __name__ == "__main__":
  flags.DEFINE_string("supernet", None, "The supernet's workdir (or a ckpt/<step> of it).")
  flags.DEFINE_string("subnet", "default", "largest | smallest | default | embed=..,heads=..,"
                      "ffn_ratio=..,depth=..")
  flags.DEFINE_string("output", None, "The standalone checkpoint directory.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")
  cli.run(main)
