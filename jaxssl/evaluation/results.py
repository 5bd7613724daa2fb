"""Probe and fine-tuning results: the splits, the task metrics, results.json / results.md and
the layer-weight plot.
"""
import json
import os

import matplotlib
import numpy as np

from jaxssl.data import lexicon as lexicon_lib
from jaxssl.data import sources
from jaxssl.evaluation import metrics as metrics_lib
from jaxssl.evaluation import tasks

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

LOWER_IS_BETTER = ("per", "wer", "cer")


def open_splits(config, *, source_fn=None, workdir=None):
  """{"train", "dev", "test"} -> Source of the probe's data (holdout of train when asked).

  Phone targets from a lexicon (`data.lexicon`, phone tasks only) wrap each split in a
  `lexicon.PhoneSource`; its OOV report is logged and, given `workdir`, written there.
  """
  d, s = config.data, config.splits
  source_fn = source_fn or (lambda split: sources.open_source(d.name, data_dir=d.data_dir,
                                                              split=split))
  if s.by_utterance:
    full = source_fn(s.train)
    meta = full.metadata()
    parts = tasks.holdout_split(meta["speaker"], meta["id"], dev_fraction=s.dev_fraction,
                                test_fraction=s.test_fraction, seed=s.seed)
    out = {k: tasks.SubsetSource(full, v, name=f"{s.train}:{k}") for k, v in parts.items()}
    return with_lexicon(config, out, workdir=workdir)
  out = {k: source_fn(getattr(s, k)) for k in ("train", "dev", "test")}
  if s.max_train_utterances:  # A fixed, evenly spread subset (quick in-training evals).
    n = len(out["train"])
    keep = np.unique(np.linspace(0, n - 1, min(n, s.max_train_utterances)).astype(np.int64))
    out["train"] = tasks.SubsetSource(out["train"], keep, name=f"{s.train}[subset]")
  return with_lexicon(config, out, workdir=workdir)


def wants_lexicon(config):
  """Whether the run predicts phones and names a lexicon (`data.lexicon`)."""
  phones = config.task == "phone" or (config.get("finetune") or {}).get("labels") == "phones"
  return phones and bool(config.data.get("lexicon", ""))


def with_lexicon(config, splits, *, workdir=None, names=None):
  """{role: Source} with phones from `data.lexicon` when `wants_lexicon`, else unchanged."""
  if not wants_lexicon(config):
    return splits
  lex = lexicon_lib.load(config.data.lexicon)
  policy = config.data.get("lexicon_oov", "error")
  names = names or {k: getattr(config.splits, k, k) for k in splits}
  out, reports = {}, {}
  try:
    for k, src in splits.items():
      out[k] = lexicon_lib.apply(src, lex, split=names[k], oov=policy)
      reports[names[k]] = out[k].report
  except lexicon_lib.OOVError as e:
    reports[e.report["split"]] = e.report
    raise
  finally:
    if workdir and reports:
      lexicon_lib.write_report(reports, workdir)
  return out


def score(task, vocab, targets, predictions):
  """Task metrics from {record index: prediction} (frame label lists or class ids); with more
  than one language among the scored records, also "per_language": {name: metrics}, keyed by
  the languages in the data (XLS-R's per-language tables)."""
  out = _score(task, vocab, targets, predictions)
  languages = getattr(targets, "languages", ())
  if languages and len({languages[i] for i in predictions}) > 1:
    out["per_language"] = {
        lang: _score(task, vocab, targets,
                     {i: p for i, p in predictions.items() if languages[i] == lang})
        for lang in sorted({languages[i] for i in predictions})}
  return out


def _score(task, vocab, targets, predictions):
  index = sorted(predictions)
  if task.kind == "utterance":
    return {"accuracy": metrics_lib.accuracy([predictions[i] for i in index],
                                             np.asarray(targets.ids)[index])}
  hyps = [vocab.decode(predictions[i]) for i in index]
  refs = [targets.tokens[i] for i in index]
  if task.name == "phone":
    return {"per": metrics_lib.token_error_rate(refs, hyps)}
  refs, hyps = [tasks.chars_to_text(r) for r in refs], [tasks.chars_to_text(h) for h in hyps]
  return {"wer": metrics_lib.word_error_rate(refs, hyps),
          "cer": metrics_lib.char_error_rate(refs, hyps)}


def write_results(results, workdir, *, plot=True):
  """results.json, results.md and (with `plot`) layer_weights.png in `workdir`."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1, ensure_ascii=False)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(markdown_table([results]))
  if plot:
    plot_layer_weights(results["layer_weights"],
                       os.path.join(workdir, "layer_weights.png"),
                       title=f"{results['task']} probe on {os.path.basename(results['upstream'])}")


def _percent(name, value):
  return f"{100 * value:.2f}" if name in LOWER_IS_BETTER + ("accuracy",) else f"{value:.4g}"


def flat_metrics(metrics, prefix=""):
  """{"per": 0.3, "per_language": {"de": {"per": 0.2}}} -> {"per": 0.3,
  "per_language/de/per": 0.2}: scalars for metric writers."""
  out = {}
  for k, v in metrics.items():
    if isinstance(v, dict):
      out.update(flat_metrics(v, f"{prefix}{k}/"))
    else:
      out[f"{prefix}{k}"] = float(v)
  return out


def markdown_table(rows):
  """A markdown table of probe results (one row per results dict; metrics in %), then the test
  metrics per language where a split has several."""
  names = sorted({m for r in rows for m, v in r["test"].items()
                  if m != "loss" and not isinstance(v, dict)})
  head = ["task", "upstream"] + [f"dev {m} %" for m in names] + [f"test {m} %" for m in names]
  head += ["best step", "train / dev / test utts", "seconds"]
  lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
  for r in rows:
    u = r["utterances"]
    cells = [r["task"], os.path.basename(os.path.normpath(r["upstream"]))]
    cells += [_percent(m, r["dev"][m]) if m in r["dev"] else "" for m in names]
    cells += [_percent(m, r["test"][m]) if m in r["test"] else "" for m in names]
    cells += [str(r["best_step"]), f"{u['train']} / {u['dev']} / {u['test']}",
              f"{r['seconds']:.0f}"]
    lines.append("| " + " | ".join(cells) + " |")
  for r in rows:
    for lang, m in sorted(r["test"].get("per_language", {}).items()):
      lines.append(f"\n{r['task']} test, language {lang}: " + ", ".join(
          f"{k} {_percent(k, v)} %" for k, v in sorted(m.items()) if k != "loss"))
  return "\n".join(lines) + "\n"


def plot_layer_weights(weights, path, *, title=""):
  """Bar chart of the softmax layer weights (index 0 = the Transformer's input)."""
  fig, ax = plt.subplots(figsize=(max(3.0, 0.45 * len(weights) + 1.5), 2.8))
  ax.bar(range(len(weights)), weights, color="tab:blue")
  ax.axhline(1.0 / len(weights), color="gray", ls="--", lw=1, label="uniform")
  ax.set_xlabel("hidden state (0 = encoder input)")
  ax.set_ylabel("softmax weight")
  ax.set_xticks(range(len(weights)))
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
