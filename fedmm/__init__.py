"""fedmm package."""
