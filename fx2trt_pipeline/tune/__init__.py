"""Tune: choose how to quantize, scored by the validate stage.

```
calibrator_search.py   score every calibrator from one statistics pass, pick the best
sensitivity.py         rank quantized layers by how much accuracy they cost (proxies, skip helpers)
mixed_precision.py     keep the fewest layers in float that meet an accuracy budget
```

Tune uses validate (it scores candidates with the same evaluation API); validate never imports tune.
"""
