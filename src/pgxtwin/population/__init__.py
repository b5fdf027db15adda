"""Virtual populations (``generator``, ``covariates``), virtual trials and their execution."""
