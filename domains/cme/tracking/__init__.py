"""Movies -> tracks, the first half of the CME branch.

``movie_io`` reads (and writes) two-channel movies in the cmeAnalysis folder tree; ``simulate``
makes such movies with ground truth; ``detect`` finds and fits clathrin spots and the auxilin
signal at their positions; ``link`` joins detections into tracks; ``processing`` turns linked
detections into cmeAnalysis-style track tables; ``accuracy`` scores detection and tracking
against the simulator's truth. The second half (tracks -> traces, labels and models) lives
one level up: ``cmeanalysis_io``, ``traces``, ``lstm``, ``head``.
"""
