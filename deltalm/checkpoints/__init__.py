"""Checkpoint formats: HF XLM-R import/export, the official DeltaLM ``.pt`` layout, safetensors pretrained dirs."""
