"""Bookkeeping for files a dataset build skipped, and the `skipped.json` summary.

Real corpora always hold some broken files (Common Voice has empty clips, old
LibriVox rips have truncated FLACs). A build never dies on one: the builder
records it here with a reason code, logs it, and moves on; at the end the
counts and a few example paths per reason go to the console and to
`skipped.json` beside the dataset, so a bad source shows up at a glance.
"""
import collections
import json
import os

from absl import logging

# Label problems found by the builders themselves, next to `audio.REASONS`.
BAD_LABEL = "bad_label"
# How many example paths to keep per (split, reason), and how many skips per
# reason to log at WARNING before the rest go to INFO.
NUM_EXAMPLES = 5
NUM_WARNINGS = 10
SKIPPED_FILE = "skipped.json"


class SkipLog:
  """Counts skipped files per split and reason; keeps a few example paths."""

  def __init__(self):
    self.counts = collections.defaultdict(collections.Counter)  # split -> reason -> n
    self.examples = collections.defaultdict(lambda: collections.defaultdict(list))
    self.num_candidates = collections.Counter()  # split -> files considered
    self.num_written = collections.Counter()  # split -> examples written
    self._logged = collections.Counter()  # reason -> warnings emitted

  def add(self, split, reason, path, detail=""):
    """Records one skipped file (or manifest line)."""
    self.counts[split][reason] += 1
    if len(self.examples[split][reason]) < NUM_EXAMPLES:
      self.examples[split][reason].append({"path": os.fspath(path), "detail": detail})
    self._logged[reason] += 1
    log = logging.warning if self._logged[reason] <= NUM_WARNINGS else logging.info
    log("Skipping %s [%s] %s: %s", split, reason, path, detail)

  def num_skipped(self, split=None):
    """Total skipped files, for one split or all of them."""
    splits = [split] if split is not None else list(self.counts)
    return sum(sum(self.counts[s].values()) for s in splits)

  def totals(self):
    """reason -> count, summed over splits."""
    out = collections.Counter()
    for c in self.counts.values():
      out.update(c)
    return dict(out)

  def summary(self, **header):
    """A JSON-able dict: `header` fields, totals, and per-split details."""
    splits = sorted(set(self.num_candidates) | set(self.counts))
    return {
        **header,
        "num_skipped": self.num_skipped(),
        "skipped": self.totals(),
        "splits": {
            s: {
                "num_candidates": self.num_candidates[s],
                "num_written": self.num_written[s],
                "skipped": dict(self.counts[s]),
                "examples": {r: list(v) for r, v in self.examples[s].items()},
            } for s in splits
        },
    }

  def write(self, directory, **header):
    """Writes `skipped.json` into `directory`; returns the summary dict."""
    summary = self.summary(**header)
    with open(os.path.join(directory, SKIPPED_FILE), "w") as f:
      json.dump(summary, f, indent=2, ensure_ascii=False)
    return summary


def format_summary(summary):
  """Human-readable multi-line text for a `SkipLog.summary()` dict."""
  lines = [f"Skipped {summary['num_skipped']} file(s)."]
  for split, s in summary["splits"].items():
    lines.append(f"  {split}: wrote {s['num_written']} of {s['num_candidates']} candidates")
    for reason, n in sorted(s["skipped"].items()):
      lines.append(f"    {reason}: {n}")
      for ex in s["examples"].get(reason, ())[:3]:
        lines.append(f"      e.g. {ex['path']}: {ex['detail']}")
  return "\n".join(lines)
