"""cliptune: fine-tune CLIP-style dual encoders on your own image–text data, prove the gain, use the result."""

__version__ = "0.1.0"
