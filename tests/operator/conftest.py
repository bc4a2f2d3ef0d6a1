import pytest

from resnet50_operator.settings import OperatorSettings


@pytest.fixture
def settings() -> OperatorSettings:
    return OperatorSettings()
