"""`auto`: read the data, plan within the budget, run the plan, and choose on validation."""
