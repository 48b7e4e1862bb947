"""Choosing settings by measuring: the lr range test (``tune``), the largest batch that fits (``batch_size``) and
Optuna sweeps (``sweep``). Builds runs through ``vitdense.engine``; the rules the data decides live in
``vitdense.data.recipe_rules``."""
