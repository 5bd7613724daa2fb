"""Parameter-efficient fine-tuning: LoRA, AdaLoRA and ladder side-tuning (objective.py wraps a
fine-tuning objective; configs/finetune/peft.py holds the config section)."""
