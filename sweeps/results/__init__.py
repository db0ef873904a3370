"""What a study found, shown: curve artifacts and pages in optuna-dashboard, HTML/PNG reports,
schedule previews, progress bars."""
