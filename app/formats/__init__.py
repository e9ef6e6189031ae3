"""Pure mappers from the core's results to output formats."""
