"""Parameters and MACs per second of speech for every pretraining config, beside published figures.

Configs are discovered (harness.discover_configs: every configs/**/*.py whose trainer is
"pretrain", argument sweeps such as the mixer sweep expanded), so new recipes appear in the table
without editing this file. For each:
  - parameters from an abstract init (`jax.eval_shape(objective.init)`: nothing is allocated),
    in total (with the pretraining heads) and for the encoder alone (`params["speech_encoder"]`);
  - MACs per second of speech = XLA's cost-analysis FLOPs / 2 of the encoder forward pass
    (`objective.represent`, no dropout, batch 1) on 1 s and 10 s inputs, divided by the seconds.
    XLA counts every multiply-add of the lowered program, elementwise work included, so it is a
    little above the usual "matmul and conv MACs" hand counts; at 10 s attention's quadratic
    term is visible next to 1 s;
  - the published figure (docs/reference.md) where one exists, and MACs relative to wav2vec 2.0
    BASE (MelHuBERT claims -33.5% MACs per second against HuBERT BASE, arXiv 2211.09944).

  python -m experiments.benchmarks.params_macs            # the committed table
  python -m experiments.benchmarks.params_macs --filter=wav2vec2 --out=""
"""
from absl import app
from absl import flags
import jax

from experiments.benchmarks import harness
from jaxssl import objectives
from jaxssl.training import flops

FLAGS = flags.FLAGS


def define_flags():
  """The command-line flags (defined only when run as a script, so modules import freely)."""
  flags.DEFINE_list("filter", [], "Keep configs whose name contains one of these.")
  flags.DEFINE_list("seconds", ["1", "10"], "Input lengths for MACs per second.")
  flags.DEFINE_string("out", "experiments/benchmarks/results/params_macs",
                      "Output stem; '' prints.")

# Published counts (docs/reference.md): (total with pretraining heads, encoder only, source).
PUBLISHED = {
    "wav2vec2/base": (95_044_608, 94_371_712, "fairseq log; docs/reference.md"),
    "wav2vec2/large": (317_390_592, 315_438_720, "LARGE LV-60; docs/reference.md"),
    "wav2vec2/xlsr": (317_390_592, 315_438_720, "XLS-R 300M = LARGE LV-60"),
    "hubert/base:iteration=2": (94_697_600, 94_371_712, "K=504 dict; docs/reference.md"),
    "hubert/large": (316_609_408, None, "docs/reference.md"),
    "mixers/wav2vec2:mixer=mha,recipe=base": (95_044_608, 94_371_712, "= wav2vec2 BASE"),
}
# Published relative costs: name -> (reference name, claimed MACs/s ratio, source).
CLAIMS = {"hubert/melhubert": ("hubert/base:iteration=2", 1 - 0.335,
                               "MelHuBERT: -33.5% MACs per 1 s vs HuBERT BASE (arXiv 2211.09944)")}
BASELINE = "wav2vec2/base"


def count(config, seconds_list):
  """(total params, encoder params, {seconds: MACs per second of speech}) of one config."""
  out, params = {}, None
  for seconds in seconds_list:
    c = harness.resized(config, batch_size=1, seconds=seconds)
    objective = objectives.build(c)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
             for k, v in harness.synthetic_batch(c).items()}
    params = jax.eval_shape(objective.init, jax.random.PRNGKey(0), batch)
    traced = jax.jit(lambda p, b: objective.represent(p, b)[0]).trace(params, batch)
    out[seconds] = flops.program_flops(traced) / 2 / seconds
  total = harness.num_params(params)
  encoder = harness.num_params(params["speech_encoder"]) if "speech_encoder" in params else total
  return total, encoder, out


def table(configs, seconds_list):
  """Rows for `configs` [(name, path, arg, config or Exception)]."""
  rows = []
  for name, _, _, config in configs:
    if isinstance(config, Exception):
      rows.append(dict(config=name, error=f"{type(config).__name__}: {config}"[:200]))
      continue
    total, encoder, macs = count(config, seconds_list)
    row = dict(config=name, variant=config.model.get("variant", ""),
               objective=config.objective.name, params=total, encoder_params=encoder)
    for s, m in macs.items():
      row[f"gmacs_per_s@{s:g}s"] = m / 1e9
    pub = PUBLISHED.get(name)
    if pub:
      row["published_params"], row["published_encoder"], row["source"] = pub
      row["params_match"] = total == pub[0] and (pub[1] is None or encoder == pub[1])
    rows.append(row)
    print(row, flush=True)
  longest = f"gmacs_per_s@{max(seconds_list):g}s"
  by_name = {r["config"]: r for r in rows if longest in r}
  base = by_name.get(BASELINE)
  for r in rows:
    if base and longest in r:
      r["macs_vs_base"] = r[longest] / base[longest]
  for name, (ref, claim, source) in CLAIMS.items():
    if name in by_name and ref in by_name:
      by_name[name]["claim"] = f"{source}: claimed x{claim:.3f}, measured x" + (
          f"{by_name[name][longest] / by_name[ref][longest]:.3f}")
  return rows


def markdown(rows, meta, seconds_list):
  cols = (["config", "objective", "params", "encoder_params"]
          + [f"gmacs_per_s@{s:g}s" for s in seconds_list]
          + ["macs_vs_base", "published_params", "published_encoder", "params_match"])
  claims = [f"- {r['config']}: {r['claim']}" for r in rows if "claim" in r]
  errors = [f"- {r['config']}: {r['error']}" for r in rows if "error" in r]
  text = (f"# Parameters and MACs per second of speech\n\n{meta['date']}, jax {meta['jax']}. "
          "Params from abstract init (with pretraining heads / encoder only); GMACs per second "
          "of speech = XLA cost-analysis FLOPs / 2 of the encoder forward (batch 1) / seconds; "
          f"macs_vs_base at {max(seconds_list):g} s relative to {BASELINE}. Published counts: "
          "docs/reference.md\n\n"
          + harness.markdown_table(cols, [r for r in rows if "error" not in r]))
  if claims:
    text += "\n\nPublished relative costs:\n" + "\n".join(claims)
  if errors:
    text += "\n\nConfigs that did not build:\n" + "\n".join(errors)
  return text


def plot(rows, seconds_list, path):
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  longest = f"gmacs_per_s@{max(seconds_list):g}s"
  rows = [r for r in rows if longest in r]
  fig, ax = plt.subplots(figsize=(7, 5))
  ax.scatter([r["params"] / 1e6 for r in rows], [r[longest] for r in rows])
  for r in rows:
    ax.annotate(r["config"], (r["params"] / 1e6, r[longest]), fontsize=6)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("parameters (M, with pretraining heads)")
  ax.set_ylabel(f"GMACs per second of speech ({max(seconds_list):g} s input)")
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main(argv):
  del argv
  seconds_list = [float(s) for s in FLAGS.seconds]
  configs = [c for c in harness.discover_configs()
             if not FLAGS.filter or any(f in c[0] for f in FLAGS.filter)]
  rows = table(configs, seconds_list)
  meta = harness.machine()
  md = markdown(rows, meta, seconds_list)
  print(md)
  harness.write_results(FLAGS.out, dict(machine=meta, rows=rows), md,
                        lambda p: plot(rows, seconds_list, p))


if __name__ == "__main__":
  define_flags()
  app.run(main)
