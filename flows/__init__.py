"""Prefect flows: orchestration only. Each flow reads like a short script of task calls; each task is a few lines
that call into `tasks/` (where the logic, arithmetic and MLflow records live).

Import rule: `flows` imports `tasks` and `serving`, never `cli` (tests/test_layering.py enforces it).
"""
