"""neonflow: the branch-per-feature database workflow for Neon and Alembic."""

__version__ = "0.1.0"
