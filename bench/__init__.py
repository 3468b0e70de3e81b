"""Reproducible benchmarks: direct vs PgBouncer vs sqlx-os, side by side."""
