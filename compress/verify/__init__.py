"""Stage 6, verify: the bundle, loaded through the edge runtime, against the teacher on held-out data;
the gate that keeps a drifting tower in FP32; and, when a distilled student fails, the measured offer
of the teacher itself quantized."""

from vledge.compress.verify.config import GateConfig
from vledge.compress.verify.gate import Verified, bundle_precision, candidate_bundle, verify_with_recovery
from vledge.compress.verify.measure import VerifyReport, gate_metric, metric_value, tower_cosines, verify_bundle
from vledge.compress.verify.teacher_offer import describe as describe_offer
from vledge.compress.verify.teacher_offer import measure_quantized_teacher

__all__ = ["GateConfig", "Verified", "VerifyReport", "bundle_precision", "candidate_bundle", "describe_offer", "gate_metric",
           "measure_quantized_teacher", "metric_value", "tower_cosines", "verify_bundle", "verify_with_recovery"]
