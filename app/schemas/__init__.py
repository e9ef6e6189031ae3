"""Request and response models (the HTTP contract); no scoring rules live here."""
