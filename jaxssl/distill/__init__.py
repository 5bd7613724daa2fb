"""Compression by distillation: DistilHuBERT students, LightHuBERT supernets, teacher caches.

student.py (architectures), objective.py (loss, teacher hooks, init from the teacher; registers
objective "distill" on import), teacher.py (a frozen upstream in the step), supernet.py (search
spaces, slicing, extraction), extract_subnet.py (its CLI), cache.py (teacher targets on disk,
with a CLI). The engine (training/engine.py) trains it like any other objective.
"""
from jaxssl.distill import objective  # pylint: disable=unused-import (registers "distill")
