"""BEST-RQ configs: shared sections (Chiu et al. 2022, https://arxiv.org/abs/2202.01855).

Values from SpeechBrain's recipe (speechbrain/speechbrain commit 9c826ef,
recipes/LibriSpeech/self-supervised-learning/BEST-RQ/hparams/BEST-RQ.yaml; see
jaxssl/objectives/best_rq.py for the code each one was checked in).
"""
import ml_collections as mlc

from configs import common

# BEST-RQ.yaml: d_model 576, nhead 8, num_encoder_layers 12, d_ffn 2048. The conv positional
# embedding is jaxssl's encoder's (wav2vec 2.0's kernel 128, 16 groups): SpeechBrain's
# RelPosMHAXL relative attention has no jaxssl mixer.
BASE_DIMS = dict(num_layers=12, embed_dim=576, mlp_dim=2048, num_heads=8)

# The one line that picks the encoder block: SpeechBrain's pre-norm Conformer
# (jaxssl/models/conformer.py); "transformer" gives a pre-LN Transformer instead.
BLOCK = "conformer"


def model(variant, **overrides):
  """The `model` section: fbank_conv frontend -> Linear -> Conformer (BEST-RQ.yaml's values)."""
  m = common.wav2vec2_model(
      variant,
      # CNN: ConvolutionFrontEnd(num_blocks 2, out_channels (128, 32), kernel_sizes (3, 3),
      # strides (2, 2)) on n_mels 80 fbank, frames stacked by pad_to_divisible_by 4.
      frontend=dict(name="fbank_conv", num_mels=80, stack=4, channels=(128, 32), kernel_size=3,
                    dropout_rate=0.1),
      feature_layer_norm=False,   # TransformerASR's custom_src_module: Linear + Dropout only.
      mask_token="zeros",         # No mask embedding: masked fbank frames become noise instead.
      block=BLOCK,
      conformer=dict(kernel_size=31, activation="gelu"),  # activation / conformer_activation.
      layer_norm_first=True,      # normalize_before: True.
      dropout_rate=0.1,           # transformer_dropout 0.1, everywhere SpeechBrain uses it:
      attention_dropout_rate=0.1,
      activation_dropout_rate=0.1,
      input_dropout_rate=0.1,     # the Dropout after the 640 -> d Linear.
      feature_dropout_rate=0.0,   # (wav2vec 2.0's quantizer input; unused here.)
      layerdrop_rate=0.0)         # encoder_layerdrop 0.0.
  m.update(overrides)
  return m


def sections(c, *, num_codes=8192):
  """Sets the `masking` and `objective` sections (BEST-RQ.yaml's values)."""
  # mask_length 4 fbank frames (one 40 ms frame), mask_prob 0.15 per start (BESTRQ.py).
  c.masking = mlc.ConfigDict(dict(prob=0.15, span=4, min_spans=1))
  c.objective = mlc.ConfigDict(dict(
      name="best_rq",
      input_dim=320,        # p_input: 4 stacked 80-d frames.
      code_dim=16,          # cb_dim.
      num_codes=num_codes,  # cb_vocab 8192.
      quantizer_seed=1000,  # The quantizer is a function of this seed only (yaml seed: 1000).
      noise_mean=0.0,       # noise_mean.
      noise_std=0.1))       # noise_std.
