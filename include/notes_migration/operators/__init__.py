"""Custom Airflow operators of the migration (thin: the logic lives in the package modules)."""
