"""Mini-batch k-means in JAX: k-means++ init, sharded mini-batch updates, deterministic labels.

HuBERT's offline targets (https://arxiv.org/abs/2106.07447) come from scikit-learn's
MiniBatchKMeans (fairseq examples/hubert/simple_kmeans/learn_kmeans.py: k-means++ init, batch 10k,
max_iter 100, n_init 20, max_no_improvement 100, tol 0, reassignment_ratio 0). This is the same
algorithm as one compiled JAX program per step:

- init: greedy k-means++ (2 + ln K candidates per centre, as sklearn) on `init_size` random points,
  `num_init` times; the start with the lowest inertia on a shared random validation sample wins;
- steps: a random mini-batch (with replacement, drawn on the host from (seed, step)) is assigned
  to its nearest centres and each centre moves to the running mean of every point it was ever
  given (per-centre learning rate 1 / count, sklearn's update); training stops after `max_epochs`
  passes or when the smoothed batch inertia has not improved for `max_no_improvement` steps;
- refine (optional, `refine_steps` > 0): full Lloyd passes over all fitted points, which closes
  the small gap between mini-batch k-means and full k-means.

Mini-batches are split into `num_chunks` fixed-size chunks sharded over a 1-D device mesh; each
device maps over its chunks with the same [n, D] x [D, K] matmuls, and the per-chunk sums are
all-gathered and added in a fixed order. Every floating-point operation is therefore the same on
1 device and on 8, so a seed gives bitwise-identical centres and labels on any device count that
divides `num_chunks`.
"""
import dataclasses
import functools
import math

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import numpy as np

AXIS = "data"
_STREAM_INIT = 1
_STREAM_VALID = 2
_STREAM_BATCH = 3
_STREAM_PP = 4


@dataclasses.dataclass(frozen=True)
class KMeansResult:
  """A fitted codebook and how it was fitted."""
  centroids: np.ndarray   # [K, D] float32.
  inertia: float          # Sum of squared distances of the fitted points to their centres.
  init_inertia: float     # The chosen k-means++ start, on the validation sample.
  num_steps: int          # Mini-batch steps taken.
  stopped_early: bool     # The smoothed batch inertia stopped improving.


