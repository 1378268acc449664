"""Finding faces and framing them like training chips.

`geometry`: boxes, chip squares, crops; `haar`, `dlib`: the detectors; `interface`: what a detector
is; `registry`: detectors by name (`DETECTORS`, `make_detector`); `calibration`: the per-detector
box-to-chip ratios and exposure a run stores (face_crop.json) and how they are measured.
"""
