"""The live quality audit: sampled answers re-asked of the top tier in the background, census of
escalations, the report, and θ from a target chosen from it (docs/api.md, "Audit")."""

from gateway.audit._auditor import Auditor, audited
from gateway.audit._report import route_audit_report
from gateway.audit._threshold import ThresholdController, ThresholdsInForce

__all__ = [
    "Auditor",
    "ThresholdController",
    "ThresholdsInForce",
    "audited",
    "route_audit_report",
]
