"""The model: its config and presets, the interleaved encoder-decoder, its layers, loss and decoding state."""
