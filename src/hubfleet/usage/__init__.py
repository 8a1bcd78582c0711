"""Usage metering, the cost model, plans and budgets, and reports."""
