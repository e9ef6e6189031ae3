"""API keys: generation, hashing, verification."""
