"""``rerankd bench``: fixed, seeded workloads (:mod:`.workloads`) and one model's measurements on them (:mod:`.run`)."""
