"""The Redis Cluster fixtures for this package (``tests/fixtures/redis_cluster.py``)."""

from tests.fixtures.redis_cluster import cluster_client, redis_cluster, redis_cluster_url

__all__ = ["cluster_client", "redis_cluster", "redis_cluster_url"]
