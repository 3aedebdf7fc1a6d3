"""Offline evaluation: a policy run over a price file, the perfect-foresight optimum, and the report."""
