"""Checkpoint interoperability with HF transformers and fairseq (wav2vec 2.0, HuBERT).

`files` reads and writes tensor files without executing code from them (safetensors, weights-only
PyTorch pickles), `layout` maps parameter names and layouts between the three formats, `hf` and
`fairseq` translate their configs, and `native` writes and reads jaxssl checkpoints.
`jaxssl.convert` is the command line. wav2vec 2.0: https://arxiv.org/abs/2006.11477 ,
HuBERT: https://arxiv.org/abs/2106.07447
"""


class ConversionError(ValueError):
  """A checkpoint cannot be converted; the message names the file, key or config field."""
