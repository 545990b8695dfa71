"""Export: committed engine checkpoints → safetensors directories, official ``.pt`` files, XLM-R encoders
(``python -m deltalm.export``)."""
