"""Training curves: each objective's run gets the panels it logged, and its probes."""
import json

from jaxssl.training import plots


def _workdir(tmp_path, rows, evals=()):
  with open(tmp_path / "metrics.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  if evals:
    with open(tmp_path / "evals.jsonl", "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in evals)
  return str(tmp_path)


def test_a_masked_prediction_run_gets_loss_accuracy_and_probe_panels(tmp_path):
  rows = [{"step": s, "train/loss": 4.0 / s, "train/loss_unmasked": 5.0 / s,
           "train/accuracy_masked": 0.1 * s, "train/masked_fraction": 0.5} for s in (1, 2)]
  evals = [{"step": 2, "cumulative_flops": 1e9,
            "phone": {"dev": {"per": 0.5}, "test": {"per": 0.4}, "layer_weights": [1.0]},
            "speaker": {"dev": {"accuracy": 0.7}, "test": {"accuracy": 0.6, "loss": 1.0}}}]
  workdir = _workdir(tmp_path, rows, evals)
  shown = dict(plots.panels(workdir))
  assert list(shown) == ["Loss (nats)", "Accuracy", "Probes (test)"]  # No codebook panel.
  assert shown["Loss (nats)"]["loss_unmasked"] == [(1, 5.0), (2, 2.5)]
  assert shown["Accuracy"] == {"accuracy_masked": [(1, 0.1), (2, 0.2)]}
  assert shown["Probes (test)"] == {"phone per": [(2, 0.4)], "speaker accuracy": [(2, 0.6)]}
  assert plots.plot_curves(workdir).endswith("curves.png")
  assert (tmp_path / "curves.png").stat().st_size > 0


def test_a_contrastive_run_without_evals_keeps_its_codebook_panel(tmp_path):
  rows = [{"step": 1, "train/loss": 3.0, "train/accuracy": 0.05, "train/code_perplexity": 90.0,
           "train/prob_perplexity": 100.0}]
  assert [label for label, _ in plots.panels(_workdir(tmp_path, rows))] == [
      "Loss (nats)", "Accuracy", "Codebook perplexity"]
