"""The live quality audit: sampled answers re-asked of the top tier in the background, census of
escalations, the report, and θ from a target chosen from it (docs/api.md, "Audit")."""

from gateway.audit._auditor import AUDIT_ID_SUFFIX, Auditor, audited
from gateway.audit._records import agrees, census_records, sample_record
from gateway.audit._report import route_audit_report, shape_audit_report
from gateway.audit._spend import SpendShares
from gateway.audit._threshold import ThresholdController, ThresholdsInForce

__all__ = [
    "AUDIT_ID_SUFFIX",
    "Auditor",
    "SpendShares",
    "ThresholdController",
    "ThresholdsInForce",
    "agrees",
    "audited",
    "census_records",
    "route_audit_report",
    "sample_record",
    "shape_audit_report",
]
