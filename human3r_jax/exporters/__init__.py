"""`human3r-jax export`: a reconstruction folder → the formats other tools read (no model run).

folder.py   load(OUT_DIR) → Reconstruction: the frames on disk, read one at a time (partial runs too)
"""
