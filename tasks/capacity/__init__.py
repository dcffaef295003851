"""Capacity planning (seed 7.5): history from files, Prometheus or MLflow; its validation; forecasts with a
backtest and calibrated intervals; the capacity model (measured knee per replica, GPU estimates); scenarios,
expansion plans, strategy and Ray Serve autoscaling; and the plan's record.

Import rule: `serving`, `tasks.policy`, `tasks.decision`, `tasks.measure`, `tasks.records`.
"""
