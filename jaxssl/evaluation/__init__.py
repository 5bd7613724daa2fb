"""SUPERB-style evaluation: frozen-upstream probes, CTC fine-tuning and baselines.

`upstreams` loads what is evaluated (checkpoints, random_init, mfcc / fbank), `tasks` defines the
probe tasks and their targets, `probes` the weighted-layer-sum probes and their training step,
`metrics` PER / WER / CER / accuracy, `evaluate` one probe run and the pretraining `evals` hook,
`ctc` whole-model CTC fine-tuning. `python -m jaxssl.evaluate` is the command line.
SUPERB: https://arxiv.org/abs/2105.01051
"""
