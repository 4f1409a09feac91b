"""Bundled PyTorch training workloads.

Everything under ``jobs`` runs on its own on a remote node, so it imports nothing from
``gpujobs``: only the standard library, torch, numpy and Pillow (see ``requirements.txt``).
"""
