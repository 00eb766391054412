"""The `sweeplab` command line and the Python client: HTTP only, no server package imported."""

from client.api import Client, is_final, kind_of, mlflow_link, rows_to_table
from client.errors import ApiError, BadInput, ClientError, SpecFileError, Unreachable

__all__ = [
    "ApiError",
    "BadInput",
    "Client",
    "ClientError",
    "SpecFileError",
    "Unreachable",
    "is_final",
    "kind_of",
    "mlflow_link",
    "rows_to_table",
]
