"""Video streams: decode a file, URL or camera with PyAV (the ``video`` extra) and classify its frames.

PyAV is imported only when a source opens, so importing this package needs nothing beyond the runtime.
"""

from vledge.video.regions import Region, Regions
from vledge.video.source import Frame, VideoSource
from vledge.video.stream import FrameResult, RegionScores, Stream, StreamStats

__all__ = ["Frame", "FrameResult", "Region", "RegionScores", "Regions", "Stream", "StreamStats", "VideoSource"]
