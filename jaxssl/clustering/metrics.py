"""Cluster quality against phone alignments: phone purity, cluster purity and PNMI.

Definitions of HuBERT §4.6 (Hsu et al. 2021, https://arxiv.org/abs/2106.07447). With the joint
distribution p(y, z) of frame-level phone labels y and cluster labels z (counts over all frames):
  phone purity   = E_z[max_y p(y | z)]   how well one cluster identifies one phone;
  cluster purity = E_y[max_z p(z | y)]   how concentrated each phone is on one cluster;
  PNMI           = I(y; z) / H(y)        the share of phone uncertainty a cluster removes.
Frames get the phone whose aligned span contains the frame's centre, or "sil" between phones.
"""
import numpy as np

SILENCE = "sil"


def frame_phones(phones, starts, ends, num_frames, *, hop, offset=0):
  """Phone (string) of each frame from a sample-level alignment.

  Args:
    phones: sequence of P phone strings (or a space-separated string).
    starts, ends: int [P] sample positions, [start, end).
    num_frames: T.
    hop: samples between frame centres.
    offset: sample position of frame 0's centre.

  Returns:
    list of T strings; frames whose centre is outside every phone span are `SILENCE`.
  """
  if isinstance(phones, str):
    phones = phones.split()
  starts, ends = np.asarray(starts), np.asarray(ends)
  if not len(phones) == len(starts) == len(ends):
    raise ValueError(f"Alignment has {len(phones)} phones, {len(starts)} starts and "
                     f"{len(ends)} ends.")
  centers = offset + hop * np.arange(num_frames)
  # Phone spans are sorted and disjoint: the candidate is the last span starting at or before
  # the centre, and it counts only if the centre is also before its end.
  idx = np.searchsorted(starts, centers, side="right") - 1
  inside = (idx >= 0) & (centers < ends[np.maximum(idx, 0)]) if len(starts) else idx >= 0
  return [phones[i] if ok else SILENCE for i, ok in zip(idx, inside)]


def contingency(phones, clusters, *, num_clusters=None):
  """Joint counts of (phone, cluster) over frames.

  Args:
    phones: [N] hashable phone labels (strings or ints).
    clusters: int [N] cluster labels in [0, num_clusters).
    num_clusters: K (default max + 1).

  Returns:
    (counts float64 [num_phones, K], sorted list of phone labels indexing the rows).
  """
  clusters = np.asarray(clusters, np.int64)
  if len(phones) != len(clusters):
    raise ValueError(f"{len(phones)} phone labels but {len(clusters)} cluster labels.")
  vocab, phone_ids = np.unique(np.asarray(phones), return_inverse=True)
  k = int(clusters.max()) + 1 if num_clusters is None else num_clusters
  if len(clusters) and (clusters.min() < 0 or clusters.max() >= k):
    raise ValueError(f"Cluster labels must be in [0, {k}), got [{clusters.min()}, "
                     f"{clusters.max()}].")
  counts = np.zeros((len(vocab), k), np.float64)
  np.add.at(counts, (phone_ids.reshape(-1), clusters), 1.0)
  return counts, list(vocab)


def cluster_quality(counts):
  """Phone purity, cluster purity and PNMI of a [num_phones, K] contingency table.

  Returns:
    dict: phone_purity, cluster_purity, pnmi, phone_entropy (nats), mutual_information (nats),
    num_frames, used_clusters (clusters holding at least one frame).
  """
  counts = np.asarray(counts, np.float64)
  total = counts.sum()
  if total <= 0:
    raise ValueError("cluster_quality: the contingency table is empty (no frames).")
  pxy = counts / total
  py = pxy.sum(1)  # Phones.
  pz = pxy.sum(0)  # Clusters.
  nz = pxy > 0
  outer = py[:, None] * pz[None, :]
  mi = float(np.sum(pxy[nz] * np.log(pxy[nz] / outer[nz])))
  hy = float(-np.sum(py[py > 0] * np.log(py[py > 0])))
  return dict(
      phone_purity=float(pxy.max(0).sum()),     # sum_z p(z) max_y p(y|z) = sum_z max_y p(y,z)
      cluster_purity=float(pxy.max(1).sum()),   # sum_y p(y) max_z p(z|y) = sum_y max_z p(y,z)
      pnmi=mi / hy if hy > 0 else 0.0,
      phone_entropy=hy, mutual_information=mi, num_frames=int(total),
      used_clusters=int((pz > 0).sum()))


def quality(phones, clusters, *, num_clusters=None):
  """`cluster_quality` straight from frame-level labels ([N] phones, int [N] clusters)."""
  return cluster_quality(contingency(phones, clusters, num_clusters=num_clusters)[0])