def make_mesh(devices=None):
  """A 1-D mesh over `devices` (default: all), the axis the chunks are sharded over."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (AXIS,))


def sq_distances(x, centroids):
  """||x - c||^2 for every pair, clamped at 0. [N, D], [K, D] -> [N, K] float32."""
  xx = jnp.sum(x * x, -1, keepdims=True)
  cc = jnp.sum(centroids * centroids, -1)
  xc = jnp.matmul(x, centroids.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.maximum(xx - 2.0 * xc + cc[None], 0.0)


@functools.partial(jax.jit, static_argnames=("num_clusters", "num_trials"))
def kmeans_plusplus(rng, points, *, num_clusters, num_trials=None):
  """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; sklearn's `_kmeans_plusplus`).

  Args:
    rng: PRNG key.
    points: [M, D] float32.
    num_clusters: K <= M.
    num_trials: candidates per centre; default 2 + floor(ln K) as sklearn.

  Returns:
    [K, D] initial centres, each one of `points`.
  """
  m = points.shape[0]
  trials = num_trials or 2 + int(math.log(num_clusters))
  k_first, k_rest = jax.random.split(rng)
  first = jax.random.randint(k_first, (), 0, m)
  centers = jnp.zeros((num_clusters, points.shape[1]), points.dtype).at[0].set(points[first])
  closest = sq_distances(points, points[first][None])[:, 0]  # [M]

  def body(c, carry):
    centers, closest = carry
    # D^2 sampling by inverse CDF: `trials` candidates, then keep the one that lowers the
    # potential (sum of squared distances to the nearest centre) the most.
    cdf = jnp.cumsum(closest)
    u = jax.random.uniform(jax.random.fold_in(k_rest, c), (trials,)) * cdf[-1]
    cand = jnp.clip(jnp.searchsorted(cdf, u), 0, m - 1)
    d = jnp.minimum(closest[None], sq_distances(points[cand], points).reshape(trials, m))
    best = jnp.argmin(d.sum(-1))
    return centers.at[c].set(points[cand[best]]), d[best]

  centers, _ = jax.lax.fori_loop(1, num_clusters, body, (centers, closest))
  return centers


class _Sharded:
  """The compiled, sharded pieces: per-chunk assignment, sums, counts and inertia."""

  def __init__(self, mesh, num_chunks):
    n_dev = mesh.shape[AXIS]
    if num_chunks % n_dev:
      raise ValueError(f"num_chunks={num_chunks} must be a multiple of the {n_dev} devices.")
    self.mesh = mesh
    self.num_chunks = num_chunks
    self.chunk_sharding = NamedSharding(mesh, P(AXIS))
    self.replicated = NamedSharding(mesh, P())
    self.accumulate = jax.jit(jax.shard_map(
        self._local, mesh=mesh, in_specs=(P(AXIS), P(AXIS), P()),
        out_specs=(P(), P(), P(), P(AXIS)), check_vma=False))

  @staticmethod
  def _local(x, w, centroids):
    """x [c, n, D], w [c, n] (this device's chunks) -> global sums, counts, inertia, labels."""
    k = centroids.shape[0]

    def one(args):
      xc, wc = args
      d = sq_distances(xc, centroids)  # [n, K]
      labels = jnp.argmin(d, -1)
      nearest = jnp.take_along_axis(d, labels[:, None], -1)[:, 0]
      onehot = (labels[:, None] == jnp.arange(k)[None]).astype(xc.dtype) * wc[:, None]
      sums = jnp.matmul(onehot.T, xc, precision=jax.lax.Precision.HIGHEST)  # [K, D]
      return sums, onehot.sum(0), (nearest * wc).sum(), labels.astype(jnp.int32)

    # lax.map: every chunk runs the same fixed-shape program whatever the device count.
    sums, counts, inertia, labels = jax.lax.map(one, (x, w))
    gather = functools.partial(jax.lax.all_gather, axis_name=AXIS, tiled=True)
    # Adding the all-gathered partials in chunk order (rather than a psum, whose order depends
    # on the devices) keeps results bitwise equal across device counts.
    return gather(sums).sum(0), gather(counts).sum(0), gather(inertia).sum(0), labels

  def run(self, points, weights, centroids):
    """[N, D] host points (N divisible by num_chunks) -> (sums, counts, inertia, labels [N])."""
    c = self.num_chunks
    x = jax.device_put(points.reshape(c, -1, points.shape[-1]), self.chunk_sharding)
    w = jax.device_put(weights.reshape(c, -1), self.chunk_sharding)
    sums, counts, inertia, labels = self.accumulate(x, w, centroids)
    return sums, counts, inertia, labels.reshape(-1)


@functools.lru_cache(maxsize=8)
def _sharded(mesh, num_chunks):
  """One `_Sharded` (and so one set of compiled programs) per mesh and chunk count."""
  return _Sharded(mesh, num_chunks)


def _pad(points, multiple):
  """Pads rows to a multiple of `multiple`; returns (points, weights) with weight 0 on padding."""
  n = len(points)
  total = max(multiple, -(-n // multiple) * multiple)
  out = np.zeros((total, points.shape[1]), np.float32)
  out[:n] = points
  w = np.zeros((total,), np.float32)
  w[:n] = 1.0
  return out, w


def _sample(n, size, *stream):
  return np.random.default_rng(list(stream)).integers(0, n, size)


def fit(points, num_clusters, *, seed=0, batch_size=10_000, max_epochs=100, num_init=20,
        init_size=None, max_no_improvement=100, refine_steps=0, mesh=None, num_chunks=8,
        log_fn=None) -> KMeansResult:
  """Fits a K-centre codebook to `points` with mini-batch k-means.

  Args:
    points: [N, D] float array on the host (a np.memmap works: only sampled rows are read).
    num_clusters: K.
    seed: every random choice (init samples, k-means++, mini-batches) derives from it.
    batch_size: points per mini-batch (rounded up to a multiple of `num_chunks`).
    max_epochs: at most max_epochs * N / batch_size steps (sklearn's max_iter).
    num_init: k-means++ starts; the best on a validation sample is kept (sklearn's n_init).
    init_size: points per k-means++ start (default 3 * batch_size, at least 3 K, at most N).
    max_no_improvement: stop after this many steps without a new best smoothed batch inertia
      (0: never stop early).
    refine_steps: full Lloyd passes after the mini-batch steps (0 = sklearn's MiniBatchKMeans).
    mesh: a 1-D mesh (`make_mesh`); default all devices.
    num_chunks: fixed chunks per mini-batch; a multiple of the mesh size.
    log_fn: optional `(message) -> None` for progress.

  Returns:
    A `KMeansResult`.
  """
  points = np.asarray(points) if not isinstance(points, np.ndarray) else points
  if points.ndim != 2 or not len(points):
    raise ValueError(f"k-means needs [N, D] points with N > 0, got shape {points.shape}.")
  n = points.shape[0]
  if not 0 < num_clusters <= n:
    raise ValueError(f"num_clusters={num_clusters} must be in [1, number of points {n}].")
  log = log_fn or (lambda _: None)
  sharded = _sharded(mesh or make_mesh(), num_chunks)
  batch_size = -(-min(batch_size, n) // num_chunks) * num_chunks
  init_size = min(n, max(init_size or 3 * batch_size, 3 * num_clusters))

  # 1. k-means++ starts (single device: the seeding is sequential and runs on a sample).
  valid = np.asarray(points[np.sort(_sample(n, init_size, seed, _STREAM_VALID))], np.float32)
  vx, vw = _pad(valid, num_chunks)
  best, best_inertia = None, np.inf
  for trial in range(num_init):
    sample = np.asarray(points[np.sort(_sample(n, init_size, seed, _STREAM_INIT, trial))],
                        np.float32)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), trial)
    centers = kmeans_plusplus(key, jax.device_put(sample, jax.devices()[0]),
                              num_clusters=num_clusters)
    centers = jax.device_put(np.asarray(centers), sharded.replicated)
    inertia = float(sharded.run(vx, vw, centers)[2])
    if inertia < best_inertia:
      best, best_inertia = centers, inertia
  log(f"k-means++: best of {num_init} starts has validation inertia {best_inertia:.6g}")

  # 2. Mini-batch steps.
  step_fn = jax.jit(_minibatch_update, out_shardings=sharded.replicated)
  centers = best
  totals = jax.device_put(np.zeros((num_clusters,), np.float32), sharded.replicated)
  num_steps = max(1, (max_epochs * n) // batch_size)
  ewa, ewa_best, no_improvement, stopped = None, np.inf, 0, False
  alpha = min(1.0, 2.0 * batch_size / (n + 1))  # sklearn's smoothing of the batch inertia.
  step = 0
  for step in range(1, num_steps + 1):
    rows = _sample(n, batch_size, seed, _STREAM_BATCH, step)
    bx = np.asarray(points[rows], np.float32)
    sums, counts, inertia, _ = sharded.run(bx, np.ones((batch_size,), np.float32), centers)
    centers, totals = step_fn(centers, totals, sums, counts)
    batch_inertia = float(inertia) / batch_size
    ewa = batch_inertia if ewa is None else ewa * (1 - alpha) + batch_inertia * alpha
    if ewa < ewa_best:
      ewa_best, no_improvement = ewa, 0
    else:
      no_improvement += 1
    if max_no_improvement and no_improvement >= max_no_improvement:
      stopped = True
      break
  log(f"mini-batch: {step} steps of {batch_size} points"
      + (" (converged: no improvement)" if stopped else ""))

  # 3. Optional full Lloyd passes, then the inertia over all points.
  for _ in range(refine_steps):
    sums, counts, _ = _full_pass(sharded, points, centers, batch_size)
    centers = jax.device_put(np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None],
                                      np.asarray(centers)).astype(np.float32), sharded.replicated)
  _, _, total_inertia = _full_pass(sharded, points, centers, batch_size)
  return KMeansResult(centroids=np.asarray(centers), inertia=float(total_inertia),
                      init_inertia=best_inertia, num_steps=step, stopped_early=stopped)


def _minibatch_update(centers, totals, sums, counts):
  """sklearn's per-centre running mean: c <- (c * n_seen + sum_batch) / (n_seen + n_batch)."""
  new_totals = totals + counts
  moved = (centers * totals[:, None] + sums) / jnp.maximum(new_totals, 1.0)[:, None]
  return jnp.where(counts[:, None] > 0, moved, centers), new_totals


def _full_pass(sharded, points, centers, batch_size):
  """Sums, counts and inertia over all `points`, streamed in mini-batch sized pieces (host f64)."""
  sums = np.zeros(np.shape(centers), np.float64)
  counts = np.zeros((np.shape(centers)[0],), np.float64)
  inertia = 0.0
  for start in range(0, len(points), batch_size):
    # Every piece, the last one too, is padded to the one compiled shape.
    x, w = _pad(np.asarray(points[start:start + batch_size], np.float32), batch_size)
    s, c, i, _ = sharded.run(x, w, centers)
    sums += np.asarray(s, np.float64)
    counts += np.asarray(c, np.float64)
    inertia += float(i)
  return sums, counts, inertia


def predict(points, centroids, *, mesh=None, num_chunks=8, batch_size=10_000):
  """Nearest-centre labels. [N, D] host points, [K, D] centres -> int32 [N] (deterministic).

  Returns (labels, inertia) where inertia is the sum of squared distances to the chosen centres.
  """
  points = np.asarray(points, np.float32)
  if points.ndim != 2 or points.shape[1] != np.shape(centroids)[1]:
    raise ValueError(f"predict: points {points.shape} do not match centroids "
                     f"{np.shape(centroids)} (feature dims differ).")
  sharded = _sharded(mesh or make_mesh(), num_chunks)
  # A fixed piece size whatever len(points): one compiled shape for every call.
  batch_size = -(-batch_size // num_chunks) * num_chunks
  centers = jax.device_put(np.asarray(centroids, np.float32), sharded.replicated)
  out = np.zeros((len(points),), np.int32)
  inertia = 0.0
  for start in range(0, len(points), batch_size):
    piece = points[start:start + batch_size]
    x, w = _pad(piece, batch_size)
    _, _, i, labels = sharded.run(x, w, centers)
    out[start:start + len(piece)] = np.asarray(labels)[:len(piece)]
    inertia += float(i)
  return out, inertia
