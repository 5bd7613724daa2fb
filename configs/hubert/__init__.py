"""HuBERT-family configs: shared sections (https://arxiv.org/abs/2106.07447).

`labels_and_objective` sets the data labels, masking and objective sections of a HuBERT recipe
with fairseq's values (examples/hubert/config/pretrain/*.yaml): mask_prob 0.8, spans of 10, cosine
logits / 0.1 over all clusters, masked frames only (w_m 1, w_u 0), feature penalty 10.
"""
import ml_collections as mlc

# fairseq's Dictionary prepends <s>, <pad>, </s>, <unk>: four label embeddings that no target
# uses but that sit in the softmax and in the released parameter counts (K = 504 for 500 units).
FAIRSEQ_DICT_SPECIALS = 4


def labels_and_objective(c, *, labels, label_rate, num_clusters, num_extra_embeddings=0,
                         feature_penalty_weight=10.0):
  """Sets c.data.labels / label_rate and the masking and objective sections."""
  c.data.labels = labels            # Label set name (beside the dataset) or directory.
  c.data.label_rate = label_rate    # Hz: 100 (MFCC units) or 50 (units of a model layer).
  c.masking = mlc.ConfigDict(dict(prob=0.8, span=10, min_spans=2))
  c.objective = mlc.ConfigDict(dict(
      name="hubert",
      num_clusters=num_clusters,    # K per label set (an int, or a tuple for several sets).
      num_extra_embeddings=num_extra_embeddings,
      untie_final_proj=True,        # One final_dim slice of final_proj per label set.
      logit_temp=0.1,
      masked_weight=1.0,            # fairseq pred_masked_weight.
      unmasked_weight=0.0,          # fairseq pred_nomask_weight.
      feature_penalty_weight=feature_penalty_weight))
