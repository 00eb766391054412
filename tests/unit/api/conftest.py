"""The API tests' client checks every answer against the OpenAPI document (see ``contract``)."""

from __future__ import annotations

import pytest

from tests.unit.api.contract import ContractClient, contract_client


@pytest.fixture
def client(app) -> ContractClient:
    return contract_client(app)
