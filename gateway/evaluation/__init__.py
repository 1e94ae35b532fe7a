"""Evidence on real data: evaluation data sets, full-information recordings (``coe eval
record``) and their replay (``coe eval replay``) through the live engine's own policies."""

from gateway.evaluation.datasets import DATASETS, Example, parse_example, read_examples
from gateway.evaluation.record import RecordSummary, record_run
from gateway.evaluation.recording import (
    RecordedCall,
    RecordedExample,
    Recording,
    RecordingError,
    RecordingHeader,
    message_key,
    read_recording,
)
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
    "RecordedCall",
    "RecordedExample",
    "Recording",
    "RecordingError",
    "RecordingHeader",
    "ReplayReport",
    "Replayer",
    "Row",
    "build_report",
    "message_key",
    "parse_example",
    "read_examples",
    "read_recording",
    "record_run",
    "standard_configs",
]
