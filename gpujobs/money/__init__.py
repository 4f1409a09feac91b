"""What jobs cost: the ledger's arithmetic and the user's budgets (budget.py), the spend report
(report.py)."""
