"""data2vec 2.0 configs: shared sections (Baevski et al. 2022, https://arxiv.org/abs/2212.07525).

Values from fairseq examples/data2vec/config/v2/base_audio_only_task.yaml and the defaults of
examples/data2vec/models/data2vec2.py (Data2VecMultiConfig), models/modalities/base.py
(D2vModalityConfig), models/modalities/audio.py (D2vAudioConfig) and modules.py
(D2vDecoderConfig); jaxssl/objectives/data2vec2.py says where each is used.
"""
import ml_collections as mlc

from configs import common


def model(variant, **overrides):
  """The `model` section: wav2vec 2.0 CNN -> LN -> Linear -> 5 conv positional layers -> post-LN
  Transformer with ALiBi (base_audio_only_task.yaml `model` / `modalities.audio`)."""
  m = common.wav2vec2_model(
      variant,
      # D2vAudioConfig extractor_mode "layer_norm"; AudioEncoder passes conv_bias=False;
      # local_grad_mult 1.0 (D2vModalityConfig).
      frontend=dict(name="cnn", mode="layer_norm", conv_bias=False, feature_grad_mult=1.0),
      layer_norm_first=False,     # Data2VecMultiConfig layer_norm_first False: post-LN AltBlock.
      dropout_rate=0.1,           # encoder_dropout, post_mlp_drop and prenet_dropout: 0.1.
      attention_dropout_rate=0.1, # attention_dropout.
      activation_dropout_rate=0.0,  # activation_dropout.
      input_dropout_rate=0.0,     # dropout_input (unused by data2vec2: no wav2vec 2.0 input drop).
      feature_dropout_rate=0.0,
      layerdrop_rate=0.05,        # layerdrop.
  )
  # conv_pos_depth 5, conv_pos_width 95: 5 convs of kernel max(3, 95 // 5) = 19, groups from
  # the variant (conv_pos_groups 16 for base).
  m.pos_conv = dict(depth=5, width=95)
  m.alibi = True                  # use_alibi_encoder, learned_alibi_scale(_per_head), scale 1.
  m.update(overrides)
  return m


def sections(c, *, clone_batch=8, top_k=8, ema=(0.999, 0.99999, 75_000)):
  """The `masking` and `objective` sections (base_audio_only_task.yaml)."""
  # mask_prob 0.5, mask_length 5, min_masks 1 (compute_mask in modalities/base.py).
  c.masking = dict(prob=0.5, span=5, min_spans=1)
  c.objective = mlc.ConfigDict(dict(
      name="data2vec2",
      clone_batch=clone_batch,          # Masks (student copies) per utterance.
      average_top_k_layers=top_k,       # Targets: mean of the top-K instance-normed FFN outputs.
      ema=dict(decay=ema[0], end_decay=ema[1], anneal_end_step=ema[2]),
      ema_local_encoder=False,          # The audio recipe's: the teacher reads the student's CNN.
      loss_scale=0.0,                   # loss_scale null: 1 / sqrt(embed_dim).
      mask_noise_std=0.01,              # The decoder's mask tokens: N(0, 0.01).
      # D2vDecoderConfig as overridden by the yaml: 4 layers of 384, kernel 7, 16 groups.
      decoder=dict(dim=384, kernel_size=7, groups=16, num_layers=4, input_dropout=0.1),
  ))


# fairseq gives no weight decay to 1-D params, biases and alibi_scale (Data2VecMultiModel
# optim_overrides weight_decay_scale 0).
NO_DECAY = r".*/(bias|scale|alibi_scale)"
