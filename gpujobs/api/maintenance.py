"""The store's own care: `gpujobs doctor`, and what a store error means for the user."""

from __future__ import annotations

import sqlite3

from gpujobs.paths import HomeLayout, gpujobs_home
from gpujobs.store_repair import DoctorReport, repair


def doctor() -> DoctorReport:
    """Check this machine's store; a damaged one is moved aside and rebuilt from what reads."""
    home = HomeLayout(gpujobs_home()).ensure()
    return repair(home.state_db)


def store_error_message(exc: sqlite3.DatabaseError) -> str:
    """One line for a store that cannot be used: which file, why, and the way out."""
    path = HomeLayout(gpujobs_home()).state_db
    text = str(exc)
    if "disk is full" in text or "disk I/O error" in text:
        return (
            f"cannot write {path}: its disk is full ({text}); free some space there "
            "(the store, logs and checkpoints of gpujobs live under "
            f"{path.parent}) and run the command again"
        )
    if "locked" in text:
        return f"{path} is busy ({text}): another gpujobs process holds it; try again"
    return (
        f"{path} is damaged ({text}): `gpujobs doctor` keeps a copy of it and rebuilds the "
        "store from every row it can still read"
    )
