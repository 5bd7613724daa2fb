"""One objective's demo recipe at a step count, with the experiment's probes (run.py passes it).

  python -m jaxssl.main --config=experiments/2026-12-06-objectives-per-flop/recipe.py:\
recipe=data2vec2,steps=850,phone_every=283 --workdir=...

Everything but `total_steps`, `seed` and the `evals` section is the recipe's demo config, so the
learning-rate schedule spans the run. Probes (configs/probes `pretraining_eval`: 500 steps of a
linear head on 384 training utterances, lr 1e-2): phone PER every `phone_every` steps; at the
last step also speaker ID on the training speakers (`speaker`), on the dev + test speakers that
pretraining never heard (`speaker_unseen`) and language ID (`language`). `final=False` leaves
the last three out (HuBERT's first iteration).
"""
from configs import common
from configs import probes
from jaxssl import cli

RECIPES = {
    "wav2vec2": ("configs/wav2vec2/demo.py", {}),
    "hubert_it1": ("configs/hubert/demo.py:iteration=1", {}),
    "hubert_it2": ("configs/hubert/demo.py:iteration=2", {}),
    "melhubert": ("configs/hubert/melhubert.py:demo", {}),
    "data2vec2": ("configs/data2vec2/demo.py", {}),
    "best_rq_conformer": ("configs/best_rq/demo.py", {}),
    "best_rq_transformer": ("configs/best_rq/demo.py", {"block": "transformer"}),
}


def get_config(arg=None):
  arg = common.parse_arg(arg, recipe="", steps=0, phone_every=0, final=True, seed=0)
  if arg.recipe not in RECIPES or arg.steps <= 0 or arg.phone_every <= 0:
    raise ValueError(f"recipe.py needs recipe= (one of {sorted(RECIPES)}), steps > 0 and "
                     f"phone_every > 0; got {arg}.")
  spec, model = RECIPES[arg.recipe]
  c = cli.load_config_file(spec)
  with c.unlocked():
    c.seed = arg.seed
    c.total_steps = arg.steps
    c.model.update(model)
    c.ckpt.every_steps = max(arg.steps // 4, 1)
    c.evals = dict(phone=probes.pretraining_eval("phone", every_steps=arg.phone_every))
    if arg.final:
      for name, task, speakers in (("speaker", "speaker", "seen"),
                                   ("speaker_unseen", "speaker", "unseen"),
                                   ("language", "language", "seen")):
        c.evals[name] = probes.pretraining_eval(task, every_steps=arg.steps, speakers=speakers)
  return c.lock()
