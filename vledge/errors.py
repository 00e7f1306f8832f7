"""Every error a vledge user can meet: one hierarchy, messages that say what, where and what to do."""


class VledgeError(Exception):
    """Base class of all vledge errors."""


class ConfigError(VledgeError, ValueError):
    """A configuration value, flag or recipe is invalid."""


class CheckpointError(VledgeError):
    """A model checkpoint folder is missing, incomplete, corrupt or of an unknown kind."""


class DataError(VledgeError):
    """A data set, captions file or image cannot be read."""


class ImageDecodeError(DataError):
    """One image file cannot be decoded."""

    def __init__(self, path, reason):
        self.path = str(path)
        super().__init__(f"cannot decode image {self.path}: {reason}")


class BundleError(VledgeError):
    """A bundle is missing files, fails its hash check or has an unknown format."""


class UntrustedBundleError(BundleError):
    """A bundle is unsigned, signed by no trusted key, or not the manifest that was pinned."""


class SelfTestError(BundleError):
    """A bundle's towers failed their self-test on load: NaN or inf, embeddings far from the recorded
    reference, or the same embedding for different inputs, on every placement tried."""


class StreamError(DataError):
    """A video source cannot be opened, or failed while it was read (a camera gone, a damaged file)."""


class ServiceError(VledgeError):
    """A vledge service answered a request with an error status (``status`` and ``reason`` say which)."""

    def __init__(self, message, status=None, reason=None):
        self.status, self.reason = status, reason
        super().__init__(message)


class BackendUnavailableError(VledgeError):
    """The requested runtime backend or device cannot run on this machine."""


class OutputError(VledgeError, OSError):
    """An output folder or file cannot be written: a read-only or missing place, or a full disk."""


class ExportError(VledgeError):
    """A tower could not be exported or converted."""


class VerificationError(VledgeError):
    """A compressed model fell below the accuracy tolerance."""

    def __init__(self, message, report=None):
        self.report = report
        super().__init__(message)


class MissingDependencyError(VledgeError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, extra: str):
    """Import an optional module or raise MissingDependencyError naming the pip extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is not installed; install it with: pip install \"vledge[{extra}]\""
        ) from exc
