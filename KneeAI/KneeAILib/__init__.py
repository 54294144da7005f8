"""KneeAILib: the pure-Python core of the KneeAI Slicer module (no Slicer/Qt imports except mrml_adapter)."""
