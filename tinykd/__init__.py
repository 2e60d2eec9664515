"""tinykd: TinyBERT-style two-stage knowledge distillation of Transformers."""

__version__ = "0.1.0"
