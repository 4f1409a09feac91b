"""Where a job may run: offers x quotas x budget -> ranked placements (planner.py), what a
refusal suggests (advice.py), the quota report (quota.py), and the sweep of what no job owns
(gc.py)."""
