"""What a checkpoint must prove before a run trusts it: array fingerprints and the tree's layout.

Every save writes, beside the state, a manifest (`manifest(state, data_state)`): each array's
shape, dtype and fingerprint, the data-iterator state and the number of processes. A restore
recomputes the fingerprints of what it read and compares (`problems`); any difference means the
files changed after the save completed (a flipped byte, a truncated or swapped file).

The fingerprint of an array is sum_i w_i * u_i mod 2^32 over its elements u_i read as unsigned
integers of their own width, with odd weights w_i = 2i + 1. Changing any single element changes
it (an odd weight times a non-zero difference below 2^32 is never 0 mod 2^32); several changes
cancel with probability ~2^-32. It is one jitted reduction on the arrays where they live (sharded
arrays reduce across their shards), so a save transfers 4 bytes per array, not the state.
"""
import jax
import jax.numpy as jnp
import numpy as np

_UNSIGNED = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}  # 8 bytes: 2 words.
FORMAT = 1


def _words(x):
  """An array's elements as uint32 words (8-byte types split in two)."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  u = jax.lax.bitcast_convert_type(x, _UNSIGNED[x.dtype.itemsize])
  return u.reshape(-1).astype(jnp.uint32)


@jax.jit
def _fingerprints(leaves):
  out = []
  for x in leaves:
    u = _words(x)
    weights = jnp.arange(u.size, dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)
    out.append(jnp.sum(u * weights, dtype=jnp.uint32))
  return out


def _paths(tree):
  return ["/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in p)
          for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def fingerprints(tree):
  """{path: int} fingerprint of every array leaf of `tree` (a host round trip of 4 B each)."""
  leaves = jax.tree.leaves(tree)
  values = jax.device_get(_fingerprints(leaves)) if leaves else []
  return {p: int(v) for p, v in zip(_paths(tree), values)}


def _dtype_name(dtype):
  return "key" if jnp.issubdtype(dtype, jax.dtypes.prng_key) else np.dtype(dtype).name


def layout(tree):
  """{path: "dtype[shape]"} of every leaf (arrays or ShapeDtypeStructs)."""
  return {p: f"{_dtype_name(x.dtype)}{list(x.shape)}"
          for p, x in zip(_paths(tree), jax.tree.leaves(tree))}


def manifest(state, data_state):
  """The JSON-able record saved with a checkpoint."""
  return dict(format=FORMAT, layout=layout(state), fingerprints=fingerprints(state),
              data=data_state, process_count=jax.process_count())


def _params_first(path):
  """Sort key: params before optimizer state (the names a reader recognises), then by name."""
  return (not path.startswith("params/"), path)


def layout_difference(saved, expected):
  """One line naming how a saved layout differs from the run's, or "" if it does not."""
  missing = sorted(set(expected) - set(saved))
  extra = sorted(set(saved) - set(expected))
  changed = sorted((p for p in set(saved) & set(expected) if saved[p] != expected[p]),
                   key=_params_first)
  parts = []
  if changed:
    parts.append(f"{len(changed)} arrays differ, e.g. {changed[0]}: saved {saved[changed[0]]}, "
                 f"this config {expected[changed[0]]}")
  if missing:
    parts.append(f"{len(missing)} arrays of this config are not saved, e.g. {missing[0]}")
  if extra:
    parts.append(f"{len(extra)} saved arrays are not in this config, e.g. {extra[0]}")
  return "; ".join(parts)


def problems(saved_manifest, state, data_state):
  """"" when `state` / `data_state` (just restored) match the manifest, else one line why."""
  now = fingerprints(state)
  bad = sorted((p for p, v in saved_manifest["fingerprints"].items() if now.get(p) != v),
               key=_params_first)
  if bad:
    return (f"{len(bad)} of {len(now)} arrays do not match their checksums "
            f"(e.g. {bad[0]})")
  if saved_manifest.get("data") != data_state:
    return f"the data-iterator state {data_state} does not match {saved_manifest.get('data')}"
  return ""
