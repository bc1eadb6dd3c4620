"""Training: recipes, feature caching, schedules."""
