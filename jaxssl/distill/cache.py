"""Teacher-output caching: run the teacher once, write its targets to disk, train from the files.

  python -m jaxssl.distill.cache --config=configs/distill/demo.py --cache_dir=/tmp/cache \
      --num_batches=300
  python -m jaxssl.main --config=configs/distill/demo.py --workdir=... \
      --config.distill.cache_dir=/tmp/cache

`build` draws `num_batches` batches from the run's own loader (the same crops, in the same order,
as an online run with that seed would see first), runs the teacher on each (`Teacher.targets`, one
compiled forward) and writes shards `shard-00000.npz`, ... of `batches_per_shard` batches each:
"audio" [K, B, S] float32, "valid" [K, B, S] bool, "language"/"speaker" [K, B] int32 and
"targets" [K, B, N, T, D] (float16 by default: half the bytes; float32 for exact targets), plus
meta.json (what was cached, from which teacher). `CachedLoader` then serves those batches in
place of the pipeline: epoch e visits the shards in a shuffled order (seed, e) and the batches
inside a shard in a shuffled order, holding one shard in memory. The trade: the teacher's forward
leaves every step, at the price of disk space and of training on a fixed set of crops (an online
run draws new crops every epoch). Single-process runs only.
"""
import json
import os
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from jaxssl import cli
from jaxssl.data import pipeline
from jaxssl.distill import teacher as teacher_lib
from jaxssl.training import partitioning

KEYS = ("audio", "valid", "language", "speaker", "targets")


def _meta_of(config):
  d = config.distill
  return dict(teacher=os.path.abspath(d.teacher) if "://" not in d.teacher else d.teacher,
              target_layers=[int(l) for l in d.target_layers],
              batch_size=int(config.data.batch_size), crop_samples=int(config.data.crop_samples),
              normalize=bool(config.data.normalize), dataset=config.data.name,
              split=config.data.split, seed=int(config.seed))


def build(config, cache_dir, *, num_batches, batches_per_shard=16, dtype="float16",
          source=None):
  """Writes the teacher targets of the run's first `num_batches` batches to `cache_dir`.

  Args:
    config: a distillation config (its data, seed and distill.teacher / target_layers).
    cache_dir: output directory (created; existing shards are overwritten).
    num_batches: global batches to cache (one epoch of the cached run).
    batches_per_shard: batches per .npz file.
    dtype: "float16" or "float32" storage of the targets.
    source: optional data source for the loader (tests).

  Returns:
    meta dict: counts, bytes on disk and seconds spent (teacher forward, total).
  """
  if jax.process_count() != 1:
    raise ValueError("distill.cache: building a cache runs in one process.")
  if dtype not in ("float16", "float32"):
    raise ValueError(f"cache dtype={dtype!r}; choose float16 or float32.")
  mesh = partitioning.make_mesh(config.mesh)
  rules = partitioning.logical_axis_rules(config.mesh.get("rules", ()))
  teacher = teacher_lib.load_teacher(config.distill.teacher, layers=config.distill.target_layers,
                                     mesh=mesh, rules=rules, dtype=config.distill.teacher_dtype)
  sharding = partitioning.batch_sharding(mesh)

  def forward(params, batch):
    with partitioning.activation_rules(mesh, rules):
      return teacher.targets(params, batch)

  fn = jax.jit(forward, in_shardings=(teacher.shardings, sharding), out_shardings=sharding)
  loader = pipeline.make_train_loader(config.data, seed=config.seed, source=source)
  os.makedirs(cache_dir, exist_ok=True)
  start, teacher_sec, nbytes, shards, buf = time.perf_counter(), 0.0, 0, [], []
  try:
    for i in range(num_batches):
      local = next(loader)
      batch = partitioning.make_global_batch(
          {k: local[k] for k in ("audio", "valid")}, sharding)
      t0 = time.perf_counter()
      targets = np.asarray(jax.device_get(fn(teacher.params, batch)))
      if i:  # The first call compiles.
        teacher_sec += time.perf_counter() - t0
      buf.append(dict({k: np.asarray(local[k]) for k in KEYS[:-1]},
                      targets=targets.astype(dtype)))
      if len(buf) == batches_per_shard or i == num_batches - 1:
        path = os.path.join(cache_dir, f"shard-{len(shards):05d}.npz")
        np.savez(path, **{k: np.stack([b[k] for b in buf]) for k in KEYS})
        nbytes += os.path.getsize(path)
        shards.append(dict(file=os.path.basename(path), num_batches=len(buf)))
        buf = []
  finally:
    loader.close()
  meta = dict(_meta_of(config), num_batches=num_batches, shards=shards, dtype=dtype,
              bytes=nbytes, bytes_per_batch=nbytes / max(num_batches, 1),
              teacher_sec_per_batch=teacher_sec / max(num_batches - 1, 1),
              total_sec=time.perf_counter() - start)
  with open(os.path.join(cache_dir, "meta.json"), "w") as f:
    json.dump(meta, f, indent=2)
  return meta


