"""Offline side of hibt: dataset readers, embedding, fingerprints and index building."""
