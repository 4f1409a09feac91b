"""How a workload runs on a node: with the node's own Python (local), a venv (no root) or docker."""
