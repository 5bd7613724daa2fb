"""Compression by distillation: DistilHuBERT students, LightHuBERT supernets, teacher caches.

student.py (architectures), objective.py (loss, init from the teacher), teacher.py (a frozen
upstream in the step), supernet.py (search spaces, slicing, extraction), extract.py (its CLI),
cache.py (teacher targets on disk, with a CLI), trainer.py (the loop, `trainer="distill"`).
"""
