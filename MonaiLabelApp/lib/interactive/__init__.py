"""Interactive correction of one structure: simulated clicks, the region a click may change, the
refinement itself (a trained click network, or a random walker until one exists), scribbles."""
