"""Ladder side-tuning: no gradient reaches the backbone; the side network's width and size.

(That frozen parameters stay bitwise unchanged is the optimizer's doing, tested for LoRA and
AdaLoRA; the ladder uses the same multi_transform.)
"""
import jax
import numpy as np
import optax

from jaxssl.peft import lora
from tests.peft import helpers


def test_backbone_gets_no_gradient_through_the_ladder():
  objective = helpers.peft_objective_for("ladder")
  params = helpers.init(objective)
  b = helpers.batch()
  # The ladder model's own loss, without the PEFT objective's stop_gradient on the parameters:
  # the detached hidden states alone must cut the backbone out of the backward pass.
  ladder_loss = lambda p: objective.base.loss(p, b, jax.random.PRNGKey(0), step=0)[0]  # pylint: disable=unnecessary-lambda-assignment
  grads = jax.jit(jax.grad(ladder_loss))(params)
  norm = lambda t: float(optax.tree.norm(t))  # pylint: disable=unnecessary-lambda-assignment
  assert norm(grads["speech_encoder"]) == 0.0
  assert all(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads["peft"]["up"]))
  assert norm(grads["peft"]) > 0 and norm(grads["ctc_proj"]) > 0
  # Every ladder connection carries gradient into its down-projection.
  downs = [k for k in grads["peft"] if k.startswith("down_")]
  assert len(downs) == 3 and all(norm(grads["peft"][k]) > 0 for k in downs)
  # Side width D / 8: the runlocal model is 32 wide, so 4.
  assert params["peft"]["down_01"]["dense"]["kernel"].shape == (32, 4)
  assert lora.num_params(params["peft"]) < lora.num_params(params["speech_encoder"]) / 10

