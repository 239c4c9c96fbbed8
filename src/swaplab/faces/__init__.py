"""Face geometry, the bottom layer: alignment templates, landmark sets and their conversions, crop boxes inside
the canonical crop, face-parsing label groups. Imports nothing else from swaplab."""
