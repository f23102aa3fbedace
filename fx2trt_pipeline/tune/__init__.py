"""Tune: choose how to quantize, scored by the validate stage.

```
calibrator_search.py   score every calibrator from one statistics pass, pick the best
mixed_precision.py     keep the fewest layers in float that meet an accuracy budget
```

Tune uses validate (it scores candidates with the same evaluation API); validate never imports tune.
"""
