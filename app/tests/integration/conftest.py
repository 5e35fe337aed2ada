from collections.abc import Iterator

import pytest

from testkit.loopback import RedisServer, run_redis
from tests.integration.cluster import Cluster, run_worker


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with run_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def cluster(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    with run_worker(redis_server, tmp_path_factory.mktemp("worker")) as running:
        yield running
