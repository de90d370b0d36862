"""The bottom layer: the settings object, the connection factories built from it, and shared errors.

Nothing here imports another fraudstream package; every other package may import this one.
"""

from config.errors import FraudstreamError
from config.kafka import KafkaConnection
from config.model import ModelConnection
from config.redis import RedisConnection
from config.settings import Settings, Topics, default_home, kafka_client_options, load_settings

__all__ = ["FraudstreamError", "KafkaConnection", "ModelConnection", "RedisConnection", "Settings", "Topics",
           "default_home", "kafka_client_options", "load_settings"]
