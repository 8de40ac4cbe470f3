"""Service layer: the one place that implements config and execution operations.

The executions API, the runs facade and the CLI all call these; routers only translate HTTP.
"""

from sluice.services.configs import ConfigService
from sluice.services.executions import ExecutionService
from sluice.services.gateway import TemporalGateway

__all__ = ["ConfigService", "ExecutionService", "TemporalGateway"]
