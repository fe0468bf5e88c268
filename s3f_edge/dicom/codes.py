"""The codes an s3f-edge SR says its answer in (``s3f_edge.dicom.sr``), each a (value, scheme, meaning)."""
from __future__ import annotations

from s3f_edge.dicom.identity import PRIVATE_SCHEME

# The codes, chosen as (value, scheme, meaning): DICOM (DCM, PS3.16) or SNOMED CT (SCT) where a concept exists, the
# private scheme where none does.
# - An ok row's answer is TID 1501's "Finding" (DCM 121071) whose value is the class's code.
# - Probabilities are "Probability" (DCM 122157) with unit "no units" (UCUM 1). One without a modifier is the
#   finding's; each class's carries a concept modifier naming the class. That modifier is the private "Class",
#   never "Finding", so that the SR of a refused row holds no Finding at any depth.
# - A refused row is "Classification result" (private) = "Not Evaluated" (SCT 373121007, SNOMED's qualifier for a
#   test not done, under DICOM's meaning), and "Reason not assessed" (private) = "unlike the training images"
#   (private). Never a Finding, and never Key Object Selection's "Rejected for Quality Reasons" (DCM 113001): the
#   image may be fine, it is only not the kind of image this model was trained on.
# - The out-of-distribution score has no standard concept (private); its threshold is "Threshold Value" (DCM 122411).
FINDING = ("121071", "DCM", "Finding")
PROBABILITY = ("122157", "DCM", "Probability")
CLASS = ("CLASS", PRIVATE_SCHEME, "Class")
RESULT = ("RESULT", PRIVATE_SCHEME, "Classification result")
NOT_EVALUATED = ("373121007", "SCT", "Not Evaluated")
REASON = ("REASON", PRIVATE_SCHEME, "Reason not assessed")
UNLIKE_TRAINING = ("OUTOFDIST", PRIVATE_SCHEME, "Image unlike the images the model was trained on")
OOD_SCORE_CODE = ("OODSCORE", PRIVATE_SCHEME, "Out-of-distribution score")
THRESHOLD = ("122411", "DCM", "Threshold Value")
NO_UNITS = ("1", "UCUM", "no units")
IMAGING_PROCEDURE = ("363679005", "SCT", "Imaging procedure")
DEVICE = ("121007", "DCM", "Device")
