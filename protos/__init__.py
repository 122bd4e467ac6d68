"""Generated protobuf and gRPC code of the Open Inference Protocol and Arbiter's
decision extension (regenerate with ``python -m protos.generate``)."""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
"""Arbiter's own descriptor pool, so OIP clients that register ``inference.*`` in the
default pool (tritonclient) can share the process."""
