"""The DeepSpeed training engine shared by pre-training and fine-tuning (see docs/engine.md)."""
