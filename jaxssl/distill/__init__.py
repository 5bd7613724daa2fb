"""Compression by distillation: DistilHuBERT students, LightHuBERT supernets, teacher caches.

student.py (architectures), objective.py (DistilHuBERT's loss, teacher hooks, init from the
teacher; registers objective "distill" on import), lighthubert.py (LightHuBERT's objective,
registered as "lighthubert"), masked.py (the supernet run under a subnet's masks), supernet.py
(search spaces, sampling, the reference's slicing, extraction), extract_subnet.py (its CLI),
teacher.py (a frozen upstream in the step), cache.py (teacher targets on disk, with a CLI). The
engine (training/engine.py) trains them like any other objective.
"""
from jaxssl.distill import lighthubert  # pylint: disable=unused-import (registers "lighthubert")
from jaxssl.distill import objective  # pylint: disable=unused-import (registers "distill")
