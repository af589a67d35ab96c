"""Neon API v2 client: the same code for Neon cloud and for the local Neon."""

from neonflow.neon.client import UNSET, NeonClient
from neonflow.neon.models import (
    Branch,
    BranchWithOperations,
    ConnectionDetails,
    ConnectionParameters,
    ConnectionURI,
    CreatedBranch,
    Database,
    Endpoint,
    EndpointWithOperations,
    Operation,
    Project,
    Role,
)

__all__ = [
    "UNSET",
    "Branch",
    "BranchWithOperations",
    "ConnectionDetails",
    "ConnectionParameters",
    "ConnectionURI",
    "CreatedBranch",
    "Database",
    "Endpoint",
    "EndpointWithOperations",
    "NeonClient",
    "Operation",
    "Project",
    "Role",
]
