"""Tensor files read without running code from them: safetensors, weights-only PyTorch pickles.

safetensors (https://github.com/huggingface/safetensors) files are written with the library's
`safetensors.numpy`; they are read here with numpy (an 8-byte header length, a JSON header of
{name: {dtype, shape, data_offsets}} and the raw data, memory-mapped), so that every bound is
checked and a truncated download names the first tensor it cuts, where the library says only
"incomplete metadata, file not fully covered". PyTorch `.bin` / `.pt`
files go through `torch.load(weights_only=True)`, PyTorch's restricted unpickler (tensors,
containers and primitives only). fairseq checkpoints also pickle their config objects
(`argparse.Namespace`, omegaconf containers, `Dictionary`s): those classes are replaced by inert
`Stub`s that only record their pickled state, so nothing from fairseq or omegaconf is imported or
run. wav2vec 2.0: https://arxiv.org/abs/2006.11477
"""
import json
import math
import os
import pickle
import re
import zipfile

import ml_dtypes
import numpy as np
from safetensors import numpy as safetensors_numpy

from jaxssl import extras
from jaxssl.interop import ConversionError

# safetensors dtype codes <-> numpy dtypes (little-endian, as the format specifies).
_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
_CODES = {v: k for k, v in _DTYPES.items()}


def read_safetensors(path):
  """Reads every tensor of a .safetensors file.

  Args:
    path: the file.

  Returns:
    dict name -> numpy array (read-only views of a memory map; copy before writing).

  Raises:
    ConversionError: missing, truncated or malformed file, naming the file and the tensor.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ConversionError(f"{path}: no such file.")
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    head = f.read(8)
    if len(head) < 8:
      raise ConversionError(f"{path}: truncated safetensors file ({size} bytes, no header).")
    n = int.from_bytes(head, "little")
    if n > size - 8:
      raise ConversionError(f"{path}: truncated or not a safetensors file (the header claims "
                            f"{n} bytes, the file holds {size - 8} after the length).")
    try:
      header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise ConversionError(f"{path}: corrupt safetensors header ({e}).") from None
  if not isinstance(header, dict):
    raise ConversionError(f"{path}: corrupt safetensors header (not a JSON object).")
  start, data_size = 8 + n, size - 8 - n
  data = (np.memmap(path, np.uint8, mode="r", offset=start, shape=(data_size,)) if data_size
          else np.zeros(0, np.uint8))
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    try:
      dtype, shape = _DTYPES.get(info["dtype"]), tuple(int(d) for d in info["shape"])
      begin, end = (int(o) for o in info["data_offsets"])
    except (KeyError, TypeError, ValueError):
      raise ConversionError(
          f"{path}: malformed header entry for tensor {name!r}: {info}.") from None
    if dtype is None:
      raise ConversionError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']!r}.")
    if end > data_size:
      raise ConversionError(f"{path}: truncated: tensor {name!r} needs bytes {begin}..{end} of "
                            f"the data section, which holds {data_size}.")
    if not 0 <= begin <= end or end - begin != math.prod(shape) * dtype.itemsize:
      raise ConversionError(f"{path}: tensor {name!r}: offsets {begin}..{end} do not fit shape "
                            f"{shape} of {info['dtype']}.")
    out[name] = data[begin:end].view(dtype).reshape(shape)
  return out


def write_safetensors(path, tensors, metadata=None):
  """Writes a .safetensors file (atomically: a temporary file renamed into place).

  Args:
    path: the output file.
    tensors: dict name -> numpy array.
    metadata: optional dict str -> str (transformers requires {"format": "pt"}).
  """
  arrays = {}
  for name in sorted(tensors):
    a = np.ascontiguousarray(tensors[name])
    a = a.astype(a.dtype.newbyteorder("<")) if a.dtype.byteorder == ">" else a
    if a.dtype not in _CODES:
      raise ConversionError(f"tensor {name!r}: dtype {a.dtype} has no safetensors code.")
    arrays[name] = a
  tmp = f"{path}.tmp"
  safetensors_numpy.save_file(arrays, tmp, metadata={str(k): str(v) for k, v in
                                                     (metadata or {}).items()} or None)
  os.replace(tmp, path)


class Stub:
  """Stands in for a class a checkpoint pickles (fairseq's config / dictionary objects).

  It records the constructor arguments and the pickled state and runs nothing else; `plain`
  turns a tree of stubs back into dicts and lists.
  """
  name = "?"

  def __init__(self, *args, **kwargs):
    self.args, self.kwargs, self.state = args, kwargs, None

  def __setstate__(self, state):
    self.state = state

  def __repr__(self):
    return f"Stub({self.name})"


def _stub(name):
  return type("Stub", (Stub,), {"name": name})


_UNSAFE = re.compile(r"GLOBAL (\S+) was not an allowed global")


def read_torch(path):
  """Loads a PyTorch pickle (`.bin`, `.pt`) with weights-only unpickling; tensors become numpy.

  Args:
    path: a file written by `torch.save` (zip or legacy format).

  Returns:
    The pickled object with tensors as numpy arrays (bfloat16 and half as float32) and classes
    outside PyTorch's allowlist as `Stub`s.

  Raises:
    ConversionError: missing, truncated or corrupt file, torch not installed, or a global that
      weights-only loading refuses outright (blocked modules).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ConversionError(f"{path}: no such file.")
  try:
    torch = extras.require("torch", f"{path}: reading a PyTorch file")
  except extras.MissingExtra as e:
    raise ConversionError(f"{e} A transformers folder with model.safetensors needs no "
                          "extra.") from None
  is_zip = zipfile.is_zipfile(path)
  stubs = {}
  if is_zip:
    try:
      stubs = {n: _stub(n) for n in torch.serialization.get_unsafe_globals_in_checkpoint(path)}
    except Exception as e:  # pylint: disable=broad-except
      raise _corrupt(path, e) from None
  for _ in range(64):  # Legacy (pre-zip) files reveal their globals one failed load at a time.
    try:
      with torch.serialization.safe_globals([(c, n) for n, c in stubs.items()]):
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
      return _to_numpy(obj, torch)
    except pickle.UnpicklingError as e:
      match = _UNSAFE.search(str(e))
      if not match or match.group(1) in stubs:
        raise ConversionError(
            f"{path}: refused by weights-only loading ({_first_line(e)}).") from None
      stubs[match.group(1)] = _stub(match.group(1))
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
      raise _corrupt(path, e) from None
  raise ConversionError(f"{path}: too many non-tensor classes pickled in it.")


def _corrupt(path, e):
  return ConversionError(f"{path}: truncated or corrupt PyTorch file ({_first_line(e)}).")


def _first_line(e):
  return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _to_numpy(obj, torch):
  if isinstance(obj, torch.Tensor):
    t = obj.detach().cpu()
    if t.dtype in (torch.bfloat16, torch.float16):
      t = t.float()
    return t.numpy()
  if isinstance(obj, dict):
    return {k: _to_numpy(v, torch) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_to_numpy(v, torch) for v in obj)
  return obj


def plain(obj):
  """Stubs (argparse.Namespace, omegaconf DictConfig / nodes, enums) -> plain dicts and values."""
  if isinstance(obj, Stub):
    state = obj.state
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
      state = state[0]  # (dict state, slot state).
    if isinstance(state, dict):
      if "_content" in state:  # omegaconf DictConfig / ListConfig.
        return plain(state["_content"])
      if "_val" in state:  # omegaconf value node.
        return plain(state["_val"])
      return {k: plain(v) for k, v in state.items()}
    if len(obj.args) == 1:  # An enum member or a one-argument constructor.
      return plain(obj.args[0])
    return [plain(a) for a in obj.args] if obj.args else None
  if isinstance(obj, dict):
    return {k: plain(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [plain(v) for v in obj]
  return obj
