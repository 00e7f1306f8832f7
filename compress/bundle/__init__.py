"""Stage 7, bundle: the atomic bundle writer and the self-test probes it records (numpy only: a device
uses this for ``vledge labels``). ``compress.bundle.package`` adds what the pipeline writes around it
(sizes, the compiled label set, provenance) and needs the student model."""

from vledge.compress.bundle.probes import Probes, bundle_probes, make_probes, write_probes
from vledge.compress.bundle.writer import (
    LABEL_EMBEDDINGS_FILE,
    LABELS_FILE,
    bundle_precision,
    toolchain_versions,
    write_bundle,
)

__all__ = ["LABELS_FILE", "LABEL_EMBEDDINGS_FILE", "Probes", "bundle_precision", "bundle_probes", "make_probes",
           "toolchain_versions", "write_bundle", "write_probes"]
