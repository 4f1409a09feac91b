"""A fake-news text classifier: GloVe-initialised embeddings with a (bi)LSTM or an
EmbeddingBag, on title/text/label CSV files. Run ``python -m jobs.text_classifier --help``."""
