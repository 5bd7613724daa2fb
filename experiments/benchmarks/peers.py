"""HF transformers PyTorch peers of jaxssl configs, for the speed comparisons.

`peer_config` maps a jaxssl config (dimensions, dropouts, LayerDrop, masking, quantizer,
negatives) to a `transformers` Wav2Vec2Config / HubertConfig, so the peer has the same parameter
count (tests/test_benchmarks.py checks it); `TorchStep` is one CPU training step or inference
call, `TorchGpuStep` the bf16-autocast CUDA training step. torch and transformers are optional
benchmark dependencies (`pip install torch==2.13.0 transformers==5.24.0`), imported lazily.
Wav2vec 2.0: https://arxiv.org/abs/2006.11477 ; HuBERT: https://arxiv.org/abs/2106.07447 .

PyTorch's OpenMP threads spin-wait by default. On the shared benchmark machine (load 10-20 on
2 cores) that cost the wav2vec 2.0 BASE step 15.4 s of CPU time and 72 s wall instead of 5.3 s and
21 s with OMP_WAIT_POLICY=PASSIVE, so passive waiting is set (unless the environment says
otherwise) before torch is imported: the peer runs at its best here.
"""
import os

from experiments.benchmarks import harness
from jaxssl.models import variants

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def peer_config(config, transformers):
  """A transformers Wav2Vec2Config / HubertConfig with the jaxssl config's dimensions and
  training settings (dropouts, LayerDrop, masking, quantizer, negatives)."""
  m, v = config.model, variants.get(config.model.variant)
  common = dict(
      hidden_size=v.embed_dim, num_hidden_layers=v.num_layers, num_attention_heads=v.num_heads,
      intermediate_size=v.mlp_dim, conv_dim=(v.conv_dim,) * len(variants.CONV_KERNELS),
      conv_kernel=variants.CONV_KERNELS, conv_stride=variants.CONV_STRIDES,
      conv_bias=m.frontend.conv_bias,
      feat_extract_norm="layer" if m.frontend.mode == "layer_norm" else "group",
      do_stable_layer_norm=m.layer_norm_first, num_conv_pos_embeddings=v.pos_conv_kernel,
      num_conv_pos_embedding_groups=v.pos_conv_groups, hidden_dropout=m.dropout_rate,
      attention_dropout=m.attention_dropout_rate, activation_dropout=m.activation_dropout_rate,
      feat_proj_dropout=m.input_dropout_rate, layerdrop=m.layerdrop_rate,
      mask_time_prob=config.masking.prob, mask_time_length=config.masking.span,
      mask_time_min_masks=config.masking.min_spans, hidden_act="gelu")
  if config.objective.name == "wav2vec2":
    final_dim = m.final_dim or v.final_dim
    return transformers.Wav2Vec2Config(
        **common, feat_quantizer_dropout=m.feature_dropout_rate,
        num_codevector_groups=config.quantizer.num_groups,
        num_codevectors_per_group=config.quantizer.num_vars, codevector_dim=final_dim,
        proj_codevector_dim=final_dim, num_negatives=config.objective.num_negatives,
        contrastive_logits_temperature=config.objective.logit_temp,
        diversity_loss_weight=config.objective.diversity_weight)
  return transformers.HubertConfig(**common)


class TorchStep:
  """One PyTorch training step (or inference call) of the HF peer of a jaxssl config."""

  def __init__(self, config, *, kind, seed=0):
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    from transformers.models.wav2vec2 import modeling_wav2vec2 as hf  # pylint: disable=g-import-not-at-top
    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count())
    self.torch, self.hf, self.kind, self.config = torch, hf, kind, config
    b, s = config.data.batch_size, config.data.crop_samples
    self.audio = torch.from_numpy(harness.synthetic_batch(config, seed)["audio"])
    self.frames = variants.frames_for(s)
    cfg = peer_config(config, transformers)
    if kind == "infer":
      encoder = (transformers.HubertModel if config.objective.name == "hubert"
                 else transformers.Wav2Vec2Model)
      self.model = encoder(cfg).eval()
      self.params = list(self.model.parameters())
      return
    if kind == "w2v2":
      self.model = transformers.Wav2Vec2ForPreTraining(cfg).train()
      self.params = list(self.model.parameters())
    else:
      self.model = transformers.HubertModel(cfg).train()
      k = config.objective.num_clusters + config.objective.get("num_extra_embeddings", 0)
      self.head = torch.nn.Linear(cfg.hidden_size, k)
      self.labels = torch.randint(0, config.objective.num_clusters, (b, self.frames))
      self.params = list(self.model.parameters()) + list(self.head.parameters())
    o = config.optim
    self.opt = torch.optim.AdamW(self.params, lr=o.lr, betas=(o.b1, o.b2), eps=o.eps,
                                 weight_decay=o.weight_decay)
    self.run()  # Warm-up.

  @property
  def num_params(self):
    return int(sum(p.numel() for p in self.params))

  def run(self):
    torch, hf, c = self.torch, self.hf, self.config
    if self.kind == "infer":
      with torch.inference_mode():
        self.model(self.audio)
      return
    shape = (self.audio.shape[0], self.frames)
    mask = hf._compute_mask_indices(shape, c.masking.prob, c.masking.span,
                                    min_masks=c.masking.min_spans)
    if self.kind == "w2v2":
      neg = hf._sample_negative_indices(shape, c.objective.num_negatives, mask)
      loss = self.model(self.audio, mask_time_indices=torch.from_numpy(mask),
                        sampled_negative_indices=torch.from_numpy(neg)).loss
    else:
      mask = torch.from_numpy(mask)
      hidden = self.model(self.audio, mask_time_indices=mask).last_hidden_state
      loss = torch.nn.functional.cross_entropy(self.head(hidden[mask]), self.labels[mask])
    loss.backward()
    self.opt.step()
    self.opt.zero_grad(set_to_none=True)


def torch_cuda():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return torch if torch.cuda.is_available() else None


class TorchGpuStep:
  """HF Wav2Vec2ForPreTraining step on CUDA under bf16 autocast (the PyTorch recipe's AMP)."""

  def __init__(self, config, torch):
    import transformers  # pylint: disable=g-import-not-at-top
    from transformers.models.wav2vec2 import modeling_wav2vec2 as hf  # pylint: disable=g-import-not-at-top
    self.torch, self.hf, self.config = torch, hf, config
    cfg = peer_config(config, transformers)
    self.model = transformers.Wav2Vec2ForPreTraining(cfg).cuda().train()
    o = config.optim
    self.opt = torch.optim.AdamW(self.model.parameters(), lr=o.lr, betas=(o.b1, o.b2),
                                 eps=o.eps, weight_decay=o.weight_decay, fused=True)
    host = harness.synthetic_batch(config)["audio"]
    self.audio = torch.from_numpy(host).cuda()
    self.shape = (host.shape[0], int(self.model._get_feat_extract_output_lengths(host.shape[1])))
    self.run()

  def run(self):
    torch, c = self.torch, self.config
    mask = self.hf._compute_mask_indices(self.shape, c.masking.prob, c.masking.span,
                                         min_masks=c.masking.min_spans)
    neg = self.hf._sample_negative_indices(self.shape, c.objective.num_negatives, mask)
    with torch.autocast("cuda", dtype=torch.bfloat16):
      loss = self.model(self.audio, mask_time_indices=torch.from_numpy(mask).cuda(),
                        sampled_negative_indices=torch.from_numpy(neg).cuda()).loss
    loss.backward()
    self.opt.step()
    self.opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