class CachedLoader:
  """Batches of a teacher-output cache, with the pipeline loader's interface and state.

  State {"step": t}: batch t is a pure function of (cache, seed, t), so a resumed run reads the
  same batches as an uninterrupted one.
  """

  def __init__(self, cache_dir, *, config):
    path = os.path.join(cache_dir, "meta.json")
    if not os.path.isfile(path):
      raise FileNotFoundError(f"distill.cache_dir={cache_dir!r}: no meta.json; build the cache "
                              "with `python -m jaxssl.distill.cache`.")
    with open(path) as f:
      self.meta = json.load(f)
    want = _meta_of(config)
    diff = {k: (self.meta.get(k), v) for k, v in want.items()
            if k != "seed" and self.meta.get(k) != v}
    if diff:
      raise ValueError(f"distill.cache_dir={cache_dir!r} was built for another setup: "
                       f"(cached, config) differ in {diff}.")
    self.cache_dir = cache_dir
    self.seed = int(config.seed)
    self.shards = self.meta["shards"]
    self.num_batches = sum(s["num_batches"] for s in self.shards)
    self._step = 0
    self._loaded = (None, None)

  def _order(self, epoch):
    """(shard, batch-in-shard) pairs of one epoch, shard by shard."""
    rng = np.random.default_rng([self.seed, 5, epoch])
    out = []
    for s in rng.permutation(len(self.shards)):
      out += [(int(s), int(j)) for j in rng.permutation(self.shards[s]["num_batches"])]
    return out

  def _shard(self, index):
    if self._loaded[0] != index:
      with np.load(os.path.join(self.cache_dir, self.shards[index]["file"])) as z:
        self._loaded = (index, {k: z[k] for k in KEYS})
    return self._loaded[1]

  def __iter__(self):
    return self

  def __next__(self):
    epoch, i = divmod(self._step, self.num_batches)
    shard, j = self._order(epoch)[i]
    data = self._shard(shard)
    self._step += 1
    batch = {k: data[k][j] for k in KEYS}
    batch["targets"] = batch["targets"].astype(np.float32)
    return batch

  @property
  def step(self):
    return self._step

  def get_state(self):
    return {"step": self._step}

  def set_state(self, state):
    self._step = int(state["step"])

  def close(self):
    self._loaded = (None, None)


def main(argv):
  del argv
  f = flags.FLAGS
  if f.config is None or not f.cache_dir:
    raise app.UsageError("--config and --cache_dir are required.")
  meta = build(f.config, f.cache_dir, num_batches=f.num_batches,
               batches_per_shard=f.batches_per_shard, dtype=f.dtype)
  print(json.dumps({k: v for k, v in meta.items() if k != "shards"}))


if __name__ == "__main__":
  # Defined here, not at import: the trainer imports this module under jaxssl.main's flags.
  config_flags.DEFINE_config_file("config", None, "Distillation config file.")
  flags.DEFINE_string("cache_dir", None, "Where the shards go.")
  flags.DEFINE_integer("num_batches", 100, "Global batches to cache.")
  flags.DEFINE_integer("batches_per_shard", 16, "Batches per shard file.")
  flags.DEFINE_enum("dtype", "float16", ["float16", "float32"], "Target storage dtype.")
  cli.run(main)
