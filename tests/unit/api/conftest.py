"""The API tests' client checks every answer against the OpenAPI document (see ``contract``)."""

from __future__ import annotations

import pytest

from tests.auth_support import authorize
from tests.unit.api.contract import ContractClient, contract_client


@pytest.fixture
def client(app, admin_token) -> ContractClient:
    """Checks every answer against the document; sends an admin's token."""
    return authorize(contract_client(app), admin_token)
