"""The sweep service: config -> search space -> Optuna study -> workers; the `sweeps` CLI."""
