"""The export formats and weight dtypes (light: the command line reads them for --help)."""

FORMATS = ("safetensors", "official", "xlmr-encoder")
DTYPES = ("fp32", "bf16")
