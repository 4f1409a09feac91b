"""One launch from PENDING to SUCCEEDED, FAILED or CANCELLED: the state machine (machine.py) and
the objects it owns (a node's setup, the group's sessions, recovery, the cap watch, events)."""
