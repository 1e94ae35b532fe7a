"""Evidence on real data: evaluation data sets, full-information recordings (``coe eval
record``) and their replay (``coe eval replay``) through the live engine's own policies."""

from gateway.evaluation.datasets import DATASETS, Example, parse_example, read_examples
from gateway.evaluation.record import RecordSummary, record_run
from gateway.evaluation.recording import header_for_route, route_config
from gateway.evaluation.replay import (
    CascadeConfig,
    Replayer,
    ReplayReport,
    Row,
    build_report,
    standard_configs,
)

__all__ = [
    "CascadeConfig",
    "DATASETS",
    "Example",
    "RecordSummary",
    "ReplayReport",
    "Replayer",
    "Row",
    "build_report",
    "header_for_route",
    "parse_example",
    "read_examples",
    "record_run",
    "route_config",
    "standard_configs",
]
