"""adapterscope: what a fine-tuning adapter really changes inside a model.

Layers, bottom to top (each imports only from below):
  pure tools   crosscoder, cka, stats, params, results, textgen
  loaders      models, corpora
  runners      finetune, capture
  analysis     divergence, ...
"""

__version__ = "0.1.0"
