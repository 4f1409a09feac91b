"""A fake-news text classifier: GloVe-initialised embeddings with a (bi)LSTM or an
EmbeddingBag, on CSV files with a label column or one CSV per class (Kaggle's Fake.csv and
True.csv). Run ``python -m jobs.text_classifier --help``."""
