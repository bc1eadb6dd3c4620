"""Judging models: metrics, plots, reports, inspection."""
