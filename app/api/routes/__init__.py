"""One router module per resource: thin, reading like the contract table."""
