"""Data: corpora, vocabularies and batching."""
