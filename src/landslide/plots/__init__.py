"""Every figure: sample grids, scene maps, training curves, the report's comparison."""
