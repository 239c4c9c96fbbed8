"""swaplab: face-swap research framework."""
